// Package dataset is the state machine of one copy of a site's dataset on one
// node: the snapshot schedule and replication when the copy is the master's,
// fencing, divergence and stash when it is a replica, and retention on both.
package dataset

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// HistoryMax bounds the snapshot names an offer carries so that the receiver
// can find the newest snapshot both sides share. The replica's cursor is
// always added, and a receiver that finds nothing in common answers with its
// newest snapshot, so a short history costs one round trip at worst.
const HistoryMax = 16

// StashNamesMax bounds the stash names a copy keeps for the admin view. At
// the bound the oldest name is forgotten when a new stash is made (or, at
// boot, only the newest StashNamesMax of the names on disk are kept): the
// stash itself stays on disk, the count a copy reports still counts it, and
// an admin view that lists fewer names than the count says so in its
// detail. Storage lists every stash (oldest first) when asked directly.
const StashNamesMax = 64

// MountsPendingMax bounds the admin mounts and unmounts a copy waits on
// storage for; past it a new one is answered CODE_BUSY at once.
const MountsPendingMax = 16

const (
	timerSnapshot = "snapshot"
	timerActivate = "activate-retry"
	timerDelete   = "delete-retry"
	timerPrune    = "prune"
	timerStream   = "stream/" // + replica node
)

// stream is one replication transfer in flight to one replica.
type stream struct {
	id        uint64
	target    *m.SnapshotRef
	sending   bool // the offer was accepted and storage is sending
	startedMs int64
}

// syncWait is a migration step waiting for a replica to hold a snapshot of at
// least seq.
type syncWait struct {
	id      uint64
	target  string
	final   bool
	needSeq uint64
	// extended: a pre-copy that was done while a snapshot was being taken
	// waits for that one too, once.
	extended bool
}

// Dataset is one copy of one site's dataset.
type Dataset struct {
	site, node string
	exists     bool
	spec       *m.SiteSpec
	role       m.Role
	active     bool     // master and serving (set by Activate, cleared by Demote)
	epoch      *m.Epoch // master epoch while active
	fence      *m.Epoch // highest epoch ever accepted
	seq        uint64
	snaps      []*m.SnapshotRef // oldest first
	stashes    []string         // the newest StashNamesMax stash names, oldest first
	stashCount int              // every stash of this copy, listed or not
	replicas   []string
	cursor     map[string]string // replica -> newest snapshot it holds from us
	streams    map[string]*stream
	syncs      []*syncWait
	// pausing holds back offers to a migration target between its
	// pre-copy's end and its final delta's request (the site pauses in
	// between): an offer of an older snapshot then would stream ahead of
	// the final delta while the site's clients are held. The final Sync
	// or the next scheduled snapshot lifts it.
	pausing map[string]bool

	nextID     uint64
	snapTaking bool
	snapAgain  bool // a snapshot was asked for while one was being taken
	pruning    bool
	// incoming is the offer being prepared (stash before answering).
	incoming *m.StreamOffer
	// stashOp is the storage op id of the stash for incoming.
	stashOp       uint64
	incomingStash string
	incomingBase  string
	// rollingBack is the rollback waiting for storage, at rollbackEpoch.
	rollingBack   *m.AdminRollback
	rollbackOp    uint64
	rollbackEpoch *m.Epoch
	// restoring is the stash restore waiting for storage, at restoreEpoch;
	// what the copy had goes aside as restoreDisplaced.
	restoring        *m.AdminRestoreStash
	restoreOp        uint64
	restoreEpoch     *m.Epoch
	restoreDisplaced string
	// readOnlyPending: demoted while a snapshot was being taken; the role
	// change waits for it, or storage would refuse the last snapshot.
	readOnlyPending bool
	// replicaOp is the storage request making this copy read-only after a
	// demotion, until its result: storage refuses streams onto a writable
	// dataset, so offers wait (BUSY) rather than be accepted and fail.
	replicaOp uint64
	// dirty: storage refused a stream because this copy changed after its
	// newest snapshot (a master demoted while its disk was full, a restarted
	// master): those changes are stashed before the next stream.
	dirty bool
	// activating is an Activate waiting for storage (create or role change).
	activating *m.Activate
	activateOp uint64
	// retryActivate is a failover activation that storage found busy,
	// tried again on timerActivate (activateRetries times so far, bounded by
	// Config.ActivateAttemptsMax).
	retryActivate   *m.Activate
	activateRetries int
	demoteEpoch     *m.Epoch
	lastReported    reportKey
	reported        bool

	// firstSnapshot: the activation's first snapshot waits for the local
	// site actor's Activated, which it sends after asking for its
	// processes. Storage carries out a site's requests in order, so a
	// snapshot asked for first would hold the site's start behind it (a
	// full copy of the dataset on some drivers) while clients wait. The
	// snapshot timer takes it if that answer never comes.
	firstSnapshot bool

	// mountWaits are admin mount and unmount queries waiting for storage,
	// by op id (bounded by MountsPendingMax); mounted are the snapshots
	// mounted read-only here (name -> path): retention keeps them.
	mountWaits map[uint64]*m.AdminQuery
	mounted    map[string]string
	// deleting is the deletion waiting for storage (deleteOp); a deletion
	// asked for while the copy was busy waits in pendingDelete, and one
	// storage found busy is tried again on timerDelete (deleteRetries
	// times so far, bounded by Config.ActivateAttemptsMax; the balancer
	// asks again later).
	deleting      *m.DeleteSite
	deleteOp      uint64
	tombstone     *m.Epoch // role ROLE_DELETED: the epoch of the deletion (what Info reports)
	pendingDelete *m.DeleteSite
	retryDelete   *m.DeleteSite
	deleteRetries int
	// activateErr is why this copy's last activation failed in storage
	// ("" once one succeeded), reported so that an operator sees why a
	// failover does not end.
	activateErr string
	// replErr (master): why the last stream to each replica failed, for
	// those whose last stream did (reported, so that an operator sees why
	// a replica falls behind); replErrGen counts its changes.
	replErr    map[string]string
	replErrGen int
}

// errDetailMax bounds an error a copy reports.
const errDetailMax = 400

func cutDetail(s string) string {
	if len(s) > errDetailMax {
		return s[:errDetailMax]
	}
	return s
}

// setReplErr records (why != "") or clears why the last stream to replica r
// failed.
func (d *Dataset) setReplErr(r, why string) {
	why = cutDetail(why)
	if d.replErr[r] == why {
		return
	}
	if why == "" {
		delete(d.replErr, r)
	} else {
		if d.replErr == nil {
			d.replErr = map[string]string{}
		}
		d.replErr[r] = why
	}
	d.replErrGen++
}

var _ core.Actor = (*Dataset)(nil)

// New returns the empty copy of site on node.
func New(node, site string) *Dataset {
	return &Dataset{site: site, node: node, cursor: map[string]string{}, streams: map[string]*stream{}}
}

// Info is what this copy reports to its node and to probes.
func (d *Dataset) Info() *m.DatasetInfo {
	info := &m.DatasetInfo{
		Site: d.site, Node: d.node, Role: d.role, Epoch: d.fence, Latest: d.kept(),
		Spec: d.spec, Snapshots: uint32(len(d.snaps)), Stashes: uint32(d.stashCount),
		Phase: m.SitePhase_SITE_PHASE_STOPPED, ActivationError: d.activateErr,
	}
	switch {
	case d.role == m.Role_ROLE_DELETED:
		// The tombstone, even if the fence went past it since (a refused
		// activation): it is what every balancer learns the deletion by.
		info.Epoch = d.tombstone
	case d.active:
		info.Phase = m.SitePhase_SITE_PHASE_ACTIVE
		info.Replicas = slices.Clone(d.replicas)
		info.Epoch = d.epoch
		for _, r := range d.replicas {
			if why := d.replErr[r]; why != "" {
				if info.ReplicaErrors == nil {
					info.ReplicaErrors = map[string]string{}
				}
				info.ReplicaErrors[r] = why
			}
		}
	case d.activating != nil:
		// Becoming master (storage is switching the role): a failover that
		// asks now must not promote another copy as well.
		info.Role, info.Phase, info.Epoch = m.Role_ROLE_MASTER, m.SitePhase_SITE_PHASE_PROMOTING, d.activating.Epoch
	}
	if l := d.latest(); l != nil {
		info.Bytes = l.Bytes
	}
	return info
}

// Snapshots returns the copy's snapshots, oldest first (for tests and admin).
func (d *Dataset) Snapshots() []*m.SnapshotRef { return d.snaps }

