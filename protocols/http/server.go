package http

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The front end's own HTTP/1.1 connection loop. net/http.Server costs, per
// request, a goroutine that watches the connection for the client going
// away, two deadline changes and a fresh response structure; a reverse
// proxy whose answer comes from elsewhere needs none of that, and the
// profile of `hcbench http` showed it as a large part of the front's cost.
// Each connection here is one goroutine reading requests with
// http.ReadRequest and answering through a reused ResponseWriter; Upgrade
// hijacks the connection as with net/http.

// Bounds of the connection loop.
const (
	// headerWait bounds how long a client may take to send a request's
	// head once the connection is idle or opened (slowloris); at the bound
	// the connection is closed.
	headerWait = 10 * time.Second
	// idleWait bounds how long a kept-alive connection may stay idle.
	idleWait = 2 * time.Minute
	// headerBytesMax bounds a request's head; beyond it the client gets
	// 431 and the connection is closed.
	headerBytesMax = 64 << 10
	// drainBytesMax bounds the rest of a request body read and discarded
	// after its answer so that the connection can be kept; a longer rest
	// closes the connection instead.
	drainBytesMax = 256 << 10
	// clientBufferBytes is the size of each client connection's read and
	// write buffers.
	clientBufferBytes = 8 << 10
)

// Server serves a Front on listeners with the connection loop.
type Server struct {
	Front *Front
	// TLS, if set, makes every listener HTTPS with this configuration.
	TLS *tls.Config
	Log *slog.Logger

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*clientConn]struct{}
	closing   bool
	// closed mirrors closing for the connection loop, which checks it
	// before each request without taking mu.
	closed atomic.Bool
	wg     sync.WaitGroup
}

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("http front: server closed")

// Serve accepts connections on lis until it fails or the server is shut
// down.
func (s *Server) Serve(lis net.Listener) error {
	if s.TLS != nil {
		lis = tls.NewListener(lis, s.TLS)
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		lis.Close()
		return ErrServerClosed
	}
	if s.listeners == nil {
		s.listeners, s.conns = map[net.Listener]struct{}{}, map[*clientConn]struct{}{}
	}
	s.listeners[lis] = struct{}{}
	s.mu.Unlock()
	var backoff time.Duration
	for {
		c, err := lis.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of descriptors or a transient error: wait a little
				// (bounded, as net/http does) rather than spin.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		cc := &clientConn{srv: s, conn: c}
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			c.Close()
			return ErrServerClosed
		}
		s.conns[cc] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go cc.serve()
	}
}

// Shutdown stops accepting, closes idle connections, and waits (until ctx
// ends) for the others to finish their request; then it closes them.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	s.closed.Store(true)
	for l := range s.listeners {
		l.Close()
	}
	s.mu.Unlock()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		s.mu.Lock()
		for c := range s.conns {
			if c.idle() {
				c.conn.Close()
			}
		}
		n := len(s.conns)
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			s.Close()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Close closes every listener and connection at once.
func (s *Server) Close() {
	s.mu.Lock()
	s.closing = true
	s.closed.Store(true)
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.conn.Close()
	}
	s.mu.Unlock()
}

// limitedConn is what the connection's bufio.Reader reads from: the head
// of a request may not exceed its remaining budget.
type limitedConn struct {
	conn   net.Conn
	remain int64
}

func (l *limitedConn) Read(p []byte) (int, error) {
	if l.remain <= 0 {
		return 0, errHeadTooLarge
	}
	if int64(len(p)) > l.remain {
		p = p[:l.remain]
	}
	n, err := l.conn.Read(p)
	l.remain -= int64(n)
	return n, err
}

var errHeadTooLarge = errors.New("request head too large")

type clientConn struct {
	srv      *Server
	conn     net.Conn
	lr       limitedConn
	br       *bufio.Reader
	bw       *bufio.Writer
	remote   string
	tlsState *tls.ConnectionState
	waiting  atomic.Bool // between requests: may be closed by Shutdown
	hijacked bool
	w        respWriter
	// reqHeader is the header map of requests read by the fast path,
	// reused request after request.
	reqHeader http.Header
}

func (c *clientConn) idle() bool { return c.waiting.Load() }

var (
	clientReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, clientBufferBytes) }}
	clientWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, clientBufferBytes) }}
)

