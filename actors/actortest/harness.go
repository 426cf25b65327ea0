// Package actortest drives the deterministic actors of actors/ across named
// nodes with a virtual clock, a FIFO message queue with zero latency, and a
// tiny storage that completes every request at once. It is the transcript
// harness (github.com/cockroachdb/datadriven) of the actor packages, in the
// manner of etcd's rafttest: no goroutines, no real time, no randomness.
package actortest

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hybridcluster/hybridcluster/actors/balancer"
	"github.com/hybridcluster/hybridcluster/actors/core"
	"github.com/hybridcluster/hybridcluster/actors/dataset"
	"github.com/hybridcluster/hybridcluster/actors/node"
	"github.com/hybridcluster/hybridcluster/actors/site"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// Origin is the virtual clock's zero: a fixed instant, so snapshot times and
// deadlines are the same on every run.
// Origin is the Unix epoch, so that times and clock-based epoch terms read
// as milliseconds since the transcript began.
var Origin = time.Unix(0, 0).UTC()

// stepsMax bounds one stabilize: a livelock shows as an error line, not a hang.
const stepsMax = 20000

type envelope struct {
	from string
	to   core.Address
	msg  proto.Message
}

type timerKey struct {
	addr core.Address
	key  string
}

type timer struct {
	due time.Duration
	seq uint64
}

// Harness is one simulated cluster.
type Harness struct {
	Config   *core.Config
	now      time.Duration
	nodes    []string
	up       map[string]bool
	inc      map[string]uint64
	actors   map[core.Address]core.Actor
	timers   map[timerKey]timer
	seq      uint64
	queue    []envelope
	blocked  map[[2]string]bool
	disk     map[string]map[string]*disk // node -> site
	balancer bool
	// load is requests per report interval that the harness reports for each
	// site on behalf of the site actor, just before a node reports.
	load      map[string]uint64
	requestID uint64

	drops      map[string]int  // messages of a type to lose on delivery (drop command)
	hidden     map[string]bool // message type names and "Timer/<key>" not printed
	out        *strings.Builder
	printedAt  time.Duration
	Responses  []*m.SiteResponse // what clients were answered, in order
	Views      []*m.AdminView    // what admin queries were answered, in order
	queryID    uint64
	Deliveries int
	// Sent, when set, sees every message sent (as it is queued).
	Sent func(from string, to core.Address, msg proto.Message)
}

// disk is what the fake storage keeps of one copy.
type disk struct {
	exists  bool
	role    m.Role
	fence   *m.Epoch
	spec    *m.SiteSpec
	snaps   []*m.SnapshotRef
	stashes []string
	// stashed is what each stash holds: the snapshot it was taken above
	// ("" for everything) and the snapshots after it.
	stashed map[string]stashRec
	mounts  map[string]bool // snapshots mounted read-only
	// tombstone: the epoch of the site's deletion (role DELETED), kept
	// apart from the fence as the runtime's catalog does.
	tombstone *m.Epoch
}

type stashRec struct {
	base  string
	snaps []*m.SnapshotRef
}

// stash puts the snapshots after index i (and the live data) aside as name.
func (d *disk) stash(name string, i int) {
	if d.stashed == nil {
		d.stashed = map[string]stashRec{}
	}
	rec := stashRec{snaps: slices.Clone(d.snaps[i+1:])}
	if i >= 0 {
		rec.base = d.snaps[i].Name
	}
	d.stashed[name] = rec
	d.stashes = append(d.stashes, name)
	d.snaps = d.snaps[:i+1]
}

// New returns an empty harness with the default configuration, except a
// snapshot interval of 2 s that the transcripts were written with (a boot
// argument can change it), so that they follow behaviour rather than the
// production default.
func New() *Harness {
	cfg := core.Default()
	cfg.SnapshotInterval = 2 * time.Second
	h := &Harness{Config: cfg, up: map[string]bool{}, inc: map[string]uint64{},
		actors: map[core.Address]core.Actor{}, timers: map[timerKey]timer{}, blocked: map[[2]string]bool{},
		disk: map[string]map[string]*disk{}, balancer: true, load: map[string]uint64{}, hidden: map[string]bool{}, drops: map[string]int{},
		out: &strings.Builder{}, printedAt: -1}
	for _, k := range []string{"Heartbeat", "NodeReport", "DatasetInfo", "BalancerRole", "RouteTable",
		"Timer/heartbeat", "Timer/report", "Timer/load", "Timer/plan", "Timer/prune"} {
		h.hidden[k] = true
	}
	return h
}

