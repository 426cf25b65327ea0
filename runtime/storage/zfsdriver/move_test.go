package zfsdriver_test

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/storage"
	"github.com/hybridcluster/hybridcluster/runtime/storage/storagetest"
	"github.com/hybridcluster/hybridcluster/runtime/storage/zfsdriver/zfstest"
)

// since is how many commands of each op finished after before.
func (c *commandCounter) since(before map[string]int) map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for op, n := range c.ops {
		if d := n - before[op]; d > 0 {
			out[op] = d
		}
	}
	return out
}

func (c *commandCounter) now() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.ops)
}

// A planned move's steps ask zfs only what they need: a site's clients
// wait for its final increment, the promotion and the site's start, and
// each zfs command there is 15-90 ms on zfs-fuse (more on a busy node).
// What they need is still done: the fence is checked and raised, the
// mountpoint follows the dataset, and no site dataset records atimes.
func TestMoveStepsAskZFSOnlyWhatTheyNeed(t *testing.T) {
	ca, cb := &commandCounter{ops: map[string]int{}}, &commandCounter{ops: map[string]int{}}
	a := zfstest.NewPool(t, slog.New(ca))
	b := zfstest.NewPool(t, slog.New(cb))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	site := storage.MustSite("mover")
	e1 := storage.Epoch{Term: 1, Node: "a"}
	e2 := storage.Epoch{Term: 2, Node: "a"}
	if err := a.Create(ctx, site, 0); err != nil {
		t.Fatal(err)
	}
	storagetest.WriteFile(t, ctx, a, site, "index.html", []byte("v1"))
	snap := func(name string) {
		t.Helper()
		if _, err := a.Snapshot(ctx, site, storage.MustSnap(name)); err != nil {
			t.Fatal(err)
		}
	}
	transfer := func(epoch storage.Epoch, base, to string) error {
		_, err := storagetest.Transfer(ctx, a, b, site, epoch, storage.MustSnap(base), storage.MustSnap(to))
		return err
	}
	snap("s1")
	if _, err := storagetest.Transfer(ctx, a, b, site, e1, storage.SnapName{}, storage.MustSnap("s1")); err != nil {
		t.Fatal(err)
	}

	// An increment into the replica at its fence: one listing (with the
	// fence) before the receive and one after it, nothing else.
	storagetest.WriteFile(t, ctx, a, site, "index.html", []byte("v2"))
	snap("s2")
	before := cb.now()
	if err := transfer(e1, "s1", "s2"); err != nil {
		t.Fatal(err)
	}
	if got, want := cb.since(before), map[string]int{"list snapshots": 2, "receive": 1}; !maps.Equal(got, want) {
		t.Fatalf("an increment at the replica's fence ran %v on the receiver; want %v", got, want)
	}
	// At a newer epoch the fence is raised (one set more).
	storagetest.WriteFile(t, ctx, a, site, "index.html", []byte("v3"))
	snap("s3")
	before = cb.now()
	if err := transfer(e2, "s2", "s3"); err != nil {
		t.Fatal(err)
	}
	if got, want := cb.since(before), map[string]int{"list snapshots": 2, "receive": 1, "set": 1}; !maps.Equal(got, want) {
		t.Fatalf("an increment at a newer epoch ran %v on the receiver; want %v", got, want)
	}
	if got, err := b.Epoch(ctx, site); err != nil || got != e2 {
		t.Fatalf("replica's fence after an increment at %v: %v, %v", e2, got, err)
	}
	// At an older one it is refused, and nothing is received.
	snap("s4")
	before = cb.now()
	if err := transfer(e1, "s3", "s4"); !errors.Is(err, storage.ErrFenced) {
		t.Fatalf("an increment at an epoch older than the fence: %v, want ErrFenced", err)
	}
	if n := cb.since(before)["receive"]; n != 0 {
		t.Fatalf("a fenced increment ran %d receives", n)
	}

	// The promotion sets readonly and nothing else; the mountpoint is asked
	// once and follows the dataset.
	before = cb.now()
	if err := b.SetReadOnly(ctx, site, false); err != nil {
		t.Fatal(err)
	}
	if n := cb.since(before)["set"]; n != 1 {
		t.Fatalf("a promotion ran %d zfs set; want 1 (readonly)", n)
	}
	checkMount := func(parent, want string) {
		t.Helper()
		before := cb.now()
		var mount string
		for range 3 {
			m, err := b.Mountpoint(ctx, site)
			if err != nil {
				t.Fatal(err)
			}
			mount = m
		}
		if n := cb.since(before)["get"]; n > 1 {
			t.Fatalf("three Mountpoint calls ran %d zfs get; want at most 1", n)
		}
		ds := b.Root() + "/" + parent + "/" + site.String()
		out, err := exec.CommandContext(ctx, "zfs", "get", "-H", "-o", "value", "mountpoint,atime", ds).CombinedOutput()
		if err != nil {
			t.Fatalf("zfs get %s: %v: %s", ds, err, out)
		}
		f := strings.Fields(string(out))
		if len(f) != 2 || f[0] != mount || f[1] != "off" {
			t.Fatalf("%s: zfs says mountpoint,atime = %q; the driver says mountpoint %s; want atime off", ds, f, mount)
		}
		if got, err := os.ReadFile(filepath.Join(mount, "index.html")); err != nil || string(got) != want {
			t.Fatalf("index.html at the mountpoint %s: %q, %v; want %q", mount, got, err, want)
		}
	}
	checkMount("sites", "v3")
	// What a stash and its restore put in a master's dataset's place
	// records no atimes either (it inherits them; nothing sets them).
	if err := b.Stash(ctx, site, storage.MustSnap("s2"), storage.MustStash("after-s2")); err != nil {
		t.Fatal(err)
	}
	checkMount("sites", "v2")
	if err := b.RestoreStash(ctx, site, storage.MustStash("after-s2"), storage.MustStash("displaced")); err != nil {
		t.Fatal(err)
	}
	checkMount("sites", "v3")
	storagetest.WriteFile(t, ctx, b, site, "index.html", []byte("v4"))
	// The demotion too, and the kept mountpoint is not the old one.
	before = cb.now()
	if err := b.SetReadOnly(ctx, site, true); err != nil {
		t.Fatal(err)
	}
	if n := cb.since(before)["set"]; n != 1 {
		t.Fatalf("a demotion ran %d zfs set; want 1 (readonly)", n)
	}
	checkMount("replicas", "v4")

}

