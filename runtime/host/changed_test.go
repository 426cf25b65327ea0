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

func TestTreeChanged(t *testing.T) {
	ctx := context.Background()
	drv, err := portable.New(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	site := storage.MustSite("delta")
	if err := drv.Create(ctx, site, 0); err != nil {
		t.Fatal(err)
	}
	check := func(want bool) {
		t.Helper()
		got, err := treeChanged(ctx, drv, site)
		if err != nil || got != want {
			t.Fatalf("changed %v (%v), want %v", got, err, want)
		}
	}
	check(true) // no snapshot yet
	snap := func(name string) {
		t.Helper()
		if _, err := drv.Snapshot(ctx, site, storage.MustSnap(name)); err != nil {
			t.Fatal(err)
		}
	}
	snap("s1")
	check(false)
	live, err := drv.Mountpoint(ctx, site)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(live, "index.html"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	check(true)
	snap("s2")
	check(false)
	time.Sleep(10 * time.Millisecond)
	if err := os.WriteFile(filepath.Join(live, "index.html"), []byte("world"), 0o644); err != nil {
		t.Fatal(err)
	}
	check(true) // same size, newer mtime
}

// The portable driver answers the change test itself (no mount per check).
var _ ChangeDetector = (*portable.Driver)(nil)
