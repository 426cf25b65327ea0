package http

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/host"
)

// fakeCluster is the node as the front end sees it (unit test: the real
// node is exercised end to end in runtime/localcluster).
type fakeCluster struct {
	mu       sync.Mutex
	routes   map[string]host.Route
	live     map[string]bool
	answer   *m.SiteResponse
	requests []*m.SiteRequest
}

func (f *fakeCluster) Node() string { return "n1" }
func (f *fakeCluster) RouteByDomain(d string) (host.Route, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.routes[d]
	return r, ok
}
func (f *fakeCluster) Live(n string) bool { return f.live[n] }
func (f *fakeCluster) Request(_ context.Context, req *m.SiteRequest) (*m.SiteResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, req)
	return f.answer, nil
}

// master is a fake internal port: it checks the node secret, refuses with
// 421 (before reading the body) while paused, else echoes what it got.
type master struct {
	name   string
	paused bool
	srv    *httptest.Server
	got    []*http.Request
	bodies []string
	mu     sync.Mutex
}

func newMaster(t *testing.T, name string, paused bool) *master {
	ms := &master{name: name, paused: paused}
	ms.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(host.HeaderToken) != "secret" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if ms.paused {
			w.Header().Set(host.HeaderReason, "not-serving")
			w.WriteHeader(http.StatusMisdirectedRequest)
			return
		}
		body, _ := io.ReadAll(r.Body)
		ms.mu.Lock()
		ms.got = append(ms.got, r.Clone(context.Background()))
		ms.bodies = append(ms.bodies, string(body))
		ms.mu.Unlock()
		w.Header().Set("Connection", "x-secret-hop")
		w.Header().Set("X-Secret-Hop", "must not reach the client")
		w.Header().Set("X-App", ms.name)
		io.WriteString(w, ms.name+":"+r.Header.Get(host.HeaderSite)+":"+string(body))
	}))
	t.Cleanup(ms.srv.Close)
	return ms
}

func newFront(t *testing.T, fc *fakeCluster, masters ...*master) *httptest.Server {
	urls := map[string]string{}
	for _, ms := range masters {
		urls[ms.name] = ms.srv.URL
	}
	urls["dead"] = "http://" + deadAddr(t)
	f, err := New(Config{Cluster: fc, Token: "secret", Internal: func(n string) (string, bool) { u, ok := urls[n]; return u, ok }})
	if err != nil {
		t.Fatal(err)
	}
	srv := loopServer(t, f)
	return srv
}

