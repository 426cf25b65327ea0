package mysql

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	gm "github.com/go-mysql-org/go-mysql/mysql"

	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/host"
	"github.com/hybridcluster/hybridcluster/runtime/storage"
)

// TunnelPath is the internal endpoint (on every node's internal port)
// through which another node's front end reaches a site's server here.
const TunnelPath = host.InternalPrefix + "mysql/connect"

// Tunnel headers.
const (
	headerLogin = "X-Hc-Mysql-Login"
	// headerSite names the site (not host.HeaderSite: the internal port
	// hands every request carrying that one to the HTTP forward path).
	headerSite       = "X-Hc-Mysql-Site"
	tunnelProtocol   = "hc-mysql"
	loginHeaderMax   = 4 << 10
	masterLoginMax   = 2 * time.Minute // a first start creates the data directory
	tunnelHandshake  = 10 * time.Second
	tunnelBufferSize = 16 << 10
)

// loginRetriesMax bounds the logins tried again because the site's server
// died under them (how long a failed login waits to learn that is the
// site supervisor's bound). Past it, the login's error stands.
const loginRetriesMax = 3

// Sites is what the master side needs of the node's site processes
// (runtime/sites.Supervisor).
type Sites interface {
	// DialMySQL connects to a started site's server, starting it if needed.
	DialMySQL(ctx context.Context, site string) (net.Conn, error)
	// SiteSpec is a started site's spec, nil if the site is not started here.
	SiteSpec(site string) *m.SiteSpec
}

// tunnelLogin is what an entry node sends its master with a connection:
// the client's login and where it comes from (for error messages).
type tunnelLogin struct {
	login
	ClientHost string
}

// errNotServed: the site is not served here (not started, or its gate is
// closed); the entry node looks for it elsewhere.
var errNotServed = errors.New("mysql: site not served on this node")

// accessDenied is the server's own answer to a wrong password or an
// unknown user (the two are not told apart).
func accessDenied(user, clientHost string, withPassword bool) *gm.MyError {
	yes := "YES"
	if !withPassword {
		yes = "NO"
	}
	return gm.NewDefaultError(gm.ER_ACCESS_DENIED_ERROR, user, clientHost, yes)
}

// masterLogin checks the client's answer against the site's spec and logs
// in to the site's server. Errors: *gm.MyError (for the client),
// errNotServed, or another failure.
func masterLogin(ctx context.Context, sites Sites, site string, tl tunnelLogin) (*backend, []byte, error) {
	if sites == nil {
		return nil, nil, errNotServed
	}
	spec := sites.SiteSpec(site)
	if spec == nil {
		return nil, nil, errNotServed
	}
	var stage1 []byte
	ok := false
	for _, u := range spec.GetMysqlUsers() {
		if u.GetName() != tl.User {
			continue
		}
		stage2, err := nativeStage2(u.GetPasswordHash())
		if err == nil {
			stage1, ok = recoverStage1(tl.Answer, tl.Salt, stage2)
		}
	}
	if !ok {
		return nil, nil, accessDenied(tl.User, tl.ClientHost, len(tl.Answer) > 0)
	}
	for attempt := 0; ; attempt++ {
		conn, err := sites.DialMySQL(ctx, site)
		if err != nil {
			if sites.SiteSpec(site) == nil {
				return nil, nil, errNotServed
			}
			return nil, nil, err
		}
		if dl, ok := ctx.Deadline(); ok {
			_ = conn.SetDeadline(dl)
		}
		be, okp, err := backendLogin(conn, tl.login, stage1)
		if err != nil {
			conn.Close()
			if attempt < loginRetriesMax && serverDied(ctx, conn, err) {
				continue // the next dial starts the server again
			}
			return nil, nil, err
		}
		_ = conn.SetDeadline(time.Time{})
		return be, okp, nil
	}
}

// serverDied reports whether a login failed on conn because the site's
// server died under it (kill -9, the OOM killer: a connection can land in a
// dying server's backlog): an I/O failure, and the server's exit noticed.
func serverDied(ctx context.Context, conn net.Conn, err error) bool {
	if errors.As(err, new(*gm.MyError)) {
		return false // the server answered
	}
	c, ok := conn.(interface{ ServerExited(context.Context) bool })
	return ok && c.ServerExited(ctx)
}

