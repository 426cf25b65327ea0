package host

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/storage"
	"github.com/hybridcluster/hybridcluster/runtime/storage/portable"
	"github.com/hybridcluster/hybridcluster/runtime/storage/storagetest"
)

// storageHost is a host that is never started: enough to carry out
// storage requests on a portable driver.
func storageHost(t *testing.T) (*Host, *portable.Driver) {
	t.Helper()
	dir := t.TempDir()
	drv, err := portable.New(filepath.Join(dir, "store"), nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := newHost(Options{Node: "n1", Members: []Member{{Name: "n1", ActorAddr: "127.0.0.1:1", StreamURL: "http://127.0.0.1:2"}},
		Driver: drv, StateDir: filepath.Join(dir, "state"), StreamToken: "t"})
	if err != nil {
		t.Fatal(err)
	}
	return h, drv
}

// fileExists reports whether the live tree of site holds rel.
func fileExists(t *testing.T, ctx context.Context, d storage.Driver, site storage.Site, rel string) bool {
	t.Helper()
	dir, err := d.Mountpoint(ctx, site)
	if err != nil {
		t.Fatal(err)
	}
	_, err = os.Stat(filepath.Join(dir, rel))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

func refNames(refs []*m.SnapshotRef) []string {
	var out []string
	for _, r := range refs {
		out = append(out, r.GetName())
	}
	return out
}

// A restore through the host answers the restored history as the actors
// name it (a rollback's safety snapshot left out), fences the dataset at the
// new epoch, and puts what the site had aside; restoring the displaced stash
// brings that back.
func TestStorageRestoreStash(t *testing.T) {
	ctx := context.Background()
	h, drv := storageHost(t)
	site := storage.MustSite("alpha")
	do := func(req *m.StorageRequest) *m.StorageResult {
		t.Helper()
		req.Site = "alpha"
		return h.storageLocal(ctx, req)
	}
	e1 := &m.Epoch{Term: 1, Node: "n1"}
	if r := do(&m.StorageRequest{Op: m.StorageOp_STORAGE_OP_CREATE, Role: m.Role_ROLE_MASTER, Epoch: e1, Spec: &m.SiteSpec{Name: "alpha"}}); r.Code != m.Code_CODE_OK {
		t.Fatalf("create: %v", r)
	}
	snap := func(seq uint64, file string) *m.SnapshotRef {
		t.Helper()
		storagetest.WriteFile(t, ctx, drv, site, file, []byte(file))
		ref := &m.SnapshotRef{Name: core.SnapshotName(e1, seq), Epoch: e1, Seq: seq}
		if r := do(&m.StorageRequest{Op: m.StorageOp_STORAGE_OP_SNAPSHOT, Snapshot: ref, Epoch: e1}); r.Code != m.Code_CODE_OK {
			t.Fatalf("snapshot %d: %v", seq, r)
		}
		return ref
	}
	s1 := snap(1, "one")
	snap(2, "two")
	storagetest.WriteFile(t, ctx, drv, site, "live", []byte("not snapshotted"))
	e2 := &m.Epoch{Term: 2, Node: "n1"}
	if r := do(&m.StorageRequest{Op: m.StorageOp_STORAGE_OP_ROLLBACK, Snapshot: s1, StashName: "rollback-1", Epoch: e2}); r.Code != m.Code_CODE_OK {
		t.Fatalf("rollback: %v", r)
	}

	e3 := &m.Epoch{Term: 3, Node: "n1"}
	r := do(&m.StorageRequest{Op: m.StorageOp_STORAGE_OP_RESTORE_STASH, StashName: "rollback-1", DisplacedStash: "displaced-1", Epoch: e3})
	if r.Code != m.Code_CODE_OK {
		t.Fatalf("restore: %v", r)
	}
	if got, want := refNames(r.Snapshots), []string{"e1-n1-s1", "e1-n1-s2"}; !slices.Equal(got, want) {
		t.Errorf("restored snapshots %v, want %v", got, want)
	}
	if r.Snapshots[1].Seq != 2 || core.CompareEpoch(r.Snapshots[1].Epoch, e1) != 0 {
		t.Errorf("restored ref %v", r.Snapshots[1])
	}
	if e, err := drv.Epoch(ctx, site); err != nil || e != (storage.Epoch{Term: 3, Node: "n1"}) {
		t.Errorf("epoch after restore %v %v, want 3:n1", e, err)
	}
	for _, f := range []string{"one", "two", "live"} {
		if !fileExists(t, ctx, drv, site, f) {
			t.Errorf("file %s not back after the restore", f)
		}
	}
	stashes, err := drv.ListStash(ctx, site)
	if err != nil || len(stashes) != 1 || stashes[0].Name.String() != "displaced-1" {
		t.Fatalf("stashes after restore %v %v", stashes, err)
	}

	// Unknown stash, bad names: refused before or by the driver.
	if r := do(&m.StorageRequest{Op: m.StorageOp_STORAGE_OP_RESTORE_STASH, StashName: "rollback-1", DisplacedStash: "displaced-2", Epoch: e3}); r.Code == m.Code_CODE_OK {
		t.Errorf("restore of a gone stash answered OK")
	}
	if r := do(&m.StorageRequest{Op: m.StorageOp_STORAGE_OP_RESTORE_STASH, StashName: "displaced-1", DisplacedStash: "../x", Epoch: e3}); r.Code != m.Code_CODE_INVALID {
		t.Errorf("bad displaced name answered %v", r)
	}

	// And back: the rolled-back history returns, nothing was lost.
	e4 := &m.Epoch{Term: 4, Node: "n1"}
	r = do(&m.StorageRequest{Op: m.StorageOp_STORAGE_OP_RESTORE_STASH, StashName: "displaced-1", DisplacedStash: "displaced-2", Epoch: e4})
	if r.Code != m.Code_CODE_OK || !slices.Equal(refNames(r.Snapshots), []string{"e1-n1-s1"}) {
		t.Fatalf("restore of the displaced stash: %v", r)
	}
	if fileExists(t, ctx, drv, site, "two") {
		t.Errorf("file two live after restoring the rolled-back state")
	}
}

// Mount answers the read-only view's directory, which holds the snapshot's
// files; unmount ends it; bad names never reach the driver.
func TestStorageMountUnmount(t *testing.T) {
	ctx := context.Background()
	h, drv := storageHost(t)
	site := storage.MustSite("beta")
	do := func(req *m.StorageRequest) *m.StorageResult {
		t.Helper()
		req.Site = "beta"
		return h.storageLocal(ctx, req)
	}
	e1 := &m.Epoch{Term: 1, Node: "n1"}
	if r := do(&m.StorageRequest{Op: m.StorageOp_STORAGE_OP_CREATE, Role: m.Role_ROLE_MASTER, Epoch: e1}); r.Code != m.Code_CODE_OK {
		t.Fatalf("create: %v", r)
	}
	storagetest.WriteFile(t, ctx, drv, site, "index.html", []byte("old version"))
	ref := &m.SnapshotRef{Name: core.SnapshotName(e1, 1), Epoch: e1, Seq: 1}
	if r := do(&m.StorageRequest{Op: m.StorageOp_STORAGE_OP_SNAPSHOT, Snapshot: ref, Epoch: e1}); r.Code != m.Code_CODE_OK {
		t.Fatalf("snapshot: %v", r)
	}
	storagetest.WriteFile(t, ctx, drv, site, "index.html", []byte("new version"))

	r := do(&m.StorageRequest{Op: m.StorageOp_STORAGE_OP_MOUNT, Snapshot: ref})
	if r.Code != m.Code_CODE_OK || r.MountPath == "" {
		t.Fatalf("mount: %v", r)
	}
	if got, err := os.ReadFile(filepath.Join(r.MountPath, "index.html")); err != nil || string(got) != "old version" {
		t.Fatalf("mounted index.html = %q, %v; want the old version", got, err)
	}
	if r := do(&m.StorageRequest{Op: m.StorageOp_STORAGE_OP_UNMOUNT, Snapshot: ref}); r.Code != m.Code_CODE_OK {
		t.Fatalf("unmount: %v", r)
	}
	if r := do(&m.StorageRequest{Op: m.StorageOp_STORAGE_OP_UNMOUNT, Snapshot: ref}); r.Code == m.Code_CODE_OK {
		t.Errorf("second unmount answered OK")
	}
	for _, bad := range []string{"", "../x", "hc:safety", "-rf"} {
		if r := do(&m.StorageRequest{Op: m.StorageOp_STORAGE_OP_MOUNT, Snapshot: &m.SnapshotRef{Name: bad}}); r.Code != m.Code_CODE_INVALID {
			t.Errorf("mount %q answered %v, want INVALID", bad, r)
		}
	}
	if r := do(&m.StorageRequest{Op: m.StorageOp_STORAGE_OP_MOUNT, Snapshot: &m.SnapshotRef{Name: "e1-n1-s9"}}); r.Code == m.Code_CODE_OK {
		t.Errorf("mount of a missing snapshot answered OK")
	}
}

// Delete stashes the copy whole, leaves it read-only and fenced at the
// tombstone, and records the tombstone, which a restart boots (also on a
// node that held no copy); a create afterwards takes the emptied dataset
// and ends the tombstone.
func TestStorageDeleteAndBoot(t *testing.T) {
	ctx := context.Background()
	h, drv := storageHost(t)
	site := storage.MustSite("gone")
	do := func(name string, req *m.StorageRequest) *m.StorageResult {
		t.Helper()
		req.Site = name
		return h.storageLocal(ctx, req)
	}
	e1 := &m.Epoch{Term: 1, Node: "n1"}
	spec := &m.SiteSpec{Name: "gone", Created: e1}
	if r := do("gone", &m.StorageRequest{Op: m.StorageOp_STORAGE_OP_CREATE, Role: m.Role_ROLE_MASTER, Epoch: e1, Spec: spec}); r.Code != m.Code_CODE_OK {
		t.Fatalf("create: %v", r)
	}
	storagetest.WriteFile(t, ctx, drv, site, "index.html", []byte("content"))
	ref := &m.SnapshotRef{Name: core.SnapshotName(e1, 1), Epoch: e1, Seq: 1}
	if r := do("gone", &m.StorageRequest{Op: m.StorageOp_STORAGE_OP_SNAPSHOT, Snapshot: ref, Epoch: e1}); r.Code != m.Code_CODE_OK {
		t.Fatalf("snapshot: %v", r)
	}
	storagetest.WriteFile(t, ctx, drv, site, "live.txt", []byte("not snapshotted"))

	tomb := &m.Epoch{Term: 9, Node: "n2" + core.TombstoneMark}
	r := do("gone", &m.StorageRequest{Op: m.StorageOp_STORAGE_OP_DELETE, StashName: "deleted-e9-n2", Epoch: tomb})
	if r.Code != m.Code_CODE_OK || r.Detail != "deleted-e9-n2" {
		t.Fatalf("delete: %v", r)
	}
	if snaps, _ := drv.ListSnapshots(ctx, site); len(snaps) != 0 {
		t.Errorf("snapshots after delete: %v", snaps)
	}
	if fileExists(t, ctx, drv, site, "live.txt") {
		t.Errorf("live data still live after delete")
	}
	stashes, _ := drv.ListStash(ctx, site)
	if len(stashes) != 1 || stashes[0].Name.String() != "deleted-e9-n2" || len(stashes[0].Snapshots) != 1 {
		t.Fatalf("stashes after delete: %+v", stashes)
	}
	if e, _ := drv.Epoch(ctx, site); e != toStorageEpoch(tomb) {
		t.Errorf("fence after delete %v", e)
	}
	// Again (a retry after a crash, or a duplicate): no harm.
	if r := do("gone", &m.StorageRequest{Op: m.StorageOp_STORAGE_OP_DELETE, StashName: "deleted-e9-n2", Epoch: tomb}); r.Code != m.Code_CODE_OK {
		t.Fatalf("delete again: %v", r)
	}
	// A node without a copy records the tombstone only.
	if r := do("never", &m.StorageRequest{Op: m.StorageOp_STORAGE_OP_DELETE, StashName: "deleted-e9-n2", Epoch: tomb}); r.Code != m.Code_CODE_OK || r.Detail != "" {
		t.Fatalf("delete without a copy: %v", r)
	}

	// A restart (a new catalog from disk) boots both tombstones.
	cat, err := openCatalog(h.catalog.dir)
	if err != nil {
		t.Fatal(err)
	}
	h.catalog = cat
	boot, err := h.bootDatasets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*m.DatasetBoot{}
	for _, b := range boot {
		got[b.Info.Site] = b
	}
	for _, name := range []string{"gone", "never"} {
		b := got[name]
		if b == nil || b.Info.Role != m.Role_ROLE_DELETED || core.CompareEpoch(b.Info.Epoch, tomb) != 0 || len(b.Snapshots) != 0 {
			t.Errorf("boot of %s: %v", name, b)
		}
	}
	if b := got["gone"]; b == nil || len(b.Stashes) != 1 {
		t.Errorf("boot of gone: %v", b)
	}

	// Created again: the emptied dataset becomes the new master's; the
	// tombstone ends (also where there was no copy).
	e10 := &m.Epoch{Term: 10, Node: "n1"}
	for _, name := range []string{"gone", "never"} {
		if r := do(name, &m.StorageRequest{Op: m.StorageOp_STORAGE_OP_CREATE, Role: m.Role_ROLE_MASTER, Epoch: e10,
			Spec: &m.SiteSpec{Name: name, Created: e10}}); r.Code != m.Code_CODE_OK {
			t.Fatalf("create %s again: %v", name, r)
		}
		if rec := h.catalog.get(name); rec.role != m.Role_ROLE_MASTER || rec.tombstone != nil {
			t.Errorf("catalog of %s after the create: %+v", name, rec)
		}
	}
	// Writable again (WriteFile fails the test otherwise).
	storagetest.WriteFile(t, ctx, drv, site, "new.txt", []byte("the new site"))
}

// A stream of a history created after a deletion makes the deleted copy a
// replica again in the catalog (a restart must not boot it deleted).
func TestCatalogReplicaAfterTombstone(t *testing.T) {
	cat, err := openCatalog(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := cat.putTombstone("s", &m.Epoch{Term: 3, Node: "n1~deleted"}); err != nil {
		t.Fatal(err)
	}
	if err := cat.ensureReplica("s"); err != nil {
		t.Fatal(err)
	}
	if rec := cat.get("s"); rec.role != m.Role_ROLE_REPLICA || rec.tombstone != nil {
		t.Fatalf("after a receive: %+v", rec)
	}
	if err := cat.putTombstone("t", &m.Epoch{Term: 3, Node: "n1~deleted"}); err != nil {
		t.Fatal(err)
	}
	if err := cat.setSpec("t", &m.SiteSpec{Name: "t"}); err != nil {
		t.Fatal(err)
	}
	if rec := cat.get("t"); rec.role != m.Role_ROLE_REPLICA {
		t.Fatalf("after a spec from a stream: %+v", rec)
	}
}
