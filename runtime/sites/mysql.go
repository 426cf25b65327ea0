package sites

// The site's own database: one mariadbd per site on its master.
//
//   - Data: <dataset>/mysql/data, inside the site's dataset, so the
//     dataset's snapshots (and so its replicas) carry it. The generated
//     option file is <dataset>/mysql/my.cnf, the server's log
//     <dataset>/mysql/error.log.
//   - Connections: a unix socket in a private (0700) directory of this
//     node (networking off): only this node's MySQL front end reaches it.
//   - Lifetime: started on demand (the first DialMySQL after Start, after
//     an idle stop or a quiesce); stopped when no connection was open for
//     MySQLIdleStopAfter, on Stop (demotion, deletion) and on Quiesce.
//   - First start: mariadb-install-db creates the system tables; then the
//     spec's databases and users are created (users 'name'@'localhost'
//     IDENTIFIED BY PASSWORD '<mysql_native_password hash>' with ALL on
//     their databases). The spec's digest is kept in
//     <dataset>/mysql/data/hc-spec, so a changed spec is applied again at
//     the next start and an unchanged one costs nothing.
//
// Consistency of snapshots: InnoDB with its defaults (doublewrite, a
// flushed log at each commit) makes a snapshot taken while mariadbd runs
// crash-consistent, on a file system whose snapshots are atomic (ZFS): the
// replica's mariadbd recovers it at start like after a power cut. A planned
// move does better: before its final snapshot the host quiesces the site,
// and Quiesce shuts mariadbd down cleanly (SIGTERM: the server finishes the
// statements running, flushes and closes its files), so the final delta
// holds a cleanly closed data directory. A quiesce that finds the site still
// served here (a move that was given up) just lets the next connection
// start it again.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/storage"
)

// Bounds of the per-site mariadbd.
const (
	// mysqlInstallMax bounds mariadb-install-db at a site's first start. At
	// the bound it is killed and the start fails (the connection that
	// asked gets an error; the next one tries again).
	mysqlInstallMax = 120 * time.Second
	// mysqlStartMax bounds how long a starting mariadbd may take to accept
	// connections (InnoDB recovery of a crash-consistent copy included).
	// At the bound it is killed and the start fails.
	mysqlStartMax = 120 * time.Second
	// mysqlInitMax bounds the SQL that creates the spec's users and
	// databases. At the bound the client is killed and the start fails.
	mysqlInitMax = 60 * time.Second
	// mysqlStopWaitMax bounds a clean shutdown (SIGTERM); at the bound the
	// server is killed (SIGKILL; the copy is then crash-consistent only).
	mysqlStopWaitMax = 60 * time.Second
	// mysqlIdleCheckEvery is how often idle servers are looked for.
	mysqlIdleCheckEvery = 10 * time.Second
	// mysqlLogTailMax bounds the part of error.log quoted in a failed
	// start's error.
	mysqlLogTailMax = 2 << 10
)

// mysqlOptions are the server's settings: small memory (many sites share a
// node), no networking, no binary log (replication is the dataset's). The
// temporary tablespace starts at 1 MiB instead of 12: InnoDB writes it full
// at every start, and a moved site's clients wait for that start.
//
// Connections are served by MariaDB's thread pool (a thread group per
// processor, threads made and retired as the load asks, a stalled query's
// group given another thread after thread_pool_stall_limit) instead of a
// thread per connection: a site's queries are short, and the front end
// hands the server commands in batches, which the pool serves on the
// threads it has rather than waking one thread per connection. In
// hcbench mysql (five runs each way, alternating) the server then spent
// less per query behind the front end, and the front end's lower QPS
// ratio to HAProxy went from 0.90-0.99 (median 0.93) to 0.97-1.06
// (median 1.00).
const mysqlOptions = `skip-networking
skip-name-resolve
skip-log-bin
innodb-buffer-pool-size=8M
innodb-log-file-size=8M
innodb-log-buffer-size=1M
innodb-autoextend-increment=8
innodb-temp-data-file-path=ibtmp1:1M:autoextend
key-buffer-size=1M
aria-pagecache-buffer-size=1M
performance-schema=OFF
query-cache-size=0
table-open-cache=128
thread-handling=pool-of-threads
thread-cache-size=8
max-connections=128
`

// reservedMysqlUsers and reservedDatabases are names the server itself
// uses; a spec naming them is refused.
var (
	reservedMysqlUsers = []string{"root", "mysql", "public", "mariadb"}
	reservedDatabases  = []string{"mysql", "information_schema", "performance_schema", "sys"}
)