// kept is the newest snapshot this copy will hold once a stash in progress
// is done: a failover must not pick a copy for history it is setting aside.
func (d *Dataset) kept() *m.SnapshotRef {
	if d.incoming != nil {
		if i := d.find(d.incomingBase); i >= 0 {
			return d.snaps[i]
		}
		return nil
	}
	return d.latest()
}

func (d *Dataset) latest() *m.SnapshotRef {
	if len(d.snaps) == 0 {
		return nil
	}
	return d.snaps[len(d.snaps)-1]
}

// find returns the index of a snapshot, searching from the newest: the names
// looked up (cursors, bases) are nearly always recent.
func (d *Dataset) find(name string) int {
	for i := len(d.snaps) - 1; i >= 0; i-- {
		if d.snaps[i].Name == name {
			return i
		}
	}
	return -1
}

func (d *Dataset) id() uint64 { d.nextID++; return d.nextID }

func (d *Dataset) self() core.Address { return core.DatasetAddr(d.node, d.site) }

// Step handles one input.
func (d *Dataset) Step(env *core.Env, in proto.Message) []core.Effect {
	var fx []core.Effect
	switch msg := in.(type) {
	case *m.DatasetBoot:
		fx = d.boot(env, msg)
	case *m.Activate:
		fx = d.activate(env, msg)
	case *m.Demote:
		fx = d.demote(env, msg)
	case *m.DeleteSite:
		fx = d.deleteSite(env, msg)
	case *m.Timer:
		fx = d.timer(env, msg.Key)
	case *m.StorageResult:
		fx = d.storageResult(env, msg)
	case *m.StreamOffer:
		fx = d.offer(env, msg)
	case *m.StreamAnswer:
		fx = d.answer(env, msg)
	case *m.Received:
		fx = d.received(env, msg)
	case *m.Sync:
		fx = d.sync(env, msg)
	case *m.Activated:
		fx = d.siteActive(env, msg)
	case *m.AddReplica:
		if d.active && msg.Node != d.node && !slices.Contains(d.replicas, msg.Node) {
			d.replicas = append(d.replicas, msg.Node)
			slices.Sort(d.replicas)
			fx = append(fx, core.Info("replica added", "site", d.site, "node", d.node, "replica", msg.Node))
			fx = append(fx, d.replicate(env)...)
		}
	case *m.DropReplica:
		if i := slices.Index(d.replicas, msg.Node); i >= 0 {
			d.replicas = slices.Delete(d.replicas, i, i+1)
			delete(d.cursor, msg.Node)
			delete(d.streams, msg.Node)
			fx = append(fx, core.CancelTimer{Key: timerStream + msg.Node})
		}
	case *m.StorageLow:
		// No report: a message that spawned this actor (a copy gone
		// since the node listed it) leaves nothing behind.
		return d.pruneForSpace(env, msg)
	case *m.Probe:
		fx = append(fx, core.Send{To: core.BalancerAddr(msg.ReplyNode), Msg: &m.ProbeAnswer{Site: d.site, ProbeId: msg.ProbeId, Info: d.Info()}})
		return fx
	case *m.AdminSnapshot:
		fx = d.snapshotNow(env)
	case *m.AdminRollback:
		fx = d.rollback(env, msg)
	case *m.AdminRestoreStash:
		fx = d.restoreStash(env, msg)
	case *m.AdminQuery:
		if msg.Kind == m.AdminQueryKind_ADMIN_QUERY_MOUNT || msg.Kind == m.AdminQueryKind_ADMIN_QUERY_UNMOUNT {
			return d.mount(env, msg)
		}
		// Read only, and no report: a query that spawned this actor (a site
		// this node never held) leaves nothing behind.
		return []core.Effect{core.Send{To: core.ClientAddr(msg.ReplyNode), Msg: d.view(env, msg)}}
	default:
		panic(fmt.Sprintf("dataset %s: unexpected input %T", d.site, in))
	}
	return append(fx, d.report()...)
}

// addStash records a stash this copy made, forgetting the oldest name at
// StashNamesMax.
func (d *Dataset) addStash(name string) {
	d.stashCount++
	if len(d.stashes) >= StashNamesMax {
		d.stashes = slices.Delete(d.stashes, 0, len(d.stashes)-StashNamesMax+1)
	}
	d.stashes = append(d.stashes, name)
}

// view answers a site query of the admin endpoint: what this copy reports,
// its snapshots and its stashes. A copy that does not exist (never booted
// from disk, created or received) answers UNKNOWN_SITE. Everything in the
// answer is a copy: the host may hand it unmarshaled to a local client.
func (d *Dataset) view(env *core.Env, q *m.AdminQuery) *m.AdminView {
	v := &m.AdminView{QueryId: q.QueryId, Node: d.node, AtMs: env.NowMs()}
	switch {
	case q.Kind != m.AdminQueryKind_ADMIN_QUERY_SITE:
		v.Code, v.Detail = m.Code_CODE_INVALID, "a dataset answers site queries only, not "+q.Kind.String()
		return v
	case q.Site != "" && q.Site != d.site:
		v.Code, v.Detail = m.Code_CODE_INVALID, "query for site "+q.Site+" reached the dataset of "+d.site
		return v
	case !d.exists && d.activating == nil:
		v.Code, v.Detail = m.Code_CODE_UNKNOWN_SITE, "no copy of site "+d.site+" on "+d.node
		return v
	}
	v.Info = proto.CloneOf(d.Info())
	v.Snapshots = make([]*m.SnapshotRef, len(d.snaps))
	for i, s := range d.snaps {
		v.Snapshots[i] = proto.CloneOf(s)
	}
	v.Stashes = slices.Clone(d.stashes)
	if len(d.mounted) > 0 {
		v.Mounts = maps.Clone(d.mounted)
	}
	if d.stashCount > len(d.stashes) {
		v.Detail = fmt.Sprintf("the newest %d of %d stashes are listed", len(d.stashes), d.stashCount)
	}
	return v
}

// mount mounts (or unmounts) one of the master copy's snapshots read-only,
// for an admin to browse an old version of the site; the answer waits for
// storage. A snapshot mounted already is answered at once (mounting is
// idempotent here whatever the driver does). No report: nothing reported
// changes.
func (d *Dataset) mount(env *core.Env, q *m.AdminQuery) []core.Effect {
	unmount := q.Kind == m.AdminQueryKind_ADMIN_QUERY_UNMOUNT
	answer := func(code m.Code, detail, path string) []core.Effect {
		return []core.Effect{core.Send{To: core.ClientAddr(q.ReplyNode), Msg: &m.AdminView{QueryId: q.QueryId, Code: code,
			Detail: detail, Node: d.node, AtMs: env.NowMs(), MountPath: path}}}
	}
	switch {
	case q.Site != "" && q.Site != d.site:
		return answer(m.Code_CODE_INVALID, "query for site "+q.Site+" reached the dataset of "+d.site, "")
	case !d.exists:
		return answer(m.Code_CODE_UNKNOWN_SITE, "no copy of site "+d.site+" on "+d.node, "")
	case !d.active:
		return answer(m.Code_CODE_MOVED, "the copy on "+d.node+" is not the site's master", "")
	case q.Snapshot == "":
		return answer(m.Code_CODE_INVALID, "no snapshot named", "")
	case !unmount && d.find(q.Snapshot) < 0:
		return answer(m.Code_CODE_INVALID, "no snapshot "+q.Snapshot+" on "+d.node, "")
	case !unmount && d.mounted[q.Snapshot] != "":
		return answer(m.Code_CODE_OK, "mounted already", d.mounted[q.Snapshot])
	case len(d.mountWaits) >= MountsPendingMax:
		return answer(m.Code_CODE_BUSY, fmt.Sprintf("%d mounts are under way already", len(d.mountWaits)), "")
	}
	if d.mountWaits == nil {
		d.mountWaits = map[uint64]*m.AdminQuery{}
	}
	op := d.id()
	d.mountWaits[op] = q
	req := &m.StorageRequest{Op: m.StorageOp_STORAGE_OP_MOUNT, Site: d.site, OpId: op, Snapshot: &m.SnapshotRef{Name: q.Snapshot}}
	if i := d.find(q.Snapshot); i >= 0 {
		req.Snapshot = d.snaps[i]
	}
	if unmount {
		req.Op = m.StorageOp_STORAGE_OP_UNMOUNT
	}
	return []core.Effect{core.Storage{Req: req}}
}

