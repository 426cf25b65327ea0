package zfsdriver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	gozfs "github.com/mistifyio/go-zfs/v3"

	"github.com/hybridcluster/hybridcluster/runtime/storage"
)

// Rollback implements storage.Driver.
func (d *Driver) Rollback(ctx context.Context, site storage.Site, to storage.SnapName, stash storage.StashName) error {
	if err := checkSnap(to); err != nil {
		return err
	}
	if stash.IsZero() {
		return fmt.Errorf("%w: empty stash name", storage.ErrInvalidName)
	}
	if err := checkSite(site); err != nil {
		return err
	}
	defer d.lock(site)()
	ds, _, err := d.locate(ctx, site)
	if err != nil {
		return fmt.Errorf("rollback: %w", err)
	}
	if _, err := d.findSnapshot(ctx, ds, to); err != nil {
		return fmt.Errorf("rollback: %w", err)
	}
	if ok, err := d.datasetExists(ctx, d.stashDS(site, stash)); err != nil {
		return err
	} else if ok {
		return fmt.Errorf("rollback %s: stash %s: %w", site, stash, storage.ErrExists)
	}
	existing, err := d.listSnaps(ctx, ds)
	if err != nil {
		return fmt.Errorf("rollback %s: %w", site, err)
	}
	safety, err := storage.SafetySnapshotName(stash, func(name string) bool {
		return slices.ContainsFunc(existing, func(s snapInfo) bool { return s.name == name })
	})
	if err != nil {
		return fmt.Errorf("rollback %s: %w", site, err)
	}
	if err := d.snapshotDS(ctx, ds, safety, false); err != nil {
		return fmt.Errorf("rollback %s: safety snapshot: %w", site, err)
	}
	if err := d.stashLocked(ctx, site, to, stash); err != nil {
		return fmt.Errorf("rollback %s: %w", site, err)
	}
	d.log.Info("rolled back", "site", site.String(), "snapshot", to.String(), "stash", stash.String())
	return nil
}

// Stash implements storage.Driver.
// A zero keep stashes everything (stashAllLocked).
func (d *Driver) Stash(ctx context.Context, site storage.Site, keep storage.SnapName, stash storage.StashName) error {
	if stash.IsZero() {
		return fmt.Errorf("%w: empty stash name", storage.ErrInvalidName)
	}
	if err := checkSite(site); err != nil {
		return err
	}
	defer d.lock(site)()
	if keep.IsZero() {
		return d.stashAllLocked(ctx, site, stash)
	}
	return d.stashLocked(ctx, site, keep, stash)
}

// checkNotBusy refuses (ErrBusy) when a snapshot of ds is being sent or
// mounted as a view: the whole dataset is about to move.
func (d *Driver) checkNotBusy(ctx context.Context, site storage.Site, ds string) error {
	snaps, err := d.listSnaps(ctx, ds)
	if err != nil {
		return err
	}
	for _, s := range snaps {
		if d.isSending(ds + "@" + s.name) {
			return fmt.Errorf("%s: snapshot %s is being sent: %w", site, s.name, storage.ErrBusy)
		}
	}
	views := d.viewParent(site)
	if ok, err := d.datasetExists(ctx, views); err != nil {
		return err
	} else if ok {
		out, err := d.command(ctx, "list views", "zfs", []string{"list", "-H", "-o", "name", "-r", "-d", "1", views}, nil, nil)
		if err != nil {
			return err
		}
		for _, line := range strings.Fields(string(out)) {
			if name, ok := strings.CutPrefix(line, views+"/"); ok {
				return fmt.Errorf("%s: snapshot %s is mounted: %w", site, name, storage.ErrBusy)
			}
		}
	}
	return nil
}