// ErrMySQLNotServed is returned by DialMySQL for a site not started here.
var ErrMySQLNotServed = errors.New("site is not served on this node")

// mysqlPool runs the mariadbd of every site started here.
type mysqlPool struct {
	s *Supervisor
	// sockDir holds the sockets: short (a socket path has 107 bytes at
	// most) and private; sockTemp: a temporary one, removed at close.
	sockDir  string
	sockTemp bool

	mu     sync.Mutex
	closed bool
	sites  map[string]*mysqlSite
	stop   chan struct{}
	done   chan struct{}
	// warming counts warm goroutines; close waits for them.
	warming sync.WaitGroup
}

type mysqlSite struct {
	name string

	mu      sync.Mutex
	started bool
	dir     string
	spec    *m.SiteSpec
	// proc is the running server (nil: none); exited is closed when it
	// has been reaped.
	proc   *os.Process
	exited chan struct{}
	ready  bool
	// starting is non-nil while a start runs; closed when it ends.
	starting chan struct{}
	// warmed is closed when the start ahead of the first connection
	// (warm) has ended, either way; nil when none was made.
	warmed   chan struct{}
	startErr error
	// failingSince is when starts began to fail (zero while the last
	// start succeeded); failures counts them.
	failingSince time.Time
	failures     int
	conns        int
	lastUsed     time.Time
	// generation changes whenever a server starts or exits: a connection
	// made under another one is to a server that is gone (Stale).
	generation atomic.Uint64
}

func newMysqlPool(s *Supervisor) *mysqlPool {
	p := &mysqlPool{s: s, sites: map[string]*mysqlSite{}, stop: make(chan struct{}), done: make(chan struct{})}
	go p.idleLoop()
	return p
}

func (p *mysqlPool) site(name string, create bool) *mysqlSite {
	p.mu.Lock()
	defer p.mu.Unlock()
	ms := p.sites[name]
	if ms == nil && create && !p.closed {
		ms = &mysqlSite{name: name}
		p.sites[name] = ms
	}
	return ms
}

// socketPathMax is the longest unix socket path (sun_path holds 108
// bytes with the terminating NUL).
const socketPathMax = 107

// socketDir creates the private socket directory on first use: <RunDir>/mysql
// when the longest site name's socket fits there (kept across restarts),
// else a new temporary directory.
func (p *mysqlPool) socketDir() (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sockDir != "" {
		return p.sockDir, nil
	}
	if run := p.s.cfg.RunDir; run != "" {
		d := filepath.Join(run, "mysql")
		if len(d)+1+63+len(".sock") <= socketPathMax && os.MkdirAll(d, 0o700) == nil && os.Chmod(d, 0o700) == nil {
			p.sockDir = d
			return d, nil
		}
	}
	d, err := os.MkdirTemp("", "hcmy")
	if err != nil {
		return "", err
	}
	p.sockDir, p.sockTemp = d, true
	return d, nil
}

// start records the site's spec and directory (no server starts yet). A
// changed directory or spec stops a running server (started again on the
// next connection, with the spec applied).
func (p *mysqlPool) start(site string, spec *m.SiteSpec, dir string) {
	ms := p.site(site, true)
	if ms == nil {
		return
	}
	ms.mu.Lock()
	changed := ms.dir != dir || specDigest(ms.spec) != specDigest(spec)
	ms.started, ms.dir, ms.spec = true, dir, spec
	ms.mu.Unlock()
	if changed {
		p.shutdown(ms, "spec or directory changed")
	}
	// A site whose database has been used (a move or failover brought
	// its data here) gets its server started now rather than at the first
	// connection: the sessions the move holds wait for it. An unused one
	// stops again after the idle bound.
	if _, err := os.Stat(filepath.Join(dir, "mysql", "data")); err == nil {
		warmed := make(chan struct{})
		ms.mu.Lock()
		ms.warmed = warmed
		ms.mu.Unlock()
		p.mu.Lock()
		if p.closed {
			close(warmed)
		} else {
			p.warming.Go(func() {
				defer close(warmed)
				p.warm(site)
			})
		}
		p.mu.Unlock()
	}
}

