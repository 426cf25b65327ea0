package dataset

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// Low on space (StorageLow), a copy drops what only retention's recent
// tiers keep: of six snapshots taken in the last seconds the regular prune
// drops none, this one all but the newest, a replica's base, the one a
// stream is sending and the newest of the hour left (the hourly tier's).
// It sends no report, and while its prune runs a second one does nothing.
func TestStorageLowPrunesRecentSnapshots(t *testing.T) {
	now := time.Unix(100000, 0)
	env := &core.Env{Self: core.DatasetAddr("n1", "a"), Now: now, Config: core.Default()}
	d := New("n1", "a")
	b := &m.DatasetBoot{Info: &m.DatasetInfo{Site: "a", Node: "n1", Role: m.Role_ROLE_REPLICA,
		Epoch: &m.Epoch{Term: 1, Node: "n2"}, Spec: &m.SiteSpec{Name: "a", Domains: []string{"a.example"}}}}
	for i := range 6 {
		b.Snapshots = append(b.Snapshots, &m.SnapshotRef{Name: fmt.Sprintf("e1-n2-s%d", i+1), Epoch: &m.Epoch{Term: 1, Node: "n2"},
			Seq: uint64(i + 1), TakenMs: now.Add(-time.Duration(6-i) * time.Second).UnixMilli()})
	}
	d.Step(env, b)
	if st, ok := findEffect[core.Storage](d.Step(env, &m.Timer{Key: timerPrune})); ok {
		t.Fatalf("the regular prune dropped young snapshots: %v", st.Req.Names)
	}
	d.cursor = map[string]string{"n3": "e1-n2-s2"}
	d.streams = map[string]*stream{"n4": {target: b.Snapshots[3]}}
	fx := d.Step(env, &m.StorageLow{Site: "a", FreeBytes: 5})
	st, ok := findEffect[core.Storage](fx)
	if !ok || st.Req.Op != m.StorageOp_STORAGE_OP_PRUNE {
		t.Fatalf("no prune for space: %v", fx)
	}
	if want := []string{"e1-n2-s1", "e1-n2-s3"}; !slices.Equal(st.Req.Names, want) {
		t.Fatalf("pruned for space %v, want %v", st.Req.Names, want)
	}
	for _, e := range fx {
		if s, ok := e.(core.Send); ok {
			t.Fatalf("prune for space sent %v", s)
		}
	}
	if st, ok := findEffect[core.Storage](d.Step(env, &m.StorageLow{Site: "a", FreeBytes: 5})); ok {
		t.Fatalf("a second prune while one runs: %v", st.Req.Names)
	}
}