// mountDone answers the query a mount or unmount waited for.
func (d *Dataset) mountDone(env *core.Env, r *m.StorageResult) []core.Effect {
	q := d.mountWaits[r.OpId]
	if q == nil {
		return nil
	}
	delete(d.mountWaits, r.OpId)
	name := q.Snapshot
	fx := []core.Effect{}
	switch {
	case r.Code != m.Code_CODE_OK:
		fx = append(fx, core.Warn("snapshot mount failed", "site", d.site, "node", d.node, "snapshot", name,
			"unmount", r.Op == m.StorageOp_STORAGE_OP_UNMOUNT, "detail", r.Detail))
	case r.Op == m.StorageOp_STORAGE_OP_MOUNT:
		if d.mounted == nil {
			d.mounted = map[string]string{}
		}
		d.mounted[name] = r.MountPath
		fx = append(fx, core.Info("snapshot mounted read-only", "site", d.site, "node", d.node, "snapshot", name, "path", r.MountPath))
	default:
		delete(d.mounted, name)
		fx = append(fx, core.Info("snapshot unmounted", "site", d.site, "node", d.node, "snapshot", name))
	}
	return append(fx, core.Send{To: core.ClientAddr(q.ReplyNode), Msg: &m.AdminView{QueryId: q.QueryId, Code: r.Code,
		Detail: r.Detail, Node: d.node, AtMs: env.NowMs(), MountPath: r.MountPath}})
}

// reportKey changes whenever Info would: messages held by the actor are
// never mutated, so pointers stand for their values. Comparing it is far
// cheaper than building and comparing Info on every step.
type reportKey struct {
	role          m.Role
	active        bool
	epoch, fence  *m.Epoch
	latest        *m.SnapshotRef
	spec          *m.SiteSpec
	snaps, stash  int
	replicas      int
	replicasFirst *string
	activateErr   string
	activating    *m.Activate
	replErrGen    int
}

func (d *Dataset) key() reportKey {
	k := reportKey{role: d.role, active: d.active, epoch: d.epoch, fence: d.fence, latest: d.kept(),
		spec: d.spec, snaps: len(d.snaps), stash: d.stashCount, replicas: len(d.replicas), activating: d.activating,
		activateErr: d.activateErr, replErrGen: d.replErrGen}
	if len(d.replicas) > 0 {
		k.replicasFirst = &d.replicas[0]
	}
	return k
}

// report tells the local node when what it would report changed.
func (d *Dataset) report() []core.Effect {
	k := d.key()
	if d.reported && k == d.lastReported {
		return nil
	}
	d.reported, d.lastReported = true, k
	return []core.Effect{core.Send{To: core.NodeAddr(d.node), Msg: d.Info()}}
}

func (d *Dataset) boot(env *core.Env, b *m.DatasetBoot) []core.Effect {
	info := b.GetInfo()
	d.exists = true
	d.spec = info.GetSpec()
	d.role = info.GetRole()
	d.fence = info.GetEpoch()
	d.snaps = slices.Clone(b.Snapshots)
	d.stashCount = max(len(b.Stashes), int(info.GetStashes()))
	d.stashes = slices.Clone(b.Stashes[max(0, len(b.Stashes)-StashNamesMax):])
	// Mounts outlive a restart: the host re-established them from disk.
	d.mounted = nil
	if len(b.Mounts) > 0 {
		d.mounted = maps.Clone(b.Mounts)
	}
	// A restarted master does not serve until the balancer activates it again:
	// the site may have failed over while this node was away.
	d.active = false
	for _, s := range d.snaps {
		d.seq = max(d.seq, s.Seq)
	}
	fx := []core.Effect{core.SetTimer{Key: timerPrune, After: env.Config.PruneInterval}}
	if d.role == m.Role_ROLE_DELETED {
		d.tombstone = d.fence
		// The local site actor answers for a deleted site (UNKNOWN_SITE):
		// tell it, now that it has restarted knowing nothing.
		fx = append(fx, core.Send{To: core.SiteAddr(d.node, d.site), Msg: &m.DeleteSite{Site: d.site, Epoch: d.tombstone, Recorded: true}})
	}
	return fx
}

// activate makes this copy the master at msg.Epoch (create, migrate, failover,
// heal, resume).
func (d *Dataset) activate(env *core.Env, a *m.Activate) []core.Effect {
	refuse := func(code m.Code, detail string) []core.Effect {
		// A refused epoch is fenced: a duplicate of this Activate arriving
		// later, when the copy is no longer busy, must not promote it.
		if !env.Config.Mutations.SkipFencing {
			d.fence = core.MaxEpoch(d.fence, a.Epoch)
		}
		fx := []core.Effect{core.Warn("activation refused", "site", d.site, "node", d.node,
			"epoch", core.EpochString(a.Epoch), "reason", detail)}
		if a.FromNode != "" {
			fence := d.fence
			if d.role == m.Role_ROLE_DELETED {
				fence = d.tombstone // the source learns the site was deleted
			}
			fx = append(fx, core.Send{To: core.SiteAddr(a.FromNode, d.site), Msg: &m.Activated{
				Site: d.site, Node: d.node, Epoch: a.Epoch, Code: code, Detail: detail, Fence: fence}})
		}
		return fx
	}
	if d.activating != nil && core.CompareEpoch(a.Epoch, d.activating.Epoch) == 0 {
		// A duplicate of the activation under way: its answer comes when
		// storage is done; refusing it would let the source resume too.
		return nil
	}
	if d.active && core.CompareEpoch(a.Epoch, d.epoch) == 0 {
		// A re-sent Activate (its answer was lost): answer again.
		return []core.Effect{core.Send{To: core.SiteAddr(d.node, d.site), Msg: a}}
	}
	if !env.Config.Mutations.SkipFencing && !core.EpochLess(d.fence, a.Epoch) {
		return refuse(m.Code_CODE_FENCED, fmt.Sprintf("epoch %s is not newer than %s", core.EpochString(a.Epoch), core.EpochString(d.fence)))
	}
	if d.activating != nil || d.incoming != nil || d.deleting != nil {
		return refuse(m.Code_CODE_BUSY, "copy is busy")
	}
	if !a.Create && !d.exists {
		return refuse(m.Code_CODE_FAILED, "no copy of the site here")
	}
	if d.role == m.Role_ROLE_DELETED && !a.Create {
		return refuse(m.Code_CODE_FAILED, "the site was deleted here: only a create brings it back")
	}
	if a.ExpectSnapshot != "" && (d.latest() == nil || d.latest().Name != a.ExpectSnapshot) {
		return refuse(m.Code_CODE_FAILED, "copy does not hold "+a.ExpectSnapshot)
	}
	var fx []core.Effect
	if spec, matches := core.WithOwnTLS(a.Spec, d.spec); spec != a.Spec {
		// The balancer's spec came from this copy's report, which carries
		// the certificate's digest instead of the certificate and key.
		if !matches {
			fx = append(fx, core.Warn("activation: the copy's certificate changed since it reported; the copy's is kept",
				"site", d.site, "node", d.node))
		}
		a = proto.CloneOf(a)
		a.Spec = spec
	}
	d.activating = a
	d.activateOp = d.id()
	op := m.StorageOp_STORAGE_OP_SET_ROLE
	if a.Create && (!d.exists || d.role == m.Role_ROLE_DELETED) {
		// A deleted copy may hold an empty dataset or none (a node that
		// only recorded the tombstone): storage's create takes both.
		op = m.StorageOp_STORAGE_OP_CREATE
	}
	return append(fx, core.Storage{Req: &m.StorageRequest{
		Op: op, Site: d.site, OpId: d.activateOp, Role: m.Role_ROLE_MASTER, Epoch: a.Epoch,
		Spec: a.Spec, QuotaBytes: a.Spec.GetQuotaBytes()}})
}

