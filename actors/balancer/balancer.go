// Package balancer decides where sites live: placement of new sites and their
// replicas, repair of lost replicas, failover to the newest copy, resolving two
// masters after a partition (newest history wins, the other is stashed),
// load-based moves with hysteresis, and draining. It only plans; the site and
// dataset actors carry the plans out. Every node runs one; only the one on the
// lowest-named live member (in its node's view) acts.
package balancer

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

const (
	timerPlan  = "plan"
	timerProbe = "probe/" // + site
	// healConfirmRounds: two masters must be seen this many plans in a row
	// before a heal, so that a report taken mid-migration does not trigger one.
	healConfirmRounds = 3
)

type probe struct {
	id      uint64
	answers map[string]*m.DatasetInfo
	asked   []string
}

// Balancer is the balancer actor of one node.
type Balancer struct {
	node        string
	active      bool
	activeSince int64
	live        []string
	reports     map[string]*m.NodeReport
	probes      map[string]*probe
	actions     map[string]int64 // site -> when an action was taken
	moves       map[string]bool  // site -> that action was a repair or a move (sent to the master)
	lastMove    map[string]int64
	conflicts   map[string]int
	creates     []*m.CreateSite
	draining    map[string]bool
	liveSince   map[string]int64 // when each live member (re)joined this view
	heardAt     map[string]int64 // when each member's latest report arrived here
	nextID      uint64
	planArmed   bool
	// tombstones are the deleted sites and the epochs of their deletion:
	// from an admin's delete here, and from every report of a deleted copy
	// (every node records the tombstone on disk), so that a new balancer
	// knows them too. A site is never placed, repaired or failed over from
	// a copy created at or before its tombstone.
	tombstones map[string]*m.Epoch
	// recreated: sites this balancer placed again after their tombstone
	// (until reports show the new copies).
	recreated map[string]bool
}

var _ core.Actor = (*Balancer)(nil)

// New returns the balancer of node.
func New(node string) *Balancer {
	return &Balancer{node: node, reports: map[string]*m.NodeReport{}, probes: map[string]*probe{},
		actions: map[string]int64{}, moves: map[string]bool{}, lastMove: map[string]int64{}, conflicts: map[string]int{}, draining: map[string]bool{},
		liveSince: map[string]int64{}, heardAt: map[string]int64{}, tombstones: map[string]*m.Epoch{},
		recreated: map[string]bool{}}
}

// Active reports whether this balancer is the one that acts.
func (b *Balancer) Active() bool { return b.active }

// Step handles one input.
func (b *Balancer) Step(env *core.Env, in proto.Message) []core.Effect {
	switch msg := in.(type) {
	case *m.BalancerRole:
		if msg.Active && !b.active {
			b.activeSince = env.NowMs()
		}
		b.active = msg.Active
		for _, n := range msg.Live {
			if !slices.Contains(b.live, n) {
				b.liveSince[n] = env.NowMs()
			}
		}
		b.live = msg.Live
		for n := range b.reports {
			if !slices.Contains(b.live, n) {
				delete(b.reports, n)
			}
		}
		if b.active && !b.planArmed {
			b.planArmed = true
			return []core.Effect{core.Info("balancer active", "node", b.node, "live", len(b.live)),
				core.SetTimer{Key: timerPlan, After: env.Config.ReportInterval}}
		}
		return nil
	case *m.NodeReport:
		if slices.Contains(b.live, msg.Node) {
			warming := b.active && !b.warm(env)
			b.reports[msg.Node] = msg
			b.heardAt[msg.Node] = env.NowMs()
			if msg.Draining {
				b.draining[msg.Node] = true
			}
			if warming && b.warm(env) {
				// The last report a new balancer waited for: act now
				// rather than at the next plan tick (a failover whose
				// master took the balancer with it).
				return b.plan(env)
			}
		}
		return nil
	case *m.CreateSite:
		b.creates = append(b.creates, msg)
		return nil
	case *m.DrainNode:
		b.draining[msg.Node] = true
		return nil
	case *m.AdminDeleteSite:
		return b.deleteSite(env, msg)
	case *m.AdminQuery:
		return []core.Effect{core.Send{To: core.ClientAddr(msg.ReplyNode), Msg: b.view(env, msg)}}
	case *m.ProbeAnswer:
		if p := b.probes[msg.Site]; p != nil && p.id == msg.ProbeId && slices.Contains(p.asked, msg.Info.GetNode()) {
			p.answers[msg.Info.GetNode()] = msg.Info
			if len(p.answers) == len(p.asked) {
				return b.resolveProbe(env, msg.Site)
			}
		}
		return nil
	case *m.Timer:
		if msg.Key == timerPlan {
			if !b.active {
				b.planArmed = false
				return nil
			}
			fx := b.plan(env)
			return append(fx, core.SetTimer{Key: timerPlan, After: env.Config.ReportInterval})
		}
		if strings.HasPrefix(msg.Key, timerProbe) {
			return b.resolveProbe(env, msg.Key[len(timerProbe):])
		}
		return nil
	}
	panic(fmt.Sprintf("balancer %s: unexpected input %T", b.node, in))
}

