package host

import (
	"context"
	"crypto/subtle"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/storage"
)

// Headers of the internal port (node to node; never from clients: the front
// ends strip them from client requests).
const (
	// HeaderSite names the site a forwarded request is for.
	HeaderSite = "X-Hc-Site"
	// HeaderToken carries the cluster's node secret.
	HeaderToken = "X-Hc-Token"
	// HeaderReason explains a 421 from the internal port.
	HeaderReason = "X-Hc-Reason"
	// HeaderCounted marks a forward whose request the actors already
	// counted (it went through the site actor); others count as load here.
	HeaderCounted = "X-Hc-Counted"
)

// quiesceWaitMax bounds how long a snapshot that must hold every
// acknowledged write (a move's final delta, a demotion's last snapshot)
// waits for the requests in flight at the master. At the bound the site's
// processes are killed, so those requests fail instead of being
// acknowledged after the snapshot.
const quiesceWaitMax = 5 * time.Second

// SiteRunner runs sites' processes on their master (runtime/sites).
type SiteRunner interface {
	// Start makes a site servable here from its dataset's directory
	// (processes start lazily, on the first request).
	Start(site string, spec *m.SiteSpec, dir string) error
	// Stop stops the site's processes; later requests are refused.
	Stop(site string)
	// Serve serves one request of a started site.
	Serve(site string, w http.ResponseWriter, r *http.Request)
	// Quiesce waits up to max for the site's requests in flight to end,
	// then kills its processes; it returns how many were still in flight.
	Quiesce(ctx context.Context, site string, max time.Duration) (int, error)
	// IsRunning reports whether the site has a process running (one that
	// may write without a request).
	IsRunning(site string) bool
}

// changeFullCheckEvery bounds how long a site that served no request and
// runs no process goes without its dataset being compared for changes
// (writes that reach it some other way, e.g. an operator's shell, are
// snapshotted within this time).
const changeFullCheckEvery = 30 * time.Second

// activity counts the requests admitted per site (the change test's
// shortcut: an idle site needs no look at its dataset).
type activity struct {
	counts  sync.Map // site -> *atomic.Uint64
	load    sync.Map // site -> *atomic.Uint64: requests not counted by the actors, since the last report
	mu      sync.Mutex
	checked map[string]checkMark
}

type checkMark struct {
	count uint64
	at    time.Time
}

func (a *activity) bump(site string) {
	c, ok := a.counts.Load(site)
	if !ok {
		c, _ = a.counts.LoadOrStore(site, new(atomic.Uint64))
	}
	c.(*atomic.Uint64).Add(1)
}

func (a *activity) bumpLoad(site string) {
	c, ok := a.load.Load(site)
	if !ok {
		c, _ = a.load.LoadOrStore(site, new(atomic.Uint64))
	}
	c.(*atomic.Uint64).Add(1)
}

// drainLoad returns and resets the uncounted requests per site.
func (a *activity) drainLoad() map[string]uint64 {
	out := map[string]uint64{}
	a.load.Range(func(k, v any) bool {
		if n := v.(*atomic.Uint64).Swap(0); n > 0 {
			out[k.(string)] = n
		}
		return true
	})
	return out
}

func (a *activity) count(site string) uint64 {
	if c, ok := a.counts.Load(site); ok {
		return c.(*atomic.Uint64).Load()
	}
	return 0
}

// quiet reports whether site cannot have changed since its last full
// check: no request admitted, no process running, and the check recent.
func (h *Host) quiet(site string) bool {
	if h.sites == nil || h.sites.IsRunning(site) {
		return false
	}
	n := h.activity.count(site)
	h.activity.mu.Lock()
	defer h.activity.mu.Unlock()
	mark, ok := h.activity.checked[site]
	return ok && mark.count == n && time.Since(mark.at) < changeFullCheckEvery
}

