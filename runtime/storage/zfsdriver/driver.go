// Package zfsdriver is the production storage driver: one ZFS filesystem
// per site, driven through github.com/mistifyio/go-zfs/v3 and, for what
// go-zfs cannot express, the zfs command line, all through one choke point
// (cmd.go).
//
// Datasets under the configured root (e.g. tank/hc):
//
//	<root>/sites/<site>            writable datasets of sites this node masters
//	<root>/replicas/<site>         read-only replicas (readonly=on)
//	<root>/stash/<site>/<stash>    stashed divergent history (clones, read-only)
//	<root>/views/<site>/<snap>     read-only views of snapshots (clones)
//	<root>/swap/<site>             transient clone while a stash is made
//
// The sites/ and replicas/ parents have atime=off, which every site
// dataset inherits (reads do not write).
//
// Writable and read-only datasets live under different parents so that the
// per-interval `zfs snapshot -r <root>/sites@<name>` is one atomic command
// that never touches a replica (a local snapshot on a replica would break
// its next incremental receive). Promotion and demotion rename the dataset
// between the two parents.
//
// A stash is a dataset: the site's dataset with the history after the kept
// snapshot is renamed into the stash, a clone of the kept snapshot takes its
// place and is promoted, so it owns the shared snapshots. Nothing is
// destroyed and no data is copied. A stash of everything (zero keep) is the
// whole dataset renamed into the stash (not a clone: no origin), with a new
// empty dataset carrying the site's quota, read-only setting and epoch in
// its place.
package zfsdriver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	gozfs "github.com/mistifyio/go-zfs/v3"

	"github.com/hybridcluster/hybridcluster/runtime/storage"
)

// Kind is the stream kind of this driver.
const Kind = "zfs"

const (
	propEpoch   = "hc:epoch"
	propStashed = "hc:stashed" // unix nanoseconds a stash was made, for ordering
	// propMountUsers counts the MountReadOnly calls of a view not yet
	// unmounted (the portable driver counts them too).
	propMountUsers = "hc:mountusers"
	// estimateOverheadBytes is added to fallback send-size estimates for
	// stream headers and metadata records.
	estimateOverheadBytes = 64 << 10
)

var rootPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]*(/[A-Za-z0-9][A-Za-z0-9_.:-]*)*$`)

// Config configures a Driver.
type Config struct {
	// Root is the dataset under which all site datasets live, e.g. "tank/hc".
	// It is created if missing; its pool must exist.
	Root string
	// Logger receives one line per state change and, at debug level, every
	// command. Nil discards.
	Logger *slog.Logger
}

// Driver is the ZFS storage driver.
type Driver struct {
	root string
	log  *slog.Logger

	mu           sync.Mutex
	siteLocks    map[string]*sync.Mutex
	sending      map[string]int
	sendNoDryRun bool // this zfs has no `send -n` (zfs-fuse)
	// locations keeps where each site's dataset is (locate.go); locGen
	// counts the times they were all forgotten.
	locations map[string]location
	locGen    uint64
}

var _ storage.Driver = (*Driver)(nil)

// New opens the driver, creating the root and its container datasets.
func New(ctx context.Context, cfg Config) (*Driver, error) {
	if !rootPattern.MatchString(cfg.Root) || strings.Contains(cfg.Root, "..") {
		return nil, fmt.Errorf("%w: zfs root %q", storage.ErrInvalidName, cfg.Root)
	}
	d := &Driver{root: cfg.Root, log: newLogger(cfg.Logger).With("driver", Kind), siteLocks: map[string]*sync.Mutex{}, sending: map[string]int{},
		locations: map[string]location{}}
	for _, ds := range []string{d.root, d.root + "/sites", d.root + "/replicas", d.root + "/stash", d.root + "/views", d.root + "/swap"} {
		var props [][2]string
		if ds == d.root+"/sites" {
			props = append(props, [2]string{"atime", "off"}) // see below
		}
		if err := d.ensureFilesystem(ctx, ds, props...); err != nil {
			return nil, fmt.Errorf("zfs driver root: %w", err)
		}
	}
	// Replicas inherit readonly=on and atime=off from their parent from the
	// moment a full receive creates them. The parent itself is not mounted
	// (canmount=off), or its read-only mount would leave nowhere to create
	// the children's mountpoints.
	// Writable datasets inherit atime=off from theirs too: a read does not
	// write (reads of a site's files would otherwise dirty its dataset and
	// grow every increment), and a promotion or demotion changes only
	// readonly, one zfs command fewer while a move's clients wait.
	// A property is set only if it differs: setting one remounts the
	// children, which fails while a replica's mount is busy (a restart
	// must not depend on that). sites/ gets atime=off when it is created;
	// setting it here (and remounting) is for a pool an older version made.
	replicas := d.root + "/replicas"
	for _, p := range []struct{ ds, key, value string }{
		{replicas, "canmount", "off"}, {replicas, "readonly", "on"}, {replicas, "atime", "off"},
		{d.root + "/sites", "atime", "off"},
	} {
		if v, err := d.getProp(ctx, p.ds, p.key); err == nil && v == p.value {
			continue
		}
		if err := d.setProp(ctx, p.ds, p.key, p.value); err != nil {
			return nil, err
		}
	}
	if err := d.unmount(ctx, replicas); err != nil {
		return nil, err
	}
	// Not fatal: a site on a dataset that stays unmounted fails to start,
	// and says so (Mountpoint tries again).
	if err := d.mountMissing(ctx); err != nil {
		d.log.Error("mounting the filesystems found unmounted", "err", err)
	}
	return d, nil
}

// mountMissing mounts the filesystems under the root that should be
// mounted and are not: a pool imported without its mounts (zfs-fuse
// imports its pools at start and mounts nothing; OpenZFS does the same
// with zpool import -N). A site started on an unmounted dataset would run
// in an empty directory, or in one on the parent's filesystem, where its
// writes would be in no snapshot. Parents come before their children
// (zfs list -r lists them so), or a parent mounted later would hide a
// child's mount. Replicas stay as they are (a receive needs no mount, and
// a promotion mounts its dataset), and so do stashes, which are kept
// unmounted.
func (d *Driver) mountMissing(ctx context.Context) error {
	out, err := d.command(ctx, "list mounts", "zfs", []string{"list", "-H", "-r", "-t", "filesystem", "-o", "name,mounted,canmount,mountpoint", d.root}, nil, nil)
	if err != nil {
		return err
	}
	var errs []error
	var failed []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "\t")
		// Not mountable by zfs mount: canmount off or noauto, no
		// mountpoint, or one the operator mounts (legacy).
		if len(f) != 4 || f[1] != "no" || f[2] != "on" || !strings.HasPrefix(f[3], "/") {
			continue
		}
		ds := f[0]
		if strings.HasPrefix(ds, d.root+"/replicas/") || strings.HasPrefix(ds, d.root+"/stash/") {
			continue
		}
		// Not under a parent that would not mount: mounted later, that
		// parent would hide this mount.
		if slices.ContainsFunc(failed, func(p string) bool { return strings.HasPrefix(ds, p+"/") }) {
			continue
		}
		if err := d.mount(ctx, ds); err != nil {
			errs = append(errs, err) // it names the dataset (zfs mount ds: ...)
			failed = append(failed, ds)
			continue
		}
		d.log.Warn("mounted a filesystem found unmounted", "dataset", ds)
	}
	return errors.Join(errs...)
}

// Kind implements storage.Driver.
func (d *Driver) Kind() string { return Kind }

// Root is the root dataset.
func (d *Driver) Root() string { return d.root }

// ensureFilesystem creates ds if it does not exist, with props (a
// property given at creation needs no remount, which setting it on a
// mounted filesystem does).
func (d *Driver) ensureFilesystem(ctx context.Context, ds string, props ...[2]string) error {
	exists, err := d.datasetExists(ctx, ds)
	if err != nil || exists {
		return err
	}
	argv := []string{"create"}
	var set map[string]string
	for _, p := range props {
		argv = append(argv, "-o", p[0]+"="+p[1])
		if set == nil {
			set = map[string]string{}
		}
		set[p[0]] = p[1]
	}
	argv = append(argv, ds)
	err = d.gozfs(ctx, "create", argv, false, nil, func() error {
		_, err := gozfs.CreateFilesystem(ds, set)
		return err
	})
	if errors.Is(err, storage.ErrExists) {
		return nil
	}
	return err
}

func (d *Driver) datasetExists(ctx context.Context, ds string) (bool, error) {
	_, err := d.command(ctx, opProbe, "zfs", []string{"list", "-H", "-o", "name", ds}, nil, nil)
	if errors.Is(err, storage.ErrNoDataset) {
		return false, nil
	}
	return err == nil, err
}

func (d *Driver) setProp(ctx context.Context, ds, key, value string) error {
	return d.gozfs(ctx, "set", []string{"set", key + "=" + value, ds}, false, nil, func() error {
		return (&gozfs.Dataset{Name: ds, Type: gozfs.DatasetFilesystem}).SetProperty(key, value)
	})
}

func (d *Driver) getProp(ctx context.Context, ds, key string) (string, error) {
	out, err := d.command(ctx, "get", "zfs", []string{"get", "-Hp", "-o", "value", key, ds}, nil, nil)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

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

// Dataset names are only ever built from validated names by these helpers.
func (d *Driver) writableDS(site storage.Site) string  { return d.root + "/sites/" + site.String() }
func (d *Driver) replicaDS(site storage.Site) string   { return d.root + "/replicas/" + site.String() }
func (d *Driver) stashParent(site storage.Site) string { return d.root + "/stash/" + site.String() }
func (d *Driver) stashDS(site storage.Site, s storage.StashName) string {
	return d.stashParent(site) + "/" + s.String()
}
func (d *Driver) viewParent(site storage.Site) string { return d.root + "/views/" + site.String() }
func (d *Driver) viewDS(site storage.Site, snap storage.SnapName) string {
	return d.viewParent(site) + "/" + snap.String()
}
func (d *Driver) swapDS(site storage.Site) string { return d.root + "/swap/" + site.String() }

// Create implements storage.Driver.
func (d *Driver) Create(ctx context.Context, site storage.Site, quotaBytes int64) error {
	if err := checkSite(site); err != nil {
		return err
	}
	if quotaBytes < 0 {
		return fmt.Errorf("create %s: negative quota", site)
	}
	defer d.lock(site)()
	if _, _, err := d.locate(ctx, site); err == nil {
		return fmt.Errorf("create %s: %w", site, storage.ErrExists)
	} else if !errors.Is(err, storage.ErrNoDataset) {
		return err
	}
	ds := d.writableDS(site)
	props := map[string]string{"quota": quotaValue(quotaBytes)}
	err := d.gozfs(ctx, "create", []string{"create", "-o", "quota=" + props["quota"], ds}, false, nil, func() error {
		_, err := gozfs.CreateFilesystem(ds, props)
		return err
	})
	if err != nil {
		return fmt.Errorf("create %s: %w", site, err)
	}
	d.knowLocation(site, ds, false)
	d.log.Info("dataset created", "site", site.String(), "quota", quotaBytes)
	return nil
}

func quotaValue(n int64) string {
	if n <= 0 {
		return "none"
	}
	return strconv.FormatInt(n, 10)
}

// destroyDS destroys a dataset (recursively, with dependent clones),
// unmounting and retrying while it is busy.
func (d *Driver) destroyDS(ctx context.Context, ds string, recursive bool) error {
	flags := gozfs.DestroyFlag(gozfs.DestroyDefault)
	argv := []string{"destroy"}
	if recursive {
		flags = gozfs.DestroyRecursive | gozfs.DestroyRecursiveClones
		argv = append(argv, "-r", "-R")
	}
	argv = append(argv, ds)
	target := &gozfs.Dataset{Name: ds, Type: gozfs.DatasetFilesystem}
	if strings.Contains(ds, "@") {
		target.Type = gozfs.DatasetSnapshot
	}
	return d.gozfs(ctx, "destroy", argv, true, func(ctx context.Context) {
		if !strings.Contains(ds, "@") {
			_ = d.unmount(ctx, ds)
		}
	}, func() error { return target.Destroy(flags) })
}

func (d *Driver) unmount(ctx context.Context, ds string) error {
	_, err := d.command(ctx, "unmount", "zfs", []string{"unmount", ds}, nil, nil)
	if err != nil && strings.Contains(strings.ToLower(err.Error()), "not currently mounted") {
		return nil
	}
	return err
}

func (d *Driver) mount(ctx context.Context, ds string) error {
	_, err := d.command(ctx, "mount", "zfs", []string{"mount", ds}, nil, nil)
	if err != nil && strings.Contains(strings.ToLower(err.Error()), "already mounted") {
		return nil
	}
	return err
}

// rename renames a filesystem, unmounted (zfs-fuse reports fresh mounts as
// busy), and mounts it again. A rename whose mount fails is undone, so that
// the caller's step fails whole and the dataset is where it was: zfs-fuse
// refuses to mount over a directory that is not empty (OpenZFS 2 mounts
// over it), and a promotion that renamed a replica to the site's name and
// then failed left its history there, unmounted, for the stash that
// followed to break apart.
func (d *Driver) rename(ctx context.Context, from, to string) error {
	if err := d.unmount(ctx, from); err != nil && !errors.Is(err, storage.ErrNoDataset) {
		return err
	}
	if err := d.renameOnly(ctx, from, to); err != nil {
		_ = d.mount(ctx, from)
		return err
	}
	err := d.mount(ctx, to)
	if err == nil {
		return nil
	}
	if berr := d.renameOnly(ctx, to, from); berr != nil {
		d.log.Error("a rename whose mount failed could not be undone", "from", from, "to", to, "mount_err", err, "err", berr)
		return fmt.Errorf("%w (renaming it back to %s failed: %v)", err, from, berr)
	}
	_ = d.mount(ctx, from)
	return err
}

// renameOnly is zfs rename, retried while zfs-fuse says the dataset is
// busy.
func (d *Driver) renameOnly(ctx context.Context, from, to string) error {
	return d.gozfs(ctx, "rename", []string{"rename", from, to}, true, func(ctx context.Context) { _ = d.unmount(ctx, from) }, func() error {
		_, err := (&gozfs.Dataset{Name: from, Type: gozfs.DatasetFilesystem}).Rename(to, false, false)
		return err
	})
}

// Destroy implements storage.Driver.
func (d *Driver) Destroy(ctx context.Context, site storage.Site) error {
	if err := checkSite(site); err != nil {
		return err
	}
	defer d.lock(site)()
	ds, _, err := d.locate(ctx, site)
	if err != nil {
		return fmt.Errorf("destroy: %w", err)
	}
	for _, parent := range []string{d.viewParent(site), d.stashParent(site)} {
		if ok, err := d.datasetExists(ctx, parent); err != nil {
			return err
		} else if ok {
			if err := d.destroyDS(ctx, parent, true); err != nil {
				return fmt.Errorf("destroy %s: %w", site, err)
			}
		}
	}
	if err := d.destroyDS(ctx, ds, true); err != nil {
		return fmt.Errorf("destroy %s: %w", site, err)
	}
	d.log.Info("dataset destroyed", "site", site.String())
	return nil
}

// Exists implements storage.Driver.
func (d *Driver) Exists(ctx context.Context, site storage.Site) (bool, error) {
	_, _, err := d.locate(ctx, site)
	if errors.Is(err, storage.ErrNoDataset) {
		return false, nil
	}
	return err == nil, err
}

// Mountpoint implements storage.Driver. It changes when a dataset is
// promoted or demoted (it moves between sites/ and replicas/). The answer
// is kept with the site's location (locate.go): a site's start asks for it
// while a move's clients wait.
func (d *Driver) Mountpoint(ctx context.Context, site storage.Site) (string, error) {
	d.mu.Lock()
	gen := d.locGen
	d.mu.Unlock()
	ds, ro, err := d.locate(ctx, site)
	if err != nil {
		return "", err
	}
	if m := d.keptMount(site, ds); m != "" {
		return m, nil
	}
	asked := time.Now()
	m, mounted, err := d.mountState(ctx, ds)
	if err != nil {
		return "", err
	}
	if !mounted && !ro {
		// A writable dataset unmounted behind the driver's back (a pool
		// imported again without its mounts): the site's processes must
		// not start in the bare directory.
		if err := d.mountSite(ctx, site, ds); err != nil {
			return "", err
		}
	}
	d.keepMount(site, ds, m, asked, gen)
	return m, nil
}

// mountState is ds's mountpoint and whether it is mounted, in one zfs get.
func (d *Driver) mountState(ctx context.Context, ds string) (mountpoint string, mounted bool, err error) {
	out, err := d.command(ctx, "get", "zfs", []string{"get", "-Hp", "-o", "property,value", "mountpoint,mounted", ds}, nil, nil)
	if err != nil {
		return "", false, err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		k, v, _ := strings.Cut(line, "\t")
		switch k {
		case "mountpoint":
			mountpoint = v
		case "mounted":
			mounted = v == "yes"
		}
	}
	if mountpoint == "" {
		return "", false, fmt.Errorf("zfs get mountpoint of %s: no answer in %q", ds, out)
	}
	return mountpoint, mounted, nil
}

// mountSite mounts the site's writable dataset ds, under the site's lock
// (a promotion or demotion renames it unmounted) and only if it is still
// there and still unmounted.
func (d *Driver) mountSite(ctx context.Context, site storage.Site, ds string) error {
	defer d.lock(site)()
	if _, mounted, err := d.mountState(ctx, ds); err != nil || mounted {
		return err
	}
	if err := d.mount(ctx, ds); err != nil {
		return err // it names the dataset (zfs mount ds: ...)
	}
	d.log.Warn("mounted a site's dataset found unmounted", "site", site.String(), "dataset", ds)
	return nil
}

// SetQuota implements storage.Driver.
func (d *Driver) SetQuota(ctx context.Context, site storage.Site, quotaBytes int64) error {
	defer d.lock(site)()
	ds, _, err := d.locate(ctx, site)
	if err != nil {
		return err
	}
	return d.setProp(ctx, ds, "quota", quotaValue(quotaBytes))
}

// SetReadOnly implements storage.Driver.
func (d *Driver) SetReadOnly(ctx context.Context, site storage.Site, readOnly bool) error {
	if err := checkSite(site); err != nil {
		return err
	}
	defer d.lock(site)()
	ds, ro, err := d.locate(ctx, site)
	if err != nil {
		return err
	}
	if ro == readOnly {
		return nil
	}
	if readOnly {
		if err := d.setProp(ctx, ds, "readonly", "on"); err != nil {
			return err
		}
		if err := d.rename(ctx, ds, d.replicaDS(site)); err != nil {
			return fmt.Errorf("demote %s: %w", site, err)
		}
		d.knowLocation(site, d.replicaDS(site), true)
	} else {
		if err := d.rename(ctx, ds, d.writableDS(site)); err != nil {
			return fmt.Errorf("promote %s: %w", site, err)
		}
		d.knowLocation(site, d.writableDS(site), false)
		if err := d.setProp(ctx, d.writableDS(site), "readonly", "off"); err != nil {
			return err
		}
	}
	d.log.Info("dataset read-only changed", "site", site.String(), "readonly", readOnly)
	return nil
}

// snapshotDS takes one snapshot (name may be the SafetySnapshot).
func (d *Driver) snapshotDS(ctx context.Context, ds, name string, recursive bool) error {
	argv := []string{"snapshot"}
	if recursive {
		argv = append(argv, "-r")
	}
	argv = append(argv, ds+"@"+name)
	_, err := d.command(ctx, "snapshot", "zfs", argv[0:], nil, nil)
	return err
}

// Snapshot implements storage.Driver.
func (d *Driver) Snapshot(ctx context.Context, site storage.Site, snap storage.SnapName) (storage.Snapshot, error) {
	if err := checkSnap(snap); err != nil {
		return storage.Snapshot{}, err
	}
	if err := checkSite(site); err != nil {
		return storage.Snapshot{}, err
	}
	defer d.lock(site)()
	ds, ro, err := d.locate(ctx, site)
	if err != nil {
		return storage.Snapshot{}, err
	}
	if ro {
		return storage.Snapshot{}, fmt.Errorf("snapshot %s@%s: %w", site, snap, storage.ErrReadOnly)
	}
	if err := d.gozfs(ctx, "snapshot", []string{"snapshot", ds + "@" + snap.String()}, false, nil, func() error {
		_, err := (&gozfs.Dataset{Name: ds, Type: gozfs.DatasetFilesystem}).Snapshot(snap.String(), false)
		return err
	}); err != nil {
		return storage.Snapshot{}, fmt.Errorf("snapshot %s@%s: %w", site, snap, err)
	}
	d.confirmLocation(site, ds)
	d.log.Info("snapshot taken", "site", site.String(), "snapshot", snap.String())
	return d.findSnapshot(ctx, ds, snap)
}

// SnapshotAll implements storage.Driver: one `zfs snapshot -r` of the
// parent of all writable datasets, atomic across them. Around it: one
// `zfs list` to check the listed sites, one destroy of the parent's own
// empty snapshot.
func (d *Driver) SnapshotAll(ctx context.Context, snap storage.SnapName, sites []storage.Site) ([]storage.Site, error) {
	if err := checkSnap(snap); err != nil {
		return nil, err
	}
	parent := d.root + "/sites"
	out, err := d.command(ctx, "list", "zfs", []string{"list", "-H", "-o", "name", "-t", "filesystem", "-d", "1", parent, d.root + "/replicas"}, nil, nil)
	if err != nil {
		return nil, err
	}
	writable := map[string]bool{}
	replica := map[string]bool{}
	var all []storage.Site
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if name, ok := strings.CutPrefix(line, parent+"/"); ok {
			if s, err := storage.ParseSite(name); err == nil {
				writable[name] = true
				all = append(all, s)
			}
		} else if name, ok := strings.CutPrefix(line, d.root+"/replicas/"); ok {
			replica[name] = true
		}
	}
	for _, s := range sites {
		if err := checkSite(s); err != nil {
			return nil, err
		}
		switch {
		case replica[s.String()]:
			return nil, fmt.Errorf("snapshot all: site %s: %w", s, storage.ErrReadOnly)
		case !writable[s.String()]:
			return nil, fmt.Errorf("snapshot all: %w: site %s", storage.ErrNoDataset, s)
		}
	}
	started := time.Now()
	if err := d.snapshotDS(ctx, parent, snap.String(), true); err != nil {
		return nil, fmt.Errorf("snapshot all %s: %w", snap, err)
	}
	elapsed := time.Since(started)
	// The parent's own (empty) snapshot is of no use.
	if err := d.destroyDS(ctx, parent+"@"+snap.String(), false); err != nil {
		d.log.Warn("could not destroy parent snapshot", "snapshot", snap.String(), "err", err)
	}
	d.log.Info("snapshot of all sites", "snapshot", snap.String(), "sites", len(all), "command_duration", elapsed)
	return all, nil
}

// snapInfo is one snapshot as zfs reports it.
type snapInfo struct {
	name       string // after the '@'
	guid       uint64
	created    time.Time
	createtxg  uint64
	used, refd int64
	userrefs   int
}

// listSnaps lists the snapshots of one dataset, oldest first, with one
// `zfs get` (zfs-fuse has no `list -p`).
func (d *Driver) listSnaps(ctx context.Context, ds string) ([]snapInfo, error) {
	snaps, _, err := d.listSnapsFence(ctx, ds)
	return snaps, err
}

// listSnapsEpoch is listSnaps with the dataset's fence (its hc:epoch) from
// the same command: a receive needs both, and each zfs command is 15-90 ms
// on zfs-fuse while a move's clients wait.
func (d *Driver) listSnapsEpoch(ctx context.Context, ds string) ([]snapInfo, storage.Epoch, error) {
	snaps, fence, err := d.listSnapsFence(ctx, ds)
	if err != nil {
		return nil, storage.Epoch{}, err
	}
	epoch, err := storage.ParseEpoch(fence)
	if err != nil {
		return nil, storage.Epoch{}, err
	}
	return snaps, epoch, nil
}

// listSnapsFence is listSnaps with the dataset's hc:epoch as zfs gives it
// (parsed only by those who need it: a bad value fails them, not every
// listing).
func (d *Driver) listSnapsFence(ctx context.Context, ds string) ([]snapInfo, string, error) {
	out, err := d.command(ctx, "list snapshots", "zfs", []string{"get", "-Hp", "-r", "-d", "1", "-o", "name,property,value",
		"guid,creation,createtxg,used,referenced,userrefs," + propEpoch, ds}, nil, nil)
	if err != nil {
		return nil, "", err
	}
	fence := ""
	byName := map[string]*snapInfo{}
	var order []*snapInfo
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Split(line, "\t")
		if len(f) == 3 && f[0] == ds && f[1] == propEpoch {
			fence = f[2]
			continue
		}
		if len(f) != 3 || !strings.HasPrefix(f[0], ds+"@") {
			continue
		}
		name := strings.TrimPrefix(f[0], ds+"@")
		s := byName[name]
		if s == nil {
			s = &snapInfo{name: name}
			byName[name] = s
			order = append(order, s)
		}
		n, _ := strconv.ParseUint(f[2], 10, 64)
		switch f[1] {
		case "guid":
			s.guid = n
		case "creation":
			s.created = time.Unix(int64(n), 0).UTC()
		case "createtxg":
			s.createtxg = n
		case "used":
			s.used = int64(n)
		case "referenced":
			s.refd = int64(n)
		case "userrefs":
			s.userrefs = int(n)
		}
	}
	out2 := make([]snapInfo, 0, len(order))
	for _, s := range order {
		out2 = append(out2, *s)
	}
	sort.SliceStable(out2, func(i, j int) bool { return out2[i].createtxg < out2[j].createtxg })
	return out2, fence, nil
}

func toSnapshot(s snapInfo) (storage.Snapshot, bool) {
	name, err := storage.ParseSnapName(s.name)
	if err != nil {
		return storage.Snapshot{}, false
	}
	return storage.Snapshot{Name: name, GUID: s.guid, Created: s.created, UsedBytes: s.used, ReferencedBytes: s.refd, Holds: s.userrefs}, true
}

func (d *Driver) snapshots(ctx context.Context, ds string) ([]storage.Snapshot, error) {
	infos, err := d.listSnaps(ctx, ds)
	if err != nil {
		return nil, err
	}
	out := make([]storage.Snapshot, 0, len(infos))
	for _, s := range infos {
		if snap, ok := toSnapshot(s); ok {
			out = append(out, snap)
		}
	}
	return out, nil
}

func (d *Driver) findSnapshot(ctx context.Context, ds string, snap storage.SnapName) (storage.Snapshot, error) {
	snaps, err := d.snapshots(ctx, ds)
	if err != nil {
		return storage.Snapshot{}, err
	}
	for _, s := range snaps {
		if s.Name == snap {
			return s, nil
		}
	}
	return storage.Snapshot{}, fmt.Errorf("%w: snapshot %s@%s", storage.ErrNoDataset, ds, snap)
}

// ListSnapshots implements storage.Driver.
func (d *Driver) ListSnapshots(ctx context.Context, site storage.Site) ([]storage.Snapshot, error) {
	ds, _, err := d.locate(ctx, site)
	if err != nil {
		return nil, err
	}
	return d.snapshots(ctx, ds)
}

// Fence implements storage.Driver.
func (d *Driver) Fence(ctx context.Context, site storage.Site, epoch storage.Epoch) error {
	if err := checkSite(site); err != nil {
		return err
	}
	defer d.lock(site)()
	ds, _, err := d.locate(ctx, site)
	if err != nil {
		return err
	}
	return d.raiseEpoch(ctx, ds, epoch)
}

func (d *Driver) epochOf(ctx context.Context, ds string) (storage.Epoch, error) {
	v, err := d.getProp(ctx, ds, propEpoch)
	if err != nil {
		return storage.Epoch{}, err
	}
	return storage.ParseEpoch(v)
}

func (d *Driver) raiseEpoch(ctx context.Context, ds string, epoch storage.Epoch) error {
	seen, err := d.epochOf(ctx, ds)
	if err != nil {
		return err
	}
	if !seen.Less(epoch) {
		return nil
	}
	return d.setProp(ctx, ds, propEpoch, epoch.String())
}

// Epoch implements storage.Driver.
func (d *Driver) Epoch(ctx context.Context, site storage.Site) (storage.Epoch, error) {
	ds, _, err := d.locate(ctx, site)
	if err != nil {
		return storage.Epoch{}, err
	}
	return d.epochOf(ctx, ds)
}

func (d *Driver) isSending(key string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sending[key] > 0
}

func (d *Driver) markSending(keys ...string) func() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, k := range keys {
		d.sending[k]++
	}
	return func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		for _, k := range keys {
			if d.sending[k]--; d.sending[k] <= 0 {
				delete(d.sending, k)
			}
		}
	}
}

// EstimateSendSize implements storage.Driver. It asks `zfs send -nvP`
// (OpenZFS); where that does not exist (zfs-fuse) it estimates from space
// accounting: the growth from from to to, plus what from holds alone (the
// blocks overwritten after it).
func (d *Driver) EstimateSendSize(ctx context.Context, site storage.Site, from, to storage.SnapName) (int64, error) {
	if err := checkSnap(to); err != nil {
		return 0, err
	}
	ds, _, err := d.locate(ctx, site)
	if err != nil {
		return 0, err
	}
	d.mu.Lock()
	noDryRun := d.sendNoDryRun
	d.mu.Unlock()
	if !noDryRun {
		args := []string{"send", "-nvP"}
		if !from.IsZero() {
			args = append(args, "-i", ds+"@"+from.String())
		}
		args = append(args, ds+"@"+to.String())
		out, err := d.command(ctx, "estimate", "zfs", args, nil, nil)
		if err == nil {
			for _, line := range strings.Split(string(out), "\n") {
				f := strings.Fields(line)
				if len(f) == 2 && f[0] == "size" {
					if n, err := strconv.ParseInt(f[1], 10, 64); err == nil {
						return n, nil
					}
				}
			}
		}
		if errors.Is(err, errUnsupported) {
			d.mu.Lock()
			d.sendNoDryRun = true
			d.mu.Unlock()
		} else if err != nil {
			return 0, err
		}
	}
	snaps, err := d.snapshots(ctx, ds) // one listing for both ends
	if err != nil {
		return 0, err
	}
	var toSnap, fromSnap *storage.Snapshot
	for i := range snaps {
		switch snaps[i].Name {
		case to:
			toSnap = &snaps[i]
		case from:
			fromSnap = &snaps[i]
		}
	}
	if toSnap == nil {
		return 0, fmt.Errorf("%w: snapshot %s@%s", storage.ErrNoDataset, ds, to)
	}
	if from.IsZero() {
		return toSnap.ReferencedBytes + estimateOverheadBytes, nil
	}
	if fromSnap == nil {
		return 0, fmt.Errorf("%w: snapshot %s@%s", storage.ErrNoDataset, ds, from)
	}
	return max(0, toSnap.ReferencedBytes-fromSnap.ReferencedBytes) + fromSnap.UsedBytes + estimateOverheadBytes, nil
}

type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// Send implements storage.Driver: the envelope, then `zfs send [-i]`.
func (d *Driver) Send(ctx context.Context, site storage.Site, from, to storage.SnapName, w io.Writer) error {
	if err := checkSnap(to); err != nil {
		return err
	}
	ds, _, err := d.locate(ctx, site)
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	snaps, err := d.snapshots(ctx, ds)
	if err != nil {
		return err
	}
	var h storage.StreamHeader
	h.Kind = Kind
	found := false
	for _, s := range snaps {
		if s.Name == to {
			h.To = storage.StreamSnap{Name: s.Name.String(), GUID: s.GUID, Created: s.Created}
			found = true
		}
		if !from.IsZero() && s.Name == from {
			h.From = &storage.StreamSnap{Name: s.Name.String(), GUID: s.GUID, Created: s.Created}
		}
	}
	if !found {
		return fmt.Errorf("send: %w: snapshot %s@%s", storage.ErrNoDataset, site, to)
	}
	if !from.IsZero() && h.From == nil {
		return fmt.Errorf("send: %w: snapshot %s@%s", storage.ErrNoDataset, site, from)
	}
	keys := []string{ds + "@" + to.String()}
	args := []string{"send"}
	if !from.IsZero() {
		keys = append(keys, ds+"@"+from.String())
		args = append(args, "-i", ds+"@"+from.String())
	}
	args = append(args, ds+"@"+to.String())
	defer d.markSending(keys...)()
	cw := ctxWriter{ctx, w}
	if err := storage.WriteStreamHeader(cw, h); err != nil {
		return fmt.Errorf("send %s@%s: %w", site, to, err)
	}
	started := time.Now()
	if _, err := d.command(ctx, "send", "zfs", args, nil, cw); err != nil {
		return fmt.Errorf("send %s@%s: %w", site, to, err)
	}
	d.log.Info("sent", "site", site.String(), "snapshot", to.String(), "base", from.String(), "duration", time.Since(started))
	return nil
}

// checkEmpty refuses (ErrNoCommonSnapshot) a full stream onto a dataset that
// has any snapshot or any file in its live tree.
func (d *Driver) checkEmpty(ctx context.Context, ds string) error {
	snaps, err := d.listSnaps(ctx, ds)
	if err != nil {
		return err
	}
	if len(snaps) > 0 {
		return fmt.Errorf("%w: full stream for a dataset that has %d snapshot(s) (e.g. %s)", storage.ErrNoCommonSnapshot, len(snaps), snaps[0].name)
	}
	if err := d.mount(ctx, ds); err != nil {
		return err
	}
	mp, err := d.getProp(ctx, ds, "mountpoint")
	if err != nil {
		return err
	}
	ents, err := os.ReadDir(mp)
	if err != nil {
		return fmt.Errorf("full stream onto %s: reading its live tree: %w", ds, err)
	}
	if len(ents) > 0 {
		return fmt.Errorf("%w: full stream for a dataset without snapshots whose live tree is not empty (%d entries); stash it first", storage.ErrNoCommonSnapshot, len(ents))
	}
	return nil
}

// Receive implements storage.Driver.
func (d *Driver) Receive(ctx context.Context, site storage.Site, epoch storage.Epoch, base storage.SnapName, r io.Reader) (storage.Snapshot, error) {
	if err := checkSite(site); err != nil {
		return storage.Snapshot{}, err
	}
	defer d.lock(site)()
	snap, err := d.receiveLocked(ctx, site, epoch, base, r)
	if err != nil {
		return storage.Snapshot{}, fmt.Errorf("receive %s: %w", site, err)
	}
	return snap, nil
}

func (d *Driver) receiveLocked(ctx context.Context, site storage.Site, epoch storage.Epoch, base storage.SnapName, r io.Reader) (storage.Snapshot, error) {
	ds, ro, err := d.locate(ctx, site)
	exists := err == nil
	if err != nil && !errors.Is(err, storage.ErrNoDataset) {
		return storage.Snapshot{}, err
	}
	var have []storage.Snapshot
	var all []string // every snapshot, safety snapshots included
	// seen is the dataset's fence. A stream carries no properties, so the
	// receive leaves it as it was (and Fence waits for the site's lock).
	var seen storage.Epoch
	if exists {
		infos, fence, err := d.listSnapsEpoch(ctx, ds)
		if err != nil {
			return storage.Snapshot{}, err
		}
		seen = fence
		if err := storage.CheckFence(seen, epoch); err != nil {
			return storage.Snapshot{}, err
		}
		if !ro {
			return storage.Snapshot{}, storage.ErrNotReplica
		}
		for _, s := range infos {
			all = append(all, s.name)
			if snap, ok := toSnapshot(s); ok {
				have = append(have, snap)
			}
		}
	} else {
		ds = d.replicaDS(site)
	}
	br := bufio.NewReaderSize(r, 256<<10)
	h, err := storage.ReadStreamHeader(br, Kind)
	if err != nil {
		return storage.Snapshot{}, err
	}
	if err := storage.CheckStreamBase(h, base, have, exists); err != nil {
		return storage.Snapshot{}, err
	}
	if err := storage.CheckSafetyAfterBase(h, all); err != nil {
		return storage.Snapshot{}, err
	}
	fullOntoEmpty := exists && h.From == nil
	if fullOntoEmpty {
		// A dataset without snapshots (a Stash of everything left it):
		// `receive -F` replaces it, so it must hold nothing, not even a
		// snapshot the names above skip (a safety snapshot) or unsnapshotted files.
		if err := d.checkEmpty(ctx, ds); err != nil {
			return storage.Snapshot{}, err
		}
	}
	for _, s := range have {
		if s.Name.String() == h.To.Name {
			return storage.Snapshot{}, fmt.Errorf("snapshot %s: %w", h.To.Name, storage.ErrExists)
		}
	}
	if fullOntoEmpty {
		return d.receiveReplacing(ctx, site, ds, epoch, h.To.Name, br)
	}
	args := []string{"receive"}
	if exists {
		// -F only rolls back what changed since base (nothing on a read-only
		// replica); divergent snapshots were refused above, never destroyed.
		args = append(args, "-F")
	}
	args = append(args, ds)
	started := time.Now()
	// Into a dataset that exists (the site's lock is held) a receive
	// moves nothing; otherwise it creates the replica.
	if _, err := d.commandCall(ctx, call{op: "receive", movesNothing: exists}, "zfs", args, br, nil); err != nil {
		return storage.Snapshot{}, err
	}
	if !exists {
		d.knowLocation(site, ds, true)
	}
	if seen.Less(epoch) {
		if err := d.setProp(ctx, ds, propEpoch, epoch.String()); err != nil {
			return storage.Snapshot{}, err
		}
	}
	name, _ := storage.ParseSnapName(h.To.Name)
	snap, err := d.findSnapshot(ctx, ds, name)
	if err != nil {
		return storage.Snapshot{}, err
	}
	d.log.Info("received", "site", site.String(), "snapshot", h.To.Name, "base", base.String(), "epoch", epoch.String(), "duration", time.Since(started))
	return snap, nil
}

// receiveReplacing receives a full stream in place of an empty dataset (what
// a Stash of everything leaves). zfs-fuse fails `receive -F` of a full
// stream onto an existing mounted filesystem now and then with "I/O error",
// so the stream goes into the site's transient swap dataset instead (a new
// filesystem, the path every first replication takes), which then takes the
// empty dataset's place with the site's quota and fence. A failure before
// the swap leaves the empty dataset as it was; a leftover swap holds only a
// copy of what the sender still has.
func (d *Driver) receiveReplacing(ctx context.Context, site storage.Site, ds string, epoch storage.Epoch, snapName string, r io.Reader) (storage.Snapshot, error) {
	quota, seen, err := d.siteSettings(ctx, ds)
	if err != nil {
		return storage.Snapshot{}, err
	}
	if seen.Less(epoch) {
		seen = epoch
	}
	swap := d.swapDS(site)
	if ok, err := d.datasetExists(ctx, swap); err != nil {
		return storage.Snapshot{}, err
	} else if ok {
		if err := d.destroyDS(ctx, swap, true); err != nil {
			return storage.Snapshot{}, err
		}
	}
	started := time.Now()
	if _, err := d.command(ctx, "receive", "zfs", []string{"receive", swap}, r, nil); err != nil {
		if ok, _ := d.datasetExists(ctx, swap); ok {
			_ = d.destroyDS(ctx, swap, true)
		}
		return storage.Snapshot{}, err
	}
	// The fence goes on the new copy before the old one goes away, so no
	// moment exists where the site's dataset lacks it.
	if err := d.siteProps(ctx, swap, true, quota, seen); err != nil {
		return storage.Snapshot{}, err
	}
	if err := d.destroyDS(ctx, ds, false); err != nil {
		return storage.Snapshot{}, err
	}
	if err := d.rename(ctx, swap, ds); err != nil {
		return storage.Snapshot{}, err
	}
	name, _ := storage.ParseSnapName(snapName)
	snap, err := d.findSnapshot(ctx, ds, name)
	if err != nil {
		return storage.Snapshot{}, err
	}
	d.log.Info("received in place of an empty dataset", "site", site.String(), "snapshot", snapName, "epoch", epoch.String(), "duration", time.Since(started))
	return snap, nil
}