// awaitWarm waits until the site's start ahead of its first connection
// has ended (at once when none was made), or ctx ends.
func (p *mysqlPool) awaitWarm(ctx context.Context, site string) {
	ms := p.site(site, false)
	if ms == nil {
		return
	}
	ms.mu.Lock()
	warmed := ms.warmed
	ms.mu.Unlock()
	if warmed == nil {
		return
	}
	select {
	case <-warmed:
	case <-ctx.Done():
	}
}

// warm starts the site's server, if it is still started here.
func (p *mysqlPool) warm(site string) {
	ctx, cancel := context.WithTimeout(context.Background(), mysqlStartMax)
	defer cancel()
	c, err := p.dial(ctx, site)
	if err != nil {
		if !errors.Is(err, ErrMySQLNotServed) {
			p.s.log.Warn("mariadbd not started ahead of its first connection", "site", site, "err", err)
		}
		return
	}
	c.Close()
}

// stopSite: the site is no longer served here.
func (p *mysqlPool) stopSite(site string) {
	ms := p.site(site, false)
	if ms == nil {
		return
	}
	ms.mu.Lock()
	ms.started = false
	ms.mu.Unlock()
	p.shutdown(ms, "site stopped")
}

// quiesce shuts the server down cleanly before a snapshot that must hold
// every acknowledged write.
func (p *mysqlPool) quiesce(site string) {
	if ms := p.site(site, false); ms != nil {
		p.shutdown(ms, "quiesce before a final snapshot")
	}
}

func (p *mysqlPool) running(site string) bool {
	ms := p.site(site, false)
	if ms == nil {
		return false
	}
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return ms.proc != nil
}

func (p *mysqlPool) spec(site string) *m.SiteSpec {
	ms := p.site(site, false)
	if ms == nil {
		return nil
	}
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if !ms.started {
		return nil
	}
	return ms.spec
}

func (p *mysqlPool) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	all := p.allLocked()
	close(p.stop)
	p.mu.Unlock()
	<-p.done
	p.warming.Wait()
	var wg sync.WaitGroup
	for _, ms := range all {
		wg.Go(func() { p.shutdown(ms, "node stopping") })
	}
	wg.Wait()
	p.mu.Lock()
	if p.sockDir != "" && p.sockTemp {
		_ = os.RemoveAll(p.sockDir)
	}
	p.mu.Unlock()
}

// shutdown stops the site's server, if one runs, cleanly (bounded by
// mysqlStopWaitMax, then SIGKILL), after any start under way.
func (p *mysqlPool) shutdown(ms *mysqlSite, why string) {
	ms.mu.Lock()
	for ms.starting != nil {
		ch := ms.starting
		ms.mu.Unlock()
		<-ch // bounded: every start step has its bound
		ms.mu.Lock()
	}
	proc, exited := ms.proc, ms.exited
	ms.ready = false
	ms.mu.Unlock()
	if proc == nil {
		return
	}
	log := p.s.log.With("site", ms.name, "pid", proc.Pid)
	begun := time.Now()
	_ = proc.Signal(syscall.SIGTERM)
	t := time.NewTimer(mysqlStopWaitMax)
	defer t.Stop()
	select {
	case <-exited:
		log.Info("mariadbd stopped", "why", why, "took", time.Since(begun).Round(time.Millisecond))
	case <-t.C:
		log.Warn("mariadbd did not stop in time: killed", "why", why, "bound", mysqlStopWaitMax)
		_ = syscall.Kill(-proc.Pid, syscall.SIGKILL)
		<-exited
	}
}

