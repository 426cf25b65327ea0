package http

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The forwarding engine: HTTP/1.1 to a backend over persistent connections
// kept per backend address, one request at a time on the calling (handler)
// goroutine. http.Transport costs two goroutines and channel hand-offs per
// connection and request, and httputil.ReverseProxy clones and rewrites the
// request on top; this writes the request line and headers straight into
// the connection's buffer, reads the answer with http.ReadResponse and
// copies the body through a pooled buffer (see `hcbench http` for what it
// buys).

// Bounds of the engine.
const (
	// idleConnsPerBackendMax bounds the idle connections kept per backend
	// address; a connection finished when the pool is full is closed.
	idleConnsPerBackendMax = 256
	// idleConnMax is how long an idle connection is kept; an older one is
	// closed when next taken, and a new one dialled.
	idleConnMax = 60 * time.Second
	// staleProbeAfter: a connection idle longer than this is checked (a
	// non-blocking read) before it is reused, so that a backend that closed
	// it is seen before a request is written into it. Busy connections
	// skip the check.
	staleProbeAfter = time.Second
	// dialWait bounds connecting to a backend; at the bound the forward
	// fails as refused (nothing was sent: it may go elsewhere).
	dialWait = 2 * time.Second
	// connBufferBytes is the size of each backend connection's read and
	// write buffers (headers are usually much smaller).
	connBufferBytes = 8 << 10
	// upgradeIdleMax bounds how long an upgraded (WebSocket) connection
	// may carry nothing in either direction before both sides are closed.
	upgradeIdleMax = 10 * time.Minute
)

// backendConn is one persistent connection to a backend.
type backendConn struct {
	conn   net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	idleAt time.Time
	reused bool
}

// backendPool keeps idle connections to one address, newest first.
type backendPool struct {
	mu   sync.Mutex
	idle []*backendConn
}

// engine forwards requests to backends.
type engine struct {
	mu     sync.Mutex
	pools  map[string]*backendPool
	dialer net.Dialer
}

func newEngine() *engine {
	return &engine{pools: map[string]*backendPool{}, dialer: net.Dialer{Timeout: dialWait, KeepAlive: 30 * time.Second}}
}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, copyBufferBytes); return &b }}

// errDial: the backend could not be reached; nothing was sent.
type errDial struct{ err error }

func (e errDial) Error() string { return "dial: " + e.err.Error() }
func (e errDial) Unwrap() error { return e.err }

// errRefused: the backend refused the request before reading its body
// (refuse hook); nothing reached the client.
var errRefused = errors.New("backend refused the request")

func (e *engine) pool(addr string) *backendPool {
	e.mu.Lock()
	p := e.pools[addr]
	if p == nil {
		p = &backendPool{}
		e.pools[addr] = p
	}
	e.mu.Unlock()
	return p
}

// get returns an idle connection to addr or dials one.
func (e *engine) get(addr string, fresh bool) (*backendConn, error) {
	p := e.pool(addr)
	now := time.Now()
	for !fresh {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			break
		}
		bc := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		idle := now.Sub(bc.idleAt)
		if idle > idleConnMax || (idle > staleProbeAfter && !alive(bc)) {
			bc.conn.Close()
			continue
		}
		bc.reused = true
		return bc, nil
	}
	c, err := e.dialer.Dial("tcp", addr)
	if err != nil {
		return nil, errDial{err}
	}
	return &backendConn{conn: c, br: bufio.NewReaderSize(c, connBufferBytes), bw: bufio.NewWriterSize(c, connBufferBytes)}, nil
}