// moveAside renames the site's whole dataset ds to the stash dataset
// stashDS and marks it as a stash (read-only, no quota, stash time). It is
// not a clone (origin "-"): that is how a stash of everything is told from
// a stash of what came after a base.
func (d *Driver) moveAside(ctx context.Context, site storage.Site, ds, stashDS string) error {
	if err := d.ensureFilesystem(ctx, d.stashParent(site)); err != nil {
		return err
	}
	if err := d.rename(ctx, ds, stashDS); err != nil {
		return err
	}
	for _, kv := range [][2]string{{"readonly", "on"}, {"atime", "off"}, {"quota", "none"}, {propStashed, strconv.FormatInt(time.Now().UnixNano(), 10)}} {
		if err := d.setProp(ctx, stashDS, kv[0], kv[1]); err != nil {
			return err
		}
	}
	// A mounted stash keeps the site's dataset busy for zfs-fuse's renames
	// (it can be a clone of the site's snapshots); nothing reads a stash
	// through its mountpoint.
	return d.unmount(ctx, stashDS)
}

// siteProps sets what belongs to the site rather than to its history on the
// site's dataset: quota, read-only setting, and (raised to) epoch.
func (d *Driver) siteProps(ctx context.Context, ds string, ro bool, quota string, epoch storage.Epoch) error {
	// (atime=off comes from the sites/ or replicas/ parent.)
	for _, kv := range [][2]string{{"quota", quotaValueString(quota)}, {"readonly", onOff(ro)}} {
		if err := d.setProp(ctx, ds, kv[0], kv[1]); err != nil {
			return err
		}
	}
	return d.raiseEpoch(ctx, ds, epoch)
}

// stashAllLocked puts the whole dataset (every snapshot and the live state)
// aside as stash and leaves an empty dataset without snapshots in its place,
// with the site's quota, read-only setting and epoch, ready for a full
// receive. Nothing is copied or destroyed.
func (d *Driver) stashAllLocked(ctx context.Context, site storage.Site, stash storage.StashName) error {
	ds, ro, err := d.locate(ctx, site)
	if err != nil {
		return fmt.Errorf("stash: %w", err)
	}
	if err := d.checkNotBusy(ctx, site, ds); err != nil {
		return fmt.Errorf("stash %s: %w", site, err)
	}
	stashDS := d.stashDS(site, stash)
	if ok, err := d.datasetExists(ctx, stashDS); err != nil {
		return err
	} else if ok {
		return fmt.Errorf("stash %s/%s: %w", site, stash, storage.ErrExists)
	}
	quota, epoch, err := d.siteSettings(ctx, ds)
	if err != nil {
		return err
	}
	snaps, err := d.listSnaps(ctx, ds)
	if err != nil {
		return err
	}
	if err := d.moveAside(ctx, site, ds, stashDS); err != nil {
		return fmt.Errorf("stash %s/%s: %w", site, stash, err)
	}
	props := map[string]string{"quota": quotaValueString(quota), "readonly": onOff(ro), "atime": "off"}
	err = d.gozfs(ctx, "create", []string{"create", "-o", "quota=" + props["quota"], "-o", "readonly=" + props["readonly"], "-o", "atime=" + props["atime"], ds}, false, nil, func() error {
		_, err := gozfs.CreateFilesystem(ds, props)
		return err
	})
	if err == nil {
		err = d.raiseEpoch(ctx, ds, epoch)
	}
	if err != nil {
		// The stash holds everything; the site must not be left without a
		// dataset that carries its fence.
		return fmt.Errorf("stash %s/%s: recreating the empty dataset: %w", site, stash, err)
	}
	d.log.Info("stashed everything", "site", site.String(), "stash", stash.String(), "snapshots", len(snaps))
	return nil
}

