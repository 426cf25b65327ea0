package dataset

import (
	"slices"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// activeCopy is a booted copy (snapshots taken long ago) made master.
func activeCopy(t *testing.T, env *core.Env, snaps int) *Dataset {
	t.Helper()
	d := bootedCopy(env, snaps, 0)
	st, ok := findEffect[core.Storage](d.Step(env, &m.Activate{Spec: d.spec, Epoch: &m.Epoch{Term: 5, Node: "n1"}, Reason: "failover"}))
	if !ok {
		t.Fatal("no activation")
	}
	d.Step(env, &m.StorageResult{Op: st.Req.Op, Site: "a", OpId: st.Req.OpId})
	if !d.active {
		t.Fatal("not active")
	}
	return d
}

// A mounted snapshot is kept by retention until it is unmounted, and at
// the MountsPendingMax bound a new mount is answered BUSY at once.
func TestMountedSnapshotIsKept(t *testing.T) {
	// The copy's snapshots are older than the daily retention.
	env := &core.Env{Self: core.DatasetAddr("n1", "a"), Now: time.Unix(30*24*3600, 0), Config: core.Default()}
	d := activeCopy(t, env, 3)
	mount := func(kind m.AdminQueryKind, name string) []core.Effect {
		return d.Step(env, &m.AdminQuery{QueryId: 1, ReplyNode: "n1", Kind: kind, Site: "a", Snapshot: name})
	}
	st, ok := findEffect[core.Storage](mount(m.AdminQueryKind_ADMIN_QUERY_MOUNT, "e1-n2-s1"))
	if !ok || st.Req.Op != m.StorageOp_STORAGE_OP_MOUNT || st.Req.Snapshot.GetName() != "e1-n2-s1" {
		t.Fatalf("mount effects: %v", st)
	}
	fx := d.Step(env, &m.StorageResult{Op: st.Req.Op, Site: "a", OpId: st.Req.OpId, MountPath: "/v/s1"})
	if s, ok := findEffect[core.Send](fx); !ok || s.Msg.(*m.AdminView).GetMountPath() != "/v/s1" || s.To != core.ClientAddr("n1") {
		t.Fatalf("mount answer %v", fx)
	}
	prune := func() []string {
		t.Helper()
		for _, e := range d.Step(env, &m.Timer{Key: timerPrune}) {
			if st, ok := e.(core.Storage); ok && st.Req.Op == m.StorageOp_STORAGE_OP_PRUNE {
				d.Step(env, &m.StorageResult{Op: st.Req.Op, Site: "a", OpId: st.Req.OpId})
				return st.Req.Names
			}
		}
		return nil
	}
	if got := prune(); slices.Contains(got, "e1-n2-s1") || !slices.Contains(got, "e1-n2-s2") {
		t.Fatalf("pruned %v: want e1-n2-s2 and never the mounted e1-n2-s1", got)
	}
	st, _ = findEffect[core.Storage](mount(m.AdminQueryKind_ADMIN_QUERY_UNMOUNT, "e1-n2-s1"))
	d.Step(env, &m.StorageResult{Op: st.Req.Op, Site: "a", OpId: st.Req.OpId})
	if got := prune(); !slices.Contains(got, "e1-n2-s1") {
		t.Fatalf("pruned %v after the unmount: want e1-n2-s1", got)
	}

	for i := 0; i < MountsPendingMax; i++ {
		if _, ok := findEffect[core.Storage](mount(m.AdminQueryKind_ADMIN_QUERY_UNMOUNT, "e1-n2-s3")); !ok {
			t.Fatalf("unmount %d not asked of storage", i)
		}
	}
	fx = mount(m.AdminQueryKind_ADMIN_QUERY_UNMOUNT, "e1-n2-s3")
	if s, ok := findEffect[core.Send](fx); !ok || s.Msg.(*m.AdminView).GetCode() != m.Code_CODE_BUSY {
		t.Fatalf("past the bound: %v", fx)
	}
}
