package http

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/host"
)

// loopServer serves f with the connection loop on a loopback port, as an
// httptest.Server would with net/http.
func loopServer(t *testing.T, f *Front) *httptest.Server {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Front: f}
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Close)
	return &httptest.Server{URL: "http://" + l.Addr().String(), Listener: l}
}

func loopFront(t *testing.T, handler http.HandlerFunc) (*Front, *httptest.Server) {
	t.Helper()
	backend := httptest.NewServer(handler)
	t.Cleanup(backend.Close)
	fc := &fakeCluster{routes: map[string]host.Route{"shop.example": active("n2")}, live: map[string]bool{"n2": true}}
	f, err := New(Config{Cluster: fc, Token: "secret", Internal: func(n string) (string, bool) { return backend.URL, n == "n2" }})
	if err != nil {
		t.Fatal(err)
	}
	return f, loopServer(t, f)
}

// rawExchange writes raw to the front and reads the answers it expects.
func rawConn(t *testing.T, srv *httptest.Server) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	return c, bufio.NewReader(c)
}

// Requests on one kept-alive connection, pipelined, are answered in order;
// HTTP/1.0 and Connection: close end the connection after the answer.
func TestLoopKeepAliveAndClose(t *testing.T) {
	_, srv := loopFront(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.URL.Path) })
	c, br := rawConn(t, srv)
	io.WriteString(c, "GET /a HTTP/1.1\r\nHost: shop.example\r\n\r\nGET /b HTTP/1.1\r\nHost: shop.example\r\n\r\nGET /c HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n")
	for _, want := range []string{"/a", "/b", "/c"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer for %s: %v", want, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if string(b) != want || (want == "/c") != resp.Close {
			t.Fatalf("answer %q (close %v), want %q", b, resp.Close, want)
		}
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("connection still open after Connection: close: %v", err)
	}
	c2, br2 := rawConn(t, srv)
	io.WriteString(c2, "GET /old HTTP/1.0\r\nHost: shop.example\r\n\r\n")
	resp, err := http.ReadResponse(br2, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if string(b) != "/old" {
		t.Fatalf("HTTP/1.0: %q", b)
	}
	if _, err := br2.ReadByte(); err != io.EOF {
		t.Fatalf("HTTP/1.0 connection kept: %v", err)
	}
}

// A client that waits for 100 Continue gets it once the body is wanted;
// a streamed answer of unknown length reaches it chunked, part by part;
// HEAD gets headers only; a head too large gets 431.
func TestLoopContinueChunkedHeadAndLimits(t *testing.T) {
	_, srv := loopFront(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" {
			b, _ := io.ReadAll(r.Body)
			io.WriteString(w, "got:"+string(b))
			return
		}
		w.Header().Set("X-Len", "unknown")
		for i := range 3 {
			fmt.Fprintf(w, "part%d;", i)
			w.(http.Flusher).Flush()
			time.Sleep(20 * time.Millisecond)
		}
	})
	c, br := rawConn(t, srv)
	io.WriteString(c, "POST /up HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("before the body: %q %v", line, err)
	}
	br.ReadString('\n')
	io.WriteString(c, "hello")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(resp.Body); string(b) != "got:hello" {
		t.Fatalf("expect-continue body: %q", b)
	}
	io.WriteString(c, "GET /stream HTTP/1.1\r\nHost: shop.example\r\n\r\n")
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" || resp.Header.Get("X-Len") != "unknown" {
		t.Fatalf("streamed answer framing: %v %v", resp.TransferEncoding, resp.Header)
	}
	first := make([]byte, 6)
	if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "part0;" {
		t.Fatalf("first part: %q %v", first, err)
	}
	rest, _ := io.ReadAll(resp.Body)
	if string(rest) != "part1;part2;" {
		t.Fatalf("rest: %q", rest)
	}
	io.WriteString(c, "HEAD /stream HTTP/1.1\r\nHost: shop.example\r\n\r\n")
	resp, err = http.ReadResponse(br, &http.Request{Method: "HEAD"})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("HEAD: %v %v", resp, err)
	}
	io.WriteString(c, "GET /ok HTTP/1.1\r\nHost: shop.example\r\n\r\n")
	if resp, err = http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("after HEAD the connection is out of step: %v %v", resp, err)
	}
	io.ReadAll(resp.Body)

	c2, br2 := rawConn(t, srv)
	io.WriteString(c2, "GET / HTTP/1.1\r\nHost: shop.example\r\nX-Big: "+strings.Repeat("b", headerBytesMax)+"\r\n\r\n")
	if resp, err := http.ReadResponse(br2, nil); err != nil || resp.StatusCode != 431 {
		t.Fatalf("oversized head: %v %v", resp, err)
	}
}

// Front is an http.Handler too: net/http.Server can serve it.
func TestFrontUnderNetHTTP(t *testing.T) {
	n2 := newMaster(t, "n2", false)
	fc := &fakeCluster{routes: map[string]host.Route{"shop.example": active("n2")}, live: map[string]bool{"n2": true}}
	f, err := New(Config{Cluster: fc, Token: "secret", Internal: func(n string) (string, bool) { return n2.srv.URL, n == "n2" }})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(f)
	defer srv.Close()
	if resp, body := do(t, "POST", srv.URL+"/x", "shop.example", "b"); resp.StatusCode != 200 || body != "n2:shop:b" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
}

