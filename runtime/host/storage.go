package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/storage"
)

const (
	// siteOpsQueuedMax bounds the storage requests waiting per site; past it
	// a request is answered CODE_BUSY at once (the actors retry on their
	// schedule).
	siteOpsQueuedMax = 64
	// storageOpsConcurrentMax bounds storage requests running at once on
	// this node across sites (each site's run one at a time, in order).
	storageOpsConcurrentMax = 4
	// sendsConcurrentMax bounds outgoing snapshot streams; past it a send is
	// answered CODE_BUSY at once.
	sendsConcurrentMax = 4
	// storageOpTimeout bounds one local storage request (streams are bounded
	// by Config.StreamTimeout instead).
	storageOpTimeout = 2 * time.Minute
)

// ChangeDetector is implemented by drivers that can tell whether a dataset
// changed since its newest snapshot (OpenZFS: the written property). For a
// driver that cannot tell, the host compares the live tree with what it
// was when the newest snapshot was taken (treeChanged), erring towards
// taking the snapshot.
type ChangeDetector interface {
	Changed(ctx context.Context, site storage.Site) (bool, error)
}

type storageJob struct {
	from core.Address
	req  *m.StorageRequest
	proc *m.ProcessRequest // instead of req: a Process effect, kept in the site's order
	// gen: proc's place among the site's Process effects (see
	// startFailures); a retry runs only while no later one was asked.
	gen   uint64
	retry bool
}

type siteQueue struct {
	jobs    []storageJob
	running bool
}

// storageExec carries out Storage effects: one FIFO per site (a demotion's
// last snapshot must precede its role change), a bounded number of sites
// at once, streams in their own goroutines.
type storageExec struct {
	h      *Host
	mu     sync.Mutex
	closed bool
	sites  map[string]*siteQueue
	slots  chan struct{}
	sends  chan struct{}
	wg     sync.WaitGroup
}

func newStorageExec(h *Host) *storageExec {
	return &storageExec{h: h, sites: map[string]*siteQueue{},
		slots: make(chan struct{}, storageOpsConcurrentMax), sends: make(chan struct{}, sendsConcurrentMax)}
}

// submitProcess queues a Process effect behind the site's storage work.
// At the queue bound it is carried out at once, out of order, rather than
// lost (a stop must never be skipped).
func (s *storageExec) submitProcess(req *m.ProcessRequest) {
	gen := s.h.notStarted.asked(req.Site)
	if full := s.enqueue(req.Site, storageJob{proc: req, gen: gen}); full {
		s.h.log.Warn("storage queue full: process request run out of order", "site", req.Site, "node", s.h.node, "start", req.Start)
		s.h.runProcess(s.h.ctx, req, gen, false)
	}
}

// retryStart queues the start of a site whose start failed again, in the
// site's order (at the queue bound it waits for the next try).
func (s *storageExec) retryStart(req *m.ProcessRequest, gen uint64) {
	_ = s.enqueue(req.Site, storageJob{proc: req, gen: gen, retry: true})
}

func (s *storageExec) submit(from core.Address, req *m.StorageRequest) {
	if full := s.enqueue(req.Site, storageJob{from: from, req: req}); full {
		s.h.log.Warn("storage queue full: request refused", "site", req.Site, "node", s.h.node, "op", req.Op.String(), "bound", siteOpsQueuedMax)
		s.reply(from, result(req, m.Code_CODE_BUSY, "storage queue of the site is full"))
	}
}

// enqueue appends a job to its site's FIFO (starting the site's drain if
// idle); it reports full, without queueing, at siteOpsQueuedMax. After
// close it drops the job.
func (s *storageExec) enqueue(site string, job storageJob) (full bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	q := s.sites[site]
	if q == nil {
		q = &siteQueue{}
		s.sites[site] = q
	}
	if len(q.jobs) >= siteOpsQueuedMax {
		return true
	}
	q.jobs = append(q.jobs, job)
	if !q.running {
		q.running = true
		s.wg.Add(1)
		go s.drain(site, q)
	}
	return false
}

