package balancer

import (
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// healWinner resolves two masters of site "a" and returns the node activated.
func healWinner(t *testing.T, masters ...copyView) string {
	t.Helper()
	env := &core.Env{Self: core.BalancerAddr("n0"), Now: time.Unix(1000, 0), Config: core.Default()}
	for _, fx := range New("n0").heal(env, "a", masters) {
		if s, ok := fx.(core.Send); ok {
			if _, ok := s.Msg.(*m.Activate); ok {
				return s.To.Node
			}
		}
	}
	t.Fatal("heal activated no one")
	return ""
}

func masterCopy(node string, created *m.Epoch, latest *m.SnapshotRef) copyView {
	return copyView{node: node, info: &m.DatasetInfo{Site: "a", Node: node, Role: m.Role_ROLE_MASTER,
		Epoch: latest.GetEpoch(), Latest: latest, Spec: &m.SiteSpec{Name: "a", Created: created}}}
}

// Within one incarnation the newest history wins; across incarnations the
// one created later wins even against newer writes: it was created above
// the tombstone of the other, which a balancer that never saw that
// tombstone must not resurrect (the sim, seed 47 with the first snapshot
// after an activation deferred: a delete on one side of a partition, a
// create of the old spec on the other, the old history won the heal).
func TestHealPrefersTheLaterIncarnation(t *testing.T) {
	first := &m.Epoch{Term: 1, Node: "n2"}
	recreated := &m.Epoch{Term: 45_750, Node: "n4"}
	old := masterCopy("n2", first, taken(snapRef(59_000, "n2", 40), 58_000))
	newer := masterCopy("n4", recreated, taken(snapRef(45_750, "n4", 29), 45_760))
	if got := healWinner(t, old, newer); got != "n4" {
		t.Fatalf("heal chose %s: the deleted incarnation's history won", got)
	}
	if got := healWinner(t, newer, old); got != "n4" {
		t.Fatalf("heal chose %s (other order)", got)
	}
	// One incarnation, or two first creates racing in a partition: the
	// newest history.
	racing := masterCopy("n4", &m.Epoch{Term: 1, Node: "n4"}, taken(snapRef(1, "n4", 29), 45_760))
	if got := healWinner(t, racing, old); got != "n2" {
		t.Fatalf("heal of two first creates chose %s, want the newest history (n2)", got)
	}
}
