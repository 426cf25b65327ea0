package sites

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// runner supervises one site's app, one process at a time, until it is
// detached (Stop, Quiesce, a new command) or ends by itself (idle stop, or
// an exit with no recent traffic: the next request starts a new runner).
type runner struct {
	command, dir string
	// stop is closed by detachRunnerLocked.
	stop chan struct{}
	// done is closed when the runner has ended and its process is gone
	// (or left after SIGKILL and StopWaitMax, see process.stop).
	done chan struct{}

	// Guarded by the site's mu:
	kill  bool         // set before stop is closed: SIGKILL at once, no SIGTERM
	proc  *process     // the current process, from its start until it is gone
	proxy http.Handler // non-nil while proc accepts connections
}

// detachRunnerLocked tells the site's runner, if any, to stop its process
// and end; the next request of a started site starts a new runner, which
// waits for this one first.
func (st *siteState) detachRunnerLocked(kill bool) {
	rn := st.runner
	if rn == nil {
		return
	}
	st.runner = nil
	rn.kill = kill
	close(rn.stop)
	st.broadcastLocked()
}

// ensureRunnerLocked starts a runner for a started app site that has none.
func (s *Supervisor) ensureRunnerLocked(st *siteState) {
	if st.runner != nil {
		return
	}
	rn := &runner{
		command: st.command,
		dir:     st.dir,
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	after := st.lastDone
	st.runner, st.lastDone = rn, rn.done
	s.runners.Add(1)
	go s.run(st, rn, after)
}

// run is the runner goroutine.
func (s *Supervisor) run(st *siteState, rn *runner, after <-chan struct{}) {
	defer s.runners.Done()
	defer close(rn.done)
	if after != nil {
		<-after // the previous runner's stop is bounded
	}
	for {
		st.mu.Lock()
		wait := time.Until(st.nextStartAt)
		st.mu.Unlock()
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-rn.stop:
				t.Stop()
				return
			}
		}
		select {
		case <-rn.stop:
			return
		default:
		}
		if !s.runOnce(st, rn) {
			return
		}
	}
}

// runOnce starts the app once and supervises it until it is gone. It
// reports whether the runner should start it again.
func (s *Supervisor) runOnce(st *siteState, rn *runner) bool {
	log := s.log.With("site", st.name)
	p, err := startProcess(log, st.name, rn.command, rn.dir, s.cfg.RunDir)
	if err != nil {
		log.Error("app start failed", "err", err)
		return s.failed(st, rn, "start: "+err.Error())
	}
	startedAt := time.Now()
	log.Info("app started", "pid", p.pid, "port", p.port)
	closeIdle := func() {}
	if s.cfg.AppProxy != nil {
		p.handler, closeIdle = s.cfg.AppProxy(net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port)), p.usable)
	}
	st.mu.Lock()
	rn.proc = p
	st.mu.Unlock()
	defer func() {
		st.mu.Lock()
		rn.proc, rn.proxy = nil, nil
		st.broadcastLocked()
		st.mu.Unlock()
		p.transport.CloseIdleConnections()
		closeIdle()
	}()

	return s.supervise(st, rn, p, log, startedAt)
}

