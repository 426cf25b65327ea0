// Package node is the state machine of one cluster node: its membership view
// (heartbeats), its load reports to the balancer, its route cache, and the
// entry side of every client request (route, forward, retry, hold while no
// master is known).
package node

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

const (
	timerHeartbeat = "heartbeat"
	timerReport    = "report"
	timerRequest   = "req/" // + request id
)

type pending struct {
	req     *m.SiteRequest
	retried bool   // an idempotent request is retried once after a timeout
	tried   string // the master it was last sent to
	waiting bool   // parked until a route is known
}

// reportedSite is what the last report said of a site, and from what.
type reportedSite struct {
	d, s    *m.DatasetInfo
	load    uint64
	procErr string
	out     *m.DatasetInfo
}

// Node is the node actor.
type Node struct {
	name        string
	incarnation uint64
	members     []string
	lastHeard   map[string]int64
	live        map[string]bool
	leader      string
	routes      map[string]*m.RouteUpdate
	pending     map[uint64]*pending
	datasets    map[string]*m.DatasetInfo // from local dataset actors
	sites       map[string]*m.DatasetInfo // from local site actors (phase, leases)
	load        uint64                    // requests served here since the last report
	siteLoad    map[string]uint64         // the same, per site
	reported    map[string]*reportedSite
	draining    bool
	booted      bool
	freeBytes   uint64 // from the host (NodeReport input)
	sizeBytes   uint64 // the same; 0: not known
	// procErr is why a site's processes are not up here, by site (the
	// host's ProcessHealth; only failing sites are kept).
	procErr map[string]string
	// storageLow: the last free figure was under the bound (lowBound);
	// lowToldMs is when the datasets were last told (StorageLow).
	storageLow bool
	lowToldMs  int64
}

var _ core.Actor = (*Node)(nil)

// New returns the node actor of name.
func New(name string) *Node {
	return &Node{name: name, lastHeard: map[string]int64{}, live: map[string]bool{},
		routes: map[string]*m.RouteUpdate{}, pending: map[uint64]*pending{},
		datasets: map[string]*m.DatasetInfo{}, sites: map[string]*m.DatasetInfo{}, siteLoad: map[string]uint64{},
		reported: map[string]*reportedSite{}, procErr: map[string]string{}}
}

// Live returns the members this node believes up, sorted.
func (n *Node) Live() []string {
	var out []string
	for _, mb := range n.members {
		if n.live[mb] {
			out = append(out, mb)
		}
	}
	return out
}

// Route returns the cached route of a site (nil if unknown).
func (n *Node) Route(site string) *m.RouteUpdate { return n.routes[site] }

// Pending is the number of client requests this entry node waits on.
func (n *Node) Pending() int { return len(n.pending) }

// Leader is the node whose balancer this node reports to.
func (n *Node) Leader() string { return n.leader }

// Step handles one input.
func (n *Node) Step(env *core.Env, in proto.Message) []core.Effect {
	switch msg := in.(type) {
	case *m.NodeBoot:
		return n.boot(env, msg)
	case *m.Heartbeat:
		return n.heard(env, msg.Node)
	case *m.Timer:
		return n.timer(env, msg.Key)
	case *m.DatasetInfo:
		if msg.Role != m.Role_ROLE_UNSPECIFIED || msg.Latest != nil {
			n.datasets[msg.Site] = msg
		} else if msg.Node == "" {
			// The host's count of requests its front ends forwarded
			// straight to this master (the hot path bypasses the actors):
			// load only.
			n.siteLoad[msg.Site] += msg.Requests
			n.load += msg.Requests
		} else {
			n.siteLoad[msg.Site] += msg.Requests
			n.load += msg.Requests
			n.sites[msg.Site] = msg
		}
		return nil
	case *m.NodeReport:
		// The host's disk figure, passed on in our reports.
		if msg.Node == n.name {
			n.freeBytes, n.sizeBytes = msg.FreeBytes, msg.SizeBytes
			return n.storageFigure(env)
		}
		return nil
	case *m.ProcessHealth:
		if msg.Error == "" {
			delete(n.procErr, msg.Site)
		} else {
			n.procErr[msg.Site] = msg.Error
		}
		return nil
	case *m.SiteRequest:
		return n.clientRequest(env, msg)
	case *m.SiteResponse:
		return n.response(env, msg)
	case *m.RouteUpdate:
		return n.routeUpdate(env, msg)
	case *m.RouteTable:
		var fx []core.Effect
		for _, r := range msg.Routes {
			fx = append(fx, n.routeUpdate(env, r)...)
		}
		return fx
	case *m.CreateSite, *m.DrainNode:
		if d, ok := msg.(*m.DrainNode); ok && d.Node == n.name {
			n.draining = true
		}
		return []core.Effect{core.Send{To: core.BalancerAddr(n.leader), Msg: in}}
	case *m.AdminQuery:
		return n.adminQuery(msg)
	case *m.RemoveNode:
		return n.remove(env, msg.Node)
	}
	panic(fmt.Sprintf("node %s: unexpected input %T", n.name, in))
}

