package portable

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/storage"
)

// Listing a site's snapshots needs only each manifest's head (name, GUID,
// creation, order, size), but a manifest also holds every file's block
// hashes: about 100 KB of JSON for a 256 MiB dataset. A stream lists the
// snapshots on both ends before it starts, so a planned move's final delta
// (inside the pause) parsed every retained manifest twice: 20-40 ms on a
// 2-core machine, growing with the snapshots kept. The heads are cached
// per manifest file, checked against the file's identity (manifests are
// replaced by rename, so a rewrite is a new inode with a new ctime) on
// every listing.

// manifestHeadsSitesMax bounds the sites whose heads are cached; at the
// bound the cache is emptied and refills as sites are listed again.
const manifestHeadsSitesMax = 100_000

type manifestHead struct {
	name    string
	guid    uint64
	created time.Time
	seq     uint64
	bytes   int64
}

// snapshot is the head as ListSnapshots shows it; false for a snapshot
// that is not listed (a rollback's safety snapshot, as on ZFS).
func (h manifestHead) snapshot(m *siteMeta) (storage.Snapshot, bool) {
	name, err := storage.ParseSnapName(h.name)
	if err != nil {
		return storage.Snapshot{}, false
	}
	return storage.Snapshot{Name: name, GUID: h.guid, Created: h.created, ReferencedBytes: h.bytes,
		Holds: len(m.Holds[h.name])}, true
}

type fileIdentity struct {
	ino              uint64
	size             int64
	mtimeNs, ctimeNs int64
}

type cachedHead struct {
	id   fileIdentity
	head manifestHead
}

type headCache struct {
	mu    sync.Mutex
	sites map[string]map[string]cachedHead // site -> snapshot dir name -> head
	trees map[string]*cachedTree           // site -> newest snapshot's entries (Changed)
	// sitesMax and entriesMax: manifestHeadsSitesMax and
	// liveTreeEntriesMax when 0 (tests set smaller ones).
	sitesMax, entriesMax int
}

func (c *headCache) sitesBound() int {
	if c.sitesMax > 0 {
		return c.sitesMax
	}
	return manifestHeadsSitesMax
}

func (c *headCache) entriesBound() int {
	if c.entriesMax > 0 {
		return c.entriesMax
	}
	return liveTreeEntriesMax
}

// putBounded sets m[key] and returns the map: a new key when m holds max
// keys already starts a new map (the cache refills as sites are listed
// again); a known key only replaces its value.
func putBounded[V any](m map[string]V, key string, v V, max int) map[string]V {
	if _, known := m[key]; m == nil || !known && len(m) >= max {
		m = map[string]V{}
	}
	m[key] = v
	return m
}

func identityOf(fi fs.FileInfo) fileIdentity {
	id := fileIdentity{size: fi.Size(), mtimeNs: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.ino, id.ctimeNs = st.Ino, st.Ctim.Sec*1e9+st.Ctim.Nsec
	}
	return id
}

// listHeads returns the heads of a site's snapshot manifests, oldest first.
func (d *Driver) listHeads(site storage.Site) ([]manifestHead, error) {
	dir := filepath.Join(d.siteDir(site), "snaps")
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: site %s", storage.ErrNoDataset, site)
	}
	if err != nil {
		return nil, err
	}
	d.heads.mu.Lock()
	old := d.heads.sites[site.String()]
	d.heads.mu.Unlock()
	fresh := make(map[string]cachedHead, len(ents))
	out := make([]manifestHead, 0, len(ents))
	for _, e := range ents {
		path := filepath.Join(dir, e.Name(), "manifest.json")
		fi, err := os.Stat(path)
		if err != nil {
			return nil, err
		}
		id := identityOf(fi)
		c, ok := old[e.Name()]
		if !ok || c.id != id {
			man, err := readManifest(path)
			if err != nil {
				return nil, err
			}
			c = cachedHead{id: id, head: manifestHead{name: man.Name, guid: man.GUID, created: man.Created, seq: man.Seq, bytes: man.size()}}
		}
		fresh[e.Name()] = c
		out = append(out, c.head)
	}
	d.heads.mu.Lock()
	d.heads.sites = putBounded(d.heads.sites, site.String(), fresh, d.heads.sitesBound())
	d.heads.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out, nil
}

