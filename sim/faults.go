package sim

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	"github.com/hybridcluster/hybridcluster/actors/site"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// Swarm testing: each seed enables a random subset of fault kinds at random
// rates, so that some seeds hammer one kind of fault and others mix them.

type faultKind struct {
	name string
	mean time.Duration // mean time between two faults of this kind
	fire func(w *World)
}

var faultKinds = []faultKind{
	{"crash", 60 * time.Second, func(w *World) { w.faultCrash() }},
	{"partition", 60 * time.Second, func(w *World) { w.faultPartition(false) }},
	{"oneway", 90 * time.Second, func(w *World) { w.faultPartition(true) }},
	{"slowdisk", 40 * time.Second, func(w *World) { w.faultDisk(true) }},
	{"fulldisk", 60 * time.Second, func(w *World) { w.faultDisk(false) }},
	{"stop", 90 * time.Second, func(w *World) { w.faultStop() }},
}

// stopHandoffWait is how long a stopped host hands its sites off before
// it goes down (the runtime's HandOff, bounded by handoff_wait).
const stopHandoffWait = 20 * time.Second

// faultsStart picks this seed's swarm and schedules it; it returns its name.
func (w *World) faultsStart() string {
	if w.opt.FaultRate <= 0 {
		return "none"
	}
	var on []string
	forced := w.opt.FaultKinds != nil
	choose := func(name string) bool {
		if forced {
			return slices.Contains(w.opt.FaultKinds, name)
		}
		return w.rng.IntN(2) == 1
	}
	for _, k := range faultKinds {
		if !choose(k.name) {
			continue
		}
		on = append(on, k.name)
		mean := time.Duration(float64(k.mean) / w.opt.FaultRate)
		var tick func()
		tick = func() {
			if w.healed {
				return
			}
			k.fire(w)
			w.at(time.Duration(w.rng.ExpFloat64()*float64(mean)), tick)
		}
		w.at(clientsFrom+time.Duration(w.rng.ExpFloat64()*float64(mean)), tick)
	}
	if choose("drop") {
		w.dropRate = w.rng.Float64() * 0.03 * min(w.opt.FaultRate, 1)
		on = append(on, fmt.Sprintf("drop=%.3f", w.dropRate))
	}
	if choose("dup") {
		w.dupRate = w.rng.Float64() * 0.02 * min(w.opt.FaultRate, 1)
		on = append(on, fmt.Sprintf("dup=%.3f", w.dupRate))
	}
	if choose("crash-mid-migration") {
		w.midMigrationCrash = 0.3
		on = append(on, "crash-mid-migration")
	}
	if choose("crash-mid-receive") {
		w.midReceiveCrash = 0.001
		on = append(on, "crash-mid-receive")
	}
	if len(on) == 0 {
		return "none"
	}
	s := strings.Join(on, ",")
	w.tracef("swarm: %s", s)
	return s
}

func (w *World) pick(names []string) string { return names[w.rng.IntN(len(names))] }

func (w *World) faultCrash() {
	live := w.liveHosts()
	if len(live) < 2 {
		return
	}
	w.crashFor(w.hosts[w.pick(live)], 5*time.Second+time.Duration(w.rng.Int64N(int64(35*time.Second))))
}

func (w *World) crashFor(h *host, down time.Duration) {
	if !h.up {
		return
	}
	w.chk.fault()
	w.chk.stats.Crashes++
	w.crash(h)
	w.at(down, func() {
		if !h.up {
			w.chk.fault()
			w.boot(h)
		}
	})
}

// faultStop stops a host as an operator does (SIGTERM): it takes no copy
// from then on, asks a move (reason stop) of each site it masters to
// another live host, and goes down stopHandoffWait later, whatever the
// moves did, for as long as a crash.
func (w *World) faultStop() {
	live := w.liveHosts()
	if len(live) < 2 {
		return
	}
	h := w.hosts[w.pick(live)]
	if h.stopping {
		return
	}
	w.chk.fault()
	h.stopping = true
	inc := h.incarnation
	var others []string
	for _, n := range live {
		if n != h.name {
			others = append(others, n)
		}
	}
	var moves []string
	for _, addr := range sortedAddrs(h.actors) {
		st, ok := h.actors[addr].(*site.Site)
		if !ok || addr.Kind != core.KindSite || st.Phase() != m.SitePhase_SITE_PHASE_ACTIVE {
			continue
		}
		target := w.pick(others)
		moves = append(moves, addr.Site+"->"+target)
		w.deliver(addr, &m.Migrate{Site: addr.Site, Target: target, Reason: site.ReasonStop})
	}
	w.tracef("FAULT stop %s (hand-offs: %s)", h.name, strings.Join(moves, " "))
	w.at(stopHandoffWait, func() {
		if !h.up || h.incarnation != inc {
			return
		}
		// A site handed off left every write it took in the final
		// delta: none may be pending here, unless the site came back
		// since (a failover may promote this copy again).
		for _, s := range h.handedOff {
			st, ok := h.actors[core.SiteAddr(h.name, s)].(*site.Site)
			if !ok || st.Phase() != m.SitePhase_SITE_PHASE_DEMOTED {
				continue
			}
			if d := h.store.ds[s]; d != nil && len(d.pending) > 0 {
				w.violate("STOP", "site %s handed off by %s with %d writes not in its final delta", s, h.name, len(d.pending))
			}
		}
		w.tracef("stop %s: %d sites handed off", h.name, len(h.handedOff))
		w.crashFor(h, 5*time.Second+time.Duration(w.rng.Int64N(int64(25*time.Second))))
	})
}