// supervise waits for p to accept connections, publishes its proxy, and
// waits for its end: an exit, a stop, an idle stop or a failed start.
func (s *Supervisor) supervise(st *siteState, rn *runner, p *process, log *slog.Logger, startedAt time.Time) bool {
	var idleC <-chan time.Time
	var idle *time.Timer
	if s.cfg.IdleStopAfter > 0 {
		idle = time.NewTimer(s.cfg.IdleStopAfter)
		defer idle.Stop()
		idleC = idle.C
	}
	acceptTick := time.NewTicker(acceptPollInterval)
	defer acceptTick.Stop()
	acceptBound := time.NewTimer(appAcceptMax)
	defer acceptBound.Stop()
	acceptC, acceptBoundC := acceptTick.C, acceptBound.C
	// healthy fires once the app has accepted connections for
	// restartBackoffResetAfter: the backoff starts from its minimum again.
	healthy := time.NewTimer(time.Hour)
	healthy.Stop()
	defer healthy.Stop()
	for {
		select {
		case <-p.exited:
			p.reap()
			log.Warn("app exited", "pid", p.pid, "status", p.status(), "ran", time.Since(startedAt).Round(time.Millisecond))
			return s.failed(st, rn, "exited: "+p.status())

		case <-healthy.C:
			st.mu.Lock()
			st.backoff = 0
			st.failures, st.failingSince = 0, time.Time{}
			st.mu.Unlock()

		case <-rn.stop:
			st.mu.Lock()
			kill := rn.kill
			st.mu.Unlock()
			p.stop(!kill, s.cfg.StopWaitMax, log)
			log.Info("app stopped", "pid", p.pid, "killed", kill, "status", p.status())
			return false

		case <-idleC:
			stopNow, next := s.idleDetach(st, rn)
			if stopNow {
				p.stop(true, s.cfg.StopWaitMax, log)
				log.Info("app stopped after idle", "pid", p.pid, "idle", s.cfg.IdleStopAfter, "status", p.status())
				return false
			}
			idle.Reset(next)

		case <-acceptC:
			if !p.accepts() {
				continue
			}
			acceptedAt := time.Now()
			acceptC, acceptBoundC = nil, nil
			healthy.Reset(restartBackoffResetAfter)
			st.mu.Lock()
			rn.proxy = p.handler
			st.failure = "" // up again (the count goes once it stays up)
			st.broadcastLocked()
			st.mu.Unlock()
			log.Info("app accepting connections", "pid", p.pid, "after", acceptedAt.Sub(startedAt).Round(time.Millisecond))

		case <-acceptBoundC:
			log.Error("app did not accept connections in time; killing it", "pid", p.pid, "bound", appAcceptMax)
			p.stop(false, s.cfg.StopWaitMax, log)
			return s.failed(st, rn, fmt.Sprintf("accepted no connection within %s", appAcceptMax))
		}
	}
}

// idleDetach reports whether the site has been idle for IdleStopAfter; if
// so it detaches rn (the next request starts a new runner). Otherwise it
// returns when to check again.
func (s *Supervisor) idleDetach(st *siteState, rn *runner) (bool, time.Duration) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.runner != rn {
		return false, s.cfg.IdleStopAfter // detached: the stop is on its way
	}
	if st.inFlight > 0 || st.waiting > 0 {
		return false, s.cfg.IdleStopAfter
	}
	since := time.Since(st.lastActivity)
	if since < s.cfg.IdleStopAfter {
		return false, s.cfg.IdleStopAfter - since
	}
	st.runner = nil
	st.broadcastLocked()
	return true, 0
}

// failed records a failed start or an unexpected exit: the next start
// waits the backoff (RestartBackoffMin after a healthy run, else twice the
// last, at most RestartBackoffMax). It reports whether rn should restart the
// app now (the site is started and had traffic in the last IdleStopAfter);
// if not, rn is detached and the next request starts the app.
func (s *Supervisor) failed(st *siteState, rn *runner, why string) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	now := time.Now()
	st.failure = why
	st.failures++
	if st.failingSince.IsZero() {
		st.failingSince = now
	}
	if st.backoff == 0 {
		st.backoff = s.cfg.RestartBackoffMin
	} else {
		st.backoff = min(2*st.backoff, s.cfg.RestartBackoffMax)
	}
	st.nextStartAt = now.Add(st.backoff)
	if st.runner != rn {
		return false
	}
	recent := s.cfg.IdleStopAfter < 0 || st.inFlight > 0 || st.waiting > 0 ||
		now.Sub(st.lastActivity) < s.cfg.IdleStopAfter
	if st.started && recent {
		s.log.Info("app restarting", "site", st.name, "backoff", st.backoff)
		return true
	}
	st.runner = nil
	st.broadcastLocked()
	s.log.Info("app will restart on the next request", "site", st.name, "backoff", st.backoff)
	return false
}