func (s *storageExec) drain(site string, q *siteQueue) {
	defer s.wg.Done()
	for {
		s.mu.Lock()
		if len(q.jobs) == 0 || s.closed {
			q.running = false
			if s.sites[site] == q {
				delete(s.sites, site)
			}
			s.mu.Unlock()
			return
		}
		job := q.jobs[0]
		q.jobs = q.jobs[1:]
		s.mu.Unlock()
		s.run(job)
	}
}

func (s *storageExec) run(job storageJob) {
	if job.proc != nil {
		s.h.runProcess(s.h.ctx, job.proc, job.gen, job.retry)
		return
	}
	if job.req.Op == m.StorageOp_STORAGE_OP_SEND {
		select {
		case s.sends <- struct{}{}:
		default:
			s.reply(job.from, result(job.req, m.Code_CODE_BUSY, "outgoing stream bound reached"))
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.sends }()
			s.reply(job.from, s.h.push(job.req))
		}()
		return
	}
	select {
	case s.slots <- struct{}{}:
	case <-s.h.ctx.Done():
		return
	}
	defer func() { <-s.slots }()
	started := time.Now()
	ctx, cancel := context.WithTimeout(s.h.ctx, storageOpTimeout)
	if job.req.Op == m.StorageOp_STORAGE_OP_SNAPSHOT && !job.req.IfChanged {
		s.h.quiesce(ctx, job.req.Site)
	}
	res := s.h.storageLocal(ctx, job.req)
	cancel()
	res.TookMs = time.Since(started).Milliseconds()
	s.reply(job.from, res)
}

func (s *storageExec) reply(to core.Address, res *m.StorageResult) {
	s.h.send(to, res)
}

// close refuses new work, cancels running work through the host's context
// and waits up to wait for it.
func (s *storageExec) close(wait time.Duration) {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(wait):
		s.h.log.Warn("storage work still running at shutdown", "node", s.h.node, "waited", wait)
	}
}

func result(req *m.StorageRequest, code m.Code, detail string) *m.StorageResult {
	return &m.StorageResult{Op: req.Op, Site: req.Site, OpId: req.OpId, Code: code, Detail: detail,
		StreamId: req.StreamId, ToNode: req.ToNode}
}

// codeOf maps a driver or stream error onto the code the actors expect.
func codeOf(err error) m.Code {
	switch {
	case err == nil:
		return m.Code_CODE_OK
	case errors.Is(err, storage.ErrFenced):
		return m.Code_CODE_FENCED
	case errors.Is(err, storage.ErrDiverged), errors.Is(err, storage.ErrNotReplica):
		return m.Code_CODE_DIVERGED
	case errors.Is(err, storage.ErrNoCommonSnapshot):
		return m.Code_CODE_NO_COMMON_SNAPSHOT
	case errors.Is(err, storage.ErrOutOfSpace):
		return m.Code_CODE_OUT_OF_SPACE
	case errors.Is(err, storage.ErrInvalidName):
		return m.Code_CODE_INVALID
	case errors.Is(err, storage.ErrBusy):
		return m.Code_CODE_BUSY
	}
	return m.Code_CODE_FAILED
}

