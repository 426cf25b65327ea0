package sim

import (
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	"github.com/hybridcluster/hybridcluster/actors/site"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// Simulated clients: a Poisson stream of requests over all sites, each sent
// to a live node chosen at random (as DNS round robin with health checks
// would); writes carry ids the checkers follow.

const (
	clientsFrom     = 10 * time.Second // sites are created at 1 s; traffic starts here
	createRetry     = 5 * time.Second
	createRetryTill = 60 * time.Second
	requestBytes    = 512
)

type clientReq struct {
	id     uint64
	site   string
	write  bool
	probe  bool
	entry  string
	sentUs int64
	done   bool
}

type clients struct {
	next uint64
	reqs map[uint64]*clientReq
	open []*clientReq // sent, not yet answered (in send order)
}

func (w *World) clientTimeout() time.Duration {
	c := w.cfg
	return 2*c.RequestTimeout + c.HoldDeadline + 10*time.Second
}

func (w *World) clientsStart() {
	w.cl = &clients{reqs: map[uint64]*clientReq{}}
	w.at(time.Second, w.createSites)
	var retry func()
	retry = func() {
		if time.Duration(w.now)*time.Microsecond > createRetryTill {
			return
		}
		for i := 0; i < w.opt.Sites; i++ {
			if !w.siteExists(siteName(i)) {
				entry := w.names[w.rng.IntN(len(w.names))]
				w.deliver(core.NodeAddr(entry), &m.CreateSite{Spec: &m.SiteSpec{Name: siteName(i), Domains: []string{siteName(i) + ".example"}}})
			}
		}
		w.at(createRetry, retry)
	}
	w.at(createRetry+time.Second, retry)
	total := w.opt.RequestRate * float64(w.opt.Sites)
	if total <= 0 {
		return
	}
	stopUs := int64((w.opt.Safety + w.opt.Liveness - w.clientTimeout()) / time.Microsecond)
	var tick func()
	tick = func() {
		if w.now > stopUs {
			return
		}
		w.clientRequest(siteName(w.rng.IntN(w.opt.Sites)), w.rng.Float64() < w.opt.WriteFraction, false, "")
		w.at(time.Duration(w.rng.ExpFloat64()/total*float64(time.Second)), tick)
	}
	w.at(clientsFrom, tick)
	w.migrationsStart()
	w.rollbacksStart()
	w.restoresStart()
	w.deletesStart()
}

// siteExists: some disk holds a copy of the site that is not deleted.
func (w *World) siteExists(name string) bool {
	for _, n := range w.names {
		if d := w.hosts[n].store.ds[name]; d != nil && d.exists && d.role != m.Role_ROLE_DELETED {
			return true
		}
	}
	return false
}

// deletesStart asks, now and then in the safety phase, for the deletion of
// a random site (through the balancer of a random live node, which
// forwards it to the active one), and a while later for a create of the
// same name (a new, empty site).
func (w *World) deletesStart() {
	if w.opt.DeleteEvery <= 0 {
		return
	}
	stopUs := int64(w.opt.Safety / time.Microsecond)
	var tick func()
	tick = func() {
		if w.now > stopUs {
			return
		}
		defer w.at(time.Duration(w.rng.ExpFloat64()*float64(w.opt.DeleteEvery)), tick)
		s := siteName(w.rng.IntN(w.opt.Sites))
		live := w.liveHosts()
		if len(live) == 0 || !w.siteExists(s) {
			return
		}
		from := live[w.rng.IntN(len(live))]
		w.tracef("admin: delete %s via the balancer of %s", s, from)
		w.send(from, core.BalancerAddr(from), &m.AdminDeleteSite{Site: s})
		w.at(20*time.Second+time.Duration(w.rng.Int64N(int64(40*time.Second))), func() {
			live := w.liveHosts()
			if len(live) == 0 || w.now > stopUs || w.siteExists(s) {
				return
			}
			entry := live[w.rng.IntN(len(live))]
			w.tracef("admin: create %s again via %s", s, entry)
			w.deliver(core.NodeAddr(entry), &m.CreateSite{Spec: &m.SiteSpec{Name: s, Domains: []string{s + ".example"}}})
		})
	}
	w.at(clientsFrom+20*time.Second, tick)
}

func (w *World) liveHosts() []string {
	var out []string
	for _, n := range w.names {
		if w.hosts[n].up {
			out = append(out, n)
		}
	}
	return out
}

// clientRequest sends one request; entry "" picks a live node at random.
func (w *World) clientRequest(siteName string, write, probe bool, entry string) {
	if entry == "" {
		live := w.liveHosts()
		if len(live) == 0 {
			return
		}
		entry = live[w.rng.IntN(len(live))]
	}
	w.cl.next++
	r := &clientReq{id: w.cl.next, site: siteName, write: write, probe: probe, entry: entry, sentUs: w.now}
	w.cl.reqs[r.id] = r
	w.cl.open = append(w.cl.open, r)
	w.chk.stats.Requests++
	if write {
		w.chk.stats.Writes++
	}
	req := &m.SiteRequest{Site: siteName, RequestId: r.id, BodyBytes: requestBytes, Write: write, Idempotent: !write}
	if write {
		req.WriteId = r.id
	}
	w.deliver(core.NodeAddr(entry), req)
}

func (w *World) clientResponse(entry string, resp *m.SiteResponse) {
	r := w.cl.reqs[resp.RequestId]
	if r == nil || r.done || r.entry != entry {
		return
	}
	r.done = true
	delete(w.cl.reqs, r.id)
	if resp.Code == m.Code_CODE_OK {
		w.chk.stats.OK++
		if r.write {
			w.chk.acked(r)
		}
		return
	}
	if resp.Code == m.Code_CODE_UNKNOWN_SITE && w.chk.tombs[r.site] != nil {
		// The right answer for a deleted site, not a failure.
		w.chk.stats.UnknownSite++
		return
	}
	w.chk.stats.Failed++
	w.chk.failed(r, resp.Code.String()+": "+resp.Detail)
}

// clientsLost: an entry node crashed, its clients' connections reset.
func (w *World) clientsLost(entry string) {
	for _, r := range w.cl.open {
		if !r.done && r.entry == entry {
			r.done = true
			delete(w.cl.reqs, r.id)
			w.chk.stats.Failed++
			w.chk.failed(r, "connection reset: entry node crashed")
		}
	}
}

// activeMaster returns the node whose site actor serves the site (first in
// name order when, wrongly, there are several).
func (w *World) activeMasters(name string) []string {
	var out []string
	for _, n := range w.names {
		h := w.hosts[n]
		if !h.up {
			continue
		}
		if a, ok := h.actors[core.SiteAddr(n, name)].(*site.Site); ok {
			switch a.Phase() {
			case m.SitePhase_SITE_PHASE_ACTIVE, m.SitePhase_SITE_PHASE_PRE_COPY, m.SitePhase_SITE_PHASE_PAUSED,
				m.SitePhase_SITE_PHASE_FINAL_DELTA, m.SitePhase_SITE_PHASE_PROMOTING:
				out = append(out, n)
			}
		}
	}
	return out
}

// rollbacksStart asks for rollbacks of random sites to one of their ten
// newest snapshots, as a user undoing a mistake would.
func (w *World) rollbacksStart() {
	w.adminTicks(clientsFrom+10*time.Second, func(s, master string) {
		snaps := w.hosts[master].store.get(s).snaps
		if len(snaps) < 2 {
			return
		}
		target := snaps[len(snaps)-1-w.rng.IntN(min(10, len(snaps)))].ref.Name
		live := w.liveHosts()
		from := live[w.rng.IntN(len(live))]
		w.tracef("admin: roll %s on %s back to %s", s, master, target)
		w.send(from, core.SiteAddr(master, s), &m.AdminRollback{Site: s, Snapshot: target})
	})
}

// restoresStart asks for restores of random stashes of random sites (one of
// the newest the master's dataset actor lists), as an operator bringing back
// a losing side's writes, or undoing a rollback, would. As often as rollbacks.
func (w *World) restoresStart() {
	w.adminTicks(clientsFrom+15*time.Second, func(s, master string) {
		stashes := w.hosts[master].store.get(s).stashes
		if len(stashes) == 0 {
			return
		}
		stash := stashes[len(stashes)-1-w.rng.IntN(min(8, len(stashes)))].name
		live := w.liveHosts()
		from := live[w.rng.IntN(len(live))]
		w.tracef("admin: restore stash %s of %s on %s", stash, s, master)
		w.send(from, core.SiteAddr(master, s), &m.AdminRestoreStash{Site: s, Stash: stash})
	})
}

// adminTicks calls act, from first until 30 s before the run ends, at
// random intervals of mean Options.RollbackEvery (none if it is not
// positive), for a random site that has exactly one active master.
func (w *World) adminTicks(first time.Duration, act func(site, master string)) {
	if w.opt.RollbackEvery <= 0 {
		return
	}
	stopUs := int64((w.opt.Safety + w.opt.Liveness - 30*time.Second) / time.Microsecond)
	var tick func()
	tick = func() {
		if w.now > stopUs {
			return
		}
		defer w.at(time.Duration(w.rng.ExpFloat64()*float64(w.opt.RollbackEvery)), tick)
		s := siteName(w.rng.IntN(w.opt.Sites))
		masters := w.activeMasters(s)
		if len(masters) != 1 {
			return
		}
		act(s, masters[0])
	}
	w.at(first, tick)
}

// migrationsStart asks for planned moves of random sites, as an operator would.
func (w *World) migrationsStart() {
	stopUs := int64((w.opt.Safety + w.opt.Liveness - 30*time.Second) / time.Microsecond)
	var tick func()
	tick = func() {
		if w.now > stopUs {
			return
		}
		defer w.at(time.Duration(w.rng.ExpFloat64()*float64(w.opt.MigrationEvery)), tick)
		s := siteName(w.rng.IntN(w.opt.Sites))
		masters := w.activeMasters(s)
		live := w.liveHosts()
		if len(masters) != 1 || len(live) < 2 {
			return
		}
		target := live[w.rng.IntN(len(live))]
		if target == masters[0] {
			return
		}
		from := live[w.rng.IntN(len(live))]
		w.tracef("admin: migrate %s from %s to %s", s, masters[0], target)
		w.send(from, core.SiteAddr(masters[0], s), &m.Migrate{Site: s, Target: target, Reason: "admin"})
	}
	w.at(clientsFrom+5*time.Second, tick)
}