// dial connects to the site's server, starting it first if needed.
func (p *mysqlPool) dial(ctx context.Context, site string) (net.Conn, error) {
	if _, err := storage.ParseSite(site); err != nil {
		return nil, fmt.Errorf("mysql: %w", err)
	}
	ms := p.site(site, false)
	if ms == nil {
		return nil, ErrMySQLNotServed
	}
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return nil, ErrMySQLNotServed
	}
	for {
		ms.mu.Lock()
		if !ms.started {
			ms.mu.Unlock()
			return nil, ErrMySQLNotServed
		}
		if ms.proc != nil && ms.ready {
			ms.conns++
			ms.lastUsed = time.Now()
			gen, exited := ms.generation.Load(), ms.exited
			ms.mu.Unlock()
			var d net.Dialer
			c, err := d.DialContext(ctx, "unix", p.socketPath(site))
			if err != nil {
				p.release(ms)
				// A server that died (kill -9, the OOM killer) counts as
				// ready until its exit is noticed: wait for that and
				// start it again.
				if exitNoticed(ctx, exited) {
					continue
				}
				return nil, fmt.Errorf("mysql %s: %w", site, err)
			}
			return &mysqlConn{Conn: c, release: func() { p.release(ms) }, site: ms, generation: gen, exited: exited}, nil
		}
		if ch := ms.starting; ch != nil {
			ms.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			ms.mu.Lock()
			err := ms.startErr
			ms.mu.Unlock()
			if err != nil {
				return nil, err
			}
			continue
		}
		ch := make(chan struct{})
		ms.starting = ch
		dir, spec := ms.dir, ms.spec
		ms.mu.Unlock()
		// The start is not tied to ctx: other connections wait for it too.
		err := p.startServer(ms, dir, spec)
		ms.mu.Lock()
		ms.startErr = err
		if err == nil {
			ms.failingSince, ms.failures = time.Time{}, 0
		} else {
			if ms.failingSince.IsZero() {
				ms.failingSince = time.Now()
			}
			ms.failures++
		}
		ms.starting = nil
		close(ch)
		ms.mu.Unlock()
		if err != nil {
			return nil, err
		}
	}
}

// exitNoticeWaitMax bounds how long a failed dial waits for the server's
// exit to be noticed; at the bound the dial's error stands.
const exitNoticeWaitMax = 2 * time.Second