// tunnelHandler serves TunnelPath on a master: it logs the client in to
// the site's server and then relays, counting each command (and each
// transaction) in with Admit.
func (f *Front) tunnelHandler(w http.ResponseWriter, r *http.Request) {
	site := r.Header.Get(headerSite)
	if _, err := storage.ParseSite(site); err != nil {
		http.Error(w, "bad site name", http.StatusBadRequest)
		return
	}
	raw := r.Header.Get(headerLogin)
	var tl tunnelLogin
	data, err := base64.RawURLEncoding.DecodeString(raw)
	if len(raw) > loginHeaderMax || err != nil || json.Unmarshal(data, &tl) != nil {
		http.Error(w, "bad login", http.StatusBadRequest)
		return
	}
	if f.cfg.Admit == nil {
		w.Header().Set(host.HeaderReason, "not-serving")
		w.WriteHeader(http.StatusMisdirectedRequest)
		return
	}
	release, ok := f.cfg.Admit(r.Context(), site)
	if !ok {
		w.Header().Set(host.HeaderReason, "not-serving")
		w.WriteHeader(http.StatusMisdirectedRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), masterLoginMax)
	be, okp, err := masterLogin(ctx, f.cfg.Sites, site, tl)
	cancel()
	release()
	var myErr *gm.MyError
	switch {
	case errors.Is(err, errNotServed):
		w.Header().Set(host.HeaderReason, "not-serving")
		w.WriteHeader(http.StatusMisdirectedRequest)
		return
	case err != nil && !errors.As(err, &myErr):
		f.log.Warn("mysql login at the master failed", "site", site, "user", tl.User, "err", err)
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "no hijack", http.StatusInternalServerError)
		if be != nil {
			be.conn.Close()
		}
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		if be != nil {
			be.conn.Close()
		}
		return
	}
	defer conn.Close()
	cw := bufio.NewWriterSize(conn, tunnelBufferSize)
	_, _ = cw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + tunnelProtocol + "\r\n\r\n")
	if myErr != nil {
		_ = writePacket(cw, 0, errPayload(myErr))
		_ = cw.Flush()
		return
	}
	defer be.conn.Close()
	if err := writePacket(cw, 0, okp); err != nil {
		return
	}
	rl := &relay{cr: brw.Reader, cw: cw, be: be, admission: f.admission(site)}
	f.useLoops(rl, conn)
	if s, ok := be.conn.(interface{ Stale() bool }); ok {
		rl.stale = s.Stale
	}
	err = rl.run()
	switch {
	case errors.Is(err, errNotAdmitted):
		// The command did not run: the entry node sends it to the new
		// master.
		_ = writePacket(cw, rl.lastSeq+1, errPayload(gm.NewError(codeNotServing, "hc: site not served here")))
		_ = cw.Flush()
	case errors.As(err, new(errServer)):
		// The server's own error as it closed (e.g. a packet over its
		// max_allowed_packet) goes to the entry node as the answer.
		rl.serverLastWord()
	}
}

// dialTunnel opens a tunnel to the site's server on master and logs the
// client in there. Errors: *gm.MyError, errNotServed, or another failure.
func (f *Front) dialTunnel(ctx context.Context, master, site string, tl tunnelLogin) (*backend, []byte, error) {
	base, ok := f.cfg.Internal(master)
	if !ok {
		return nil, nil, errNotServed
	}
	data, err := json.Marshal(tl)
	if err != nil {
		return nil, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+TunnelPath, nil)
	if err != nil {
		return nil, nil, err
	}
	if req.URL.Scheme != "http" {
		return nil, nil, fmt.Errorf("mysql: internal URL %s: only http is supported", base)
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", tunnelProtocol)
	req.Header.Set(host.HeaderToken, f.cfg.Token)
	req.Header.Set(headerSite, site)
	req.Header.Set(headerLogin, base64.RawURLEncoding.EncodeToString(data))
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, tunnelHandshake)
	conn, err := d.DialContext(dctx, "tcp", req.URL.Host)
	cancel()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", errNotServed, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// Until the master's answer to the login is read, nothing has run
	// there: a failure (a master that just died, a reset) is "not
	// served", which the caller retries until the routes name another.
	fail := func(err error) (*backend, []byte, error) {
		conn.Close()
		var myErr *gm.MyError
		if !errors.As(err, &myErr) && !errors.Is(err, errNotServed) {
			err = fmt.Errorf("%w: %v", errNotServed, err)
		}
		return nil, nil, err
	}
	if err := req.Write(conn); err != nil {
		return fail(err)
	}
	br := bufio.NewReaderSize(conn, tunnelBufferSize)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return fail(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		resp.Body.Close()
		if resp.StatusCode == http.StatusMisdirectedRequest {
			return fail(errNotServed)
		}
		return fail(fmt.Errorf("mysql: tunnel to %s: %s", master, resp.Status))
	}
	p, _, err := readPacket(br, nil)
	if err != nil {
		return fail(err)
	}
	if len(p.payload) > 0 && p.payload[0] == 0xff {
		return fail(parseErr(p.payload))
	}
	_ = conn.SetDeadline(time.Time{})
	return &backend{conn: conn, r: br, w: bufio.NewWriterSize(conn, tunnelBufferSize)}, append([]byte(nil), p.payload...), nil
}
