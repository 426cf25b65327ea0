package http

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/host"
)

// rawBackend answers every request it reads with answer(n), n being the
// request's path without its slash ("" counts as the requests over all
// connections, from 0), written as bytes; an answer
// ending in "\x00close" is written without that suffix and the connection
// closed.
func rawBackend(t *testing.T, answer func(n int) string) (addr string, conns *atomic.Int32) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var count atomic.Int32
	conns = new(atomic.Int32)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					n := int(count.Add(1) - 1)
					if p := strings.TrimPrefix(req.URL.Path, "/"); p != "" {
						n, _ = strconv.Atoi(p)
					}
					a := answer(n)
					closeAfter := strings.HasSuffix(a, "\x00close")
					if _, err := io.WriteString(c, strings.TrimSuffix(a, "\x00close")); err != nil || closeAfter {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String(), conns
}

func rawFront(t *testing.T, backend string) string {
	t.Helper()
	fc := &fakeCluster{routes: map[string]host.Route{"shop.example": active("n2")}, live: map[string]bool{"n2": true},
		answer: &m.SiteResponse{Site: "shop", Code: m.Code_CODE_OK, Master: "n2"}}
	f, err := New(Config{Cluster: fc, Token: "secret", Internal: func(n string) (string, bool) { return "http://" + backend, n == "n2" }})
	if err != nil {
		t.Fatal(err)
	}
	return loopServer(t, f).Listener.Addr().String()
}