// swapIn makes newDS take the place of the site's dataset ds, which moves
// to stashDS; newDS is then promoted so it owns the shared snapshots, and
// the settings that belong to the site (quota, epoch, read-only) follow it.
func (d *Driver) swapIn(ctx context.Context, site storage.Site, ds string, ro bool, newDS, stashDS string) error {
	quota, epoch, err := d.siteSettings(ctx, ds)
	if err != nil {
		return err
	}
	if err := d.ensureFilesystem(ctx, d.stashParent(site)); err != nil {
		return err
	}
	// zfs-fuse reports the origin as busy while a fresh clone of it is
	// mounted: unmount both before renaming. The site's stashes can be such
	// clones (a restore leaves the displaced history as a clone of the
	// site's snapshot); nothing reads a stash through its mountpoint.
	if err := d.unmount(ctx, newDS); err != nil {
		return err
	}
	if err := d.unmountStashes(ctx, site); err != nil {
		return err
	}
	if err := d.rename(ctx, ds, stashDS); err != nil {
		return err
	}
	if err := d.rename(ctx, newDS, ds); err != nil {
		// Put the site back where it was; nothing was lost either way.
		_ = d.rename(ctx, stashDS, ds)
		return err
	}
	if _, err := d.command(ctx, "promote", "zfs", []string{"promote", ds}, nil, nil); err != nil {
		return err
	}
	// (atime=off comes from the sites/ or replicas/ parent.)
	props := [][2]string{{"quota", quotaValueString(quota)}, {"readonly", onOff(ro)}}
	for _, kv := range props {
		if err := d.setProp(ctx, ds, kv[0], kv[1]); err != nil {
			return err
		}
	}
	if err := d.raiseEpoch(ctx, ds, epoch); err != nil {
		return err
	}
	for _, kv := range [][2]string{{"readonly", "on"}, {"atime", "off"}, {"quota", "none"}, {propStashed, strconv.FormatInt(time.Now().UnixNano(), 10)}} {
		if err := d.setProp(ctx, stashDS, kv[0], kv[1]); err != nil {
			return err
		}
	}
	// A mounted stash keeps the site's dataset busy for zfs-fuse's renames
	// (it can be a clone of the site's snapshots); nothing reads a stash
	// through its mountpoint.
	return d.unmount(ctx, stashDS)
}

// unmountStashes unmounts every stash of the site (see swapIn).
func (d *Driver) unmountStashes(ctx context.Context, site storage.Site) error {
	parent := d.stashParent(site)
	if ok, err := d.datasetExists(ctx, parent); err != nil || !ok {
		return err
	}
	out, err := d.command(ctx, "list stash", "zfs", []string{"list", "-H", "-o", "name", "-r", "-d", "1", parent}, nil, nil)
	if err != nil {
		return err
	}
	for _, name := range strings.Fields(string(out)) {
		if strings.HasPrefix(name, parent+"/") {
			if err := d.unmount(ctx, name); err != nil {
				return err
			}
		}
	}
	return nil
}

// siteSettings reads what belongs to the site rather than to its history:
// its quota (as zfs prints it) and its epoch (the fence).
func (d *Driver) siteSettings(ctx context.Context, ds string) (string, storage.Epoch, error) {
	quota, err := d.getProp(ctx, ds, "quota")
	if err != nil {
		return "", storage.Epoch{}, err
	}
	epoch, err := d.epochOf(ctx, ds)
	if err != nil {
		return "", storage.Epoch{}, err
	}
	return quota, epoch, nil
}