// Now is the virtual time.
func (h *Harness) Now() time.Time { return Origin.Add(h.now) }

func (h *Harness) printf(format string, args ...any) {
	if h.printedAt != h.now {
		h.printedAt = h.now
		fmt.Fprintf(h.out, "t=%v\n", h.now)
	}
	fmt.Fprintf(h.out, format+"\n", args...)
}

func (h *Harness) hiddenMsg(msg proto.Message) bool {
	if t, ok := msg.(*m.Timer); ok {
		return h.hidden["Timer/"+t.Key] || h.hidden["Timer"]
	}
	return h.hidden[string(msg.ProtoReflect().Descriptor().Name())]
}

// Boot starts every node with an empty disk.
func (h *Harness) Boot(nodes []string) {
	h.nodes = slices.Clone(nodes)
	slices.Sort(h.nodes)
	for _, n := range h.nodes {
		h.disk[n] = map[string]*disk{}
		h.start(n)
	}
}

func (h *Harness) start(n string) {
	h.up[n] = true
	h.inc[n]++
	b := &m.NodeBoot{Node: n, Members: h.nodes, Incarnation: h.inc[n]}
	for _, s := range sortedKeys(h.disk[n]) {
		d := h.disk[n][s]
		if !d.exists && d.role != m.Role_ROLE_DELETED {
			continue
		}
		db := &m.DatasetBoot{Info: &m.DatasetInfo{Site: s, Node: n, Role: d.role, Epoch: d.fence, Spec: d.spec},
			Snapshots: slices.Clone(d.snaps), Stashes: slices.Clone(d.stashes)}
		if d.role == m.Role_ROLE_DELETED {
			db.Info.Epoch = d.tombstone
		}
		if len(d.snaps) > 0 {
			db.Info.Latest = d.snaps[len(d.snaps)-1]
		}
		b.Datasets = append(b.Datasets, db)
	}
	h.enqueue("", core.NodeAddr(n), b)
}

// Crash stops a node: its actors, timers and queued messages (to and from it)
// are gone; its disk stays.
func (h *Harness) Crash(n string) {
	h.up[n] = false
	for a := range h.actors {
		if a.Node == n {
			delete(h.actors, a)
		}
	}
	for k := range h.timers {
		if k.addr.Node == n {
			delete(h.timers, k)
		}
	}
	h.queue = slices.DeleteFunc(h.queue, func(e envelope) bool { return e.from == n || e.to.Node == n })
}

// Restart boots a crashed node again from its disk.
func (h *Harness) Restart(n string) { h.start(n) }

// Partition cuts a and b apart in both directions until Heal.
func (h *Harness) Partition(a, b string) {
	h.blocked[[2]string{a, b}] = true
	h.blocked[[2]string{b, a}] = true
}

// Heal ends every partition.
func (h *Harness) Heal() { clear(h.blocked) }

func (h *Harness) cut(from, to string) bool { return from != "" && h.blocked[[2]string{from, to}] }

func (h *Harness) enqueue(from string, to core.Address, msg proto.Message) {
	if to.Kind == core.KindBalancer && !h.balancer {
		return
	}
	if h.cut(from, to.Node) {
		if !h.hiddenMsg(msg) {
			h.printf("  dropped (partition) %s -> %s %s", from, to, Format(msg))
		}
		return
	}
	if h.Sent != nil {
		h.Sent(from, to, msg)
	}
	// A copy per receiver, as if it crossed the wire: actors may keep or
	// modify what they receive.
	h.queue = append(h.queue, envelope{from: from, to: to, msg: proto.Clone(msg)})
}

func (h *Harness) actor(a core.Address) core.Actor {
	if x := h.actors[a]; x != nil {
		return x
	}
	var x core.Actor
	switch a.Kind {
	case core.KindNode:
		x = node.New(a.Node)
	case core.KindSite:
		x = site.New(a.Node, a.Site)
	case core.KindDataset:
		x = dataset.New(a.Node, a.Site)
	case core.KindBalancer:
		x = balancer.New(a.Node)
	default:
		panic(fmt.Sprintf("no actor for %s", a))
	}
	h.actors[a] = x
	return x
}