func (c *clientConn) serve() {
	s := c.srv
	defer func() {
		if p := recover(); p != nil && p != http.ErrAbortHandler {
			if s.Log != nil {
				s.Log.Error("http front: panic serving a connection", "remote", c.remote, "panic", fmt.Sprint(p))
			}
		}
		if !c.hijacked {
			c.conn.Close()
			if c.br != nil {
				c.br.Reset(nil)
				clientReaders.Put(c.br)
				c.bw.Reset(nil)
				clientWriters.Put(c.bw)
			}
		}
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.wg.Done()
	}()
	c.remote = c.conn.RemoteAddr().String()
	if tc, ok := c.conn.(*tls.Conn); ok {
		_ = tc.SetDeadline(time.Now().Add(headerWait))
		if err := tc.HandshakeContext(context.Background()); err != nil {
			return
		}
		_ = tc.SetDeadline(time.Time{})
		st := tc.ConnectionState()
		c.tlsState = &st
	}
	c.lr.conn = c.conn
	c.br = clientReaders.Get().(*bufio.Reader)
	c.br.Reset(&c.lr)
	c.bw = clientWriters.Get().(*bufio.Writer)
	c.bw.Reset(c.conn)
	c.w.c = c
	c.w.header = http.Header{}
	c.reqHeader = http.Header{}
	first := true
	for {
		c.waiting.Store(true)
		wait := idleWait
		if first {
			wait = headerWait
		}
		first = false
		c.lr.remain = headerBytesMax + int64(c.br.Buffered())
		if c.br.Buffered() == 0 {
			_ = c.conn.SetReadDeadline(time.Now().Add(wait))
			if _, err := c.br.Peek(1); err != nil {
				return
			}
		}
		c.waiting.Store(false)
		if s.closed.Load() {
			return
		}
		_ = c.conn.SetReadDeadline(time.Now().Add(headerWait))
		req, fast := readFastRequest(c.br, c.reqHeader)
		var err error
		if !fast {
			req, err = http.ReadRequest(c.br)
		}
		if err != nil {
			if errors.Is(err, errHeadTooLarge) {
				io.WriteString(c.conn, "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 26\r\n\r\nrequest head is too large\n")
			} else if !errors.Is(err, io.EOF) {
				io.WriteString(c.conn, "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 12\r\n\r\nbad request\n")
			}
			return
		}
		c.lr.remain = 1<<63 - 1
		if req.Body != http.NoBody {
			// The handler reads the body without a deadline (a request
			// without one leaves the head's deadline in place: the next
			// request's wait sets its own, a held request or an upgrade
			// sets or clears it itself).
			_ = c.conn.SetReadDeadline(time.Time{})
		}
		if why := badRequest(req); why != "" {
			io.WriteString(c.conn, "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: "+
				strconv.Itoa(len(why)+1)+"\r\n\r\n"+why+"\n")
			return
		}
		delete(req.Header, "Host")
		if !c.serveOne(req) {
			return
		}
	}
}

// serveOne answers one request; false closes the connection.
func (c *clientConn) serveOne(req *http.Request) (keep bool) {
	req.RemoteAddr = c.remote
	req.TLS = c.tlsState
	keep = !req.Close && (req.ProtoAtLeast(1, 1) || strings.EqualFold(req.Header.Get("Connection"), "keep-alive"))
	if req.ProtoMajor != 1 {
		keep = false
	}
	body := req.Body
	if req.Header.Get("Expect") != "" {
		if !strings.EqualFold(req.Header.Get("Expect"), "100-continue") || !req.ProtoAtLeast(1, 1) {
			io.WriteString(c.conn, "HTTP/1.1 417 Expectation Failed\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
			return false
		}
		req.Body = &continueBody{ReadCloser: body, c: c}
	}
	w := &c.w
	w.reset(req, keep)
	aborted := func() (aborted bool) {
		defer func() {
			if p := recover(); p != nil {
				if p != http.ErrAbortHandler && c.srv.Log != nil {
					c.srv.Log.Error("http front: panic serving a request", "remote", c.remote, "panic", fmt.Sprint(p))
				}
				aborted = true
			}
		}()
		c.srv.Front.ServeHTTP(w, req)
		return false
	}()
	if c.hijacked || aborted {
		return false
	}
	if err := w.finish(); err != nil {
		return false
	}
	if !w.keep {
		return false
	}
	// The rest of the body (an answer may come before it was all read).
	if body != nil && body != http.NoBody {
		n, _ := io.CopyN(io.Discard, body, drainBytesMax+1)
		if n > drainBytesMax {
			return false
		}
		body.Close()
	}
	return true
}

// continueBody sends 100 Continue before the first read of a body the
// client holds back until asked (Expect: 100-continue).
type continueBody struct {
	io.ReadCloser
	c    *clientConn
	sent bool
}

func (b *continueBody) Read(p []byte) (int, error) {
	if !b.sent {
		b.sent = true
		if !b.c.w.wroteHeader {
			b.c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
			if err := b.c.bw.Flush(); err != nil {
				return 0, err
			}
		}
	}
	return b.ReadCloser.Read(p)
}

// respWriter is the ResponseWriter of one connection, reused for each of
// its requests.
type respWriter struct {
	c           *clientConn
	req         *http.Request
	header      http.Header
	status      int
	wroteHeader bool
	chunked     bool
	noBody      bool
	keep        bool
	remaining   int64 // Content-Length left to write, or -1
}

func (w *respWriter) reset(req *http.Request, keep bool) {
	w.req, w.keep = req, keep
	clear(w.header)
	w.status, w.wroteHeader, w.chunked, w.noBody, w.remaining = 0, false, false, false, -1
}

func (w *respWriter) Header() http.Header { return w.header }

func (w *respWriter) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		// Interim answers are not passed on (the engine skips them).
		return
	}
	w.status = code
	w.writeHead()
}

