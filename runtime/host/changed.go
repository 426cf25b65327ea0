package host

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/hybridcluster/hybridcluster/runtime/storage"
)

// treeEntriesMax bounds the files compared by treeChanged; a larger tree
// counts as changed (a needless snapshot is cheap, a walk of millions of
// files every interval is not).
const treeEntriesMax = 100_000

type treeEntry struct {
	mode  fs.FileMode
	size  int64
	mtime int64
}

// treeChanged is the fallback change test for drivers without a
// ChangeDetector: it compares the live tree with the newest snapshot's by
// path, type, size and modification time (the quick check of rsync). A
// site without snapshots has changed. A mismatch errs towards "changed".
func treeChanged(ctx context.Context, d storage.Driver, site storage.Site) (bool, error) {
	snaps, err := d.ListSnapshots(ctx, site)
	if err != nil {
		return false, err
	}
	if len(snaps) == 0 {
		return true, nil
	}
	live, err := d.Mountpoint(ctx, site)
	if err != nil {
		return false, err
	}
	latest := snaps[len(snaps)-1].Name
	view, err := d.MountReadOnly(ctx, site, latest)
	if err != nil {
		return false, err
	}
	defer func() { _ = d.Unmount(context.WithoutCancel(ctx), site, latest) }()
	a, err := readTree(live)
	if err != nil {
		return false, fmt.Errorf("live tree of %s: %w", site, err)
	}
	b, err := readTree(view)
	if err != nil {
		return false, fmt.Errorf("snapshot %s of %s: %w", latest, site, err)
	}
	if a == nil || b == nil || len(a) != len(b) {
		return true, nil
	}
	for p, ea := range a {
		if eb, ok := b[p]; !ok || ea.mode.Type() != eb.mode.Type() || ea.size != eb.size ||
			(ea.mode.IsRegular() && ea.mtime != eb.mtime) {
			return true, nil
		}
	}
	return false, nil
}

var errTooManyEntries = errors.New("tree too large to compare")

// readTree lists a tree; nil (no error) when it exceeds treeEntriesMax.
func readTree(root string) (map[string]treeEntry, error) {
	// A mountpoint may be a symbolic link (the portable driver's is);
	// WalkDir does not follow one.
	root, err := filepath.EvalSymlinks(root)
	if err != nil {
		return nil, err
	}
	out := map[string]treeEntry{}
	err = filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		if len(out) >= treeEntriesMax {
			return errTooManyEntries
		}
		fi, err := de.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		e := treeEntry{mode: fi.Mode(), mtime: fi.ModTime().UnixNano()}
		if fi.Mode().IsRegular() {
			e.size = fi.Size()
		}
		out[rel] = e
		return nil
	})
	if errors.Is(err, errTooManyEntries) {
		return nil, nil
	}
	return out, err
}