// view answers a query of the admin endpoint. Only the active balancer
// answers a cluster query; another one says MOVED and names the balancer its
// node believes active, and the asking host retries through its node actor.
// The answer is a deep copy: the host may hand it, unmarshaled, to a local
// client that reads (or changes) it while this actor goes on, and the
// reports it holds share their entries with the reporting node actor.
func (b *Balancer) view(env *core.Env, q *m.AdminQuery) *m.AdminView {
	v := &m.AdminView{QueryId: q.QueryId, Node: b.node, AtMs: env.NowMs()}
	if len(b.live) > 0 {
		v.Balancer = b.live[0]
	}
	switch {
	case q.Kind != m.AdminQueryKind_ADMIN_QUERY_CLUSTER && q.Kind != m.AdminQueryKind_ADMIN_QUERY_CLAIMS:
		v.Code, v.Detail = m.Code_CODE_INVALID, "a balancer answers cluster queries only, not "+q.Kind.String()
		return v
	case !b.active:
		v.Code, v.Detail = m.Code_CODE_MOVED, "not the active balancer"
		return v
	}
	v.Balancer = b.node
	v.Live = slices.Sorted(slices.Values(b.live))
	claims := q.Kind == m.AdminQueryKind_ADMIN_QUERY_CLAIMS
	claimed := func(spec *m.SiteSpec, site string) bool {
		if site == q.Site {
			return true
		}
		return slices.ContainsFunc(spec.GetDomains(), func(d string) bool { return slices.Contains(q.Domains, d) })
	}
	for _, n := range v.Live {
		r := b.reports[n]
		switch {
		case r == nil:
		case !claims:
			v.Reports = append(v.Reports, proto.CloneOf(r))
		default:
			// Only the copies that claim the name or a domain: a create
			// checks these, and copying every report made each create
			// cost in proportion to the sites.
			cut := &m.NodeReport{Node: r.Node, Load: r.Load, FreeBytes: r.FreeBytes, SizeBytes: r.SizeBytes, Draining: r.Draining, AtMs: r.AtMs}
			for _, d := range r.Datasets {
				if claimed(d.Spec, d.Site) {
					cut.Datasets = append(cut.Datasets, proto.CloneOf(d))
				}
			}
			v.Reports = append(v.Reports, cut)
		}
	}
	for n, d := range b.draining {
		if d {
			v.Draining = append(v.Draining, n)
		}
	}
	slices.Sort(v.Draining)
	for i, c := range b.creates {
		// A create sent twice (a retry, a duplicated message) is one site.
		if claims && !claimed(c.Spec, c.Spec.GetName()) {
			continue
		}
		if c.Spec != nil && !slices.ContainsFunc(b.creates[:i], func(o *m.CreateSite) bool { return o.Spec.GetName() == c.Spec.Name }) {
			v.PendingCreates = append(v.PendingCreates, proto.CloneOf(c.Spec))
		}
	}
	return v
}

// copyView is what the balancer knows of one site from reports.
type copyView struct {
	node string
	info *m.DatasetInfo
}