// writeHead writes the status line and headers, choosing the framing:
// the Content-Length given, else chunked (HTTP/1.1) or until close.
func (w *respWriter) writeHead() {
	w.wroteHeader = true
	bw := w.c.bw
	h := w.header
	code := w.status
	if code == 0 {
		code, w.status = http.StatusOK, http.StatusOK
	}
	w.noBody = w.req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
	if cl := h["Content-Length"]; len(cl) > 0 {
		if n, err := strconv.ParseInt(cl[0], 10, 64); err == nil && n >= 0 {
			w.remaining = n
		} else {
			delete(h, "Content-Length")
		}
	}
	if w.remaining < 0 && !w.noBody {
		if w.req.ProtoAtLeast(1, 1) {
			w.chunked = true
		} else {
			w.keep = false
		}
	}
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(strconv.Itoa(code))
	bw.WriteByte(' ')
	bw.WriteString(http.StatusText(code))
	bw.WriteString("\r\n")
	for name, values := range h {
		if name == "Transfer-Encoding" || name == "Connection" {
			continue
		}
		for _, v := range values {
			bw.WriteString(name)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	if h["Date"] == nil {
		bw.WriteString("Date: ")
		bw.WriteString(httpDate())
		bw.WriteString("\r\n")
	}
	if w.chunked {
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if !w.keep {
		bw.WriteString("Connection: close\r\n")
	} else if !w.req.ProtoAtLeast(1, 1) {
		bw.WriteString("Connection: keep-alive\r\n")
	}
	bw.WriteString("\r\n")
}

// startRawHead implements rawHeadWriter.
func (w *respWriter) startRawHead(code int, contentLength int64) (*bufio.Writer, bool) {
	if w.wroteHeader || len(w.header) != 0 {
		return nil, false
	}
	w.wroteHeader, w.status, w.remaining = true, code, contentLength
	w.noBody = w.req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
	bw := w.c.bw
	var num [8]byte
	bw.WriteString("HTTP/1.1 ")
	bw.Write(strconv.AppendInt(num[:0], int64(code), 10))
	bw.WriteByte(' ')
	bw.WriteString(http.StatusText(code))
	bw.WriteString("\r\n")
	return bw, true
}

// endRawHead implements rawHeadWriter.
func (w *respWriter) endRawHead(hasDate bool) {
	bw := w.c.bw
	if !hasDate {
		bw.WriteString("Date: ")
		bw.WriteString(httpDate())
		bw.WriteString("\r\n")
	}
	if !w.keep {
		bw.WriteString("Connection: close\r\n")
	} else if !w.req.ProtoAtLeast(1, 1) {
		bw.WriteString("Connection: keep-alive\r\n")
	}
	bw.WriteString("\r\n")
}

func (w *respWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.writeHead()
	}
	if w.noBody || len(p) == 0 {
		return len(p), nil
	}
	bw := w.c.bw
	if w.chunked {
		bw.WriteString(strconv.FormatInt(int64(len(p)), 16))
		bw.WriteString("\r\n")
		n, err := bw.Write(p)
		bw.WriteString("\r\n")
		return n, err
	}
	if w.remaining >= 0 {
		if int64(len(p)) > w.remaining {
			n, _ := bw.Write(p[:w.remaining])
			w.remaining = 0
			return n, http.ErrContentLength
		}
		w.remaining -= int64(len(p))
	}
	return bw.Write(p)
}

// Flush sends what is buffered to the client.
func (w *respWriter) Flush() {
	if !w.wroteHeader {
		w.writeHead()
	}
	_ = w.c.bw.Flush()
}

// finish ends the answer (the last chunk, trailers) and flushes it.
func (w *respWriter) finish() error {
	if !w.wroteHeader {
		w.writeHead()
	}
	bw := w.c.bw
	if w.chunked {
		bw.WriteString("0\r\n")
		for name, values := range w.header {
			if strings.HasPrefix(name, http.TrailerPrefix) {
				for _, v := range values {
					bw.WriteString(strings.TrimPrefix(name, http.TrailerPrefix))
					bw.WriteString(": ")
					bw.WriteString(v)
					bw.WriteString("\r\n")
				}
			}
		}
		bw.WriteString("\r\n")
	}
	if w.remaining > 0 && !w.noBody {
		// A short body: the client must not take it for complete.
		bw.Flush()
		return io.ErrShortWrite
	}
	return bw.Flush()
}

// Hijack hands the connection over (Upgrade).
func (w *respWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c := w.c
	if w.wroteHeader {
		return nil, nil, errors.New("hijack after the answer started")
	}
	c.hijacked = true
	_ = c.conn.SetDeadline(time.Time{})
	return c.conn, bufio.NewReadWriter(c.br, c.bw), nil
}

// httpDate is the Date field, formatted once a second.
func httpDate() string {
	now := time.Now().Unix()
	dateMu.Lock()
	defer dateMu.Unlock()
	if now != dateAt {
		dateAt, dateText = now, time.Unix(now, 0).UTC().Format(http.TimeFormat)
	}
	return dateText
}

var (
	dateMu   sync.Mutex
	dateAt   int64
	dateText string
)

// badRequest says what makes a request unacceptable (as net/http.Server
// checks): HTTP/1.1 without a Host, more than one Host, a control
// character in a field value (it would be written on to the backend).
func badRequest(req *http.Request) string {
	hosts := req.Header["Host"]
	if len(hosts) > 1 {
		return "too many Host headers"
	}
	if req.ProtoAtLeast(1, 1) && req.Host == "" {
		return "missing required Host header"
	}
	if req.ProtoMajor != 1 {
		return "unsupported protocol version"
	}
	for _, values := range req.Header {
		for _, v := range values {
			for i := 0; i < len(v); i++ {
				if b := v[i]; b < ' ' && b != '\t' || b == 0x7f {
					return "invalid header value"
				}
			}
		}
	}
	for i := 0; i < len(req.Host); i++ {
		if b := req.Host[i]; b <= ' ' || b == 0x7f || b == '/' || b == '\\' {
			return "malformed Host header"
		}
	}
	return ""
}

// clientWatcher is what the connection loop offers a handler that waits
// long without reading the client (a held request): a context that ends
// when the client goes away. net/http.Server watches every request so;
// the loop only these.
type clientWatcher interface {
	watchClient(parent context.Context) (context.Context, func())
}

func unwrapClientWatcher(w http.ResponseWriter) (clientWatcher, bool) {
	for {
		if cw, ok := w.(clientWatcher); ok {
			return cw, true
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return nil, false
		}
		w = u.Unwrap()
	}
}

// watchClient reads ahead on the client's connection until stopped: an
// error (the client closed, or reset) cancels the context; bytes that
// arrive (a pipelined request, the body) stay buffered for later. stop
// interrupts the read and waits for it.
func (w *respWriter) watchClient(parent context.Context) (context.Context, func()) {
	c := w.c
	if c.br.Buffered() > 0 {
		return parent, func() {} // a body or a next request is there already
	}
	ctx, cancel := context.WithCancel(parent)
	done := make(chan struct{})
	_ = c.conn.SetReadDeadline(time.Time{}) // the head's deadline may still be set
	go func() {
		defer close(done)
		if _, err := c.br.Peek(1); err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				cancel()
			}
		}
	}()
	return ctx, func() {
		_ = c.conn.SetReadDeadline(time.Unix(1, 0))
		<-done
		_ = c.conn.SetReadDeadline(time.Time{})
		cancel()
	}
}