// storageLocal carries out a request that does not leave the node.
func (h *Host) storageLocal(ctx context.Context, req *m.StorageRequest) *m.StorageResult {
	res := result(req, m.Code_CODE_OK, "")
	fail := func(err error) *m.StorageResult {
		res.Code, res.Detail = codeOf(err), err.Error()
		h.log.Warn("storage request failed", "site", req.Site, "node", h.node, "op", req.Op.String(), "err", err)
		return res
	}
	d := h.driver
	site, err := storage.ParseSite(req.Site)
	if err != nil {
		return fail(err)
	}
	switch req.Op {
	case m.StorageOp_STORAGE_OP_CREATE:
		err := d.Create(ctx, site, int64(req.QuotaBytes))
		if errors.Is(err, storage.ErrExists) {
			// The disk kept a copy the actor did not know of: make it the master's.
			err = d.SetReadOnly(ctx, site, false)
		}
		if err == nil {
			err = h.fence(ctx, site, req.Epoch)
		}
		if err == nil {
			err = h.catalog.put(req.Site, m.Role_ROLE_MASTER, req.Spec)
		}
		if err != nil {
			return fail(fmt.Errorf("create %s: %w", site, err))
		}
	case m.StorageOp_STORAGE_OP_SET_ROLE:
		if ok, err := d.Exists(ctx, site); err != nil || !ok {
			res.Code, res.Detail = m.Code_CODE_FAILED, "no such dataset"
			if err != nil {
				res.Detail = err.Error()
			}
			return res
		}
		err := d.SetReadOnly(ctx, site, req.Role != m.Role_ROLE_MASTER)
		if err == nil {
			err = h.fence(ctx, site, req.Epoch)
		}
		if err == nil {
			err = h.catalog.put(req.Site, req.Role, req.Spec)
		}
		if err != nil {
			return fail(fmt.Errorf("set role of %s to %s: %w", site, req.Role, err))
		}
	case m.StorageOp_STORAGE_OP_SNAPSHOT:
		checkCount, checkAt := h.activity.count(req.Site), time.Now()
		if req.IfChanged && h.quiet(req.Site) {
			res.Code = m.Code_CODE_UNCHANGED
			return res
		}
		if req.IfChanged {
			var changed bool
			var err error
			if cd, ok := d.(ChangeDetector); ok {
				changed, err = cd.Changed(ctx, site)
			} else {
				changed, err = h.treeChanged(ctx, site)
			}
			if err != nil {
				return fail(fmt.Errorf("snapshot %s: changed: %w", site, err))
			}
			if !changed {
				h.checkedAt(req.Site, checkCount, checkAt)
				res.Code = m.Code_CODE_UNCHANGED
				return res
			}
		}
		name, err := storage.ParseSnapName(req.Snapshot.GetName())
		if err != nil {
			return fail(err)
		}
		var snap storage.Snapshot
		if _, ok := d.(ChangeDetector); ok {
			snap, err = d.Snapshot(ctx, site, name)
		} else {
			snap, err = h.treeSnapshot(ctx, site, name)
		}
		if errors.Is(err, storage.ErrReadOnly) {
			// A replica's tree cannot change: there is nothing to capture.
			// (A demotion's deferred last snapshot can land after its role
			// change; the actors take UNCHANGED as "nothing new".)
			res.Code, res.Detail = m.Code_CODE_UNCHANGED, "dataset is read-only"
			return res
		}
		if err != nil {
			return fail(fmt.Errorf("snapshot %s@%s: %w", site, name, err))
		}
		h.checkedAt(req.Site, checkCount, checkAt)
		ref := proto.Clone(req.Snapshot).(*m.SnapshotRef)
		ref.Bytes = uint64(max(0, snap.ReferencedBytes))
		res.Snapshot = ref
	case m.StorageOp_STORAGE_OP_STASH:
		keep, err := storage.ParseSnapNameOrEmpty(req.Snapshot.GetName())
		if err != nil {
			return fail(err)
		}
		stash, err := storage.ParseStashName(req.StashName)
		if err != nil {
			return fail(err)
		}
		err = d.Stash(ctx, site, keep, stash)
		if err == nil {
			err = d.SetReadOnly(ctx, site, true)
		}
		if err == nil {
			err = h.catalog.put(req.Site, m.Role_ROLE_REPLICA, nil)
		}
		if err != nil {
			return fail(fmt.Errorf("stash %s into %s: %w", site, stash, err))
		}
		res.Snapshot, res.Detail = req.Snapshot, req.StashName
	case m.StorageOp_STORAGE_OP_ROLLBACK:
		to, err := storage.ParseSnapName(req.Snapshot.GetName())
		if err != nil {
			return fail(err)
		}
		stash, err := storage.ParseStashName(req.StashName)
		if err != nil {
			return fail(err)
		}
		err = d.Rollback(ctx, site, to, stash)
		if err == nil {
			err = h.fence(ctx, site, req.Epoch)
		}
		if err != nil {
			return fail(fmt.Errorf("rollback %s to %s: %w", site, to, err))
		}
		res.Detail = req.StashName
	case m.StorageOp_STORAGE_OP_RESTORE_STASH:
		stash, err := storage.ParseStashName(req.StashName)
		if err != nil {
			return fail(err)
		}
		displaced, err := storage.ParseStashName(req.DisplacedStash)
		if err != nil {
			return fail(err)
		}
		err = d.RestoreStash(ctx, site, stash, displaced)
		if err == nil {
			err = h.fence(ctx, site, req.Epoch)
		}
		var snaps []storage.Snapshot
		if err == nil {
			snaps, err = d.ListSnapshots(ctx, site)
		}
		if err != nil {
			return fail(fmt.Errorf("restore stash %s of %s: %w", stash, site, err))
		}
		// The restored history as the actors name it (as at boot): a
		// snapshot whose name is not one of theirs (a rollback's safety
		// snapshot) stays on disk but out of the list.
		res.Snapshots = snapshotRefs(snaps)
		res.Detail = req.DisplacedStash
	case m.StorageOp_STORAGE_OP_DELETE:
		stashed, err := h.deleteCopy(ctx, site, req)
		if err != nil {
			return fail(fmt.Errorf("delete %s: %w", site, err))
		}
		if stashed {
			res.Detail = req.StashName
		}
	case m.StorageOp_STORAGE_OP_MOUNT, m.StorageOp_STORAGE_OP_UNMOUNT:
		snap, err := storage.ParseSnapName(req.Snapshot.GetName())
		if err != nil {
			return fail(err)
		}
		if req.Op == m.StorageOp_STORAGE_OP_UNMOUNT {
			if err := d.Unmount(ctx, site, snap); err != nil {
				return fail(fmt.Errorf("unmount %s@%s: %w", site, snap, err))
			}
			if err := h.catalog.setMount(req.Site, snap.String(), false); err != nil {
				h.log.Warn("catalog: unmount not recorded", "site", req.Site, "node", h.node, "snapshot", snap.String(), "err", err)
			}
			break
		}
		path, err := d.MountReadOnly(ctx, site, snap)
		if err != nil {
			return fail(fmt.Errorf("mount %s@%s: %w", site, snap, err))
		}
		// Recorded, so that a restart re-establishes it (mountsAtBoot).
		if err := h.catalog.setMount(req.Site, snap.String(), true); err != nil {
			_ = d.Unmount(context.WithoutCancel(ctx), site, snap)
			return fail(fmt.Errorf("mount %s@%s: catalog: %w", site, snap, err))
		}
		res.MountPath = path
	case m.StorageOp_STORAGE_OP_PRUNE:
		// The actor chose what goes; the driver's retention with nothing
		// kept by age, everything else protected, destroys exactly that
		// (and still never a held, sent, mounted or newest snapshot).
		snaps, err := d.ListSnapshots(ctx, site)
		if err != nil {
			return fail(fmt.Errorf("prune %s: %w", site, err))
		}
		var protected []storage.SnapName
		for _, s := range snaps {
			if !slices.Contains(req.Names, s.Name.String()) {
				protected = append(protected, s.Name)
			}
		}
		if _, err := d.Prune(ctx, site, storage.RetentionPolicy{}, protected, time.Now()); err != nil {
			return fail(fmt.Errorf("prune %s: %w", site, err))
		}
	default:
		res.Code, res.Detail = m.Code_CODE_INVALID, "unsupported op "+req.Op.String()
	}
	return res
}