// Shutdown closes idle connections and lets a request in flight finish.
func TestLoopShutdown(t *testing.T) {
	release := make(chan struct{})
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		io.WriteString(w, "late")
	}))
	defer backend.Close()
	fc := &fakeCluster{routes: map[string]host.Route{"shop.example": active("n2")}, live: map[string]bool{"n2": true}}
	f, _ := New(Config{Cluster: fc, Token: "secret", Internal: func(n string) (string, bool) { return backend.URL, n == "n2" }})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Front: f}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	srv := &httptest.Server{Listener: l}
	idle, _ := rawConn(t, srv)
	busy, br := rawConn(t, srv)
	io.WriteString(busy, "GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n")
	time.Sleep(50 * time.Millisecond)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- s.Shutdown(ctx)
	}()
	if _, err := idle.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("idle connection not closed by Shutdown: %v", err)
	}
	close(release)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("request in flight at Shutdown: %v", err)
	}
	if b, _ := io.ReadAll(resp.Body); string(b) != "late" {
		t.Fatalf("request in flight at Shutdown: %q", b)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != ErrServerClosed {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
}

// Requests net/http.Server would refuse are refused here too: no Host in
// HTTP/1.1, two Hosts, a control character in a value.
func TestLoopRefusesMalformedRequests(t *testing.T) {
	_, srv := loopFront(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "reached") })
	for _, head := range []string{
		"GET / HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: shop.example\r\nHost: other.example\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: shop.example\r\nX-A: a\x01b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: shop.example/evil\r\n\r\n",
	} {
		c, br := rawConn(t, srv)
		io.WriteString(c, head)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 400 {
			t.Errorf("%q: %v %v", head, resp, err)
		}
	}
}

// A held client that goes away frees its place in the actors at once.
func TestLoopHeldClientGoingAway(t *testing.T) {
	fc := &blockingCluster{fakeCluster: fakeCluster{routes: map[string]host.Route{"shop.example": {Site: "shop", Phase: m.SitePhase_SITE_PHASE_PAUSED, Domains: []string{"shop.example"}}}},
		ended: make(chan error, 1)}
	f, err := New(Config{Cluster: fc, Token: "secret", Internal: func(string) (string, bool) { return "", false }})
	if err != nil {
		t.Fatal(err)
	}
	srv := loopServer(t, f)
	c, _ := rawConn(t, srv)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n")
	time.Sleep(50 * time.Millisecond)
	c.Close()
	select {
	case err := <-fc.ended:
		if err == nil {
			t.Fatal("the held request ended without its context")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the held request still waits after its client went away")
	}
}

// blockingCluster holds every request until its context ends.
type blockingCluster struct {
	fakeCluster
	ended chan error
}

func (b *blockingCluster) Request(ctx context.Context, _ *m.SiteRequest) (*m.SiteResponse, error) {
	<-ctx.Done()
	b.ended <- ctx.Err()
	return nil, ctx.Err()
}

// HEAD with the length of the body it does not carry keeps the
// connection; after an Upgrade the next request gets a new backend
// connection (the old one was the tunnel).
func TestLoopHeadKeepsConnectionAndUpgradeIsNotReused(t *testing.T) {
	_, srv := loopFront(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		if r.Method != "HEAD" {
			io.WriteString(w, "hello")
		}
	})
	c, br := rawConn(t, srv)
	for range 2 {
		io.WriteString(c, "HEAD / HTTP/1.1\r\nHost: shop.example\r\n\r\n")
		resp, err := http.ReadResponse(br, &http.Request{Method: "HEAD"})
		if err != nil || resp.StatusCode != 200 || resp.ContentLength != 5 || resp.Close {
			t.Fatalf("HEAD: %+v %v", resp, err)
		}
	}

	// An upgraded backend connection must not go back to the pool.
	e := newEngine()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				if req.Header.Get("Upgrade") != "" {
					io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n")
					return // the tunnel ends at once
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}()
		}
	}()
	fc := &fakeCluster{routes: map[string]host.Route{"shop.example": active("n2")}, live: map[string]bool{"n2": true}}
	f, _ := New(Config{Cluster: fc, Token: "secret", Internal: func(n string) (string, bool) { return "http://" + l.Addr().String(), n == "n2" }})
	f.engine = e
	srv2 := loopServer(t, f)
	c2, br2 := rawConn(t, srv2)
	io.WriteString(c2, "GET / HTTP/1.1\r\nHost: shop.example\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n")
	if resp, err := http.ReadResponse(br2, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	time.Sleep(20 * time.Millisecond)
	if p := e.pool(l.Addr().String()); len(p.idle) != 0 {
		t.Fatalf("the upgraded connection went back to the pool")
	}
	if resp, body := do(t, "POST", srv2.URL+"/", "shop.example", "body"); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("POST after an upgrade: %d %q", resp.StatusCode, body)
	}
}