func quotaValueString(v string) string {
	if v == "" || v == "0" || v == "-" {
		return "none"
	}
	return v
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func (d *Driver) stashLocked(ctx context.Context, site storage.Site, keep storage.SnapName, stash storage.StashName) error {
	ds, ro, err := d.locate(ctx, site)
	if err != nil {
		return err
	}
	snaps, err := d.listSnaps(ctx, ds)
	if err != nil {
		return err
	}
	idx := -1
	for i, s := range snaps {
		if s.name == keep.String() {
			idx = i
		}
	}
	if idx < 0 {
		return fmt.Errorf("stash: %w: snapshot %s@%s", storage.ErrNoDataset, site, keep)
	}
	for _, s := range snaps[idx+1:] {
		if d.isSending(ds + "@" + s.name) {
			return fmt.Errorf("stash %s: snapshot %s is being sent: %w", site, s.name, storage.ErrBusy)
		}
	}
	stashDS := d.stashDS(site, stash)
	if ok, err := d.datasetExists(ctx, stashDS); err != nil {
		return err
	} else if ok {
		return fmt.Errorf("stash %s/%s: %w", site, stash, storage.ErrExists)
	}
	swap := d.swapDS(site)
	if ok, err := d.datasetExists(ctx, swap); err != nil {
		return err
	} else if ok {
		// A leftover of an interrupted stash: it is a clone of a snapshot
		// that still exists, so it holds nothing unique.
		if err := d.destroyDS(ctx, swap, true); err != nil {
			return err
		}
	}
	props := map[string]string{"readonly": onOff(ro), "atime": "off"}
	err = d.gozfs(ctx, "clone", []string{"clone", "-o", "readonly=" + props["readonly"], ds + "@" + keep.String(), swap}, false, nil, func() error {
		_, err := (&gozfs.Dataset{Name: ds + "@" + keep.String(), Type: gozfs.DatasetSnapshot}).Clone(swap, props)
		return err
	})
	if err != nil {
		return err
	}
	if err := d.swapIn(ctx, site, ds, ro, swap, stashDS); err != nil {
		return fmt.Errorf("stash %s/%s: %w", site, stash, err)
	}
	d.log.Info("stashed", "site", site.String(), "stash", stash.String(), "base", keep.String(), "snapshots", len(snaps)-idx-1)
	return nil
}

// ListStash implements storage.Driver.
func (d *Driver) ListStash(ctx context.Context, site storage.Site) ([]storage.Stash, error) {
	ds, _, err := d.locate(ctx, site)
	if err != nil {
		return nil, err
	}
	parent := d.stashParent(site)
	if ok, err := d.datasetExists(ctx, parent); err != nil || !ok {
		return nil, err
	}
	out, err := d.command(ctx, "list stash", "zfs", []string{"get", "-Hp", "-r", "-d", "1", "-o", "name,property,value", "origin," + propStashed, parent}, nil, nil)
	if err != nil {
		return nil, err
	}
	type row struct{ origin, stashed string }
	rows := map[string]*row{}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 3 || !strings.HasPrefix(f[0], parent+"/") || strings.Contains(f[0], "@") {
			continue
		}
		r := rows[f[0]]
		if r == nil {
			r = &row{}
			rows[f[0]] = r
			names = append(names, f[0])
		}
		switch f[1] {
		case "origin":
			r.origin = f[2]
		case propStashed:
			r.stashed = f[2]
		}
	}
	var stashes []storage.Stash
	for _, full := range names {
		name, err := storage.ParseStashName(strings.TrimPrefix(full, parent+"/"))
		if err != nil {
			continue
		}
		r := rows[full]
		st := storage.Stash{Name: name, Site: site}
		if base, ok := strings.CutPrefix(r.origin, ds+"@"); ok {
			st.Base, _ = storage.ParseSnapNameOrEmpty(base)
		}
		if ns, err := strconv.ParseInt(r.stashed, 10, 64); err == nil {
			st.Created = time.Unix(0, ns).UTC()
		}
		infos, err := d.listSnaps(ctx, full)
		if err != nil {
			return nil, err
		}
		for _, s := range infos {
			st.Snapshots = append(st.Snapshots, storage.StashedSnapshot{Name: s.name, GUID: s.guid, Created: s.created})
		}
		stashes = append(stashes, st)
	}
	sort.SliceStable(stashes, func(i, j int) bool { return stashes[i].Created.Before(stashes[j].Created) })
	return stashes, nil
}