func masterish(p m.SitePhase) bool {
	switch p {
	case m.SitePhase_SITE_PHASE_ACTIVE, m.SitePhase_SITE_PHASE_PRE_COPY, m.SitePhase_SITE_PHASE_PAUSED,
		m.SitePhase_SITE_PHASE_FINAL_DELTA, m.SitePhase_SITE_PHASE_PROMOTING:
		return true
	}
	return false
}

func (b *Balancer) busy(env *core.Env, site string) bool {
	at, ok := b.actions[site]
	return ok && env.NowMs()-at < env.Config.ActionTimeout.Milliseconds() || b.probes[site] != nil
}

// warm reports whether a newly active balancer may act: once every live
// member has reported to it since it became active, or after
// Config.BalancerWarmup at the latest.
func (b *Balancer) warm(env *core.Env) bool {
	if env.NowMs()-b.activeSince >= env.Config.BalancerWarmup.Milliseconds() {
		return true
	}
	for _, n := range b.live {
		if at, ok := b.heardAt[n]; !ok || at < b.activeSince {
			return false
		}
	}
	return true
}

func (b *Balancer) plan(env *core.Env) []core.Effect {
	if !b.warm(env) {
		return nil
	}
	copies := map[string][]copyView{}
	load := map[string]uint64{}
	for _, n := range b.live {
		r := b.reports[n]
		if r == nil {
			continue
		}
		load[n] = 0
		for _, d := range r.Datasets {
			copies[d.Site] = append(copies[d.Site], copyView{node: n, info: d})
			if d.Role == m.Role_ROLE_MASTER && masterish(d.Phase) {
				load[n] += d.Requests
			}
		}
	}
	routes := &m.RouteTable{}
	fx := b.tombstoned(env, copies, routes)
	fx = append(fx, b.place(env, copies, load)...)
	var order []string // nodes by load for repairs, computed once per plan
	sites := make([]string, 0, len(copies))
	for s := range copies {
		sites = append(sites, s)
	}
	slices.Sort(sites)
	for _, site := range sites {
		cs := copies[site]
		var masters []copyView
		for _, c := range cs {
			if c.info.Role == m.Role_ROLE_MASTER && masterish(c.info.Phase) {
				masters = append(masters, c)
			}
		}
		if len(masters) == 1 {
			routes.Routes = append(routes.Routes, &m.RouteUpdate{Site: site, Master: masters[0].node,
				Epoch: masters[0].info.Epoch, Phase: masters[0].info.Phase, Domains: masters[0].info.Spec.GetDomains(),
				MysqlUsers: core.MysqlUserNames(masters[0].info.Spec)})
		}
		if b.busy(env, site) && !(len(masters) == 0 && b.probes[site] == nil && b.moves[site]) {
			// A repair or a move was sent to the master; with no master
			// left it is moot and must not hold up the failover.
			continue
		}
		switch {
		case len(masters) == 0:
			b.conflicts[site] = 0
			if b.awaitingReports(env) {
				// A member that just (re)joined may hold the newest copy (a
				// restarted master): hear from it first, for a bounded time.
				continue
			}
			fx = append(fx, b.failover(env, site, cs)...)
		case len(masters) > 1:
			b.conflicts[site]++
			if b.conflicts[site] >= healConfirmRounds {
				b.conflicts[site] = 0
				fx = append(fx, b.heal(env, site, masters)...)
			}
		default:
			b.conflicts[site] = 0
			if order == nil {
				order = b.byLoad(load, nil)
			}
			fx = append(fx, b.repair(env, site, masters[0], cs, order)...)
		}
	}
	fx = append(fx, b.rebalance(env, copies, load)...)
	if len(routes.Routes) > 0 {
		fx = append(fx, core.Broadcast{Msg: routes})
	}
	return fx
}

// reportWaitMax bounds how long failovers wait for a (re)joined member's
// first report, in report intervals.
const reportWaitMax = 3