// liveTreeEntriesMax bounds the live entries Changed compares; a larger
// tree counts as changed (a needless snapshot is cheap, a walk of millions
// of files every interval is not).
const liveTreeEntriesMax = 100_000

// cachedTree is the newest snapshot's entries of a site, by path, for
// Changed; valid while its manifest file's identity holds.
type cachedTree struct {
	name    string
	id      fileIdentity
	entries map[string]*entry
}

var errTreeDiffers = errors.New("live tree differs")

// Changed reports whether the site's live tree may differ from its newest
// snapshot (the host's ChangeDetector): it is the test captureTree applies
// to link a file, so "unchanged" means a snapshot would copy nothing. A
// regular file is unchanged only if its inode and ctime are the ones
// recorded, and recorded ones are never racy (trustedIdentity): a rewrite
// that keeps size and mtime (rsync -t) or lands in the snapshot's clock
// tick counts as a change. Directories and links compare by kind (and
// target). Unlike the host's generic check, it neither mounts the
// snapshot nor parses its manifest again while the manifest is unchanged.
func (d *Driver) Changed(ctx context.Context, site storage.Site) (bool, error) {
	if err := checkSite(site); err != nil {
		return false, err
	}
	heads, err := d.listHeads(site)
	if err != nil {
		return false, err
	}
	if len(heads) == 0 {
		return true, nil
	}
	newest := heads[len(heads)-1].name
	path := filepath.Join(snapDir(d.siteDir(site), newest), "manifest.json")
	fi, err := os.Stat(path)
	if err != nil {
		return false, err
	}
	id := identityOf(fi)
	d.heads.mu.Lock()
	t := d.heads.trees[site.String()]
	d.heads.mu.Unlock()
	if t == nil || t.name != newest || t.id != id {
		man, err := readManifest(path)
		if err != nil {
			return false, err
		}
		t = &cachedTree{name: newest, id: id, entries: man.byPath()}
		d.heads.mu.Lock()
		d.heads.trees = putBounded(d.heads.trees, site.String(), t, d.heads.sitesBound())
		d.heads.mu.Unlock()
	}
	live, err := filepath.EvalSymlinks(filepath.Join(d.siteDir(site), "live"))
	if err != nil {
		return false, err
	}
	seen, entriesMax := 0, d.heads.entriesBound()
	err = filepath.WalkDir(live, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == live {
			return nil
		}
		typ := de.Type()
		if typ&(fs.ModeDevice|fs.ModeNamedPipe|fs.ModeSocket|fs.ModeCharDevice|fs.ModeIrregular) != 0 {
			return nil // not site data: snapshots leave them out too
		}
		if seen++; seen > entriesMax {
			return errTreeDiffers
		}
		rel, err := filepath.Rel(live, p)
		if err != nil {
			return err
		}
		e, ok := t.entries[filepath.ToSlash(rel)]
		if !ok {
			return errTreeDiffers
		}
		switch {
		case typ.IsDir():
			if e.Kind != kindDir {
				return errTreeDiffers
			}
		case typ&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil || e.Kind != kindSymlink || target != e.Target {
				return errTreeDiffers
			}
		default:
			info, err := de.Info()
			if err != nil {
				return err
			}
			ino, ctimeNs := statIdentity(info)
			if e.Kind != kindFile || e.LiveIno == 0 || ino != e.LiveIno || ctimeNs != e.LiveCtimeNs ||
				info.Size() != e.Size || info.ModTime().UnixNano() != e.MtimeNs {
				return errTreeDiffers
			}
		}
		return nil
	})
	if errors.Is(err, errTreeDiffers) || errors.Is(err, fs.ErrNotExist) {
		return true, nil // a file that went away mid-walk is a change too
	}
	if err != nil {
		return false, err
	}
	return seen != len(t.entries), nil
}
