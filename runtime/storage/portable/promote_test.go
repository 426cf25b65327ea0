package portable

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/storage"
)

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func transfer(t *testing.T, ctx context.Context, a, b *Driver, site storage.Site, base, to storage.SnapName) {
	t.Helper()
	pr, pw := io.Pipe()
	sent := make(chan error, 1)
	go func() {
		err := a.Send(ctx, site, base, to, pw)
		pw.CloseWithError(err)
		sent <- err
	}()
	_, err := b.Receive(ctx, site, storage.Epoch{Term: 1, Node: "n1"}, base, pr)
	pr.CloseWithError(errors.New("receiver done"))
	if serr := <-sent; err == nil {
		err = serr
	}
	if err != nil {
		t.Fatalf("transfer %s: %v", to, err)
	}
}

// The first snapshot after a promotion copies only what the site changed:
// the promoted live files are recorded as copies of the newest snapshot's,
// so that snapshot's unchanged files are hard-linked into the next one (a
// promoted 256 MiB database was copied whole, 2 s, on the first snapshot).
// No live file ever shares an inode with a snapshot file.
func TestFirstSnapshotAfterPromotionLinksUnchangedFiles(t *testing.T) {
	ctx := context.Background()
	a := newTestDriver(t)
	b := newTestDriver(t)
	site := storage.MustSite("promoted")
	if err := a.Create(ctx, site, 0); err != nil {
		t.Fatal(err)
	}
	mp, _ := a.Mountpoint(ctx, site)
	big := make([]byte, 1<<20)
	_, _ = rand.Read(big)
	if err := os.MkdirAll(filepath.Join(mp, "db"), 0o755); err != nil {
		t.Fatal(err)
	}
	for rel, data := range map[string][]byte{"db/big.ibd": big, "db/log": []byte("log v1")} {
		if err := os.WriteFile(filepath.Join(mp, rel), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s1 := storage.MustSnap("s1")
	if _, err := a.Snapshot(ctx, site, s1); err != nil {
		t.Fatal(err)
	}
	transfer(t, ctx, a, b, site, storage.SnapName{}, s1)

	// The files were just written: a margin of 0 (and a pause longer
	// than a clock tick) lets their identity be trusted at once, which
	// is what this test is about (TestRacyFilesAreNotTrusted is about the
	// margin).
	defer identityRacyMargin.Store(identityRacyMargin.Load())
	identityRacyMargin.Store(0)
	time.Sleep(50 * time.Millisecond)
	if err := b.SetReadOnly(ctx, site, false); err != nil {
		t.Fatal(err)
	}
	live, _ := b.Mountpoint(ctx, site)
	f, err := os.OpenFile(filepath.Join(live, "db", "log"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("log v2"), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s2 := storage.MustSnap("s2")
	if _, err := b.Snapshot(ctx, site, s2); err != nil {
		t.Fatal(err)
	}
	tree := func(snap, rel string) string {
		return filepath.Join(snapDir(b.siteDir(site), snap), "tree", filepath.FromSlash(rel))
	}
	if inode(t, tree("s2", "db/big.ibd")) != inode(t, tree("s1", "db/big.ibd")) {
		t.Error("the unchanged file was copied into the first snapshot after the promotion, not linked")
	}
	if inode(t, tree("s2", "db/log")) == inode(t, tree("s1", "db/log")) {
		t.Error("the changed file was linked from the previous snapshot")
	}
	if got, _ := os.ReadFile(tree("s2", "db/log")); string(got) != "log v2" {
		t.Errorf("s2 holds %q, want the write after the promotion", got)
	}
	for _, rel := range []string{"db/big.ibd", "db/log"} {
		ino := inode(t, filepath.Join(live, filepath.FromSlash(rel)))
		if ino == inode(t, tree("s1", rel)) || ino == inode(t, tree("s2", rel)) {
			t.Errorf("live %s shares its inode with a snapshot", rel)
		}
	}
}

// A file changed just before its identity is recorded may be changed again
// within the same clock tick without its ctime moving: its identity is not
// recorded, so the next snapshot copies it rather than link stale content.
func TestRacyFilesAreNotTrusted(t *testing.T) {
	// An hour's margin makes "just written" hold however slow the machine.
	defer identityRacyMargin.Store(identityRacyMargin.Load())
	identityRacyMargin.Store(int64(time.Hour))
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "tree")
	if err := os.WriteFile(filepath.Join(src, "fresh"), []byte("v1"), 0o644); err != nil {
		t.Fatal(err)
	}
	entries, _, err := captureTree(src, dst, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].LiveIno != 0 || entries[0].LiveCtimeNs != 0 {
		t.Fatalf("a file written just now was trusted by identity: %+v", entries)
	}
	// With its identity untrusted, an in-place rewrite of the same size
	// and mtime is copied into the next snapshot.
	fi, _ := os.Stat(filepath.Join(src, "fresh"))
	if err := os.WriteFile(filepath.Join(src, "fresh"), []byte("v2"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(filepath.Join(src, "fresh"), fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	dst2 := filepath.Join(t.TempDir(), "tree")
	if _, _, err := captureTree(src, dst2, &manifest{Entries: entries}, dst); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst2, "fresh")); string(b) != "v2" {
		t.Fatalf("the next snapshot holds %q, want the rewrite v2", b)
	}
}

// Listings come from cached manifest heads: a manifest replaced on disk
// (a new file) and a snapshot removed are seen at the next listing.
func TestListingFollowsManifestsOnDisk(t *testing.T) {
	ctx := context.Background()
	d := newTestDriver(t)
	site, _ := storage.ParseSite("listing")
	if err := d.Create(ctx, site, 0); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"s1", "s2"} {
		sn, _ := storage.ParseSnapName(n)
		if _, err := d.Snapshot(ctx, site, sn); err != nil {
			t.Fatal(err)
		}
	}
	list := func() []storage.Snapshot {
		t.Helper()
		l, err := d.ListSnapshots(ctx, site)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	first := list()
	if len(first) != 2 {
		t.Fatalf("listed %d snapshots, want 2", len(first))
	}
	path := filepath.Join(snapDir(d.siteDir(site), "s2"), "manifest.json")
	man, err := readManifest(path)
	if err != nil {
		t.Fatal(err)
	}
	man.GUID++
	if err := writeJSONAtomic(path, man); err != nil {
		t.Fatal(err)
	}
	if l := list(); l[1].GUID != first[1].GUID+1 {
		t.Fatalf("a replaced manifest still lists GUID %d", l[1].GUID)
	}
	if err := os.RemoveAll(snapDir(d.siteDir(site), "s1")); err != nil {
		t.Fatal(err)
	}
	if l := list(); len(l) != 1 || l[0].Name.String() != "s2" {
		t.Fatalf("after removing s1: %v", l)
	}
}

// Changed is captureTree's link test: a file counts as unchanged only with
// the inode and ctime recorded (never racy ones), so a rewrite that keeps
// size and mtime is a change, and a file written just before a snapshot
// stays "changed" until a snapshot records it settled.
func TestChangedFollowsTheLinkTest(t *testing.T) {
	ctx := context.Background()
	d := newTestDriver(t)
	site := storage.MustSite("changes")
	if err := d.Create(ctx, site, 0); err != nil {
		t.Fatal(err)
	}
	check := func(want bool, why string) {
		t.Helper()
		got, err := d.Changed(ctx, site)
		if err != nil || got != want {
			t.Fatalf("%s: changed %v (%v), want %v", why, got, err, want)
		}
	}
	snap := func(name string) {
		t.Helper()
		if _, err := d.Snapshot(ctx, site, storage.MustSnap(name)); err != nil {
			t.Fatal(err)
		}
	}
	check(true, "no snapshot")
	snap("s1")
	check(false, "empty tree, snapshotted")
	live, _ := d.Mountpoint(ctx, site)
	page := filepath.Join(live, "index.html")
	if err := os.WriteFile(page, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	check(true, "new file")
	snap("s2")
	check(true, "a file written just before the snapshot (racy)")
	time.Sleep(2 * time.Duration(identityRacyMargin.Load()))
	snap("s3")
	check(false, "settled and snapshotted")
	fi, _ := os.Stat(page)
	if err := os.WriteFile(page, []byte("world"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(page, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	check(true, "same size and mtime, new content (rsync -t)")
	time.Sleep(2 * time.Duration(identityRacyMargin.Load()))
	snap("s4")
	check(false, "snapshotted again")
	if err := os.Symlink("index.html", filepath.Join(live, "home")); err != nil {
		t.Fatal(err)
	}
	check(true, "new link")
	time.Sleep(2 * time.Duration(identityRacyMargin.Load()))
	snap("s5")
	check(false, "link snapshotted")
	os.Remove(filepath.Join(live, "home"))
	if err := os.Symlink("other.html", filepath.Join(live, "home")); err != nil {
		t.Fatal(err)
	}
	check(true, "link retargeted")
	if err := os.Remove(filepath.Join(live, "home")); err != nil {
		t.Fatal(err)
	}
	check(true, "link removed")
}
