// Package sites serves a site on its master node: the static files of its
// web root, or its application process behind a reverse proxy.
//
// The runtime calls Start when a site becomes master on this node and Stop
// when it no longer is, and hands every HTTP request for a site to Serve.
// Before a planned move it calls Quiesce, so that no request is acknowledged
// after the final snapshot.
//
// An app site runs `/bin/sh -c <AppCommand>` in the site's dataset directory,
// in its own process group, listening on 127.0.0.1:$PORT. Processes are
// started lazily, on the first request after Start, after an idle stop, or
// after a quiesce. One supervisor goroutine per running app (the runner)
// owns the process: it starts it, waits until it accepts connections, and
// restarts it after an unexpected exit, with exponential backoff:
//
//   - while the site had a request in the last IdleStopAfter (or one is in
//     flight or waiting, or idle stops are off), the runner restarts the app
//     as soon as the backoff allows;
//   - otherwise the runner ends and the next request starts the app again,
//     still honouring the backoff.
//
// A stop (Stop, Close, an idle stop, a new command) sends SIGTERM to the
// group, waits up to StopWaitMax for the whole group to exit, then sends
// SIGKILL. A quiesce at its bound sends SIGKILL at once.
//
// Limits: a process that leaves the group (setsid) escapes these signals,
// and if the node process itself dies its apps keep running, unsupervised,
// until something kills their groups.
package sites

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/storage"
)

// Defaults of Config. What happens at each bound is documented on the
// Config field.
const (
	DefaultRestartBackoffMin  = 100 * time.Millisecond
	DefaultRestartBackoffMax  = 10 * time.Second
	DefaultStartWaitMax       = 10 * time.Second
	DefaultStopWaitMax        = 5 * time.Second
	DefaultIdleStopAfter      = 10 * time.Minute
	DefaultWaitingRequestsMax = 256

	// IdleStopNever as Config.IdleStopAfter turns idle stops off (the zero
	// value means DefaultIdleStopAfter).
	IdleStopNever time.Duration = -1
)

// Bounds that are not configurable.
const (
	// restartBackoffResetAfter: an app that has accepted connections for
	// this long before exiting is considered to have been healthy; its next
	// restart waits RestartBackoffMin again instead of twice the last wait.
	restartBackoffResetAfter = 30 * time.Second
	// appAcceptMax bounds how long a started app may take to accept
	// connections on its port. At the bound its group is killed and the
	// start counts as a failure (restart with backoff). Requests waiting
	// for it have their own, shorter bound (StartWaitMax).
	appAcceptMax = 60 * time.Second
	// acceptPollInterval is how often the runner tries to connect to a
	// starting app's port.
	acceptPollInterval = 20 * time.Millisecond
	// appLogLineMax bounds one logged line of an app's stdout or stderr
	// (bytes, newline included). A longer line is logged cut at the bound
	// with truncated=true and the rest of it is discarded.
	appLogLineMax = 4 << 10
	// appLogDrainMax bounds how long a stopped app's output is still read
	// after its process group ended (a process that left the group may
	// hold the pipe). At the bound the pipes are closed.
	appLogDrainMax = time.Second
	// groupPollInterval is how often a graceful stop checks whether the
	// app's process group has emptied after its leader exited.
	groupPollInterval = 10 * time.Millisecond
	// retryAfterSeconds is the Retry-After of every 503 this package
	// answers: a site that is not served here, stopping, starting or
	// overloaded is expected to be served (here or elsewhere) shortly.
	retryAfterSeconds = 1
)