func (d *Dataset) activated(env *core.Env, r *m.StorageResult) []core.Effect {
	a := d.activating
	d.activating = nil
	if r.Code != m.Code_CODE_OK {
		fx := []core.Effect{core.Warn("activation failed in storage", "site", d.site, "node", d.node, "detail", r.Detail)}
		d.activateErr = cutDetail(r.Detail)
		if a.FromNode == "" && r.Code == m.Code_CODE_BUSY && d.activateRetries < env.Config.ActivateAttemptsMax {
			// A failover's promotion hit a busy dataset (zfs-fuse reports
			// fresh mounts busy for a while): try again soon rather than
			// wait for the balancer's next probe. At the bound the
			// balancer's probe takes over.
			d.activateRetries++
			d.retryActivate = a
			return append(fx, core.SetTimer{Key: timerActivate, After: 2 * env.Config.HeartbeatInterval})
		}
		d.activateRetries = 0
		if a.FromNode != "" {
			fx = append(fx, core.Send{To: core.SiteAddr(a.FromNode, d.site), Msg: &m.Activated{
				Site: d.site, Node: d.node, Epoch: a.Epoch, Code: r.Code, Detail: r.Detail}})
		}
		return fx
	}
	d.activateRetries, d.retryActivate, d.activateErr = 0, nil, ""
	if len(d.replErr) > 0 {
		// A new master term: its streams have failed to no one yet.
		clear(d.replErr)
		d.replErrGen++
	}
	wasActive := d.active
	d.exists = true
	d.spec = a.Spec
	d.role = m.Role_ROLE_MASTER
	d.active = true
	d.epoch = a.Epoch
	d.fence = core.MaxEpoch(d.fence, a.Epoch)
	d.replicas = nil
	for _, n := range a.Replicas {
		if n != d.node && !slices.Contains(d.replicas, n) {
			d.replicas = append(d.replicas, n)
		}
	}
	slices.Sort(d.replicas)
	// Cursors survive: a replica that holds our snapshots still holds them.
	fx := []core.Effect{
		core.Info("copy is master", "site", d.site, "node", d.node, "epoch", core.EpochString(a.Epoch), "reason", a.Reason),
		core.Send{To: core.SiteAddr(d.node, d.site), Msg: a},
	}
	if !wasActive {
		fx = append(fx, core.SetTimer{Key: timerPrune, After: env.Config.PruneInterval})
	}
	// A first snapshot (even of an unchanged dataset) gives replicas a base
	// under the new epoch: once the site actor answers (siteActive).
	d.firstSnapshot = true
	return append(fx, core.SetTimer{Key: timerSnapshot, After: env.Config.SnapshotInterval})
}

// siteActive: the local site actor serves at a.Epoch and has asked for its
// processes, so the activation's first snapshot now queues behind their
// start.
func (d *Dataset) siteActive(env *core.Env, a *m.Activated) []core.Effect {
	if !d.firstSnapshot || !d.active || a.Code != m.Code_CODE_OK || core.CompareEpoch(a.Epoch, d.epoch) != 0 {
		return nil
	}
	return d.snapshotNow(env)
}

// demote turns a master copy into a replica (after a migration, or when a
// newer master exists). Writes since the last snapshot are kept in one last
// snapshot, so that if they diverge they are stashed, not lost.
func (d *Dataset) demote(env *core.Env, msg *m.Demote) []core.Effect {
	if !d.active || !core.EpochLess(d.epoch, msg.Epoch) {
		return nil
	}
	// Writes since the last snapshot are kept in one more snapshot, named in
	// this copy's own (old) epoch, unless the winner holds them all already.
	var fx []core.Effect
	if !msg.Clean {
		fx = d.snapshotNow(env)
	}
	d.firstSnapshot = false
	d.active = false
	d.role = m.Role_ROLE_REPLICA
	d.fence = core.MaxEpoch(d.fence, msg.Epoch)
	fx = append(fx, []core.Effect{
		core.Info("copy demoted", "site", d.site, "node", d.node, "epoch", core.EpochString(msg.Epoch), "winner", msg.Winner),
		core.CancelTimer{Key: timerSnapshot},
		core.Send{To: core.SiteAddr(d.node, d.site), Msg: msg},
	}...)
	for r := range d.streams {
		fx = append(fx, core.CancelTimer{Key: timerStream + r})
	}
	d.streams = map[string]*stream{}
	d.syncs = nil
	d.pausing = nil
	d.replicas = nil
	if d.snapTaking {
		// The copy turns read-only only after its last snapshot is taken
		// (one in flight, or the one queued behind it).
		d.readOnlyPending = true
		return fx
	}
	return append(fx, d.setReplica())
}

// setReplica makes storage treat the copy as a replica (read-only, fenced).
func (d *Dataset) setReplica() core.Effect {
	d.readOnlyPending = false
	d.replicaOp = d.id()
	return core.Storage{Req: &m.StorageRequest{
		Op: m.StorageOp_STORAGE_OP_SET_ROLE, Site: d.site, OpId: d.replicaOp, Role: m.Role_ROLE_REPLICA, Epoch: d.fence}}
}

func (d *Dataset) timer(env *core.Env, key string) []core.Effect {
	switch {
	case key == timerSnapshot:
		if !d.active {
			return nil
		}
		if d.firstSnapshot {
			// The site actor never answered: the first snapshot is due.
			return append([]core.Effect{core.SetTimer{Key: timerSnapshot, After: env.Config.SnapshotInterval}}, d.snapshotNow(env)...)
		}
		return d.takeSnapshot(env)
	case key == timerActivate:
		a := d.retryActivate
		d.retryActivate = nil
		if a == nil || d.active || d.activating != nil {
			return nil
		}
		return d.activate(env, a)
	case key == timerDelete:
		del := d.retryDelete
		d.retryDelete = nil
		if del == nil {
			return nil
		}
		return d.deleteSite(env, del)
	case key == timerPrune:
		return append(d.prune(env), core.SetTimer{Key: timerPrune, After: env.Config.PruneInterval})
	case len(key) > len(timerStream) && key[:len(timerStream)] == timerStream:
		r := key[len(timerStream):]
		if s := d.streams[r]; s != nil {
			delete(d.streams, r)
			d.setReplErr(r, "stream timed out")
			return []core.Effect{core.Warn("replication stream timed out", "site", d.site, "node", d.node, "replica", r)}
		}
	}
	return nil
}

// takeSnapshot snapshots the master copy and re-arms the schedule.
func (d *Dataset) takeSnapshot(env *core.Env) []core.Effect {
	if !d.active {
		return nil
	}
	fx := []core.Effect{core.SetTimer{Key: timerSnapshot, After: env.Config.SnapshotInterval}}
	if len(d.pausing) > 0 {
		// A pause whose final delta was not asked for by now (the
		// migration ended otherwise): replicate to its target again.
		clear(d.pausing)
		fx = append(fx, d.replicate(env)...)
	}
	return append(fx, d.snapshot(env, true)...)
}

// snapshotNow asks storage for a snapshot, or for another one right after the
// one being taken: writes acknowledged before this call must be in it.
func (d *Dataset) snapshotNow(env *core.Env) []core.Effect { return d.snapshot(env, false) }

// snapshot asks storage for a snapshot. A scheduled one (ifChanged) is
// skipped by storage when nothing changed, and skipped here while another is
// being taken; a forced one follows the one being taken.
func (d *Dataset) snapshot(env *core.Env, ifChanged bool) []core.Effect {
	if d.deleting != nil || d.role == m.Role_ROLE_DELETED {
		return nil
	}
	if d.restoring != nil {
		// The site is paused and its history about to change: a snapshot
		// now would name the restored data in the old epoch. The restore
		// takes one at the new epoch when it is done.
		return nil
	}
	if !ifChanged {
		// Any forced snapshot from here on is at the current epoch.
		d.firstSnapshot = false
	}
	if d.snapTaking {
		d.snapAgain = d.snapAgain || !ifChanged
		return nil
	}
	epoch := d.epoch // the last epoch this copy was master at
	if epoch == nil {
		return nil
	}
	d.snapTaking = true
	d.seq++
	ref := &m.SnapshotRef{Name: core.SnapshotName(epoch, d.seq), Epoch: epoch, Seq: d.seq, TakenMs: env.NowMs()}
	return []core.Effect{core.Storage{Req: &m.StorageRequest{
		Op: m.StorageOp_STORAGE_OP_SNAPSHOT, Site: d.site, OpId: d.id(), Snapshot: ref, Epoch: epoch, IfChanged: ifChanged}}}
}

// busy reports whether the copy waits for storage on a change of its role
// or history (a deletion waits for it to end).
func (d *Dataset) busy() bool {
	return d.activating != nil || d.incoming != nil || d.rollingBack != nil || d.restoring != nil || d.deleting != nil
}

func (d *Dataset) storageResult(env *core.Env, r *m.StorageResult) []core.Effect {
	fx := d.storageDone(env, r)
	if del := d.pendingDelete; del != nil && !d.busy() {
		d.pendingDelete = nil
		fx = append(fx, d.deleteSite(env, del)...)
	}
	return fx
}

