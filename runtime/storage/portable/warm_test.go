package portable

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/hybridcluster/hybridcluster/runtime/storage"
)

// liveState maps every path under root to its kind, permissions, content
// hash and time (symlinks by target; directories by kind).
func liveState(t *testing.T, root string) map[string]string {
	t.Helper()
	root, err := filepath.EvalSymlinks(root)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	err = filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		out[filepath.ToSlash(rel)] = fileState(t, p, fi.Mode(), fi.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func fileState(t *testing.T, p string, mode fs.FileMode, mtimeNs int64) string {
	t.Helper()
	switch {
	case mode.IsDir():
		return "dir"
	case mode&fs.ModeSymlink != 0:
		target, _ := os.Readlink(p)
		return "link " + target
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return fmt.Sprintf("file %v %s %d", mode.Perm(), hex.EncodeToString(sum[:]), mtimeNs)
}

// snapState is liveState of what snapshot snap records (its files are
// read-only on disk; the manifest keeps their modes).
func snapState(t *testing.T, d *Driver, site storage.Site, snap string) map[string]string {
	t.Helper()
	man, err := readManifest(filepath.Join(snapDir(d.siteDir(site), snap), "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range man.Entries {
		p := filepath.Join(snapDir(d.siteDir(site), snap), "tree", filepath.FromSlash(e.Path))
		switch e.Kind {
		case kindDir:
			out[e.Path] = "dir"
		case kindSymlink:
			out[e.Path] = "link " + e.Target
		default:
			out[e.Path] = fileState(t, p, e.Mode, e.MtimeNs)
		}
	}
	return out
}

func snapshotInodes(t *testing.T, d *Driver, site storage.Site) map[uint64]string {
	t.Helper()
	out := map[uint64]string{}
	_ = filepath.WalkDir(filepath.Join(d.siteDir(site), "snaps"), func(p string, de fs.DirEntry, err error) error {
		if err == nil && de.Type().IsRegular() {
			if fi, err := de.Info(); err == nil {
				out[fi.Sys().(*syscall.Stat_t).Ino] = p
			}
		}
		return nil
	})
	return out
}

// A replica's live tree is a writable copy of its newest snapshot, brought
// up to date in place by each receive (changed blocks only: a big file
// keeps its inode), equal to the snapshot after every kind of change,
// sharing no inode with any snapshot; promoting it copies nothing.
func TestReplicaLiveTreeStaysAWarmCopy(t *testing.T) {
	ctx := context.Background()
	a := newTestDriver(t)
	b := newTestDriver(t)
	site := storage.MustSite("warm")
	if err := a.Create(ctx, site, 0); err != nil {
		t.Fatal(err)
	}
	src, _ := a.Mountpoint(ctx, site)
	write := func(rel string, data []byte) {
		t.Helper()
		p := filepath.Join(src, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	big := make([]byte, 3*blockBytes+1000)
	_, _ = rand.Read(big)
	write("db/big.ibd", big)
	write("db/shrinks", make([]byte, 2*blockBytes+5))
	write("gone/file", []byte("removed later"))
	write("kind", []byte("a file, later a directory"))
	write("mode", []byte("mode changes"))
	if err := os.Symlink("db/big.ibd", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	changes := []func(){
		func() {
			// One block of the big file, in place, as a database writes.
			f, err := os.OpenFile(filepath.Join(src, "db", "big.ibd"), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = f.WriteAt([]byte("one changed block"), blockBytes+10)
			f.Close()
			write("new/dir/file", []byte("added"))
		},
		func() {
			grown := append(append([]byte{}, big...), make([]byte, blockBytes)...)
			_, _ = rand.Read(grown[len(big):])
			f, err := os.OpenFile(filepath.Join(src, "db", "big.ibd"), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = f.WriteAt(grown[len(big):], int64(len(big)))
			f.Close()
			if err := os.Truncate(filepath.Join(src, "db", "shrinks"), blockBytes-7); err != nil {
				t.Fatal(err)
			}
			if err := os.RemoveAll(filepath.Join(src, "gone")); err != nil {
				t.Fatal(err)
			}
		},
		func() {
			if err := os.Remove(filepath.Join(src, "kind")); err != nil {
				t.Fatal(err)
			}
			write("kind/inside", []byte("now a directory"))
			if err := os.Remove(filepath.Join(src, "link")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("mode", filepath.Join(src, "link")); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(filepath.Join(src, "mode"), 0o600); err != nil {
				t.Fatal(err)
			}
		},
	}
	var prev storage.SnapName
	var bigInode uint64
	var firstGen int
	for i := 0; i <= len(changes); i++ {
		if i > 0 {
			changes[i-1]()
		}
		snap := storage.MustSnap("s" + string(rune('1'+i)))
		if _, err := a.Snapshot(ctx, site, snap); err != nil {
			t.Fatal(err)
		}
		transfer(t, ctx, a, b, site, prev, snap)
		prev = snap
		m, err := b.readMeta(site)
		if err != nil {
			t.Fatal(err)
		}
		if m.Warm != snap.String() {
			t.Fatalf("after receiving %s the live tree is warm for %q", snap, m.Warm)
		}
		if i == 0 {
			firstGen = m.LiveGen
		} else if m.LiveGen != firstGen {
			t.Errorf("receiving %s made a new live tree (generation %d -> %d), not an update in place", snap, firstGen, m.LiveGen)
		}
		live, _ := b.Mountpoint(ctx, site)
		want := snapState(t, b, site, snap.String())
		got := liveState(t, live)
		for p, w := range want {
			if got[p] != w {
				t.Errorf("after %s: live %s is %q, snapshot has %q", snap, p, got[p], w)
			}
		}
		for p := range got {
			if _, ok := want[p]; !ok {
				t.Errorf("after %s: live has %s, the snapshot does not", snap, p)
			}
		}
		snapInodes := snapshotInodes(t, b, site)
		_ = filepath.WalkDir(live+"/", func(p string, de fs.DirEntry, err error) error {
			if err == nil && de.Type().IsRegular() {
				fi, _ := de.Info()
				if s, shared := snapInodes[fi.Sys().(*syscall.Stat_t).Ino]; shared {
					t.Errorf("after %s: live %s shares its inode with %s", snap, p, s)
				}
			}
			return nil
		})
		ino := inode(t, filepath.Join(live, "db", "big.ibd"))
		if i == 1 && ino != bigInode {
			t.Error("a one-block change copied the big live file whole")
		}
		bigInode = ino
	}
	// Promotion keeps the warm tree (no new generation) and serves it.
	m, _ := b.readMeta(site)
	gen := m.LiveGen
	want := snapState(t, b, site, prev.String())
	if err := b.SetReadOnly(ctx, site, false); err != nil {
		t.Fatal(err)
	}
	if m, _ = b.readMeta(site); m.LiveGen != gen || m.Warm != "" {
		t.Fatalf("promotion: live generation %d -> %d, warm %q: the warm tree was not used", gen, m.LiveGen, m.Warm)
	}
	live, _ := b.Mountpoint(ctx, site)
	got := liveState(t, live)
	for p, w := range want {
		if got[p] != w {
			t.Errorf("promoted live %s is %q, %s has %q", p, got[p], prev, w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("promoted live tree has %d paths, %s %d", len(got), prev, len(want))
	}
}

// A warm tree that someone changed by hand is not trusted at promotion:
// it is copied from the snapshot again.
func TestPromotionCopiesAChangedWarmTree(t *testing.T) {
	ctx := context.Background()
	a := newTestDriver(t)
	b := newTestDriver(t)
	site := storage.MustSite("tampered")
	if err := a.Create(ctx, site, 0); err != nil {
		t.Fatal(err)
	}
	src, _ := a.Mountpoint(ctx, site)
	if err := os.WriteFile(filepath.Join(src, "page"), []byte("v1"), 0o644); err != nil {
		t.Fatal(err)
	}
	s1 := storage.MustSnap("s1")
	if _, err := a.Snapshot(ctx, site, s1); err != nil {
		t.Fatal(err)
	}
	transfer(t, ctx, a, b, site, storage.SnapName{}, s1)
	live, _ := b.Mountpoint(ctx, site)
	if err := os.WriteFile(filepath.Join(live, "page"), []byte("changed by hand"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := b.SetReadOnly(ctx, site, false); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(live, "page")); string(got) != "v1" {
		t.Fatalf("promoted page is %q, want the snapshot's v1", got)
	}
}
