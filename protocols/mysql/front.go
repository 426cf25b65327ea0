// Package mysql is the MySQL front end every node runs. A client connects
// to any node; the front end greets it, routes it by its user name to the
// site that has that MySQL user (the node's route mirror), and logs it in
// to the site's own mariadbd on the site's master: directly when this node
// is the master, otherwise through a tunnel on the master's internal port
// (TunnelPath). The master checks the password against the site's spec.
// After the login the front end relays packets unchanged, parsing only
// command boundaries and the status flags that say whether a transaction
// is open (relay.go).
//
// Errors the client sees are the server's own: 1045 for a wrong password
// and for an unknown user alike (which names exist is not revealed), 1044
// for another site's database (from the site's server).
package mysql

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	gm "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/hybridcluster/hybridcluster/runtime/host"
)

// Bounds.
const (
	// handshakeMax bounds a client's connection phase (greeting to login
	// answer), as MariaDB's connect_timeout (10 s) does. At the bound the
	// connection is closed.
	handshakeMax = 10 * time.Second
	// handshakesPerHostMax bounds the connections from one client address
	// that have not logged in yet, so that one host holding connections
	// open without a login cannot take every connection of the node.
	// Beyond, a new connection from it gets error 1040 at once.
	handshakesPerHostMax = 128
	// connectWaitMax bounds how long a login (or a session's reconnect)
	// waits for its site to be served (a move or a failover under way).
	// At the bound the client gets error 1053 (server shutdown in
	// progress), which clients treat as "reconnect and retry".
	connectWaitMax = 30 * time.Second
	// connectRetryEvery is how often a waiting login looks at the route
	// again.
	connectRetryEvery = 50 * time.Millisecond
	// unknownUserWait is how long a login whose user no route names waits
	// for one before it is refused: a site just created may not have
	// reached this node's route mirror yet, and a refusal that comes no
	// faster for an unknown user tells no one which names exist.
	unknownUserWait = time.Second
	// connectionsMax bounds the client connections of one node. Beyond,
	// a new connection gets error 1040 (too many connections) at once.
	connectionsMax = 4096
)

// Cluster is what the front end needs of the node (runtime/host.Host).
type Cluster interface {
	Node() string
	RouteByMysqlUser(user string) (host.Route, bool)
	Live(node string) bool
}

// Config configures a Front.
type Config struct {
	Cluster Cluster
	// Internal returns the base URL of a member's internal port.
	Internal func(node string) (string, bool)
	// Token is the cluster's node secret, sent to the internal port.
	Token string
	// Sites runs the sites this node masters (nil: none here).
	Sites Sites
	// Admit counts a command (or a transaction) in at the master
	// (host.Host.Admit); nil: this node masters nothing.
	Admit func(ctx context.Context, site string) (release func(), ok bool)
	// Admission, when set, is what a session's relay counts its commands
	// in with at the master, one after another, without an allocation per
	// command (host.Host.NewAdmission); nil: Admit for each command.
	Admission func(site string) Admission
	// TLS is offered to clients; nil means a generated self-signed
	// certificate (clients that verify certificates need a real one).
	TLS    *tls.Config
	Logger *slog.Logger
	// NoEventLoop relays every session in its own goroutine (loop.go says
	// what the event loops take); for comparisons and tests.
	NoEventLoop bool
}

// Admission counts a session's commands (and transactions) in at the
// master one at a time (host.Admission): Enter with one held does
// nothing; Leave with none held does nothing.
type Admission interface {
	Enter(ctx context.Context) bool
	Leave()
}

// admitEach is an Admission over Config.Admit.
type admitEach struct {
	admit   func(ctx context.Context, site string) (release func(), ok bool)
	site    string
	release func()
}

func (a *admitEach) Enter(ctx context.Context) bool {
	if a.release != nil {
		return true
	}
	release, ok := a.admit(ctx, a.site)
	a.release = release
	return ok
}

func (a *admitEach) Leave() {
	if a.release != nil {
		a.release()
		a.release = nil
	}
}

// admission is a new session's Admission for site at this master.
func (f *Front) admission(site string) Admission {
	if f.cfg.Admission != nil {
		return f.cfg.Admission(site)
	}
	return &admitEach{admit: f.cfg.Admit, site: site}
}