// checkedAt records a full change check (or a snapshot) that saw every
// request counted by then. The count is read before the check, so a
// request admitted during it leads to another check.
func (h *Host) checkedAt(site string, count uint64, at time.Time) {
	h.activity.mu.Lock()
	defer h.activity.mu.Unlock()
	if h.activity.checked == nil {
		h.activity.checked = map[string]checkMark{}
	}
	h.activity.checked[site] = checkMark{count: count, at: at}
}

// gate admits requests at a site's master: open while the local site
// actor last announced itself master in a serving phase and its processes
// are started. Closing it (a pause, a demotion) and then waiting for the
// requests in flight is what lets a final snapshot hold every write that
// was acknowledged.
type gate struct {
	routeOpen bool
	started   bool
	epoch     *m.Epoch
	inflight  int
	zero      chan struct{} // made by a waiter; closed when inflight returns to 0
	changed   chan struct{} // closed (and replaced) when routeOpen or started change
}

// notify wakes the requests waiting for this gate (gates.mu held).
func (g *gate) notify() {
	if g.changed != nil {
		close(g.changed)
		g.changed = nil
	}
}

func (g *gate) open() bool { return g.routeOpen && g.started }

type gates struct {
	mu sync.Mutex
	m  map[string]*gate
}

func newGates() *gates { return &gates{m: map[string]*gate{}} }

func (gs *gates) get(site string) *gate {
	g := gs.m[site]
	if g == nil {
		g = &gate{}
		gs.m[site] = g
	}
	return g
}

func (gs *gates) setRoute(site string, open bool, epoch *m.Epoch) {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	g := gs.get(site)
	g.routeOpen, g.epoch = open, epoch
	g.notify()
}

func (gs *gates) setStarted(site string, started bool) {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	g := gs.get(site)
	g.started = started
	g.notify()
}

func (gs *gates) isOpen(site string) bool {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	g := gs.m[site]
	return g != nil && g.open()
}

// gateStartWaitMax bounds how long a request waits at a master whose site
// actor is active but whose processes are still being started (the start
// runs after the storage work queued before it). At the bound the request
// is refused (421) and its front end asks the actors again.
const gateStartWaitMax = 5 * time.Second

// admit counts a request in if the gate is open, waiting (bounded by
// gateStartWaitMax and ctx) while the site is active here but not yet
// started.
func (gs *gates) admit(ctx context.Context, site string) (release func(), ok bool) {
	g, ok := gs.enter(ctx, site)
	if !ok {
		return nil, false
	}
	var once sync.Once
	return func() { once.Do(func() { gs.leave(g) }) }, true
}

// enter is admit without the release func, which costs allocations: the
// caller calls leave(g) once. An open gate costs no allocation (enter runs
// for every MySQL command).
func (gs *gates) enter(ctx context.Context, site string) (*gate, bool) {
	// The timer only when a wait is needed: an open gate needs none.
	var deadline *time.Timer
	defer func() {
		if deadline != nil {
			deadline.Stop()
		}
	}()
	gs.mu.Lock()
	defer gs.mu.Unlock()
	g := gs.m[site]
	for g != nil && g.routeOpen && !g.started {
		if deadline == nil {
			deadline = time.NewTimer(gateStartWaitMax)
		}
		if g.changed == nil {
			g.changed = make(chan struct{})
		}
		ch := g.changed
		gs.mu.Unlock()
		timedOut := false
		select {
		case <-ch:
		case <-deadline.C:
			timedOut = true
		case <-ctx.Done():
		}
		gs.mu.Lock()
		if ctx.Err() != nil || timedOut {
			return nil, false
		}
	}
	if g == nil || !g.open() {
		return nil, false
	}
	g.inflight++
	return g, true
}

// leave counts out a request that enter counted in.
func (gs *gates) leave(g *gate) {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	g.inflight--
	if g.inflight == 0 && g.zero != nil {
		close(g.zero)
		g.zero = nil
	}
}