// deleteCopy carries out STORAGE_OP_DELETE: the copy (if the dataset
// exists) is stashed whole, made read-only and fenced at the tombstone, and
// the tombstone is recorded in the catalog (also where no dataset exists).
// It reports whether it stashed a dataset. A stash of that name made by an
// attempt that stopped short (a crash before the catalog was written) is
// taken as done when the dataset holds no snapshot.
func (h *Host) deleteCopy(ctx context.Context, site storage.Site, req *m.StorageRequest) (bool, error) {
	stash, err := storage.ParseStashName(req.StashName)
	if err != nil {
		return false, err
	}
	d := h.driver
	exists, err := d.Exists(ctx, site)
	if err != nil {
		return false, err
	}
	if exists {
		err = d.Stash(ctx, site, storage.SnapName{}, stash)
		if errors.Is(err, storage.ErrExists) {
			if snaps, lerr := d.ListSnapshots(ctx, site); lerr == nil && len(snaps) == 0 {
				err = nil
			}
		}
		if err == nil {
			err = d.SetReadOnly(ctx, site, true)
		}
		if err == nil {
			err = h.fence(ctx, site, req.Epoch)
		}
		if err != nil {
			return false, err
		}
	}
	return exists, h.catalog.putTombstone(site.String(), req.Epoch)
}

