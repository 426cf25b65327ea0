// Package storage is the node runtime's view of site datasets: one dataset
// per site, snapshots, incremental streams between nodes, stashes of
// divergent history, retention, holds and fencing.
//
// Two drivers implement Driver: zfsdriver (ZFS through go-zfs/v3, the
// production driver) and portable (plain directories, the embedded default
// for machines without ZFS). Both pass the same conformance suite in
// storagetest.
package storage

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"
)

// SafetySnapshotPrefix begins the name of every snapshot Rollback takes of
// the state it rolls away. It deliberately fails SnapName validation (':' is
// refused), so a safety snapshot can never collide with a snapshot the
// cluster names, and listings (ListSnapshots) leave it out. Older versions
// named every safety snapshot exactly "hc:safety".
const SafetySnapshotPrefix = "hc:safety"

// safetyNamesMax bounds the search for a free safety snapshot name when the
// plain one is taken (only when a stash name is reused after its stash was
// restored); at the bound Rollback refuses with ErrExists.
const safetyNamesMax = 100

// SafetySnapshotName is the name of the safety snapshot of the rollback
// that stashes into stash. It is unique per stash because restoring a
// rollback's stash brings its safety snapshot back into the site's history,
// where a later rollback must not collide with it. taken reports whether a
// name is already used by a snapshot of the site; when the plain name is
// taken a numbered one is chosen.
func SafetySnapshotName(stash StashName, taken func(name string) bool) (string, error) {
	name := SafetySnapshotPrefix + ":" + stash.String()
	for i := 2; taken(name); i++ {
		if i > safetyNamesMax {
			return "", fmt.Errorf("%w: safety snapshot names for stash %s up to %s are taken", ErrExists, stash, name)
		}
		name = fmt.Sprintf("%s:%s.%d", SafetySnapshotPrefix, stash, i)
	}
	return name, nil
}

// IsSafetySnapshot reports whether a snapshot name is a rollback's safety
// snapshot (of this or an older version).
func IsSafetySnapshot(name string) bool {
	return strings.HasPrefix(name, SafetySnapshotPrefix)
}

// Snapshot describes one snapshot of a dataset.
type Snapshot struct {
	Name SnapName
	// GUID identifies the snapshot's content across nodes: a received
	// snapshot has the GUID of the snapshot that was sent. Two snapshots with
	// the same name and different GUIDs are different histories.
	GUID    uint64
	Created time.Time
	// UsedBytes is the space only this snapshot holds (0 when it shares
	// everything); ReferencedBytes is the size of the tree it captures.
	UsedBytes       int64
	ReferencedBytes int64
	// Holds counts the holds on the snapshot; a held snapshot is never pruned.
	Holds int
}

// StashedSnapshot is a snapshot inside a stash. Its name is a plain string
// because a stash may hold a safety snapshot (SafetySnapshotName).
type StashedSnapshot struct {
	Name    string
	GUID    uint64
	Created time.Time
}

// Stash is a set of divergent history kept instead of destroyed: the
// snapshots that came after Base, plus the unsnapshotted state they had.
type Stash struct {
	Name      StashName
	Site      Site
	Base      SnapName // the snapshot the site was left at; zero if none
	Created   time.Time
	Snapshots []StashedSnapshot
}

// Mount is a snapshot mounted read-only (MountReadOnly).
type Mount struct {
	Snapshot SnapName
	Path     string
	Users    int // MountReadOnly calls not yet unmounted
}

// Usage is the space a dataset takes.
type Usage struct {
	UsedBytes       int64 // dataset, snapshots and stashes' unique data
	ReferencedBytes int64 // the live tree
	QuotaBytes      int64 // 0 = none
	AvailableBytes  int64 // what can still be written
}