// readRaw sends a GET on c and returns the answer's head as sent and its
// body (by Content-Length).
func readRaw(t *testing.T, c net.Conn, br *bufio.Reader, path ...string) (head string, resp *http.Response, body []byte) {
	t.Helper()
	if _, err := io.WriteString(c, "GET /"+strings.Join(path, "")+" HTTP/1.1\r\nHost: shop.example\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// The head as bytes first (field names keep their case), then parsed.
	var raw bytes.Buffer
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the head: %v (so far %q)", err, raw.String())
		}
		raw.WriteString(line)
		if line == "\r\n" {
			break
		}
	}
	resp, err := http.ReadResponse(bufio.NewReader(io.MultiReader(bytes.NewReader(raw.Bytes()), br)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.ContentLength < 0 {
		t.Fatalf("an answer without Content-Length: %q", raw.String())
	}
	body = make([]byte, resp.ContentLength)
	if _, err := io.ReadFull(br, body); err != nil {
		t.Fatalf("body: %v", err)
	}
	return raw.String(), resp, body
}

// A plain answer is copied as the backend wrote it (the field names keep
// their case: the fast path); odd ones go through net/http and come out
// canonical and well framed, and what a backend smuggles in a field value
// never becomes a field of its own.
func TestFastPathAndItsFallbacks(t *testing.T) {
	answers := []string{
		"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-thing: a\r\nContent-Length: 5\r\n\r\nhello",
		// A bare LF ends the lines: net/http reads it.
		"HTTP/1.1 200 OK\nx-lf: 1\nContent-Length: 2\n\nhi",
		// A CR inside a value (a smuggled Transfer-Encoding): not the fast path.
		"HTTP/1.1 200 OK\r\nx-a: a\rTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
		// Chunked: net/http's path; the client gets the body whole.
		"HTTP/1.1 201 Created\r\nx-chunked: 1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		// A 404 with a body is as plain as a 200.
		"HTTP/1.1 404 Not Found\r\nx-nf: 1\r\nDate: Mon, 02 Jan 2006 15:04:05 GMT\r\nContent-Length: 4\r\n\r\nnope",
	}
	addr, _ := rawBackend(t, func(n int) string { return answers[n%len(answers)] })
	c, br := dialRaw(t, rawFront(t, addr))
	head, resp, body := readRaw(t, c, br, "0")
	if !strings.Contains(head, "\r\nx-thing: a\r\n") || string(body) != "hello" || resp.StatusCode != 200 || resp.Header.Get("Date") == "" {
		t.Fatalf("plain answer: head %q body %q", head, body)
	}
	head, _, body = readRaw(t, c, br, "1")
	if !strings.Contains(head, "\r\nX-Lf: 1\r\n") || string(body) != "hi" {
		t.Fatalf("bare LF answer: head %q body %q", head, body)
	}
	// net/http refuses the smuggling answer; the client gets an error
	// answer (after one more try), never a field of the backend's making.
	if _, err := io.WriteString(c, "GET /2 HTTP/1.1\r\nHost: shop.example\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("Transfer-Encoding") != "" || len(resp.TransferEncoding) != 1 {
		t.Fatalf("smuggling answer: %d %q %q", resp.StatusCode, resp.Header, b)
	}
	// The chunked answer is sent chunked; read it with net/http.
	if _, err := io.WriteString(c, "GET /3 HTTP/1.1\r\nHost: shop.example\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err = io.ReadAll(resp.Body)
	if err != nil || string(b) != "abc" || resp.StatusCode != 201 || resp.Header.Get("X-Chunked") != "1" {
		t.Fatalf("chunked answer: %d %q %v", resp.StatusCode, b, err)
	}
	head, resp, body = readRaw(t, c, br, "4")
	if !strings.Contains(head, "\r\nx-nf: 1\r\n") || resp.StatusCode != 404 || string(body) != "nope" ||
		strings.Count(head, "Date:") != 1 || !strings.HasPrefix(head, "HTTP/1.1 404 Not Found\r\n") {
		t.Fatalf("404 answer: head %q body %q", head, body)
	}
}

func dialRaw(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

// A large answer streams whole; answers on one kept backend connection
// follow one another; a backend that dies mid-body leaves the client with
// a cut answer (a closed connection), never a short one taken as complete.
func TestFastPathStreamsReusesAndCuts(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	want := sha256.Sum256(big)
	addr, conns := rawBackend(t, func(n int) string {
		switch n {
		case 0, 1, 2:
			return "HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n" + string(big)
		case 3:
			return "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..\x00close"
		}
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	})
	front := rawFront(t, addr)
	c, br := dialRaw(t, front)
	for i := 0; i < 3; i++ {
		_, _, body := readRaw(t, c, br)
		if sha256.Sum256(body) != want {
			t.Fatalf("answer %d: %d bytes, not the backend's", i, len(body))
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("three answers took %d backend connections, want 1 (kept)", n)
	}
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// The client sees an error: no head at all, or a body cut short.
	if resp, err := http.ReadResponse(br, nil); err == nil {
		if b, err := io.ReadAll(resp.Body); err == nil {
			t.Fatalf("a cut answer read as complete: %q", b)
		}
	}
	// The next request gets a new backend connection and a whole answer.
	c2, br2 := dialRaw(t, front)
	if _, _, body := readRaw(t, c2, br2); string(body) != "ok" {
		t.Fatalf("after the cut: %q", body)
	}
}

// Requests as clients send them (the fast path) and odd ones (net/http's
// path) reach the master alike: canonical field names, repeated fields
// together, the target as sent, the body whole; a field of one request
// never shows in the next on the same connection; Connection: close ends
// the connection after the answer.
func TestFastRequestsAndTheirFallbacks(t *testing.T) {
	n2 := newMaster(t, "n2", false)
	fc := &fakeCluster{routes: map[string]host.Route{"shop.example": active("n2")}, live: map[string]bool{"n2": true}}
	srv := newFront(t, fc, n2)
	c, br := dialRaw(t, srv.Listener.Addr().String())
	requests := []string{
		"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: shop.example\r\nx-lower: one\r\nAccept: a\r\nAccept: b\r\n\r\n",
		"POST /form HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
		// net/http's path: an escaped target, a folded field, chunked body.
		"GET /a%20b?q=%41 HTTP/1.1\r\nHost: shop.example\r\nX-Folded: one\r\n two\r\n\r\n",
		"POST /chunked HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"GET /last HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n",
	}
	for i, raw := range requests {
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("the connection stayed open after Connection: close (%v)", err)
	}
	n2.mu.Lock()
	defer n2.mu.Unlock()
	if len(n2.got) != len(requests) {
		t.Fatalf("the master got %d requests, want %d", len(n2.got), len(requests))
	}
	g := n2.got
	if g[0].RequestURI != "/a/b?x=1&y=2" || g[0].Header.Get("X-Lower") != "one" || strings.Join(g[0].Header["Accept"], ",") != "a,b" ||
		g[0].Host != "shop.example" || g[0].Header.Get("X-Forwarded-Host") != "shop.example" {
		t.Fatalf("first request: %s %q host %q", g[0].RequestURI, g[0].Header, g[0].Host)
	}
	if g[1].Method != "POST" || n2.bodies[1] != "hello" || g[1].Header.Get("X-Lower") != "" || g[1].Header["Accept"] != nil {
		t.Fatalf("second request: %s body %q header %q", g[1].Method, n2.bodies[1], g[1].Header)
	}
	if g[2].RequestURI != "/a%20b?q=%41" || g[2].Header.Get("X-Folded") != "one two" {
		t.Fatalf("escaped, folded request: %s %q", g[2].RequestURI, g[2].Header)
	}
	if n2.bodies[3] != "abc" || g[4].URL.Path != "/last" || g[4].Header.Get("Connection") != "" {
		t.Fatalf("chunked body %q, last %s %q", n2.bodies[3], g[4].URL.Path, g[4].Header)
	}
}

// Framing attacks: two different lengths and two Host fields are refused
// (400); a length with a Transfer-Encoding is framed by the chunked
// encoding, as RFC 9112 says, so what follows is the client's next request,
// and the master never gets a body that carries another request.
func TestFastRequestRefusesSmuggling(t *testing.T) {
	n2 := newMaster(t, "n2", false)
	fc := &fakeCluster{routes: map[string]host.Route{"shop.example": active("n2")}, live: map[string]bool{"n2": true}}
	srv := newFront(t, fc, n2)
	for _, tc := range []struct {
		raw   string
		codes string
	}{
		{"POST / HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcdGET /smuggled HTTP/1.1\r\nHost: shop.example\r\n\r\n", "400"},
		{"POST / HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n", "200 200"},
		{"GET / HTTP/1.1\r\nHost: shop.example\r\nHost: other.example\r\n\r\n", "400"},
	} {
		c, br := dialRaw(t, srv.Listener.Addr().String())
		io.WriteString(c, tc.raw)
		var codes []string
		for {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				break
			}
			io.ReadAll(resp.Body)
			codes = append(codes, strconv.Itoa(resp.StatusCode))
		}
		if got := strings.Join(codes, " "); got != tc.codes {
			t.Errorf("%q: answers %q, want %q", tc.raw, got, tc.codes)
		}
	}
	n2.mu.Lock()
	defer n2.mu.Unlock()
	for i, b := range n2.bodies {
		if strings.Contains(b, "GET") {
			t.Errorf("the master got a request carrying another in its body: %s %q", n2.got[i].URL.Path, b)
		}
	}
	if len(n2.got) != 2 || n2.got[1].URL.Path != "/next" {
		t.Errorf("the master got %d requests, want the chunked POST and /next", len(n2.got))
	}
}

const typicalHead = "GET /index.html?page=2 HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\naccept-encoding: gzip\r\n\r\n"

// A typical head takes the fast path with at most four allocations (the
// request with its URL, the head's string, the values, one non-canonical
// name), where net/http's ReadRequest takes about twenty.
func TestFastRequestAllocations(t *testing.T) {
	h := http.Header{}
	rd := strings.NewReader("")
	br := bufio.NewReaderSize(rd, 4096)
	read := func() *http.Request {
		rd.Reset(typicalHead)
		br.Reset(rd)
		br.Peek(1)
		r, ok := readFastRequest(br, h)
		if !ok {
			t.Fatal("a typical head did not take the fast path")
		}
		return r
	}
	r := read()
	if r.Method != "GET" || r.URL.Path != "/index.html" || r.URL.RawQuery != "page=2" || r.Host != "shop.example" ||
		r.Header.Get("Accept-Encoding") != "gzip" || len(r.Header) != 3 || r.Body != http.NoBody || br.Buffered() != 0 {
		t.Fatalf("parsed %s %s %q host %q buffered %d", r.Method, r.URL, r.Header, r.Host, br.Buffered())
	}
	if n := testing.AllocsPerRun(100, func() { read() }); n > 4 {
		t.Fatalf("%v allocations per request head", n)
	}
}

func BenchmarkRequestHead(b *testing.B) {
	rd := strings.NewReader("")
	br := bufio.NewReaderSize(rd, 4096)
	h := http.Header{}
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			rd.Reset(typicalHead)
			br.Reset(rd)
			br.Peek(1)
			readFastRequest(br, h)
		}
	})
	b.Run("net-http", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			rd.Reset(typicalHead)
			br.Reset(rd)
			http.ReadRequest(br)
		}
	})
}