// adminQuery routes a query of the admin endpoint: a cluster view is the
// active balancer's (the leader's, in this node's view), a site view is the
// local dataset actor's. What cannot be routed is answered here, to the
// client address of the node that asked. A site query never reaches a
// dataset actor this node has not heard from, so that it spawns none.
func (n *Node) adminQuery(q *m.AdminQuery) []core.Effect {
	if q.ReplyNode == "" {
		q = proto.CloneOf(q)
		q.ReplyNode = n.name
	}
	answer := func(code m.Code, detail string) []core.Effect {
		return []core.Effect{core.Send{To: core.ClientAddr(q.ReplyNode), Msg: &m.AdminView{
			QueryId: q.QueryId, Code: code, Detail: detail, Node: n.name, Balancer: n.leader}}}
	}
	switch q.Kind {
	case m.AdminQueryKind_ADMIN_QUERY_CLUSTER, m.AdminQueryKind_ADMIN_QUERY_CLAIMS:
		if n.leader == "" {
			return answer(m.Code_CODE_UNAVAILABLE, "no live member known: no active balancer")
		}
		return []core.Effect{core.Send{To: core.BalancerAddr(n.leader), Msg: q}}
	case m.AdminQueryKind_ADMIN_QUERY_SITE:
		if q.Site == "" {
			return answer(m.Code_CODE_INVALID, "a site query names no site")
		}
		if n.datasets[q.Site] == nil {
			return answer(m.Code_CODE_UNKNOWN_SITE, "no copy of site "+q.Site+" on "+n.name)
		}
		return []core.Effect{core.Send{To: core.DatasetAddr(n.name, q.Site), Msg: q}}
	}
	return answer(m.Code_CODE_INVALID, "unknown query kind "+q.Kind.String())
}

func (n *Node) boot(env *core.Env, b *m.NodeBoot) []core.Effect {
	n.booted = true
	n.incarnation = b.Incarnation
	n.members = slices.Clone(b.Members)
	slices.Sort(n.members)
	now := env.NowMs()
	// Every member starts live with a full failure timeout of grace, so that
	// a starting cluster does not fail over before the first heartbeats.
	for _, mb := range n.members {
		n.live[mb] = true
		n.lastHeard[mb] = now
	}
	fx := []core.Effect{core.Info("node booted", "node", n.name, "members", len(n.members), "datasets", len(b.Datasets))}
	for _, d := range b.Datasets {
		fx = append(fx, core.Send{To: core.DatasetAddr(n.name, d.Info.Site), Msg: d})
	}
	fx = append(fx, n.leadership(env)...)
	return append(fx,
		core.SetTimer{Key: timerHeartbeat, After: env.Config.HeartbeatInterval},
		core.SetTimer{Key: timerReport, After: env.Config.ReportInterval})
}

// remove takes a member out for good: it is down from now on and its
// heartbeats are not heard. A node is never told to remove itself (the
// admin endpoint refuses a live node); if it is, it logs and keeps going.
func (n *Node) remove(env *core.Env, member string) []core.Effect {
	if member == n.name {
		return []core.Effect{core.Warn("asked to remove this node itself: ignored", "node", n.name)}
	}
	i := slices.Index(n.members, member)
	if i < 0 {
		return nil
	}
	n.members = slices.Delete(slices.Clone(n.members), i, i+1)
	wasLive := n.live[member]
	delete(n.live, member)
	delete(n.lastHeard, member)
	fx := []core.Effect{core.Info("member removed", "node", n.name, "member", member)}
	if wasLive {
		return append(fx, n.memberChanged(env, member, false)...)
	}
	return append(fx, n.leadership(env)...)
}

func (n *Node) heard(env *core.Env, from string) []core.Effect {
	if !slices.Contains(n.members, from) {
		return nil
	}
	n.lastHeard[from] = env.NowMs()
	if n.live[from] {
		return nil
	}
	n.live[from] = true
	return n.memberChanged(env, from, true)
}

