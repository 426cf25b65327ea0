// Package ftp is the FTP front end of every node (on
// github.com/fclairamb/ftpserverlib): a client logs in on any node as
// user@site with one of the site's FTP users, and works on the site's web
// root (the dataset's web/ directory, what the HTTP front end serves) on
// the site's master, wherever it connected.
//
//   - On the master, the files are reached through a jail built on
//     os.Root: every path component is resolved without following a symlink
//     out of the web root, error replies name only site-relative paths, and
//     SITE commands are off. Each operation is admitted at the master
//     (Host.Admit), so a snapshot that must hold every acknowledged write
//     waits for it.
//   - On any other node, the same operations go over the node-to-node
//     channel: an endpoint on the master's internal port (token
//     authenticated), one HTTP request per operation, uploads and downloads
//     streamed (never buffered whole).
//   - A logged-in session holds a lease on its site at the site's master
//     (LeaseAcquire/LeaseRelease to the site actor, a reference count per
//     session): the balancer does not juggle a leased site. The lease
//     follows the master (a move by an operator, a failover) at the
//     session's next command or renewal (every leaseRenewEvery: an
//     acquire is idempotent, so a lost message or a restarted master costs
//     at most that long), and is released when the session ends. A master
//     that dies takes its leases with it (failover is not held up); leases
//     held from a node that is seen down are dropped by the site actor.
//   - A login or a command that arrives while the site is paused for a move
//     (or has no live master yet) waits, up to moveWaitMax, for it to be
//     served again.
//
// User names: "user@site". FTP user names are unique only within a site
// (runtime/admin), and neither '@' nor upper case is valid in a user or
// site name, so user@site names one account on every node without a
// cluster-wide index of users.
package ftp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	ftpserver "github.com/fclairamb/ftpserverlib"
	"github.com/spf13/afero"
	"google.golang.org/protobuf/proto"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/admin"
	"github.com/hybridcluster/hybridcluster/runtime/host"
	"github.com/hybridcluster/hybridcluster/runtime/storage"
)

// Bounds. What happens at each is said where it is enforced.
const (
	// sessionsMax bounds the FTP connections of one node; past it a new
	// connection is refused at the greeting (the client may retry).
	sessionsMax = 512
	// moveWaitMax bounds how long a login or a command waits for its site
	// to be served (a move's pause, a failover). At the bound the command
	// fails with "site unavailable, try again".
	moveWaitMax = 30 * time.Second
	// routePollInterval is how often such a wait looks at the routes.
	routePollInterval = 50 * time.Millisecond
	// notServingPause: after the master said it does not serve the site
	// (the route here is stale), wait this long before asking again.
	notServingPause = 200 * time.Millisecond
	// routeAttemptsMax bounds how often one command is re-routed after a
	// master said it does not serve the site.
	routeAttemptsMax = 20
	// unknownSiteWaitMax: a login for a site this node has no route for
	// waits this long (a node that just started learns routes from the
	// others), then fails as a wrong login.
	unknownSiteWaitMax = 3 * time.Second
	// authConcurrentMax bounds the password checks running at once on a
	// master (PBKDF2 is deliberately slow); further logins wait for a slot,
	// bounded by moveWaitMax.
	authConcurrentMax = 4
	// idleTimeoutSeconds: an FTP session with no command for this long is
	// closed by the library (its lease is then released).
	idleTimeoutSeconds = 900
	// dataConnectTimeoutSeconds bounds the wait for a data connection.
	dataConnectTimeoutSeconds = 30
	// internalIdleConnsMax bounds the idle node-to-node connections kept
	// per master.
	internalIdleConnsMax = 64
	// leaseRenewEvery: each session sends its lease again this often, to
	// the site's master now (an acquire is idempotent at the site actor): a
	// lost message, a master that restarted, or a move while the session
	// was idle costs at most this long without the lease.
	leaseRenewEvery = 5 * time.Second
)

// Cluster is what the front end needs of the node's runtime
// (*host.Host).
type Cluster interface {
	Node() string
	Route(site string) (host.Route, bool)
	Live(node string) bool
	Send(to core.Address, msg proto.Message)
	Admit(ctx context.Context, site string) (release func(), ok bool)
	HandleInternal(pattern string, handler http.Handler)
	InternalURL(member string) (string, bool)
	SiteSpec(site string) (*m.SiteSpec, bool)
}

