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
	"strconv"
	"strings"
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
	// TLS reports whether this listener is HTTPS (X-Forwarded-Proto).
	TLS    bool
	Logger *slog.Logger
}

// Front is the HTTP front end.
type Front struct {
	cfg Config
	rt  http.RoundTripper
	log *slog.Logger
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
	return &Front{cfg: cfg, rt: rt, log: log}, nil
}

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
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		h = host
	}
	return strings.TrimSuffix(strings.ToLower(h), ".")
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

func (f *Front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	domain := Domain(r.Host)
	route, ok := f.cfg.Cluster.RouteByDomain(domain)
	if !ok {
		notFound(w, domain)
		return
	}
	// Client-supplied internal headers never reach a master.
	r.Header.Del(host.HeaderSite)
	r.Header.Del(host.HeaderToken)
	r.Header.Del(host.HeaderCounted)
	idempotent := r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == http.MethodOptions
	hasBody := r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
	body := &trackedBody{ReadCloser: r.Body}
	if !hasBody {
		body = nil
	}
	arrived := time.Now()
	target := ""
	if route.Serving() && (route.Master == f.cfg.Cluster.Node() || f.cfg.Cluster.Live(route.Master)) {
		target = route.Master
	}
	for attempt := 1; attempt <= forwardAttemptsMax; attempt++ {
		if target == "" {
			// Ask the actors: the site actor holds the request while the
			// site moves or recovers, and answers with its master.
			resp, err := f.cfg.Cluster.Request(r.Context(), &m.SiteRequest{Site: route.Site, EntryNode: f.cfg.Cluster.Node(),
				BodyBytes: uint64(max(r.ContentLength, 0)), Write: !idempotent, Idempotent: idempotent,
				ArrivedMs: arrived.UnixMilli(), Attempt: uint32(attempt)})
			if err != nil {
				if r.Context().Err() != nil {
					return // the client went away
				}
				unavailable(w, retryAfterS, "the cluster is too busy to route this request")
				return
			}
			switch resp.Code {
			case m.Code_CODE_OK:
				target = resp.Master
				// The site actor that admitted it counted it as load.
				r.Header.Set(host.HeaderCounted, "1")
			case m.Code_CODE_UNKNOWN_SITE:
				notFound(w, domain)
				return
			default:
				unavailable(w, int(max(resp.RetryAfterS, retryAfterS)), "site "+route.Site+" is not available right now ("+strings.ToLower(strings.TrimPrefix(resp.Code.String(), "CODE_"))+")")
				return
			}
		}
		done, retry := f.forward(w, r, route.Site, target, body, idempotent)
		if done {
			return
		}
		if !retry {
			break
		}
		target = ""
	}
	unavailable(w, retryAfterS, "site "+route.Site+" could not be reached")
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