// DeliverOne delivers the oldest queued message; false when the queue is empty.
func (h *Harness) DeliverOne() (proto.Message, bool) {
	if len(h.queue) == 0 {
		return nil, false
	}
	e := h.queue[0]
	h.queue = h.queue[1:]
	if !h.up[e.to.Node] {
		return e.msg, true
	}
	if name := string(e.msg.ProtoReflect().Descriptor().Name()); h.drops[name] > 0 {
		h.drops[name]--
		h.printf("  dropped (lost) %s -> %s %s", e.from, e.to, Format(e.msg))
		return e.msg, true
	}
	if h.cut(e.from, e.to.Node) {
		if !h.hiddenMsg(e.msg) {
			h.printf("  dropped (partition) %s -> %s %s", e.from, e.to, Format(e.msg))
		}
		return e.msg, true
	}
	h.step(e.to, e.msg)
	return e.msg, true
}

// Stabilize delivers messages until the queue is empty, or until a message
// of type until was delivered count times ("" delivers everything).
func (h *Harness) Stabilize(until string, count int) {
	for i := 0; ; i++ {
		if i == stepsMax {
			h.printf("error: not stable after %d deliveries (%d queued)", stepsMax, len(h.queue))
			return
		}
		msg, ok := h.DeliverOne()
		if !ok {
			return
		}
		if until != "" && string(msg.ProtoReflect().Descriptor().Name()) == until {
			if count--; count <= 0 {
				return
			}
		}
	}
}

// Tick advances the clock by d, firing due timers in order and stabilizing
// after each.
func (h *Harness) Tick(d time.Duration) {
	target := h.now + d
	h.Stabilize("", 0)
	for {
		var next timerKey
		var best timer
		found := false
		for k, t := range h.timers {
			if t.due <= target && (!found || t.due < best.due || t.due == best.due && t.seq < best.seq) {
				next, best, found = k, t, true
			}
		}
		if !found {
			break
		}
		h.now = best.due
		delete(h.timers, next)
		if next.addr.Kind == core.KindNode && next.key == "report" {
			h.reportLoad(next.addr.Node)
		}
		h.step(next.addr, &m.Timer{Key: next.key})
		h.Stabilize("", 0)
	}
	h.now = target
}

// reportLoad plays the part of the site actors' load timer: the node hears
// how many requests each site it masters served in the last interval.
func (h *Harness) reportLoad(n string) {
	for _, s := range sortedKeys(h.load) {
		st, ok := h.actors[core.SiteAddr(n, s)].(*site.Site)
		if !ok || st.Phase() != m.SitePhase_SITE_PHASE_ACTIVE {
			continue
		}
		info := st.State()
		h.step(core.NodeAddr(n), &m.DatasetInfo{Site: s, Node: n, Phase: info.Phase, Epoch: info.Epoch,
			FtpLeases: info.FtpLeases, Requests: h.load[s]})
	}
}

func (h *Harness) env(a core.Address) *core.Env {
	return &core.Env{Self: a, Now: h.Now(), Config: h.Config}
}

// step runs one input through one actor and carries out its effects.
func (h *Harness) step(to core.Address, msg proto.Message) {
	h.Deliveries++
	input := Format(msg) // before Step, which may modify its input
	fx := h.actor(to).Step(h.env(to), msg)
	var lines []string
	var later []func()
	for _, e := range fx {
		switch e := e.(type) {
		case core.Send:
			if e.To.Kind == core.KindClient {
				switch resp := e.Msg.(type) {
				case *m.SiteResponse:
					h.Responses = append(h.Responses, resp)
					lines = append(lines, fmt.Sprintf("  client@%s <- %s", e.To.Node, Format(resp)))
				case *m.AdminView:
					h.Views = append(h.Views, resp)
					lines = append(lines, fmt.Sprintf("  client@%s <- %s", e.To.Node, formatView(resp)))
				default:
					panic(fmt.Sprintf("%s sent %T to a client", to, e.Msg))
				}
				continue
			}
			later = append(later, func() { h.enqueue(to.Node, e.To, e.Msg) })
		case core.Broadcast:
			for _, n := range h.nodes {
				later = append(later, func() { h.enqueue(to.Node, core.NodeAddr(n), e.Msg) })
			}
		case core.SetTimer:
			h.seq++
			h.timers[timerKey{to, e.Key}] = timer{due: h.now + e.After, seq: h.seq}
		case core.CancelTimer:
			delete(h.timers, timerKey{to, e.Key})
		case core.Storage:
			lines = append(lines, "  storage "+Format(e.Req))
			later = append(later, func() { h.storage(to, e.Req) })
		case core.Process:
			lines = append(lines, fmt.Sprintf("  process start=%v", e.Req.Start))
		case core.Serve:
			lines = append(lines, fmt.Sprintf("  serve request_id=%d epoch=%s", e.Req.RequestId, core.EpochString(e.Epoch)))
			resp := &m.SiteResponse{Site: e.Req.Site, RequestId: e.Req.RequestId, Code: m.Code_CODE_OK,
				Master: to.Node, Epoch: e.Epoch, WriteId: e.Req.WriteId}
			later = append(later, func() { h.enqueue(to.Node, core.NodeAddr(e.Req.EntryNode), resp) })
		case core.Log:
			lines = append(lines, fmt.Sprintf("  %s %s %s", e.Level, e.Msg, formatAttrs(to, e.Attrs)))
		default:
			panic(fmt.Sprintf("unknown effect %T", e))
		}
	}
	if len(lines) > 0 || !h.hiddenMsg(msg) {
		h.printf("%s <- %s", to, input)
		for _, l := range lines {
			h.printf("%s", strings.TrimRight(l, " "))
		}
	}
	for _, f := range later {
		f()
	}
}

