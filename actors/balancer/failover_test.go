package balancer

import (
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// failoverChoice runs one failover over copies (node -> latest snapshot) and
// returns the node the balancer activates.
func failoverChoice(t *testing.T, copies map[string]*m.SnapshotRef, order []string) string {
	return failoverChoiceCreated(t, copies, nil, order)
}

// failoverChoiceCreated is failoverChoice with each copy's spec created at
// created[node] (nil: unset).
func failoverChoiceCreated(t *testing.T, copies map[string]*m.SnapshotRef, created map[string]*m.Epoch, order []string) string {
	t.Helper()
	cfg := core.Default()
	b := New("n0")
	now := time.Unix(1000, 0)
	env := func() *core.Env { return &core.Env{Self: core.BalancerAddr("n0"), Now: now, Config: cfg} }
	live := append([]string{"n0"}, order...)
	b.Step(env(), &m.BalancerRole{Active: true, Live: live})
	for _, n := range order {
		b.Step(env(), &m.NodeReport{Node: n, Datasets: []*m.DatasetInfo{{Site: "a", Node: n, Role: m.Role_ROLE_REPLICA,
			Epoch: copies[n].GetEpoch(), Latest: copies[n], Spec: &m.SiteSpec{Name: "a", Created: created[n]}}}})
	}
	now = now.Add(cfg.BalancerWarmup + time.Second)
	var probeID uint64
	for _, fx := range b.Step(env(), &m.Timer{Key: timerPlan}) {
		if s, ok := fx.(core.Send); ok {
			if p, ok := s.Msg.(*m.Probe); ok {
				probeID = p.ProbeId
			}
		}
	}
	if probeID == 0 {
		t.Fatal("no probe sent for a site without a master")
	}
	var chosen string
	for _, n := range order {
		for _, fx := range b.Step(env(), &m.ProbeAnswer{Site: "a", ProbeId: probeID, Info: &m.DatasetInfo{
			Site: "a", Node: n, Role: m.Role_ROLE_REPLICA, Epoch: copies[n].GetEpoch(), Latest: copies[n], Spec: &m.SiteSpec{Name: "a", Created: created[n]}}}) {
			if s, ok := fx.(core.Send); ok {
				if a, ok := s.Msg.(*m.Activate); ok {
					chosen = s.To.Node
					if a.Reason != "failover" || core.CompareEpoch(a.Epoch, copies[n].GetEpoch()) <= 0 {
						t.Fatalf("bad activation %v", a)
					}
				}
			}
		}
	}
	return chosen
}

func taken(s *m.SnapshotRef, ms int64) *m.SnapshotRef { s.TakenMs = ms; return s }

func snapRef(term uint64, node string, seq uint64) *m.SnapshotRef {
	e := &m.Epoch{Term: term, Node: node}
	return &m.SnapshotRef{Name: core.SnapshotName(e, seq), Epoch: e, Seq: seq}
}

func TestFailoverPromotesNewestCopy(t *testing.T) {
	cases := []struct {
		name   string
		copies map[string]*m.SnapshotRef
		order  []string
		want   string
	}{
		{"newer sequence wins", map[string]*m.SnapshotRef{"n2": snapRef(9, "n4", 181), "n3": snapRef(9, "n4", 190)}, []string{"n2", "n3"}, "n3"},
		{"newer epoch wins over a higher sequence", map[string]*m.SnapshotRef{"n2": snapRef(10, "n5", 12), "n3": snapRef(9, "n4", 400)}, []string{"n2", "n3"}, "n2"},
		// Two histories: a minority promoted n3 at 22.4 s and lost it; n1
		// took over at 52.9 s. Epoch terms follow the decision's clock, so
		// the later decision wins even against an older, longer history.
		{"later decision wins", map[string]*m.SnapshotRef{"n1": taken(snapRef(52_900, "n1", 60), 60_000), "n3": taken(snapRef(22_400, "n3", 90), 33_000)}, []string{"n1", "n3"}, "n1"},
		// Equal snapshots: the node that wrote them may hold more (its live
		// dataset, a snapshot still being taken), whatever the answer order.
		// A site whose creation was cut short by a crash: its only copy is
		// empty, and it must still get a master.
		{"an empty copy is promoted when it is all there is", map[string]*m.SnapshotRef{"n2": nil}, []string{"n2"}, "n2"},
		{"tie goes to the writer", map[string]*m.SnapshotRef{"n2": snapRef(9, "n3", 181), "n3": snapRef(9, "n3", 181)}, []string{"n2", "n3"}, "n3"},
		{"tie goes to the writer (other order)", map[string]*m.SnapshotRef{"n3": snapRef(9, "n3", 181), "n2": snapRef(9, "n3", 181)}, []string{"n3", "n2"}, "n3"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := failoverChoice(t, tc.copies, tc.order); got != tc.want {
				t.Fatalf("promoted %q, want %q", got, tc.want)
			}
		})
	}
}