// exitNoticed reports whether exited closes within exitNoticeWaitMax.
func exitNoticed(ctx context.Context, exited <-chan struct{}) bool {
	t := time.NewTimer(exitNoticeWaitMax)
	defer t.Stop()
	select {
	case <-exited:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

func (p *mysqlPool) release(ms *mysqlSite) {
	ms.mu.Lock()
	ms.conns--
	ms.lastUsed = time.Now()
	ms.mu.Unlock()
}

type mysqlConn struct {
	net.Conn
	once       sync.Once
	release    func()
	site       *mysqlSite
	generation uint64
	exited     <-chan struct{}
}

// ServerExited reports whether the server this connection was made to
// exits within exitNoticeWaitMax (or has): a login that failed on it can be
// tried again, as the next dial starts the server again.
func (c *mysqlConn) ServerExited(ctx context.Context) bool { return exitNoticed(ctx, c.exited) }

// Stale reports whether the server this connection was made to has
// exited (or another one runs now): a command sent on it cannot run.
func (c *mysqlConn) Stale() bool { return c.site.generation.Load() != c.generation }

// SyscallConn is the socket's, for a relay that reads and writes it in an
// event loop (protocols/mysql).
func (c *mysqlConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("mysql: connection without a descriptor")
	}
	return sc.SyscallConn()
}

func (c *mysqlConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

func (p *mysqlPool) socketPath(site string) string {
	dir, _ := p.socketDir()
	return filepath.Join(dir, site+".sock")
}

// startServer installs (first time), starts and initialises the server.
func (p *mysqlPool) startServer(ms *mysqlSite, dir string, spec *m.SiteSpec) error {
	site := ms.name
	log := p.s.log.With("site", site)
	sql, err := initSQL(spec)
	if err != nil {
		return fmt.Errorf("mysql %s: %w", site, err)
	}
	if _, err := p.socketDir(); err != nil {
		return fmt.Errorf("mysql %s: socket directory: %w", site, err)
	}
	base := filepath.Join(dir, "mysql")
	data := filepath.Join(base, "data")
	cnf := filepath.Join(base, "my.cnf")
	pidFile := filepath.Join(base, "mariadbd.pid")
	errLog := filepath.Join(base, "error.log")
	sock := p.socketPath(site)
	if err := os.MkdirAll(base, 0o700); err != nil {
		return fmt.Errorf("mysql %s: %w", site, err)
	}
	opts := "[mariadbd]\n" + "datadir=" + data + "\nsocket=" + sock + "\npid-file=" + pidFile + "\nlog-error=" + errLog + "\n" + mysqlOptions
	if os.Geteuid() == 0 {
		opts += "user=root\n"
	}
	if err := os.WriteFile(cnf, []byte(opts), 0o600); err != nil {
		return fmt.Errorf("mysql %s: %w", site, err)
	}
	killLeftoverServer(pidFile, cnf, log)
	_ = os.Remove(sock)

	if _, err := os.Stat(data); errors.Is(err, os.ErrNotExist) {
		// Created aside and renamed into place: a failed or cut install
		// leaves no half data directory, and the next connection tries
		// again.
		begun := time.Now()
		fresh := data + ".new"
		_ = os.RemoveAll(fresh)
		ctx, cancel := context.WithTimeout(context.Background(), mysqlInstallMax)
		out, err := exec.CommandContext(ctx, "mariadb-install-db", "--defaults-file="+cnf, "--datadir="+fresh,
			"--auth-root-authentication-method=socket", "--skip-test-db").CombinedOutput()
		cancel()
		if err == nil {
			err = os.Rename(fresh, data)
		}
		if err != nil {
			_ = os.RemoveAll(fresh)
			return fmt.Errorf("mysql %s: mariadb-install-db: %w: %s", site, err, tail(out))
		}
		log.Info("mariadb data directory created", "dir", data, "took", time.Since(begun).Round(time.Millisecond))
	}

	begun := time.Now()
	cmd := exec.Command(mariadbdPath(), "--defaults-file="+cnf)
	// Its own group (signals to the node's group do not reach it), but it
	// dies with the node, as on a machine crash: a server left running
	// would hold the data directory while another node masters the site.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("mysql %s: start mariadbd: %w", site, err)
	}
	exited := make(chan struct{})
	ms.mu.Lock()
	ms.proc, ms.exited, ms.ready = cmd.Process, exited, false
	ms.mu.Unlock()
	go func() {
		err := cmd.Wait()
		ms.mu.Lock()
		if ms.proc == cmd.Process {
			ms.proc, ms.ready = nil, false
		}
		ms.generation.Add(1)
		ms.mu.Unlock()
		close(exited)
		log.Info("mariadbd exited", "pid", cmd.Process.Pid, "status", fmt.Sprint(err))
	}()
	fail := func(err error) error {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		logTail, _ := os.ReadFile(errLog)
		return fmt.Errorf("mysql %s: %w; error.log ends: %s", site, err, tail(logTail))
	}
	if err := waitSocket(sock, exited, mysqlStartMax); err != nil {
		return fail(err)
	}
	digestFile := filepath.Join(data, "hc-spec")
	digest := specDigest(spec)
	if old, _ := os.ReadFile(digestFile); string(old) != digest {
		ctx, cancel := context.WithTimeout(context.Background(), mysqlInitMax)
		c := exec.CommandContext(ctx, "mariadb", "--no-defaults", "--socket="+sock, "--user=root", "--batch")
		c.Stdin = strings.NewReader(sql)
		out, err := c.CombinedOutput()
		cancel()
		if err != nil {
			return fail(fmt.Errorf("creating users and databases: %w: %s", err, tail(out)))
		}
		if err := os.WriteFile(digestFile, []byte(digest), 0o600); err != nil {
			return fail(err)
		}
		log.Info("mariadb users and databases applied", "users", len(spec.GetMysqlUsers()))
	}
	ms.mu.Lock()
	ms.ready = ms.proc == cmd.Process
	ready := ms.ready
	ms.generation.Add(1)
	ms.mu.Unlock()
	if !ready {
		return fmt.Errorf("mysql %s: mariadbd exited while starting", site)
	}
	log.Info("mariadbd started", "pid", cmd.Process.Pid, "took", time.Since(begun).Round(time.Millisecond))
	return nil
}

// mariadbdPath finds the server: on PATH, else where Debian installs it
// (/usr/sbin is not on every user's PATH).
func mariadbdPath() string {
	if p, err := exec.LookPath("mariadbd"); err == nil {
		return p
	}
	return "/usr/sbin/mariadbd"
}

// waitSocket waits until the server accepts connections on sock.
func waitSocket(sock string, exited <-chan struct{}, max time.Duration) error {
	deadline := time.Now().Add(max)
	for {
		c, err := net.DialTimeout("unix", sock, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mariadbd not accepting connections after %v", max)
		}
		select {
		case <-exited:
			return errors.New("mariadbd exited while starting")
		case <-time.After(acceptPollInterval):
		}
	}
}

// killLeftoverServer kills a server a crashed node left running on this
// data directory (its pid file names a mariadbd started with this option
// file; any other process with a reused pid is left alone).
func killLeftoverServer(pidFile, cnf string, log interface{ Warn(string, ...any) }) {
	data, err := os.ReadFile(pidFile)
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), "--defaults-file="+cnf) {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for range 100 { // up to 1 s for the kernel to reap it
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	log.Warn("killed a mariadbd a previous run of this node left", "pid", pid)
}

func tail(b []byte) string {
	if len(b) > mysqlLogTailMax {
		b = b[len(b)-mysqlLogTailMax:]
	}
	return strings.TrimSpace(string(b))
}

// idleLoop stops servers that had no connection for MySQLIdleStopAfter.
func (p *mysqlPool) idleLoop() {
	defer close(p.done)
	t := time.NewTicker(mysqlIdleCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		idle := p.s.cfg.IdleStopAfter
		if idle < 0 {
			continue
		}
		for _, ms := range p.all() {
			ms.mu.Lock()
			isIdle := ms.proc != nil && ms.ready && ms.conns == 0 && time.Since(ms.lastUsed) > idle
			ms.mu.Unlock()
			if isIdle {
				p.shutdown(ms, "idle")
			}
		}
	}
}

// ValidMysqlIdent reports whether s is 1..64 of [a-z0-9_], the names the
// admin endpoint accepts for MySQL users and databases (so they need no
// quoting beyond the backticks and quotes initSQL puts around them).
func ValidMysqlIdent(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// validNativeHash: "*" and 40 upper-case hex digits.
func validNativeHash(h string) bool {
	if len(h) != 41 || h[0] != '*' {
		return false
	}
	for i := 1; i < len(h); i++ {
		if c := h[i]; !(c >= '0' && c <= '9' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// initSQL creates the spec's databases and users, idempotently, after
// validating every name and hash it puts in a statement.
func initSQL(spec *m.SiteSpec) (string, error) {
	var b strings.Builder
	dbs := map[string]bool{}
	for _, u := range spec.GetMysqlUsers() {
		if !ValidMysqlIdent(u.GetName()) || len(u.GetName()) > 32 || slices.Contains(reservedMysqlUsers, u.GetName()) {
			return "", fmt.Errorf("mysql user %q: not a valid or allowed name", u.GetName())
		}
		if !validNativeHash(u.GetPasswordHash()) {
			return "", fmt.Errorf("mysql user %q: password hash is not a mysql_native_password hash", u.GetName())
		}
		for _, db := range u.GetDatabases() {
			if !ValidMysqlIdent(db) || slices.Contains(reservedDatabases, db) {
				return "", fmt.Errorf("mysql user %q: database %q: not a valid or allowed name", u.GetName(), db)
			}
			if !dbs[db] {
				dbs[db] = true
				fmt.Fprintf(&b, "CREATE DATABASE IF NOT EXISTS `%s`;\n", db)
			}
		}
		fmt.Fprintf(&b, "CREATE USER IF NOT EXISTS '%s'@'localhost' IDENTIFIED BY PASSWORD '%s';\n", u.GetName(), u.GetPasswordHash())
		fmt.Fprintf(&b, "ALTER USER '%s'@'localhost' IDENTIFIED BY PASSWORD '%s';\n", u.GetName(), u.GetPasswordHash())
		for _, db := range u.GetDatabases() {
			fmt.Fprintf(&b, "GRANT ALL PRIVILEGES ON `%s`.* TO '%s'@'localhost';\n", db, u.GetName())
		}
	}
	return b.String(), nil
}

// specDigest identifies what initSQL applies.
func specDigest(spec *m.SiteSpec) string {
	h := sha256.New()
	for _, u := range spec.GetMysqlUsers() {
		fmt.Fprintf(h, "%s\x00%s\x00%s\x01", u.GetName(), u.GetPasswordHash(), strings.Join(u.GetDatabases(), "\x00"))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// DialMySQL connects to the mariadbd of a site started here, starting the
// server first if none runs (the first start of a site creates its data
// directory, users and databases). It fails with ErrMySQLNotServed for a
// site not started here. The connection counts as use of the server until
// it is closed (a server with none open for IdleStopAfter is stopped).
func (s *Supervisor) DialMySQL(ctx context.Context, site string) (net.Conn, error) {
	return s.mysql.dial(ctx, site)
}

// SiteSpec is the spec of a site started here (the MySQL front end checks
// passwords against it), nil for a site not started here.
func (s *Supervisor) SiteSpec(site string) *m.SiteSpec {
	return s.mysql.spec(site)
}

// all is every site's server state (a copy of the map's values).
func (p *mysqlPool) all() []*mysqlSite {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.allLocked()
}

func (p *mysqlPool) allLocked() []*mysqlSite {
	out := make([]*mysqlSite, 0, len(p.sites))
	for _, ms := range p.sites {
		out = append(out, ms)
	}
	return out
}
