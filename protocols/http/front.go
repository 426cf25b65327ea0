// Package http is the HTTP front end every node runs: it routes a request
// by its Host header to a site, and forwards it to the site's master over
// the master's internal port. The hot path reads the node's route mirror
// (runtime/host.Route); only a site that is not serving (moving, failing
// over) or a forward refused by the master goes through the actors, whose
// site actor holds the request until the site serves again.
package http

import (
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/host"
)

// Bounds.
const (
	// forwardAttemptsMax bounds how often one request is sent towards a
	// master: a first forward from the route mirror and, when the master
	// refuses it (421: not serving) or cannot be reached before the body
	// was sent, further ones after asking the actors. At the bound the
	// client gets 503 with Retry-After.
	forwardAttemptsMax = 4
	// retryAfterS is the Retry-After of 503 answers that carry no better
	// figure from the actors.
	retryAfterS = 1
	// copyBufferBytes is the buffer of response body copies; the response
	// is flushed whenever the backend pauses (a read shorter than this).
	copyBufferBytes = 32 << 10
	// expectContinueWait bounds how long a forward with a body waits for
	// the master's 100 Continue before sending the body anyway.
	expectContinueWait = 2 * time.Second
)

// Cluster is what the front end needs of the node (runtime/host.Host).
type Cluster interface {
	Node() string
	RouteByDomain(domain string) (host.Route, bool)
	Live(node string) bool
	Request(ctx context.Context, req *m.SiteRequest) (*m.SiteResponse, error)
}

// Config configures a Front.
type Config struct {
	Cluster Cluster
	// Internal returns the base URL of a member's internal port
	// (e.g. "http://127.0.0.2:7947").
	Internal func(node string) (string, bool)
	// Token is the cluster's node secret, sent to the internal port.
	Token string
	// Transport carries forwards; nil means a tuned http.Transport.
	Transport http.RoundTripper
	// Local serves a request of a site whose master is this node in
	// process, without the internal port: it returns false, having read
	// nothing of the request, when this node does not serve the site now
	// (the request then goes through the actors). counted: the actors
	// counted the request as load already. nil: local requests go through
	// the internal port like the others.
	Local func(w http.ResponseWriter, r *http.Request, site string, counted bool) bool
	// SiteSpec fetches a site's spec from node (its master), for the
	// certificate of an HTTPS handshake; nil: no HTTPS (TLSConfig fails).
	SiteSpec func(ctx context.Context, site, node string) (*m.SiteSpec, error)
	// TLS makes X-Forwarded-Proto https for every request (a listener
	// behind a TLS terminator); requests on a TLS listener are https anyway.
	TLS    bool
	Logger *slog.Logger
}

// Front is the HTTP front end.
type Front struct {
	cfg     Config
	rt      http.RoundTripper
	log     *slog.Logger
	engine  *engine
	metrics *metrics
	order   orderQueues
	// internalAddrs caches host:port of members' plain-HTTP internal URLs.
	internalMu    sync.RWMutex
	internalAddrs map[string]string
	certs         certCache
}

