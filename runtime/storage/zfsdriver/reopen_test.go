package zfsdriver_test

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/storage"
	"github.com/hybridcluster/hybridcluster/runtime/storage/zfsdriver"
	"github.com/hybridcluster/hybridcluster/runtime/storage/zfsdriver/zfstest"
)

// A node restarts while a replica's mount is in use (a shell, an open file):
// opening the driver again sets nothing on the replicas' parent, whose
// property changes would remount every replica and fail on the busy one.
func TestReopensWithABusyReplica(t *testing.T) {
	d := zfstest.NewPool(t, zfstest.Logger())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	site := storage.MustSite("busy")
	if err := d.Create(ctx, site, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Snapshot(ctx, site, storage.MustSnap("s1")); err != nil {
		t.Fatal(err)
	}
	if err := d.SetReadOnly(ctx, site, true); err != nil { // a replica now
		t.Fatal(err)
	}
	dir, err := d.Mountpoint(ctx, site)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(dir) // keeps the mount busy
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	c := &commandCounter{ops: map[string]int{}}
	again, err := zfsdriver.New(ctx, zfsdriver.Config{Root: d.Root(), Logger: slog.New(c)})
	if err != nil {
		t.Fatalf("reopen with a busy replica: %v", err)
	}
	if n := c.count("set"); n != 0 {
		t.Fatalf("reopen set %d properties that were set already", n)
	}
	if snaps, err := again.ListSnapshots(ctx, site); err != nil || len(snaps) != 1 {
		t.Fatalf("the replica after the reopen: %v %v", snaps, err)
	}
}

// A node starts on a pool imported without its mounts (zfs-fuse mounts
// nothing when its daemon starts; OpenZFS with zpool import -N): opening
// the driver mounts the root, sites/ and the sites' datasets, parents
// first, and leaves the replicas unmounted. A site started in its unmounted
// dataset's directory would run without its files, and its writes would go
// to the parent's filesystem, in no snapshot. Found on a machine that had
// restarted: make run's demo app failed to start for good ("no such file
// or directory"), while the site showed as active.
func TestReopenMountsWhatAnImportLeftUnmounted(t *testing.T) {
	d := zfstest.NewPool(t, zfstest.Logger())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	master, replica := storage.MustSite("boot"), storage.MustSite("bootreplica")
	for _, s := range []storage.Site{master, replica} {
		if err := d.Create(ctx, s, 0); err != nil {
			t.Fatal(err)
		}
		dir, err := d.Mountpoint(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte(s.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Snapshot(ctx, s, storage.MustSnap("s1")); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.SetReadOnly(ctx, replica, true); err != nil {
		t.Fatal(err)
	}
	zfs := func(args ...string) string {
		t.Helper()
		out, err := exec.CommandContext(ctx, "zfs", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("zfs %v: %v: %s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	root := d.Root()
	siteDS, sites := root+"/sites/boot", root+"/sites"
	// What an import without mounts leaves: children first, as zfs needs.
	unmountAll := func() {
		for _, ds := range []string{siteDS, root + "/replicas/bootreplica", sites, root + "/stash", root + "/views", root + "/swap", root} {
			if zfs("get", "-H", "-o", "value", "mounted", ds) == "yes" {
				zfs("unmount", ds)
			}
		}
	}
	// One the operator mounts by hand: left alone, and no reason to fail.
	zfs("create", "-o", "mountpoint=legacy", root+"/operator")
	unmountAll()

	again, err := zfsdriver.New(ctx, zfsdriver.Config{Root: root, Logger: zfstest.Logger()})
	if err != nil {
		t.Fatalf("open on an unmounted pool: %v", err)
	}
	for _, ds := range []string{root, sites, siteDS} {
		if got := zfs("get", "-H", "-o", "value", "mounted", ds); got != "yes" {
			t.Errorf("%s after the open: mounted=%s, want yes", ds, got)
		}
	}
	for _, ds := range []string{root + "/replicas/bootreplica", root + "/operator"} {
		if got := zfs("get", "-H", "-o", "value", "mounted", ds); got != "no" {
			t.Errorf("%s after the open: mounted=%s; left as it was", ds, got)
		}
	}
	dir, err := again.Mountpoint(ctx, master)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "index.html")); err != nil || string(b) != "boot" {
		t.Fatalf("the site's file at its mountpoint after the open: %q %v", b, err)
	}

	// Unmounted while a driver runs, before it was asked where the site
	// is (an answer is kept for a while): the answer is a mounted dataset
	// too.
	third, err := zfsdriver.New(ctx, zfsdriver.Config{Root: root, Logger: zfstest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	zfs("unmount", siteDS)
	dir, err = third.Mountpoint(ctx, master)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "index.html")); err != nil || string(b) != "boot" {
		t.Fatalf("the site's file after an unmount behind the driver's back: %q %v", b, err)
	}
	// A replica's mountpoint is only named, not mounted.
	if _, err := third.Mountpoint(ctx, replica); err != nil {
		t.Fatal(err)
	}
	if got := zfs("get", "-H", "-o", "value", "mounted", root+"/replicas/bootreplica"); got != "no" {
		t.Errorf("a replica's Mountpoint mounted it (mounted=%s)", got)
	}
}