// storage completes a request at once; results are queued like messages.
func (h *Harness) storage(from core.Address, req *m.StorageRequest) {
	d := h.diskOf(from.Node, req.Site)
	res := &m.StorageResult{Op: req.Op, Site: req.Site, OpId: req.OpId, Code: m.Code_CODE_OK}
	fail := func(code m.Code, detail string) { res.Code, res.Detail = code, detail }
	switch req.Op {
	case m.StorageOp_STORAGE_OP_CREATE:
		d.exists, d.role, d.spec, d.fence = true, req.Role, req.Spec, core.MaxEpoch(d.fence, req.Epoch)
	case m.StorageOp_STORAGE_OP_SET_ROLE:
		if !d.exists {
			fail(m.Code_CODE_FAILED, "no such dataset")
			break
		}
		d.role, d.fence = req.Role, core.MaxEpoch(d.fence, req.Epoch)
		if req.Spec != nil { // as the runtime's catalog records it
			d.spec = req.Spec
		}
	case m.StorageOp_STORAGE_OP_SNAPSHOT:
		if !d.exists {
			fail(m.Code_CODE_FAILED, "no such dataset")
			break
		}
		ref := proto.Clone(req.Snapshot).(*m.SnapshotRef)
		d.snaps = append(d.snaps, ref)
		res.Snapshot = ref
	case m.StorageOp_STORAGE_OP_SEND:
		h.send(from, req, res)
		return
	case m.StorageOp_STORAGE_OP_STASH:
		i := slices.IndexFunc(d.snaps, func(s *m.SnapshotRef) bool { return s.Name == req.Snapshot.GetName() })
		if req.Snapshot.GetName() != "" && i < 0 {
			fail(m.Code_CODE_NO_COMMON_SNAPSHOT, "base not here")
			break
		}
		d.stash(req.StashName, i)
		d.role = m.Role_ROLE_REPLICA
		res.Snapshot, res.Detail = req.Snapshot, req.StashName
	case m.StorageOp_STORAGE_OP_ROLLBACK:
		i := slices.IndexFunc(d.snaps, func(s *m.SnapshotRef) bool { return s.Name == req.Snapshot.GetName() })
		if i < 0 {
			fail(m.Code_CODE_INVALID, "no snapshot "+req.Snapshot.GetName())
			break
		}
		d.stash(req.StashName, i)
		d.fence = core.MaxEpoch(d.fence, req.Epoch)
		res.Detail = req.StashName
	case m.StorageOp_STORAGE_OP_RESTORE_STASH:
		rec, ok := d.stashed[req.StashName]
		i := slices.IndexFunc(d.snaps, func(s *m.SnapshotRef) bool { return s.Name == rec.base })
		switch {
		case !ok:
			fail(m.Code_CODE_FAILED, "no stash "+req.StashName)
		case rec.base != "" && i < 0:
			fail(m.Code_CODE_NO_COMMON_SNAPSHOT, "base "+rec.base+" not here")
		default:
			d.stash(req.DisplacedStash, i)
			d.snaps = append(d.snaps, rec.snaps...)
			delete(d.stashed, req.StashName)
			d.stashes = slices.DeleteFunc(d.stashes, func(n string) bool { return n == req.StashName })
			d.fence = core.MaxEpoch(d.fence, req.Epoch)
			res.Snapshots = slices.Clone(d.snaps)
		}
	case m.StorageOp_STORAGE_OP_DELETE:
		if d.exists {
			d.stash(req.StashName, -1)
			res.Detail = req.StashName
		}
		d.role, d.tombstone, d.fence = m.Role_ROLE_DELETED, req.Epoch, core.MaxEpoch(d.fence, req.Epoch)
	case m.StorageOp_STORAGE_OP_MOUNT, m.StorageOp_STORAGE_OP_UNMOUNT:
		name := req.Snapshot.GetName()
		has := slices.ContainsFunc(d.snaps, func(s *m.SnapshotRef) bool { return s.Name == name })
		switch {
		case req.Op == m.StorageOp_STORAGE_OP_UNMOUNT && !d.mounts[name]:
			fail(m.Code_CODE_FAILED, "not mounted")
		case req.Op == m.StorageOp_STORAGE_OP_UNMOUNT:
			delete(d.mounts, name)
		case !has:
			fail(m.Code_CODE_FAILED, "no snapshot "+name)
		default:
			if d.mounts == nil {
				d.mounts = map[string]bool{}
			}
			d.mounts[name] = true
			res.MountPath = "/views/" + from.Node + "/" + req.Site + "/" + name
		}
	case m.StorageOp_STORAGE_OP_PRUNE:
		latest := d.snaps[len(d.snaps)-1].Name
		d.snaps = slices.DeleteFunc(d.snaps, func(s *m.SnapshotRef) bool {
			return s.Name != latest && slices.Contains(req.Names, s.Name)
		})
	default:
		fail(m.Code_CODE_INVALID, "unsupported op "+req.Op.String())
	}
	h.enqueue("", from, res)
}

