// Package portable is the storage driver for machines without ZFS: plain
// directories. A snapshot is a tree of hard links to the previous snapshot's
// files where they did not change and read-only copies where they did, plus
// a manifest with per-block hashes; an incremental stream carries the
// changed blocks of changed files, added files and removed paths. Receive
// builds the new snapshot in a temporary directory and renames it into
// place, so a cut stream changes nothing.
//
// Layout under the root directory:
//
//	sites/<site>/meta.json            epoch, read-only flag, quota, holds, mounts
//	sites/<site>/live -> trees/<gen>  the live files (Mountpoint); on a replica
//	                                  writable copies of the newest snapshot
//	sites/<site>/snaps/<snap>/        manifest.json and tree/
//	stash/<site>/<stash>/             stash.json, snaps/, live/ (base "" = a stash of everything)
//	tmp/                              receives and stashes in progress
package portable

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/storage"
)

// Kind is the stream kind of this driver.
const Kind = "portable"

// Driver is the portable storage driver.
type Driver struct {
	root string
	log  *slog.Logger

	mu        sync.Mutex
	siteLocks map[string]*sync.Mutex
	sending   map[string]int // "<site>@<snap>" -> streams in progress
	heads     headCache      // manifest heads for listings (listcache.go)
}

var _ storage.Driver = (*Driver)(nil)

// New opens (creating if needed) a portable store at root. A nil logger
// discards logs.
func New(root string, log *slog.Logger) (*Driver, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	for _, dir := range []string{"sites", "stash", "tmp"} {
		if err := os.MkdirAll(filepath.Join(abs, dir), 0o755); err != nil {
			return nil, fmt.Errorf("portable store %s: %w", abs, err)
		}
	}
	if err := probeTimestampGranularity(filepath.Join(abs, "tmp")); err != nil {
		return nil, fmt.Errorf("portable store %s: %w", abs, err)
	}
	// Leftovers of interrupted receives and stashes are never valid state.
	if ents, err := os.ReadDir(filepath.Join(abs, "tmp")); err == nil {
		for _, e := range ents {
			_ = removeAll(filepath.Join(abs, "tmp", e.Name()))
		}
	}
	return &Driver{root: abs, log: log.With("driver", Kind), siteLocks: map[string]*sync.Mutex{}, sending: map[string]int{}}, nil
}

// Kind implements storage.Driver.
func (d *Driver) Kind() string { return Kind }

// Root is the directory of the store.
func (d *Driver) Root() string { return d.root }

type siteMeta struct {
	Epoch      string              `json:"epoch"`
	ReadOnly   bool                `json:"readonly"`
	QuotaBytes int64               `json:"quota"`
	Created    time.Time           `json:"created"`
	Holds      map[string][]string `json:"holds,omitempty"`
	Mounts     map[string]int      `json:"mounts,omitempty"`
	LiveGen    int                 `json:"livegen"`
	NextSeq    uint64              `json:"nextseq"`

	// Warm names the snapshot the live tree is a writable copy of, on a
	// replica (see warm.go); "" when it is not known to be one.
	Warm string `json:"warm,omitempty"`
}

type stashMeta struct {
	Base      string                    `json:"base"`
	Created   time.Time                 `json:"created"`
	Snapshots []storage.StashedSnapshot `json:"snapshots"`
}

func (d *Driver) siteDir(site storage.Site) string {
	return filepath.Join(d.root, "sites", site.String())
}
func (d *Driver) stashDir(site storage.Site) string {
	return filepath.Join(d.root, "stash", site.String())
}
func snapDir(siteDir, snap string) string { return filepath.Join(siteDir, "snaps", snap) }

func (d *Driver) lock(site storage.Site) func() {
	d.mu.Lock()
	l, ok := d.siteLocks[site.String()]
	if !ok {
		l = &sync.Mutex{}
		d.siteLocks[site.String()] = l
	}
	d.mu.Unlock()
	l.Lock()
	return l.Unlock
}

func checkSite(site storage.Site) error {
	if site.IsZero() {
		return fmt.Errorf("%w: empty site", storage.ErrInvalidName)
	}
	return nil
}

func checkSnap(snap storage.SnapName) error {
	if snap.IsZero() {
		return fmt.Errorf("%w: empty snapshot name", storage.ErrInvalidName)
	}
	return nil
}

func (d *Driver) readMeta(site storage.Site) (*siteMeta, error) {
	var m siteMeta
	data, err := os.ReadFile(filepath.Join(d.siteDir(site), "meta.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: site %s", storage.ErrNoDataset, site)
	}
	if err != nil {
		return nil, err
	}
	if err := jsonUnmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("site %s meta: %w", site, err)
	}
	return &m, nil
}

