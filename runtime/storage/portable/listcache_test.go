package portable

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/storage"
)

// TestHeadCacheBound: at its bound of sites the head cache is emptied
// and refills; listings stay right across the reset, and listing a site
// already cached at the bound keeps the others.
func TestHeadCacheBound(t *testing.T) {
	ctx := context.Background()
	d := newTestDriver(t)
	d.heads.sitesMax = 2
	var sites []storage.Site
	for i := range 3 {
		site := storage.MustSite(fmt.Sprintf("bound%d", i))
		if err := d.Create(ctx, site, 0); err != nil {
			t.Fatal(err)
		}
		for j := range i + 1 {
			if _, err := d.Snapshot(ctx, site, storage.MustSnap(fmt.Sprintf("s%d", j))); err != nil {
				t.Fatal(err)
			}
		}
		sites = append(sites, site)
	}
	list := func(i int) {
		t.Helper()
		l, err := d.ListSnapshots(ctx, sites[i])
		if err != nil {
			t.Fatal(err)
		}
		if len(l) != i+1 {
			t.Fatalf("%s: listed %d snapshots, want %d", sites[i], len(l), i+1)
		}
	}
	cached := func() int {
		d.heads.mu.Lock()
		defer d.heads.mu.Unlock()
		return len(d.heads.sites)
	}
	d.heads.mu.Lock()
	d.heads.sites = nil // the snapshots above listed heads too
	d.heads.mu.Unlock()
	list(0)
	list(1)
	if n := cached(); n != 2 {
		t.Fatalf("%d sites cached, want 2", n)
	}
	list(1) // known: nothing is dropped
	if n := cached(); n != 2 {
		t.Fatalf("after listing a cached site at the bound: %d sites cached, want 2", n)
	}
	list(2) // a third: the cache starts again
	if n := cached(); n != 1 {
		t.Fatalf("after a third site: %d sites cached, want 1", n)
	}
	for i := range sites {
		list(i)
		if n := cached(); n > 2 {
			t.Fatalf("%d sites cached, bound 2", n)
		}
	}
}

// TestChangedCountsALargeTreeAsChanged: a live tree with more entries
// than the bound is reported changed without being compared whole (the
// same tree under the bound is unchanged).
func TestChangedCountsALargeTreeAsChanged(t *testing.T) {
	ctx := context.Background()
	d := newTestDriver(t)
	site := storage.MustSite("large")
	if err := d.Create(ctx, site, 0); err != nil {
		t.Fatal(err)
	}
	live, err := d.Mountpoint(ctx, site)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := os.WriteFile(filepath.Join(live, fmt.Sprintf("f%d", i)), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(2 * time.Duration(identityRacyMargin.Load())) // identities settle
	if _, err := d.Snapshot(ctx, site, storage.MustSnap("s1")); err != nil {
		t.Fatal(err)
	}
	changed := func() bool {
		t.Helper()
		c, err := d.Changed(ctx, site)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if changed() {
		t.Fatal("an unchanged tree of 5 entries is reported changed")
	}
	d.heads.entriesMax = 4
	if !changed() {
		t.Fatal("a tree of 5 entries is compared whole with a bound of 4")
	}
	d.heads.entriesMax = 5
	if changed() {
		t.Fatal("a tree of 5 entries at a bound of 5 is reported changed")
	}
}

// newTestDriver is a driver on a fresh directory of the test's.
func newTestDriver(t *testing.T) *Driver {
	t.Helper()
	d, err := New(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