// RestoreStash implements storage.Driver.
func (d *Driver) RestoreStash(ctx context.Context, site storage.Site, stash, displaced storage.StashName) error {
	if stash.IsZero() || displaced.IsZero() {
		return fmt.Errorf("%w: empty stash name", storage.ErrInvalidName)
	}
	if err := checkSite(site); err != nil {
		return err
	}
	defer d.lock(site)()
	ds, ro, err := d.locate(ctx, site)
	if err != nil {
		return err
	}
	stashDS := d.stashDS(site, stash)
	if ok, err := d.datasetExists(ctx, stashDS); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("restore %s: stash %s: %w", site, stash, storage.ErrNoDataset)
	}
	origin, err := d.getProp(ctx, stashDS, "origin")
	if err != nil {
		return err
	}
	whole := origin == "" || origin == "-"
	if !whole && !strings.HasPrefix(origin, ds+"@") {
		return fmt.Errorf("restore %s: stash %s branches from %s, not from the site's dataset", site, stash, origin)
	}
	displacedDS := d.stashDS(site, displaced)
	if ok, err := d.datasetExists(ctx, displacedDS); err != nil {
		return err
	} else if ok {
		return fmt.Errorf("restore %s: stash %s: %w", site, displaced, storage.ErrExists)
	}
	if whole {
		err = d.restoreWholeLocked(ctx, site, ds, ro, stashDS, displacedDS)
	} else {
		err = d.swapIn(ctx, site, ds, ro, stashDS, displacedDS)
	}
	if err != nil {
		return fmt.Errorf("restore %s: %w", site, err)
	}
	d.log.Info("stash restored", "site", site.String(), "stash", stash.String(), "displaced", displaced.String(), "whole", whole)
	return nil
}

// restoreWholeLocked restores a stash of everything: the site's whole
// dataset moves aside to displacedDS, the stash takes its place and gets the
// site's quota, read-only setting and epoch.
func (d *Driver) restoreWholeLocked(ctx context.Context, site storage.Site, ds string, ro bool, stashDS, displacedDS string) error {
	if err := d.checkNotBusy(ctx, site, ds); err != nil {
		return err
	}
	quota, epoch, err := d.siteSettings(ctx, ds)
	if err != nil {
		return err
	}
	if err := d.moveAside(ctx, site, ds, displacedDS); err != nil {
		return err
	}
	if err := d.rename(ctx, stashDS, ds); err != nil {
		// Put the site back where it was; nothing was lost either way.
		if berr := d.rename(ctx, displacedDS, ds); berr == nil {
			_ = d.siteProps(ctx, ds, ro, quota, epoch)
		}
		return err
	}
	if _, err := d.command(ctx, "inherit", "zfs", []string{"inherit", propStashed, ds}, nil, nil); err != nil {
		return err
	}
	return d.siteProps(ctx, ds, ro, quota, epoch)
}

// Prune implements storage.Driver.
func (d *Driver) Prune(ctx context.Context, site storage.Site, policy storage.RetentionPolicy, protected []storage.SnapName, now time.Time) ([]storage.SnapName, error) {
	if err := checkSite(site); err != nil {
		return nil, err
	}
	defer d.lock(site)()
	ds, _, err := d.locate(ctx, site)
	if err != nil {
		return nil, err
	}
	snaps, err := d.snapshots(ctx, ds)
	if err != nil {
		return nil, err
	}
	_, drop := policy.Select(snaps, now)
	keep := map[string]bool{}
	for _, p := range protected {
		keep[p.String()] = true
	}
	// Snapshots with clones (stash bases, mounted views) cannot go.
	for _, parent := range []string{d.stashParent(site), d.viewParent(site)} {
		if ok, err := d.datasetExists(ctx, parent); err != nil {
			return nil, err
		} else if !ok {
			continue
		}
		out, err := d.command(ctx, "list clones", "zfs", []string{"get", "-Hp", "-r", "-d", "1", "-o", "value", "origin", parent}, nil, nil)
		if err != nil {
			return nil, err
		}
		for _, o := range strings.Fields(string(out)) {
			if base, ok := strings.CutPrefix(o, ds+"@"); ok {
				keep[base] = true
			}
		}
	}
	var pruned []storage.SnapName
	for _, s := range drop {
		if keep[s.Name.String()] || s.Holds > 0 || d.isSending(ds+"@"+s.Name.String()) {
			continue
		}
		err := d.destroyDS(ctx, ds+"@"+s.Name.String(), false)
		if errors.Is(err, storage.ErrBusy) {
			continue // held or in use after all: pruning never forces
		}
		if err != nil {
			return pruned, err
		}
		pruned = append(pruned, s.Name)
	}
	if len(pruned) > 0 {
		d.log.Info("pruned", "site", site.String(), "snapshots", len(pruned))
	}
	return pruned, nil
}