func (d *Dataset) storageDone(env *core.Env, r *m.StorageResult) []core.Effect {
	if d.deleting != nil && r.OpId == d.deleteOp {
		return d.deleted(env, r)
	}
	if d.activating != nil && r.OpId == d.activateOp {
		return d.activated(env, r)
	}
	if d.incoming != nil && r.OpId == d.stashOp {
		return d.stashed(env, r)
	}
	if d.rollingBack != nil && r.OpId == d.rollbackOp {
		return d.rolledBack(env, r)
	}
	if d.restoring != nil && r.OpId == d.restoreOp {
		return d.restored(env, r)
	}
	if d.replicaOp != 0 && r.OpId == d.replicaOp {
		// Failed or not, offers are answered again: a copy that stayed
		// writable is refused by storage and stashed as before.
		d.replicaOp = 0
		if r.Code != m.Code_CODE_OK {
			return []core.Effect{core.Warn("demotion's role change failed in storage", "site", d.site, "node", d.node, "detail", r.Detail)}
		}
		return nil
	}
	switch r.Op {
	case m.StorageOp_STORAGE_OP_SNAPSHOT:
		d.snapTaking = false
		var fx []core.Effect
		switch r.Code {
		case m.Code_CODE_OK:
			d.snaps = append(d.snaps, r.Snapshot)
		case m.Code_CODE_UNCHANGED:
			// Nothing new to replicate; the sequence number stays used.
		default:
			fx = append(fx, core.Warn("snapshot failed", "site", d.site, "node", d.node, "detail", r.Detail))
		}
		if d.snapAgain {
			d.snapAgain = false
			fx = append(fx, d.snapshotNow(env)...)
		}
		if d.readOnlyPending && !d.snapTaking {
			fx = append(fx, d.setReplica())
		}
		fx = append(fx, d.settleExtendedSyncs()...)
		return append(fx, d.replicate(env)...)
	case m.StorageOp_STORAGE_OP_SEND:
		s := d.streams[r.ToNode]
		if s == nil || s.id != r.StreamId {
			return nil
		}
		delete(d.streams, r.ToNode)
		fx := []core.Effect{core.CancelTimer{Key: timerStream + r.ToNode}}
		if r.Code != m.Code_CODE_OK {
			d.setReplErr(r.ToNode, "stream failed: "+r.Detail)
			return append(fx, core.Warn("replication stream failed", "site", d.site, "node", d.node,
				"replica", r.ToNode, "snapshot", s.target.Name, "detail", r.Detail))
		}
		d.setReplErr(r.ToNode, "")
		d.cursor[r.ToNode] = s.target.Name
		fx = append(fx, d.syncsDone(r.ToNode, s.target)...)
		return append(fx, d.replicate(env)...)
	case m.StorageOp_STORAGE_OP_PRUNE:
		d.pruning = false
		return nil
	case m.StorageOp_STORAGE_OP_MOUNT, m.StorageOp_STORAGE_OP_UNMOUNT:
		return d.mountDone(env, r)
	}
	return nil
}

// replicate offers the newest snapshot to every replica with no stream in flight.
func (d *Dataset) replicate(env *core.Env) []core.Effect {
	l := d.latest()
	if !d.active || l == nil {
		return nil
	}
	var fx []core.Effect
	for _, r := range d.replicas {
		if d.streams[r] != nil || d.cursor[r] == l.Name || d.pausing[r] {
			continue
		}
		if d.snapTaking && d.syncNeedsNewer(r, l) {
			// A migration waits for the snapshot being taken: sending the
			// one before it first (the final delta's stream queued behind
			// that snapshot, then a second stream) would double the time
			// its clients are held. That snapshot's result offers it.
			continue
		}
		s := &stream{id: d.id(), target: l, startedMs: env.NowMs()}
		d.streams[r] = s
		fx = append(fx, core.SetTimer{Key: timerStream + r, After: env.Config.StreamTimeout})
		fx = append(fx, d.offerTo(r, s, false))
	}
	return fx
}

// offerTo sends the offer of stream s to replica r. Its history is the
// newest HistoryMax snapshot names plus the replica's cursor, so that a
// replica far behind still finds its incremental base.
func (d *Dataset) offerTo(r string, s *stream, full bool) core.Effect {
	first := max(0, len(d.snaps)-HistoryMax)
	history := make([]string, 0, len(d.snaps)-first+1)
	if c := d.cursor[r]; c != "" && d.find(c) >= 0 && d.find(c) < first {
		history = append(history, c)
	}
	for _, sn := range d.snaps[first:] {
		history = append(history, sn.Name)
	}
	return core.Send{To: core.DatasetAddr(r, d.site), Msg: &m.StreamOffer{
		Site: d.site, FromNode: d.node, Epoch: d.epoch, Base: d.cursor[r], Target: s.target,
		StreamId: s.id, Spec: d.spec, History: history, Full: full}}
}

// answer is the replica's reply to our offer.
func (d *Dataset) answer(env *core.Env, a *m.StreamAnswer) []core.Effect {
	s := d.streams[a.Node]
	if s == nil || s.id != a.StreamId || s.sending {
		return nil
	}
	switch a.Code {
	case m.Code_CODE_OK:
	case m.Code_CODE_NO_COMMON_SNAPSHOT:
		// Our history was too short to show the replica's newest snapshot.
		// If we hold it, it is the base; if not, the replica stashes all.
		if a.Have != "" && d.find(a.Have) >= 0 {
			d.cursor[a.Node] = a.Have
			return []core.Effect{d.offerTo(a.Node, s, false)}
		}
		return []core.Effect{d.offerTo(a.Node, s, true)}
	case m.Code_CODE_FENCED:
		delete(d.streams, a.Node)
		if core.IsTombstone(a.Fence) {
			// The replica knows the site was deleted; this copy missed it.
			// The site actor stops serving first, then tells us back.
			return []core.Effect{
				core.Warn("fenced by a tombstone: the site was deleted", "site", d.site, "node", d.node,
					"replica", a.Node, "tombstone", core.EpochString(a.Fence)),
				core.Send{To: core.SiteAddr(d.node, d.site), Msg: &m.DeleteSite{Site: d.site, Epoch: a.Fence}},
			}
		}
		if a.Fence.GetNode() == d.node {
			// The newer epoch was minted for this very node (a heal that chose
			// it, whose activation got lost or refused here): take an epoch
			// above it instead of leaving the site without a master.
			fx := []core.Effect{core.Warn("fenced by an epoch minted for this node: taking a newer one", "site", d.site,
				"node", d.node, "fence", core.EpochString(a.Fence))}
			return append(fx, d.activate(env, &m.Activate{Spec: d.spec, Epoch: core.NextEpoch(a.Fence, d.node, env),
				Replicas: d.replicas, Reason: "refence"})...)
		}
		// A newer master exists: stop taking writes at once, so that the
		// history that will be stashed stays short.
		return []core.Effect{
			core.Warn("fenced by a replica: a newer master exists", "site", d.site, "node", d.node,
				"replica", a.Node, "epoch", core.EpochString(d.epoch), "fence", core.EpochString(a.Fence)),
			core.Send{To: core.SiteAddr(d.node, d.site), Msg: &m.Demote{Site: d.site, Winner: a.Fence.GetNode(), Epoch: a.Fence}},
		}
	default:
		delete(d.streams, a.Node)
		return []core.Effect{core.CancelTimer{Key: timerStream + a.Node}}
	}
	if a.Have == s.target.Name {
		d.cursor[a.Node] = a.Have
		delete(d.streams, a.Node)
		fx := []core.Effect{core.CancelTimer{Key: timerStream + a.Node}}
		fx = append(fx, d.syncsDone(a.Node, s.target)...)
		return append(fx, d.replicate(env)...)
	}
	base := a.Have
	if base != "" && d.find(base) < 0 {
		base = "" // pruned meanwhile: fall back to a full stream
	}
	s.sending = true
	return []core.Effect{core.Storage{Req: &m.StorageRequest{
		Op: m.StorageOp_STORAGE_OP_SEND, Site: d.site, OpId: d.id(), Snapshot: s.target, Base: base,
		ToNode: a.Node, StreamId: s.id, Epoch: d.epoch, Spec: d.spec}}}
}

