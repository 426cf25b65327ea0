package site

import (
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// A migration whose target refuses because the site was deleted there (its
// fence is a tombstone) ends in the deletion of the source too, not in a
// resume above the target's epoch: held requests are answered
// UNKNOWN_SITE, and so are later ones.
func TestMigrationTargetKnowsTheDeletion(t *testing.T) {
	env := &core.Env{Self: core.SiteAddr("n1", "a"), Now: time.Unix(100, 0), Config: core.Default()}
	s := New("n1", "a")
	spec := &m.SiteSpec{Name: "a", Created: &m.Epoch{Term: 1, Node: "n1"}}
	s.Step(env, &m.Activate{Spec: spec, Epoch: &m.Epoch{Term: 1, Node: "n1"}, Replicas: []string{"n2"}})
	s.Step(env, &m.Migrate{Site: "a", Target: "n2"})
	snap := &m.SnapshotRef{Name: "e1-n1-s1", Epoch: &m.Epoch{Term: 1, Node: "n1"}, Seq: 1}
	s.Step(env, &m.SyncDone{Site: "a", Target: "n2", SyncId: 1, Snapshot: snap})
	s.Step(env, &m.SiteRequest{Site: "a", RequestId: 5, EntryNode: "n3", Write: true})
	s.Step(env, &m.SyncDone{Site: "a", Target: "n2", SyncId: 2, Snapshot: snap})
	if s.phase != m.SitePhase_SITE_PHASE_PROMOTING || s.Held() != 1 {
		t.Fatalf("phase %s held %d", s.phase, s.Held())
	}
	tomb := &m.Epoch{Term: 90, Node: "n3" + core.TombstoneMark}
	fx := s.Step(env, &m.Activated{Site: "a", Node: "n2", Epoch: s.mig.epoch, Code: m.Code_CODE_FENCED, Fence: tomb})
	var deleted, answered bool
	for _, e := range fx {
		if send, ok := e.(core.Send); ok {
			switch msg := send.Msg.(type) {
			case *m.DeleteSite:
				deleted = send.To == core.DatasetAddr("n1", "a") && core.CompareEpoch(msg.Epoch, tomb) == 0
			case *m.SiteResponse:
				answered = msg.RequestId == 5 && msg.Code == m.Code_CODE_UNKNOWN_SITE
			case *m.Activate:
				t.Fatalf("resumed after the target said the site was deleted: %v", fx)
			}
		}
	}
	if !deleted || !answered || s.phase != m.SitePhase_SITE_PHASE_STOPPED {
		t.Fatalf("effects %v (phase %s)", fx, s.phase)
	}
	fx = s.Step(env, &m.SiteRequest{Site: "a", RequestId: 6, EntryNode: "n3"})
	if send, ok := fx[0].(core.Send); !ok || send.Msg.(*m.SiteResponse).Code != m.Code_CODE_UNKNOWN_SITE {
		t.Fatalf("later request: %v", fx)
	}
	// A late activation of the old history is not served.
	fx = s.Step(env, &m.Activate{Spec: spec, Epoch: &m.Epoch{Term: 95, Node: "n1"}, Reason: "resume"})
	if s.phase != m.SitePhase_SITE_PHASE_STOPPED || s.deleted == nil {
		t.Fatalf("late activation served: %v", fx)
	}
	// A create after the tombstone is.
	created := &m.SiteSpec{Name: "a", Created: &m.Epoch{Term: 100, Node: "n1"}}
	s.Step(env, &m.Activate{Spec: created, Epoch: &m.Epoch{Term: 100, Node: "n1"}, Create: true, Reason: "create"})
	if s.phase != m.SitePhase_SITE_PHASE_ACTIVE || s.deleted != nil {
		t.Fatalf("create after the tombstone: phase %s deleted %v", s.phase, s.deleted)
	}
}
