package sim

import (
	"fmt"
	"slices"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// The checkers watch the world from outside the code under test: what disks
// hold, which writes clients saw acknowledged, which requests failed. They
// never read actor state to decide whether an invariant holds, except to find
// which node serves a site at the end (I5).

type writeInfo struct {
	site      string
	node      string
	epoch     *m.Epoch
	created   *m.Epoch // the creation epoch of the copy's site (its incarnation)
	appliedUs int64
	ackedUs   int64
}

type window struct {
	startUs, endUs int64 // endUs 0: still open
	from, target   string
}

type checker struct {
	w             *World
	writes        map[uint64]*writeInfo
	epochWriter   map[string]string // site|epoch -> node
	expected      map[string]map[uint64]bool
	crashes       map[string][]int64
	faultTimes    []int64
	netFaultTimes []int64
	moves         map[string][]*window
	probed        map[string]map[string]bool // site -> nodes that answered the last probe
	probeID       map[string]string
	probes        []*clientReq
	probeFailed   map[uint64]string
	rollbacks     map[string]string // dataset address -> snapshot asked for
	restores      map[string]*restoreAsk
	// tombs are the deleted sites (the newest tombstone a dataset was told
	// of), deletedAt when, recreated whether a create after it activated.
	tombs         map[string]*m.Epoch
	deletedAt     map[string]int64
	recreated     map[string]bool
	stats         Stats
	bytesStreamed uint64
}

func newChecker(w *World) *checker {
	return &checker{w: w, writes: map[uint64]*writeInfo{}, epochWriter: map[string]string{},
		expected: map[string]map[uint64]bool{}, crashes: map[string][]int64{}, moves: map[string][]*window{},
		probed: map[string]map[string]bool{}, probeFailed: map[uint64]string{}, rollbacks: map[string]string{}, probeID: map[string]string{},
		restores: map[string]*restoreAsk{}, tombs: map[string]*m.Epoch{}, deletedAt: map[string]int64{}, recreated: map[string]bool{}}
}

func (c *checker) fault() { c.faultTimes = append(c.faultTimes, c.w.now) }

func (c *checker) crashed(h *host) { c.crashes[h.name] = append(c.crashes[h.name], c.w.now) }

// clean reports whether nothing went wrong in the world between from and now.
//
// After a fault the cluster needs a while to converge: a master that was cut
// off learns that a newer one exists only when a replica fences its next
// stream, which can wait for a stream in flight to time out. So "clean"
// means no fault for a stream timeout plus ten seconds before from.
func (c *checker) clean(fromUs int64) bool {
	if c.w.dropRate > 0 || len(c.w.blocked) > 0 {
		return false
	}
	quiet := int64((c.w.cfg.StreamTimeout + 10*time.Second) / time.Microsecond)
	for _, t := range c.faultTimes {
		if t >= fromUs-quiet {
			return false
		}
	}
	return true
}

func (c *checker) netFault() { c.netFaultTimes = append(c.netFaultTimes, c.w.now) }

// quietNetwork: no partition began or healed, and nothing was dropped, for
// a stream timeout plus ten seconds before from (crashes and disks may vary).
func (c *checker) quietNetwork(fromUs int64) bool {
	if c.w.dropRate > 0 || len(c.w.blocked) > 0 {
		return false
	}
	quiet := int64((c.w.cfg.StreamTimeout + 10*time.Second) / time.Microsecond)
	return len(c.netFaultTimes) == 0 || c.netFaultTimes[len(c.netFaultTimes)-1] < fromUs-quiet
}

// applied: a write reached a master's disk (I1: one writer per site and epoch).
func (c *checker) applied(h *host, req *m.SiteRequest, epoch *m.Epoch, d *simDataset) {
	key := req.Site + "|" + core.EpochString(epoch)
	if prev, ok := c.epochWriter[key]; ok && prev != h.name {
		c.w.violate("I1", "site %s epoch %s: writes accepted on %s and %s", req.Site, core.EpochString(epoch), prev, h.name)
	}
	c.epochWriter[key] = h.name
	// A master's own epoch bump (heal, resume) does not fence the writes it
	// still takes at its old epoch; another node's epoch does.
	if d.maxEpoch.GetNode() != h.name {
		c.w.noteEpoch(h, req.Site, d, epoch, "write")
	}
	if !d.exists {
		c.w.violate("I1", "site %s: write accepted on %s which holds no copy", req.Site, h.name)
	}
	if d.role == m.Role_ROLE_DELETED {
		c.w.violate("DELETE", "site %s: write %d accepted on %s whose copy is deleted", req.Site, req.WriteId, h.name)
	}
	if tomb := c.tombs[req.Site]; tomb != nil && !core.CreatedAfter(d.spec, tomb) && core.EpochLess(tomb, epoch) {
		// A copy of the deleted history serves again, at an epoch decided
		// after the deletion. Messages lost or nodes down may make it
		// happen for a while (the balancer deletes that copy again, and
		// the final check sees to it); on a quiet cluster it is a bug.
		c.stats.Resurrections++
		c.w.tracef("resurrection: site %s write %d on %s at %s above its tombstone %s", req.Site, req.WriteId, h.name,
			core.EpochString(epoch), core.EpochString(tomb))
		if c.clean(c.deletedAt[req.Site]) {
			c.w.violate("DELETE", "site %s resurrected: write %d accepted on %s at epoch %s above its tombstone %s",
				req.Site, req.WriteId, h.name, core.EpochString(epoch), core.EpochString(tomb))
		}
	}
	c.writes[req.WriteId] = &writeInfo{site: req.Site, node: h.name, epoch: epoch, created: d.spec.GetCreated(), appliedUs: c.w.now}
}

func (c *checker) acked(r *clientReq) {
	wi := c.writes[r.id]
	if wi == nil {
		c.w.violate("I2", "write %d of site %s acknowledged but never applied", r.id, r.site)
		return
	}
	wi.ackedUs = c.w.now
	c.stats.Acked++
	if c.expected[r.site] == nil {
		c.expected[r.site] = map[uint64]bool{}
	}
	c.expected[r.site][r.id] = true
}

// failed: I2 says no request fails because of a planned move.
func (c *checker) failed(r *clientReq, why string) {
	if r.probe {
		c.probeFailed[r.id] = why
	}
	for _, mv := range c.moves[r.site] {
		end := mv.endUs
		if end == 0 {
			// A move that never completed (aborted, or lost to a fault) is
			// over once all its steps and holds would have timed out.
			cfg := c.w.cfg
			end = mv.startUs + int64((3*cfg.StepTimeout*time.Duration(cfg.ActivateAttemptsMax)+cfg.HoldDeadline)/time.Microsecond)
		}
		overlaps := mv.startUs <= c.w.now && end >= r.sentUs
		if overlaps && c.clean(min(mv.startUs, r.sentUs)) {
			c.w.violate("I2", "request %d to %s failed during a clean move %s->%s: %s", r.id, r.site, mv.from, mv.target, why)
			return
		}
	}
}

// delivered watches messages for the events checks hang on.
func (c *checker) delivered(h *host, addr core.Address, msg any) {
	switch msg := msg.(type) {
	case *m.AdminRollback:
		if addr.Kind == core.KindDataset {
			c.rollbacks[addr.String()] = msg.Snapshot
		}
	case *m.AdminRestoreStash:
		if addr.Kind == core.KindDataset {
			c.restoreAsked(h, addr, msg)
		}
	case *m.DeleteSite:
		if addr.Kind == core.KindDataset {
			c.siteDeleted(msg)
		}
	case *m.Sync:
		// A move starts with its pre-copy (a Migrate the site refuses is no move).
		if msg.Final {
			c.w.maybeCrashMidMigration(h.name, msg.Target)
		} else {
			c.moves[msg.Site] = append(c.moves[msg.Site], &window{startUs: c.w.now, from: h.name, target: msg.Target})
		}
	case *m.ProbeAnswer:
		// Probe ids count per balancer: a round is (balancer node, id).
		if round := fmt.Sprintf("%s/%d", addr.Node, msg.ProbeId); c.probeID[msg.Site] != round {
			c.probeID[msg.Site] = round
			c.probed[msg.Site] = map[string]bool{}
		}
		c.probed[msg.Site][msg.Info.GetNode()] = true
	case *m.Activate:
		switch {
		case addr.Kind == core.KindSite:
			c.activated(h, msg)
		case addr.Kind == core.KindDataset && msg.Reason == "failover":
			// Judge the choice when it is made: the copies may change while
			// a slow disk carries the activation out.
			c.newestPromoted(h, msg.Spec.GetName(), h.store.get(msg.Spec.GetName()), msg.Epoch)
		}
	}
}

// activated: a node became master of a site (its dataset already switched).
func (c *checker) activated(h *host, a *m.Activate) {
	site := a.Spec.GetName()
	d := h.store.get(site)
	have := d.contents()
	if tomb := c.tombs[site]; tomb != nil && core.CreatedAfter(a.Spec, tomb) && !c.recreated[site] {
		// The first master of a history created after the deletion (its
		// create's activation may have been cut short by a crash, and a
		// failover bring it up).
		c.recreated[site] = true
		c.stats.Recreates++
	}
	switch a.Reason {
	case "create":
		if tomb := c.tombs[site]; tomb != nil && core.CreatedAfter(a.Spec, tomb) {
			for _, wid := range sortedIDs(have) {
				if wi := c.writes[wid]; wi != nil && !core.CreatedAfter(&m.SiteSpec{Created: wi.created}, tomb) {
					c.w.violate("DELETE", "site %s created again on %s holding write %d of its deleted history", site, h.name, wid)
					break
				}
			}
		}
	case "migrate":
		c.stats.Migrations++
		for _, mv := range c.moves[site] {
			if mv.endUs == 0 {
				mv.endUs = c.w.now
			}
		}
		if len(c.moves[site]) > 0 {
			mv := c.moves[site][len(c.moves[site])-1]
			src := c.w.hosts[mv.from].store.ds[site]
			if c.clean(mv.startUs) && src != nil && mv.target == h.name {
				// The source is paused: everything it acknowledged is in its
				// live dataset, and all of it must be on the target.
				for _, wid := range sortedIDs(src.contents()) {
					if c.expected[site][wid] && !have[wid] {
						c.w.violate("I2", "site %s moved %s->%s without acknowledged write %d", site, mv.from, h.name, wid)
						delete(c.expected[site], wid)
					}
				}
			}
		}
	case "failover":
		c.stats.Failovers++
	case "heal":
		c.stats.Heals++
	case "rollback":
		c.stats.Rollbacks++
		c.rolledBack(h, site, d, have)
	case "restore":
		c.stats.Restores++
		c.restored(h, site, d, have)
	}
	// A rollback or a restore sets writes aside in a stash on purpose:
	// they are not lost.
	c.lossCheck(site, have, false, a.Reason == "rollback" || a.Reason == "restore")
}

// siteDeleted: a dataset actor is told the site was deleted. From here the
// site's requests may be answered UNKNOWN_SITE, a move under way is over,
// and the writes of its history must end up stashed (the final check).
func (c *checker) siteDeleted(d *m.DeleteSite) {
	if tomb := c.tombs[d.Site]; tomb != nil && !core.EpochLess(tomb, d.Epoch) {
		return
	}
	c.tombs[d.Site] = d.Epoch
	c.deletedAt[d.Site] = c.w.now
	c.recreated[d.Site] = false
	c.stats.Deletes++
	for _, mv := range c.moves[d.Site] {
		if mv.endUs == 0 {
			mv.endUs = c.w.now
		}
	}
}

// deleted: the site was deleted and not created again since.
func (c *checker) deleted(site string) bool { return c.tombs[site] != nil && !c.recreated[site] }

// restoreAsk is what a copy held when its dataset actor was asked to
// restore a stash: the stash's live data, and every write anywhere on it.
type restoreAsk struct {
	stash  string
	want   map[uint64]bool
	before map[uint64]bool
}

func (c *checker) restoreAsked(h *host, addr core.Address, r *m.AdminRestoreStash) {
	d := h.store.get(r.Site)
	for i := range d.stashes {
		if st := &d.stashes[i]; st.name == r.Stash {
			c.restores[addr.String()] = &restoreAsk{stash: r.Stash, want: st.live(), before: d.everything()}
			return
		}
	}
	// No such stash (any more: a duplicate of a request being carried
	// out): the dataset refuses it, and the ask recorded stands.
}

// restored: after a restore the live data is exactly the stash's, and
// nothing the copy held before (its displaced history included) is gone.
func (c *checker) restored(h *host, site string, d *simDataset, have map[uint64]bool) {
	key := core.DatasetAddr(h.name, site).String()
	ask := c.restores[key]
	delete(c.restores, key)
	if ask != nil && c.deleted(site) {
		return // deleted while it restored: stashed whole, as a rollback is
	}
	if ask == nil {
		c.w.violate("RESTORE", "site %s on %s: activated for a restore that was never asked of a stash it held", site, h.name)
		return
	}
	for _, wid := range sortedIDs(have) {
		if !ask.want[wid] {
			c.w.violate("RESTORE", "site %s on %s: write %d is live after restoring stash %s, which does not hold it", site, h.name, wid, ask.stash)
			return
		}
	}
	for _, wid := range sortedIDs(ask.want) {
		if !have[wid] {
			c.w.violate("RESTORE", "site %s on %s: write %d of stash %s is not live after restoring it", site, h.name, wid, ask.stash)
			return
		}
	}
	after := d.everything()
	for _, wid := range sortedIDs(ask.before) {
		if !after[wid] {
			c.w.violate("RESTORE", "site %s on %s: write %d was destroyed by restoring stash %s", site, h.name, wid, ask.stash)
			return
		}
	}
}

// rolledBack: after a rollback the live data is exactly the snapshot asked
// for, and everything rolled away is in a stash on that node.
func (c *checker) rolledBack(h *host, site string, d *simDataset, have map[uint64]bool) {
	key := core.DatasetAddr(h.name, site).String()
	target := c.rollbacks[key]
	delete(c.rollbacks, key)
	if c.deleted(site) {
		// Deleted while it rolled back (seed 5154): the copy is being
		// stashed whole, which the deletion checks cover.
		return
	}
	i := d.find(target)
	if i < 0 {
		c.w.violate("ROLLBACK", "site %s on %s: rolled back to %q, which the disk does not hold", site, h.name, target)
		return
	}
	want := map[uint64]bool{}
	d.snaps[i].b.each(func(w uint64) { want[w] = true })
	stashed := map[uint64]bool{}
	for _, n := range c.w.names {
		if sd := c.w.hosts[n].store.ds[site]; sd != nil {
			sd.stashContents(stashed)
		}
	}
	for wid := range have {
		if !want[wid] {
			c.w.violate("ROLLBACK", "site %s on %s: write %d is live after rolling back to %s", site, h.name, wid, target)
			return
		}
	}
	for _, wid := range sortedIDs(c.expected[site]) {
		if c.writes[wid].node == h.name && !have[wid] && !stashed[wid] && c.writes[wid].appliedUs > c.lastCrash(h.name) {
			c.w.violate("ROLLBACK", "site %s on %s: write %d rolled away but not stashed", site, h.name, wid)
			return
		}
	}
}

// lastCrash is the time of the last crash of node, or 0.
func (c *checker) lastCrash(node string) int64 {
	if cs := c.crashes[node]; len(cs) > 0 {
		return cs[len(cs)-1]
	}
	return 0
}

// newestPromoted: with a clean network, failover must pick the copy with the
// newest snapshot among the copies that answered the probe (I3).
func (c *checker) newestPromoted(h *host, site string, d *simDataset, epoch *m.Epoch) {
	// Only a balancer that has seen a quiet network for a while can be
	// expected to know every copy (views and reports lag a partition).
	if !c.quietNetwork(c.w.now) {
		return
	}
	// The copy's newest snapshot from before its promotion (the promotion
	// itself snapshots at once, in the new epoch).
	var mine *snap
	for i := len(d.snaps) - 1; i >= 0 && mine == nil; i-- {
		if core.EpochLess(d.snaps[i].ref.Epoch, epoch) {
			mine = &d.snaps[i]
		}
	}
	for _, n := range sortedKeys(c.probed[site]) {
		o := c.w.hosts[n]
		if n == h.name || !o.up {
			continue
		}
		od := o.store.ds[site]
		if od == nil || od.latest() == nil {
			continue
		}
		// Only copies of the same history compare: one strictly ahead of
		// the promoted copy in its lineage means the wrong copy won. (Which
		// of two diverged histories wins is policy; the loser is stashed.)
		var mineBlob *blob
		if mine != nil {
			mineBlob = mine.b
		}
		if theirs := od.latest(); theirs.b != mineBlob && isAncestor(mineBlob, theirs.b) {
			c.w.violate("I3", "site %s: failover promoted %s (snapshot %s) while %s holds newer %s of the same history",
				site, h.name, refName(mine), n, theirs.ref.Name)
		}
	}
}

func refName(s *snap) string {
	if s == nil {
		return "none"
	}
	return s.ref.Name
}

// lossCheck looks at acknowledged writes the new master lacks. A write lost
// with a crashed master is allowed only within the RPO (or when the network
// was impaired around it); otherwise it must still be somewhere (a diverged
// copy about to be stashed) and the final check decides.
func (c *checker) lossCheck(site string, have map[uint64]bool, final, withStashes bool) {
	stashed := map[uint64]bool{}
	if final || withStashes {
		for _, n := range c.w.names {
			if d := c.w.hosts[n].store.ds[site]; d != nil {
				d.stashContents(stashed)
			}
		}
	}
	tomb := c.tombs[site]
	for _, wid := range sortedIDs(c.expected[site]) {
		if have[wid] || stashed[wid] {
			continue
		}
		wi := c.writes[wid]
		if !final && tomb != nil && !core.CreatedAfter(&m.SiteSpec{Created: wi.created}, tomb) {
			// A write of a deleted history: it is in the stashes, not on
			// the master of the site created again (the final check).
			continue
		}
		// The write lives on its master's disk from when it was applied; its
		// acknowledgement may still be on the wire when the master dies.
		crash := c.crashAfter(wi.node, wi.appliedUs)
		switch {
		case crash >= 0:
			age := time.Duration(max(0, crash-wi.ackedUs)) * time.Microsecond
			if age > c.w.opt.RPO && c.clean(wi.ackedUs) {
				c.w.violate("I3", "site %s: write %d acknowledged %v before %s crashed is lost (RPO %v)",
					site, wid, age, wi.node, c.w.opt.RPO)
			}
			delete(c.expected[site], wid)
		case final:
			c.w.violate("I4", "site %s: acknowledged write %d (on %s at epoch %s) is neither on the master nor in any stash",
				site, wid, wi.node, core.EpochString(wi.epoch))
			delete(c.expected[site], wid)
		}
	}
}

// crashAfter is the first crash of node after t, or -1.
func (c *checker) crashAfter(node string, t int64) int64 {
	for _, ct := range c.crashes[node] {
		if ct >= t {
			return ct
		}
	}
	return -1
}

// probesPerSite bounds how many entry nodes probe each site, so that a
// 10,000-site cluster is not asked a million questions at once.
const probesPerSite = 3

// probeAll sends one read per site through probesPerSite entry nodes (every
// node takes its turn), RecoveryBound after the heal: each must be served (I5).
func (c *checker) probeAll() {
	w := c.w
	live := w.liveHosts()
	next := 0
	for i := 0; i < w.opt.Sites; i++ {
		s := siteName(i)
		if !w.siteExists(s) || c.deleted(s) {
			continue
		}
		for range min(probesPerSite, len(live)) {
			w.clientRequest(s, false, true, live[next%len(live)])
			next++
			c.probes = append(c.probes, w.cl.open[len(w.cl.open)-1])
		}
	}
}

func (c *checker) finish() {
	w := c.w
	// I5: every request got an answer in time; every probe was served.
	deadline := w.now - int64(w.clientTimeout()/time.Microsecond)
	for _, r := range w.cl.open {
		if !r.done && r.sentUs < deadline {
			w.violate("I5", "request %d to %s via %s sent at %.3fs never answered", r.id, r.site, r.entry, float64(r.sentUs)/1e6)
		}
	}
	for _, r := range c.probes {
		if !r.done {
			w.violate("I5", "site %s: probe via %s unanswered %v after the heal", r.site, r.entry, w.opt.RecoveryBound)
		} else if _, failed := c.probeFailed[r.id]; failed {
			w.violate("I5", "site %s: probe via %s failed %v after the heal: %s", r.site, r.entry, w.opt.RecoveryBound, c.probeFailed[r.id])
		}
	}
	// I4 and I5: one master per site, holding every acknowledged write or a stash of it.
	for i := 0; i < w.opt.Sites; i++ {
		s := siteName(i)
		if c.deleted(s) {
			// Deleted: no copy serves, every copy is stashed whole, and
			// every acknowledged write is in a stash.
			for _, n := range w.names {
				if d := w.hosts[n].store.ds[s]; d != nil && d.exists && d.role != m.Role_ROLE_DELETED {
					w.violate("DELETE", "site %s deleted at %s: the copy on %s is not stashed after the liveness phase",
						s, core.EpochString(c.tombs[s]), n)
				}
			}
			if masters := w.activeMasters(s); len(masters) > 0 {
				w.violate("DELETE", "site %s deleted at %s is served by %v after the liveness phase", s, core.EpochString(c.tombs[s]), masters)
			}
			c.lossCheck(s, nil, true, true)
			continue
		}
		if !w.siteExists(s) {
			c.lossCheck(s, nil, true, true)
			continue
		}
		masters := w.activeMasters(s)
		switch len(masters) {
		case 0:
			w.violate("I5", "site %s has copies but no master after the liveness phase", s)
			continue
		case 1:
		default:
			w.violate("I5", "site %s has %d masters after the liveness phase: %v", s, len(masters), masters)
		}
		md := w.hosts[masters[0]].store.ds[s]
		if tomb := c.tombs[s]; tomb != nil && !core.CreatedAfter(md.spec, tomb) {
			w.violate("DELETE", "site %s created again after %s is served by %s from a copy of its deleted history",
				s, core.EpochString(tomb), masters[0])
		}
		c.lossCheck(s, md.contents(), true, true)
	}
}

func (c *checker) summary() string {
	s := c.stats
	return fmt.Sprintf("requests=%d ok=%d failed=%d acked_writes=%d migrations=%d failovers=%d heals=%d crashes=%d partitions=%d deletes=%d recreates=%d",
		s.Requests, s.OK, s.Failed, s.Acked, s.Migrations, s.Failovers, s.Heals, s.Crashes, s.Partitions, s.Deletes, s.Recreates)
}

func sortedIDs(set map[uint64]bool) []uint64 {
	ids := make([]uint64, 0, len(set))
	for id := range set {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