// Config configures a Supervisor. Zero fields take the defaults above.
type Config struct {
	// Logger receives one line per process start, exit and stop, and each
	// line of the apps' output (key site). Nil discards.
	Logger *slog.Logger
	// RestartBackoffMin and RestartBackoffMax bound the wait before an app
	// that exited unexpectedly (or failed to start) is started again: it
	// doubles from Min to Max with each failure and goes back to Min after
	// the app ran restartBackoffResetAfter (30 s) accepting connections.
	RestartBackoffMin, RestartBackoffMax time.Duration
	// StartWaitMax bounds how long a request waits for a (re)starting app
	// to accept connections. At the bound: 503 with Retry-After.
	StartWaitMax time.Duration
	// StopWaitMax bounds a graceful stop: SIGTERM to the process group,
	// then SIGKILL to the group at the bound. It also bounds the wait for
	// the process to be reaped after SIGKILL (a process stuck in the kernel
	// is then logged and left), and Quiesce's wait after its kill.
	StopWaitMax time.Duration
	// IdleStopAfter: an app with no request for this long (none in flight)
	// is stopped gracefully and started again on the next request.
	// IdleStopNever (negative) turns this off; zero means the default.
	IdleStopAfter time.Duration
	// WaitingRequestsMax bounds the requests of one site waiting for its
	// app to start. Beyond: 503 with Retry-After.
	WaitingRequestsMax int
	// AppProxy, when set, makes the handler that forwards a site's
	// requests to its app listening on addr (host:port); usable reports
	// whether the process still takes new requests, closeIdle is called
	// when it has ended. Nil: httputil.ReverseProxy over http.Transport.
	AppProxy func(addr string, usable func() bool) (proxy http.Handler, closeIdle func())
	// RunDir, when set, records each running app's process group (one
	// <site>.pid file); New kills the groups a crashed predecessor left
	// there, if they still run an app of that site.
	RunDir string
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.RestartBackoffMin <= 0 {
		c.RestartBackoffMin = DefaultRestartBackoffMin
	}
	if c.RestartBackoffMax <= 0 {
		c.RestartBackoffMax = DefaultRestartBackoffMax
	}
	if c.RestartBackoffMax < c.RestartBackoffMin {
		c.RestartBackoffMax = c.RestartBackoffMin
	}
	if c.StartWaitMax <= 0 {
		c.StartWaitMax = DefaultStartWaitMax
	}
	if c.StopWaitMax <= 0 {
		c.StopWaitMax = DefaultStopWaitMax
	}
	if c.IdleStopAfter == 0 {
		c.IdleStopAfter = DefaultIdleStopAfter
	}
	if c.WaitingRequestsMax <= 0 {
		c.WaitingRequestsMax = DefaultWaitingRequestsMax
	}
	return c
}

// Supervisor serves the sites that are master on this node. Its methods are
// safe for concurrent use.
type Supervisor struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	closed bool
	// sites holds every site started since New, stopped ones included (so
	// that their requests still in flight are counted): at most the sites
	// of the cluster, a few hundred bytes each.
	sites map[string]*siteState

	// runners counts runner goroutines; Close waits for them.
	runners sync.WaitGroup

	// mysql runs the sites' mariadbd (mysql.go).
	mysql *mysqlPool
}

// New returns a Supervisor serving no site yet.
func New(cfg Config) *Supervisor {
	cfg = cfg.withDefaults()
	s := &Supervisor{cfg: cfg, log: cfg.Logger, sites: make(map[string]*siteState)}
	s.mysql = newMysqlPool(s)
	if cfg.RunDir != "" {
		if err := os.MkdirAll(cfg.RunDir, 0o700); err != nil {
			s.log.Error("run directory", "dir", cfg.RunDir, "err", err)
		} else {
			s.killLeftovers()
		}
	}
	return s
}

// killLeftovers kills the process groups of apps a crashed node left
// running: a pid file whose process still carries HC_SITE=<site> in its
// environment (a pid reused by anything else is left alone).
func (s *Supervisor) killLeftovers() {
	ents, err := os.ReadDir(s.cfg.RunDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		site, ok := strings.CutSuffix(e.Name(), ".pid")
		if !ok {
			continue
		}
		file := filepath.Join(s.cfg.RunDir, e.Name())
		data, err := os.ReadFile(file)
		pid, perr := strconv.Atoi(strings.TrimSpace(string(data)))
		if err == nil && perr == nil && pid > 1 {
			env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
			if err == nil && (bytes.Contains(env, []byte("\x00HC_SITE="+site+"\x00")) || bytes.HasPrefix(env, []byte("HC_SITE="+site+"\x00"))) {
				_ = syscall.Kill(-pid, syscall.SIGKILL)
				s.log.Warn("killed an app a previous run of this node left", "site", site, "pid", pid)
			}
		}
		_ = os.Remove(file)
	}
}

