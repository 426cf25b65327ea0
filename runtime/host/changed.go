package host

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/storage"
)

// treeEntriesMax bounds the files compared by treeChanged; a larger tree
// counts as changed (a needless snapshot is cheap, a walk of millions of
// files every interval is not).
const treeEntriesMax = 100_000

// racyMargin: a file whose modification or change time is this close to
// the moment a snapshot began may change again within the same tick of the
// file system's clock without its stamps showing it, so a tree holding one
// is not taken as the snapshot's (the next check says "changed"). Two
// seconds also covers file systems with whole-second stamps.
const racyMargin = 2 * time.Second

// treeMarksMax bounds the sites whose tree mark is kept; at the bound the
// marks start again (each site's next check then says "changed").
const treeMarksMax = 100_000

// treeMark is what the fallback change test compares: a digest of the live
// tree's listing as walked just before a snapshot, and that snapshot.
type treeMark struct {
	snap   storage.SnapName
	guid   uint64
	digest [sha256.Size]byte
}

type treeMarks struct {
	mu sync.Mutex
	m  map[string]treeMark
	// racy overrides racyMargin (tests).
	racy time.Duration
}

func (t *treeMarks) margin() time.Duration {
	if t.racy > 0 {
		return t.racy
	}
	return racyMargin
}

func (t *treeMarks) get(site string) (treeMark, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	mk, ok := t.m[site]
	return mk, ok
}

func (t *treeMarks) set(site string, mk treeMark, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !ok {
		delete(t.m, site)
		return
	}
	if _, known := t.m[site]; t.m == nil || (len(t.m) >= treeMarksMax && !known) {
		t.m = map[string]treeMark{}
	}
	t.m[site] = mk
}

// treeSnapshot takes a snapshot for a driver without a ChangeDetector and
// records the tree it holds for later checks: the live tree is walked just
// before the snapshot (a change during the walk makes the next check say
// "changed", never the reverse), and the mark is kept only once the
// snapshot exists.
func (h *Host) treeSnapshot(ctx context.Context, site storage.Site, name storage.SnapName) (storage.Snapshot, error) {
	d := h.driver
	var digest [sha256.Size]byte
	var newest time.Time
	ok := false
	if live, err := d.Mountpoint(ctx, site); err == nil {
		digest, newest, ok, err = walkTree(live)
		if err != nil {
			ok = false
		}
	}
	began := time.Now()
	snap, err := d.Snapshot(ctx, site, name)
	if err != nil {
		return snap, err
	}
	ok = ok && newest.Before(began.Add(-h.trees.margin()))
	h.trees.set(site.String(), treeMark{snap: snap.Name, guid: snap.GUID, digest: digest}, ok)
	return snap, nil
}

// treeChanged is the change test for drivers without a ChangeDetector
// (zfs-fuse has no written property): the site has changed unless its
// newest snapshot is the one a mark was recorded for and the live tree's
// listing (path, inode, type, permissions, size, modification and change
// time) still has that mark's digest. No mark (a restart, a racy or too
// large tree, a snapshot taken otherwise) means "changed": a needless
// snapshot is cheap, a missed change is lost replication.
func (h *Host) treeChanged(ctx context.Context, site storage.Site) (bool, error) {
	mk, ok := h.trees.get(site.String())
	if !ok {
		return true, nil
	}
	snaps, err := h.driver.ListSnapshots(ctx, site)
	if err != nil {
		return false, err
	}
	if len(snaps) == 0 {
		return true, nil
	}
	if newest := snaps[len(snaps)-1]; newest.Name != mk.snap || newest.GUID != mk.guid {
		return true, nil
	}
	live, err := h.driver.Mountpoint(ctx, site)
	if err != nil {
		return false, err
	}
	digest, _, ok, err := walkTree(live)
	if err != nil {
		return false, fmt.Errorf("live tree of %s: %w", site, err)
	}
	return !ok || digest != mk.digest, nil
}

var errTooManyEntries = errors.New("tree too large to compare")

// walkTree digests the listing of a tree in lexical order and returns the
// newest modification or change time in it; ok is false when the tree has
// more than treeEntriesMax entries.
func walkTree(root string) (digest [sha256.Size]byte, newest time.Time, ok bool, err error) {
	// A mountpoint may be a symbolic link (the portable driver's is);
	// WalkDir does not follow one.
	root, err = filepath.EvalSymlinks(root)
	if err != nil {
		return digest, newest, false, err
	}
	sum := sha256.New()
	var line []byte
	n := 0
	err = filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if n++; n > treeEntriesMax {
			return errTooManyEntries
		}
		fi, err := de.Info()
		if err != nil {
			return err
		}
		ino, ctime := fileIdentity(fi)
		mtime := fi.ModTime()
		newest = maxTime(newest, maxTime(mtime, ctime))
		rel, _ := filepath.Rel(root, p)
		line = line[:0]
		line = append(line, rel...)
		line = append(line, 0)
		line = strconv.AppendUint(line, ino, 10)
		line = append(line, ' ')
		line = strconv.AppendUint(line, uint64(fi.Mode()), 10)
		line = append(line, ' ')
		line = strconv.AppendInt(line, fi.Size(), 10)
		line = append(line, ' ')
		line = strconv.AppendInt(line, mtime.UnixNano(), 10)
		line = append(line, ' ')
		line = strconv.AppendInt(line, ctime.UnixNano(), 10)
		line = append(line, '\n')
		sum.Write(line)
		return nil
	})
	if errors.Is(err, errTooManyEntries) {
		return digest, newest, false, nil
	}
	if err != nil {
		return digest, newest, false, err
	}
	copy(digest[:], sum.Sum(nil))
	return digest, newest, true, nil
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