// New returns a front end.
func New(cfg Config) (*Front, error) {
	if cfg.Cluster == nil || cfg.Internal == nil || cfg.Token == "" {
		return nil, errors.New("http front: cluster, internal addresses and token are required")
	}
	rt := cfg.Transport
	if rt == nil {
		rt = &http.Transport{
			Proxy:                 nil,
			DialContext:           (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:          1024,
			MaxIdleConnsPerHost:   256,
			IdleConnTimeout:       90 * time.Second,
			ExpectContinueTimeout: expectContinueWait,
			ResponseHeaderTimeout: 0, // an app may take its time; the client decides
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Front{cfg: cfg, rt: rt, log: log, engine: newEngine(), metrics: newMetrics(),
		order: orderQueues{tail: map[string]*orderTicket{}}, internalAddrs: map[string]string{},
		certs: certCache{sites: map[string]*certEntry{}}}, nil
}

// Metrics serves the front end's per-site figures in the Prometheus text
// format.
func (f *Front) Metrics() http.Handler { return f.metrics }

// hopHeaders are the hop-by-hop fields of RFC 9110 section 7.6.1, never
// forwarded.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func removeHop(h http.Header) {
	for _, f := range h.Values("Connection") {
		for _, name := range strings.Split(f, ",") {
			if name = textproto.TrimString(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
}

// Domain returns the lower-cased host of a Host header, without port.
func Domain(hostport string) string {
	h := hostport
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.HasSuffix(h, "]") {
		if host, _, err := net.SplitHostPort(hostport); err == nil {
			h = host
		}
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; c >= 'A' && c <= 'Z' {
			h = strings.ToLower(h)
			break
		}
	}
	return strings.TrimSuffix(h, ".")
}

// trackedBody records whether the forward read any of the client's body:
// after that the request cannot be sent anywhere else.
type trackedBody struct {
	io.ReadCloser
	read bool
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.read = true
	}
	return n, err
}

// Close is left to the server (the client's body belongs to it); the
// transport closing it must not end a request we may retry.
func (b *trackedBody) Close() error { return nil }

// upgradeOf returns the protocol a request asks to switch to (WebSocket),
// or "".
func upgradeOf(r *http.Request) string {
	up := r.Header.Get("Upgrade")
	if up == "" || !connectionListed(r.Header["Connection"], "upgrade") {
		return ""
	}
	return up
}

func (f *Front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	domain := Domain(r.Host)
	route, ok := f.cfg.Cluster.RouteByDomain(domain)
	if !ok {
		f.metrics.unknownHost.Add(1)
		notFound(w, domain)
		return
	}
	sm := f.metrics.site(route.Site)
	sm.requests.Add(1)
	sw := statusWriters.Get().(*statusWriter)
	sw.ResponseWriter, sw.code = w, 0
	defer func() {
		code := sw.code
		if code == 0 {
			code = 499 // the client went away before an answer
		}
		sm.status(code)
		sw.ResponseWriter = nil
		statusWriters.Put(sw)
	}()
	f.serve(sw, r, route, domain, sm)
}

func (f *Front) serve(w http.ResponseWriter, r *http.Request, route host.Route, domain string, sm *siteMetrics) {
	// Client-supplied internal headers never reach a master.
	h := r.Header
	if h[host.HeaderSite] != nil || h[host.HeaderToken] != nil || h[host.HeaderCounted] != nil {
		h.Del(host.HeaderSite)
		h.Del(host.HeaderToken)
		h.Del(host.HeaderCounted)
	}
	idempotent := r.Method == http.MethodGet || r.Method == http.MethodHead
	var body *trackedBody
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		body = &trackedBody{ReadCloser: r.Body}
	}
	self := f.cfg.Cluster.Node()
	target := ""
	if route.Serving() && (route.Master == self || f.cfg.Cluster.Live(route.Master)) {
		target = route.Master
	}
	// The forwarding headers, once.
	xff := ""
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		xff = ip
		if prior := h["X-Forwarded-For"]; len(prior) > 0 {
			xff = strings.Join(prior, ", ") + ", " + ip
		}
	}
	proto := "http"
	if f.cfg.TLS || r.TLS != nil {
		proto = "https"
	}
	o := outbound{in: r, body: body, upgrade: upgradeOf(r), refuse: refusedByMaster}
	var ticket *orderTicket
	defer func() { ticket.dispatched() }()
	counted, died, localHeaders := false, false, false
	arrived := time.Now()
	for attempt := 1; attempt <= forwardAttemptsMax; attempt++ {
		if target == "" {
			// Ask the actors: the site actor holds the request while the
			// site moves or recovers, and answers with its master.
			if ticket == nil {
				ticket = f.order.enter(route.Site)
			}
			start := time.Now()
			sm.heldNow.Add(1)
			// A client that goes away while held frees its place.
			ctx, stopWatch := r.Context(), func() {}
			if cw, ok := unwrapClientWatcher(w); ok {
				ctx, stopWatch = cw.watchClient(ctx)
			}
			resp, err := f.cfg.Cluster.Request(ctx, &m.SiteRequest{Site: route.Site, EntryNode: self,
				BodyBytes: uint64(max(r.ContentLength, 0)), Write: !idempotent, Idempotent: idempotent,
				ArrivedMs: arrived.UnixMilli(), Attempt: uint32(attempt)})
			stopWatch()
			sm.heldNow.Add(-1)
			sm.hold(time.Since(start))
			if err != nil {
				if ctx.Err() != nil {
					return // the client went away
				}
				unavailable(w, retryAfterS, "the cluster is too busy to route this request")
				return
			}
			switch resp.Code {
			case m.Code_CODE_OK:
				target = resp.Master
				// The site actor that admitted it counted it as load.
				counted = true
				ticket.wait()
			case m.Code_CODE_UNKNOWN_SITE:
				notFound(w, domain)
				return
			default:
				unavailable(w, int(max(resp.RetryAfterS, retryAfterS)), "site "+route.Site+" is not available right now ("+strings.ToLower(strings.TrimPrefix(resp.Code.String(), "CODE_"))+")")
				return
			}
		}
		if target == self && f.cfg.Local != nil {
			if !localHeaders {
				localHeaders = true
				if xff != "" {
					h["X-Forwarded-For"] = []string{xff}
				}
				h["X-Forwarded-Proto"] = []string{proto}
				h["X-Forwarded-Host"] = []string{r.Host}
			}
			ticket.dispatched()
			if f.cfg.Local(w, r, route.Site, counted) {
				return
			}
			target = "" // not served here (any more): ask the actors
			continue
		}
		var done, retry, fatal bool
		if addr, ok := f.internalAddr(target); ok {
			o.headers = o.headers[:0]
			if xff != "" {
				o.headers = append(o.headers, "X-Forwarded-For", xff)
			}
			o.headers = append(o.headers, "X-Forwarded-Proto", proto, "X-Forwarded-Host", r.Host,
				host.HeaderSite, route.Site, host.HeaderToken, f.cfg.Token)
			if counted {
				o.headers = append(o.headers, host.HeaderCounted, "1")
			}
			o.expectContinue = body != nil
			if ticket != nil {
				o.sent = ticket.dispatched
			}
			done, retry, fatal = f.forwardEngine(w, r, route.Site, target, addr, &o, idempotent)
		} else {
			done, retry = f.forward(w, r, route.Site, target, body, idempotent)
		}
		if done {
			return
		}
		if fatal {
			// The master died with the request before answering: an
			// idempotent request goes once more to the new master, never
			// more, never a write.
			if died || !idempotent || o.bodySent() {
				badGateway(w, "the site's master failed during the request")
				return
			}
			died = true
		} else if !retry {
			break
		}
		target = ""
	}
	unavailable(w, retryAfterS, "site "+route.Site+" could not be reached")
}

// refusedByMaster: the internal port refused the request before reading
// its body (the master stopped serving the site: a pause, a demotion).
func refusedByMaster(resp *http.Response) bool {
	return resp.StatusCode == http.StatusMisdirectedRequest && resp.Header.Get(host.HeaderReason) != ""
}

// internalAddr is host:port of a member's internal port when it speaks
// plain HTTP (the engine's case); false sends forwards through Transport.
func (f *Front) internalAddr(node string) (string, bool) {
	f.internalMu.RLock()
	addr, ok := f.internalAddrs[node]
	f.internalMu.RUnlock()
	if ok {
		return addr, addr != ""
	}
	base, ok := f.cfg.Internal(node)
	if !ok {
		return "", false
	}
	addr = ""
	if u, err := url.Parse(base); err == nil && u.Scheme == "http" && u.Host != "" && (u.Path == "" || u.Path == "/") {
		addr = u.Host
		if u.Port() == "" {
			addr = net.JoinHostPort(u.Hostname(), "80")
		}
	}
	f.internalMu.Lock()
	f.internalAddrs[node] = addr
	f.internalMu.Unlock()
	return addr, addr != ""
}

// forwardEngine sends the request to a master's internal port over a kept
// connection. done: an answer went to the client (or it went away).
// retry: nothing reached the master's site and the request may go
// elsewhere. fatal: the master failed after the request reached it and
// before any answer (only an idempotent request may go once more).
func (f *Front) forwardEngine(w http.ResponseWriter, r *http.Request, site, master, addr string, o *outbound, idempotent bool) (done, retry, fatal bool) {
	responded, err := f.engine.forward(w, addr, o)
	if err == nil {
		return true, false, false
	}
	if responded {
		// Cut in the middle of the answer: the client must see a broken
		// response, not a short one that looks complete.
		f.log.Debug("forward cut mid-response", "site", site, "master", master, "err", err)
		if r.Context().Err() == nil && !errors.Is(err, errConnDone) {
			panic(http.ErrAbortHandler)
		}
		return true, false, false
	}
	if r.Context().Err() != nil {
		return true, false, false
	}
	var dial errDial
	switch {
	case errors.As(err, &dial):
		return false, true, false // never reached the master
	case errors.Is(err, errRefused):
		if o.bodySent() {
			badGateway(w, "the site moved during the request")
			return true, false, false
		}
		return false, true, false
	}
	f.log.Debug("forward failed", "site", site, "master", master, "err", err, "body_sent", o.bodySent())
	return false, false, true
}

func badGateway(w http.ResponseWriter, why string) {
	http.Error(w, "bad gateway: "+why, http.StatusBadGateway)
}

// forward sends r to the master's internal port. done: an answer went to
// the client (or it went away). retry: nothing reached the client and the
// request may go elsewhere.
func (f *Front) forward(w http.ResponseWriter, r *http.Request, site, master string, body *trackedBody, idempotent bool) (done, retry bool) {
	base, ok := f.cfg.Internal(master)
	if !ok {
		return false, true
	}
	out := r.Clone(r.Context())
	out.RequestURI = ""
	u, err := out.URL.Parse(base + r.URL.RequestURI())
	if err != nil {
		http.Error(w, "bad request URI", http.StatusBadRequest)
		return true, false
	}
	out.URL = u
	out.Host = r.Host
	out.Close = false
	if body != nil {
		out.Body = body
		out.ContentLength = r.ContentLength
		out.Header.Set("Expect", "100-continue")
	} else {
		out.Body = nil
		out.ContentLength = 0
	}
	removeHop(out.Header)
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if prior := out.Header.Values("X-Forwarded-For"); len(prior) > 0 {
			ip = strings.Join(prior, ", ") + ", " + ip
		}
		out.Header.Set("X-Forwarded-For", ip)
	}
	proto := "http"
	if f.cfg.TLS {
		proto = "https"
	}
	out.Header.Set("X-Forwarded-Proto", proto)
	out.Header.Set("X-Forwarded-Host", r.Host)
	out.Header.Set(host.HeaderSite, site)
	out.Header.Set(host.HeaderToken, f.cfg.Token)
	resp, err := f.rt.RoundTrip(out)
	if err != nil {
		if r.Context().Err() != nil {
			return true, false
		}
		sent := body != nil && body.read
		// A refused connection never reached the master: any request may
		// go elsewhere. Otherwise only an idempotent one whose body (if
		// any) was not sent.
		var op *net.OpError
		refused := errors.As(err, &op) && op.Op == "dial"
		f.log.Debug("forward failed", "site", site, "master", master, "err", err, "body_sent", sent, "refused", refused)
		if refused || (!sent && idempotent) {
			return false, true
		}
		http.Error(w, "bad gateway: the site's master failed during the request", http.StatusBadGateway)
		return true, false
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusMisdirectedRequest && resp.Header.Get(host.HeaderReason) != "" {
		// The master stopped serving (a pause, a demotion) before it read
		// anything: ask the actors where to go.
		if body == nil || !body.read {
			return false, true
		}
		http.Error(w, "bad gateway: the site moved during the request", http.StatusBadGateway)
		return true, false
	}
	removeHop(resp.Header)
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	copyFlushing(w, resp.Body)
	return true, false
}

// copyFlushing streams a response, flushing whenever the backend pauses.
func copyFlushing(w http.ResponseWriter, src io.Reader) {
	rc := http.NewResponseController(w)
	buf := make([]byte, copyBufferBytes)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if n < len(buf) {
				_ = rc.Flush()
			}
		}
		if err != nil {
			return
		}
	}
}

func notFound(w http.ResponseWriter, domain string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(http.StatusNotFound)
	fmt.Fprintf(w, "<!doctype html><title>No such site</title><h1>No site here</h1><p>This cluster hosts no site for <code>%s</code>.</p>\n", html.EscapeString(domain))
}

func unavailable(w http.ResponseWriter, retryAfter int, why string) {
	w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusServiceUnavailable)
	fmt.Fprintln(w, why)
}