// memberChanged tells the local balancer and site actors, and re-picks the leader.
func (n *Node) memberChanged(env *core.Env, member string, up bool) []core.Effect {
	fx := []core.Effect{core.Info("member "+map[bool]string{true: "up", false: "down"}[up], "node", n.name, "member", member)}
	ev := &m.MemberEvent{Node: member, Up: up}
	for _, site := range sortedKeys(n.sites) {
		fx = append(fx, core.Send{To: core.SiteAddr(n.name, site), Msg: ev})
	}
	if !up {
		// Requests parked on, or in flight to, a dead master wait for a new route.
		for _, id := range sortedKeys(n.pending) {
			p := n.pending[id]
			if r := n.routes[p.req.Site]; r != nil && r.Master == member {
				p.waiting = true
			}
		}
	}
	return append(fx, n.leadership(env)...)
}

func (n *Node) leadership(env *core.Env) []core.Effect {
	live := n.Live()
	leader := ""
	if len(live) > 0 {
		leader = live[0]
	}
	changed := leader != n.leader
	n.leader = leader
	fx := []core.Effect{core.Send{To: core.BalancerAddr(n.name), Msg: &m.BalancerRole{Active: leader == n.name, Live: live}}}
	if changed && leader != "" && n.booted {
		// A new balancer waits for every live member's report before it
		// acts: send ours now rather than at the next report tick.
		fx = append(fx, core.Send{To: core.BalancerAddr(leader), Msg: n.report(env)})
	}
	return fx
}

func (n *Node) timer(env *core.Env, key string) []core.Effect {
	switch {
	case key == timerHeartbeat:
		var fx []core.Effect
		now := env.NowMs()
		hb := &m.Heartbeat{Node: n.name, Incarnation: n.incarnation}
		for _, mb := range n.members {
			if mb == n.name {
				continue
			}
			fx = append(fx, core.Send{To: core.NodeAddr(mb), Msg: hb})
			if n.live[mb] && now-n.lastHeard[mb] > env.Config.FailureTimeout.Milliseconds() {
				n.live[mb] = false
				fx = append(fx, n.memberChanged(env, mb, false)...)
			}
		}
		return append(fx, core.SetTimer{Key: timerHeartbeat, After: env.Config.HeartbeatInterval})
	case key == timerReport:
		return []core.Effect{
			core.Send{To: core.BalancerAddr(n.leader), Msg: n.report(env)},
			core.SetTimer{Key: timerReport, After: env.Config.ReportInterval},
		}
	case strings.HasPrefix(key, timerRequest):
		id, _ := strconv.ParseUint(key[len(timerRequest):], 10, 64)
		return n.requestTimeout(env, id)
	}
	return nil
}

func (n *Node) report(env *core.Env) *m.NodeReport {
	r := &m.NodeReport{Node: n.name, Load: n.load, Draining: n.draining, AtMs: env.NowMs(), FreeBytes: n.freeBytes, SizeBytes: n.sizeBytes}
	n.load = 0
	for _, site := range sortedKeys(n.datasets) {
		d, s, load := n.datasets[site], n.sites[site], n.siteLoad[site]
		// Processes run on a master only.
		procErr := ""
		if d.Role == m.Role_ROLE_MASTER {
			procErr = n.procErr[site]
		}
		// Reports are read, never changed, by the balancer: an unchanged
		// site's entry is sent again as it was.
		if c := n.reported[site]; c != nil && c.d == d && c.s == s && c.load == load && c.procErr == procErr {
			r.Datasets = append(r.Datasets, c.out)
			continue
		}
		// A shallow copy: the sub-messages are never mutated once sent.
		// The spec goes without the site's certificate and key (their
		// digest stands for them): the balancer has no use for them, and a
		// copy's entry is sent again whenever it changes.
		var spec *m.SiteSpec
		if c := n.reported[site]; c != nil && c.d.Spec == d.Spec {
			spec = c.out.Spec
		} else {
			spec = core.ReportSpec(d.Spec)
		}
		info := &m.DatasetInfo{Site: d.Site, Node: d.Node, Role: d.Role, Epoch: d.Epoch, Latest: d.Latest,
			Spec: spec, Replicas: d.Replicas, Snapshots: d.Snapshots, Stashes: d.Stashes, Bytes: d.Bytes,
			Phase: d.Phase, FtpLeases: d.FtpLeases, Requests: load, ProcessError: procErr,
			ActivationError: d.ActivationError, ReplicaErrors: d.ReplicaErrors}
		if s != nil && info.Phase == m.SitePhase_SITE_PHASE_ACTIVE {
			info.Phase = s.Phase
			info.FtpLeases = s.FtpLeases
		}
		n.reported[site] = &reportedSite{d: d, s: s, load: load, procErr: procErr, out: info}
		r.Datasets = append(r.Datasets, info)
	}
	clear(n.siteLoad)
	return r
}