// Storage is what the front end needs of the node's storage driver.
type Storage interface {
	Mountpoint(ctx context.Context, site storage.Site) (string, error)
	Usage(ctx context.Context, site storage.Site) (storage.Usage, error)
}

// Config configures the front end. Required: Cluster, Storage, Token and
// Listen (or Listener).
type Config struct {
	Cluster Cluster
	Storage Storage
	// Token is the node secret (node-to-node requests carry it).
	Token string
	// Listen is the control connection's address (host:port); Listener,
	// when set, is used instead (closed by Close).
	Listen   string
	Listener net.Listener
	// PassivePorts is the passive data port range "first-last"; empty lets
	// the system pick any free port.
	PassivePorts string
	// PublicHost is the IP address announced in passive replies; empty
	// announces the address the client connected to.
	PublicHost string
	// TLSCertFile and TLSKeyFile, both set, offer explicit FTPS (AUTH
	// TLS) with this certificate; clients may still use plain FTP.
	TLSCertFile, TLSKeyFile string
	// Logger receives logins, escapes refused, errors; nil discards.
	Logger *slog.Logger
}

// Server is one node's FTP front end.
type Server struct {
	cfg      Config
	log      *slog.Logger
	node     string
	boot     string
	ftp      *ftpserver.FtpServer
	client   *http.Client
	tls      *tls.Config
	sessions atomic.Int64
	nextID   atomic.Uint64
	authSlot chan struct{}

	mu     sync.Mutex
	mounts map[string]mount // site -> its dataset directory at an epoch
	active map[*session]struct{}
	stop   chan struct{}
	closed sync.Once
}

type mount struct {
	epoch string
	dir   string
}

// ParsePortRange parses "first-last" (empty: 0, 0).
func ParsePortRange(s string) (first, last int, err error) {
	if s == "" {
		return 0, 0, nil
	}
	a, b, ok := strings.Cut(s, "-")
	first, err1 := strconv.Atoi(strings.TrimSpace(a))
	last, err2 := strconv.Atoi(strings.TrimSpace(b))
	if !ok || err1 != nil || err2 != nil || first < 1 || last > 65535 || first > last {
		return 0, 0, fmt.Errorf("passive port range %q: want first-last within 1-65535", s)
	}
	return first, last, nil
}

// New checks cfg, registers the node-to-node endpoint on the internal port
// and listens on the control address. Serve accepts connections.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.Cluster == nil || cfg.Storage == nil:
		return nil, errors.New("ftp: no cluster or storage")
	case cfg.Token == "":
		return nil, errors.New("ftp: empty node token")
	case cfg.Listen == "" && cfg.Listener == nil:
		return nil, errors.New("ftp: no listen address")
	case (cfg.TLSCertFile == "") != (cfg.TLSKeyFile == ""):
		return nil, errors.New("ftp: TLS needs both a certificate and a key file")
	}
	first, last, err := ParsePortRange(cfg.PassivePorts)
	if err != nil {
		return nil, fmt.Errorf("ftp: %w", err)
	}
	if cfg.PublicHost != "" && net.ParseIP(cfg.PublicHost) == nil {
		return nil, fmt.Errorf("ftp: public host %q is not an IP address", cfg.PublicHost)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log, node: cfg.Cluster.Node(), boot: strconv.FormatInt(time.Now().UnixNano(), 36),
		authSlot: make(chan struct{}, authConcurrentMax), mounts: map[string]mount{}, active: map[*session]struct{}{},
		stop: make(chan struct{})}
	if cfg.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("ftp: TLS certificate: %w", err)
		}
		s.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	s.client = &http.Client{Transport: &http.Transport{
		Proxy: nil, MaxIdleConnsPerHost: internalIdleConnsMax, IdleConnTimeout: 90 * time.Second,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		WriteBufferSize:     copyBufferBytes,
		ReadBufferSize:      copyBufferBytes,
		DisableCompression:  true,
		TLSHandshakeTimeout: 5 * time.Second,
	}}
	settings := &ftpserver.Settings{
		ListenAddr: cfg.Listen, Listener: cfg.Listener, PublicHost: cfg.PublicHost,
		Banner:                  "hybridcluster FTP: log in as user@site",
		IdleTimeout:             idleTimeoutSeconds,
		ConnectionTimeout:       dataConnectTimeoutSeconds,
		DisableSite:             true,
		DisableLISTArgs:         false,
		ActiveConnectionsCheck:  ftpserver.IPMatchRequired,
		PasvConnectionsCheck:    ftpserver.IPMatchRequired,
		ActiveTransferPortNon20: true,
		DefaultTransferType:     ftpserver.TransferTypeBinary,
		TLSRequired:             ftpserver.ClearOrEncrypted,
	}
	if first != 0 {
		settings.PassiveTransferPortRange = ftpserver.PortRange{Start: first, End: last}
	}
	s.ftp = ftpserver.NewFtpServer(&mainDriver{s: s, settings: settings})
	s.ftp.Logger = log.With("component", "ftplib")
	cfg.Cluster.HandleInternal(internalPath, endpoint{s: s})
	if err := s.ftp.Listen(); err != nil {
		return nil, fmt.Errorf("ftp: listen %s: %w", cfg.Listen, err)
	}
	go s.renewLeases()
	return s, nil
}

