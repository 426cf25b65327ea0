package site

import (
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// results are the MigrateResults effects tell the node's host.
func results(fx []core.Effect) []*m.MigrateResult {
	var out []*m.MigrateResult
	for _, e := range fx {
		if send, ok := e.(core.Send); ok {
			if r, ok := send.Msg.(*m.MigrateResult); ok {
				if send.To != core.ClientAddr("n1") {
					panic("MigrateResult to " + send.To.String())
				}
				out = append(out, r)
			}
		}
	}
	return out
}

// A stopping node's host hands its sites off with moves of reason "stop"
// and waits for each to end: the site actor tells it how each ended (done,
// aborted, refused); moves for other reasons tell no one.
func TestAStopMoveTellsTheHostHowItEnded(t *testing.T) {
	env := &core.Env{Self: core.SiteAddr("n1", "a"), Now: time.Unix(100, 0), Config: core.Default()}
	spec := &m.SiteSpec{Name: "a", Created: &m.Epoch{Term: 1, Node: "n1"}}
	snap := &m.SnapshotRef{Name: "e1-n1-s1", Epoch: &m.Epoch{Term: 1, Node: "n1"}, Seq: 1}
	start := func() *Site {
		s := New("n1", "a")
		s.Step(env, &m.Activate{Spec: spec, Epoch: &m.Epoch{Term: 1, Node: "n1"}, Replicas: []string{"n2"}})
		return s
	}

	// Done.
	s := start()
	if r := results(s.Step(env, &m.Migrate{Site: "a", Target: "n2", Reason: ReasonStop})); r != nil {
		t.Fatalf("told %v at the start", r)
	}
	s.Step(env, &m.SyncDone{Site: "a", Target: "n2", SyncId: 1, Snapshot: snap})
	s.Step(env, &m.SyncDone{Site: "a", Target: "n2", SyncId: 2, Snapshot: snap})
	r := results(s.Step(env, &m.Activated{Site: "a", Node: "n2", Epoch: s.mig.epoch}))
	if len(r) != 1 || r[0].Code != m.Code_CODE_OK || r[0].Target != "n2" || r[0].Site != "a" {
		t.Fatalf("a finished move told %v", r)
	}

	// Aborted (the pre-copy failed: the target refuses streams).
	s = start()
	s.Step(env, &m.Migrate{Site: "a", Target: "n2", Reason: ReasonStop})
	r = results(s.Step(env, &m.SyncDone{Site: "a", Target: "n2", SyncId: 1, Code: m.Code_CODE_FAILED, Detail: "refused"}))
	if len(r) != 1 || r[0].Code != m.Code_CODE_FAILED || s.phase != m.SitePhase_SITE_PHASE_ACTIVE {
		t.Fatalf("an aborted move told %v (phase %s)", r, s.phase)
	}

	// Refused (a move under way already).
	s = start()
	s.Step(env, &m.Migrate{Site: "a", Target: "n2", Reason: "admin"})
	s.Step(env, &m.SyncDone{Site: "a", Target: "n2", SyncId: 1, Snapshot: snap}) // paused now
	r = results(s.Step(env, &m.Migrate{Site: "a", Target: "n3", Reason: ReasonStop}))
	if len(r) != 1 || r[0].Code != m.Code_CODE_FAILED || r[0].Target != "n3" {
		t.Fatalf("a refused move told %v", r)
	}
	// The admin's move, aborted, tells no one.
	if r := results(s.Step(env, &m.SyncDone{Site: "a", Target: "n2", SyncId: 2, Code: m.Code_CODE_FAILED})); r != nil {
		t.Fatalf("an admin move told %v", r)
	}
}