// send applies a stream to the receiver's disk atomically, delivers Received
// there, then answers the sender.
func (h *Harness) send(from core.Address, req *m.StorageRequest, res *m.StorageResult) {
	res.StreamId, res.ToNode, res.StreamBase = req.StreamId, req.ToNode, req.Base
	rd := h.diskOf(req.ToNode, req.Site)
	switch {
	case !h.up[req.ToNode] || h.cut(from.Node, req.ToNode):
		res.Code, res.Detail = m.Code_CODE_FAILED, "stream cut"
	case req.Base == "" && len(rd.snaps) > 0:
		res.Code, res.Detail = m.Code_CODE_NO_COMMON_SNAPSHOT, "full stream onto a copy with snapshots"
	case req.Base != "" && (len(rd.snaps) == 0 || rd.snaps[len(rd.snaps)-1].Name != req.Base):
		res.Code, res.Detail = m.Code_CODE_DIVERGED, "receiver is not at base "+req.Base
		// The receiving side learns what its disk holds (as the runtime's
		// stream endpoint tells its dataset actor).
		if len(rd.snaps) > 0 {
			h.enqueue(from.Node, core.DatasetAddr(req.ToNode, req.Site), &m.Received{Site: req.Site, StreamId: req.StreamId,
				FromNode: from.Node, Snapshot: rd.snaps[len(rd.snaps)-1], Code: m.Code_CODE_DIVERGED, Detail: res.Detail})
		}
	default:
		if !rd.exists || rd.role == m.Role_ROLE_DELETED {
			rd.exists, rd.role = true, m.Role_ROLE_REPLICA
		}
		rd.spec, rd.fence = req.Spec, core.MaxEpoch(rd.fence, req.Epoch)
		rd.snaps = append(rd.snaps, req.Snapshot)
		res.Snapshot = req.Snapshot
		h.enqueue(from.Node, core.DatasetAddr(req.ToNode, req.Site), &m.Received{Site: req.Site, StreamId: req.StreamId,
			FromNode: from.Node, Snapshot: req.Snapshot, Epoch: req.Epoch, Code: m.Code_CODE_OK, Spec: req.Spec})
	}
	h.enqueue("", from, res)
}

func (h *Harness) diskOf(n, s string) *disk {
	if h.disk[n] == nil {
		h.disk[n] = map[string]*disk{}
	}
	d := h.disk[n][s]
	if d == nil {
		d = &disk{}
		h.disk[n][s] = d
	}
	return d
}

func sortedKeys[V any](mp map[string]V) []string {
	keys := make([]string, 0, len(mp))
	for k := range mp {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