// awaitingReports: some live member has not reported since it (re)joined,
// and joined less than reportWaitMax report intervals ago.
func (b *Balancer) awaitingReports(env *core.Env) bool {
	for _, n := range b.live {
		if b.reports[n] == nil && env.NowMs()-b.liveSince[n] < reportWaitMax*env.Config.ReportInterval.Milliseconds() {
			return true
		}
	}
	return false
}

// copyCounts counts the copies each node holds.
func copyCounts(copies map[string][]copyView) map[string]int {
	count := map[string]int{}
	for _, cs := range copies {
		for _, c := range cs {
			count[c.node]++
		}
	}
	return count
}

// byLoad returns live, non-draining nodes, least loaded first, then with
// the fewest copies (count, from copyCounts; nil: not compared), then by
// name.
func (b *Balancer) byLoad(load map[string]uint64, count map[string]int) []string {
	var nodes []string
	for _, n := range b.live {
		if b.reports[n] != nil && !b.draining[n] {
			nodes = append(nodes, n)
		}
	}
	slices.SortFunc(nodes, func(x, y string) int {
		if load[x] != load[y] {
			if load[x] < load[y] {
				return -1
			}
			return 1
		}
		if count[x] != count[y] {
			return count[x] - count[y]
		}
		return strings.Compare(x, y)
	})
	return nodes
}

func redundancy(env *core.Env, spec *m.SiteSpec) int {
	if r := int(spec.GetRedundancy()); r > 0 {
		return r
	}
	return env.Config.Redundancy
}

// place creates new sites on the least loaded nodes.
func (b *Balancer) place(env *core.Env, copies map[string][]copyView, load map[string]uint64) []core.Effect {
	var fx []core.Effect
	var keep []*m.CreateSite
	// Counted once, then kept up to date as sites are placed: counting per
	// create made a burst of creates quadratic (10,000 sites did not place
	// in 20 minutes).
	var count map[string]int
	for _, c := range b.creates {
		site := c.Spec.GetName()
		if len(copies[site]) > 0 {
			continue // exists already (a duplicate create)
		}
		tomb := b.tombstones[site]
		if b.busy(env, site) {
			if tomb != nil {
				keep = append(keep, c) // deleted just now: created again once that settles
			}
			continue
		}
		if count == nil {
			count = copyCounts(copies)
		}
		nodes := b.byLoad(load, count)
		if tomb != nil {
			// Never on a node whose copy of the old history is not
			// stashed yet: the new site must start empty.
			nodes = slices.DeleteFunc(nodes, func(n string) bool {
				return slices.ContainsFunc(b.reports[n].GetDatasets(), func(d *m.DatasetInfo) bool {
					return d.Site == site && d.Role != m.Role_ROLE_DELETED
				})
			})
		}
		if len(nodes) == 0 {
			keep = append(keep, c)
			continue
		}
		n := min(redundancy(env, c.Spec), len(nodes))
		master, replicas := nodes[0], slices.Clone(nodes[1:n])
		epoch := &m.Epoch{Term: 1, Node: master}
		if tomb != nil {
			// Created again after its deletion: above the tombstone, so
			// that every copy tells the new history from the old.
			epoch = core.NextEpoch(tomb, master, env)
			b.recreated[site] = true
		}
		spec := proto.CloneOf(c.Spec)
		spec.Created = epoch
		b.actions[site], b.moves[site] = env.NowMs(), false
		copies[site] = []copyView{{node: master, info: &m.DatasetInfo{Site: site}}}
		count[master]++
		fx = append(fx, core.Info("placing site", "site", site, "master", master, "replicas", fmt.Sprint(replicas)),
			core.Send{To: core.DatasetAddr(master, site), Msg: &m.Activate{Spec: spec,
				Epoch: epoch, Replicas: replicas, Create: true, Reason: "create"}})
	}
	b.creates = keep
	return fx
}

