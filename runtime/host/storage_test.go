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