// A dataset whose fence (hc:epoch) is not an epoch (set by hand, or by a
// tool that knows no better) can still be listed, so that the node's
// reports, retention and the admin views go on; what decides on the fence
// (a receive, Epoch) refuses it instead of guessing.
func TestABadFenceFailsOnlyWhatDecidesOnIt(t *testing.T) {
	a := zfstest.NewPool(t, zfstest.Logger())
	b := zfstest.NewPool(t, zfstest.Logger())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	site := storage.MustSite("fenced")
	e1 := storage.Epoch{Term: 1, Node: "a"}
	if err := a.Create(ctx, site, 0); err != nil {
		t.Fatal(err)
	}
	storagetest.WriteFile(t, ctx, a, site, "index.html", []byte("v1"))
	for _, s := range []string{"s1", "s2"} {
		if _, err := a.Snapshot(ctx, site, storage.MustSnap(s)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := storagetest.Transfer(ctx, a, b, site, e1, storage.SnapName{}, storage.MustSnap("s1")); err != nil {
		t.Fatal(err)
	}
	replica := b.Root() + "/replicas/fenced"
	if out, err := exec.CommandContext(ctx, "zfs", "set", "hc:epoch=not-an-epoch", replica).CombinedOutput(); err != nil {
		t.Fatalf("zfs set: %v: %s", err, out)
	}
	snaps, err := b.ListSnapshots(ctx, site)
	if err != nil || len(snaps) != 1 || snaps[0].Name.String() != "s1" {
		t.Fatalf("listing a copy with a bad fence: %v %v", snaps, err)
	}
	if _, err := b.Epoch(ctx, site); err == nil {
		t.Fatal("Epoch of a bad fence: no error")
	}
	if _, err := storagetest.Transfer(ctx, a, b, site, e1, storage.MustSnap("s1"), storage.MustSnap("s2")); err == nil {
		t.Fatal("an increment was received past a fence that is not an epoch")
	}
	if snaps, err := b.ListSnapshots(ctx, site); err != nil || len(snaps) != 1 {
		t.Fatalf("after the refused increment: %v %v", snaps, err)
	}
}