// failover probes every live copy of a site without a master; the newest wins.
func (b *Balancer) failover(env *core.Env, site string, cs []copyView) []core.Effect {
	b.nextID++
	// Ids carry the time, so that an answer to a probe of an earlier
	// incarnation of this balancer (same counter) is never taken for one.
	p := &probe{id: uint64(env.NowMs())<<20 | b.nextID&(1<<20-1), answers: map[string]*m.DatasetInfo{}}
	b.probes[site] = p
	fx := []core.Effect{core.Info("site has no master: probing copies", "site", site, "copies", len(cs))}
	for _, c := range cs {
		p.asked = append(p.asked, c.node)
		fx = append(fx, core.Send{To: core.DatasetAddr(c.node, site), Msg: &m.Probe{Site: site, ProbeId: p.id, ReplyNode: b.node}})
	}
	return append(fx, core.SetTimer{Key: timerProbe + site, After: env.Config.ProbeTimeout})
}

// later orders the copies a failover weighs: epoch, then sequence. Epochs
// follow the time of the decision that made them (NextEpoch), so the copy of
// the latest decided history wins; within one history, the longest copy.
func later(a, b *m.SnapshotRef) bool {
	if b == nil {
		return a != nil
	}
	if a == nil {
		return false
	}
	if c := core.CompareEpoch(a.Epoch, b.Epoch); c != 0 {
		return c > 0
	}
	return a.Seq > b.Seq
}

func (b *Balancer) resolveProbe(env *core.Env, site string) []core.Effect {
	p := b.probes[site]
	if p == nil {
		return nil
	}
	delete(b.probes, site)
	fx := []core.Effect{core.CancelTimer{Key: timerProbe + site}}
	var best *m.DatasetInfo
	var fence *m.Epoch
	var holders, seen []string
	for _, n := range p.asked {
		a := p.answers[n]
		if a == nil {
			continue
		}
		if a.Role == m.Role_ROLE_MASTER && masterish(a.Phase) {
			return append(fx, core.Info("failover not needed: a master answered", "site", site, "master", n))
		}
		holders = append(holders, n)
		seen = append(seen, n+"="+a.Latest.GetName())
		fence = core.MaxEpoch(fence, a.Epoch)
		created, bestCreated := a.Spec.GetCreated().GetTerm(), best.GetSpec().GetCreated().GetTerm()
		switch {
		case best == nil:
			best = a
		case env.Config.Mutations.PromoteOldest && later(best.Latest, a.Latest):
			best = a
		case !env.Config.Mutations.PromoteOldest && created != bestCreated:
			// Copies of different incarnations (as in heal): the one
			// created later was created above the other's tombstone, so
			// the deleted history is never promoted, however new.
			if created > bestCreated {
				best = a
			}
		case !env.Config.Mutations.PromoteOldest && later(a.Latest, best.Latest):
			best = a
		case !env.Config.Mutations.PromoteOldest && !later(best.Latest, a.Latest) && a.Node == a.Latest.GetEpoch().GetNode():
			// Equal snapshots: prefer the node that wrote them, whose live
			// dataset (or a snapshot still being taken) may hold more.
			best = a
		}
	}
	if best == nil {
		return append(fx, core.Warn("failover impossible: no copy answered", "site", site))
	}
	if best.Latest == nil && len(p.answers) < len(p.asked) {
		// Only empty copies answered (a site whose creation was cut short):
		// one that did not answer may hold data, so wait for the next round.
		return append(fx, core.Warn("failover deferred: only empty copies answered", "site", site))
	}
	epoch := core.NextEpoch(fence, best.Node, env)
	var replicas []string
	for _, h := range holders {
		if h != best.Node {
			replicas = append(replicas, h)
		}
	}
	b.actions[site], b.moves[site] = env.NowMs(), false
	return append(fx, core.Info("failover: promoting newest copy", "site", site, "node", best.Node,
		"snapshot", best.Latest.GetName(), "epoch", core.EpochString(epoch), "copies", strings.Join(seen, " ")),
		core.Send{To: core.DatasetAddr(best.Node, site), Msg: &m.Activate{Spec: best.Spec, Epoch: epoch,
			Replicas: replicas, Reason: "failover"}})
}