// clientRequest is a request that entered the cluster at this node.
func (n *Node) clientRequest(env *core.Env, req *m.SiteRequest) []core.Effect {
	if len(n.pending) >= env.Config.FrontPendingMax {
		return []core.Effect{core.Send{To: core.ClientAddr(n.name), Msg: &m.SiteResponse{
			Site: req.Site, RequestId: req.RequestId, Code: m.Code_CODE_OVERLOADED, WriteId: req.WriteId,
			RetryAfterS: uint32(max(1, env.Config.RetryAfter/time.Second)), Detail: "entry node pending bound reached"}}}
	}
	if _, dup := n.pending[req.RequestId]; dup {
		return nil
	}
	req.EntryNode = n.name
	req.ArrivedMs = env.NowMs()
	p := &pending{req: req}
	n.pending[req.RequestId] = p
	fx := []core.Effect{core.SetTimer{Key: timerRequest + strconv.FormatUint(req.RequestId, 10), After: env.Config.RequestTimeout}}
	return append(fx, n.forward(env, p)...)
}

// forward sends a pending request to the site's master, or parks it.
func (n *Node) forward(env *core.Env, p *pending) []core.Effect {
	r := n.routes[p.req.Site]
	if r == nil || r.Master == "" || !n.live[r.Master] {
		p.waiting = true
		return nil
	}
	p.waiting = false
	p.tried = r.Master
	p.req.Attempt++
	return []core.Effect{core.Send{To: core.SiteAddr(r.Master, p.req.Site), Msg: proto.Clone(p.req)}}
}

func (n *Node) finish(id uint64, resp *m.SiteResponse) []core.Effect {
	delete(n.pending, id)
	return []core.Effect{
		core.CancelTimer{Key: timerRequest + strconv.FormatUint(id, 10)},
		core.Send{To: core.ClientAddr(n.name), Msg: resp},
	}
}

func (n *Node) response(env *core.Env, resp *m.SiteResponse) []core.Effect {
	p := n.pending[resp.RequestId]
	if p == nil {
		return nil // answered already (a duplicate or a retried request)
	}
	if resp.Code != m.Code_CODE_MOVED {
		return n.finish(resp.RequestId, resp)
	}
	if resp.Master != "" {
		if r := n.routes[resp.Site]; r != nil && r.Master == p.tried && r.Master != resp.Master && core.EpochLess(resp.Epoch, r.Epoch) {
			// The cached master itself disowns the site and names one at a
			// lower epoch: the cached epoch was never (or is no longer) its
			// own (e.g. learnt from an answer that named it heal winner
			// before a fence demoted it). Its word about itself wins, or the
			// cache would keep sending every request back to it.
			n.routes[resp.Site] = &m.RouteUpdate{Site: resp.Site, Master: resp.Master, Epoch: resp.Epoch,
				Phase: m.SitePhase_SITE_PHASE_ACTIVE, Domains: r.Domains, MysqlUsers: r.MysqlUsers}
		} else {
			n.learn(&m.RouteUpdate{Site: resp.Site, Master: resp.Master, Epoch: resp.Epoch, Phase: m.SitePhase_SITE_PHASE_ACTIVE})
		}
	}
	if int(p.req.Attempt) >= env.Config.RequestAttemptsMax {
		resp.Code = m.Code_CODE_UNAVAILABLE
		resp.Detail = "site moved too often while this request was routed"
		return n.finish(resp.RequestId, resp)
	}
	if resp.Master == "" {
		// The node we asked no longer masters the site and does not know
		// who does: wait for a route update.
		r := n.routes[resp.Site]
		if r == nil || r.Master == p.tried {
			if r != nil {
				// The cached master is stale: forget it until an update.
				n.routes[resp.Site] = &m.RouteUpdate{Site: r.Site, Epoch: r.Epoch, Phase: m.SitePhase_SITE_PHASE_FAILING_OVER, Domains: r.Domains, MysqlUsers: r.MysqlUsers}
			}
			p.waiting = true
			return nil
		}
	}
	return n.forward(env, p)
}

