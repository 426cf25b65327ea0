package storage

import "errors"

// Operating errors of every driver. They are wrapped with the operation and
// the names involved; test them with errors.Is.
var (
	// ErrNoDataset: the site's dataset (or the named snapshot or stash) does not exist.
	ErrNoDataset = errors.New("no such dataset")
	// ErrNoCommonSnapshot: the receiver lacks the stream's base snapshot (or has a
	// different snapshot of that name), or a full stream would overwrite existing history.
	ErrNoCommonSnapshot = errors.New("no common snapshot")
	// ErrDiverged: the receiver has snapshots newer than the stream's base. They
	// must be stashed (never destroyed) before the stream can be applied.
	ErrDiverged = errors.New("receiver has diverged from the base snapshot")
	// ErrOutOfSpace: a quota or the pool is full.
	ErrOutOfSpace = errors.New("out of space")
	// ErrFenced: the stream's epoch is older than the highest epoch the dataset has seen.
	ErrFenced = errors.New("fenced: stream epoch is older than the dataset's epoch")
	// ErrExists: the dataset, snapshot or stash already exists.
	ErrExists = errors.New("already exists")
	// ErrInvalidName: a site, snapshot, stash or hold name failed validation.
	ErrInvalidName = errors.New("invalid name")
	// ErrReadOnly: a write operation (snapshot of new data, rollback) was asked of a
	// read-only replica.
	ErrReadOnly = errors.New("dataset is read-only")
	// ErrBadStream: the stream is not a stream of this driver, or is corrupt or cut.
	ErrBadStream = errors.New("bad stream")
	// ErrBusy: the snapshot or dataset is in use (held, mounted, being sent).
	ErrBusy = errors.New("busy")
)

// ErrNotReplica: a stream was sent to a writable (master) dataset. Receiving
// would throw away its unsnapshotted writes; demote it with SetReadOnly first.
var ErrNotReplica = errors.New("dataset is writable; only read-only replicas receive streams")