// offer decides, on the receiving copy, whether a stream may come: fencing
// first, then divergence (stash what the sender does not have).
func (d *Dataset) offer(env *core.Env, o *m.StreamOffer) []core.Effect {
	reply := func(code m.Code, have, detail string) []core.Effect {
		return []core.Effect{core.Send{To: core.DatasetAddr(o.FromNode, d.site), Msg: &m.StreamAnswer{
			Site: d.site, StreamId: o.StreamId, Code: code, Have: have, Detail: detail, Node: d.node, Fence: d.fence}}}
	}
	if !env.Config.Mutations.SkipFencing && core.EpochLess(o.Epoch, d.fence) {
		return append(reply(m.Code_CODE_FENCED, "", "stream epoch "+core.EpochString(o.Epoch)+" is older than "+core.EpochString(d.fence)),
			core.Info("stream refused: fenced", "site", d.site, "node", d.node, "from", o.FromNode, "epoch", core.EpochString(o.Epoch)))
	}
	if d.role == m.Role_ROLE_DELETED && !core.CreatedAfter(o.Spec, d.tombstone) {
		// The sender holds history from before the site's deletion (it
		// missed it): the tombstone as fence tells it.
		return []core.Effect{core.Send{To: core.DatasetAddr(o.FromNode, d.site), Msg: &m.StreamAnswer{
			Site: d.site, StreamId: o.StreamId, Code: m.Code_CODE_FENCED, Node: d.node, Fence: d.tombstone,
			Detail: "the site was deleted at " + core.EpochString(d.tombstone)}}}
	}
	if d.incoming != nil || d.activating != nil || d.snapTaking || d.rollingBack != nil || d.restoring != nil || d.deleting != nil {
		return reply(m.Code_CODE_BUSY, "", "copy is busy")
	}
	if d.readOnlyPending || d.replicaOp != 0 {
		// Demoted, and storage has not yet made the copy read-only (its
		// processes stop first, which can take a while): a stream now would
		// be refused and the unchanged copy stashed as diverged.
		return reply(m.Code_CODE_BUSY, "", "copy is turning read-only")
	}
	if d.active {
		if core.CompareEpoch(o.Epoch, d.epoch) == 0 {
			return reply(m.Code_CODE_INVALID, "", "both ends are master at the same epoch")
		}
		// A newer master offers: this copy's history lost. Demote (which
		// snapshots the last writes); the sender retries after its next snapshot.
		fx := d.demote(env, &m.Demote{Site: d.site, Winner: o.FromNode, Epoch: o.Epoch})
		return append(fx, reply(m.Code_CODE_BUSY, "", "demoting")...)
	}
	have := ""
	for i := len(d.snaps) - 1; i >= 0 && have == "" && !o.Full; i-- {
		if slices.Contains(o.History, d.snaps[i].Name) {
			have = d.snaps[i].Name
		}
	}
	if have == "" && len(d.snaps) > 0 && !o.Full {
		// Nothing shared in the offered history: tell the sender our newest
		// snapshot before stashing anything, it may be older than the history.
		return reply(m.Code_CODE_NO_COMMON_SNAPSHOT, d.latest().Name, "no shared snapshot in the offered history")
	}
	d.fence = core.MaxEpoch(d.fence, o.Epoch)
	if l := d.latest(); !d.dirty && (l == nil || l.Name == have) {
		if d.role != m.Role_ROLE_REPLICA {
			d.role = m.Role_ROLE_REPLICA
		}
		return reply(m.Code_CODE_OK, have, "")
	}
	// The copy holds snapshots the sender's history does not, or changes
	// made after its newest snapshot: stash them.
	d.incoming = o
	d.stashOp = d.id()
	var divergent []string
	for _, s := range d.snaps[d.find(have)+1:] {
		divergent = append(divergent, s.Name)
	}
	var stash string
	if len(divergent) > 0 {
		stash = fmt.Sprintf("stash-%s", d.latest().Name)
	} else {
		stash = fmt.Sprintf("stash-live-%s-%d", have, d.stashOp)
	}
	d.incomingStash = stash
	d.incomingBase = have
	return []core.Effect{
		core.Info("copy diverged: stashing", "site", d.site, "node", d.node, "base", have,
			"snapshots", len(divergent), "stash", stash, "winner", o.FromNode),
		core.Storage{Req: &m.StorageRequest{Op: m.StorageOp_STORAGE_OP_STASH, Site: d.site, OpId: d.stashOp,
			Names: divergent, StashName: stash, Snapshot: &m.SnapshotRef{Name: have}, Epoch: o.Epoch}},
	}
}

func (d *Dataset) stashed(env *core.Env, r *m.StorageResult) []core.Effect {
	o := d.incoming
	d.incoming = nil
	if r.Code != m.Code_CODE_OK {
		return []core.Effect{core.Send{To: core.DatasetAddr(o.FromNode, d.site), Msg: &m.StreamAnswer{
			Site: d.site, StreamId: o.StreamId, Code: r.Code, Detail: "stash: " + r.Detail, Node: d.node}}}
	}
	have := ""
	if i := d.find(r.Snapshot.GetName()); i >= 0 {
		have = d.snaps[i].Name
		d.snaps = d.snaps[:i+1]
	} else {
		d.snaps = nil
	}
	d.addStash(d.incomingStash)
	d.dirty = false
	d.role = m.Role_ROLE_REPLICA
	return []core.Effect{core.Send{To: core.DatasetAddr(o.FromNode, d.site), Msg: &m.StreamAnswer{
		Site: d.site, StreamId: o.StreamId, Code: m.Code_CODE_OK, Have: have, Node: d.node}}}
}

// rollback returns the master copy to an older snapshot. What is rolled
// away (later snapshots, and the live data in a safety snapshot) is stashed,
// never destroyed, and the copy starts a new history at a new epoch, so that
// replicas holding the rolled-away snapshots stash them too.
func (d *Dataset) rollback(env *core.Env, r *m.AdminRollback) []core.Effect {
	fail := func(code m.Code, detail string) []core.Effect {
		return []core.Effect{
			core.Warn("rollback refused", "site", d.site, "node", d.node, "snapshot", r.Snapshot, "reason", detail),
			core.Send{To: core.SiteAddr(d.node, d.site), Msg: &m.SyncDone{Site: d.site, Target: core.RollbackTarget, Code: code, Detail: detail}},
		}
	}
	switch {
	case !d.active:
		return fail(m.Code_CODE_INVALID, "copy is not master")
	case d.rollingBack != nil || d.restoring != nil || d.incoming != nil || d.activating != nil:
		return fail(m.Code_CODE_BUSY, "copy is busy")
	case d.find(r.Snapshot) < 0:
		return fail(m.Code_CODE_INVALID, "no snapshot "+r.Snapshot)
	}
	i := d.find(r.Snapshot)
	var later []string
	for _, s := range d.snaps[i+1:] {
		later = append(later, s.Name)
	}
	d.rollingBack = r
	d.rollbackOp = d.id()
	d.rollbackEpoch = core.NextEpoch(core.MaxEpoch(d.fence, d.epoch), d.node, env)
	stash := fmt.Sprintf("rollback-%s-%d", r.Snapshot, d.rollbackOp)
	return []core.Effect{
		core.Info("rolling back", "site", d.site, "node", d.node, "snapshot", r.Snapshot, "stash", stash,
			"snapshots_stashed", len(later), "new_epoch", core.EpochString(d.rollbackEpoch)),
		core.Storage{Req: &m.StorageRequest{Op: m.StorageOp_STORAGE_OP_ROLLBACK, Site: d.site, OpId: d.rollbackOp,
			Snapshot: d.snaps[i], Names: later, StashName: stash, Epoch: d.rollbackEpoch}},
	}
}

func (d *Dataset) rolledBack(env *core.Env, r *m.StorageResult) []core.Effect {
	rb, epoch := d.rollingBack, d.rollbackEpoch
	d.rollingBack, d.rollbackEpoch = nil, nil
	if r.Code != m.Code_CODE_OK {
		return []core.Effect{core.Send{To: core.SiteAddr(d.node, d.site), Msg: &m.SyncDone{Site: d.site,
			Target: core.RollbackTarget, Code: r.Code, Detail: "rollback: " + r.Detail}}}
	}
	d.snaps = d.snaps[:d.find(rb.Snapshot)+1]
	d.addStash(r.Detail)
	if !d.active {
		// Demoted while storage rolled back (a newer master exists): the
		// copy stays a replica; what was rolled away is in the stash.
		return []core.Effect{core.Warn("rolled back after losing mastership: staying replica", "site", d.site,
			"node", d.node, "snapshot", rb.Snapshot)}
	}
	d.epoch, d.fence = epoch, core.MaxEpoch(d.fence, epoch)
	// Replicas hold snapshots that are now stashed here: their next offer
	// carries the new history, and they stash what they hold beyond it.
	for rep := range d.cursor {
		if d.find(d.cursor[rep]) < 0 {
			delete(d.cursor, rep)
		}
	}
	fx := []core.Effect{
		core.Info("rolled back", "site", d.site, "node", d.node, "snapshot", rb.Snapshot, "epoch", core.EpochString(epoch)),
		core.Send{To: core.SiteAddr(d.node, d.site), Msg: &m.Activate{Spec: d.spec, Epoch: epoch, Replicas: d.replicas, Reason: "rollback"}},
	}
	return append(fx, d.snapshotNow(env)...)
}

