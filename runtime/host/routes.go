package host

import (
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hybridcluster/hybridcluster/actors/core"
	"github.com/hybridcluster/hybridcluster/actors/node"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// Bounds of the host's read-side views.
const (
	// subscribersMax bounds event subscribers (admin SSE streams); past it
	// Subscribe returns a closed channel.
	subscribersMax = 256
	// subscriberQueueMax bounds each subscriber's queued events; at the
	// bound the event is dropped for that subscriber (and counted), the
	// others still get it: a slow admin stream must not hold the node up.
	subscriberQueueMax = 1024
)

// Route is what a node knows of where a site is served: a copy of its
// node actor's route cache entry.
type Route struct {
	Site    string
	Master  string
	Epoch   *m.Epoch
	Phase   m.SitePhase
	Domains []string
	// MysqlUsers are the names of the site's MySQL users.
	MysqlUsers []string
}

// Serving reports whether the master takes requests in this phase without
// holding them (a pre-copy still serves).
func (r Route) Serving() bool {
	return r.Master != "" && (r.Phase == m.SitePhase_SITE_PHASE_ACTIVE || r.Phase == m.SitePhase_SITE_PHASE_PRE_COPY)
}

// Event is a change the host saw: a site's route, or a member going up or
// down in this node's view.
type Event struct {
	Type   string // "route", "member"
	At     time.Time
	Site   string
	Node   string // member events: the member
	Master string
	Epoch  *m.Epoch
	Phase  m.SitePhase
	Up     bool
}

// routeTable mirrors the node actor's route cache for the front ends' hot
// path (a read lock and two map lookups per request), and fans changes out
// to subscribers.
type routeTable struct {
	mu      sync.RWMutex
	routes  map[string]Route  // by site
	domains map[string]string // domain -> site
	live    map[string]bool

	// mysqlUsers: MySQL user name -> the sites that name it (more than one
	// is ambiguous: such a user is routed nowhere).
	mysqlUsers map[string][]string

	subMu   sync.Mutex
	subs    map[int]chan Event
	nextSub int
	dropped int64
}

func newRouteTable() *routeTable {
	return &routeTable{routes: map[string]Route{}, domains: map[string]string{}, mysqlUsers: map[string][]string{}, live: map[string]bool{}, subs: map[int]chan Event{}}
}

// set records the node actor's entry for site (nil: forgotten).
func (t *routeTable) set(site string, ru *m.RouteUpdate) {
	t.mu.Lock()
	old, had := t.routes[site]
	for _, d := range old.Domains {
		if t.domains[d] == site {
			delete(t.domains, d)
		}
	}
	for _, u := range old.MysqlUsers {
		t.unsetMysqlUser(u, site)
	}
	if ru == nil {
		delete(t.routes, site)
		t.mu.Unlock()
		return
	}
	r := Route{Site: site, Master: ru.Master, Epoch: proto.Clone(ru.GetEpoch()).(*m.Epoch), Phase: ru.Phase}
	if ru.Epoch == nil {
		r.Epoch = nil
	}
	for _, d := range ru.Domains {
		d = strings.ToLower(d)
		r.Domains = append(r.Domains, d)
		t.domains[d] = site
	}
	for _, u := range ru.MysqlUsers {
		r.MysqlUsers = append(r.MysqlUsers, u)
		t.mysqlUsers[u] = append(t.mysqlUsers[u], site)
	}
	t.routes[site] = r
	t.mu.Unlock()
	if !had || old.Master != r.Master || old.Phase != r.Phase || core.CompareEpoch(old.Epoch, r.Epoch) != 0 {
		t.publish(Event{Type: "route", At: time.Now(), Site: site, Master: r.Master, Epoch: r.Epoch, Phase: r.Phase})
	}
}

func (t *routeTable) setLive(live []string) {
	now := map[string]bool{}
	for _, n := range live {
		now[n] = true
	}
	t.mu.Lock()
	var evs []Event
	for n := range now {
		if !t.live[n] {
			evs = append(evs, Event{Type: "member", At: time.Now(), Node: n, Up: true})
		}
	}
	for n := range t.live {
		if !now[n] {
			evs = append(evs, Event{Type: "member", At: time.Now(), Node: n, Up: false})
		}
	}
	t.live = now
	t.mu.Unlock()
	for _, e := range evs {
		t.publish(e)
	}
}

func (t *routeTable) lookupDomain(domain string) (Route, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	site, ok := t.domains[domain]
	if !ok {
		return Route{}, false
	}
	r, ok := t.routes[site]
	return r, ok
}

// unsetMysqlUser forgets that site names MySQL user u (t.mu held).
func (t *routeTable) unsetMysqlUser(u, site string) {
	sites := t.mysqlUsers[u]
	for i, s := range sites {
		if s == site {
			sites = append(sites[:i:i], sites[i+1:]...)
			break
		}
	}
	if len(sites) == 0 {
		delete(t.mysqlUsers, u)
	} else {
		t.mysqlUsers[u] = sites
	}
}

func (t *routeTable) lookupMysqlUser(user string) (Route, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	sites := t.mysqlUsers[user]
	if len(sites) != 1 {
		return Route{}, false
	}
	r, ok := t.routes[sites[0]]
	return r, ok
}

func (t *routeTable) route(site string) (Route, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	r, ok := t.routes[site]
	return r, ok
}

func (t *routeTable) isLive(n string) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.live[n]
}