// process is one run of an app: /bin/sh -c <command> as the leader of its
// own process group.
type process struct {
	pid, port int
	// exited is closed once the leader has been reaped; waitErr is set
	// before.
	exited  chan struct{}
	waitErr error
	// ending is set when the process is being stopped; the proxy then
	// refuses new round trips.
	ending    atomic.Bool
	logsDone  chan struct{}
	pipes     []*os.File // read ends of stdout and stderr
	drainOnce sync.Once
	transport *http.Transport
	proxy     *httputil.ReverseProxy
	// handler serves the app's requests: proxy, or Config.AppProxy's.
	handler http.Handler
}

// usable reports whether the process still takes new requests.
func (p *process) usable() bool {
	if p.ending.Load() {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

var errAppGone = errors.New("the site's app process has ended")

// shellMeta are the characters that make a command need a shell.
const shellMeta = "|&;<>()$`\\\"'*?[]#~=%{}!\n\t"

// appArgv is how a command is started: directly when it is a plain list of
// words (the app is then the supervised process itself, so the parent-death
// signal reaches it), through /bin/sh -c otherwise.
func appArgv(command string) []string {
	if !strings.ContainsAny(command, shellMeta) {
		if f := strings.Fields(command); len(f) > 0 && strings.HasPrefix(f[0], "/") {
			return f
		}
	}
	return []string{"/bin/sh", "-c", command}
}

func startProcess(log *slog.Logger, site, command, dir, runDir string) (*process, error) {
	// exec names the program when the working directory is missing
	// ("fork/exec /bin/sh: no such file or directory"), which sends an
	// operator after the wrong file.
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("site directory: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("site directory %s is not a directory", dir)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("pipe: %w", err)
	}
	argv := appArgv(command)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = appEnv(site, dir, port)
	cmd.Stdout, cmd.Stderr = outW, errW
	// Its own group: signals to -pid reach the shell and every child. If
	// the node dies (kill -9), the kernel kills the shell too (Linux
	// parent-death signal), so an app does not outlive its supervisor and
	// keep writing into a dataset that is no longer its master's; sh execs
	// a simple command, which then is that process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("start /bin/sh -c %q in %s: %w", command, dir, err)
	}
	p := &process{
		pid:      cmd.Process.Pid,
		port:     port,
		exited:   make(chan struct{}),
		logsDone: make(chan struct{}),
		pipes:    []*os.File{outR, errR},
	}
	var logs sync.WaitGroup
	logs.Go(func() { logLines(log, "stdout", outR) })
	logs.Go(func() { logLines(log, "stderr", errR) })
	go func() {
		logs.Wait()
		close(p.logsDone)
	}()
	pidFile := ""
	if runDir != "" {
		// Recorded so that a node restarted after a crash kills what this
		// one left (see killLeftovers).
		pidFile = filepath.Join(runDir, site+".pid")
		if err := os.WriteFile(pidFile, []byte(strconv.Itoa(p.pid)), 0o600); err != nil {
			log.Warn("app pid not recorded", "err", err)
		}
	}
	go func() {
		p.waitErr = cmd.Wait()
		if pidFile != "" {
			_ = os.Remove(pidFile)
		}
		close(p.exited)
	}()
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	p.transport = &http.Transport{
		// Refusing to dial once the process is ending also stops
		// http.Transport's own retry of a replayable request whose
		// connection broke (as a kill breaks it) from reaching another
		// process.
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if p.ending.Load() {
				return nil, errAppGone
			}
			return dialer.DialContext(ctx, network, addr)
		},
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	target := &url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	p.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host // apps build their URLs from the site's domain
			pr.SetXForwarded()
		},
		Transport: processTransport{p},
		ErrorLog:  slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() == nil {
				log.Warn("proxy to app failed", "pid", p.pid, "err", err)
			}
			http.Error(w, "502 bad gateway: the site's app did not answer", http.StatusBadGateway)
		},
	}
	p.handler = p.proxy
	return p, nil
}

// processTransport refuses round trips once its process is being stopped,
// so that a request that picked the proxy before a kill never reaches a
// process started after it (should it get the same port).
type processTransport struct{ p *process }

func (t processTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if t.p.ending.Load() {
		return nil, errAppGone
	}
	select {
	case <-t.p.exited:
		return nil, errAppGone
	default:
	}
	return t.p.transport.RoundTrip(r)
}