// alive reports whether an idle connection has neither been closed by its
// backend nor received anything unasked.
func alive(bc *backendConn) bool {
	_ = bc.conn.SetReadDeadline(time.Now().Add(-time.Second))
	_, err := bc.br.Peek(1)
	_ = bc.conn.SetReadDeadline(time.Time{})
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// put keeps a connection for the next request to addr.
func (e *engine) put(addr string, bc *backendConn) {
	p := e.pool(addr)
	bc.idleAt = time.Now()
	p.mu.Lock()
	if len(p.idle) >= idleConnsPerBackendMax {
		p.mu.Unlock()
		bc.conn.Close()
		return
	}
	p.idle = append(p.idle, bc)
	p.mu.Unlock()
}

// closeIdle closes every idle connection (to addr, or all for "").
func (e *engine) closeIdle(addr string) {
	e.mu.Lock()
	var ps []*backendPool
	for a, p := range e.pools {
		if addr == "" || a == addr {
			ps = append(ps, p)
		}
	}
	e.mu.Unlock()
	for _, p := range ps {
		p.mu.Lock()
		idle := p.idle
		p.idle = nil
		p.mu.Unlock()
		for _, bc := range idle {
			bc.conn.Close()
		}
	}
}

// outbound is one request to forward.
type outbound struct {
	in *http.Request
	// body is the client's body (nil: none); it records whether any of it
	// was read.
	body *trackedBody
	// headers are set on the forwarded request on top of the client's
	// (X-Forwarded-*, the internal port's X-Hc-*), as name/value pairs.
	headers []string
	// expectContinue sends a body only once the backend asked for it
	// (100 Continue), or after expectContinueWait: a refusal before that
	// leaves the body with us, so the request may go elsewhere.
	expectContinue bool
	// refuse, if set, is asked about each final response before anything
	// reaches the client; true discards it and forward returns errRefused.
	refuse func(*http.Response) bool
	// upgrade is the protocol the client asks to switch to (Upgrade with
	// Connection: upgrade), or "".
	upgrade string
	// sent, if set, is called once the request's head is on its way to
	// the backend (requests released together keep their arrival order).
	sent func()
}

// forward sends o to addr and copies the answer to w. responded reports
// whether anything was written to w (the client has an answer, complete
// or cut); when it is false the caller decides what to answer, from err
// and from o.body.read.
func (e *engine) forward(w http.ResponseWriter, addr string, o *outbound) (responded bool, err error) {
	for attempt := 0; ; attempt++ {
		bc, err := e.get(addr, attempt > 0)
		if err != nil {
			return false, err
		}
		responded, stale, err := e.exchange(w, bc, o)
		if err == nil {
			e.put(addr, bc)
			return true, nil
		}
		bc.conn.Close()
		if attempt == 0 && (stale == staleUnsent || stale == staleNoAnswer && o.idempotent() && !o.bodySent()) {
			// A kept connection the backend had closed (or was closing):
			// the head did not leave, or (GET, HEAD) nothing came back,
			// so once more on a new connection. A write that may have
			// reached the backend is never sent twice.
			continue
		}
		return responded, err
	}
}

func (o *outbound) bodySent() bool { return o.body != nil && o.body.read }
func (o *outbound) idempotent() bool {
	return o.in.Method == http.MethodGet || o.in.Method == http.MethodHead
}

// How a kept (reused) connection failed, if it did, before any byte of
// an answer came back.
type staleKind int

const (
	notStale      staleKind = iota
	staleUnsent             // writing the head failed: the backend cannot have taken the request
	staleNoAnswer           // the request left, no answer came back
)

func staleIf(reused bool, k staleKind) staleKind {
	if reused {
		return k
	}
	return notStale
}

// exchange runs one request on bc. err == nil means bc may be reused.
func (e *engine) exchange(w http.ResponseWriter, bc *backendConn, o *outbound) (responded bool, stale staleKind, err error) {
	r := o.in
	bw := bc.bw
	writeHead(bw, r, o)
	if err := bw.Flush(); err != nil {
		return false, staleIf(bc.reused, staleUnsent), err
	}
	if o.sent != nil {
		o.sent()
	}
	bodyPending := o.body != nil
	if bodyPending && !o.expectContinue {
		if err := writeBody(bw, r, o.body); err != nil {
			return false, notStale, err
		}
		bodyPending = false
	}
	if bodyPending {
		// Wait (bounded) for 100 Continue or a final answer.
		_ = bc.conn.SetReadDeadline(time.Now().Add(expectContinueWait))
		_, perr := bc.br.Peek(1)
		_ = bc.conn.SetReadDeadline(time.Time{})
		var ne net.Error
		if perr != nil && errors.As(perr, &ne) && ne.Timeout() {
			if err := writeBody(bw, r, o.body); err != nil {
				return false, notStale, err
			}
			bodyPending = false
		} else if perr != nil {
			return false, staleIf(bc.reused, staleNoAnswer), perr
		}
	}
	if !bodyPending && o.upgrade == "" && r.Method != http.MethodHead {
		// The common answer takes the fast path (fastpath.go); the
		// others, and heads that did not arrive whole, the loop below.
		if _, err := bc.br.Peek(1); err != nil {
			return false, staleIf(bc.reused, staleNoAnswer), err
		}
		if fh, ok := parseFastHead(bc.br, o.refuse != nil); ok {
			bc.reused = false
			responded, err := writeFast(w, bc, fh)
			return responded, notStale, err
		}
	}
	for {
		resp, err := http.ReadResponse(bc.br, r)
		if err != nil {
			return false, staleIf(bc.reused, staleNoAnswer), err
		}
		bc.reused = false
		if resp.StatusCode == http.StatusContinue {
			if bodyPending {
				if err := writeBody(bw, r, o.body); err != nil {
					return false, notStale, err
				}
				bodyPending = false
			}
			continue
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			if o.upgrade == "" || bodyPending {
				return false, notStale, errors.New("backend switched protocols unasked")
			}
			if err := e.switchProtocols(w, bc, resp); err != nil {
				return true, notStale, err
			}
			return true, notStale, errConnDone // the connection was the tunnel
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 {
			continue // other interim answers (103) are not passed on
		}
		if o.refuse != nil && o.refuse(resp) {
			// Refusals are rare: the connection is not kept (the backend
			// may still expect the body we will not send).
			resp.Body.Close()
			return false, notStale, errRefused
		}
		if bodyPending {
			// A final answer before the body was asked for: the body is
			// not sent, so this connection cannot carry another request.
			resp.Close = true
		}
		err = copyResponse(w, resp)
		resp.Body.Close()
		if err != nil {
			return true, notStale, err
		}
		if resp.Close || bodyPending {
			return true, notStale, errConnDone
		}
		return true, notStale, nil
	}
}

// errConnDone: the exchange finished but the connection must not be kept.
var errConnDone = errors.New("connection not reusable")

// hopHeader reports whether a header field is hop-by-hop (RFC 9110 section
// 7.6.1), never forwarded.
func hopHeader(name string) bool {
	switch name {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// connectionListed reports whether name is listed in a Connection field
// (those are hop-by-hop too).
func connectionListed(conn []string, name string) bool {
	for _, f := range conn {
		for f != "" {
			var item string
			item, f, _ = strings.Cut(f, ",")
			if strings.EqualFold(textprotoTrim(item), name) {
				return true
			}
		}
	}
	return false
}

func textprotoTrim(s string) string { return strings.TrimSpace(s) }

// writeHead writes the request line and headers into bw.
func writeHead(bw *bufio.Writer, r *http.Request, o *outbound) {
	bw.WriteString(r.Method)
	bw.WriteByte(' ')
	bw.WriteString(requestTarget(r))
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(r.Host)
	bw.WriteString("\r\n")
	conn := r.Header["Connection"]
	for name, values := range r.Header {
		if hopHeader(name) || skipHeader(name, o.headers) || (len(conn) > 0 && connectionListed(conn, name)) {
			continue
		}
		for _, v := range values {
			bw.WriteString(name)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	for i := 0; i+1 < len(o.headers); i += 2 {
		bw.WriteString(o.headers[i])
		bw.WriteString(": ")
		bw.WriteString(o.headers[i+1])
		bw.WriteString("\r\n")
	}
	if o.body != nil {
		if r.ContentLength > 0 {
			bw.WriteString("Content-Length: ")
			bw.WriteString(strconv.FormatInt(r.ContentLength, 10))
			bw.WriteString("\r\n")
		} else {
			bw.WriteString("Transfer-Encoding: chunked\r\n")
		}
		if o.expectContinue {
			bw.WriteString("Expect: 100-continue\r\n")
		}
	} else if r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch {
		bw.WriteString("Content-Length: 0\r\n")
	}
	if o.upgrade != "" {
		bw.WriteString("Connection: Upgrade\r\nUpgrade: ")
		bw.WriteString(o.upgrade)
		bw.WriteString("\r\n")
	}
	bw.WriteString("\r\n")
}

// requestTarget is the target to send on: the client's own when it is an
// origin-form path that still matches r.URL (no allocation), else the one
// r.URL gives (a rewritten URL, an escaped or absolute target).
func requestTarget(r *http.Request) string {
	uri, u := r.RequestURI, r.URL
	if len(uri) > 0 && uri[0] == '/' && u.RawPath == "" && u.Opaque == "" {
		path, query, hasQuery := cutByte(uri, '?')
		if path == u.Path && query == u.RawQuery && hasQuery == (u.ForceQuery || u.RawQuery != "") {
			return uri
		}
	}
	return u.RequestURI()
}

// skipHeader: the client's field is replaced by one of ours, or is one we
// set ourselves (Expect, Content-Length).
func skipHeader(name string, ours []string) bool {
	switch name {
	case "Expect", "Content-Length", "Host":
		return true
	}
	for i := 0; i < len(ours); i += 2 {
		if ours[i] == name {
			return true
		}
	}
	return false
}

// writeBody sends the client's body: exactly ContentLength bytes, or
// chunked when the length is unknown.
func writeBody(bw *bufio.Writer, r *http.Request, body *trackedBody) error {
	bufp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bufp)
	if r.ContentLength > 0 {
		n, err := io.CopyBuffer(bw, io.LimitReader(body, r.ContentLength), *bufp)
		if err == nil && n < r.ContentLength {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return err
		}
		return bw.Flush()
	}
	cw := httputil.NewChunkedWriter(bw)
	if _, err := io.CopyBuffer(cw, body, *bufp); err != nil {
		return err
	}
	if err := cw.Close(); err != nil {
		return err
	}
	if _, err := bw.WriteString("\r\n"); err != nil {
		return err
	}
	return bw.Flush()
}

// copyResponse writes resp's status, end-to-end headers and body to w,
// flushing whenever the backend pauses (streaming answers reach the client
// as they come).
func copyResponse(w http.ResponseWriter, resp *http.Response) error {
	h := w.Header()
	conn := resp.Header["Connection"]
	for name, values := range resp.Header {
		if hopHeader(name) || (len(conn) > 0 && connectionListed(conn, name)) {
			continue
		}
		h[name] = values
	}
	if len(resp.Trailer) > 0 {
		names := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			names = append(names, k)
		}
		h["Trailer"] = []string{strings.Join(names, ", ")}
	}
	if resp.ContentLength >= 0 && h.Get("Content-Length") == "" && resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusNotModified {
		h["Content-Length"] = []string{strconv.FormatInt(resp.ContentLength, 10)}
	}
	w.WriteHeader(resp.StatusCode)
	bufp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bufp)
	buf := *bufp
	var flusher http.Flusher
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			if err == nil && n < len(buf) {
				if flusher == nil {
					flusher, _ = w.(http.Flusher)
				}
				if flusher != nil {
					flusher.Flush()
				}
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	for k, vs := range resp.Trailer {
		h[http.TrailerPrefix+k] = vs
	}
	return nil
}

// switchProtocols finishes an Upgrade (WebSocket): the client connection
// is taken from the server, the 101 answer passed on, and bytes copied both
// ways until either side closes or both stay silent for upgradeIdleMax.
func (e *engine) switchProtocols(w http.ResponseWriter, bc *backendConn, resp *http.Response) error {
	defer bc.conn.Close()
	client, crw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return err
	}
	defer client.Close()
	crw.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	for name, values := range resp.Header {
		if name == "Connection" || name == "Upgrade" || (!hopHeader(name) && !connectionListed(resp.Header["Connection"], name)) {
			for _, v := range values {
				crw.WriteString(name + ": " + v + "\r\n")
			}
		}
	}
	crw.WriteString("\r\n")
	if err := crw.Flush(); err != nil {
		return err
	}
	done := make(chan struct{}, 2)
	pipe := func(dst net.Conn, src io.Reader, srcConn net.Conn) {
		bufp := copyBuffers.Get().(*[]byte)
		defer copyBuffers.Put(bufp)
		for {
			_ = srcConn.SetReadDeadline(time.Now().Add(upgradeIdleMax))
			n, err := src.Read(*bufp)
			if n > 0 {
				if _, werr := dst.Write((*bufp)[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		done <- struct{}{}
	}
	go pipe(bc.conn, crw.Reader, client)
	go pipe(client, bc.br, bc.conn)
	// When either side ends, the other is ended too (the deferred closes
	// wake the second copy).
	<-done
	client.Close()
	bc.conn.Close()
	<-done
	return nil
}