func (h *Host) fence(ctx context.Context, site storage.Site, e *m.Epoch) error {
	if e == nil {
		return nil
	}
	return h.driver.Fence(ctx, site, toStorageEpoch(e))
}

// push carries out STORAGE_OP_SEND: the stream client brings the receiver
// up to the snapshot; the receiver's dataset actor gets Received, the
// sender's the StorageResult (by the caller).
func (h *Host) push(req *m.StorageRequest) *m.StorageResult {
	res := result(req, m.Code_CODE_OK, "")
	res.Snapshot = req.Snapshot
	started := time.Now()
	client := h.clients[req.ToNode]
	site, err := storage.ParseSite(req.Site)
	var to, base storage.SnapName
	if err == nil {
		to, err = storage.ParseSnapName(req.Snapshot.GetName())
	}
	if err == nil {
		base, err = storage.ParseSnapNameOrEmpty(req.Base)
	}
	if err == nil && client == nil {
		err = fmt.Errorf("no stream endpoint for node %q", req.ToNode)
	}
	if err != nil {
		res.Code, res.Detail = codeOf(err), err.Error()
		return res
	}
	ctx, cancel := context.WithTimeout(h.ctx, h.cfg.StreamTimeout)
	defer cancel()
	// The receiver's answer to the offer named its newest snapshot (the
	// base): stream at once; the client asks for its state only if the
	// receiver refuses that base.
	pushed, err := client.PushFrom(ctx, site, toStorageEpoch(req.Epoch), base, to, nil)
	res.TookMs = time.Since(started).Milliseconds()
	res.StreamBase = pushed.Base.String()
	res.Bytes = uint64(max(0, pushed.SentBytes))
	receiver := core.DatasetAddr(req.ToNode, req.Site)
	if err == nil {
		h.log.Debug("snapshot sent", "site", req.Site, "to", req.ToNode, "snapshot", to.String(), "base", pushed.Base.String(),
			"full", pushed.Base.IsZero(), "bytes", pushed.SentBytes, "took_ms", res.TookMs)
	}
	if err != nil {
		res.Code, res.Detail = codeOf(err), err.Error()
		h.log.Warn("stream failed", "site", req.Site, "node", h.node, "to", req.ToNode, "snapshot", to.String(),
			"epoch", core.EpochString(req.Epoch), "err", err)
		if res.Code == m.Code_CODE_DIVERGED {
			// The receiving side learns what its disk holds, as it would
			// from its own failed receive.
			rec := &m.Received{Site: req.Site, StreamId: req.StreamId, FromNode: h.node, Code: m.Code_CODE_DIVERGED, Detail: err.Error()}
			if errors.Is(err, storage.ErrDiverged) {
				// Unless its newest listed snapshot is the base itself: then
				// what diverges is unlisted (a rollback's safety snapshot
				// that a restored stash brought back), and without a
				// snapshot the receiver marks its copy dirty and stashes it
				// on the next offer instead of accepting the same stream.
				if _, remote, err := client.RemoteState(ctx, site); err == nil && len(remote) > 0 && remote[len(remote)-1].Name != pushed.Base {
					rec.Snapshot = snapshotRef(remote[len(remote)-1])
				}
			}
			h.send(receiver, rec)
		}
		return res
	}
	h.send(receiver, &m.Received{Site: req.Site, StreamId: req.StreamId, FromNode: h.node, Snapshot: req.Snapshot,
		Epoch: req.Epoch, Code: m.Code_CODE_OK, Spec: req.Spec})
	return res
}