// waitIdle waits up to max for site's requests in flight to end; it
// returns how many remain.
func (gs *gates) waitIdle(ctx context.Context, site string, max time.Duration) int {
	gs.mu.Lock()
	g := gs.m[site]
	if g == nil || g.inflight == 0 {
		gs.mu.Unlock()
		return 0
	}
	// Made only when someone waits: a channel per request would be an
	// allocation per MySQL command.
	if g.zero == nil {
		g.zero = make(chan struct{})
	}
	zero := g.zero
	gs.mu.Unlock()
	t := time.NewTimer(max)
	defer t.Stop()
	select {
	case <-zero:
	case <-t.C:
	case <-ctx.Done():
	}
	gs.mu.Lock()
	defer gs.mu.Unlock()
	return g.inflight
}

// serveInternal is the internal port: a request another node's front end
// (or this node's) forwards to this node as the site's master.
func (h *Host) serveInternal(w http.ResponseWriter, r *http.Request, token string) {
	if subtle.ConstantTimeCompare([]byte(r.Header.Get(HeaderToken)), []byte(token)) != 1 {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	site := r.Header.Get(HeaderSite)
	if _, err := storage.ParseSite(site); err != nil {
		http.Error(w, "bad site name", http.StatusBadRequest)
		return
	}
	// Decided before the body is read: a forwarder that sent
	// "Expect: 100-continue" still has its body and may go elsewhere.
	release, ok := h.gates.admit(r.Context(), site)
	if !ok || h.sites == nil {
		w.Header().Set(HeaderReason, "not-serving")
		w.WriteHeader(http.StatusMisdirectedRequest)
		return
	}
	defer release()
	h.activity.bump(site)
	if r.Header.Get(HeaderCounted) == "" {
		h.activity.bumpLoad(site)
	}
	r.Header.Del(HeaderCounted)
	r.Header.Del(HeaderSite)
	r.Header.Del(HeaderToken)
	h.sites.Serve(site, w, r)
}

// sizeFigureEvery is how often the pool's size is asked for again: it
// changes only when the pool does (or what else shares it), while free
// space is asked for at every report (a zfs command each).
const sizeFigureEvery = time.Minute

// reportFigures passes, every report interval, what the actors cannot see
// to the node actor: the requests forwarded straight to this node as master
// (load for the balancer) and the storage's free space and size.
func (h *Host) reportFigures() {
	defer h.figuresDone.Done()
	t := time.NewTicker(h.cfg.ReportInterval)
	defer t.Stop()
	var size int64
	var sizeAt time.Time
	var healthSent map[string]string
	for first := true; ; first = false {
		if !first {
			select {
			case <-h.ctx.Done():
				return
			case <-t.C:
			}
		}
		for site, n := range h.activity.drainLoad() {
			h.deliverLocal(core.NodeAddr(h.node), &m.DatasetInfo{Site: site, Requests: n})
		}
		healthSent = h.reportHealth(healthSent)
		for _, f := range h.notStarted.due(time.Now()) {
			h.store.retryStart(f.req, f.gen)
		}
		ctx, cancel := context.WithTimeout(h.ctx, h.cfg.ReportInterval)
		free, err := h.driver.Free(ctx)
		if sizeAt.IsZero() || time.Since(sizeAt) >= sizeFigureEvery {
			var serr error
			if size, serr = h.driver.Size(ctx); serr != nil {
				size = 0 // not known: the node goes by the bytes bound alone
			}
			sizeAt = time.Now()
		}
		cancel()
		if err == nil && free >= 0 {
			if size < free {
				// Stale (the pool grew): not passed on, asked for again.
				size, sizeAt = 0, time.Time{}
			}
			h.deliverLocal(core.NodeAddr(h.node), &m.NodeReport{Node: h.node, FreeBytes: uint64(free), SizeBytes: uint64(size)})
		}
	}
}

// quiesce: before a snapshot that must hold every acknowledged write of a
// site whose gate is closed, wait for the requests still in flight (they
// were admitted before the pause); at quiesceWaitMax kill the site's
// processes so they fail rather than be acknowledged after the snapshot.
// An open gate needs no wait: later snapshots take what is in flight.
func (h *Host) quiesce(ctx context.Context, site string) {
	if h.gates.isOpen(site) {
		return
	}
	n := h.gates.waitIdle(ctx, site, quiesceWaitMax)
	if n == 0 && h.sites != nil {
		// Nothing in flight, but a process that keeps state of its own
		// (the site's mariadbd) still closes it cleanly before the
		// snapshot: Quiesce with nothing in flight kills nothing.
		_, _ = h.sites.Quiesce(ctx, site, quiesceWaitMax)
	}
	if n == 0 || h.sites == nil {
		return
	}
	h.log.Warn("requests still in flight at the quiesce bound: killing the site's processes", "site", site, "node", h.node,
		"in_flight", n, "bound", quiesceWaitMax)
	_, _ = h.sites.Quiesce(ctx, site, 0)
	if left := h.gates.waitIdle(ctx, site, quiesceWaitMax); left > 0 {
		h.log.Error("requests still in flight after their processes were killed", "site", site, "node", h.node, "in_flight", left)
	}
}

// runProcess carries out a Process effect, in the site's storage order (a
// stop precedes the role change that renames the dataset). gen is the
// effect's place among the site's Process effects; retry: a start that
// failed before, tried again, which is dropped once a later effect (a
// stop, another start) was asked.
func (h *Host) runProcess(ctx context.Context, req *m.ProcessRequest, gen uint64, retry bool) {
	if h.sites == nil {
		return
	}
	if retry && !h.notStarted.stillFailed(req.Site, gen) {
		return
	}
	if !req.Start {
		h.notStarted.ok(req.Site, gen)
		h.sites.Stop(req.Site)
		return
	}
	site, err := storage.ParseSite(req.Site)
	if err != nil {
		h.log.Error("process request for a bad site name", "site", req.Site, "err", err)
		return
	}
	dir, err := h.driver.Mountpoint(ctx, site)
	if err != nil {
		wait := h.notStarted.failed(req, gen, "not started: no mountpoint: "+err.Error(), time.Now())
		h.log.Error("site not started: no mountpoint", "site", req.Site, "node", h.node, "err", err, "next_try_in", wait)
		return
	}
	if err := h.sites.Start(req.Site, req.Spec, dir); err != nil {
		wait := h.notStarted.failed(req, gen, "not started: "+err.Error(), time.Now())
		h.log.Error("site not started", "site", req.Site, "node", h.node, "err", err, "next_try_in", wait)
		return
	}
	if retry {
		h.log.Info("site started on a later try", "site", req.Site, "node", h.node)
	}
	h.notStarted.ok(req.Site, gen)
	h.gates.setStarted(req.Site, true)
	if w, ok := h.sites.(startAwaiter); ok {
		// The site's next storage request (the new master's first
		// snapshot) waits in this queue until the processes started
		// ahead of requests are up: the two would compete for the disk
		// while a move's held clients wait for the processes.
		wctx, cancel := context.WithTimeout(ctx, processStartWaitMax)
		w.AwaitStarted(wctx, req.Site)
		cancel()
	}
}

// startAwaiter is a SiteRunner that starts processes ahead of requests and
// can tell when they are up (sites.Supervisor: a moved site's mariadbd).
type startAwaiter interface {
	AwaitStarted(ctx context.Context, site string)
}

// processStartWaitMax bounds how long a site's storage queue waits for the
// processes a start began; past it the queue goes on and they start
// alongside.
const processStartWaitMax = 5 * time.Second

// healthReporter is a SiteRunner that can say why sites' processes are
// failing (sites.Supervisor).
type healthReporter interface {
	Failures() map[string]string
}

// reportHealth tells the node actor each site whose processes' health
// changed since sent (what it was told last), and returns what it was
// told now: failures of the site runner, and sites this host could not
// start at all.
func (h *Host) reportHealth(sent map[string]string) map[string]string {
	now := h.notStarted.all()
	if hr, ok := h.sites.(healthReporter); ok {
		for site, why := range hr.Failures() {
			if prev, ok := now[site]; ok {
				why = prev + "; " + why
			}
			now[site] = why
		}
	}
	for site, why := range now {
		if sent[site] != why {
			h.deliverLocal(core.NodeAddr(h.node), &m.ProcessHealth{Site: site, Error: why})
		}
	}
	for site := range sent {
		if _, ok := now[site]; !ok {
			h.deliverLocal(core.NodeAddr(h.node), &m.ProcessHealth{Site: site})
		}
	}
	return now
}

// Bounds of the tries to start a site whose start failed here (no
// mountpoint: a mount that failed; a site directory that is not there).
// Without them a master whose start failed once stayed down until its role
// changed, however soon the cause went away.
const (
	// startRetryFirst is the wait before the first try again; each
	// failed try doubles it, up to startRetryMax, and the tries go on as
	// long as the site is to run here.
	startRetryFirst = 5 * time.Second
	startRetryMax   = 2 * time.Minute
)

// startFailures are the sites this host could not start, why, and when to
// try again (one entry per site at most), with each site's count of
// Process effects asked (gen), which orders a retry against a later stop.
type startFailures struct {
	mu   sync.Mutex
	errs map[string]*startFailure
	gens map[string]uint64
}

type startFailure struct {
	why   string
	req   *m.ProcessRequest
	gen   uint64
	tries int           // failed tries of gen
	since time.Time     // the first of them
	wait  time.Duration // before the next try
	next  time.Time
}

// asked counts a Process effect of site in, and returns its gen.
func (e *startFailures) asked(site string) uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.gens == nil {
		e.gens = map[string]uint64{}
	}
	e.gens[site]++
	return e.gens[site]
}