// restoreStash makes one of this master copy's stashes the site's history
// again. Like a rollback it changes the history: what the copy has after the
// stash's base (snapshots and live data) is itself stashed, as
// restoreDisplaced, never destroyed, and the copy goes on at a new epoch, so
// that replicas holding the displaced snapshots stash them on the next offer.
func (d *Dataset) restoreStash(env *core.Env, r *m.AdminRestoreStash) []core.Effect {
	fail := func(code m.Code, detail string) []core.Effect {
		return []core.Effect{
			core.Warn("stash restore refused", "site", d.site, "node", d.node, "stash", r.Stash, "reason", detail),
			core.Send{To: core.SiteAddr(d.node, d.site), Msg: &m.SyncDone{Site: d.site, Target: core.RollbackTarget, Code: code, Detail: "restore: " + detail}},
		}
	}
	switch {
	case !d.active:
		return fail(m.Code_CODE_INVALID, "copy is not master")
	case d.rollingBack != nil || d.restoring != nil || d.incoming != nil || d.activating != nil:
		return fail(m.Code_CODE_BUSY, "copy is busy")
	case r.Stash == "":
		return fail(m.Code_CODE_INVALID, "no stash named")
	case !slices.Contains(d.stashes, r.Stash) && d.stashCount <= len(d.stashes):
		// Every stash of this copy is listed, and not this one. (Past
		// StashNamesMax the oldest names are forgotten here but kept on
		// disk: storage decides.)
		return fail(m.Code_CODE_INVALID, "no stash "+r.Stash+" on this copy")
	}
	d.restoring = r
	d.restoreOp = d.id()
	d.restoreEpoch = core.NextEpoch(core.MaxEpoch(d.fence, d.epoch), d.node, env)
	// Unique across restarts too: the new epoch is this decision's own.
	d.restoreDisplaced = fmt.Sprintf("displaced-e%d-%s-%d", d.restoreEpoch.Term, d.restoreEpoch.Node, d.restoreOp)
	return []core.Effect{
		core.Info("restoring stash", "site", d.site, "node", d.node, "stash", r.Stash, "displaced", d.restoreDisplaced,
			"new_epoch", core.EpochString(d.restoreEpoch)),
		core.Storage{Req: &m.StorageRequest{Op: m.StorageOp_STORAGE_OP_RESTORE_STASH, Site: d.site, OpId: d.restoreOp,
			StashName: r.Stash, DisplacedStash: d.restoreDisplaced, Epoch: d.restoreEpoch}},
	}
}

func (d *Dataset) restored(env *core.Env, r *m.StorageResult) []core.Effect {
	rs, epoch, displaced := d.restoring, d.restoreEpoch, d.restoreDisplaced
	d.restoring, d.restoreEpoch, d.restoreDisplaced = nil, nil, ""
	if r.Code != m.Code_CODE_OK {
		return []core.Effect{
			core.Warn("stash restore failed in storage", "site", d.site, "node", d.node, "stash", rs.Stash, "detail", r.Detail),
			core.Send{To: core.SiteAddr(d.node, d.site), Msg: &m.SyncDone{Site: d.site,
				Target: core.RollbackTarget, Code: r.Code, Detail: "restore: " + r.Detail}}}
	}
	// Storage's list is the truth: the snapshots up to the stash's base,
	// then the stash's own.
	d.snaps = slices.Clone(r.Snapshots)
	for _, s := range d.snaps {
		d.seq = max(d.seq, s.Seq)
	}
	if i := slices.Index(d.stashes, rs.Stash); i >= 0 {
		d.stashes = slices.Delete(d.stashes, i, i+1)
	}
	d.stashCount = max(0, d.stashCount-1)
	d.addStash(displaced)
	d.dirty = false
	d.fence = core.MaxEpoch(d.fence, epoch) // storage fenced the dataset at it
	if !d.active {
		// Demoted while storage restored (a newer master exists): the copy
		// stays a replica, and the next offer stashes what diverges.
		return []core.Effect{core.Warn("restored a stash after losing mastership: staying replica", "site", d.site,
			"node", d.node, "stash", rs.Stash)}
	}
	d.epoch = epoch
	for rep := range d.cursor {
		if d.find(d.cursor[rep]) < 0 {
			delete(d.cursor, rep)
		}
	}
	fx := []core.Effect{
		core.Info("stash restored", "site", d.site, "node", d.node, "stash", rs.Stash, "displaced", displaced,
			"snapshots", len(d.snaps), "epoch", core.EpochString(epoch)),
		core.Send{To: core.SiteAddr(d.node, d.site), Msg: &m.Activate{Spec: d.spec, Epoch: epoch, Replicas: d.replicas, Reason: "restore"}},
	}
	return append(fx, d.snapshotNow(env)...)
}

// deleteSite stashes the whole copy and records the site's tombstone: the
// site was deleted at del.Epoch. Its site actor stopped serving first (it
// passed the message on). A copy of a site created again after the
// tombstone ignores it; one waiting for storage deletes when that is done.
func (d *Dataset) deleteSite(env *core.Env, del *m.DeleteSite) []core.Effect {
	switch {
	case d.role == m.Role_ROLE_DELETED && !core.EpochLess(d.tombstone, del.Epoch):
		return nil // recorded already
	case d.deleting != nil && !core.EpochLess(d.deleting.Epoch, del.Epoch):
		return nil // under way
	case d.role != m.Role_ROLE_DELETED && core.CreatedAfter(d.spec, del.Epoch):
		return []core.Effect{core.Info("delete ignored: the site was created again after it", "site", d.site, "node", d.node,
			"tombstone", core.EpochString(del.Epoch))}
	case d.busy():
		d.pendingDelete = del
		return []core.Effect{core.Info("delete waits for storage", "site", d.site, "node", d.node, "tombstone", core.EpochString(del.Epoch))}
	}
	fx := []core.Effect{core.CancelTimer{Key: timerSnapshot}, core.CancelTimer{Key: timerActivate}}
	d.active = false
	for _, r := range slices.Sorted(maps.Keys(d.streams)) {
		fx = append(fx, core.CancelTimer{Key: timerStream + r})
	}
	d.streams, d.syncs, d.replicas = map[string]*stream{}, nil, nil
	d.cursor = map[string]string{}
	d.retryActivate, d.readOnlyPending = nil, false
	// A mounted snapshot would keep storage from stashing it.
	for _, name := range slices.Sorted(maps.Keys(d.mounted)) {
		fx = append(fx, core.Storage{Req: &m.StorageRequest{Op: m.StorageOp_STORAGE_OP_UNMOUNT, Site: d.site, OpId: d.id(),
			Snapshot: &m.SnapshotRef{Name: name}}})
	}
	d.mounted = nil
	names := make([]string, len(d.snaps))
	for i, s := range d.snaps {
		names[i] = s.Name
	}
	d.deleting = del
	d.deleteOp = d.id()
	stash := fmt.Sprintf("deleted-e%d-%s", del.Epoch.GetTerm(), strings.TrimSuffix(del.Epoch.GetNode(), core.TombstoneMark))
	return append(fx,
		core.Info("deleting copy: stashing it whole", "site", d.site, "node", d.node, "tombstone", core.EpochString(del.Epoch),
			"snapshots", len(names), "stash", stash),
		core.Storage{Req: &m.StorageRequest{Op: m.StorageOp_STORAGE_OP_DELETE, Site: d.site, OpId: d.deleteOp,
			Names: names, StashName: stash, Epoch: del.Epoch}})
}

func (d *Dataset) deleted(env *core.Env, r *m.StorageResult) []core.Effect {
	del := d.deleting
	d.deleting = nil
	if r.Code != m.Code_CODE_OK {
		fx := []core.Effect{core.Warn("delete failed in storage", "site", d.site, "node", d.node, "detail", r.Detail)}
		if r.Code == m.Code_CODE_BUSY && d.deleteRetries < env.Config.ActivateAttemptsMax {
			// E.g. a snapshot being sent: try again soon. Past the bound
			// the balancer asks again (this copy does not report the
			// tombstone).
			d.deleteRetries++
			d.retryDelete = del
			fx = append(fx, core.SetTimer{Key: timerDelete, After: 2 * env.Config.HeartbeatInterval})
		}
		return fx
	}
	d.deleteRetries, d.retryDelete = 0, nil
	if r.Detail != "" {
		d.addStash(r.Detail) // storage stashed what the copy held
	}
	d.role, d.tombstone = m.Role_ROLE_DELETED, del.Epoch
	d.fence = core.MaxEpoch(d.fence, del.Epoch)
	d.snaps, d.epoch, d.dirty = nil, nil, false
	return []core.Effect{core.Info("copy deleted: stashed whole, tombstone recorded", "site", d.site, "node", d.node,
		"tombstone", core.EpochString(del.Epoch), "stash", r.Detail)}
}