// heal resolves two masters: the newest history wins at an epoch above both,
// the others are demoted (their divergent snapshots get stashed). Masters
// of different incarnations (their specs created at epochs of different
// terms) are decided by creation first: the later one was created after the earlier
// was deleted (a create above its tombstone), and a balancer that never saw
// that tombstone (it was away, and the new incarnation's copies no longer
// report it) must not bring the deleted history back however recently it
// was written (the sim found this with a delete and a create on either side
// of a partition). Two first creates (both term 1) racing in a partition
// are one incarnation as far as this goes: the newest history wins.
func (b *Balancer) heal(env *core.Env, site string, masters []copyView) []core.Effect {
	winner := masters[0]
	var fence *m.Epoch
	for _, c := range masters {
		fence = core.MaxEpoch(fence, c.info.Epoch)
		created, winnerCreated := c.info.Spec.GetCreated().GetTerm(), winner.info.Spec.GetCreated().GetTerm()
		switch {
		case created > winnerCreated:
			winner = c
		case created == winnerCreated && core.Newer(c.info.Latest, winner.info.Latest):
			winner = c
		}
	}
	epoch := core.NextEpoch(fence, winner.node, env)
	b.actions[site], b.moves[site] = env.NowMs(), false
	fx := []core.Effect{core.Info("two masters: newest history wins", "site", site, "winner", winner.node, "epoch", core.EpochString(epoch))}
	var replicas []string
	for _, c := range masters {
		if c.node != winner.node {
			replicas = append(replicas, c.node)
			fx = append(fx, core.Send{To: core.SiteAddr(c.node, site), Msg: &m.Demote{Site: site, Winner: winner.node, Epoch: epoch}})
		}
	}
	replicas = append(replicas, winner.info.Replicas...)
	return append(fx, core.Send{To: core.DatasetAddr(winner.node, site), Msg: &m.Activate{Spec: winner.info.Spec,
		Epoch: epoch, Replicas: replicas, Reason: "heal"}})
}

// repair keeps the redundancy: a replica on every live copy, new ones on the
// least loaded nodes without a copy; a master on a draining node moves.
func (b *Balancer) repair(env *core.Env, site string, master copyView, cs []copyView, order []string) []core.Effect {
	var fx []core.Effect
	want := redundancy(env, master.info.Spec) - 1
	have := map[string]bool{master.node: true}
	listed := map[string]bool{}
	for _, r := range master.info.Replicas {
		listed[r] = true
	}
	liveReplicas := 0
	for _, r := range master.info.Replicas {
		if slices.Contains(b.live, r) && !b.draining[r] {
			liveReplicas++
			have[r] = true
		}
	}
	// Copies the master does not list (an old master after a heal, a node
	// that came back) are adopted: the master's next offer brings them up to
	// date, and stashes whatever history of theirs lost.
	for _, c := range cs {
		if !have[c.node] && !listed[c.node] && !b.draining[c.node] {
			liveReplicas++
			have[c.node] = true
			fx = append(fx, core.Send{To: core.SiteAddr(master.node, site), Msg: &m.AddReplica{Site: site, Node: c.node}})
		}
	}
	for _, n := range order {
		if liveReplicas >= want {
			break
		}
		if !have[n] {
			liveReplicas++
			have[n] = true
			fx = append(fx, core.Info("adding replica", "site", site, "node", n),
				core.Send{To: core.SiteAddr(master.node, site), Msg: &m.AddReplica{Site: site, Node: n}})
		}
	}
	if b.draining[master.node] && master.info.Phase == m.SitePhase_SITE_PHASE_ACTIVE {
		for _, r := range master.info.Replicas {
			if slices.Contains(b.live, r) && !b.draining[r] {
				b.actions[site], b.moves[site] = env.NowMs(), true
				return append(fx, core.Send{To: core.SiteAddr(master.node, site), Msg: &m.Migrate{Site: site, Target: r, Reason: "drain"}})
			}
		}
	}
	if len(fx) > 0 {
		b.actions[site], b.moves[site] = env.NowMs(), true
	}
	return fx
}

