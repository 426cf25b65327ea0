package sim

import (
	"slices"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// writeBytes is the size the simulated disk gives one client write.
const writeBytes = 4096

// blob is the immutable content of one snapshot: its parent's writes plus its own.
type blob struct {
	parent *blob
	writes []uint64
	bytes  uint64
}

func (b *blob) each(f func(w uint64)) {
	for ; b != nil; b = b.parent {
		for _, w := range b.writes {
			f(w)
		}
	}
}

// isAncestor reports whether a is b or one of b's ancestors.
func isAncestor(a, b *blob) bool {
	for ; b != nil; b = b.parent {
		if a == b {
			return true
		}
	}
	return a == nil
}

type snap struct {
	ref *m.SnapshotRef
	b   *blob
}

type stash struct {
	name string
	// base is the snapshot the copy was left at ("" and nil: none, a stash
	// of everything); the stash's snapshots come after it.
	base     string
	baseBlob *blob
	snaps    []snap
	pending  []uint64
}

// live is the content the stash's live data had: its newest snapshot (or
// its base) plus its unsnapshotted writes.
func (st *stash) live() map[uint64]bool {
	set := map[uint64]bool{}
	b := st.baseBlob
	if len(st.snaps) > 0 {
		b = st.snaps[len(st.snaps)-1].b
	}
	b.each(func(w uint64) { set[w] = true })
	for _, w := range st.pending {
		set[w] = true
	}
	return set
}

// simDataset is one copy on one simulated disk. A crash loses pending (the
// writes not yet in a snapshot); everything else survives.
type simDataset struct {
	exists  bool
	role    m.Role
	fence   *m.Epoch // persisted fence (what a restart reads back)
	spec    *m.SiteSpec
	snaps   []snap
	head    *blob // content the live dataset starts from
	pending []uint64
	stashes []stash
	// tombstone is the epoch of the site's deletion (role DELETED), kept
	// apart from the fence as the runtime's catalog does.
	tombstone *m.Epoch
	// maxEpoch is the checker's record of the highest epoch this copy ever
	// took writes or streams at; applying anything older breaks fencing.
	maxEpoch *m.Epoch
}

func (d *simDataset) latest() *snap {
	if len(d.snaps) == 0 {
		return nil
	}
	return &d.snaps[len(d.snaps)-1]
}

func (d *simDataset) find(name string) int {
	for i := len(d.snaps) - 1; i >= 0; i-- {
		if d.snaps[i].ref.Name == name {
			return i
		}
	}
	return -1
}

// contains builds the set of writes in the live dataset.
func (d *simDataset) contents() map[uint64]bool {
	set := map[uint64]bool{}
	d.head.each(func(w uint64) { set[w] = true })
	for _, w := range d.pending {
		set[w] = true
	}
	return set
}

// stashAbove puts everything after snapshot index i (-1: everything) and
// the live writes into a new stash, leaving the copy at snapshot i.
func (d *simDataset) stashAbove(name string, i int) {
	st := stash{name: name, snaps: slices.Clone(d.snaps[i+1:]), pending: d.pending}
	if i >= 0 {
		st.base, st.baseBlob = d.snaps[i].ref.Name, d.snaps[i].b
	}
	d.stashes = append(d.stashes, st)
	d.snaps = d.snaps[:i+1]
	d.pending = nil
	d.head = st.baseBlob
}

// everything is every write the copy holds anywhere: live, in a snapshot
// or in a stash.
func (d *simDataset) everything() map[uint64]bool {
	set := d.contents()
	seen := map[*blob]bool{}
	add := func(b *blob) {
		for ; b != nil && !seen[b]; b = b.parent {
			seen[b] = true
			for _, w := range b.writes {
				set[w] = true
			}
		}
	}
	for _, sn := range d.snaps {
		add(sn.b)
	}
	for _, st := range d.stashes {
		add(st.baseBlob)
		for _, sn := range st.snaps {
			add(sn.b)
		}
		for _, w := range st.pending {
			set[w] = true
		}
	}
	return set
}

func (d *simDataset) stashContents(set map[uint64]bool) {
	for _, st := range d.stashes {
		for _, s := range st.snaps {
			s.b.each(func(w uint64) { set[w] = true })
		}
		for _, w := range st.pending {
			set[w] = true
		}
	}
}

type simStore struct {
	ds map[string]*simDataset
}

func newStore() *simStore { return &simStore{ds: map[string]*simDataset{}} }

func (s *simStore) get(site string) *simDataset {
	d := s.ds[site]
	if d == nil {
		d = &simDataset{}
		s.ds[site] = d
	}
	return d
}

// crash loses what was not snapshotted.
func (s *simStore) crash() (lost int) {
	for _, d := range s.ds {
		lost += len(d.pending)
		d.pending = nil
	}
	return lost
}

func (s *simStore) boot(node string) []*m.DatasetBoot {
	var out []*m.DatasetBoot
	for _, site := range sortedKeys(s.ds) {
		d := s.ds[site]
		if !d.exists && d.role != m.Role_ROLE_DELETED {
			continue
		}
		b := &m.DatasetBoot{Info: &m.DatasetInfo{Site: site, Node: node, Role: d.role, Epoch: d.fence, Spec: d.spec}}
		if d.role == m.Role_ROLE_DELETED {
			b.Info.Epoch = d.tombstone
		}
		for _, sn := range d.snaps {
			b.Snapshots = append(b.Snapshots, sn.ref)
		}
		if l := d.latest(); l != nil {
			b.Info.Latest = l.ref
		}
		for _, st := range d.stashes {
			b.Stashes = append(b.Stashes, st.name)
		}
		out = append(out, b)
	}
	return out
}

// apply carries out a storage request that does not leave the node; it
// returns the result (the caller delays its delivery).
func (w *World) storageLocal(h *host, req *m.StorageRequest) *m.StorageResult {
	res := &m.StorageResult{Op: req.Op, Site: req.Site, OpId: req.OpId, Code: m.Code_CODE_OK}
	d := h.store.get(req.Site)
	switch req.Op {
	case m.StorageOp_STORAGE_OP_CREATE:
		if h.fullDisk {
			res.Code, res.Detail = m.Code_CODE_OUT_OF_SPACE, "disk full"
			return res
		}
		d.exists, d.role, d.spec = true, req.Role, req.Spec
		d.fence = core.MaxEpoch(d.fence, req.Epoch)
		w.noteEpoch(h, req.Site, d, req.Epoch, "activation")
	case m.StorageOp_STORAGE_OP_SET_ROLE:
		if !d.exists {
			res.Code, res.Detail = m.Code_CODE_FAILED, "no such dataset"
			return res
		}
		d.role = req.Role
		d.fence = core.MaxEpoch(d.fence, req.Epoch)
		if req.Spec != nil {
			d.spec = req.Spec
		}
		if req.Role == m.Role_ROLE_MASTER {
			w.noteEpoch(h, req.Site, d, req.Epoch, "activation")
		}
	case m.StorageOp_STORAGE_OP_SNAPSHOT:
		if !d.exists {
			res.Code, res.Detail = m.Code_CODE_FAILED, "no such dataset"
			return res
		}
		if req.IfChanged && len(d.pending) == 0 {
			res.Code = m.Code_CODE_UNCHANGED
			return res
		}
		if h.fullDisk && len(d.pending) > 0 {
			res.Code, res.Detail = m.Code_CODE_OUT_OF_SPACE, "disk full"
			return res
		}
		b := &blob{parent: d.head, writes: d.pending, bytes: uint64(len(d.pending)) * writeBytes}
		if d.head != nil {
			b.bytes += d.head.bytes
		}
		ref := &m.SnapshotRef{Name: req.Snapshot.Name, Epoch: req.Snapshot.Epoch, Seq: req.Snapshot.Seq,
			TakenMs: req.Snapshot.TakenMs, Bytes: b.bytes}
		d.snaps = append(d.snaps, snap{ref: ref, b: b})
		d.head, d.pending = b, nil
		res.Snapshot = ref
	case m.StorageOp_STORAGE_OP_STASH:
		base := req.Snapshot.GetName()
		i := -1
		if base != "" {
			i = d.find(base)
			if i < 0 {
				res.Code, res.Detail = m.Code_CODE_NO_COMMON_SNAPSHOT, "base "+base+" not here"
				return res
			}
		}
		d.stashAbove(req.StashName, i)
		d.role = m.Role_ROLE_REPLICA
		res.Snapshot = req.Snapshot
		res.Detail = req.StashName
		w.stashes++
	case m.StorageOp_STORAGE_OP_ROLLBACK:
		i := d.find(req.Snapshot.GetName())
		if i < 0 {
			res.Code, res.Detail = m.Code_CODE_INVALID, "no snapshot "+req.Snapshot.GetName()
			return res
		}
		// What is rolled away, later snapshots and the live changes (the
		// safety snapshot), goes to a stash.
		d.stashAbove(req.StashName, i)
		d.fence = core.MaxEpoch(d.fence, req.Epoch)
		w.noteEpoch(h, req.Site, d, req.Epoch, "rollback")
		res.Detail = req.StashName
		w.stashes++
	case m.StorageOp_STORAGE_OP_RESTORE_STASH:
		// The stash becomes the history again; what the copy has after the
		// stash's base is itself stashed (nothing destroyed).
		si := slices.IndexFunc(d.stashes, func(st stash) bool { return st.name == req.StashName })
		if si < 0 {
			res.Code, res.Detail = m.Code_CODE_FAILED, "no stash "+req.StashName
			return res
		}
		st := d.stashes[si]
		i := -1
		if st.base != "" {
			if i = d.find(st.base); i < 0 {
				res.Code, res.Detail = m.Code_CODE_NO_COMMON_SNAPSHOT, "base "+st.base+" of stash "+st.name+" not here"
				return res
			}
		}
		d.stashes = slices.Delete(d.stashes, si, si+1)
		d.stashAbove(req.DisplacedStash, i)
		d.snaps = append(d.snaps, st.snaps...)
		if len(st.snaps) > 0 {
			d.head = st.snaps[len(st.snaps)-1].b
		}
		d.pending = slices.Clone(st.pending)
		d.fence = core.MaxEpoch(d.fence, req.Epoch)
		w.noteEpoch(h, req.Site, d, req.Epoch, "restore")
		for _, sn := range d.snaps {
			res.Snapshots = append(res.Snapshots, sn.ref)
		}
		res.Detail = req.DisplacedStash
		w.stashes++
	case m.StorageOp_STORAGE_OP_DELETE:
		// The site was deleted: the copy, if any, is stashed whole and the
		// tombstone recorded (also on a node without a copy).
		if d.exists {
			d.stashAbove(req.StashName, -1)
			res.Detail = req.StashName
			w.stashes++
		}
		d.role, d.tombstone = m.Role_ROLE_DELETED, req.Epoch
		d.fence = core.MaxEpoch(d.fence, req.Epoch)
	case m.StorageOp_STORAGE_OP_PRUNE:
		d.snaps = slices.DeleteFunc(d.snaps, func(s snap) bool {
			return slices.Contains(req.Names, s.ref.Name) && s.ref.Name != d.latest().ref.Name
		})
	default:
		res.Code, res.Detail = m.Code_CODE_INVALID, "unsupported op "+req.Op.String()
	}
	return res
}

// noteEpoch is the I1 checker's view of fencing: a copy must never take an
// activation, a stream or a write from an epoch older than one it took before.
func (w *World) noteEpoch(h *host, site string, d *simDataset, e *m.Epoch, what string) {
	if core.EpochLess(e, d.maxEpoch) {
		w.violate("I1", "site %s on %s: %s at epoch %s after epoch %s (fencing broken)",
			site, h.name, what, core.EpochString(e), core.EpochString(d.maxEpoch))
		return
	}
	d.maxEpoch = e
}
