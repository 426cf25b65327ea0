package http

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/host"
)

// selfSigned returns a PEM certificate and key for domain.
func selfSigned(t *testing.T, domain string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: domain}, DNSNames: []string{domain},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

// Each site's own certificate is chosen by SNI; the spec is asked for
// once per site, not per handshake; a site without one fails the
// handshake.
func TestTLSCertificateBySNI(t *testing.T) {
	n2 := newMaster(t, "n2", false)
	fc := &fakeCluster{routes: map[string]host.Route{
		"shop.example": active("n2"),
		"blog.example": {Site: "blog", Master: "n2", Phase: m.SitePhase_SITE_PHASE_ACTIVE, Domains: []string{"blog.example"}},
		"bare.example": {Site: "bare", Master: "n2", Phase: m.SitePhase_SITE_PHASE_ACTIVE, Domains: []string{"bare.example"}},
	}, live: map[string]bool{"n2": true}}
	shopCert, shopKey := selfSigned(t, "shop.example")
	blogCert, blogKey := selfSigned(t, "blog.example")
	specs := map[string]*m.SiteSpec{
		"shop": {Name: "shop", TlsCertPem: shopCert, TlsKeyPem: shopKey},
		"blog": {Name: "blog", TlsCertPem: blogCert, TlsKeyPem: blogKey},
		"bare": {Name: "bare"},
	}
	var queries atomic.Int32
	f, err := New(Config{Cluster: fc, Token: "secret", Internal: func(n string) (string, bool) { return n2.srv.URL, n == "n2" },
		SiteSpec: func(_ context.Context, site, node string) (*m.SiteSpec, error) {
			queries.Add(1)
			if node != "n2" {
				return nil, fmt.Errorf("asked %s, not the master", node)
			}
			return specs[site], nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := f.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(f)
	srv.TLS = cfg
	srv.StartTLS()
	defer srv.Close()
	get := func(domain string, caPEM []byte) (string, error) {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(caPEM)
		cl := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: domain}}}
		defer cl.CloseIdleConnections()
		req, _ := http.NewRequest("GET", srv.URL+"/x", nil)
		req.Host = domain
		resp, err := cl.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b), nil
	}
	for range 2 {
		if body, err := get("shop.example", shopCert); err != nil || body != "n2:shop:" {
			t.Fatalf("shop over TLS: %q %v", body, err)
		}
		if body, err := get("blog.example", blogCert); err != nil || body != "n2:blog:" {
			t.Fatalf("blog over TLS: %q %v", body, err)
		}
	}
	if _, err := get("blog.example", shopCert); err == nil {
		t.Fatal("blog's handshake verified against shop's certificate")
	}
	if _, err := get("bare.example", shopCert); err == nil {
		t.Fatal("a site without a certificate completed a handshake")
	}
	if q := queries.Load(); q != 3 {
		t.Fatalf("%d spec queries for 3 sites and 6 handshakes: the cache does not hold", q)
	}
	if got := n2.got[0].Header.Get("X-Forwarded-Proto"); got != "https" {
		t.Fatalf("X-Forwarded-Proto over TLS: %q", got)
	}
}

// /metrics counts requests and status codes per site, and held requests.
func TestMetricsPerSite(t *testing.T) {
	n2 := newMaster(t, "n2", false)
	fc := &fakeCluster{routes: map[string]host.Route{"shop.example": active("n2"),
		"held.example": {Site: "held", Phase: m.SitePhase_SITE_PHASE_PAUSED, Domains: []string{"held.example"}}},
		live: map[string]bool{"n2": true}, answer: &m.SiteResponse{Site: "held", Code: m.Code_CODE_TIMEOUT, RetryAfterS: 2}}
	f, err := New(Config{Cluster: fc, Token: "secret", Internal: func(n string) (string, bool) { return n2.srv.URL, n == "n2" }})
	if err != nil {
		t.Fatal(err)
	}
	srv := loopServer(t, f)
	do(t, "GET", srv.URL+"/", "shop.example", "")
	do(t, "GET", srv.URL+"/", "shop.example", "")
	do(t, "GET", srv.URL+"/", "held.example", "")
	do(t, "GET", srv.URL+"/", "nosuch.example", "")
	rec := httptest.NewRecorder()
	f.Metrics().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	out := rec.Body.String()
	for _, want := range []string{
		`hc_http_requests_total{site="shop"} 2`,
		`hc_http_responses_total{site="shop",code="200"} 2`,
		`hc_http_responses_total{site="held",code="503"} 1`,
		`hc_http_held_requests_total{site="held"} 1`,
		`hc_http_held_requests{site="held"} 0`,
		`hc_http_hold_seconds_count{site="held"} 1`,
		`hc_http_unknown_host_total 1`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %q:\n%s", want, out)
		}
	}
}