// rebalance moves a site from a hot node to a cold one that holds a replica,
// with hysteresis (hot above mean*(1+h), cold below mean*(1-h)), a per-site
// cooldown and a bound on moves in flight; never a site with an FTP session.
func (b *Balancer) rebalance(env *core.Env, copies map[string][]copyView, load map[string]uint64) []core.Effect {
	if env.Config.MovesInFlightMax == 0 || len(load) < 2 {
		return nil
	}
	now := env.NowMs()
	inFlight := 0
	for s, at := range b.lastMove {
		if now-at < env.Config.StepTimeout.Milliseconds()*3 && b.actions[s] == at {
			inFlight++
		}
	}
	if inFlight >= env.Config.MovesInFlightMax {
		return nil
	}
	var total uint64
	for _, l := range load {
		total += l
	}
	mean := float64(total) / float64(len(load))
	nodes := b.byLoad(load, copyCounts(copies))
	if len(nodes) < 2 {
		return nil
	}
	hot := nodes[len(nodes)-1]
	hotLoad := float64(load[hot])
	if load[hot] < env.Config.LoadMin || hotLoad <= mean*(1+env.Config.LoadHysteresis) {
		return nil
	}
	sites := make([]string, 0, len(copies))
	for s := range copies {
		sites = append(sites, s)
	}
	slices.Sort(sites)
	for _, site := range sites {
		var master *m.DatasetInfo
		for _, c := range copies[site] {
			if c.node == hot && c.info.Role == m.Role_ROLE_MASTER && c.info.Phase == m.SitePhase_SITE_PHASE_ACTIVE {
				master = c.info
			}
		}
		if master == nil || master.FtpLeases > 0 || b.busy(env, site) {
			continue
		}
		if at, ok := b.lastMove[site]; ok && now-at < env.Config.MoveCooldown.Milliseconds() {
			continue
		}
		// Move only if it narrows the gap: the site's load must be less than
		// the difference between the hot node and the target.
		for _, r := range master.Replicas {
			if !slices.Contains(nodes, r) || float64(load[r]) >= mean*(1-env.Config.LoadHysteresis) {
				continue
			}
			if master.Requests == 0 || load[r]+master.Requests >= load[hot] {
				continue
			}
			b.actions[site], b.moves[site] = now, true
			b.lastMove[site] = now
			return []core.Effect{core.Info("moving site off a hot node", "site", site, "from", hot, "to", r,
				"load_from", load[hot], "load_to", load[r], "site_load", master.Requests),
				core.Send{To: core.SiteAddr(hot, site), Msg: &m.Migrate{Site: site, Target: r, Reason: "load"}}}
		}
	}
	return nil
}

// deleteSite deletes a site: a tombstone epoch above everything known of it
// (or the one it has already), told to the site actor of every live node,
// which stops serving and has its dataset stash the copy whole and record
// the tombstone; a node down now is told when it reports again
// (tombstoned). Pending creates of the site are forgotten, and the route
// names this node at the tombstone (its site actor answers UNKNOWN_SITE).
func (b *Balancer) deleteSite(env *core.Env, d *m.AdminDeleteSite) []core.Effect {
	if !b.active {
		if d.Forwarded || len(b.live) == 0 || b.live[0] == b.node {
			return []core.Effect{core.Warn("delete dropped: not the active balancer", "site", d.Site, "node", b.node)}
		}
		return []core.Effect{core.Send{To: core.BalancerAddr(b.live[0]), Msg: &m.AdminDeleteSite{Site: d.Site, Forwarded: true}}}
	}
	site := d.Site
	tomb := b.tombstones[site]
	var top *m.Epoch
	known, alive := tomb != nil, false
	for _, n := range b.live {
		for _, c := range b.reports[n].GetDatasets() {
			if c.Site != site {
				continue
			}
			known = true
			top = core.MaxEpoch(core.MaxEpoch(top, c.Epoch), c.Spec.GetCreated())
			if c.Role != m.Role_ROLE_DELETED && (tomb == nil || core.CreatedAfter(c.Spec, tomb)) {
				alive = true
			}
		}
	}
	pending := slices.ContainsFunc(b.creates, func(c *m.CreateSite) bool { return c.Spec.GetName() == site })
	if _, acted := b.actions[site]; acted && !known {
		known = true // placed here, not reported yet
	}
	alive = alive || b.recreated[site]
	if !known && !pending {
		return []core.Effect{core.Warn("delete of an unknown site ignored", "site", site, "node", b.node)}
	}
	if tomb == nil || alive || pending {
		// A first deletion, or of a site created again since the last.
		tomb = core.TombstoneEpoch(core.MaxEpoch(top, tomb), b.node, env)
	}
	b.tombstones[site] = tomb
	delete(b.recreated, site)
	b.creates = slices.DeleteFunc(b.creates, func(c *m.CreateSite) bool { return c.Spec.GetName() == site })
	fx := []core.Effect{core.Info("deleting site", "site", site, "tombstone", core.EpochString(tomb), "live", len(b.live))}
	if b.probes[site] != nil {
		delete(b.probes, site)
		fx = append(fx, core.CancelTimer{Key: timerProbe + site})
	}
	delete(b.conflicts, site)
	delete(b.lastMove, site)
	b.actions[site], b.moves[site] = env.NowMs(), false
	for _, n := range b.live {
		fx = append(fx, core.Send{To: core.SiteAddr(n, site), Msg: &m.DeleteSite{Site: site, Epoch: tomb}})
	}
	return append(fx, core.Broadcast{Msg: &m.RouteUpdate{Site: site, Master: b.node, Epoch: tomb, Phase: m.SitePhase_SITE_PHASE_STOPPED}})
}

