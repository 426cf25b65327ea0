package admin_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/admin"
	"github.com/hybridcluster/hybridcluster/runtime/admin/admintest"
)

const token = "s3cret-t0ken-4-tests"

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type fixture struct {
	t    *testing.T
	f    *admintest.Fake
	s    *admin.Server
	h    http.Handler
	logs *syncBuffer
}

func newFixture(t *testing.T, f *admintest.Fake) *fixture {
	t.Helper()
	logs := &syncBuffer{}
	s, err := admin.NewServer(admin.ServerConfig{
		Backend: f, Token: token, QueryTimeout: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, f: f, s: s, h: s.Handler(), logs: logs}
}

// do makes one request with the test token (auth "" sends none).
func (fx *fixture) do(method, path, body string) (int, []byte) {
	return fx.doAuth(method, path, body, "Bearer "+token)
}

func (fx *fixture) doAuth(method, path, body, auth string) (int, []byte) {
	fx.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, rd)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rec := httptest.NewRecorder()
	fx.h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes()
}

// wantError checks an error answer's status and code.
func wantError(t *testing.T, status int, body []byte, wantStatus int, wantCode string) admin.ErrorBody {
	t.Helper()
	var eb admin.ErrorBody
	if err := json.Unmarshal(body, &eb); err != nil {
		t.Fatalf("status %d, body %q: not a JSON error: %v", status, body, err)
	}
	if status != wantStatus || eb.Error.Code != wantCode {
		t.Fatalf("got %d %s (%s), want %d %s", status, eb.Error.Code, eb.Error.Message, wantStatus, wantCode)
	}
	if eb.Error.Message == "" {
		t.Fatalf("error %s without a message", wantCode)
	}
	return eb
}

func decodeAs[T any](t *testing.T, body []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("decode %q: %v", body, err)
	}
	return v
}

func TestNewServerNeedsTokenAndBackend(t *testing.T) {
	if _, err := admin.NewServer(admin.ServerConfig{Backend: admintest.New("n1", "n1")}); err == nil {
		t.Fatal("empty token accepted")
	}
	if _, err := admin.NewServer(admin.ServerConfig{Token: "x"}); err == nil {
		t.Fatal("nil backend accepted")
	}
}

func TestAuth(t *testing.T) {
	fx := newFixture(t, admintest.Sample())
	for _, auth := range []string{"", "Bearer", "Bearer ", "Bearer wrong", "Basic " + token, token, "Bearer " + token + "x", "Bearer " + token[:len(token)-1]} {
		st, body := fx.doAuth("GET", "/v1/sites", "", auth)
		wantError(t, st, body, http.StatusUnauthorized, admin.CodeUnauthorized)
	}
	// Unknown routes and wrong methods are not revealed without a token.
	st, body := fx.doAuth("GET", "/v1/nope", "", "")
	wantError(t, st, body, http.StatusUnauthorized, admin.CodeUnauthorized)
	st, body = fx.doAuth("DELETE", "/v1/sites", "", "Bearer wrong")
	wantError(t, st, body, http.StatusUnauthorized, admin.CodeUnauthorized)
	if len(fx.f.Sent()) != 0 || len(fx.f.Queries()) != 0 {
		t.Fatal("an unauthorized request reached the backend")
	}

	for _, auth := range []string{"Bearer " + token, "bearer " + token} {
		if st, body := fx.doAuth("GET", "/v1/sites", "", auth); st != http.StatusOK {
			t.Fatalf("%q: %d %s", auth, st, body)
		}
	}
	st, body = fx.doAuth("GET", "/v1/health", "", "")
	if st != http.StatusOK {
		t.Fatalf("health without token: %d %s", st, body)
	}
	if h := decodeAs[admin.Health](t, body); h.Node != "n1" || !h.OK {
		t.Fatalf("health: %+v", h)
	}
}

func TestTokenNeverLogged(t *testing.T) {
	fx := newFixture(t, admintest.Sample())
	fx.do("GET", "/v1/sites", "")
	fx.do("GET", "/v1/sites/shop", "")
	fx.doAuth("GET", "/v1/sites", "", "Bearer "+token+"-wrong")
	fx.do("POST", "/v1/sites", `{"name":"x","domains":["x.example"],"ftp_users":[{"name":"u","password":"pw-in-body"}]}`)
	logs := fx.logs.String()
	if strings.Contains(logs, token) || strings.Contains(logs, "pw-in-body") {
		t.Fatalf("a secret is in the log:\n%s", logs)
	}
	for _, want := range []string{"method=GET path=/v1/sites status=200", "path=/v1/sites/shop status=200", "status=401", "method=POST path=/v1/sites status=202", "duration="} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if n := strings.Count(logs, "\n"); n != 4 {
		t.Errorf("want one line per request (4), got %d:\n%s", n, logs)
	}
}

