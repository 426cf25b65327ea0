package portable

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/storage"
)

// A replica's live tree is kept as writable copies of its newest snapshot
// (siteMeta.Warm names it), brought up to date in place by each receive, so
// that promoting the replica (a planned move's target, while the site's
// clients are held) needs no copy of the dataset: a 256 MiB database took
// 0.5 s to copy at every promotion. The price is a second copy of the
// data on replicas (as a master has: its live tree and its snapshots), and
// each receive writes the changed blocks twice. Snapshot files are never
// shared with the live tree: a promoted site may write any live file.

// warmLive replaces the live tree with writable copies of man (the newest
// snapshot) and records it as warm.
func (d *Driver) warmLive(site storage.Site, m *siteMeta, man *manifest) error {
	if err := d.replaceLive(site, m, snapDir(d.siteDir(site), man.Name), man, false); err != nil {
		return err
	}
	m.Warm = man.Name
	return d.writeMeta(site, m)
}

// updateLive brings a replica's live tree from base to man after a receive:
// in place when the tree is a warm copy of base, else by copying man whole.
func (d *Driver) updateLive(site storage.Site, m *siteMeta, base, man *manifest) error {
	if base != nil && m.Warm == base.Name {
		err := d.patchLive(site, m, base, man)
		if err == nil {
			return nil
		}
		d.log.Warn("live tree not updated in place: copying the snapshot whole", "site", site.String(), "snapshot", man.Name, "err", err)
	}
	return d.warmLive(site, m, man)
}

// patchLive applies the difference between base and man to the live tree,
// which holds copies of base: removed paths go, changed blocks of changed
// files are copied from man's tree, then modes and times are set. The tree
// is marked not warm while it changes, so that a crash halfway leaves a
// tree that the next receive or promotion copies whole.
func (d *Driver) patchLive(site storage.Site, m *siteMeta, base, man *manifest) error {
	m.Warm = ""
	if err := d.writeMeta(site, m); err != nil {
		return err
	}
	started := time.Now()
	live, err := filepath.EvalSymlinks(filepath.Join(d.siteDir(site), "live"))
	if err != nil {
		return err
	}
	src := filepath.Join(snapDir(d.siteDir(site), man.Name), "tree")
	baseBy, manBy := base.byPath(), man.byPath()
	// Removed paths (or ones whose kind changed), deepest first.
	for i := len(base.Entries) - 1; i >= 0; i-- {
		e := &base.Entries[i]
		if n := manBy[e.Path]; n == nil || n.Kind != e.Kind || (e.Kind == kindSymlink && n.Target != e.Target) {
			if err := os.RemoveAll(filepath.Join(live, filepath.FromSlash(e.Path))); err != nil {
				return err
			}
		}
	}
	var written int64
	for i := range man.Entries {
		e := &man.Entries[i]
		to := filepath.Join(live, filepath.FromSlash(e.Path))
		old := baseBy[e.Path]
		if old != nil && old.Kind != e.Kind {
			old = nil // removed above
		}
		switch e.Kind {
		case kindDir:
			if old == nil {
				if err := os.Mkdir(to, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
					return err
				}
			}
		case kindSymlink:
			if old == nil || old.Target != e.Target {
				if err := os.Symlink(e.Target, to); err != nil {
					return err
				}
			}
		case kindFile:
			if old != nil && old.Size == e.Size && old.Mode == e.Mode && old.MtimeNs == e.MtimeNs && bytes.Equal(old.Hashes, e.Hashes) {
				continue
			}
			from := filepath.Join(src, filepath.FromSlash(e.Path))
			var n int64
			var err error
			if old == nil {
				n, err = copyWhole(from, to, e.Mode)
			} else {
				n, err = copyChangedBlocks(from, to, old, e)
			}
			if err != nil {
				return fmt.Errorf("update live %s: %w", e.Path, err)
			}
			written += n
			if err := os.Chmod(to, e.Mode); err != nil {
				return err
			}
			t := time.Unix(0, e.MtimeNs)
			if err := os.Chtimes(to, t, t); err != nil {
				return err
			}
		}
	}
	for i := len(man.Entries) - 1; i >= 0; i-- {
		if e := man.Entries[i]; e.Kind == kindDir {
			if err := os.Chmod(filepath.Join(live, filepath.FromSlash(e.Path)), e.Mode); err != nil {
				return err
			}
		}
	}
	if err := finishDirs(live, man.Entries); err != nil {
		return err
	}
	m.Warm = man.Name
	if err := d.writeMeta(site, m); err != nil {
		return err
	}
	d.log.Debug("live tree updated in place", "site", site.String(), "snapshot", man.Name, "written_bytes", written, "duration", time.Since(started))
	return nil
}

// copyWhole copies a snapshot file to a new writable live file and returns
// its size.
func copyWhole(from, to string, mode fs.FileMode) (int64, error) {
	if err := copyPlain(from, to, mode); err != nil {
		return 0, err
	}
	fi, err := os.Stat(to)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// copyChangedBlocks makes the live file to, a copy of old, equal to the
// snapshot file from (entry e): the blocks whose hashes differ (and those
// old lacked) are copied, then the length is set. It returns the bytes
// written.
func copyChangedBlocks(from, to string, old, e *entry) (int64, error) {
	in, err := os.Open(from)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	if old.Mode&0o200 == 0 {
		if err := os.Chmod(to, old.Mode|0o200); err != nil {
			return 0, err
		}
	}
	out, err := os.OpenFile(to, os.O_WRONLY, 0)
	if err != nil {
		return 0, err
	}
	blocks := (e.Size + blockBytes - 1) / blockBytes
	buf := make([]byte, blockBytes)
	var written int64
	for b := int64(0); b < blocks; b++ {
		lo, hi := b*hashBytes, (b+1)*hashBytes
		if hi <= int64(len(old.Hashes)) && hi <= int64(len(e.Hashes)) && bytes.Equal(old.Hashes[lo:hi], e.Hashes[lo:hi]) &&
			(b < blocks-1 || old.Size == e.Size) {
			continue
		}
		n := min(blockBytes, e.Size-b*blockBytes)
		if got, err := in.ReadAt(buf[:n], b*blockBytes); int64(got) != n {
			out.Close()
			return written, fmt.Errorf("short read of block %d: %w", b, err)
		}
		if _, err := out.WriteAt(buf[:n], b*blockBytes); err != nil {
			out.Close()
			return written, err
		}
		written += n
	}
	if err := out.Truncate(e.Size); err != nil {
		out.Close()
		return written, err
	}
	return written, out.Close()
}

// warmMatches reports whether the live tree still looks like the copy of
// man that siteMeta.Warm says it is (every file present with its size and
// time, nothing else): a cheap guard, before a promotion trusts it, against
// a tree someone changed by hand.
func warmMatches(live string, man *manifest) bool {
	n := 0
	err := filepath.WalkDir(live, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != live {
			n++
		}
		return nil
	})
	if err != nil || n != len(man.Entries) {
		return false
	}
	for _, e := range man.Entries {
		fi, err := os.Lstat(filepath.Join(live, filepath.FromSlash(e.Path)))
		if err != nil {
			return false
		}
		switch e.Kind {
		case kindFile:
			if !fi.Mode().IsRegular() || fi.Size() != e.Size || fi.ModTime().UnixNano() != e.MtimeNs {
				return false
			}
		case kindDir:
			if !fi.IsDir() {
				return false
			}
		case kindSymlink:
			if fi.Mode()&fs.ModeSymlink == 0 {
				return false
			}
		}
	}
	return true
}