// noteDatasetInput keeps the catalog's spec of a replica current from the
// streams it receives (the driver does not keep specs).
func (h *Host) noteDatasetInput(site string, in proto.Message) {
	if r, ok := in.(*m.Received); ok && r.Code == m.Code_CODE_OK && r.Spec != nil {
		if err := h.catalog.setSpec(site, r.Spec); err != nil {
			h.log.Warn("catalog: spec not recorded", "site", site, "node", h.node, "err", err)
		}
	}
}

// bootDatasets reads what this node's disk holds, for NodeBoot.
func (h *Host) bootDatasets(ctx context.Context) ([]*m.DatasetBoot, error) {
	var out []*m.DatasetBoot
	for _, name := range h.catalog.sites() {
		site, err := storage.ParseSite(name)
		if err != nil {
			continue
		}
		ok, err := h.driver.Exists(ctx, site)
		if err != nil {
			return nil, err
		}
		rec := h.catalog.get(name)
		if !ok && rec.role == m.Role_ROLE_DELETED {
			// A tombstone without a dataset (this node held no copy).
			out = append(out, &m.DatasetBoot{Info: &m.DatasetInfo{Site: name, Node: h.node, Role: rec.role,
				Epoch: rec.tombstone, Spec: rec.spec}})
			continue
		}
		if !ok {
			continue
		}
		epoch, err := h.driver.Epoch(ctx, site)
		if err != nil {
			return nil, err
		}
		snaps, err := h.driver.ListSnapshots(ctx, site)
		if err != nil {
			return nil, err
		}
		stashes, err := h.driver.ListStash(ctx, site)
		if err != nil {
			return nil, err
		}
		b := &m.DatasetBoot{Info: &m.DatasetInfo{Site: name, Node: h.node, Role: rec.role, Epoch: toMsgEpoch(epoch), Spec: rec.spec}}
		if rec.role == m.Role_ROLE_DELETED && rec.tombstone != nil {
			b.Info.Epoch = rec.tombstone // what the copy reports (storage keeps the fence)
		}
		b.Snapshots = snapshotRefs(snaps)
		b.Mounts = h.mountsAtBoot(ctx, site, rec.mounts, snaps)
		if n := len(b.Snapshots); n > 0 {
			b.Info.Latest = b.Snapshots[n-1]
			b.Info.Bytes = b.Info.Latest.Bytes
		}
		b.Info.Snapshots = uint32(len(b.Snapshots))
		for _, st := range stashes {
			b.Stashes = append(b.Stashes, st.Name.String())
		}
		b.Info.Stashes = uint32(len(b.Stashes))
		out = append(out, b)
	}
	return out, nil
}

