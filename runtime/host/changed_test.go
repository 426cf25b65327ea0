package host

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/storage"
	"github.com/hybridcluster/hybridcluster/runtime/storage/portable"
)

// noDetector hides the portable driver's own change test, as the zfs
// driver has none.
type noDetector struct{ storage.Driver }

func TestTreeChanged(t *testing.T) {
	ctx := context.Background()
	drv, err := portable.New(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	const margin = 50 * time.Millisecond
	h := &Host{driver: noDetector{drv}}
	h.trees.racy = margin
	site := storage.MustSite("delta")
	if err := drv.Create(ctx, site, 0); err != nil {
		t.Fatal(err)
	}
	live, err := drv.Mountpoint(ctx, site)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(live, "index.html")
	check := func(what string, want bool) {
		t.Helper()
		got, err := h.treeChanged(ctx, site)
		if err != nil || got != want {
			t.Fatalf("%s: changed %v (%v), want %v", what, got, err, want)
		}
	}
	n := 0
	snap := func() {
		t.Helper()
		n++
		if _, err := h.treeSnapshot(ctx, site, storage.MustSnap("s"+string(rune('0'+n)))); err != nil {
			t.Fatal(err)
		}
	}
	settled := func() { time.Sleep(margin + 20*time.Millisecond) }

	check("no snapshot yet", true)
	if err := os.WriteFile(file, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	snap()
	check("a snapshot of a tree changed within the racy margin", true)
	settled()
	snap()
	check("nothing written since the snapshot", false)

	// Same size, mtime put back: the change time still tells.
	st, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte("world"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(file, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	check("a rewrite with its mtime put back", true)
	settled()
	snap()
	check("after the next snapshot", false)

	if err := os.Chmod(file, 0o600); err != nil {
		t.Fatal(err)
	}
	check("a permission change", true)
	settled()
	snap()
	if err := os.Rename(file, filepath.Join(live, "other.html")); err != nil {
		t.Fatal(err)
	}
	check("a rename", true)
	settled()
	snap()
	check("after the next snapshot", false)

	// A snapshot the mark was not recorded for is newer than the mark.
	if _, err := drv.Snapshot(ctx, site, storage.MustSnap("other")); err != nil {
		t.Fatal(err)
	}
	check("a newer snapshot taken otherwise", true)
}

// The portable driver answers the change test itself.
var _ ChangeDetector = (*portable.Driver)(nil)