// freePort asks the kernel for a free port on 127.0.0.1. Another process
// may take it before the app listens; the app then fails to start and is
// restarted with backoff on another port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// appEnv is the app's whole environment: PATH, HOME and LANG of ours (so
// nothing else of the node, credentials included, leaks into sites), and the
// site's own variables.
func appEnv(site, dir string, port int) []string {
	var env []string
	for _, key := range []string{"PATH", "HOME", "LANG"} {
		if v, ok := os.LookupEnv(key); ok {
			env = append(env, key+"="+v)
		} else if key == "PATH" {
			env = append(env, "PATH=/usr/local/bin:/usr/bin:/bin")
		}
	}
	return append(env,
		"PORT="+strconv.Itoa(port),
		"HC_SITE="+site,
		"HC_DATA_DIR="+dir,
		"HC_WEB_ROOT="+filepath.Join(dir, "web"),
	)
}

func (p *process) accepts() bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port)), 100*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// status is how the leader ended, once exited is closed.
func (p *process) status() string {
	select {
	case <-p.exited:
		if p.waitErr == nil {
			return "exit status 0"
		}
		return p.waitErr.Error()
	default:
		return "running"
	}
}

// signalGroup signals the whole process group. After the leader has been
// reaped its pid could in theory name a new group; that needs the pid space
// to wrap around within the few milliseconds this package signals a
// reaped leader's group, which we accept.
func (p *process) signalGroup(sig syscall.Signal) {
	_ = syscall.Kill(-p.pid, sig)
}

// groupAlive reports whether any process of the group is still there.
func (p *process) groupAlive() bool {
	return syscall.Kill(-p.pid, 0) == nil
}

// stop ends the process group. Graceful: SIGTERM, then up to wait for the
// leader and the whole group to exit. Then (or at once if not graceful)
// SIGKILL to the group, and up to wait again for the leader to be reaped; a
// process that survives that (stuck in the kernel) is logged and left.
func (p *process) stop(graceful bool, wait time.Duration, log *slog.Logger) {
	p.ending.Store(true)
	if graceful {
		p.signalGroup(syscall.SIGTERM)
		p.waitGroupExit(time.Now().Add(wait))
	}
	p.signalGroup(syscall.SIGKILL)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-p.exited:
	case <-t.C:
		log.Error("app process did not exit after SIGKILL; leaving it", "pid", p.pid, "waited", wait)
	}
	p.drainLogs()
}

// waitGroupExit waits until the leader has exited and the group is empty,
// or until deadline.
func (p *process) waitGroupExit(deadline time.Time) {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-p.exited:
	case <-t.C:
		return
	}
	poll := time.NewTicker(groupPollInterval)
	defer poll.Stop()
	for p.groupAlive() {
		select {
		case <-poll.C:
		case <-t.C:
			return
		}
	}
}

// reap cleans up after the leader exited by itself: what is left of its
// group is killed (a crashed app must not leave workers holding its port or
// its files), and its output is drained.
func (p *process) reap() {
	p.ending.Store(true)
	p.signalGroup(syscall.SIGKILL)
	p.drainLogs()
}

// drainLogs waits, up to appLogDrainMax, for the output readers to reach
// the end of the pipes, then closes them (which ends the readers).
func (p *process) drainLogs() {
	p.drainOnce.Do(func() {
		t := time.NewTimer(appLogDrainMax)
		defer t.Stop()
		select {
		case <-p.logsDone:
		case <-t.C:
			for _, f := range p.pipes {
				f.Close()
			}
			<-p.logsDone
		}
		for _, f := range p.pipes {
			f.Close()
		}
	})
}

// logLines logs r line by line, each cut at appLogLineMax bytes.
func logLines(log *slog.Logger, stream string, r io.Reader) {
	br := bufio.NewReaderSize(r, appLogLineMax)
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			log.Info("app output", "stream", stream, "line", string(line), "truncated", true)
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			if err != nil {
				return
			}
			continue
		}
		if text := bytes.TrimRight(line, "\r\n"); len(text) > 0 {
			log.Info("app output", "stream", stream, "line", string(text))
		}
		if err != nil {
			return
		}
	}
}