// tombstoned learns tombstones from the reports of deleted copies and, for
// every deleted site, keeps in copies only the copies of a history created
// after its tombstone (none unless the site was created again): the rest
// are never placed, repaired, failed over or routed to. A copy of the old
// history (its node was away at the deletion, or missed it) is told to
// delete, and while the site is not created again every live node that
// has not recorded the tombstone is told too (so that whichever becomes
// balancer next knows it), at most once per ActionTimeout; its route names
// a live node that holds the tombstone, whose site actor answers
// UNKNOWN_SITE.
func (b *Balancer) tombstoned(env *core.Env, copies map[string][]copyView, routes *m.RouteTable) []core.Effect {
	if env.Config.Mutations.ForgetTombstones {
		return nil
	}
	for site, cs := range copies {
		for _, c := range cs {
			if c.info.Role == m.Role_ROLE_DELETED {
				b.tombstones[site] = core.MaxEpoch(b.tombstones[site], c.info.Epoch)
			}
		}
	}
	var fx []core.Effect
	for _, site := range slices.Sorted(maps.Keys(b.tombstones)) {
		tomb := b.tombstones[site]
		var alive []copyView
		holders := map[string]bool{}
		var stale []string
		for _, c := range copies[site] {
			switch {
			case c.info.Role == m.Role_ROLE_DELETED && !core.EpochLess(c.info.Epoch, tomb):
				holders[c.node] = true
			case c.info.Role != m.Role_ROLE_DELETED && core.CreatedAfter(c.info.Spec, tomb):
				alive = append(alive, c)
			default:
				stale = append(stale, c.node)
			}
		}
		if len(alive) > 0 {
			copies[site] = alive
		} else {
			delete(copies, site)
			for _, n := range b.live {
				if b.reports[n] != nil && !holders[n] && !slices.Contains(stale, n) {
					stale = append(stale, n)
				}
			}
			for _, n := range b.live {
				if holders[n] {
					routes.Routes = append(routes.Routes, &m.RouteUpdate{Site: site, Master: n, Epoch: tomb,
						Phase: m.SitePhase_SITE_PHASE_STOPPED})
					break
				}
			}
		}
		if len(stale) == 0 || b.busy(env, site) {
			continue
		}
		slices.Sort(stale)
		b.actions[site], b.moves[site] = env.NowMs(), false
		fx = append(fx, core.Info("deleted site: telling copies and nodes without its tombstone", "site", site,
			"tombstone", core.EpochString(tomb), "nodes", fmt.Sprint(stale)))
		for _, n := range stale {
			fx = append(fx, core.Send{To: core.SiteAddr(n, site), Msg: &m.DeleteSite{Site: site, Epoch: tomb}})
		}
	}
	return fx
}