func (d *Driver) writeMeta(site storage.Site, m *siteMeta) error {
	return writeJSONAtomic(filepath.Join(d.siteDir(site), "meta.json"), m)
}

func randomGUID() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return binary.BigEndian.Uint64(b[:]) | 1
}

func (d *Driver) tmpDir(prefix string) (string, error) {
	return os.MkdirTemp(filepath.Join(d.root, "tmp"), prefix)
}

// Create implements storage.Driver.
func (d *Driver) Create(ctx context.Context, site storage.Site, quotaBytes int64) error {
	if err := checkSite(site); err != nil {
		return err
	}
	if quotaBytes < 0 {
		return fmt.Errorf("create %s: negative quota", site)
	}
	defer d.lock(site)()
	if _, err := os.Stat(d.siteDir(site)); err == nil {
		return fmt.Errorf("create %s: %w", site, storage.ErrExists)
	}
	tmp, err := d.tmpDir("create-")
	if err != nil {
		return err
	}
	defer removeAll(tmp)
	if err := os.MkdirAll(filepath.Join(tmp, "trees", "1"), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(filepath.Join(tmp, "snaps"), 0o755); err != nil {
		return err
	}
	if err := os.Symlink(filepath.Join("trees", "1"), filepath.Join(tmp, "live")); err != nil {
		return err
	}
	m := &siteMeta{QuotaBytes: quotaBytes, Created: time.Now().UTC(), LiveGen: 1, NextSeq: 1}
	if err := writeJSONAtomic(filepath.Join(tmp, "meta.json"), m); err != nil {
		return err
	}
	if err := os.Rename(tmp, d.siteDir(site)); err != nil {
		return fmt.Errorf("create %s: %w", site, err)
	}
	d.log.Info("dataset created", "site", site.String(), "quota", quotaBytes)
	return nil
}

// Destroy implements storage.Driver.
func (d *Driver) Destroy(ctx context.Context, site storage.Site) error {
	if err := checkSite(site); err != nil {
		return err
	}
	defer d.lock(site)()
	if _, err := os.Stat(d.siteDir(site)); err != nil {
		return fmt.Errorf("destroy %s: %w", site, storage.ErrNoDataset)
	}
	// Move aside first so a half-done removal never looks like a dataset.
	tmp, err := d.tmpDir("destroy-")
	if err != nil {
		return err
	}
	if err := os.Rename(d.siteDir(site), filepath.Join(tmp, "site")); err != nil {
		return err
	}
	_ = os.Rename(d.stashDir(site), filepath.Join(tmp, "stash"))
	d.log.Info("dataset destroyed", "site", site.String())
	return removeAll(tmp)
}

// Exists implements storage.Driver.
func (d *Driver) Exists(ctx context.Context, site storage.Site) (bool, error) {
	if err := checkSite(site); err != nil {
		return false, err
	}
	_, err := os.Stat(filepath.Join(d.siteDir(site), "meta.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// Mountpoint implements storage.Driver.
func (d *Driver) Mountpoint(ctx context.Context, site storage.Site) (string, error) {
	if err := checkSite(site); err != nil {
		return "", err
	}
	if _, err := d.readMeta(site); err != nil {
		return "", err
	}
	return filepath.Join(d.siteDir(site), "live"), nil
}

// SetQuota implements storage.Driver.
func (d *Driver) SetQuota(ctx context.Context, site storage.Site, quotaBytes int64) error {
	if err := checkSite(site); err != nil {
		return err
	}
	defer d.lock(site)()
	m, err := d.readMeta(site)
	if err != nil {
		return err
	}
	m.QuotaBytes = quotaBytes
	return d.writeMeta(site, m)
}

// SetReadOnly implements storage.Driver. A promoted replica's live tree
// must be independent writable copies of its newest snapshot: a warm
// replica's is already (warm.go); any other is copied from the snapshot.
func (d *Driver) SetReadOnly(ctx context.Context, site storage.Site, readOnly bool) error {
	if err := checkSite(site); err != nil {
		return err
	}
	defer d.lock(site)()
	m, err := d.readMeta(site)
	if err != nil {
		return err
	}
	if m.ReadOnly == readOnly {
		return nil
	}
	if !readOnly {
		// Only the newest manifest is read whole (a promotion runs inside
		// a move's pause).
		heads, err := d.listHeads(site)
		if err != nil {
			return err
		}
		if len(heads) > 0 {
			latest, err := readManifest(filepath.Join(snapDir(d.siteDir(site), heads[len(heads)-1].name), "manifest.json"))
			if err != nil {
				return err
			}
			live, err := filepath.EvalSymlinks(filepath.Join(d.siteDir(site), "live"))
			if err != nil {
				return err
			}
			// A warm replica's live tree is already writable copies of its
			// newest snapshot: nothing to copy.
			if m.Warm != latest.Name || !warmMatches(live, latest) {
				if err := d.replaceLive(site, m, snapDir(d.siteDir(site), latest.Name), latest, false); err != nil {
					return err
				}
			}
			if err := d.adoptLive(site, latest); err != nil {
				return err
			}
		}
	}
	m.Warm = "" // the live tree is the master's from here on
	m.ReadOnly = readOnly
	d.log.Info("dataset read-only changed", "site", site.String(), "readonly", readOnly)
	return d.writeMeta(site, m)
}

// replaceLive swaps the live tree for a tree materialized from a snapshot.
// The swap is one rename of the live symlink.
func (d *Driver) replaceLive(site storage.Site, m *siteMeta, snapPath string, man *manifest, link bool) error {
	dir := d.siteDir(site)
	gen := m.LiveGen + 1
	newTree := filepath.Join(dir, "trees", strconv.Itoa(gen))
	_ = removeAll(newTree)
	if err := materializeTree(filepath.Join(snapPath, "tree"), newTree, man, link); err != nil {
		_ = removeAll(newTree)
		return err
	}
	return d.swapLive(site, m, gen)
}

// adoptLive records in man, the newest snapshot, which the live tree was
// just materialized from as writable copies, the identity of each live
// file, so that the next snapshot hard-links the files the site has not
// changed since instead of copying every one (captureTree matches a live
// file to its previous entry by inode and ctime, which any write or chmod
// changes). The snapshot's own files stay separate inodes: the link is
// from snapshot to snapshot, never to a live file.
func (d *Driver) adoptLive(site storage.Site, man *manifest) error {
	live, err := filepath.EvalSymlinks(filepath.Join(d.siteDir(site), "live"))
	if err != nil {
		return err
	}
	recordedAt := time.Now()
	for i := range man.Entries {
		e := &man.Entries[i]
		if e.Kind != kindFile {
			continue
		}
		e.LiveIno, e.LiveCtimeNs = 0, 0
		fi, err := os.Lstat(filepath.Join(live, filepath.FromSlash(e.Path)))
		if err != nil {
			return err
		}
		if fi.Mode().IsRegular() && fi.Size() == e.Size && fi.ModTime().UnixNano() == e.MtimeNs {
			e.LiveIno, e.LiveCtimeNs = trustedIdentity(fi, recordedAt)
		}
	}
	return writeJSONAtomic(filepath.Join(snapDir(d.siteDir(site), man.Name), "manifest.json"), man)
}

func (d *Driver) swapLive(site storage.Site, m *siteMeta, gen int) error {
	dir := d.siteDir(site)
	oldTarget, _ := os.Readlink(filepath.Join(dir, "live"))
	tmpLink := filepath.Join(dir, "live.tmp")
	_ = os.Remove(tmpLink)
	if err := os.Symlink(filepath.Join("trees", strconv.Itoa(gen)), tmpLink); err != nil {
		return err
	}
	if err := os.Rename(tmpLink, filepath.Join(dir, "live")); err != nil {
		return err
	}
	m.LiveGen = gen
	m.Warm = "" // a new tree; warmLive marks it warm after
	if err := d.writeMeta(site, m); err != nil {
		return err
	}
	if oldTarget != "" && oldTarget != filepath.Join("trees", strconv.Itoa(gen)) {
		_ = removeAll(filepath.Join(dir, oldTarget))
	}
	return nil
}

// listManifests reads the site's snapshot manifests, oldest first.
func (d *Driver) listManifests(site storage.Site) ([]*manifest, error) {
	dir := filepath.Join(d.siteDir(site), "snaps")
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: site %s", storage.ErrNoDataset, site)
	}
	if err != nil {
		return nil, err
	}
	var out []*manifest
	for _, e := range ents {
		m, err := readManifest(filepath.Join(dir, e.Name(), "manifest.json"))
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out, nil
}

// listed reports whether a snapshot is one ListSnapshots shows: not a
// rollback's safety snapshot (whose name is not a SnapName), as on ZFS.
func (man *manifest) listed() bool {
	_, err := storage.ParseSnapName(man.Name)
	return err == nil
}

func (d *Driver) toSnapshot(site storage.Site, m *siteMeta, man *manifest) storage.Snapshot {
	name, _ := storage.ParseSnapName(man.Name)
	return storage.Snapshot{
		Name:            name,
		GUID:            man.GUID,
		Created:         man.Created,
		ReferencedBytes: man.size(),
		Holds:           len(m.Holds[man.Name]),
	}
}

// Snapshot implements storage.Driver.
func (d *Driver) Snapshot(ctx context.Context, site storage.Site, snap storage.SnapName) (storage.Snapshot, error) {
	if err := checkSite(site); err != nil {
		return storage.Snapshot{}, err
	}
	if err := checkSnap(snap); err != nil {
		return storage.Snapshot{}, err
	}
	defer d.lock(site)()
	return d.snapshotLocked(site, snap.String(), false)
}

func (d *Driver) snapshotLocked(site storage.Site, name string, allowReadOnly bool) (storage.Snapshot, error) {
	m, err := d.readMeta(site)
	if err != nil {
		return storage.Snapshot{}, err
	}
	if m.ReadOnly && !allowReadOnly {
		return storage.Snapshot{}, fmt.Errorf("snapshot %s@%s: %w", site, name, storage.ErrReadOnly)
	}
	dir := d.siteDir(site)
	final := snapDir(dir, name)
	if _, err := os.Stat(final); err == nil {
		return storage.Snapshot{}, fmt.Errorf("snapshot %s@%s: %w", site, name, storage.ErrExists)
	}
	// Only the newest manifest is read whole (a move's final snapshot is
	// taken inside its pause).
	heads, err := d.listHeads(site)
	if err != nil {
		return storage.Snapshot{}, err
	}
	var prev *manifest
	prevTree := ""
	if len(heads) > 0 {
		if prev, err = readManifest(filepath.Join(snapDir(dir, heads[len(heads)-1].name), "manifest.json")); err != nil {
			return storage.Snapshot{}, err
		}
		prevTree = filepath.Join(snapDir(dir, prev.Name), "tree")
	}
	started := time.Now()
	tmp, err := d.tmpDir("snap-")
	if err != nil {
		return storage.Snapshot{}, err
	}
	defer removeAll(tmp)
	liveDir, err := filepath.EvalSymlinks(filepath.Join(dir, "live"))
	if err != nil {
		return storage.Snapshot{}, err
	}
	entries, copied, err := captureTree(liveDir, filepath.Join(tmp, "tree"), prev, prevTree)
	if err != nil {
		return storage.Snapshot{}, mapFSError(fmt.Errorf("snapshot %s@%s: %w", site, name, err))
	}
	man := &manifest{Name: name, GUID: randomGUID(), Created: time.Now().UTC(), Seq: m.NextSeq, Entries: entries}
	if err := writeJSONAtomic(filepath.Join(tmp, "manifest.json"), man); err != nil {
		return storage.Snapshot{}, mapFSError(err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return storage.Snapshot{}, err
	}
	m.NextSeq++
	if err := d.writeMeta(site, m); err != nil {
		return storage.Snapshot{}, err
	}
	d.log.Info("snapshot taken", "site", site.String(), "snapshot", name, "copied_bytes", copied, "duration", time.Since(started))
	return d.toSnapshot(site, m, man), nil
}

// SnapshotAll implements storage.Driver. Unlike ZFS it is not atomic across
// sites: each site's snapshot is taken in turn.
func (d *Driver) SnapshotAll(ctx context.Context, snap storage.SnapName, sites []storage.Site) ([]storage.Site, error) {
	if err := checkSnap(snap); err != nil {
		return nil, err
	}
	for _, s := range sites {
		if err := checkSite(s); err != nil {
			return nil, err
		}
		m, err := d.readMeta(s)
		if err != nil {
			return nil, fmt.Errorf("snapshot all: %w", err)
		}
		if m.ReadOnly {
			return nil, fmt.Errorf("snapshot all: site %s: %w", s, storage.ErrReadOnly)
		}
	}
	all, err := d.writableSites()
	if err != nil {
		return nil, err
	}
	var done []storage.Site
	for _, s := range all {
		if err := ctx.Err(); err != nil {
			return done, err
		}
		if _, err := d.Snapshot(ctx, s, snap); err != nil {
			return done, fmt.Errorf("snapshot all: %w", err)
		}
		done = append(done, s)
	}
	return done, nil
}

func (d *Driver) writableSites() ([]storage.Site, error) {
	ents, err := os.ReadDir(filepath.Join(d.root, "sites"))
	if err != nil {
		return nil, err
	}
	var out []storage.Site
	for _, e := range ents {
		s, err := storage.ParseSite(e.Name())
		if err != nil {
			continue
		}
		m, err := d.readMeta(s)
		if err != nil || m.ReadOnly {
			continue
		}
		out = append(out, s)
	}
	return out, nil
}

// ListSnapshots implements storage.Driver.
func (d *Driver) ListSnapshots(ctx context.Context, site storage.Site) ([]storage.Snapshot, error) {
	if err := checkSite(site); err != nil {
		return nil, err
	}
	m, err := d.readMeta(site)
	if err != nil {
		return nil, err
	}
	heads, err := d.listHeads(site)
	if err != nil {
		return nil, err
	}
	out := make([]storage.Snapshot, 0, len(heads))
	for _, h := range heads {
		if s, ok := h.snapshot(m); ok {
			out = append(out, s)
		}
	}
	return out, nil
}

func (d *Driver) findManifest(site storage.Site, snap storage.SnapName) (*manifest, error) {
	man, err := readManifest(filepath.Join(snapDir(d.siteDir(site), snap.String()), "manifest.json"))
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Stat(d.siteDir(site)); serr != nil {
			return nil, fmt.Errorf("%w: site %s", storage.ErrNoDataset, site)
		}
		return nil, fmt.Errorf("%w: snapshot %s@%s", storage.ErrNoDataset, site, snap)
	}
	return man, err
}

// Fence implements storage.Driver.
func (d *Driver) Fence(ctx context.Context, site storage.Site, epoch storage.Epoch) error {
	if err := checkSite(site); err != nil {
		return err
	}
	defer d.lock(site)()
	m, err := d.readMeta(site)
	if err != nil {
		return err
	}
	seen, err := storage.ParseEpoch(m.Epoch)
	if err != nil {
		return err
	}
	if !seen.Less(epoch) {
		return nil
	}
	m.Epoch = epoch.String()
	return d.writeMeta(site, m)
}

// Epoch implements storage.Driver.
func (d *Driver) Epoch(ctx context.Context, site storage.Site) (storage.Epoch, error) {
	if err := checkSite(site); err != nil {
		return storage.Epoch{}, err
	}
	m, err := d.readMeta(site)
	if err != nil {
		return storage.Epoch{}, err
	}
	return storage.ParseEpoch(m.Epoch)
}

// Rollback implements storage.Driver.
func (d *Driver) Rollback(ctx context.Context, site storage.Site, to storage.SnapName, stash storage.StashName) error {
	if err := checkSite(site); err != nil {
		return err
	}
	if err := checkSnap(to); err != nil {
		return err
	}
	defer d.lock(site)()
	if _, err := d.findManifest(site, to); err != nil {
		return fmt.Errorf("rollback: %w", err)
	}
	if _, err := os.Stat(filepath.Join(d.stashDir(site), stash.String())); err == nil {
		return fmt.Errorf("rollback %s: stash %s: %w", site, stash, storage.ErrExists)
	}
	mans, err := d.listManifests(site)
	if err != nil {
		return fmt.Errorf("rollback %s: %w", site, err)
	}
	safety, err := storage.SafetySnapshotName(stash, func(name string) bool {
		return slices.ContainsFunc(mans, func(man *manifest) bool { return man.Name == name })
	})
	if err != nil {
		return fmt.Errorf("rollback %s: %w", site, err)
	}
	if _, err := d.snapshotLocked(site, safety, true); err != nil {
		return fmt.Errorf("rollback %s: safety snapshot: %w", site, err)
	}
	if err := d.stashLocked(site, to, stash); err != nil {
		return fmt.Errorf("rollback %s: %w", site, err)
	}
	d.log.Info("rolled back", "site", site.String(), "snapshot", to.String(), "stash", stash.String())
	return nil
}

// Stash implements storage.Driver.
func (d *Driver) Stash(ctx context.Context, site storage.Site, keep storage.SnapName, stash storage.StashName) error {
	if err := checkSite(site); err != nil {
		return err
	}
	if stash.IsZero() {
		return fmt.Errorf("%w: empty stash name", storage.ErrInvalidName)
	}
	defer d.lock(site)()
	return d.stashLocked(site, keep, stash)
}

// stashLocked moves the snapshots after keep and the live tree into a new
// stash. A zero keep stashes every snapshot; the site keeps its meta (epoch,
// quota, read-only) with no snapshots and an empty live tree.
func (d *Driver) stashLocked(site storage.Site, keep storage.SnapName, stash storage.StashName) error {
	m, err := d.readMeta(site)
	if err != nil {
		return err
	}
	var keepMan *manifest
	if !keep.IsZero() {
		if keepMan, err = d.findManifest(site, keep); err != nil {
			return fmt.Errorf("stash: %w", err)
		}
	}
	final := filepath.Join(d.stashDir(site), stash.String())
	if _, err := os.Stat(final); err == nil {
		return fmt.Errorf("stash %s/%s: %w", site, stash, storage.ErrExists)
	}
	mans, err := d.listManifests(site)
	if err != nil {
		return err
	}
	var after []*manifest
	for _, man := range mans {
		if keepMan == nil || man.Seq > keepMan.Seq {
			after = append(after, man)
		}
	}
	for _, man := range after {
		if d.isSending(site, man.Name) {
			return fmt.Errorf("stash %s: snapshot %s is being sent: %w", site, man.Name, storage.ErrBusy)
		}
		if m.Mounts[man.Name] > 0 {
			return fmt.Errorf("stash %s: snapshot %s is mounted: %w", site, man.Name, storage.ErrBusy)
		}
	}
	if err := os.MkdirAll(d.stashDir(site), 0o755); err != nil {
		return err
	}
	tmp, err := d.tmpDir("stash-")
	if err != nil {
		return err
	}
	defer removeAll(tmp)
	if err := os.Mkdir(filepath.Join(tmp, "snaps"), 0o755); err != nil {
		return err
	}
	sm := stashMeta{Base: keep.String(), Created: time.Now().UTC()}
	for _, man := range after {
		sm.Snapshots = append(sm.Snapshots, storage.StashedSnapshot{Name: man.Name, GUID: man.GUID, Created: man.Created})
	}
	// Build the site's new live tree (equal to keep, or empty) before moving
	// anything, so a failure here leaves the site untouched.
	gen := m.LiveGen + 1
	newTree := filepath.Join(d.siteDir(site), "trees", strconv.Itoa(gen))
	_ = removeAll(newTree)
	if keepMan == nil {
		if err := os.MkdirAll(newTree, 0o755); err != nil {
			return mapFSError(err)
		}
	} else if err := materializeTree(filepath.Join(snapDir(d.siteDir(site), keep.String()), "tree"), newTree, keepMan, m.ReadOnly); err != nil {
		_ = removeAll(newTree)
		return mapFSError(err)
	}
	if err := writeJSONAtomic(filepath.Join(tmp, "stash.json"), sm); err != nil {
		return err
	}
	// From here on, moves are renames within one file system.
	liveTarget, err := os.Readlink(filepath.Join(d.siteDir(site), "live"))
	if err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(d.siteDir(site), liveTarget), filepath.Join(tmp, "live")); err != nil {
		return err
	}
	for _, man := range after {
		if err := os.Rename(snapDir(d.siteDir(site), man.Name), filepath.Join(tmp, "snaps", man.Name)); err != nil {
			return err
		}
		delete(m.Holds, man.Name)
	}
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	if err := d.swapLive(site, m, gen); err != nil {
		return err
	}
	if keepMan != nil && !m.ReadOnly {
		// keep is the newest snapshot now, and the live tree writable
		// copies of it.
		if err := d.adoptLive(site, keepMan); err != nil {
			return err
		}
	}
	d.log.Info("stashed", "site", site.String(), "stash", stash.String(), "base", keep.String(), "snapshots", len(after))
	return nil
}

// ListStash implements storage.Driver.
func (d *Driver) ListStash(ctx context.Context, site storage.Site) ([]storage.Stash, error) {
	if err := checkSite(site); err != nil {
		return nil, err
	}
	if _, err := d.readMeta(site); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(d.stashDir(site))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []storage.Stash
	for _, e := range ents {
		name, err := storage.ParseStashName(e.Name())
		if err != nil {
			continue
		}
		var sm stashMeta
		data, err := os.ReadFile(filepath.Join(d.stashDir(site), e.Name(), "stash.json"))
		if err != nil {
			return nil, err
		}
		if err := jsonUnmarshal(data, &sm); err != nil {
			return nil, err
		}
		base, _ := storage.ParseSnapNameOrEmpty(sm.Base)
		out = append(out, storage.Stash{Name: name, Site: site, Base: base, Created: sm.Created, Snapshots: sm.Snapshots})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// RestoreStash implements storage.Driver.
func (d *Driver) RestoreStash(ctx context.Context, site storage.Site, stash, displaced storage.StashName) error {
	if err := checkSite(site); err != nil {
		return err
	}
	if stash.IsZero() || displaced.IsZero() {
		return fmt.Errorf("%w: empty stash name", storage.ErrInvalidName)
	}
	defer d.lock(site)()
	dir := filepath.Join(d.stashDir(site), stash.String())
	var sm stashMeta
	data, err := os.ReadFile(filepath.Join(dir, "stash.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("restore %s: stash %s: %w", site, stash, storage.ErrNoDataset)
	}
	if err != nil {
		return err
	}
	if err := jsonUnmarshal(data, &sm); err != nil {
		return err
	}
	// A zero base is a stash of everything: everything the site has now is
	// displaced.
	base, err := storage.ParseSnapNameOrEmpty(sm.Base)
	if err != nil {
		return fmt.Errorf("restore %s: stash %s: bad base: %w", site, stash, err)
	}
	if err := d.stashLocked(site, base, displaced); err != nil {
		return fmt.Errorf("restore %s: putting aside current history: %w", site, err)
	}
	m, err := d.readMeta(site)
	if err != nil {
		return err
	}
	for _, s := range sm.Snapshots {
		if err := os.Rename(filepath.Join(dir, "snaps", s.Name), snapDir(d.siteDir(site), s.Name)); err != nil {
			return err
		}
		man, err := readManifest(filepath.Join(snapDir(d.siteDir(site), s.Name), "manifest.json"))
		if err != nil {
			return err
		}
		man.Seq = m.NextSeq
		m.NextSeq++
		if err := writeJSONAtomic(filepath.Join(snapDir(d.siteDir(site), s.Name), "manifest.json"), man); err != nil {
			return err
		}
	}
	gen := m.LiveGen + 1
	if err := os.Rename(filepath.Join(dir, "live"), filepath.Join(d.siteDir(site), "trees", strconv.Itoa(gen))); err != nil {
		return err
	}
	if err := d.swapLive(site, m, gen); err != nil {
		return err
	}
	d.log.Info("stash restored", "site", site.String(), "stash", stash.String(), "displaced", displaced.String())
	return removeAll(dir)
}

func (d *Driver) stashBases(site storage.Site) map[string]bool {
	out := map[string]bool{}
	stashes, _ := d.ListStash(context.Background(), site)
	for _, s := range stashes {
		out[s.Base.String()] = true
	}
	return out
}

// Prune implements storage.Driver.
func (d *Driver) Prune(ctx context.Context, site storage.Site, policy storage.RetentionPolicy, protected []storage.SnapName, now time.Time) ([]storage.SnapName, error) {
	if err := checkSite(site); err != nil {
		return nil, err
	}
	defer d.lock(site)()
	m, err := d.readMeta(site)
	if err != nil {
		return nil, err
	}
	mans, err := d.listManifests(site)
	if err != nil {
		return nil, err
	}
	snaps := make([]storage.Snapshot, 0, len(mans))
	for _, man := range mans {
		// A safety snapshot is never pruned (as on ZFS, where it is not
		// listed either): it holds a rollback's live state.
		if man.listed() {
			snaps = append(snaps, d.toSnapshot(site, m, man))
		}
	}
	_, drop := policy.Select(snaps, now)
	keepNames := map[string]bool{}
	for _, p := range protected {
		keepNames[p.String()] = true
	}
	bases := d.stashBases(site)
	var pruned []storage.SnapName
	for _, s := range drop {
		name := s.Name.String()
		if keepNames[name] || len(m.Holds[name]) > 0 || m.Mounts[name] > 0 || bases[name] || d.isSending(site, name) {
			continue
		}
		if err := removeAll(snapDir(d.siteDir(site), name)); err != nil {
			return pruned, err
		}
		pruned = append(pruned, s.Name)
	}
	if len(pruned) > 0 {
		d.log.Info("pruned", "site", site.String(), "snapshots", len(pruned))
	}
	return pruned, nil
}

// Hold implements storage.Driver.
func (d *Driver) Hold(ctx context.Context, site storage.Site, snap storage.SnapName, tag storage.HoldTag) error {
	return d.changeHold(site, snap, tag, true)
}

// Release implements storage.Driver.
func (d *Driver) Release(ctx context.Context, site storage.Site, snap storage.SnapName, tag storage.HoldTag) error {
	return d.changeHold(site, snap, tag, false)
}

func (d *Driver) changeHold(site storage.Site, snap storage.SnapName, tag storage.HoldTag, hold bool) error {
	if err := checkSite(site); err != nil {
		return err
	}
	if err := checkSnap(snap); err != nil {
		return err
	}
	if tag.String() == "" {
		return fmt.Errorf("%w: empty hold tag", storage.ErrInvalidName)
	}
	defer d.lock(site)()
	m, err := d.readMeta(site)
	if err != nil {
		return err
	}
	if _, err := d.findManifest(site, snap); err != nil {
		return err
	}
	tags := m.Holds[snap.String()]
	idx := -1
	for i, t := range tags {
		if t == tag.String() {
			idx = i
		}
	}
	switch {
	case hold && idx >= 0:
		return fmt.Errorf("hold %s@%s %s: %w", site, snap, tag, storage.ErrExists)
	case hold:
		tags = append(tags, tag.String())
	case idx < 0:
		return fmt.Errorf("release %s@%s %s: %w: no such hold", site, snap, tag, storage.ErrNoDataset)
	default:
		tags = append(tags[:idx], tags[idx+1:]...)
	}
	if m.Holds == nil {
		m.Holds = map[string][]string{}
	}
	if len(tags) == 0 {
		delete(m.Holds, snap.String())
	} else {
		m.Holds[snap.String()] = tags
	}
	return d.writeMeta(site, m)
}

// MountReadOnly implements storage.Driver: the snapshot's tree is already
// read-only files; mounting counts a user so it is not pruned meanwhile.
func (d *Driver) MountReadOnly(ctx context.Context, site storage.Site, snap storage.SnapName) (string, error) {
	if err := checkSite(site); err != nil {
		return "", err
	}
	if err := checkSnap(snap); err != nil {
		return "", err
	}
	defer d.lock(site)()
	m, err := d.readMeta(site)
	if err != nil {
		return "", err
	}
	if _, err := d.findManifest(site, snap); err != nil {
		return "", err
	}
	if m.Mounts == nil {
		m.Mounts = map[string]int{}
	}
	m.Mounts[snap.String()]++
	if err := d.writeMeta(site, m); err != nil {
		return "", err
	}
	return filepath.Join(snapDir(d.siteDir(site), snap.String()), "tree"), nil
}

// Unmount implements storage.Driver.
func (d *Driver) Unmount(ctx context.Context, site storage.Site, snap storage.SnapName) error {
	if err := checkSite(site); err != nil {
		return err
	}
	if err := checkSnap(snap); err != nil {
		return err
	}
	defer d.lock(site)()
	m, err := d.readMeta(site)
	if err != nil {
		return err
	}
	if m.Mounts[snap.String()] == 0 {
		return fmt.Errorf("unmount %s@%s: %w: not mounted", site, snap, storage.ErrNoDataset)
	}
	m.Mounts[snap.String()]--
	if m.Mounts[snap.String()] == 0 {
		delete(m.Mounts, snap.String())
	}
	return d.writeMeta(site, m)
}

// ListMounts implements storage.Driver.
func (d *Driver) ListMounts(ctx context.Context, site storage.Site) ([]storage.Mount, error) {
	if err := checkSite(site); err != nil {
		return nil, err
	}
	m, err := d.readMeta(site)
	if err != nil {
		return nil, err
	}
	var out []storage.Mount
	for name, users := range m.Mounts {
		snap, err := storage.ParseSnapName(name)
		if err != nil || users <= 0 {
			continue
		}
		out = append(out, storage.Mount{Snapshot: snap, Path: filepath.Join(snapDir(d.siteDir(site), name), "tree"), Users: users})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Snapshot.String() < out[j].Snapshot.String() })
	return out, nil
}

// Usage implements storage.Driver.
func (d *Driver) Usage(ctx context.Context, site storage.Site) (storage.Usage, error) {
	if err := checkSite(site); err != nil {
		return storage.Usage{}, err
	}
	m, err := d.readMeta(site)
	if err != nil {
		return storage.Usage{}, err
	}
	u := storage.Usage{
		UsedBytes:       treeBytes(d.siteDir(site), d.stashDir(site)),
		ReferencedBytes: treeBytes(filepath.Join(d.siteDir(site), "live") + "/"),
		QuotaBytes:      m.QuotaBytes,
	}
	free, err := d.Free(ctx)
	if err != nil {
		return u, err
	}
	u.AvailableBytes = free
	if m.QuotaBytes > 0 && m.QuotaBytes-u.UsedBytes < free {
		u.AvailableBytes = max(0, m.QuotaBytes-u.UsedBytes)
	}
	return u, nil
}

// Free implements storage.Driver.
func (d *Driver) Free(ctx context.Context) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(d.root, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// Size implements storage.Driver: the file system's size, less the blocks
// reserved for root (which Free does not count either).
func (d *Driver) Size(ctx context.Context) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(d.root, &st); err != nil {
		return 0, err
	}
	return int64(st.Blocks-(st.Bfree-st.Bavail)) * int64(st.Bsize), nil
}

func (d *Driver) isSending(site storage.Site, snap string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sending[site.String()+"@"+snap] > 0
}

func (d *Driver) markSending(site storage.Site, snaps ...string) func() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range snaps {
		d.sending[site.String()+"@"+s]++
	}
	return func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		for _, s := range snaps {
			key := site.String() + "@" + s
			if d.sending[key]--; d.sending[key] <= 0 {
				delete(d.sending, key)
			}
		}
	}
}

func mapFSError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %v", storage.ErrOutOfSpace, err)
	}
	return err
}