func (w *World) faultPartition(oneway bool) {
	names := append([]string(nil), w.names...)
	w.rng.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	cut := 1 + w.rng.IntN(len(names)-1)
	a, b := names[:cut], names[cut:]
	var pairs [][2]string
	for _, x := range a {
		for _, y := range b {
			pairs = append(pairs, [2]string{x, y})
			if !oneway {
				pairs = append(pairs, [2]string{y, x})
			}
		}
	}
	for _, p := range pairs {
		w.blocked[p] = true
	}
	w.chk.fault()
	w.chk.netFault()
	w.chk.stats.Partitions++
	kind := "partition"
	if oneway {
		kind = "one-way partition"
	}
	w.tracef("FAULT %s %v | %v", kind, a, b)
	w.at(5*time.Second+time.Duration(w.rng.Int64N(int64(55*time.Second))), func() {
		for _, p := range pairs {
			delete(w.blocked, p)
		}
		w.chk.fault()
		w.chk.netFault()
		w.tracef("heal %s %v | %v", kind, a, b)
	})
}

func (w *World) faultDisk(slow bool) {
	live := w.liveHosts()
	if len(live) == 0 {
		return
	}
	h := w.hosts[w.pick(live)]
	inc := h.incarnation
	if slow {
		h.slowDisk = true
	} else {
		h.fullDisk = true
	}
	w.chk.fault()
	w.tracef("FAULT %s disk on %s", map[bool]string{true: "slow", false: "full"}[slow], h.name)
	w.at(10*time.Second+time.Duration(w.rng.Int64N(int64(30*time.Second))), func() {
		if h.incarnation == inc {
			h.slowDisk, h.fullDisk = false, false
		}
		w.chk.fault()
	})
}

// maybeCrashMidMigration crashes the old master or the target right after a
// final delta was asked for, with the swarm's probability.
func (w *World) maybeCrashMidMigration(master, target string) {
	if w.healed || w.midMigrationCrash == 0 || w.rng.Float64() >= w.midMigrationCrash {
		return
	}
	victim := master
	if w.rng.IntN(2) == 0 {
		victim = target
	}
	delay := time.Duration(w.rng.Int64N(int64(50 * time.Millisecond)))
	w.at(delay, func() {
		if !w.healed {
			w.tracef("FAULT crash mid-migration")
			w.crashFor(w.hosts[victim], 5*time.Second+time.Duration(w.rng.Int64N(int64(20*time.Second))))
		}
	})
}

// maybeCrashMidReceive crashes a receiver while a stream is on its way.
func (w *World) maybeCrashMidReceive(req *m.StorageRequest, transfer time.Duration) {
	if w.healed || w.midReceiveCrash == 0 || w.rng.Float64() >= w.midReceiveCrash {
		return
	}
	h := w.hosts[req.ToNode]
	w.at(transfer/2, func() {
		if !w.healed {
			w.tracef("FAULT crash mid-receive on %s", h.name)
			w.crashFor(h, 5*time.Second+time.Duration(w.rng.Int64N(int64(20*time.Second))))
		}
	})
}

// healAll ends the safety phase: every link heals, every node restarts, disks
// recover, the network stops dropping.
func (w *World) healAll() {
	w.healed = true
	w.chk.fault()
	if len(w.blocked) > 0 || w.dropRate > 0 {
		w.chk.netFault()
	}
	clear(w.blocked)
	w.dropRate, w.dupRate = 0, 0
	for _, n := range w.names {
		h := w.hosts[n]
		h.slowDisk, h.fullDisk = false, false
		if !h.up {
			w.boot(h)
		}
	}
	w.tracef("liveness phase: all faults healed")
}

// sortedAddrs are the addresses of actors, in a fixed order (the run must
// not depend on map order).
func sortedAddrs(actors map[core.Address]core.Actor) []core.Address {
	out := make([]core.Address, 0, len(actors))
	for a := range actors {
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b core.Address) int { return strings.Compare(a.String(), b.String()) })
	return out
}