// Front is the MySQL front end.
type Front struct {
	cfg    Config
	tls    *tls.Config
	log    *slog.Logger
	connID atomic.Uint32
	conns  atomic.Int64
	loops  *eventLoops // nil: none

	mu     sync.Mutex
	closed bool
	open   map[net.Conn]struct{}
	// handshaking counts each client address's connections not logged
	// in yet (handshakesPerHostMax).
	handshaking map[string]int
	wg          sync.WaitGroup
	listener    []net.Listener
}

// New returns a front end.
func New(cfg Config) (*Front, error) {
	if cfg.Cluster == nil || cfg.Internal == nil || cfg.Token == "" {
		return nil, errors.New("mysql front: cluster, internal addresses and token are required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tc := cfg.TLS
	if tc == nil {
		var err error
		if tc, err = selfSignedTLS(); err != nil {
			return nil, err
		}
	}
	f := &Front{cfg: cfg, tls: tc, log: log, open: map[net.Conn]struct{}{}}
	if !cfg.NoEventLoop {
		f.loops = newEventLoops()
	}
	return f, nil
}

// TunnelHandler is the handler of TunnelPath (register it with
// host.Host.HandleInternal).
func (f *Front) TunnelHandler() http.Handler { return http.HandlerFunc(f.tunnelHandler) }

// Serve accepts client connections on l until Close.
func (f *Front) Serve(l net.Listener) error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return net.ErrClosed
	}
	f.listener = append(f.listener, l)
	f.mu.Unlock()
	for {
		c, err := l.Accept()
		if err != nil {
			f.mu.Lock()
			closed := f.closed
			f.mu.Unlock()
			if closed {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			c.Close()
			return nil
		}
		f.open[c] = struct{}{}
		f.wg.Add(1)
		f.mu.Unlock()
		go func() {
			defer f.wg.Done()
			defer func() {
				f.mu.Lock()
				delete(f.open, c)
				f.mu.Unlock()
				c.Close()
			}()
			f.serveConn(c)
		}()
	}
}

// Close stops the listeners and closes every client connection.
func (f *Front) Close() {
	// The loops first: a connection in a loop is closed only once the
	// loop handed its session back.
	f.loops.close()
	f.mu.Lock()
	f.closed = true
	for _, l := range f.listener {
		l.Close()
	}
	for c := range f.open {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// serveConn is one client session.
func (f *Front) serveConn(c net.Conn) {
	if n := f.conns.Add(1); n > connectionsMax {
		defer f.conns.Add(-1)
		f.refuse(c, gm.NewDefaultError(gm.ER_CON_COUNT_ERROR))
		return
	}
	defer f.conns.Add(-1)
	clientHost := "unknown"
	if h, _, err := net.SplitHostPort(c.RemoteAddr().String()); err == nil {
		clientHost = h
	}
	if !f.handshakeBegins(clientHost) {
		f.log.Debug("mysql connection refused: too many logins under way from its host", "remote", clientHost, "bound", handshakesPerHostMax)
		f.refuse(c, gm.NewDefaultError(gm.ER_CON_COUNT_ERROR))
		return
	}
	_ = c.SetDeadline(time.Now().Add(handshakeMax))
	a, err := serverHandshake(c, f.tls, f.connID.Add(1))
	f.handshakeEnds(clientHost)
	if err != nil {
		f.log.Debug("mysql handshake failed", "remote", c.RemoteAddr().String(), "err", err)
		return
	}
	tl := tunnelLogin{login: a.l, ClientHost: clientHost}
	route, ok := f.cfg.Cluster.RouteByMysqlUser(a.l.User)
	for deadline := time.Now().Add(unknownUserWait); !ok && time.Now().Before(deadline); {
		time.Sleep(connectRetryEvery)
		route, ok = f.cfg.Cluster.RouteByMysqlUser(a.l.User)
	}
	if !ok {
		_ = a.reply(errPayload(accessDenied(a.l.User, clientHost, len(a.l.Answer) > 0)))
		return
	}
	site := route.Site
	ctx, cancel := context.WithTimeout(context.Background(), connectWaitMax)
	be, okp, local, err := f.connect(ctx, site, tl)
	cancel()
	// The wait for the site may have used the handshake's time: the
	// answer gets a bound of its own.
	_ = c.SetDeadline(time.Now().Add(handshakeMax))
	if err != nil {
		var myErr *gm.MyError
		if !errors.As(err, &myErr) {
			f.log.Warn("mysql login failed", "site", site, "user", a.l.User, "err", err)
			myErr = unavailable(site)
		}
		_ = a.reply(errPayload(myErr))
		return
	}
	err = a.reply(okp)
	_ = c.SetDeadline(time.Time{})
	if err != nil {
		be.conn.Close()
		return
	}
	rl := &relay{cr: a.r, cw: a.w}
	rl.session.db = a.l.DB
	f.useLoops(rl, a.conn)
	f.attach(rl, be, local, site)
	if st, ok := okStatus(okp); ok {
		rl.status = st
	}
	defer func() { rl.be.conn.Close() }()
	err = rl.run()
	for {
		switch {
		case errors.Is(err, errQuit), errors.As(err, new(errClient)):
			return
		case errors.Is(err, errNotAdmitted):
			// A planned move (or the site's server restarted): the held
			// command did not run.
		case errors.As(err, new(errServer)) && !rl.forwarded && rl.held != nil && !rl.inTransaction():
			// The master is gone (failover) with the session between
			// transactions and nothing of the answer sent: the command
			// goes to the next master. It may have run on the old one
			// (at least once), whose writes since its last replicated
			// snapshot are lost with it anyway.
		default:
			f.log.Info("mysql session ended by the server side", "site", site, "user", a.l.User, "err", err)
			if rl.serverLastWord() {
				return
			}
			msg := "connection to the site's server lost"
			if rl.inTransaction() {
				msg += "; an open transaction was rolled back"
			}
			f.fail(rl, &gm.MyError{Code: erConnectionKilled, State: "70100", Message: msg})
			return
		}
		begun := time.Now()
		if myErr := f.reconnect(rl, site, tl); myErr != nil {
			f.log.Info("mysql session not moved", "site", site, "user", a.l.User, "err", myErr.Message)
			f.fail(rl, myErr)
			return
		}
		f.log.Debug("mysql session moved", "site", site, "user", a.l.User, "took", time.Since(begun).Round(time.Millisecond))
		err = rl.resend()
		if err == nil {
			err = rl.run()
		}
	}
}

// useLoops lets the event loops relay rl's session when its client side
// is a plain socket (not TLS).
func (f *Front) useLoops(rl *relay, client net.Conn) {
	if tc, ok := client.(*net.TCPConn); ok && f.loops != nil {
		if raw, err := tc.SyscallConn(); err == nil {
			rl.client, rl.loops, rl.lp = tc, f.loops, &loopSession{clientRaw: raw}
		}
	}
}

// fail answers the command in flight with e (the session then ends).
func (f *Front) fail(rl *relay, e *gm.MyError) {
	if rl.forwarded {
		return // part of an answer went out: closing is all that is left
	}
	_ = writePacket(rl.cw, rl.lastSeq+1, errPayload(e))
	_ = rl.cw.Flush()
}

// attach makes be the relay's server side.
func (f *Front) attach(rl *relay, be *backend, local bool, site string) {
	rl.be, rl.tunnel, rl.admission, rl.stale = be, !local, nil, nil
	if local {
		rl.admission = f.admission(site)
	}
	if s, ok := be.conn.(interface{ Stale() bool }); ok {
		rl.stale = s.Stale
	}
}

// reconnect logs the session in to the site's (next) server, waiting up
// to connectWaitMax for the site to be served, and restores the session's
// state there. The error is for the client.
func (f *Front) reconnect(rl *relay, site string, tl tunnelLogin) *gm.MyError {
	rl.releaseAdmission()
	rl.be.conn.Close()
	switch {
	case rl.inTransaction():
		return &gm.MyError{Code: erConnectionKilled, State: "70100",
			Message: "the site's server went away inside a transaction; the transaction was rolled back"}
	case rl.session.broken:
		return &gm.MyError{Code: erConnectionKilled, State: "70100",
			Message: "the site moved and this session's state is too large to restore"}
	case rl.session.longData:
		return &gm.MyError{Code: erConnectionKilled, State: "70100",
			Message: "the site moved while this session was sending long data for a statement"}
	case rl.held == nil:
		return &gm.MyError{Code: erConnectionKilled, State: "70100",
			Message: "the site moved and this command is too long to hold"}
	}
	tl.DB = rl.session.db
	ctx, cancel := context.WithTimeout(context.Background(), connectWaitMax)
	be, okp, local, err := f.connect(ctx, site, tl)
	cancel()
	if err != nil {
		var myErr *gm.MyError
		if errors.As(err, &myErr) {
			return myErr
		}
		f.log.Warn("mysql reconnect failed", "site", site, "user", tl.User, "err", err)
		return unavailable(site)
	}
	autocommit := rl.status & gm.SERVER_STATUS_AUTOCOMMIT
	f.attach(rl, be, local, site)
	if st, ok := okStatus(okp); ok {
		rl.status = st
	}
	if err := rl.restore(autocommit != 0); err != nil {
		f.log.Warn("mysql session state not restored", "site", site, "user", tl.User, "err", err)
		return &gm.MyError{Code: erConnectionKilled, State: "70100", Message: "the site moved and this session could not be restored: " + err.Error()}
	}
	return nil
}

// unavailable is the error of a login whose site could not be reached
// within connectWaitMax.
func unavailable(site string) *gm.MyError {
	return &gm.MyError{Code: gm.ER_SERVER_SHUTDOWN, State: "08S01", Message: "site " + site + " is not available now; retry"}
}

// handshakeBegins counts a connection from host in, unless host has
// handshakesPerHostMax connections not logged in yet.
func (f *Front) handshakeBegins(host string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.handshaking[host] >= handshakesPerHostMax {
		return false
	}
	if f.handshaking == nil {
		f.handshaking = map[string]int{}
	}
	f.handshaking[host]++
	return true
}

// handshakeEnds counts a connection from host out.
func (f *Front) handshakeEnds(host string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.handshaking[host]--; f.handshaking[host] <= 0 {
		delete(f.handshaking, host)
	}
}

// refuse sends e in place of the greeting.
func (f *Front) refuse(c net.Conn, e *gm.MyError) {
	_ = c.SetDeadline(time.Now().Add(time.Second))
	// The greeting may be an error packet.
	_, _ = c.Write(append([]byte{byte(len(errPayload(e))), 0, 0, 0}, errPayload(e)...))
}

// connect logs the session in to the site's server on its master, waiting
// (bounded by ctx) while the site is not served. local: this node is the
// master (the relay admits commands itself).
func (f *Front) connect(ctx context.Context, site string, tl tunnelLogin) (be *backend, okp []byte, local bool, err error) {
	for {
		route, ok := f.cfg.Cluster.RouteByMysqlUser(tl.User)
		if ok && route.Site == site && route.Serving() && f.cfg.Cluster.Live(route.Master) {
			if route.Master == f.cfg.Cluster.Node() {
				be, okp, err = f.connectLocal(ctx, site, tl)
				local = true
			} else {
				be, okp, err = f.dialTunnel(ctx, route.Master, site, tl)
			}
			if !errors.Is(err, errNotServed) {
				return be, okp, local, err
			}
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = ctx.Err()
			}
			return nil, nil, false, err
		case <-time.After(connectRetryEvery):
		}
	}
}

// connectLocal logs in to a site this node masters.
func (f *Front) connectLocal(ctx context.Context, site string, tl tunnelLogin) (*backend, []byte, error) {
	if f.cfg.Admit == nil {
		return nil, nil, errNotServed
	}
	release, ok := f.cfg.Admit(ctx, site)
	if !ok {
		return nil, nil, errNotServed
	}
	defer release()
	lctx, cancel := context.WithTimeout(ctx, masterLoginMax)
	defer cancel()
	return masterLogin(lctx, f.cfg.Sites, site, tl)
}

// selfSignedTLS makes a certificate for clients that ask for TLS (the
// mariadb client then uses caching_sha2_password-free login over it; a
// client that verifies the server needs a configured certificate).
func selfSignedTLS() (*tls.Config, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "hybridcluster mysql front end"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}, nil
}