// deadAddr is an address nothing listens on.
func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func do(t *testing.T, method, url, host, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if body == "" {
		req.Body = http.NoBody
	}
	req.Host = host
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func active(master string) host.Route {
	return host.Route{Site: "shop", Master: master, Phase: m.SitePhase_SITE_PHASE_ACTIVE, Domains: []string{"shop.example"}}
}

func TestUnknownHostIs404(t *testing.T) {
	srv := newFront(t, &fakeCluster{routes: map[string]host.Route{}})
	resp, body := do(t, "GET", srv.URL+"/", "NoSuch.example:80", "")
	if resp.StatusCode != 404 || !strings.Contains(body, "<code>nosuch.example</code>") {
		t.Fatalf("status %d body %q", resp.StatusCode, body)
	}
	rec := httptest.NewRecorder()
	notFound(rec, "<script>")
	if strings.Contains(rec.Body.String(), "<script>") {
		t.Fatalf("domain not escaped: %q", rec.Body.String())
	}
}

func TestForwardsToServingMaster(t *testing.T) {
	n2 := newMaster(t, "n2", false)
	fc := &fakeCluster{routes: map[string]host.Route{"shop.example": active("n2")}, live: map[string]bool{"n2": true}}
	srv := newFront(t, fc, n2)
	resp, body := do(t, "POST", srv.URL+"/a?b=c", "Shop.Example:8080", "payload",
		host.HeaderToken, "forged", host.HeaderSite, "other", host.HeaderCounted, "1", "X-Forwarded-For", "10.9.9.9")
	if resp.StatusCode != 200 || body != "n2:shop:payload" {
		t.Fatalf("status %d body %q", resp.StatusCode, body)
	}
	if resp.Header.Get("X-Secret-Hop") != "" || resp.Header.Get("X-App") != "n2" {
		t.Fatalf("hop-by-hop handling: %v", resp.Header)
	}
	if len(fc.requests) != 0 {
		t.Fatalf("serving route went through the actors: %v", fc.requests)
	}
	got := n2.got[0]
	if got.Header.Get(host.HeaderCounted) != "" {
		t.Fatal("a client's X-Hc-Counted reached the master: its request would escape the load count")
	}
	if got.Host != "Shop.Example:8080" || got.URL.RequestURI() != "/a?b=c" || got.Header.Get("X-Forwarded-Host") != "Shop.Example:8080" ||
		got.Header.Get("X-Forwarded-Proto") != "http" || !strings.HasPrefix(got.Header.Get("X-Forwarded-For"), "10.9.9.9, 127.0.0.1") {
		t.Fatalf("forwarded request: host %q uri %q headers %v", got.Host, got.URL.RequestURI(), got.Header)
	}
}

func TestRefusedForwardGoesThroughTheActorsWithItsBody(t *testing.T) {
	n2 := newMaster(t, "n2", true) // paused: a move is under way
	n3 := newMaster(t, "n3", false)
	fc := &fakeCluster{routes: map[string]host.Route{"shop.example": active("n2")}, live: map[string]bool{"n2": true, "n3": true},
		answer: &m.SiteResponse{Site: "shop", Code: m.Code_CODE_OK, Master: "n3"}}
	srv := newFront(t, fc, n2, n3)
	big := strings.Repeat("x", 1<<20)
	resp, body := do(t, "PUT", srv.URL+"/up", "shop.example", big)
	if resp.StatusCode != 200 || body != "n3:shop:"+big {
		t.Fatalf("status %d body len %d", resp.StatusCode, len(body))
	}
	if len(fc.requests) != 1 || !fc.requests[0].Write || fc.requests[0].Site != "shop" || fc.requests[0].BodyBytes != 1<<20 {
		t.Fatalf("actor requests %+v", fc.requests)
	}
	if n3.got[0].Header.Get(host.HeaderCounted) != "1" {
		t.Fatal("a request the site actor admitted (and counted) is not marked counted")
	}
}

func TestDeadMasterGetRetriedPostNot(t *testing.T) {
	n3 := newMaster(t, "n3", false)
	fc := &fakeCluster{routes: map[string]host.Route{"shop.example": active("dead")}, live: map[string]bool{"dead": true, "n3": true},
		answer: &m.SiteResponse{Site: "shop", Code: m.Code_CODE_OK, Master: "n3"}}
	srv := newFront(t, fc, n3)
	resp, body := do(t, "GET", srv.URL+"/", "shop.example", "")
	if resp.StatusCode != 200 || body != "n3:shop:" {
		t.Fatalf("GET: status %d body %q", resp.StatusCode, body)
	}
	// Refused before anything was sent: any method may go elsewhere.
	resp, body = do(t, "POST", srv.URL+"/", "shop.example", "once")
	if resp.StatusCode != 200 || body != "n3:shop:once" {
		t.Fatalf("POST to a refusing master: status %d body %q", resp.StatusCode, body)
	}
}

func TestMasterDyingMidBodyIsNotRetried(t *testing.T) {
	// A master that accepts, reads part of the body and drops the connection.
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
			_ = c.SetDeadline(time.Now().Add(time.Second))
			var got []byte
			buf := make([]byte, 4096)
			for !strings.Contains(string(got), "\r\n\r\n") {
				n, err := c.Read(buf)
				if err != nil {
					break
				}
				got = append(got, buf[:n]...)
			}
			_, _ = io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
			_, _ = c.Read(buf) // part of the body
			c.Close()
		}
	}()
	n3 := newMaster(t, "n3", false)
	fc := &fakeCluster{routes: map[string]host.Route{"shop.example": active("flaky")}, live: map[string]bool{"flaky": true, "n3": true},
		answer: &m.SiteResponse{Site: "shop", Code: m.Code_CODE_OK, Master: "n3"}}
	f, err := New(Config{Cluster: fc, Token: "secret", Internal: func(n string) (string, bool) {
		return map[string]string{"flaky": "http://" + l.Addr().String(), "n3": n3.srv.URL}[n], n == "flaky" || n == "n3"
	}})
	if err != nil {
		t.Fatal(err)
	}
	srv := loopServer(t, f)
	resp, _ := do(t, "POST", srv.URL+"/", "shop.example", strings.Repeat("y", 256<<10))
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", resp.StatusCode)
	}
	if len(n3.got) != 0 {
		t.Fatalf("a write whose body reached a master was sent again")
	}
	// A GET to the same master is retried elsewhere (nothing came back).
	resp, body := do(t, "GET", srv.URL+"/", "shop.example", "")
	if resp.StatusCode != 200 || body != "n3:shop:" {
		t.Fatalf("GET: status %d body %q", resp.StatusCode, body)
	}
}

func TestUnavailableCarriesRetryAfter(t *testing.T) {
	fc := &fakeCluster{routes: map[string]host.Route{"shop.example": {Site: "shop", Phase: m.SitePhase_SITE_PHASE_FAILING_OVER}},
		answer: &m.SiteResponse{Site: "shop", Code: m.Code_CODE_OVERLOADED, RetryAfterS: 3}}
	srv := newFront(t, fc)
	resp, _ := do(t, "GET", srv.URL+"/", "shop.example", "")
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "3" {
		t.Fatalf("status %d retry-after %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}