// siteState is one site. Lock order: Supervisor.mu before siteState.mu.
type siteState struct {
	name string

	mu      sync.Mutex
	started bool
	dir     string // absolute
	command string // empty: static site
	// root is the open web root of a static site; nil if dir/web could
	// not be opened (tried again on the next request).
	root *os.Root

	inFlight     int
	waiting      int // requests waiting for the app to accept connections
	lastActivity time.Time
	// changed is closed and replaced on every change a waiting request or
	// Quiesce may be waiting for.
	changed chan struct{}

	// runner supervises the app's process; nil when no process is wanted
	// (static site, not started yet, idle, stopped, quiesced).
	runner *runner
	// lastDone is closed when the most recent runner has ended; a new
	// runner waits for it so that two processes of one site never run at
	// once.
	lastDone <-chan struct{}
	// backoff is the last restart wait, 0 after restartBackoffResetAfter
	// of accepting connections; nextStartAt is when the app may start
	// again after a failure.
	backoff     time.Duration
	nextStartAt time.Time
	// failure is why the app's last run ended badly ("" once it accepts
	// connections again); failures counts such ends since failingSince,
	// both reset once it has stayed up for restartBackoffResetAfter.
	failure      string
	failures     int
	failingSince time.Time
	// killEpoch counts Quiesce kills. A request remembers it on arrival;
	// one that arrived before a kill is never handed to a new process.
	killEpoch uint64
}

func (st *siteState) broadcastLocked() {
	close(st.changed)
	st.changed = make(chan struct{})
}

// lookup returns the site's state, nil if it was never started.
func (s *Supervisor) lookup(site string) *siteState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sites[site]
}