func TestRoutesAndMethods(t *testing.T) {
	fx := newFixture(t, admintest.Sample())
	st, body := fx.do("GET", "/v1/nope", "")
	wantError(t, st, body, http.StatusNotFound, admin.CodeNotFound)
	st, body = fx.do("GET", "/v2/sites", "")
	wantError(t, st, body, http.StatusNotFound, admin.CodeNotFound)

	for _, c := range []struct{ method, path string }{
		{"DELETE", "/v1/sites"}, {"PUT", "/v1/sites/shop"}, {"GET", "/v1/sites/shop/migrate"},
		{"DELETE", "/v1/nodes/n1/drain"}, {"POST", "/v1/nodes"}, {"POST", "/v1/events"},
	} {
		req := httptest.NewRequest(c.method, c.path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		fx.h.ServeHTTP(rec, req)
		wantError(t, rec.Code, rec.Body.Bytes(), http.StatusMethodNotAllowed, admin.CodeNotAllowed)
		if rec.Header().Get("Allow") == "" {
			t.Errorf("%s %s: 405 without Allow", c.method, c.path)
		}
	}
	// Health with a wrong method needs no token either, and is a 405.
	st, body = fx.doAuth("POST", "/v1/health", "", "")
	wantError(t, st, body, http.StatusMethodNotAllowed, admin.CodeNotAllowed)
}

func siteByName(t *testing.T, sites []admin.Site, name string) admin.Site {
	t.Helper()
	for _, s := range sites {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no site %s in %+v", name, sites)
	return admin.Site{}
}

func TestSitesFromClusterView(t *testing.T) {
	fx := newFixture(t, admintest.Sample())
	st, body := fx.do("GET", "/v1/sites", "")
	if st != http.StatusOK {
		t.Fatalf("%d %s", st, body)
	}
	if strings.Contains(string(body), "SECRETHASH") || strings.Contains(strings.ToLower(string(body)), "password") {
		t.Fatalf("a password or hash is in the answer: %s", body)
	}
	sites := decodeAs[admin.SiteList](t, body).Sites
	var names []string
	for _, s := range sites {
		names = append(names, s.Name)
	}
	if got := strings.Join(names, " "); got != "blog fresh mig shop wiki" {
		t.Fatalf("sites %q", got)
	}

	shop := siteByName(t, sites, "shop")
	if shop.Master != "n1" || shop.Phase != "active" || shop.Epoch != "100:n1" ||
		strings.Join(shop.Replicas, ",") != "n2,n3" || shop.LagS != 2.5 {
		t.Fatalf("shop: %+v", shop)
	}
	if shop.LastSnapshot == nil || shop.LastSnapshot.Name != "e100-n1-s3" || shop.LastSnapshot.Seq != 3 ||
		!shop.LastSnapshot.TakenAt.Equal(time.UnixMilli(admintest.SampleAtMs-10_000)) {
		t.Fatalf("shop last snapshot %+v", shop.LastSnapshot)
	}
	if strings.Join(shop.FTPUsers, ",") != "alice" || strings.Join(shop.MySQLUsers, ",") != "shopdb" ||
		shop.AppCommand != "php-fpm" || shop.QuotaBytes != 10<<30 || strings.Join(shop.Domains, ",") != "shop.example,www.shop.example" {
		t.Fatalf("shop spec fields: %+v", shop)
	}
	if len(shop.Copies) != 3 {
		t.Fatalf("shop copies %+v", shop.Copies)
	}
	for _, c := range shop.Copies {
		want := map[string]struct {
			role string
			lag  float64
		}{"n1": {"master", 0}, "n2": {"replica", 2.5}, "n3": {"replica", 0}}[c.Node]
		if c.Role != want.role || c.LagS != want.lag {
			t.Errorf("shop copy %+v, want role %s lag %v", c, want.role, want.lag)
		}
	}
	if !shop.ReportedAt.Equal(time.UnixMilli(admintest.SampleAtMs - 400)) {
		t.Errorf("shop reported at %v", shop.ReportedAt)
	}

	// Two active masters after a partition: the higher epoch is the master;
	// a demoted copy at a still higher epoch is not.
	blog := siteByName(t, sites, "blog")
	if blog.Master != "n2" || blog.Phase != "active" || blog.Epoch != "60:n2" || strings.Join(blog.Replicas, ",") != "n1,n3" {
		t.Fatalf("blog: %+v", blog)
	}
	// The replica n1 has a newer... no: n1's snapshot is older (20 s), n3's newer (5 s): lag never negative.
	for _, c := range blog.Copies {
		if c.LagS < 0 {
			t.Errorf("negative lag %+v", c)
		}
		if c.Node == "n3" && (c.Phase != "demoted" || c.Role != "replica") {
			t.Errorf("blog n3 copy %+v", c)
		}
	}
	if blog.LagS != 17 {
		t.Errorf("blog lag %v, want 17 (n1 is 17 s behind n2)", blog.LagS)
	}

	mig := siteByName(t, sites, "mig")
	if mig.Master != "n2" || mig.Phase != "promoting" || mig.Epoch != "101:n2" {
		t.Fatalf("mig: %+v", mig)
	}
	wiki := siteByName(t, sites, "wiki")
	if wiki.Master != "" || wiki.Phase != "failing_over" || wiki.Epoch != "90:n4" || strings.Join(wiki.Replicas, ",") != "n3" || wiki.LastSnapshot == nil {
		t.Fatalf("wiki: %+v", wiki)
	}
	// Why a copy could not take over shows while the site has no master.
	if len(wiki.Copies) != 1 || wiki.Copies[0].ActivationError != admintest.SampleTakeoverError {
		t.Fatalf("wiki's copies: %+v", wiki.Copies)
	}
	for _, cp := range siteByName(t, sites, "shop").Copies {
		if cp.ActivationError != "" {
			t.Fatalf("shop has a master, and its copy on %s shows a failed takeover: %q", cp.Node, cp.ActivationError)
		}
		// The master's word on its last stream to each replica.
		if want := map[string]string{"n2": admintest.SampleReplicationError}[cp.Node]; cp.ReplicationError != want {
			t.Fatalf("shop's copy on %s: replication error %q, want %q", cp.Node, cp.ReplicationError, want)
		}
	}
	fresh := siteByName(t, sites, "fresh")
	if fresh.Master != "" || fresh.Phase != "placing" || len(fresh.Copies) != 0 || fresh.Replicas == nil {
		t.Fatalf("fresh: %+v", fresh)
	}

	// The cluster query went to this node's node actor.
	q := fx.f.Queries()
	if len(q) != 1 || q[0].To != core.NodeAddr("n1") || q[0].Q.GetKind() != m.AdminQueryKind_ADMIN_QUERY_CLUSTER {
		t.Fatalf("queries %+v", q)
	}
}

func TestSiteShow(t *testing.T) {
	fx := newFixture(t, admintest.Sample())
	st, body := fx.do("GET", "/v1/sites/shop", "")
	if st != http.StatusOK {
		t.Fatalf("%d %s", st, body)
	}
	if s := decodeAs[admin.Site](t, body); s.Name != "shop" || s.Master != "n1" {
		t.Fatalf("%+v", s)
	}
	st, body = fx.do("GET", "/v1/sites/nosuch", "")
	if eb := wantError(t, st, body, http.StatusNotFound, admin.CodeNotFound); eb.Error.Message != "no such site" {
		t.Fatalf("message %q", eb.Error.Message)
	}
	for _, bad := range []string{"/v1/sites/Shop", "/v1/sites/..%2Fx", "/v1/sites/-rf", "/v1/sites/" + strings.Repeat("a", 64)} {
		st, body = fx.do("GET", bad, "")
		wantError(t, st, body, http.StatusBadRequest, admin.CodeBadRequest)
	}
}

func TestClusterViewUnavailable(t *testing.T) {
	f := admintest.Sample()
	f.SetCluster(nil) // no answer: the query times out
	fx := newFixture(t, f)
	start := time.Now()
	st, body := fx.do("GET", "/v1/sites", "")
	eb := wantError(t, st, body, http.StatusServiceUnavailable, admin.CodeUnavailable)
	if !strings.Contains(eb.Error.Message, "did not answer") {
		t.Errorf("message %q", eb.Error.Message)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the query timeout was not applied: %v", d)
	}
	f.SetCluster(&m.AdminView{Code: m.Code_CODE_MOVED, Node: "n1", Balancer: "n0"})
	st, body = fx.do("GET", "/v1/nodes", "")
	eb = wantError(t, st, body, http.StatusServiceUnavailable, admin.CodeUnavailable)
	if !strings.Contains(eb.Error.Message, "no active balancer") {
		t.Errorf("message %q", eb.Error.Message)
	}
	st, body = fx.do("POST", "/v1/sites", `{"name":"x","domains":["x.example"]}`)
	wantError(t, st, body, http.StatusServiceUnavailable, admin.CodeUnavailable)
	if len(f.Sent()) != 0 {
		t.Fatal("a create was sent without a cluster view")
	}
}

func TestCreateValidation(t *testing.T) {
	fx := newFixture(t, admintest.Sample())
	long := strings.Repeat("a", 64)
	cases := []struct{ name, body string }{
		{"empty body", ``},
		{"not json", `name=x`},
		{"trailing data", `{"name":"ok","domains":["ok.example"]} {}`},
		{"unknown field", `{"name":"ok","domains":["ok.example"],"admin":true}`},
		{"wrong type", `{"name":1,"domains":["ok.example"]}`},
		{"no name", `{"domains":["ok.example"]}`},
		{"traversal", `{"name":"../x","domains":["ok.example"]}`},
		{"slash", `{"name":"a/b","domains":["ok.example"]}`},
		{"option", `{"name":"-rf","domains":["ok.example"]}`},
		{"trailing dash", `{"name":"ok-","domains":["ok.example"]}`},
		{"uppercase", `{"name":"Shop","domains":["ok.example"]}`},
		{"too long", `{"name":"` + long + `","domains":["ok.example"]}`},
		{"dot", `{"name":"a.b","domains":["ok.example"]}`},
		{"nul", `{"name":"a\u0000b","domains":["ok.example"]}`},
		{"unicode", `{"name":"caf\u00e9","domains":["ok.example"]}`},
		{"no domains", `{"name":"ok","domains":[]}`},
		{"bad domain", `{"name":"ok","domains":["not a domain"]}`},
		{"domain injection", `{"name":"ok","domains":["a.example;rm -rf /"]}`},
		{"domain label dash", `{"name":"ok","domains":["-a.example"]}`},
		{"domain ip", `{"name":"ok","domains":["10.0.0.1"]}`},
		{"domain kelvin", `{"name":"ok","domains":["\u212a.example"]}`},
		{"domain empty label", `{"name":"ok","domains":["a..example"]}`},
		{"domain too long label", `{"name":"ok","domains":["` + long + `.example"]}`},
		{"duplicate domain", `{"name":"ok","domains":["a.example","A.example"]}`},
		{"too many domains", `{"name":"ok","domains":[` + strings.TrimSuffix(strings.Repeat(`"d.example",`, 65), ",") + `]}`},
		{"bad user", `{"name":"ok","domains":["ok.example"],"ftp_users":[{"name":"Bob","password":"x"}]}`},
		{"user injection", `{"name":"ok","domains":["ok.example"],"mysql_users":[{"name":"x'; DROP","password":"x"}]}`},
		{"long user", `{"name":"ok","domains":["ok.example"],"ftp_users":[{"name":"` + strings.Repeat("u", 33) + `","password":"x"}]}`},
		{"empty password", `{"name":"ok","domains":["ok.example"],"ftp_users":[{"name":"bob","password":""}]}`},
		{"long password", `{"name":"ok","domains":["ok.example"],"ftp_users":[{"name":"bob","password":"` + strings.Repeat("p", 129) + `"}]}`},
		{"duplicate user", `{"name":"ok","domains":["ok.example"],"ftp_users":[{"name":"bob","password":"x"},{"name":"bob","password":"y"}]}`},
		{"bad database", `{"name":"ok","domains":["ok.example"],"mysql_users":[{"name":"bob","password":"x","databases":["a-b"]}]}`},
		{"ftp databases", `{"name":"ok","domains":["ok.example"],"ftp_users":[{"name":"bob","password":"x","databases":["a"]}]}`},
		{"app nul", `{"name":"ok","domains":["ok.example"],"app_command":"run\u0000x"}`},
		{"app too long", `{"name":"ok","domains":["ok.example"],"app_command":"` + strings.Repeat("x", 4097) + `"}`},
		{"redundancy", `{"name":"ok","domains":["ok.example"],"redundancy":17}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st, body := fx.do("POST", "/v1/sites", c.body)
			wantError(t, st, body, http.StatusBadRequest, admin.CodeBadRequest)
		})
	}
	// Over 1 MiB: 413.
	huge := `{"name":"ok","domains":["ok.example"],"app_command":"` + strings.Repeat("x", admin.MaxBodyBytes) + `"}`
	st, body := fx.do("POST", "/v1/sites", huge)
	wantError(t, st, body, http.StatusRequestEntityTooLarge, admin.CodeTooLarge)

	// Existing, pending, and a domain another site answers: 409.
	for _, body := range []string{
		`{"name":"shop","domains":["other.example"]}`,
		`{"name":"fresh","domains":["other.example"]}`,
		`{"name":"wiki","domains":["other.example"]}`,
		`{"name":"ok","domains":["WWW.shop.example."]}`,
	} {
		st, b := fx.do("POST", "/v1/sites", body)
		wantError(t, st, b, http.StatusConflict, admin.CodeConflict)
	}
	if sent := fx.f.Sent(); len(sent) != 0 {
		t.Fatalf("invalid creates were sent: %v", sent)
	}
}

func TestCreateSends(t *testing.T) {
	fx := newFixture(t, admintest.Sample())
	st, body := fx.do("POST", "/v1/sites", `{"name":"new-site2","domains":["New-Site.Example.","www.new-site.example"],
		"app_command":"node server.js","quota_bytes":1073741824,"redundancy":3,
		"ftp_users":[{"name":"web","password":"ftp-pass:1"}],
		"mysql_users":[{"name":"app_user","password":"sql-pass","databases":["app","app_test"]}]}`)
	if st != http.StatusAccepted {
		t.Fatalf("%d %s", st, body)
	}
	if strings.Contains(string(body), "ftp-pass") || strings.Contains(string(body), "sql-pass") || strings.Contains(string(body), "pbkdf2") {
		t.Fatalf("a password is in the answer: %s", body)
	}
	site := decodeAs[admin.SiteBody](t, body).Site
	if site.Name != "new-site2" || site.Phase != "placing" || site.Master != "" ||
		strings.Join(site.Domains, ",") != "new-site.example,www.new-site.example" ||
		strings.Join(site.FTPUsers, ",") != "web" || strings.Join(site.MySQLUsers, ",") != "app_user" {
		t.Fatalf("answer %+v", site)
	}
	sent := fx.f.Sent()
	if len(sent) != 1 || sent[0].To != core.NodeAddr("n1") {
		t.Fatalf("sent %+v", sent)
	}
	cs, ok := sent[0].Msg.(*m.CreateSite)
	if !ok {
		t.Fatalf("sent a %T", sent[0].Msg)
	}
	spec := cs.GetSpec()
	ftpHash, sqlHash := spec.GetFtpUsers()[0].GetPasswordHash(), spec.GetMysqlUsers()[0].GetPasswordHash()
	if !admin.VerifyFTPPassword(ftpHash, "ftp-pass:1") || admin.VerifyFTPPassword(ftpHash, "ftp-pass:2") {
		t.Fatalf("ftp hash %q does not check", ftpHash)
	}
	// mysql_native_password of "sql-pass".
	if sqlHash != admin.HashMySQLPassword("sql-pass") || len(sqlHash) != 41 || sqlHash[0] != '*' {
		t.Fatalf("mysql hash %q", sqlHash)
	}
	want := &m.CreateSite{Spec: &m.SiteSpec{
		Name: "new-site2", Domains: []string{"new-site.example", "www.new-site.example"},
		AppCommand: "node server.js", QuotaBytes: 1 << 30, Redundancy: 3,
		FtpUsers:   []*m.FtpUser{{Name: "web", PasswordHash: ftpHash}},
		MysqlUsers: []*m.MysqlUser{{Name: "app_user", PasswordHash: sqlHash, Databases: []string{"app", "app_test"}}},
	}}
	if !proto.Equal(cs, want) {
		t.Fatalf("sent %v\nwant %v", cs, want)
	}
}

func TestMigrate(t *testing.T) {
	fx := newFixture(t, admintest.Sample())
	cases := []struct {
		site, body string
		status     int
		code       string
	}{
		{"shop", `{"to":"n9"}`, 404, admin.CodeNotFound},     // not a member
		{"shop", `{"to":"n4"}`, 409, admin.CodeConflict},     // a member, down
		{"shop", `{"to":"n1"}`, 409, admin.CodeConflict},     // already the master
		{"nosuch", `{"to":"n2"}`, 404, admin.CodeNotFound},   // no such site
		{"wiki", `{"to":"n2"}`, 503, admin.CodeUnavailable},  // no master
		{"fresh", `{"to":"n2"}`, 503, admin.CodeUnavailable}, // not placed yet
		{"shop", `{}`, 400, admin.CodeBadRequest},
		{"shop", `{"to":"n2","now":true}`, 400, admin.CodeBadRequest},
		{"Shop", `{"to":"n2"}`, 400, admin.CodeBadRequest},
	}
	for _, c := range cases {
		st, body := fx.do("POST", "/v1/sites/"+c.site+"/migrate", c.body)
		wantError(t, st, body, c.status, c.code)
	}
	if sent := fx.f.Sent(); len(sent) != 0 {
		t.Fatalf("refused migrations were sent: %v", sent)
	}

	st, body := fx.do("POST", "/v1/sites/shop/migrate", `{"to":"n3"}`)
	if st != http.StatusAccepted {
		t.Fatalf("%d %s", st, body)
	}
	if s := decodeAs[admin.SiteBody](t, body).Site; s.Name != "shop" || s.Master != "n1" {
		t.Fatalf("answer %+v", s)
	}
	sent := fx.f.Sent()
	if len(sent) != 1 || sent[0].To != core.SiteAddr("n1", "shop") ||
		!proto.Equal(sent[0].Msg, &m.Migrate{Site: "shop", Target: "n3", Reason: "admin"}) {
		t.Fatalf("sent %+v", sent)
	}
}

func TestSnapshotsRollbackStash(t *testing.T) {
	fx := newFixture(t, admintest.Sample())
	st, body := fx.do("GET", "/v1/sites/shop/snapshots", "")
	if st != http.StatusOK {
		t.Fatalf("%d %s", st, body)
	}
	l := decodeAs[admin.SnapshotList](t, body)
	if l.Node != "n1" || len(l.Snapshots) != 3 || l.Snapshots[2].Name != "e100-n1-s3" || l.Snapshots[2].Epoch != "100:n1" {
		t.Fatalf("snapshots %+v", l)
	}
	var siteQueries []admintest.Query
	for _, q := range fx.f.Queries() {
		if q.Q.GetKind() == m.AdminQueryKind_ADMIN_QUERY_SITE {
			siteQueries = append(siteQueries, q)
		}
	}
	if len(siteQueries) != 1 || siteQueries[0].To != core.DatasetAddr("n1", "shop") || siteQueries[0].Q.GetSite() != "shop" {
		t.Fatalf("site queries %+v", siteQueries)
	}

	st, body = fx.do("POST", "/v1/sites/shop/rollback", `{"snapshot":"e100-n1-s9"}`)
	wantError(t, st, body, http.StatusNotFound, admin.CodeNotFound)
	st, body = fx.do("POST", "/v1/sites/shop/rollback", `{"snapshot":""}`)
	wantError(t, st, body, http.StatusBadRequest, admin.CodeBadRequest)
	st, body = fx.do("POST", "/v1/sites/wiki/rollback", `{"snapshot":"x"}`)
	wantError(t, st, body, http.StatusServiceUnavailable, admin.CodeUnavailable)
	// A dataset that does not know the site: 404.
	st, body = fx.do("GET", "/v1/sites/blog/snapshots", "")
	wantError(t, st, body, http.StatusNotFound, admin.CodeNotFound)
	st, body = fx.do("POST", "/v1/sites/shop/stash/nosuch/restore", "")
	wantError(t, st, body, http.StatusNotFound, admin.CodeNotFound)
	if sent := fx.f.Sent(); len(sent) != 0 {
		t.Fatalf("sent %v", sent)
	}

	st, body = fx.do("POST", "/v1/sites/shop/rollback", `{"snapshot":"e100-n1-s2"}`)
	if st != http.StatusAccepted {
		t.Fatalf("%d %s", st, body)
	}
	st, body = fx.do("GET", "/v1/sites/shop/stash", "")
	if sl := decodeAs[admin.StashList](t, body); st != 200 || sl.Node != "n1" || len(sl.Stashes) != 1 {
		t.Fatalf("%d %s", st, body)
	}
	st, body = fx.do("POST", "/v1/sites/shop/stash/stash-e90-n4-1/restore", "")
	if st != http.StatusAccepted {
		t.Fatalf("restore: %d %s", st, body)
	}
	st, body = fx.do("POST", "/v1/sites/shop/snapshots", "")
	if st != http.StatusAccepted {
		t.Fatalf("%d %s", st, body)
	}
	sent := fx.f.Sent()
	want := []admintest.Sent{
		{To: core.SiteAddr("n1", "shop"), Msg: &m.AdminRollback{Site: "shop", Snapshot: "e100-n1-s2"}},
		{To: core.SiteAddr("n1", "shop"), Msg: &m.AdminRestoreStash{Site: "shop", Stash: "stash-e90-n4-1"}},
		{To: core.SiteAddr("n1", "shop"), Msg: &m.AdminSnapshot{Site: "shop"}},
	}
	if len(sent) != len(want) {
		t.Fatalf("sent %v", sent)
	}
	for i := range want {
		if sent[i].To != want[i].To || !proto.Equal(sent[i].Msg, want[i].Msg) {
			t.Errorf("sent[%d] = %v to %v, want %v to %v", i, sent[i].Msg, sent[i].To, want[i].Msg, want[i].To)
		}
	}
}

func TestNodesAndDrain(t *testing.T) {
	fx := newFixture(t, admintest.Sample())
	st, body := fx.do("GET", "/v1/nodes", "")
	if st != http.StatusOK {
		t.Fatalf("%d %s", st, body)
	}
	nodes := decodeAs[admin.NodeList](t, body).Nodes
	if len(nodes) != 4 {
		t.Fatalf("nodes %+v", nodes)
	}
	n1, n3, n4 := nodes[0], nodes[2], nodes[3]
	if n1.Name != "n1" || !n1.Live || !n1.Balancer || n1.Load != 42 || n1.Masters != 3 || n1.Replicas != 0 || n1.FreeBytes != 100<<30 || n1.SizeBytes != 400<<30 {
		t.Errorf("n1 %+v", n1)
	}
	if n3.Name != "n3" || !n3.Draining || n3.Balancer || n3.Masters != 1 || n3.Replicas != 2 {
		t.Errorf("n3 %+v", n3)
	}
	if n4.Name != "n4" || n4.Live || !n4.ReportedAt.IsZero() {
		t.Errorf("n4 %+v", n4)
	}

	st, body = fx.do("POST", "/v1/nodes/n9/drain", "")
	wantError(t, st, body, http.StatusNotFound, admin.CodeNotFound)
	st, body = fx.do("POST", "/v1/nodes/n2/drain", "")
	if st != http.StatusAccepted {
		t.Fatalf("%d %s", st, body)
	}
	sent := fx.f.Sent()
	if len(sent) != 1 || sent[0].To != core.NodeAddr("n2") || !proto.Equal(sent[0].Msg, &m.DrainNode{Node: "n2"}) {
		t.Fatalf("sent %+v", sent)
	}

	// Remove: only a member that is down, never the answering node; every
	// other member's node actor is told.
	st, body = fx.do("POST", "/v1/nodes/n9/remove", "")
	wantError(t, st, body, http.StatusNotFound, admin.CodeNotFound)
	st, body = fx.do("POST", "/v1/nodes/n2/remove", "")
	wantError(t, st, body, http.StatusConflict, admin.CodeConflict)
	st, body = fx.do("POST", "/v1/nodes/n1/remove", "")
	wantError(t, st, body, http.StatusConflict, admin.CodeConflict)
	if got := len(fx.f.Sent()); got != 1 {
		t.Fatalf("a refused removal sent %d messages", got-1)
	}
	st, body = fx.do("POST", "/v1/nodes/n4/remove", "")
	if st != http.StatusAccepted {
		t.Fatalf("remove n4 (down): %d %s", st, body)
	}
	var told []string
	for _, s := range fx.f.Sent()[1:] {
		if !proto.Equal(s.Msg, &m.RemoveNode{Node: "n4"}) {
			t.Fatalf("remove sent %v", s)
		}
		told = append(told, s.To.Node)
	}
	if !slices.Equal(told, []string{"n1", "n2", "n3"}) {
		t.Fatalf("remove told %v, want n1 n2 n3", told)
	}
}

// ---------------------------------------------------------------- events

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func openStream(t *testing.T, ctx context.Context, url string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", url+"/v1/events", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestEventsStream(t *testing.T) {
	before := runtime.NumGoroutine()
	fx := newFixture(t, admintest.Sample())
	fx.s.SetEventLimits(admin.MaxEventStreams, 30*time.Millisecond)
	srv := httptest.NewServer(fx.h)

	ctx, cancel := context.WithCancel(context.Background())
	resp := openStream(t, ctx, srv.URL)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	waitFor(t, "a subscriber", func() bool { return fx.f.Subscribers() == 1 })
	up := true
	at := time.UnixMilli(admintest.SampleAtMs).UTC()
	fx.f.Publish(admin.Event{Type: "route", At: at, Site: "shop", Master: "n2", Epoch: "101:n2", Phase: "active"})
	fx.f.Publish(admin.Event{Type: "member", At: at, Node: "n4", Up: &up})
	fx.f.Publish(admin.Event{Type: "bad\ntype", At: at, Msg: "line\nbreak"})

	rd := bufio.NewReader(resp.Body)
	var got []string
	pings := 0
	for len(got) < 3 || pings == 0 {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("after %q: %v", got, err)
		}
		switch {
		case line == ": ping\n":
			pings++
		case strings.HasPrefix(line, "event: "):
			data, err := rd.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			blank, _ := rd.ReadString('\n')
			if blank != "\n" {
				t.Fatalf("event not ended by a blank line: %q", blank)
			}
			got = append(got, line+data)
		}
	}
	want := []string{
		"event: route\ndata: {\"type\":\"route\",\"at\":\"2023-11-14T22:15:00Z\",\"site\":\"shop\",\"master\":\"n2\",\"epoch\":\"101:n2\",\"phase\":\"active\"}\n",
		"event: member\ndata: {\"type\":\"member\",\"at\":\"2023-11-14T22:15:00Z\",\"node\":\"n4\",\"up\":true}\n",
		"event: message\ndata: {\"type\":\"bad\\ntype\",\"at\":\"2023-11-14T22:15:00Z\",\"msg\":\"line\\nbreak\"}\n",
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d:\n got %q\nwant %q", i, got[i], want[i])
		}
	}

	// The client goes away: the handler returns and cancels its subscription.
	cancel()
	resp.Body.Close()
	waitFor(t, "the subscription to be cancelled", func() bool { return fx.f.Subscribers() == 0 && fx.s.OpenStreams() == 0 })
	srv.Close()
	http.DefaultClient.CloseIdleConnections()
	waitFor(t, "the goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}

func TestEventsEndWhenBackendDrops(t *testing.T) {
	fx := newFixture(t, admintest.Sample())
	srv := httptest.NewServer(fx.h)
	defer srv.Close()
	resp := openStream(t, context.Background(), srv.URL)
	defer resp.Body.Close()
	waitFor(t, "a subscriber", func() bool { return fx.f.Subscribers() == 1 })
	fx.f.DropSubscribers()
	done := make(chan error, 1)
	go func() { _, err := io.ReadAll(resp.Body); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the stream did not end when the backend dropped it")
	}
	waitFor(t, "the stream slot", func() bool { return fx.s.OpenStreams() == 0 })
}

func TestEventStreamBound(t *testing.T) {
	fx := newFixture(t, admintest.Sample())
	fx.s.SetEventLimits(2, time.Hour)
	srv := httptest.NewServer(fx.h)
	defer srv.Close()
	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	r1 := openStream(t, ctx1, srv.URL)
	defer r1.Body.Close()
	r2 := openStream(t, context.Background(), srv.URL)
	defer r2.Body.Close()
	waitFor(t, "two subscribers", func() bool { return fx.f.Subscribers() == 2 })

	r3 := openStream(t, context.Background(), srv.URL)
	b, _ := io.ReadAll(r3.Body)
	r3.Body.Close()
	wantError(t, r3.StatusCode, b, http.StatusServiceUnavailable, admin.CodeUnavailable)

	cancel1()
	r1.Body.Close()
	waitFor(t, "a free slot", func() bool { return fx.s.OpenStreams() == 1 })
	r4 := openStream(t, context.Background(), srv.URL)
	defer r4.Body.Close()
	if r4.StatusCode != 200 {
		t.Fatalf("after a stream ended: %d", r4.StatusCode)
	}
}

// Stats (goroutines and memory of the node process) need the token.
func TestStats(t *testing.T) {
	fx := newFixture(t, admintest.Sample())
	st, body := fx.doAuth("GET", "/v1/stats", "", "")
	wantError(t, st, body, http.StatusUnauthorized, admin.CodeUnauthorized)
	st, body = fx.do("GET", "/v1/stats", "")
	s := decodeAs[admin.Stats](t, body)
	if st != http.StatusOK || s.Node != "n1" || s.Goroutines < 1 || s.HeapBytes == 0 || s.SysBytes < s.HeapBytes {
		t.Fatalf("stats: %d %+v", st, s)
	}
}