// learn keeps the route with the highest epoch, unless the master it names
// is down here: a route is advice (a node that is not master answers MOVED),
// and a dead master's epoch must not hide the live one.
func (n *Node) learn(r *m.RouteUpdate) bool {
	old := n.routes[r.Site]
	if old != nil && core.EpochLess(r.Epoch, old.Epoch) && old.Master != "" && n.live[old.Master] {
		return false
	}
	if old != nil && old.Master == r.Master && old.Phase == r.Phase && core.CompareEpoch(old.Epoch, r.Epoch) == 0 {
		return false
	}
	if core.IsTombstone(r.Epoch) {
		// A deleted site: the route stays (it outranks stale updates of
		// the old history) but claims no domain, so the front ends answer
		// "no such site" themselves and a domain can go to another site.
		if len(r.Domains) > 0 || len(r.MysqlUsers) > 0 {
			r = &m.RouteUpdate{Site: r.Site, Master: r.Master, Epoch: r.Epoch, Phase: r.Phase}
		}
	} else if len(r.Domains) == 0 && old != nil && len(old.Domains) > 0 {
		// A route learnt from an answer, or from a balancer whose report
		// lacked the spec, says nothing of domains: keep the known ones
		// (the front ends route by them).
		r = &m.RouteUpdate{Site: r.Site, Master: r.Master, Epoch: r.Epoch, Phase: r.Phase, Domains: old.Domains, MysqlUsers: old.MysqlUsers}
	}
	n.routes[r.Site] = r
	return true
}

func (n *Node) routeUpdate(env *core.Env, r *m.RouteUpdate) []core.Effect {
	if !n.learn(r) {
		return nil
	}
	var fx []core.Effect
	for _, id := range sortedKeys(n.pending) {
		if p := n.pending[id]; p.waiting && p.req.Site == r.Site {
			fx = append(fx, n.forward(env, p)...)
		}
	}
	return fx
}

func (n *Node) requestTimeout(env *core.Env, id uint64) []core.Effect {
	p := n.pending[id]
	if p == nil {
		return nil
	}
	if p.req.Idempotent && !p.retried && !p.waiting {
		// The master may have died with the request: an idempotent one is
		// retried once, wherever the site is now.
		p.retried = true
		fx := []core.Effect{core.SetTimer{Key: timerRequest + strconv.FormatUint(id, 10), After: env.Config.RequestTimeout}}
		return append(fx, n.forward(env, p)...)
	}
	return n.finish(id, &m.SiteResponse{Site: p.req.Site, RequestId: id, Code: m.Code_CODE_TIMEOUT, WriteId: p.req.WriteId,
		RetryAfterS: uint32(max(1, env.Config.RetryAfter/time.Second)), Detail: "no answer from the site in time"})
}

func sortedKeys[K interface{ ~string | ~uint64 }, V any](mp map[K]V) []K {
	keys := make([]K, 0, len(mp))
	for k := range mp {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// storageFigure tells every local copy to prune for space (StorageLow)
// when the pool's free space is under lowBound: at once, then every
// PruneInterval while it lasts.
func (n *Node) storageFigure(env *core.Env) []core.Effect {
	bound := n.lowBound(env.Config)
	low := n.freeBytes < bound
	var fx []core.Effect
	switch {
	case low && !n.storageLow:
		fx = append(fx, core.Warn("storage low: copies prune for space", "node", n.name, "free_bytes", n.freeBytes,
			"bound", bound, "size_bytes", n.sizeBytes, "copies", len(n.datasets)))
	case !low && n.storageLow:
		fx = append(fx, core.Info("storage no longer low", "node", n.name, "free_bytes", n.freeBytes))
	}
	was := n.storageLow
	n.storageLow = low
	if !low || was && env.NowMs()-n.lowToldMs < env.Config.PruneInterval.Milliseconds() {
		return fx
	}
	n.lowToldMs = env.NowMs()
	for _, site := range sortedKeys(n.datasets) {
		fx = append(fx, core.Send{To: core.DatasetAddr(n.name, site), Msg: &m.StorageLow{Site: site, FreeBytes: n.freeBytes}})
	}
	return fx
}

// lowBound is the free space under which the pool is low: the lower of
// Config.StorageLowBytes and Config.StorageLowPercent of its size (when
// the host reported one). 0: never low.
func (n *Node) lowBound(cfg *core.Config) uint64 {
	bound := cfg.StorageLowBytes
	if cfg.StorageLowPercent > 0 && n.sizeBytes > 0 {
		bound = min(bound, n.sizeBytes/100*cfg.StorageLowPercent)
	}
	return bound
}