// Start makes the site servable here. It starts no process: an app starts
// on the first request. Called again for a started site, it takes the new
// spec and dir: the static web root is opened again (the dataset may have
// been renamed or remounted), and a running app whose command or directory
// changed is stopped (in the background) and started again with the new
// ones on the next request.
func (s *Supervisor) Start(site string, spec *m.SiteSpec, dir string) (err error) {
	defer func() {
		if err == nil { // after the locks below are released
			s.mysql.start(site, spec, dir)
		}
	}()
	if _, err := storage.ParseSite(site); err != nil {
		return fmt.Errorf("sites: start: %w", err)
	}
	if spec == nil {
		return fmt.Errorf("sites: start %s: no spec", site)
	}
	if spec.Name != "" && spec.Name != site {
		return fmt.Errorf("sites: start %s: spec is for site %q", site, spec.Name)
	}
	if dir == "" {
		return fmt.Errorf("sites: start %s: no dataset directory", site)
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("sites: start %s: %w", site, err)
	}

	// Opened before taking the locks: a slow file system must not hold
	// up the requests of every site.
	var root *os.Root
	if spec.AppCommand == "" {
		root = s.openWebRoot(site, dir)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		if root != nil {
			root.Close()
		}
		return fmt.Errorf("sites: start %s: supervisor closed", site)
	}
	st := s.sites[site]
	if st == nil {
		st = &siteState{name: site, changed: make(chan struct{})}
		s.sites[site] = st
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	changed := st.dir != dir || st.command != spec.AppCommand
	wasStarted := st.started
	st.started, st.dir, st.command = true, dir, spec.AppCommand
	if st.root != nil {
		st.root.Close()
	}
	st.root = root
	if changed && st.runner != nil {
		s.log.Info("app command or directory changed; restarting on next request", "site", site)
		st.detachRunnerLocked(false)
	}
	if !wasStarted || changed {
		s.log.Info("site started", "site", site, "dir", dir, "app", st.command != "")
	}
	st.lastActivity = time.Now()
	st.broadcastLocked()
	return nil
}

// Stop ends serving the site here: requests after it get 503 with
// Retry-After. It stops the app's process group (SIGTERM, StopWaitMax,
// SIGKILL) and waits for it. Requests already proxied to the app fail with
// 502. Idempotent; a site never started is a no-op.
func (s *Supervisor) Stop(site string) {
	if _, err := storage.ParseSite(site); err != nil {
		return
	}
	s.mysql.stopSite(site)
	st := s.lookup(site)
	if st == nil {
		return
	}
	st.mu.Lock()
	wasStarted := st.started
	st.started = false
	if st.root != nil {
		// Requests reading from it fail; os.Root is safe to close in use.
		st.root.Close()
		st.root = nil
	}
	st.detachRunnerLocked(false)
	last := st.lastDone
	st.broadcastLocked()
	st.mu.Unlock()
	if last != nil {
		<-last // bounded: every runner's stop is bounded by StopWaitMax
	}
	if wasStarted {
		s.log.Info("site stopped", "site", site)
	}
}

// Close stops every site (in parallel, so bounded by about twice
// StopWaitMax) and waits for every goroutine it started. Serve answers 503
// and Start fails afterwards.
func (s *Supervisor) Close() {
	s.mu.Lock()
	s.closed = true
	names := make([]string, 0, len(s.sites))
	for name := range s.sites {
		names = append(names, name)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, name := range names {
		wg.Go(func() { s.Stop(name) })
	}
	wg.Wait()
	s.runners.Wait()
	s.mysql.close()
}

// Running lists, sorted, the sites whose app process is running (started
// and not yet exited, accepting connections or not).
// IsRunning reports whether site's app process is running (a static
// site never has one).
func (s *Supervisor) IsRunning(site string) bool {
	s.mu.Lock()
	st := s.sites[site]
	s.mu.Unlock()
	if s.mysql.running(site) {
		return true
	}
	if st == nil {
		return false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.runner != nil && st.runner.proc != nil
}

func (s *Supervisor) Running() []string {
	s.mu.Lock()
	states := make([]*siteState, 0, len(s.sites))
	for _, st := range s.sites {
		states = append(states, st)
	}
	s.mu.Unlock()
	var names []string
	for _, st := range states {
		st.mu.Lock()
		if st.runner != nil && st.runner.proc != nil {
			names = append(names, st.name)
		}
		st.mu.Unlock()
	}
	slices.Sort(names)
	return names
}

// InFlight is the number of requests of the site being served now, those
// waiting for the app to start included.
func (s *Supervisor) InFlight(site string) int {
	st := s.lookup(site)
	if st == nil {
		return 0
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.inFlight
}

// AwaitStarted waits until the processes that Start began ahead of the
// site's first request (its mariadbd, when the dataset holds a database)
// are up or have failed, or until ctx ends.
func (s *Supervisor) AwaitStarted(ctx context.Context, site string) {
	s.mysql.awaitWarm(ctx, site)
}

// Quiesce waits until no request of the site is in flight, up to max. New
// requests are still accepted (the caller has stopped routing them here).
// At the bound it kills the app's process group with SIGKILL, so that the
// requests still in flight fail rather than being acknowledged after the
// caller's snapshot, and requests that arrived before the kill and still
// wait for the app get 503 instead of reaching a new process. It then
// waits, up to StopWaitMax, for them to end. It returns how many requests
// were in flight at the bound: 0 when the site drained in time. The app is
// started again lazily if the site is still started. Last, it shuts the
// site's mariadbd down cleanly (mysql.go), also when nothing was in flight;
// the next MySQL connection starts it again.
//
// If ctx ends first, Quiesce returns the requests in flight and ctx.Err()
// without killing anything.
func (s *Supervisor) Quiesce(ctx context.Context, site string, max time.Duration) (int, error) {
	if _, err := storage.ParseSite(site); err != nil {
		return 0, fmt.Errorf("sites: quiesce: %w", err)
	}
	// The site's mariadbd shuts down cleanly once the requests are done
	// with, so the caller's snapshot holds a closed data directory.
	defer s.mysql.quiesce(site)
	st := s.lookup(site)
	if st == nil {
		return 0, nil
	}
	bound := time.NewTimer(max)
	defer bound.Stop()
drain:
	for {
		st.mu.Lock()
		n, ch := st.inFlight, st.changed
		st.mu.Unlock()
		if n == 0 {
			return 0, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return n, ctx.Err()
		case <-bound.C:
			break drain
		}
	}

	st.mu.Lock()
	atBound := st.inFlight
	st.killEpoch++
	st.detachRunnerLocked(true)
	last := st.lastDone
	st.broadcastLocked()
	st.mu.Unlock()
	s.log.Warn("quiesce bound reached; app killed", "site", site, "in_flight", atBound, "bound", max)
	if last != nil {
		<-last
	}

	drain := time.NewTimer(s.cfg.StopWaitMax)
	defer drain.Stop()
	for {
		st.mu.Lock()
		n, ch := st.inFlight, st.changed
		st.mu.Unlock()
		if n == 0 {
			return atBound, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return atBound, ctx.Err()
		case <-drain.C:
			s.log.Warn("requests still in flight after quiesce kill", "site", site, "in_flight", n)
			return atBound, nil
		}
	}
}

// Serve serves one request for the site. A site that is unknown, stopped,
// or whose app cannot take the request now (starting past StartWaitMax,
// too many waiting, quiesced) gets 503 with Retry-After.
func (s *Supervisor) Serve(site string, w http.ResponseWriter, r *http.Request) {
	// The name only keys a map here (sites are validated when started);
	// the hot path does not run the name's pattern.
	s.mu.Lock()
	closed := s.closed
	st := s.sites[site]
	s.mu.Unlock()
	if closed || st == nil {
		unavailable(w, "site is not served on this node")
		return
	}

	st.mu.Lock()
	if !st.started {
		st.mu.Unlock()
		unavailable(w, "site is not served on this node (stopped)")
		return
	}
	// Idle time counts from the end of the last request in flight (the
	// idle check skips a site with requests in flight), so the clock is
	// read once per busy period, not twice per request.
	st.inFlight++
	epoch := st.killEpoch
	static := st.command == ""
	st.mu.Unlock()
	defer func() {
		st.mu.Lock()
		st.inFlight--
		if st.inFlight == 0 {
			st.lastActivity = time.Now()
			st.broadcastLocked()
		}
		st.mu.Unlock()
	}()

	if static {
		s.serveStatic(st, w, r)
		return
	}
	s.serveApp(st, epoch, w, r)
}

// serveApp proxies the request to the site's app once it accepts
// connections.
func (s *Supervisor) serveApp(st *siteState, epoch uint64, w http.ResponseWriter, r *http.Request) {
	proxy, why := s.waitApp(st, epoch, r)
	if proxy == nil {
		unavailable(w, why)
		return
	}
	// ReverseProxy panics with http.ErrAbortHandler when the app fails
	// halfway through a response; no lock is held here.
	proxy.ServeHTTP(w, r)
}

// crashLoopFailures: once the site's app has failed this many runs in a
// row (start errors, exits, no accept in time), a request that finds no
// process of it running is answered at once (503) instead of waiting up to
// StartWaitMax for a start the backoff may put seconds away.
const crashLoopFailures = 3

// waitApp waits, up to StartWaitMax and within WaitingRequestsMax waiting
// requests, until the site's app accepts connections (starting it if
// none runs) and returns its proxy; otherwise it says why not (for a 503).
func (s *Supervisor) waitApp(st *siteState, epoch uint64, r *http.Request) (http.Handler, string) {
	st.mu.Lock()
	if rn := st.runner; rn != nil && rn.proxy != nil && st.started && st.killEpoch == epoch && st.command != "" {
		// The app runs: no wait, no timer.
		st.mu.Unlock()
		return rn.proxy, ""
	}
	st.mu.Unlock()
	bound := time.NewTimer(s.cfg.StartWaitMax)
	defer bound.Stop()
	waiting := false
	st.mu.Lock()
	defer func() {
		if waiting {
			st.waiting--
		}
		st.mu.Unlock()
	}()
	for {
		switch {
		case !st.started:
			return nil, "site is not served on this node (stopped)"
		case st.killEpoch != epoch:
			return nil, "site is being moved; request not served"
		case st.command == "":
			return nil, "site changed while the request waited; retry"
		}
		if rn := st.runner; rn != nil && rn.proxy != nil {
			return rn.proxy, ""
		}
		if !waiting {
			if st.waiting >= s.cfg.WaitingRequestsMax {
				return nil, "too many requests waiting for the site's app to start"
			}
			st.waiting++
			waiting = true
		}
		s.ensureRunnerLocked(st)
		if st.failures >= crashLoopFailures && (st.runner == nil || st.runner.proc == nil) {
			// Crash-looping, and waiting out its backoff: the next start
			// may be seconds away and fail again. (The runner above still
			// starts it when the backoff ends: a fixed app comes back.)
			return nil, "the site's app keeps failing"
		}
		ch := st.changed
		st.mu.Unlock()
		select {
		case <-ch:
			st.mu.Lock()
		case <-bound.C:
			st.mu.Lock()
			return nil, "the site's app is starting"
		case <-r.Context().Done():
			st.mu.Lock()
			return nil, "request cancelled while the site's app was starting"
		}
	}
}

// unavailable answers 503 with Retry-After and a short explanation.
func unavailable(w http.ResponseWriter, why string) {
	w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = io.WriteString(w, "503 service unavailable: "+why+"\n")
}

// openWebRoot opens dir/web, or returns nil (logged unless it does not
// exist).
func (s *Supervisor) openWebRoot(site, dir string) *os.Root {
	root, err := os.OpenRoot(filepath.Join(dir, "web"))
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("cannot open web root", "site", site, "err", err)
		}
		return nil
	}
	return root
}