// later orders snapshots of one history: epoch, then sequence.
func later(a, b *m.SnapshotRef) bool {
	if c := core.CompareEpoch(a.Epoch, b.Epoch); c != 0 {
		return c > 0
	}
	return a.Seq > b.Seq
}

// received records a stream that storage applied.
func (d *Dataset) received(env *core.Env, r *m.Received) []core.Effect {
	if r.Code != m.Code_CODE_OK {
		switch {
		case r.Code == m.Code_CODE_DIVERGED && r.Snapshot != nil:
			// The disk is at another snapshot than the sender assumed. If it
			// is one this actor missed (a lost Received), learn it: the next
			// offer then starts from it.
			if l := d.latest(); d.find(r.Snapshot.Name) < 0 && (l == nil || later(r.Snapshot, l)) {
				d.snaps = append(d.snaps, r.Snapshot)
				d.seq = max(d.seq, r.Snapshot.Seq)
				return []core.Effect{core.Warn("learned a snapshot from disk", "site", d.site, "node", d.node, "snapshot", r.Snapshot.Name)}
			}
		case r.Code == m.Code_CODE_DIVERGED:
			d.dirty = true
		}
		return []core.Effect{core.Warn("receive failed", "site", d.site, "node", d.node, "from", r.FromNode, "detail", r.Detail)}
	}
	d.exists = true
	if d.role == m.Role_ROLE_UNSPECIFIED {
		d.role = m.Role_ROLE_REPLICA
	}
	d.spec = r.Spec
	d.fence = core.MaxEpoch(d.fence, r.Epoch)
	// A stream lands on top of the newest snapshot; a duplicate report of it
	// is the only way to see the same name again.
	if l := d.latest(); l == nil || l.Name != r.Snapshot.Name {
		d.snaps = append(d.snaps, r.Snapshot)
		d.seq = max(d.seq, r.Snapshot.Seq)
	}
	return nil
}

// sync brings one replica up to date with a snapshot taken now (pre-copy or
// final delta of a migration).
func (d *Dataset) sync(env *core.Env, s *m.Sync) []core.Effect {
	if !d.active {
		return []core.Effect{core.Send{To: core.SiteAddr(d.node, d.site), Msg: &m.SyncDone{
			Site: d.site, Target: s.Target, SyncId: s.SyncId, Code: m.Code_CODE_INVALID, Detail: "copy is not master"}}}
	}
	var fx []core.Effect
	if !slices.Contains(d.replicas, s.Target) {
		d.replicas = append(d.replicas, s.Target)
		slices.Sort(d.replicas)
	}
	if s.Final {
		delete(d.pausing, s.Target)
	}
	// The snapshot must be taken after this point: the next sequence number
	// not yet asked for, or the one after if one is being taken.
	need := d.seq + 1
	d.syncs = append(d.syncs, &syncWait{id: s.SyncId, target: s.Target, final: s.Final, needSeq: need})
	fx = append(fx, d.snapshotNow(env)...)
	return fx
}

// settleExtendedSyncs: a pre-copy extended to take a snapshot along
// (syncsDone) whose snapshot was not taken after all (nothing had changed,
// or it failed) is done with what its target holds.
func (d *Dataset) settleExtendedSyncs() []core.Effect {
	l := d.latest()
	if d.snapTaking || l == nil {
		return nil
	}
	settled := false
	for _, w := range d.syncs {
		if w.extended && w.needSeq > l.Seq {
			w.needSeq, settled = l.Seq, true
		}
	}
	if !settled {
		return nil
	}
	var fx []core.Effect
	for _, r := range d.replicas {
		if d.cursor[r] == l.Name {
			fx = append(fx, d.syncsDone(r, l)...)
		}
	}
	return fx
}

// syncNeedsNewer reports whether a migration step waits for replica to
// hold a snapshot newer than l.
func (d *Dataset) syncNeedsNewer(replica string, l *m.SnapshotRef) bool {
	return slices.ContainsFunc(d.syncs, func(w *syncWait) bool { return w.target == replica && w.needSeq > l.Seq })
}

func (d *Dataset) syncsDone(replica string, have *m.SnapshotRef) []core.Effect {
	var fx []core.Effect
	d.syncs = slices.DeleteFunc(d.syncs, func(w *syncWait) bool {
		if w.target != replica || have.Seq < w.needSeq || core.CompareEpoch(have.Epoch, d.epoch) != 0 {
			return false
		}
		if !w.final && !w.extended && (d.snapTaking || d.latest().GetSeq() > have.Seq) {
			// The pre-copy is done but a newer snapshot is being taken or
			// was taken meanwhile (a scheduled one): pausing now would hold
			// the site's clients while it finishes and streams, and the
			// final delta would carry its changes too. The pre-copy takes
			// it along first (once, so a busy schedule cannot hold the
			// move).
			w.needSeq, w.extended = d.seq, true
			return false
		}
		if !w.final {
			if d.pausing == nil {
				d.pausing = map[string]bool{}
			}
			d.pausing[replica] = true
		}
		fx = append(fx, core.Send{To: core.SiteAddr(d.node, d.site), Msg: &m.SyncDone{
			Site: d.site, Target: replica, SyncId: w.id, Code: m.Code_CODE_OK, Snapshot: have}})
		return true
	})
	return fx
}

// prune applies retention, keeping the newest snapshot and every snapshot a
// replica still needs as its incremental base.
func (d *Dataset) prune(env *core.Env) []core.Effect {
	return d.pruneWith(env, env.Config.Retention)
}

// pruneForSpace prunes as retention does without its recent tiers (every
// snapshot, one a minute): the node's pool is low on space. Snapshots a
// stream is sending stay too.
func (d *Dataset) pruneForSpace(env *core.Env, msg *m.StorageLow) []core.Effect {
	r := env.Config.Retention
	r.KeepAll, r.KeepMinutely = 0, 0
	fx := d.pruneWith(env, r)
	for _, e := range fx {
		if st, ok := e.(core.Storage); ok {
			fx = append(fx, core.Warn("pruning for space", "site", d.site, "node", d.node, "free_bytes", msg.FreeBytes,
				"snapshots", len(st.Req.Names)))
			break
		}
	}
	return fx
}

func (d *Dataset) pruneWith(env *core.Env, r core.Retention) []core.Effect {
	if d.pruning || len(d.snaps) < 2 {
		return nil
	}
	protected := map[string]bool{}
	for _, c := range d.cursor {
		protected[c] = true
	}
	for name := range d.mounted {
		protected[name] = true
	}
	for _, s := range d.streams {
		if s.target != nil {
			protected[s.target.Name] = true
		}
	}
	drop := Prune(r, env.NowMs(), d.snaps, protected)
	if len(drop) == 0 {
		return nil
	}
	d.pruning = true
	d.snaps = slices.DeleteFunc(d.snaps, func(s *m.SnapshotRef) bool { return slices.Contains(drop, s.Name) })
	return []core.Effect{core.Storage{Req: &m.StorageRequest{
		Op: m.StorageOp_STORAGE_OP_PRUNE, Site: d.site, OpId: d.id(), Names: drop}}}
}

// Prune returns the names of snapshots (oldest first) that retention drops:
// everything younger than KeepAll stays; then one per minute until
// KeepMinutely, one per hour until KeepHourly, one per day until KeepDaily;
// older ones go. The newest snapshot and the
// protected ones always stay.
func Prune(r core.Retention, nowMs int64, snaps []*m.SnapshotRef, protected map[string]bool) []string {
	keep := make([]bool, len(snaps))
	buckets := map[string]bool{}
	for i := len(snaps) - 1; i >= 0; i-- {
		s := snaps[i]
		age := time.Duration(nowMs-s.TakenMs) * time.Millisecond
		var bucket string
		switch {
		case i == len(snaps)-1 || protected[s.Name] || age < r.KeepAll:
			keep[i] = true
			continue
		case age < r.KeepMinutely:
			bucket = fmt.Sprintf("m%d", s.TakenMs/int64(time.Minute/time.Millisecond))
		case age < r.KeepHourly:
			bucket = fmt.Sprintf("h%d", s.TakenMs/int64(time.Hour/time.Millisecond))
		case age < r.KeepDaily:
			bucket = fmt.Sprintf("d%d", s.TakenMs/int64(24*time.Hour/time.Millisecond))
		default:
			continue
		}
		// Newest first, so each bucket keeps its newest snapshot.
		if !buckets[bucket] {
			buckets[bucket] = true
			keep[i] = true
		}
	}
	var drop []string
	for i, s := range snaps {
		if !keep[i] {
			drop = append(drop, s.Name)
		}
	}
	return drop
}