// stillFailed reports whether gen is site's latest Process effect and its
// start has not succeeded since (a retry queued twice starts it once).
func (e *startFailures) stillFailed(site string, gen uint64) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	f := e.errs[site]
	return e.gens[site] == gen && f != nil && f.gen == gen
}

// failed records why req (gen) could not start the site, unless a later
// effect superseded it, and returns the wait before the next try.
func (e *startFailures) failed(req *m.ProcessRequest, gen uint64, why string, now time.Time) time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.gens[req.Site] != gen {
		return 0
	}
	if e.errs == nil {
		e.errs = map[string]*startFailure{}
	}
	f := e.errs[req.Site]
	if f == nil || f.gen != gen {
		f = &startFailure{req: req, gen: gen, since: now, wait: startRetryFirst}
		e.errs[req.Site] = f
	} else {
		f.wait = min(2*f.wait, startRetryMax)
	}
	f.tries++
	f.why, f.next = why, now.Add(f.wait)
	return f.wait
}

// ok clears site's failure: gen started it, or stopped it.
func (e *startFailures) ok(site string, gen uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if f := e.errs[site]; f != nil && f.gen <= gen {
		delete(e.errs, site)
	}
}

// due returns the failed starts whose next try is due at now; each is
// due again a wait later if that try neither fails nor succeeds by then
// (it was not queued, or waits behind the site's storage work).
func (e *startFailures) due(now time.Time) []startFailure {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []startFailure
	for _, f := range e.errs {
		if !now.Before(f.next) && e.gens[f.req.Site] == f.gen {
			out = append(out, *f)
			f.next = now.Add(f.wait)
		}
	}
	return out
}

// all is why each site could not start, with how often and since when
// (as the site runner words its processes' failures).
func (e *startFailures) all() map[string]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]string, len(e.errs))
	for k, f := range e.errs {
		out[k] = fmt.Sprintf("%s (%d tries since %s)", f.why, f.tries, f.since.UTC().Format(time.RFC3339))
	}
	return out
}