// Hold implements storage.Driver (`zfs hold`, which go-zfs lacks).
func (d *Driver) Hold(ctx context.Context, site storage.Site, snap storage.SnapName, tag storage.HoldTag) error {
	return d.holdOrRelease(ctx, "hold", site, snap, tag)
}

// Release implements storage.Driver.
func (d *Driver) Release(ctx context.Context, site storage.Site, snap storage.SnapName, tag storage.HoldTag) error {
	return d.holdOrRelease(ctx, "release", site, snap, tag)
}

func (d *Driver) holdOrRelease(ctx context.Context, verb string, site storage.Site, snap storage.SnapName, tag storage.HoldTag) error {
	if err := checkSnap(snap); err != nil {
		return err
	}
	if tag.String() == "" {
		return fmt.Errorf("%w: empty hold tag", storage.ErrInvalidName)
	}
	ds, _, err := d.locate(ctx, site)
	if err != nil {
		return err
	}
	if _, err := d.command(ctx, verb, "zfs", []string{verb, tag.String(), ds + "@" + snap.String()}, nil, nil); err != nil {
		return fmt.Errorf("%s %s@%s %s: %w", verb, site, snap, tag, err)
	}
	return nil
}

// MountReadOnly implements storage.Driver: a read-only clone (zfs-fuse has
// no .zfs/snapshot directory).
func (d *Driver) MountReadOnly(ctx context.Context, site storage.Site, snap storage.SnapName) (string, error) {
	if err := checkSnap(snap); err != nil {
		return "", err
	}
	ds, _, err := d.locate(ctx, site)
	if err != nil {
		return "", err
	}
	if _, err := d.findSnapshot(ctx, ds, snap); err != nil {
		return "", err
	}
	if err := d.ensureFilesystem(ctx, d.viewParent(site)); err != nil {
		return "", err
	}
	defer d.lock(site)()
	view := d.viewDS(site, snap)
	if ok, err := d.datasetExists(ctx, view); err != nil {
		return "", err
	} else if ok {
		// Mounted already: one more user.
		users, err := d.mountUsers(ctx, view)
		if err != nil {
			return "", err
		}
		if err := d.setProp(ctx, view, propMountUsers, strconv.Itoa(users+1)); err != nil {
			return "", err
		}
		return d.getProp(ctx, view, "mountpoint")
	}
	props := map[string]string{"readonly": "on", "atime": "off", propMountUsers: "1"}
	err = d.gozfs(ctx, "clone", []string{"clone", "-o", "readonly=on", "-o", "atime=off", "-o", propMountUsers + "=1", ds + "@" + snap.String(), view}, false, nil, func() error {
		_, err := (&gozfs.Dataset{Name: ds + "@" + snap.String(), Type: gozfs.DatasetSnapshot}).Clone(view, props)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("mount %s@%s: %w", site, snap, err)
	}
	return d.getProp(ctx, view, "mountpoint")
}

// mountUsers reads a view's count of users; a view without one (made by
// an older version) has one.
func (d *Driver) mountUsers(ctx context.Context, view string) (int, error) {
	v, err := d.getProp(ctx, view, propMountUsers)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 1, nil
	}
	return n, nil
}