// mountsAtBoot makes the disk's read-only mounts of site what the catalog
// says an admin asked for, before the actors start: an admin's mount is
// kept (mounted again if it is gone), every other use is a leftover of a
// run that stopped before unmounting (a change check, a mount whose
// catalog record was not written) and is unmounted. A recorded mount of a
// snapshot that no longer exists is forgotten. It returns the admin's
// mounts (snapshot -> directory). Failures are logged, not fatal: the
// node boots with the mounts it could establish, and says which.
func (h *Host) mountsAtBoot(ctx context.Context, site storage.Site, wanted []string, snaps []storage.Snapshot) map[string]string {
	out := map[string]string{}
	have, err := h.driver.ListMounts(ctx, site)
	if err != nil {
		h.log.Warn("mounts not checked at boot", "site", site.String(), "node", h.node, "err", err)
		return nil
	}
	for _, mt := range have {
		keep := 0
		if slices.Contains(wanted, mt.Snapshot.String()) {
			keep = 1
			out[mt.Snapshot.String()] = mt.Path
		}
		for range mt.Users - keep {
			if err := h.driver.Unmount(ctx, site, mt.Snapshot); err != nil {
				h.log.Warn("leftover mount not removed", "site", site.String(), "node", h.node, "snapshot", mt.Snapshot.String(), "err", err)
				break
			}
		}
		if mt.Users > keep {
			h.log.Info("leftover mount removed", "site", site.String(), "node", h.node, "snapshot", mt.Snapshot.String(), "uses", mt.Users-keep)
		}
	}
	for _, name := range wanted {
		if _, ok := out[name]; ok {
			continue
		}
		snap, err := storage.ParseSnapName(name)
		if err == nil && !slices.ContainsFunc(snaps, func(s storage.Snapshot) bool { return s.Name == snap }) {
			err = fmt.Errorf("%w: the snapshot is gone", storage.ErrNoDataset)
		}
		var path string
		if err == nil {
			path, err = h.driver.MountReadOnly(ctx, site, snap)
		}
		if err != nil {
			h.log.Warn("mount not re-established at boot: forgotten", "site", site.String(), "node", h.node, "snapshot", name, "err", err)
			if err := h.catalog.setMount(site.String(), name, false); err != nil {
				h.log.Warn("catalog: unmount not recorded", "site", site.String(), "node", h.node, "snapshot", name, "err", err)
			}
			continue
		}
		out[name] = path
		h.log.Info("mount re-established at boot", "site", site.String(), "node", h.node, "snapshot", name, "path", path)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func toStorageEpoch(e *m.Epoch) storage.Epoch {
	return storage.Epoch{Term: e.GetTerm(), Node: e.GetNode()}
}

func toMsgEpoch(e storage.Epoch) *m.Epoch {
	if e.IsZero() {
		return nil
	}
	return &m.Epoch{Term: e.Term, Node: e.Node}
}

// snapshotRefs lists the snapshots on disk that the actors named (those
// whose name is "e<term>-<node>-s<seq>"), in the driver's order.
func snapshotRefs(snaps []storage.Snapshot) []*m.SnapshotRef {
	var out []*m.SnapshotRef
	for _, s := range snaps {
		if ref := snapshotRef(s); ref.Epoch != nil {
			out = append(out, ref)
		}
	}
	return out
}

// snapshotRef describes a snapshot on disk as the actors name it; a name
// that is not "e<term>-<node>-s<seq>" gives a ref without epoch.
func snapshotRef(s storage.Snapshot) *m.SnapshotRef {
	ref := &m.SnapshotRef{Name: s.Name.String(), TakenMs: s.Created.UnixMilli(), Bytes: uint64(max(0, s.ReferencedBytes))}
	if e, seq, ok := parseSnapshotName(ref.Name); ok {
		ref.Epoch, ref.Seq = e, seq
	}
	return ref
}

// parseSnapshotName inverts core.SnapshotName.
func parseSnapshotName(name string) (*m.Epoch, uint64, bool) {
	rest, ok := strings.CutPrefix(name, "e")
	if !ok {
		return nil, 0, false
	}
	termText, rest, ok := strings.Cut(rest, "-")
	if !ok {
		return nil, 0, false
	}
	i := strings.LastIndex(rest, "-s")
	if i <= 0 {
		return nil, 0, false
	}
	term, err1 := strconv.ParseUint(termText, 10, 64)
	seq, err2 := strconv.ParseUint(rest[i+2:], 10, 64)
	if err1 != nil || err2 != nil {
		return nil, 0, false
	}
	return &m.Epoch{Term: term, Node: rest[:i]}, seq, true
}

// receivingDriver is the driver as the stream server sees it: a receive
// records the site in the catalog first, so that a restart boots the
// replica even if its Received never reached the actor.
type receivingDriver struct {
	storage.Driver
	catalog *catalog
	// stopping: the node hands its sites off before it stops; it takes no
	// copy meanwhile (a move to it would be handed on again, or lost
	// with it).
	stopping *atomic.Bool
}

// errStopping refuses a receive on a node that is stopping.
var errStopping = errors.New("node is stopping")

func (r *receivingDriver) Receive(ctx context.Context, site storage.Site, epoch storage.Epoch, base storage.SnapName, in io.Reader) (storage.Snapshot, error) {
	if r.stopping != nil && r.stopping.Load() {
		return storage.Snapshot{}, fmt.Errorf("receive %s: %w", site, errStopping)
	}
	if err := r.catalog.ensureReplica(site.String()); err != nil {
		return storage.Snapshot{}, fmt.Errorf("receive %s: catalog: %w", site, err)
	}
	return r.Driver.Receive(ctx, site, epoch, base, in)
}
