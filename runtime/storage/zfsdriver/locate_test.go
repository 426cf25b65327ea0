package zfsdriver_test

import (
	"context"
	"errors"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/storage"
	"github.com/hybridcluster/hybridcluster/runtime/storage/zfsdriver/zfstest"
)

// commandCounter counts the driver's finished commands by op.
type commandCounter struct {
	mu  sync.Mutex
	ops map[string]int
}

func (c *commandCounter) Enabled(context.Context, slog.Level) bool { return true }
func (c *commandCounter) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *commandCounter) WithGroup(string) slog.Handler            { return c }
func (c *commandCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "zfs done" && r.Message != "zfs failed" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "op" {
			c.mu.Lock()
			c.ops[a.Value.String()]++
			c.mu.Unlock()
		}
		return true
	})
	return nil
}

func (c *commandCounter) count(op string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ops[op]
}

// Where a site's dataset is gets asked once, not by every operation.
func TestLocationIsProbedOnce(t *testing.T) {
	counter := &commandCounter{ops: map[string]int{}}
	d := zfstest.NewPool(t, slog.New(counter))
	ctx := context.Background()
	site := storage.MustSite("cached")
	if err := d.Create(ctx, site, 0); err != nil {
		t.Fatal(err)
	}
	before := counter.count("probe")
	for range 5 {
		if ok, err := d.Exists(ctx, site); err != nil || !ok {
			t.Fatalf("Exists = %v, %v", ok, err)
		}
		if _, err := d.ListSnapshots(ctx, site); err != nil {
			t.Fatal(err)
		}
	}
	if n := counter.count("probe") - before; n > 1 {
		t.Fatalf("five Exists and ListSnapshots probed the dataset %d times; want at most once", n)
	}
	// A rename through the driver is seen at once, without probing.
	before = counter.count("probe")
	if err := d.SetReadOnly(ctx, site, true); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Snapshot(ctx, site, storage.MustSnap("s1")); !errors.Is(err, storage.ErrReadOnly) {
		t.Fatalf("snapshot of a demoted dataset: %v, want ErrReadOnly", err)
	}
	if n := counter.count("probe") - before; n > 0 {
		t.Fatalf("a demotion and a snapshot probed %d times; the driver knows where it put the dataset", n)
	}
	// So is a missing site, and its creation.
	other := storage.MustSite("other")
	if ok, err := d.Exists(ctx, other); err != nil || ok {
		t.Fatalf("Exists(other) = %v, %v before Create", ok, err)
	}
	if err := d.Create(ctx, other, 0); err != nil {
		t.Fatal(err)
	}
	if ok, err := d.Exists(ctx, other); err != nil || !ok {
		t.Fatalf("Exists(other) = %v, %v after Create", ok, err)
	}
}

// outsideRenameTriesMax bounds the test's own rename while zfs-fuse says busy.
const outsideRenameTriesMax = 10

// A dataset moved behind the driver's back (an operator's zfs rename) costs
// at most one failed call: the failure makes the driver look again.
func TestLocationFollowsAnOutsideRename(t *testing.T) {
	d := zfstest.NewPool(t, zfstest.Logger())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	site := storage.MustSite("moved")
	if err := d.Create(ctx, site, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Snapshot(ctx, site, storage.MustSnap("s1")); err != nil {
		t.Fatal(err)
	}
	from, to := d.Root()+"/sites/moved", d.Root()+"/replicas/moved"
	if out, err := exec.CommandContext(ctx, "zfs", "unmount", from).CombinedOutput(); err != nil {
		t.Fatalf("zfs unmount: %v: %s", err, out)
	}
	// zfs-fuse calls a filesystem it has just unmounted busy now and then
	// (the driver retries, as an operator would): a bounded number of tries.
	for try := 1; ; try++ {
		out, err := exec.CommandContext(ctx, "zfs", "rename", from, to).CombinedOutput()
		if err == nil {
			break
		}
		if try == outsideRenameTriesMax || !strings.Contains(string(out), "busy") {
			t.Fatalf("zfs rename (try %d): %v: %s", try, err, out)
		}
		_, _ = exec.CommandContext(ctx, "zfs", "unmount", from).CombinedOutput()
		time.Sleep(200 * time.Millisecond)
	}
	var err error
	for attempt := range 2 {
		var snaps []storage.Snapshot
		snaps, err = d.ListSnapshots(ctx, site)
		if err == nil {
			if len(snaps) != 1 || snaps[0].Name.String() != "s1" {
				t.Fatalf("snapshots after the rename: %v", snaps)
			}
			break
		}
		if !errors.Is(err, storage.ErrNoDataset) {
			t.Fatalf("attempt %d: %v", attempt, err)
		}
	}
	if err != nil {
		t.Fatalf("the driver still looks in the old place after a failed call: %v", err)
	}
	if _, err := d.Snapshot(ctx, site, storage.MustSnap("s2")); !errors.Is(err, storage.ErrReadOnly) {
		t.Fatalf("snapshot after the outside rename to replicas/: %v, want ErrReadOnly", err)
	}
}