// ListMounts implements storage.Driver.
func (d *Driver) ListMounts(ctx context.Context, site storage.Site) ([]storage.Mount, error) {
	if err := checkSite(site); err != nil {
		return nil, err
	}
	if _, _, err := d.locate(ctx, site); err != nil {
		return nil, err
	}
	views := d.viewParent(site)
	if ok, err := d.datasetExists(ctx, views); err != nil || !ok {
		return nil, err
	}
	out, err := d.command(ctx, "list views", "zfs", []string{"list", "-H", "-o", "name", "-r", "-d", "1", views}, nil, nil)
	if err != nil {
		return nil, err
	}
	var mounts []storage.Mount
	for _, line := range strings.Fields(string(out)) {
		name, ok := strings.CutPrefix(line, views+"/")
		if !ok {
			continue
		}
		snap, err := storage.ParseSnapName(name)
		if err != nil {
			continue
		}
		users, err := d.mountUsers(ctx, line)
		if err != nil {
			return nil, err
		}
		path, err := d.getProp(ctx, line, "mountpoint")
		if err != nil {
			return nil, err
		}
		mounts = append(mounts, storage.Mount{Snapshot: snap, Path: path, Users: users})
	}
	sort.Slice(mounts, func(i, j int) bool { return mounts[i].Snapshot.String() < mounts[j].Snapshot.String() })
	return mounts, nil
}

// Unmount implements storage.Driver.
func (d *Driver) Unmount(ctx context.Context, site storage.Site, snap storage.SnapName) error {
	if err := checkSnap(snap); err != nil {
		return err
	}
	if err := checkSite(site); err != nil {
		return err
	}
	defer d.lock(site)()
	view := d.viewDS(site, snap)
	if ok, err := d.datasetExists(ctx, view); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("unmount %s@%s: %w: not mounted", site, snap, storage.ErrNoDataset)
	}
	users, err := d.mountUsers(ctx, view)
	if err != nil {
		return err
	}
	if users > 1 {
		return d.setProp(ctx, view, propMountUsers, strconv.Itoa(users-1))
	}
	return d.destroyDS(ctx, view, false)
}

// Usage implements storage.Driver.
func (d *Driver) Usage(ctx context.Context, site storage.Site) (storage.Usage, error) {
	ds, _, err := d.locate(ctx, site)
	if err != nil {
		return storage.Usage{}, err
	}
	var info *gozfs.Dataset
	err = d.gozfs(ctx, "usage", []string{"list", "-Hp", "-o", "...", ds}, false, nil, func() error {
		var err error
		info, err = gozfs.GetDataset(ds)
		return err
	})
	if err != nil {
		return storage.Usage{}, err
	}
	return storage.Usage{
		UsedBytes:       int64(info.Used),
		ReferencedBytes: int64(info.Referenced),
		QuotaBytes:      int64(info.Quota),
		AvailableBytes:  int64(info.Avail),
	}, nil
}

// Free implements storage.Driver: what the root can still take.
func (d *Driver) Free(ctx context.Context) (int64, error) {
	v, err := d.getProp(ctx, d.root, "available")
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(v, 10, 64)
}

// Size implements storage.Driver: what the root and its descendants hold
// and what it can still take.
func (d *Driver) Size(ctx context.Context) (int64, error) {
	v, err := d.getProp(ctx, d.root, "used,available")
	if err != nil {
		return 0, err
	}
	var size int64
	lines := strings.Fields(v)
	if len(lines) != 2 {
		return 0, fmt.Errorf("zfs get used,available %s: %q", d.root, v)
	}
	for _, l := range lines {
		n, err := strconv.ParseInt(l, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("zfs get used,available %s: %w", d.root, err)
		}
		size += n
	}
	return size, nil
}