// Driver carries out the storage effects of the actors. Every method
// validates its input before touching disk or running a command; every error
// wraps one of the Err* values where one applies.
//
// Datasets are writable (a master's) or read-only (a replica's: readonly=on,
// because any change to a replica, even an atime update, breaks the next
// incremental receive). The ZFS driver records no atimes on either. Receive creates read-only datasets;
// SetReadOnly(false) promotes one.
type Driver interface {
	// Kind names the driver ("zfs" or "portable"). Streams of one kind can
	// only be received by a driver of the same kind.
	Kind() string

	// Create makes a new, writable, empty dataset. quotaBytes 0 means no quota.
	Create(ctx context.Context, site Site, quotaBytes int64) error
	// Destroy removes the dataset, its snapshots and its stashes.
	Destroy(ctx context.Context, site Site) error
	// Exists reports whether the site has a dataset here.
	Exists(ctx context.Context, site Site) (bool, error)
	// Mountpoint is the directory holding the site's live files.
	Mountpoint(ctx context.Context, site Site) (string, error)
	// SetQuota changes the quota (0 = none).
	SetQuota(ctx context.Context, site Site, quotaBytes int64) error
	// SetReadOnly makes the dataset a read-only replica (true) or promotes it
	// to a writable master dataset (false).
	SetReadOnly(ctx context.Context, site Site, readOnly bool) error

	// Snapshot snapshots one writable dataset.
	Snapshot(ctx context.Context, site Site, snap SnapName) (Snapshot, error)
	// SnapshotAll snapshots every writable dataset of this node under one
	// name: on ZFS one atomic recursive `zfs snapshot -r`. Every listed site
	// must exist and be writable (checked before anything is done); writable
	// sites not listed are snapshotted too. It returns the sites snapshotted.
	SnapshotAll(ctx context.Context, snap SnapName, sites []Site) ([]Site, error)
	// ListSnapshots lists the site's snapshots, oldest first, without the
	// safety snapshots of rollbacks (whose names are not SnapNames).
	ListSnapshots(ctx context.Context, site Site) ([]Snapshot, error)

	// EstimateSendSize estimates the bytes Send would write.
	EstimateSendSize(ctx context.Context, site Site, from, to SnapName) (int64, error)
	// Send writes the stream of snapshot to, incremental from from (zero =
	// full stream). Cancelling ctx stops it.
	Send(ctx context.Context, site Site, from, to SnapName, w io.Writer) error
	// Receive applies a stream made by Send to the site's dataset, creating a
	// read-only dataset for a full stream. base must be the stream's base
	// (zero for a full stream). It is atomic: on any error (a cut stream, a
	// full quota, cancellation) the dataset stays at its previous snapshot.
	// It refuses with ErrFenced a stream whose epoch is lower than the
	// dataset's, ErrDiverged when the dataset has snapshots after base,
	// ErrNoCommonSnapshot when it lacks base (or has a different snapshot of
	// that name) or a full stream meets an existing dataset that has
	// snapshots or live files. A full stream is accepted onto an existing
	// empty read-only dataset without snapshots (what Stash with a zero keep
	// leaves), after the fence check. On success the dataset's epoch is
	// raised to epoch.
	Receive(ctx context.Context, site Site, epoch Epoch, base SnapName, r io.Reader) (Snapshot, error)

	// Fence raises the highest epoch the dataset has seen (never lowers it).
	Fence(ctx context.Context, site Site, epoch Epoch) error
	// Epoch is the highest epoch the dataset has seen (zero if none).
	Epoch(ctx context.Context, site Site) (Epoch, error)

	// Rollback returns the live dataset to snapshot to. First a safety
	// snapshot (named by SafetySnapshotName, unique per stash) captures the
	// live state; then it and every snapshot after to go into a new stash
	// named stash. Nothing is destroyed. Safety snapshots are never listed
	// by ListSnapshots, but they are history: a Receive refuses
	// (ErrDiverged) when one lies after its base, as for any snapshot.
	Rollback(ctx context.Context, site Site, to SnapName, stash StashName) error
	// Stash moves every snapshot after keep, and the live state, into a new
	// stash named stash; the site is left at keep (its live files equal
	// keep's). Used to put aside divergent history before a receive.
	//
	// A zero keep stashes everything (for a full resync when the replica
	// shares no snapshot with the master): every snapshot and the live state
	// go into the stash, whose Base is zero, and the site is left as an
	// empty dataset with no snapshots that keeps its epoch (fence), quota
	// and read-only setting. A full stream (zero base) can then be received
	// onto it. Snapshots being sent or mounted make it refuse with ErrBusy.
	Stash(ctx context.Context, site Site, keep SnapName, stash StashName) error
	// ListStash lists the site's stashes, oldest first.
	ListStash(ctx context.Context, site Site) ([]Stash, error)
	// RestoreStash makes stash the site's history again. What the site had
	// after the stash's base is itself stashed as displaced, so a restore
	// destroys nothing either. The restored dataset keeps the site's
	// read-only setting and epoch. Restoring a stash of everything (zero
	// Base) displaces everything the site has (all snapshots and live state).
	RestoreStash(ctx context.Context, site Site, stash, displaced StashName) error

	// Prune destroys snapshots the retention policy does not keep, as of now.
	// It never destroys held snapshots, protected ones, the newest snapshot,
	// snapshots being sent or mounted, or a stash's base. It returns what it
	// destroyed.
	Prune(ctx context.Context, site Site, policy RetentionPolicy, protected []SnapName, now time.Time) ([]SnapName, error)
	// Hold protects a snapshot from pruning under tag (e.g. the replica that
	// needs it as its incremental base); Release removes that hold.
	Hold(ctx context.Context, site Site, snap SnapName, tag HoldTag) error
	Release(ctx context.Context, site Site, snap SnapName, tag HoldTag) error

	// MountReadOnly makes a snapshot's files readable at the returned
	// directory until Unmount. Mounts are counted: each MountReadOnly needs
	// its own Unmount, and the files stay readable until the last one.
	// They survive a restart of the node (the count is on disk).
	MountReadOnly(ctx context.Context, site Site, snap SnapName) (string, error)
	Unmount(ctx context.Context, site Site, snap SnapName) error
	// ListMounts lists the site's mounted snapshots, with their directory
	// and count of MountReadOnly calls not yet unmounted.
	ListMounts(ctx context.Context, site Site) ([]Mount, error)

	// Usage is the dataset's space; Free is the space left for new data on
	// this node; Size is the space the node's datasets have in all (what
	// they hold and Free).
	Usage(ctx context.Context, site Site) (Usage, error)
	Free(ctx context.Context) (int64, error)
	Size(ctx context.Context) (int64, error)
}
