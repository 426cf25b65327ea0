package dataset

import (
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

func storageOf(t *testing.T, fx []core.Effect, op m.StorageOp) *m.StorageRequest {
	t.Helper()
	for _, e := range fx {
		if st, ok := e.(core.Storage); ok && st.Req.Op == op {
			return st.Req
		}
	}
	t.Fatalf("no %s in %v", op, fx)
	return nil
}

func sentTo[T any](fx []core.Effect, to core.Address) (T, bool) {
	for _, e := range fx {
		if s, ok := e.(core.Send); ok && s.To == to {
			if msg, ok := s.Msg.(T); ok {
				return msg, true
			}
		}
	}
	var zero T
	return zero, false
}

var tomb = &m.Epoch{Term: 9000, Node: "n3" + core.TombstoneMark}

// A deletion that arrives while the copy waits for storage (here a
// rollback) is carried out once storage is done; afterwards the copy
// reports the tombstone, takes no snapshot, and a duplicate changes nothing.
func TestDeleteWaitsForStorage(t *testing.T) {
	env := &core.Env{Self: core.DatasetAddr("n1", "a"), Now: time.Unix(100, 0), Config: core.Default()}
	d := activeCopy(t, env, 3)
	rb := storageOf(t, d.Step(env, &m.AdminRollback{Site: "a", Snapshot: "e1-n2-s1"}), m.StorageOp_STORAGE_OP_ROLLBACK)
	if fx := d.Step(env, &m.DeleteSite{Site: "a", Epoch: tomb}); d.pendingDelete == nil || len(fx) == 0 {
		t.Fatalf("delete while busy: %v", fx)
	}
	fx := d.Step(env, &m.StorageResult{Op: rb.Op, Site: "a", OpId: rb.OpId, Detail: rb.StashName})
	del := storageOf(t, fx, m.StorageOp_STORAGE_OP_DELETE)
	if core.CompareEpoch(del.Epoch, tomb) != 0 || del.StashName != "deleted-e9000-n3" {
		t.Fatalf("delete request %v", del)
	}
	d.Step(env, &m.StorageResult{Op: del.Op, Site: "a", OpId: del.OpId, Detail: del.StashName})
	info := d.Info()
	if info.Role != m.Role_ROLE_DELETED || core.CompareEpoch(info.Epoch, tomb) != 0 || info.Latest != nil || info.Phase != m.SitePhase_SITE_PHASE_STOPPED {
		t.Fatalf("info after delete %v", info)
	}
	if fx := d.Step(env, &m.Timer{Key: timerSnapshot}); len(fx) != 0 {
		t.Fatalf("snapshot timer after delete: %v", fx)
	}
	if fx := d.Step(env, &m.AdminSnapshot{Site: "a"}); len(fx) != 0 {
		t.Fatalf("admin snapshot after delete: %v", fx)
	}
	if fx := d.Step(env, &m.DeleteSite{Site: "a", Epoch: tomb}); len(fx) != 0 {
		t.Fatalf("duplicate delete: %v", fx)
	}
	// Only a create brings it back.
	fx = d.Step(env, &m.Activate{Spec: d.spec, Epoch: &m.Epoch{Term: 9500, Node: "n1"}, Reason: "failover"})
	if _, ok := findEffect[core.Storage](fx); ok || d.activating != nil {
		t.Fatalf("a failover activated a deleted copy: %v", fx)
	}
}

// A deleted copy answers an offer of the old history (a master that missed
// the deletion) with its tombstone as fence, and that master then stops and
// deletes its own copy; an offer of a history created after the tombstone
// is taken.
func TestTombstoneFencesTheOldHistory(t *testing.T) {
	env := &core.Env{Self: core.DatasetAddr("n2", "a"), Now: time.Unix(100, 0), Config: core.Default()}
	replica := New("n2", "a")
	replica.Step(env, &m.DatasetBoot{Info: &m.DatasetInfo{Site: "a", Node: "n2", Role: m.Role_ROLE_DELETED, Epoch: tomb}})
	old := &m.SiteSpec{Name: "a", Created: &m.Epoch{Term: 1, Node: "n1"}}
	offer := &m.StreamOffer{Site: "a", FromNode: "n1", Epoch: &m.Epoch{Term: 9100, Node: "n1"}, StreamId: 7, Spec: old,
		Target: &m.SnapshotRef{Name: "e9100-n1-s1"}}
	ans, ok := sentTo[*m.StreamAnswer](replica.Step(env, offer), core.DatasetAddr("n1", "a"))
	if !ok || ans.Code != m.Code_CODE_FENCED || core.CompareEpoch(ans.Fence, tomb) != 0 {
		t.Fatalf("answer to the old history: %v", ans)
	}

	env1 := &core.Env{Self: core.DatasetAddr("n1", "a"), Now: time.Unix(100, 0), Config: core.Default()}
	master := activeCopy(t, env1, 2)
	master.replicas = []string{"n2"}
	master.streams["n2"] = &stream{id: 7, target: master.latest()}
	fx := master.Step(env1, ans)
	if del, ok := sentTo[*m.DeleteSite](fx, core.SiteAddr("n1", "a")); !ok || core.CompareEpoch(del.Epoch, tomb) != 0 {
		t.Fatalf("the master fenced by a tombstone: %v", fx)
	}

	created := &m.SiteSpec{Name: "a", Created: &m.Epoch{Term: 9200, Node: "n1"}}
	offer = &m.StreamOffer{Site: "a", FromNode: "n1", Epoch: &m.Epoch{Term: 9200, Node: "n1"}, StreamId: 8, Spec: created,
		Target: &m.SnapshotRef{Name: "e9200-n1-s1"}}
	ans, ok = sentTo[*m.StreamAnswer](replica.Step(env, offer), core.DatasetAddr("n1", "a"))
	if !ok || ans.Code != m.Code_CODE_OK || replica.role != m.Role_ROLE_REPLICA {
		t.Fatalf("answer to the new history: %v (role %s)", ans, replica.role)
	}
}
