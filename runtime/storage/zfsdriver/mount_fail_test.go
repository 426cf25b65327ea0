package zfsdriver_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/storage"
	"github.com/hybridcluster/hybridcluster/runtime/storage/zfsdriver/zfstest"
)

// A promotion whose mount fails leaves the replica where it was, whole:
// zfs-fuse refuses to mount over a directory that is not empty (something
// wrote into the site's mountpoint while nothing was mounted there). Found
// on make run: a move to such a node was abandoned, as it should be, but
// the replica's history stayed renamed to the site's name, unmounted, and
// the stash that followed split it from its snapshots; the node then
// failed to stash it every second.
func TestAPromotionThatCannotMountLeavesTheReplica(t *testing.T) {
	d := zfstest.NewPool(t, zfstest.Logger())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	site := storage.MustSite("sq")
	if err := d.Create(ctx, site, 0); err != nil {
		t.Fatal(err)
	}
	siteDir, err := d.Mountpoint(ctx, site)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(siteDir, "index.html"), []byte("v1"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Snapshot(ctx, site, storage.MustSnap("s1")); err != nil {
		t.Fatal(err)
	}
	if err := d.SetReadOnly(ctx, site, true); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(siteDir, 0o755); err != nil {
		t.Fatal(err)
	}
	squatter := filepath.Join(siteDir, "left-behind.txt")
	if err := os.WriteFile(squatter, []byte("not the site's"), 0o644); err != nil {
		t.Fatal(err)
	}

	readonly := func() string {
		out, err := exec.CommandContext(ctx, "zfs", "get", "-H", "-o", "name,value,source", "readonly", d.Root()+"/replicas/sq").CombinedOutput()
		if err != nil {
			return err.Error() + ": " + string(out)
		}
		return string(out)
	}
	before := readonly()
	err = d.SetReadOnly(ctx, site, false)
	if err == nil {
		// OpenZFS 2 mounts over the directory (overlay): the promotion
		// must then be whole, the site's own files in view.
		dir, err := d.Mountpoint(ctx, site)
		if err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "index.html")); err != nil || string(b) != "v1" {
			t.Fatalf("promoted over a non-empty directory, the site's file: %q %v", b, err)
		}
		return
	}
	t.Logf("promotion over a non-empty directory: %v", err)
	exists := func(ds string) bool {
		return exec.CommandContext(ctx, "zfs", "list", "-H", "-o", "name", ds).Run() == nil
	}
	if !exists(d.Root()+"/replicas/sq") || exists(d.Root()+"/sites/sq") {
		t.Fatalf("after the failed promotion the copy is not where it was: replica %v, site's name %v",
			exists(d.Root()+"/replicas/sq"), exists(d.Root()+"/sites/sq"))
	}
	if after := readonly(); after != before {
		t.Fatalf("the replica's read-only setting %q after the failed promotion, %q before", after, before)
	}
	if snaps, err := d.ListSnapshots(ctx, site); err != nil || len(snaps) != 1 || snaps[0].Name.String() != "s1" {
		t.Fatalf("the replica's snapshots after the failed promotion: %v %v", snaps, err)
	}

	// Once the directory is cleared the promotion goes through.
	if err := os.RemoveAll(siteDir); err != nil {
		t.Fatal(err)
	}
	if err := d.SetReadOnly(ctx, site, false); err != nil {
		t.Fatalf("promotion after the directory was cleared: %v", err)
	}
	dir, err := d.Mountpoint(ctx, site)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "index.html")); err != nil || string(b) != "v1" {
		t.Fatalf("the site's file after the promotion: %q %v", b, err)
	}
}
