// Package sim is the deterministic failure simulator: the same actors/ code on
// a seeded virtual world (virtual clock, faulty network, simulated disks with
// snapshot semantics, simulated clients) with fault injection and checkers for
// the invariants of DESIGN.md. One seed replays one run exactly.
package sim

import (
	"container/heap"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hybridcluster/hybridcluster/actors/balancer"
	"github.com/hybridcluster/hybridcluster/actors/core"
	"github.com/hybridcluster/hybridcluster/actors/dataset"
	"github.com/hybridcluster/hybridcluster/actors/node"
	"github.com/hybridcluster/hybridcluster/actors/site"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// epoch0 is the virtual clock's origin: a fixed instant (the Unix epoch, so
// that clock-based epoch terms read as milliseconds into the run).
var epoch0 = time.Unix(0, 0).UTC()

type event struct {
	at  int64 // virtual microseconds
	seq uint64
	fn  func()
}

type eventHeap []*event

func (h eventHeap) Len() int { return len(h) }
func (h eventHeap) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].seq < h[j].seq
}
func (h eventHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *eventHeap) Push(x any)   { *h = append(*h, x.(*event)) }
func (h *eventHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

type timerKey struct {
	addr core.Address
	key  string
}

type host struct {
	name        string
	up          bool
	incarnation uint64
	actors      map[core.Address]core.Actor
	timers      map[timerKey]uint64
	store       *simStore
	slowDisk    bool
	fullDisk    bool
	// stopping: told to stop (faultStop); it takes no copy until it is
	// down and up again.
	stopping    bool
	handedOff   []string // the sites its hand-off moved (while stopping)
	crashedAtUs int64
}

// World is one simulated cluster.
type World struct {
	opt    Options
	cfg    *core.Config
	rng    *rand.Rand
	now    int64
	seq    uint64
	events eventHeap
	free   []*event // events already run, for reuse
	hosts  map[string]*host
	names  []string
	gen    uint64

	// network faults
	blocked  map[[2]string]bool // from,to
	dropRate float64
	dupRate  float64

	trace      *digest
	envBuf     core.Env
	verbose    io.Writer
	eventCount int

	chk    *checker
	cl     *clients
	healed bool

	midMigrationCrash float64
	midReceiveCrash   float64
	stashes           int
	violations        []Violation
}

// Violation is one broken invariant.
type Violation struct {
	Invariant string
	AtMs      int64
	Detail    string
}

func (v Violation) String() string {
	return fmt.Sprintf("%s at %.3fs: %s", v.Invariant, float64(v.AtMs)/1000, v.Detail)
}

func (w *World) nowMs() int64 { return w.now / 1000 }

func (w *World) at(delay time.Duration, fn func()) {
	w.seq++
	var ev *event
	if n := len(w.free); n > 0 {
		ev, w.free = w.free[n-1], w.free[:n-1]
	} else {
		ev = new(event)
	}
	*ev = event{at: w.now + int64(delay/time.Microsecond), seq: w.seq, fn: fn}
	heap.Push(&w.events, ev)
}

func (w *World) violate(inv, format string, args ...any) {
	v := Violation{Invariant: inv, AtMs: w.nowMs(), Detail: fmt.Sprintf(format, args...)}
	w.violations = append(w.violations, v)
	w.tracef("VIOLATION %s", v)
}

// tracef adds a line to the trace digest and, with -v, prints it.
func (w *World) tracef(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	fmt.Fprintf(w.trace, "%d %s\n", w.now, line)
	if w.verbose != nil {
		fmt.Fprintf(w.verbose, "%9.3fs %s\n", float64(w.now)/1e6, line)
	}
}

// traceDelivery feeds a delivery into the digest without formatting text
// (the hot path); with -v it prints it.
func (w *World) traceDelivery(to core.Address, msg proto.Message) {
	w.eventCount++
	d := w.trace
	d.u64(uint64(w.now))
	d.u64(uint64(to.Kind))
	d.str(to.Node)
	d.str(to.Site)
	d.str(string(msg.ProtoReflect().Descriptor().Name()))
	if w.verbose != nil && w.opt.VerboseMessages {
		fmt.Fprintf(w.verbose, "%9.3fs   -> %s %s\n", float64(w.now)/1e6, to, shortMsg(msg))
	}
}

func shortMsg(msg proto.Message) string {
	return string(msg.ProtoReflect().Descriptor().Name())
}

// env fills the one Env the world hands to every Step (actors must not keep
// it past the call).
func (w *World) env(addr core.Address) *core.Env {
	w.envBuf = core.Env{Self: addr, Now: epoch0.Add(time.Duration(w.now) * time.Microsecond), Config: w.cfg}
	return &w.envBuf
}

func (w *World) newActor(h *host, addr core.Address) core.Actor {
	switch addr.Kind {
	case core.KindNode:
		return node.New(h.name)
	case core.KindBalancer:
		return balancer.New(h.name)
	case core.KindSite:
		return site.New(h.name, addr.Site)
	case core.KindDataset:
		return dataset.New(h.name, addr.Site)
	}
	panic(fmt.Sprintf("no actor kind for %s", addr))
}

// deliver runs one input through the actor at addr (created on first use).
func (w *World) deliver(addr core.Address, msg proto.Message) {
	h := w.hosts[addr.Node]
	if h == nil || !h.up {
		return
	}
	a := h.actors[addr]
	if a == nil {
		a = w.newActor(h, addr)
		h.actors[addr] = a
	}
	w.traceDelivery(addr, msg)
	w.chk.delivered(h, addr, msg)
	fx := a.Step(w.env(addr), msg)
	w.execute(h, addr, fx)
}

func (w *World) execute(h *host, from core.Address, fx []core.Effect) {
	for _, e := range fx {
		switch e := e.(type) {
		case core.Send:
			w.send(h.name, e.To, e.Msg)
		case core.Broadcast:
			for _, n := range w.names {
				w.send(h.name, core.NodeAddr(n), e.Msg)
			}
		case core.SetTimer:
			w.gen++
			gen, inc, k := w.gen, h.incarnation, timerKey{from, e.Key}
			h.timers[k] = gen
			w.at(e.After, func() {
				if h.up && h.incarnation == inc && h.timers[k] == gen {
					delete(h.timers, k)
					w.deliver(from, &m.Timer{Key: k.key})
				}
			})
		case core.CancelTimer:
			delete(h.timers, timerKey{from, e.Key})
		case core.Storage:
			w.storage(h, from, e.Req)
		case core.Process:
			// Site processes have no simulated behaviour beyond being asked for.
		case core.Serve:
			w.serve(h, e.Req, e.Epoch)
		case core.Log:
			if w.verbose != nil {
				w.tracef("%s: %s %v", from, e.Msg, e.Attrs)
			} else {
				w.trace.str(e.Msg)
			}
		default:
			panic(fmt.Sprintf("unknown effect %T", e))
		}
	}
}

// send carries a message across the simulated network.
func (w *World) send(from string, to core.Address, msg proto.Message) {
	if to.Kind == core.KindClient {
		// Simulated clients only send site requests; anything else for a
		// client address (an AdminView) has no one waiting and is ignored,
		// leaving the trace as it was.
		switch msg := msg.(type) {
		case *m.SiteResponse:
			w.clientResponse(to.Node, msg)
		case *m.MigrateResult:
			// A stopping host's hand-off ended (faultStop).
			if h := w.hosts[to.Node]; h != nil && h.stopping && msg.Code == m.Code_CODE_OK {
				h.handedOff = append(h.handedOff, msg.Site)
			}
		}
		return
	}
	if to.Node == "" {
		return
	}
	if from == to.Node {
		w.at(10*time.Microsecond, func() { w.deliver(to, msg) })
		return
	}
	if w.blocked[[2]string{from, to.Node}] || w.rng.Float64() < w.dropRate {
		return
	}
	delay := w.latency()
	w.at(delay, func() {
		if !w.blocked[[2]string{from, to.Node}] {
			w.deliver(to, msg)
		}
	})
	if w.dupRate > 0 && w.rng.Float64() < w.dupRate {
		dup := proto.Clone(msg)
		w.at(w.latency()+delay, func() { w.deliver(to, dup) })
	}
}

func (w *World) latency() time.Duration {
	lo, hi := w.opt.LatencyMin, w.opt.LatencyMax
	return lo + time.Duration(w.rng.Int64N(int64(hi-lo)+1))
}

func (w *World) diskDelay(h *host, base time.Duration) time.Duration {
	if h.slowDisk {
		return base * 2000
	}
	return base
}

// storage carries out a storage effect with a disk delay; its result comes
// back to the actor unless the node crashed meanwhile.
func (w *World) storage(h *host, from core.Address, req *m.StorageRequest) {
	if req.Op == m.StorageOp_STORAGE_OP_SEND {
		w.stream(h, from, req)
		return
	}
	res := w.storageLocal(h, req)
	inc := h.incarnation
	w.at(w.diskDelay(h, 2*time.Millisecond+time.Duration(w.rng.Int64N(int64(3*time.Millisecond)))), func() {
		if h.up && h.incarnation == inc {
			w.deliver(from, res)
		}
	})
}

// stream sends a snapshot (incrementally from req.Base) to another node. The
// receiver applies it atomically at arrival, or not at all.
func (w *World) stream(h *host, from core.Address, req *m.StorageRequest) {
	fail := func(code m.Code, detail string) {
		res := &m.StorageResult{Op: req.Op, Site: req.Site, OpId: req.OpId, Code: code, Detail: detail, StreamId: req.StreamId, ToNode: req.ToNode}
		inc := h.incarnation
		w.at(w.latency(), func() {
			if h.up && h.incarnation == inc {
				w.deliver(from, res)
			}
		})
	}
	d := h.store.get(req.Site)
	ti := d.find(req.Snapshot.GetName())
	if ti < 0 {
		fail(m.Code_CODE_FAILED, "snapshot "+req.Snapshot.GetName()+" not here")
		return
	}
	target := d.snaps[ti]
	var baseBlob *blob
	if req.Base != "" {
		bi := d.find(req.Base)
		if bi < 0 {
			fail(m.Code_CODE_NO_COMMON_SNAPSHOT, "base "+req.Base+" not here")
			return
		}
		baseBlob = d.snaps[bi].b
	}
	var writes uint64
	for b := target.b; b != nil && b != baseBlob; b = b.parent {
		writes += uint64(len(b.writes))
	}
	bytes := writes*writeBytes + 1024
	transfer := w.latency() + time.Duration(bytes)*time.Second/time.Duration(w.opt.BandwidthBytesPerS)
	rh := w.hosts[req.ToNode]
	sinc, rinc := h.incarnation, rh.incarnation
	transfer = w.diskDelay(rh, w.diskDelay(h, transfer))
	epoch := req.Epoch
	w.maybeCrashMidReceive(req, transfer)
	w.at(transfer, func() {
		if !h.up || h.incarnation != sinc {
			return // the sender died: the stream is cut and nothing is applied
		}
		if !rh.up || rh.incarnation != rinc || w.blocked[[2]string{h.name, rh.name}] || w.blocked[[2]string{rh.name, h.name}] {
			fail(m.Code_CODE_FAILED, "stream cut")
			return
		}
		rd := rh.store.get(req.Site)
		switch {
		case rh.fullDisk:
			fail(m.Code_CODE_OUT_OF_SPACE, "receiver disk full")
			return
		case rh.stopping:
			fail(m.Code_CODE_FAILED, "receiver is stopping")
			return
		case req.Base == "" && len(rd.snaps) > 0:
			fail(m.Code_CODE_NO_COMMON_SNAPSHOT, "full stream onto a copy with snapshots")
			return
		case req.Base != "" && (rd.latest() == nil || rd.latest().ref.Name != req.Base):
			fail(m.Code_CODE_DIVERGED, "receiver is not at base "+req.Base)
			if l := rd.latest(); l != nil {
				// The receiving side learns what its disk holds.
				w.deliver(core.DatasetAddr(rh.name, req.Site), &m.Received{Site: req.Site, StreamId: req.StreamId,
					FromNode: h.name, Snapshot: l.ref, Code: m.Code_CODE_DIVERGED, Detail: "not at base " + req.Base})
			}
			return
		case len(rd.pending) > 0:
			fail(m.Code_CODE_DIVERGED, "receiver modified since its latest snapshot")
			// The receiving side learns it too (in production, from its
			// own failed `zfs receive`).
			w.deliver(core.DatasetAddr(rh.name, req.Site), &m.Received{Site: req.Site, StreamId: req.StreamId,
				FromNode: h.name, Code: m.Code_CODE_DIVERGED, Detail: "modified since the newest snapshot"})
			return
		case core.EpochLess(epoch, rd.fence) && !w.cfg.Mutations.SkipFencing:
			// Storage fences too (a dataset property in production): the
			// receiver may have been promoted since it accepted the offer.
			fail(m.Code_CODE_FENCED, "stream epoch older than the receiver's")
			return
		}
		if !isAncestor(rd.head, target.b) {
			w.violate("I1", "site %s: stream %s onto %s which is not its ancestor", req.Site, target.ref.Name, rh.name)
		}
		w.noteEpoch(rh, req.Site, rd, epoch, "stream "+target.ref.Name+" from "+h.name)
		if !rd.exists || rd.role == m.Role_ROLE_DELETED {
			rd.exists = true
			rd.role = m.Role_ROLE_REPLICA
		}
		rd.spec = req.Spec
		rd.fence = core.MaxEpoch(rd.fence, epoch)
		rd.snaps = append(rd.snaps, target)
		rd.head = target.b
		w.chk.bytesStreamed += bytes
		w.deliver(core.DatasetAddr(rh.name, req.Site), &m.Received{Site: req.Site, StreamId: req.StreamId,
			FromNode: h.name, Snapshot: target.ref, Epoch: epoch, Code: m.Code_CODE_OK, Spec: req.Spec})
		res := &m.StorageResult{Op: req.Op, Site: req.Site, OpId: req.OpId, Code: m.Code_CODE_OK,
			Snapshot: target.ref, Bytes: bytes, StreamId: req.StreamId, ToNode: req.ToNode, StreamBase: req.Base}
		w.at(w.latency(), func() {
			if h.up && h.incarnation == sinc {
				w.deliver(from, res)
			}
		})
	})
}

// serve is the master's backend: a write lands in the live dataset and the
// entry node is answered.
func (w *World) serve(h *host, req *m.SiteRequest, epoch *m.Epoch) {
	if req.Write {
		d := h.store.get(req.Site)
		w.chk.applied(h, req, epoch, d)
		d.pending = append(d.pending, req.WriteId)
	}
	w.send(h.name, core.NodeAddr(req.EntryNode), &m.SiteResponse{Site: req.Site, RequestId: req.RequestId,
		Code: m.Code_CODE_OK, Master: h.name, Epoch: epoch, WriteId: req.WriteId})
}

func (w *World) crash(h *host) {
	if !h.up {
		return
	}
	h.up = false
	h.crashedAtUs = w.now
	lost := h.store.crash()
	h.actors = map[core.Address]core.Actor{}
	h.timers = map[timerKey]uint64{}
	h.slowDisk, h.fullDisk, h.stopping, h.handedOff = false, false, false, nil
	w.tracef("FAULT crash %s (lost %d unsnapshotted writes)", h.name, lost)
	w.chk.crashed(h)
	w.clientsLost(h.name)
}

func (w *World) boot(h *host) {
	h.up = true
	h.incarnation++
	h.actors = map[core.Address]core.Actor{}
	h.timers = map[timerKey]uint64{}
	w.tracef("boot %s incarnation %d", h.name, h.incarnation)
	w.deliver(core.NodeAddr(h.name), &m.NodeBoot{Node: h.name, Members: w.names,
		Datasets: h.store.boot(h.name), Incarnation: h.incarnation})
}

func sortedKeys[V any](mp map[string]V) []string {
	keys := make([]string, 0, len(mp))
	for k := range mp {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// digest is FNV-1a over the trace, fed without allocations on the hot path.
type digest struct{ h uint64 }

const fnvPrime = 1099511628211

func newTrace() *digest { return &digest{h: 14695981039346656037} }

func (d *digest) Write(p []byte) (int, error) {
	for _, c := range p {
		d.h = (d.h ^ uint64(c)) * fnvPrime
	}
	return len(p), nil
}

func (d *digest) str(s string) {
	for i := 0; i < len(s); i++ {
		d.h = (d.h ^ uint64(s[i])) * fnvPrime
	}
	d.h = (d.h ^ 0xff) * fnvPrime // separator, so "ab","c" differs from "a","bc"
}

func (d *digest) u64(v uint64) {
	for i := 0; i < 8; i++ {
		d.h = (d.h ^ (v & 0xff)) * fnvPrime
		v >>= 8
	}
}

func (d *digest) Sum64() uint64 { return d.h }