// An Upgrade (WebSocket) passes through: the 101 reaches the client and
// bytes flow both ways on the same connection.
func TestUpgradePassesThrough(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil || req.Header.Get("Upgrade") != "websocket" || req.Header.Get(host.HeaderToken) != "secret" {
			io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX-App: yes\r\n\r\n")
		line, _ := br.ReadString('\n')
		io.WriteString(c, "echo:"+line)
	}()
	fc := &fakeCluster{routes: map[string]host.Route{"shop.example": active("n2")}, live: map[string]bool{"n2": true}}
	f, err := New(Config{Cluster: fc, Token: "secret", Internal: func(n string) (string, bool) { return "http://" + l.Addr().String(), n == "n2" }})
	if err != nil {
		t.Fatal(err)
	}
	srv := loopServer(t, f)
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: shop.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 || resp.Header.Get("X-App") != "yes" || resp.Header.Get("Upgrade") != "websocket" {
		t.Fatalf("upgrade answer: %v %+v", err, resp)
	}
	io.WriteString(c, "hello\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "echo:hello\n" {
		t.Fatalf("after the upgrade: %q %v", line, err)
	}
}

// A body of unknown length (chunked) streams to the master.
func TestChunkedBodyStreams(t *testing.T) {
	n2 := newMaster(t, "n2", false)
	fc := &fakeCluster{routes: map[string]host.Route{"shop.example": active("n2")}, live: map[string]bool{"n2": true}}
	srv := newFront(t, fc, n2)
	pr, pw := io.Pipe()
	go func() {
		for i := range 3 {
			fmt.Fprintf(pw, "part%d;", i)
			time.Sleep(10 * time.Millisecond)
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", srv.URL+"/up", pr)
	req.Host = "shop.example"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "n2:shop:part0;part1;part2;" {
		t.Fatalf("chunked body: %q", b)
	}
}

// The master's own node serves in process (no internal port); when it no
// longer serves the site the request goes through the actors.
func TestLocalMasterServedInProcess(t *testing.T) {
	n3 := newMaster(t, "n3", false)
	fc := &fakeCluster{routes: map[string]host.Route{"shop.example": active("n1")}, live: map[string]bool{"n1": true, "n3": true},
		answer: &m.SiteResponse{Site: "shop", Code: m.Code_CODE_OK, Master: "n3"}}
	serving := true
	var localXFF string
	f, err := New(Config{Cluster: fc, Token: "secret", Internal: func(n string) (string, bool) { return n3.srv.URL, n == "n3" },
		Local: func(w http.ResponseWriter, r *http.Request, site string, counted bool) bool {
			if !serving {
				return false
			}
			localXFF = r.Header.Get("X-Forwarded-For")
			io.WriteString(w, "local:"+site)
			return true
		}})
	if err != nil {
		t.Fatal(err)
	}
	srv := loopServer(t, f)
	if _, body := do(t, "GET", srv.URL+"/", "shop.example", ""); body != "local:shop" || localXFF != "127.0.0.1" {
		t.Fatalf("local: %q xff %q", body, localXFF)
	}
	serving = false
	if _, body := do(t, "GET", srv.URL+"/", "shop.example", ""); body != "n3:shop:" || len(fc.requests) != 1 {
		t.Fatalf("after the local site stopped: %q, actor requests %d", body, len(fc.requests))
	}
}

// A master that takes a request and dies before answering: a GET goes once
// to the new master; a bodiless POST does not (it may have been done).
func TestMasterDyingBeforeAnswer(t *testing.T) {
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
			_, _ = http.ReadRequest(bufio.NewReader(c))
			c.Close()
		}
	}()
	n3 := newMaster(t, "n3", false)
	fc := &fakeCluster{routes: map[string]host.Route{"shop.example": active("dying")}, live: map[string]bool{"dying": true, "n3": true},
		answer: &m.SiteResponse{Site: "shop", Code: m.Code_CODE_OK, Master: "n3"}}
	f, err := New(Config{Cluster: fc, Token: "secret", Internal: func(n string) (string, bool) {
		return map[string]string{"dying": "http://" + l.Addr().String(), "n3": n3.srv.URL}[n], n == "dying" || n == "n3"
	}})
	if err != nil {
		t.Fatal(err)
	}
	srv := loopServer(t, f)
	if resp, body := do(t, "GET", srv.URL+"/", "shop.example", ""); resp.StatusCode != 200 || body != "n3:shop:" {
		t.Fatalf("GET: %d %q", resp.StatusCode, body)
	}
	if resp, _ := do(t, "POST", srv.URL+"/", "shop.example", ""); resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("POST: %d, want 502", resp.StatusCode)
	}
	if len(n3.got) != 1 {
		t.Fatalf("the new master got %d requests, want only the GET", len(n3.got))
	}
	// Dying twice: the GET is not sent a third time.
	fc.answer = &m.SiteResponse{Site: "shop", Code: m.Code_CODE_OK, Master: "dying"}
	if resp, _ := do(t, "GET", srv.URL+"/", "shop.example", ""); resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("GET dying twice: %d, want 502", resp.StatusCode)
	}
}

// Requests released together keep their arrival order.
func TestOrderTickets(t *testing.T) {
	q := &orderQueues{tail: map[string]*orderTicket{}}
	first, second := q.enter("s"), q.enter("s")
	went := make(chan struct{})
	go func() {
		second.wait()
		close(went)
	}()
	select {
	case <-went:
		t.Fatal("the second request went before the first")
	case <-time.After(20 * time.Millisecond):
	}
	first.dispatched()
	<-went
	second.dispatched()
	if len(q.tail) != 0 {
		t.Fatalf("queues left: %v", q.tail)
	}
}