// A member that just joined may be a restarted master holding the newest
// copy: failover waits for its first report, but only for a bounded time.
func TestFailoverWaitsForAJoinedMemberBounded(t *testing.T) {
	cfg := core.Default()
	b := New("n0")
	now := time.Unix(1000, 0)
	env := func() *core.Env { return &core.Env{Self: core.BalancerAddr("n0"), Now: now, Config: cfg} }
	b.Step(env(), &m.BalancerRole{Active: true, Live: []string{"n0", "n2"}})
	snap := snapRef(9, "n3", 10)
	report := &m.NodeReport{Node: "n2", Datasets: []*m.DatasetInfo{{Site: "a", Node: "n2", Role: m.Role_ROLE_REPLICA,
		Epoch: snap.Epoch, Latest: snap, Spec: &m.SiteSpec{Name: "a"}}}}
	b.Step(env(), report)
	now = now.Add(cfg.BalancerWarmup + time.Second)
	b.Step(env(), &m.BalancerRole{Active: true, Live: []string{"n0", "n2", "n3"}}) // n3 rejoins
	probes := func() int {
		n := 0
		for _, fx := range b.Step(env(), &m.Timer{Key: timerPlan}) {
			if s, ok := fx.(core.Send); ok {
				if _, ok := s.Msg.(*m.Probe); ok {
					n++
				}
			}
		}
		return n
	}
	if n := probes(); n != 0 {
		t.Fatalf("failover probed %d copies before the rejoined member reported", n)
	}
	now = now.Add(reportWaitMax * cfg.ReportInterval)
	b.Step(env(), report)
	if n := probes(); n != 1 {
		t.Fatalf("failover still waiting after the bound: %d probes", n)
	}
}

// A replica added (a repair) just before the master died does not hold up
// the failover for ActionTimeout: the repair was sent to the dead master.
func TestRepairInFlightDoesNotDelayFailover(t *testing.T) {
	cfg := core.Default()
	b := New("n1")
	now := time.Unix(1000, 0)
	env := func() *core.Env { return &core.Env{Self: core.BalancerAddr("n1"), Now: now, Config: cfg} }
	spec := &m.SiteSpec{Name: "a"}
	report := func(n string, ds ...*m.DatasetInfo) { b.Step(env(), &m.NodeReport{Node: n, Datasets: ds}) }
	b.Step(env(), &m.BalancerRole{Active: true, Live: []string{"n1", "n2", "n3"}})
	now = now.Add(cfg.BalancerWarmup)
	master := &m.DatasetInfo{Site: "a", Node: "n2", Role: m.Role_ROLE_MASTER, Phase: m.SitePhase_SITE_PHASE_ACTIVE,
		Epoch: &m.Epoch{Term: 5, Node: "n2"}, Latest: snapRef(5, "n2", 3), Spec: spec}
	report("n1")
	report("n2", master)
	report("n3")
	repaired := false
	for _, fx := range b.Step(env(), &m.Timer{Key: timerPlan}) {
		if s, ok := fx.(core.Send); ok {
			if _, ok := s.Msg.(*m.AddReplica); ok {
				repaired = true
			}
		}
	}
	if !repaired {
		t.Fatal("no repair for a site without replicas")
	}
	// n2 dies at once; n3 got a copy meanwhile.
	now = now.Add(2 * time.Second)
	b.Step(env(), &m.BalancerRole{Active: true, Live: []string{"n1", "n3"}})
	report("n1")
	report("n3", &m.DatasetInfo{Site: "a", Node: "n3", Role: m.Role_ROLE_REPLICA, Epoch: master.Epoch, Latest: master.Latest, Spec: spec})
	probed := false
	for _, fx := range b.Step(env(), &m.Timer{Key: timerPlan}) {
		if s, ok := fx.(core.Send); ok {
			if _, ok := s.Msg.(*m.Probe); ok {
				probed = true
			}
		}
	}
	if !probed {
		t.Fatalf("failover held up by the repair sent to the dead master (ActionTimeout %v)", cfg.ActionTimeout)
	}
}

// Copies of two incarnations (a site deleted and created again while a
// node was away, which kept a copy of the deleted one): the failover
// promotes the later incarnation even against newer writes of the deleted
// one, as a heal does (TestHealPrefersTheLaterIncarnation); within one
// incarnation the newest history wins as before.
func TestFailoverPrefersTheLaterIncarnation(t *testing.T) {
	copies := map[string]*m.SnapshotRef{"n2": taken(snapRef(59_000, "n2", 40), 58_000), "n3": taken(snapRef(45_750, "n3", 29), 45_760)}
	created := map[string]*m.Epoch{"n2": {Term: 1, Node: "n2"}, "n3": {Term: 45_750, Node: "n3"}}
	for _, order := range [][]string{{"n2", "n3"}, {"n3", "n2"}} {
		if got := failoverChoiceCreated(t, copies, created, order); got != "n3" {
			t.Fatalf("order %v: promoted %s, the deleted incarnation's copy", order, got)
		}
	}
	same := map[string]*m.Epoch{"n2": {Term: 1, Node: "n1"}, "n3": {Term: 1, Node: "n1"}}
	if got := failoverChoiceCreated(t, copies, same, []string{"n3", "n2"}); got != "n2" {
		t.Fatalf("one incarnation: promoted %s, want the newest history n2", got)
	}
}