func (t *routeTable) publish(e Event) {
	t.subMu.Lock()
	defer t.subMu.Unlock()
	for _, ch := range t.subs {
		select {
		case ch <- e:
		default:
			t.dropped++
		}
	}
}

func (t *routeTable) subscribe() (<-chan Event, func()) {
	t.subMu.Lock()
	defer t.subMu.Unlock()
	if len(t.subs) >= subscribersMax {
		ch := make(chan Event)
		close(ch)
		return ch, func() {}
	}
	id := t.nextSub
	t.nextSub++
	ch := make(chan Event, subscriberQueueMax)
	t.subs[id] = ch
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			t.subMu.Lock()
			delete(t.subs, id)
			t.subMu.Unlock()
			close(ch)
		})
	}
}

// observe mirrors, after a Step, what the front ends read from the actors:
// the node actor's route cache entries an input touched, and the live
// members a balancer was told of.
func (h *Host) observe(self core.Address, a core.Actor, in proto.Message) {
	switch self.Kind {
	case core.KindNode:
		n, ok := a.(*node.Node)
		if !ok {
			return
		}
		switch msg := in.(type) {
		case *m.RouteUpdate:
			h.setRoute(msg.Site, n.Route(msg.Site))
		case *m.RouteTable:
			for _, r := range msg.Routes {
				h.setRoute(r.Site, n.Route(r.Site))
			}
		case *m.NodeBoot, *m.Heartbeat, *m.Timer:
			h.routes.setLive(n.Live())
		case *m.RemoveNode:
			h.noteRemoved(msg.Node)
			h.routes.setLive(n.Live())
		}
	}
}

// setRoute mirrors the node actor's entry for site; when the master
// changes, requests by identity must look the site up again.
func (h *Host) setRoute(site string, ru *m.RouteUpdate) {
	before, _ := h.routes.route(site)
	h.routes.set(site, ru)
	if ru == nil || ru.Master != before.Master {
		h.evictPlacement(site)
	}
}

// Route returns this node's view of where site is served.
func (h *Host) Route(site string) (Route, bool) { return h.routes.route(site) }

// RouteByDomain returns the route of the site a domain belongs to (domain
// lower-case, without port).
func (h *Host) RouteByDomain(domain string) (Route, bool) { return h.routes.lookupDomain(domain) }

// RouteByMysqlUser returns the route of the one site that has the MySQL
// user; false if none has it, or several do (ambiguous: routed nowhere).
func (h *Host) RouteByMysqlUser(user string) (Route, bool) { return h.routes.lookupMysqlUser(user) }

// Live reports whether this node believes member n is up.
func (h *Host) Live(n string) bool { return h.routes.isLive(n) }

// Subscribe returns route and member events, bounded (see
// subscriberQueueMax), and a cancel func that closes the channel.
func (h *Host) Subscribe() (<-chan Event, func()) { return h.routes.subscribe() }