// renewLeases sends every session's lease again, every leaseRenewEvery, to
// its site's master now (moving it there when the master changed).
func (s *Server) renewLeases() {
	t := time.NewTicker(leaseRenewEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		s.mu.Lock()
		sessions := make([]*session, 0, len(s.active))
		for ss := range s.active {
			sessions = append(sessions, ss)
		}
		s.mu.Unlock()
		for _, ss := range sessions {
			if r, ok := s.cfg.Cluster.Route(ss.site); ok && r.Master != "" {
				ss.renew(r.Master)
			}
		}
	}
}

// Addr is the control connection's address.
func (s *Server) Addr() string { return s.ftp.Addr() }

// Serve accepts FTP connections until Close.
func (s *Server) Serve() error { return s.ftp.Serve() }

// Close stops accepting connections (open sessions end with the process,
// or when their client quits: their leases are then released).
func (s *Server) Close() error {
	s.closed.Do(func() { close(s.stop) })
	return s.ftp.Stop()
}

func validSite(site string) bool {
	_, err := storage.ParseSite(site)
	return err == nil && admin.ValidSiteName(site)
}

func validUser(u string) bool {
	if len(u) == 0 || len(u) > admin.MaxUserName {
		return false
	}
	for i := 0; i < len(u); i++ {
		if c := u[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// splitLogin parses "user@site".
func splitLogin(login string) (user, site string, ok bool) {
	i := strings.LastIndexByte(login, '@')
	if i < 0 {
		return "", "", false
	}
	user, site = login[:i], login[i+1:]
	return user, site, validUser(user) && validSite(site)
}

// waitServing waits until site has a serving master that is this node or
// live, up to deadline; avoid (when set) is a route a master just
// disowned: it is asked again only after notServingPause.
func (s *Server) waitServing(ctx context.Context, site string, deadline time.Time, unknownWait time.Duration) (host.Route, error) {
	start := time.Now()
	for {
		r, ok := s.cfg.Cluster.Route(site)
		if ok && r.Serving() && (r.Master == s.node || s.cfg.Cluster.Live(r.Master)) {
			return r, nil
		}
		now := time.Now()
		if !ok && unknownWait > 0 && now.Sub(start) >= unknownWait {
			return host.Route{}, errAuth
		}
		if now.After(deadline) {
			return host.Route{}, fmt.Errorf("site unavailable (moving or failing over), try again")
		}
		select {
		case <-ctx.Done():
			return host.Route{}, ctx.Err()
		case <-time.After(routePollInterval):
		}
	}
}

// open returns the site's files as seen from this node when master serves
// them: the jail here (admitted: release ends the admission), or the
// channel to master.
func (s *Server) open(ctx context.Context, site, master string) (siteFS, func(), error) {
	if master == s.node {
		return s.local(ctx, site)
	}
	base, ok := s.cfg.Cluster.InternalURL(master)
	if !ok {
		return nil, nil, errNotServing
	}
	return &remoteFS{base: strings.TrimSuffix(base, "/"), site: site, token: s.cfg.Token, client: s.client}, func() {}, nil
}

// local admits work on site at this node (its master) and opens its jail.
func (s *Server) local(ctx context.Context, site string) (siteFS, func(), error) {
	release, ok := s.cfg.Cluster.Admit(ctx, site)
	if !ok {
		return nil, nil, errNotServing
	}
	dir, err := s.mountpoint(ctx, site)
	if err != nil {
		release()
		s.log.Warn("ftp: site has no dataset directory here", "site", site, "err", err)
		return nil, nil, errNotServing
	}
	j, err := openJail(dir, site, s.log)
	if err != nil {
		release()
		s.log.Warn("ftp: cannot open the site's web root", "site", site, "err", err)
		return nil, nil, &fs.PathError{Op: "open", Path: "/", Err: errFailed}
	}
	admitted, _ := s.cfg.Cluster.Route(site)
	j.serving = func() bool {
		r, ok := s.cfg.Cluster.Route(site)
		return ok && r.Master == s.node && r.Serving() && core.CompareEpoch(r.Epoch, admitted.Epoch) == 0
	}
	j.touch = func() {
		if again, ok := s.cfg.Cluster.Admit(context.Background(), site); ok {
			again()
		}
	}
	ds, _ := storage.ParseSite(site) // checked by every caller
	if spec, ok := s.cfg.Cluster.SiteSpec(site); ok && spec.QuotaBytes > 0 {
		j.quota = func() (int64, bool) {
			u, err := s.cfg.Storage.Usage(ctx, ds)
			if err != nil {
				return 0, false // the kernel still enforces a ZFS quota
			}
			return u.AvailableBytes, true
		}
	}
	return j, func() { j.Close(); release() }, nil
}

// mountpoint is the site's dataset directory, asked of the driver once per
// epoch of the site (a rollback or a move changes the epoch; `zfs get` is
// not free).
func (s *Server) mountpoint(ctx context.Context, site string) (string, error) {
	r, _ := s.cfg.Cluster.Route(site)
	epoch := core.EpochString(r.Epoch)
	s.mu.Lock()
	mt, ok := s.mounts[site]
	s.mu.Unlock()
	if ok && mt.epoch == epoch {
		return mt.dir, nil
	}
	ds, err := storage.ParseSite(site)
	if err != nil {
		return "", err
	}
	dir, err := s.cfg.Storage.Mountpoint(ctx, ds)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	s.mounts[site] = mount{epoch: epoch, dir: dir}
	s.mu.Unlock()
	return dir, nil
}

// dummyHash keeps a login for an unknown user as slow as a wrong password
// (made at the first such login: hashing is deliberately slow).
var dummyHash = sync.OnceValue(func() string { h, _ := admin.HashFTPPassword("no such user"); return h })

// authLocal checks a login on the site's master.
func (s *Server) authLocal(ctx context.Context, site, user, password string) error {
	if !validUser(user) {
		return errAuth
	}
	release, ok := s.cfg.Cluster.Admit(ctx, site)
	if !ok {
		return errNotServing
	}
	defer release()
	select {
	case s.authSlot <- struct{}{}:
		defer func() { <-s.authSlot }()
	case <-ctx.Done():
		return ctx.Err()
	}
	spec, _ := s.cfg.Cluster.SiteSpec(site)
	hash, found := "", false
	for _, u := range spec.GetFtpUsers() {
		if u.Name == user {
			hash, found = u.PasswordHash, true
		}
	}
	if !found {
		hash = dummyHash()
	}
	if !admin.VerifyFTPPassword(hash, password) || !found {
		return errAuth
	}
	return nil
}

// mainDriver is the library's MainDriver.
type mainDriver struct {
	s        *Server
	settings *ftpserver.Settings
}

func (d *mainDriver) GetSettings() (*ftpserver.Settings, error) { return d.settings, nil }

func (d *mainDriver) ClientConnected(cc ftpserver.ClientContext) (string, error) {
	if n := d.s.sessions.Add(1); n > sessionsMax {
		return "too many FTP sessions on this node, try again later", fmt.Errorf("sessions bound %d reached", sessionsMax)
	}
	return "hybridcluster FTP: log in as user@site", nil
}

func (d *mainDriver) ClientDisconnected(cc ftpserver.ClientContext) {
	d.s.sessions.Add(-1)
	if ss, ok := cc.Extra().(*session); ok {
		ss.end()
	}
}

func (d *mainDriver) GetTLSConfig() (*tls.Config, error) {
	if d.s.tls == nil {
		return nil, errors.New("TLS is not configured on this node")
	}
	return d.s.tls, nil
}

// AuthUser checks user@site against the site's users on its master,
// waiting (bounded) while the site moves, and takes the session's lease.
func (d *mainDriver) AuthUser(cc ftpserver.ClientContext, login, password string) (ftpserver.ClientDriver, error) {
	s := d.s
	user, site, ok := splitLogin(login)
	if !ok {
		return nil, errors.New("log in as user@site")
	}
	ctx, cancel := context.WithTimeout(context.Background(), moveWaitMax)
	defer cancel()
	deadline := time.Now().Add(moveWaitMax)
	var err error
	for attempt := 0; attempt < routeAttemptsMax; attempt++ {
		var r host.Route
		if r, err = s.waitServing(ctx, site, deadline, unknownSiteWaitMax); err != nil {
			break
		}
		if r.Master == s.node {
			err = s.authLocal(ctx, site, user, password)
		} else if base, ok := s.cfg.Cluster.InternalURL(r.Master); ok {
			rf := &remoteFS{base: strings.TrimSuffix(base, "/"), site: site, token: s.cfg.Token, client: s.client}
			err = rf.auth(ctx, user, password)
		} else {
			err = errNotServing
		}
		if !errors.Is(err, errNotServing) {
			break
		}
		time.Sleep(notServingPause)
	}
	if err != nil {
		s.log.Info("ftp: login refused", "site", site, "user", user, "remote", cc.RemoteAddr().String(), "why", err)
		if errors.Is(err, errNotServing) {
			return nil, errors.New("site unavailable, try again")
		}
		return nil, err
	}
	ss := &session{s: s, site: site, user: user,
		holder: "ftp/" + s.node + "/" + s.boot + "-" + strconv.FormatUint(s.nextID.Add(1), 10)}
	cc.SetExtra(ss)
	if r, ok := s.cfg.Cluster.Route(site); ok {
		ss.lease(r.Master)
	}
	s.mu.Lock()
	s.active[ss] = struct{}{}
	s.mu.Unlock()
	s.log.Info("ftp: login", "site", site, "user", user, "remote", cc.RemoteAddr().String(), "holder", ss.holder)
	return &clientFS{ss: ss}, nil
}

// session is one logged-in FTP connection.
type session struct {
	s          *Server
	site, user string
	holder     string

	mu      sync.Mutex
	leaseAt string // the node whose site actor counts our lease
	ended   bool
}

// lease moves the session's lease to master (a no-op when it is there).
func (ss *session) lease(master string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.ended || ss.leaseAt == master || master == "" {
		return
	}
	if ss.leaseAt != "" {
		ss.s.cfg.Cluster.Send(core.SiteAddr(ss.leaseAt, ss.site), &m.LeaseRelease{Site: ss.site, Holder: ss.holder})
	}
	ss.s.cfg.Cluster.Send(core.SiteAddr(master, ss.site), &m.LeaseAcquire{Site: ss.site, Holder: ss.holder})
	ss.leaseAt = master
}

// renew sends the lease again to master (moving it there if it moved).
func (ss *session) renew(master string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.ended || master == "" {
		return
	}
	if ss.leaseAt != "" && ss.leaseAt != master {
		ss.s.cfg.Cluster.Send(core.SiteAddr(ss.leaseAt, ss.site), &m.LeaseRelease{Site: ss.site, Holder: ss.holder})
	}
	ss.s.cfg.Cluster.Send(core.SiteAddr(master, ss.site), &m.LeaseAcquire{Site: ss.site, Holder: ss.holder})
	ss.leaseAt = master
}

// end releases the lease (the session is over).
func (ss *session) end() {
	ss.s.mu.Lock()
	delete(ss.s.active, ss)
	ss.s.mu.Unlock()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.ended {
		return
	}
	ss.ended = true
	if ss.leaseAt != "" {
		ss.s.cfg.Cluster.Send(core.SiteAddr(ss.leaseAt, ss.site), &m.LeaseRelease{Site: ss.site, Holder: ss.holder})
	}
	ss.s.log.Info("ftp: session ended", "site", ss.site, "user", ss.user, "holder", ss.holder)
}

// with runs fn on the site's files where they are served now, re-routing
// (bounded) when a master says it no longer serves the site. fn must call
// release when it is done with fsys (a transfer: at its Close).
func (ss *session) with(fn func(fsys siteFS, release func()) error) error {
	s := ss.s
	ctx, cancel := context.WithTimeout(context.Background(), moveWaitMax)
	defer cancel()
	deadline := time.Now().Add(moveWaitMax)
	var err error
	for attempt := 0; attempt < routeAttemptsMax; attempt++ {
		var r host.Route
		if r, err = s.waitServing(ctx, ss.site, deadline, 0); err != nil {
			return err
		}
		ss.lease(r.Master)
		fsys, release, oerr := s.open(ctx, ss.site, r.Master)
		if oerr == nil {
			oerr = fn(fsys, release)
		}
		if err = oerr; !errors.Is(err, errNotServing) {
			return err
		}
		time.Sleep(notServingPause)
	}
	return fmt.Errorf("site unavailable, try again: %w", err)
}

// clientFS is the library's ClientDriver for one session.
type clientFS struct{ ss *session }

var (
	_ ftpserver.ClientDriver                      = (*clientFS)(nil)
	_ ftpserver.ClientDriverExtensionFileList     = (*clientFS)(nil)
	_ ftpserver.ClientDriverExtentionFileTransfer = (*clientFS)(nil)
	_ ftpserver.ClientDriverExtensionRemoveDir    = (*clientFS)(nil)
)

func (c *clientFS) meta(fn func(fsys siteFS) error) error {
	return c.ss.with(func(fsys siteFS, release func()) error {
		defer release()
		return fn(fsys)
	})
}

func (c *clientFS) Name() string { return "hybridcluster" }

func (c *clientFS) Stat(name string) (os.FileInfo, error) {
	var fi *fileInfo
	err := c.meta(func(fsys siteFS) (err error) { fi, err = fsys.Stat(name); return })
	if err != nil {
		return nil, err
	}
	return fi, nil
}

func (c *clientFS) ReadDir(name string) ([]os.FileInfo, error) {
	var fis []*fileInfo
	err := c.meta(func(fsys siteFS) (err error) { fis, err = fsys.ReadDir(name); return })
	if err != nil {
		return nil, err
	}
	out := make([]os.FileInfo, len(fis))
	for i, fi := range fis {
		out[i] = fi
	}
	return out, nil
}

func (c *clientFS) Mkdir(name string, _ os.FileMode) error {
	return c.meta(func(fsys siteFS) error { return fsys.Mkdir(name) })
}

func (c *clientFS) MkdirAll(name string, _ os.FileMode) error {
	return c.meta(func(fsys siteFS) error {
		p := ""
		for _, part := range strings.Split(strings.Trim(clientPath(name), "/"), "/") {
			if part == "" {
				continue
			}
			p += "/" + part
			if err := fsys.Mkdir(p); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
		}
		return nil
	})
}

func (c *clientFS) Remove(name string) error {
	return c.meta(func(fsys siteFS) error { return fsys.Remove(name) })
}

func (c *clientFS) RemoveDir(name string) error {
	return c.meta(func(fsys siteFS) error { return fsys.RemoveDir(name) })
}

func (c *clientFS) RemoveAll(name string) error {
	return c.meta(func(fsys siteFS) error { return fsys.RemoveAll(name) })
}

func (c *clientFS) Rename(from, to string) error {
	return c.meta(func(fsys siteFS) error { return fsys.Rename(from, to) })
}

func (c *clientFS) Chtimes(name string, _, mtime time.Time) error {
	return c.meta(func(fsys siteFS) error { return fsys.Chtimes(name, mtime) })
}

// Chmod and Chown are refused: permissions inside a dataset are the
// node's business (and SITE CHMOD is off).
func (c *clientFS) Chmod(name string, _ os.FileMode) error {
	return &fs.PathError{Op: "chmod", Path: clientPath(name), Err: errUnsupported}
}

func (c *clientFS) Chown(name string, _, _ int) error {
	return &fs.PathError{Op: "chown", Path: clientPath(name), Err: errUnsupported}
}

// Open, OpenFile and Create are not used: listings go through ReadDir and
// transfers through GetHandle.
func (c *clientFS) Open(name string) (afero.File, error) {
	return nil, &fs.PathError{Op: "open", Path: clientPath(name), Err: errUnsupported}
}

func (c *clientFS) OpenFile(name string, _ int, _ os.FileMode) (afero.File, error) {
	return c.Open(name)
}

func (c *clientFS) Create(name string) (afero.File, error) { return c.Open(name) }

// GetHandle opens a download or an upload at offset (REST). An upload
// through another node is probed first at the master, so a refusal (an
// escape, a full quota, a moved site) is answered before the data
// connection opens.
func (c *clientFS) GetHandle(name string, flags int, offset int64) (ftpserver.FileTransfer, error) {
	var t *transfer
	err := c.ss.with(func(fsys siteFS, release func()) error {
		if flags&(os.O_WRONLY|os.O_RDWR) == 0 {
			r, err := fsys.OpenRead(name, offset)
			if err != nil {
				release()
				return err
			}
			t = &transfer{r: r, pos: offset, release: release}
			return nil
		}
		if rf, ok := fsys.(*remoteFS); ok {
			if err := rf.meta("openw", http.MethodPost, name, nil, "flags", strconv.Itoa(flags),
				"offset", strconv.FormatInt(offset, 10)); err != nil {
				release()
				return err
			}
		}
		w, err := fsys.OpenWrite(name, flags, offset)
		if err != nil {
			release()
			return err
		}
		t = &transfer{w: w, pos: offset, release: release}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

// transfer is one open download or upload.
type transfer struct {
	r       io.ReadCloser
	w       io.WriteCloser
	pos     int64
	release func()
	once    sync.Once
}

var _ ftpserver.FileTransferError = (*transfer)(nil)

func (t *transfer) Read(p []byte) (int, error) {
	if t.r == nil {
		return 0, errors.New("upload handle is not readable")
	}
	n, err := t.r.Read(p)
	t.pos += int64(n)
	return n, err
}

func (t *transfer) Write(p []byte) (int, error) {
	if t.w == nil {
		return 0, errors.New("download handle is not writable")
	}
	n, err := t.w.Write(p)
	t.pos += int64(n)
	return n, err
}

// WriteTo hands a download to the destination in large pieces (sendfile
// from a local file to a plain socket).
func (t *transfer) WriteTo(w io.Writer) (int64, error) {
	if t.r == nil {
		return 0, errors.New("upload handle is not readable")
	}
	var n int64
	var err error
	if wt, ok := t.r.(io.WriterTo); ok {
		n, err = wt.WriteTo(w)
	} else {
		n, err = io.CopyBuffer(w, readerOnly{t.r}, make([]byte, copyBufferBytes))
	}
	t.pos += n
	return n, err
}

// ReadFrom takes an upload in large pieces.
func (t *transfer) ReadFrom(r io.Reader) (int64, error) {
	if t.w == nil {
		return 0, errors.New("download handle is not writable")
	}
	var n int64
	var err error
	if rf, ok := t.w.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.CopyBuffer(writerOnly{t.w}, r, make([]byte, copyBufferBytes))
	}
	t.pos += n
	return n, err
}

type readerOnly struct{ io.Reader }

// Seek accepts only the position the handle is at: the library seeks to
// the REST offset the handle was opened at.
func (t *transfer) Seek(offset int64, whence int) (int64, error) {
	if whence == io.SeekStart && offset == t.pos || whence == io.SeekCurrent && offset == 0 {
		return t.pos, nil
	}
	return t.pos, errors.New("seek is only possible with REST before the transfer")
}

func (t *transfer) TransferError(err error) {
	if rw, ok := t.w.(*remoteWriter); ok {
		rw.abort(err)
	}
}

func (t *transfer) Close() error {
	var err error
	t.once.Do(func() {
		if t.r != nil {
			err = t.r.Close()
		} else {
			err = t.w.Close()
		}
		t.release()
	})
	return err
}
