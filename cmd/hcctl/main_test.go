package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
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

const token = "hcctl-test-token"

// endpoint serves the real admin server over f.
func endpoint(t *testing.T, f *admintest.Fake) *httptest.Server {
	t.Helper()
	s, err := admin.NewServer(admin.ServerConfig{Backend: f, Token: token, QueryTimeout: time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return srv
}

// fixedNow pins the CLI's clock to the sample view's time.
func fixedNow(t *testing.T) {
	old := now
	now = func() time.Time { return time.UnixMilli(admintest.SampleAtMs) }
	t.Cleanup(func() { now = old })
}

type result struct {
	code           int
	stdout, stderr string
}

func runWith(ctx context.Context, env map[string]string, args ...string) result {
	var out, errw bytes.Buffer
	code := runContext(ctx, args, func(k string) string { return env[k] }, &out, &errw)
	return result{code, out.String(), errw.String()}
}

// hcctl runs the CLI against srv with the token in the environment.
func hcctl(srv *httptest.Server, args ...string) result {
	return runWith(context.Background(), map[string]string{"HC_ENDPOINT": srv.URL, "HC_TOKEN": token}, args...)
}

func (r result) ok(t *testing.T) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	return r
}

// rows is the table output as whitespace-separated fields per line.
func rows(out string) map[string]string {
	rs := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 {
			rs[f[0]] = strings.Join(f, " ")
		}
	}
	return rs
}

func TestSitesTable(t *testing.T) {
	fixedNow(t)
	srv := endpoint(t, admintest.Sample())
	r := hcctl(srv, "sites").ok(t)
	got := rows(r.stdout)
	want := map[string]string{
		"NAME":  "NAME MASTER PHASE EPOCH REPLICAS LAST-SNAPSHOT LAG DOMAINS",
		"shop":  "shop n1 active 100:n1 n2,n3 10s ago 2.5s shop.example,www.shop.example",
		"blog":  "blog n2 active 60:n2 n1,n3 3s ago 17.0s blog.example",
		"mig":   "mig n2 promoting 101:n2 n1 1s ago 0.0s mig.example",
		"wiki":  "wiki - failing_over 90:n4 n3 1m ago - wiki.example",
		"fresh": "fresh - placing - - - - fresh.example",
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("row %s:\n got %q\nwant %q", k, got[k], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("rows:\n%s", r.stdout)
	}
	if r.stderr != "" {
		t.Errorf("stderr %q", r.stderr)
	}
}

func TestSiteShowAndNodes(t *testing.T) {
	fixedNow(t)
	srv := endpoint(t, admintest.Sample())
	r := hcctl(srv, "site", "show", "shop").ok(t)
	for _, want := range []string{"master:", "n1", "replication lag:  2.5s", "ftp users:", "alice", "mysql users:", "shopdb",
		"quota:            10.0G", "e100-n1-s3 at "} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("site show lacks %q:\n%s", want, r.stdout)
		}
	}
	copies := rows(r.stdout[strings.Index(r.stdout, "NODE"):])
	if copies["n2"] != "n2 replica stopped 100:n1 e100-n1-s2 12s ago 2.5s 2 0 0B" {
		t.Errorf("copy n2: %q\n%s", copies["n2"], r.stdout)
	}
	if strings.Contains(r.stdout, "SECRET") {
		t.Fatal("a hash is shown")
	}

	if !strings.Contains(r.stdout, "replication:      n2 is not getting the master's snapshots: "+admintest.SampleReplicationError) {
		t.Errorf("site show does not say why n2 falls behind:\n%s", r.stdout)
	}
	if strings.Contains(r.stdout, "takeover") {
		t.Errorf("shop has a master, and site show names a failed takeover:\n%s", r.stdout)
	}
	r = hcctl(srv, "site", "show", "wiki").ok(t)
	if !strings.Contains(r.stdout, "takeover:         n3 could not take over: "+admintest.SampleTakeoverError) {
		t.Errorf("site show of a site failing over does not say why:\n%s", r.stdout)
	}

	r = hcctl(srv, "stash", "shop").ok(t)
	if r.stdout != "stashes of shop on n1:\n  stash-e90-n4-1\n" {
		t.Errorf("stash: %q", r.stdout)
	}
	r = hcctl(srv, "snapshots", "shop").ok(t)
	if s := rows(r.stdout); len(s) != 4 || !strings.HasPrefix(s["e100-n1-s3"], "e100-n1-s3 100:n1 3 ") || !strings.HasSuffix(s["e100-n1-s3"], "(10s ago) -") {
		t.Errorf("snapshots:\n%s", r.stdout)
	}

	r = hcctl(srv, "nodes").ok(t)
	n := rows(r.stdout)
	if n["n1"] != "n1 yes no 42 100.0G/400.0G 3 0 yes 0s ago -" || n["n4"] != "n4 no no 0 - 0 0 no - -" || !strings.HasPrefix(n["n3"], "n3 yes yes") {
		t.Errorf("nodes:\n%s", r.stdout)
	}
}

func TestJSONOutput(t *testing.T) {
	srv := endpoint(t, admintest.Sample())
	cases := []struct {
		args []string
		into any
	}{
		{[]string{"sites"}, &admin.SiteList{}},
		{[]string{"site", "show", "shop"}, &admin.Site{}},
		{[]string{"nodes"}, &admin.NodeList{}},
		{[]string{"snapshots", "shop"}, &admin.SnapshotList{}},
		{[]string{"stash", "shop"}, &admin.StashList{}},
		{[]string{"health"}, &admin.Health{}},
		{[]string{"snapshot", "shop"}, &map[string]bool{}},
		{[]string{"drain", "n2"}, &map[string]bool{}},
		{[]string{"migrate", "shop", "n2", "--wait=false"}, &admin.Site{}},
		{[]string{"site", "create", "x", "--domain", "x.example"}, &admin.Site{}},
	}
	for _, c := range cases {
		// --json before the verb and after it.
		for _, args := range [][]string{append([]string{"--json"}, c.args...), append(append([]string{}, c.args...), "--json")} {
			r := hcctl(srv, args...).ok(t)
			dec := json.NewDecoder(strings.NewReader(r.stdout))
			dec.DisallowUnknownFields()
			if err := dec.Decode(c.into); err != nil {
				t.Errorf("%v: %v\n%s", args, err, r.stdout)
			}
		}
	}
	var l admin.SiteList
	json.Unmarshal([]byte(hcctl(srv, "--json", "sites").stdout), &l)
	if len(l.Sites) != 5 || l.Sites[3].Name != "shop" || l.Sites[3].LagS != 2.5 {
		t.Errorf("sites JSON %+v", l)
	}
}

func TestErrorsAndExitCodes(t *testing.T) {
	srv := endpoint(t, admintest.Sample())
	r := hcctl(srv, "site", "show", "x")
	if r.code != 1 || r.stderr != "hcctl: site \"x\": not_found: no such site\n" || r.stdout != "" {
		t.Fatalf("%+v", r)
	}
	r = hcctl(srv, "migrate", "shop", "n9")
	if r.code != 1 || !strings.Contains(r.stderr, `hcctl: site "shop": migrate to "n9": not_found: no such node "n9"`) {
		t.Fatalf("%+v", r)
	}
	r = hcctl(srv, "rollback", "shop", "nope")
	if r.code != 1 || !strings.Contains(r.stderr, "not_found: no snapshot") {
		t.Fatalf("%+v", r)
	}
	r = hcctl(srv, "site", "create", "../x", "--domain", "x.example")
	if r.code != 1 || !strings.Contains(r.stderr, `bad_request: site name "../x"`) {
		t.Fatalf("%+v", r)
	}

	for _, args := range [][]string{
		{},               // no verb
		{"frobnicate"},   // unknown verb
		{"site"},         // incomplete verb
		{"site", "show"}, // missing argument
		{"site", "show", "a", "b"},
		{"sites", "--bogus"}, // unknown flag
		{"--timeout", "x", "sites"},
		{"site", "create", "x"}, // no --domain
		{"site", "create", "x", "--domain", "x.example", "--quota", "lots"},
		{"site", "create", "x", "--domain", "x.example", "--ftp-user", "nopassword"},
		{"migrate", "shop", "n2", "--timeout", "0s"},
		{"help", "nosuch"},
		{"--endpoint", "ftp://x", "sites"},
	} {
		r := hcctl(srv, args...)
		if r.code != 2 || r.stderr == "" || !strings.HasPrefix(r.stderr, "hcctl") {
			t.Errorf("%q: %+v", args, r)
		}
	}

	// Nothing listening: exit 1 with the cause.
	dead := httptest.NewServer(nil)
	dead.Close()
	r = runWith(context.Background(), map[string]string{"HC_ENDPOINT": dead.URL, "HC_TOKEN": token}, "sites")
	if r.code != 1 || !strings.Contains(r.stderr, "hcctl: sites:") || !strings.Contains(r.stderr, "refused") {
		t.Fatalf("%+v", r)
	}
	// Health needs no token.
	r = runWith(context.Background(), map[string]string{"HC_ENDPOINT": srv.URL}, "health").ok(t)
	if r.stdout != "n1: ok\n" {
		t.Fatalf("%q", r.stdout)
	}
}

func TestTokenSources(t *testing.T) {
	srv := endpoint(t, admintest.Sample())
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good, bad, empty := write("good", token+"\n"), write("bad", "nope\n"), write("empty", "\n")
	cases := []struct {
		name string
		env  map[string]string
		args []string
		code int
	}{
		{"env token", map[string]string{"HC_TOKEN": token}, nil, 0},
		{"env file", map[string]string{"HC_TOKEN_FILE": good}, nil, 0},
		{"env token beats env file", map[string]string{"HC_TOKEN": token, "HC_TOKEN_FILE": bad}, nil, 0},
		{"flag beats env", map[string]string{"HC_TOKEN": "nope"}, []string{"--token", token}, 0},
		{"flag after the verb", map[string]string{"HC_TOKEN": "nope"}, []string{"sites", "--token", token}, 0},
		{"env loses to a wrong flag", map[string]string{"HC_TOKEN": token}, []string{"--token", "nope"}, 1},
		{"flag file beats env", map[string]string{"HC_TOKEN": "nope"}, []string{"--token-file", good}, 0},
		{"flag token beats flag file", nil, []string{"--token", token, "--token-file", bad}, 0},
		{"flag token beats flag file (wrong)", nil, []string{"--token", "nope", "--token-file", good}, 1},
		{"wrong env file", map[string]string{"HC_TOKEN_FILE": bad}, nil, 1},
		{"missing file", map[string]string{"HC_TOKEN_FILE": filepath.Join(dir, "missing")}, nil, 1},
		{"empty file", nil, []string{"--token-file", empty}, 1},
		{"no token", nil, nil, 2},
	}
	for _, c := range cases {
		env := map[string]string{"HC_ENDPOINT": srv.URL}
		for k, v := range c.env {
			env[k] = v
		}
		args := c.args
		if !strings.Contains(strings.Join(args, " "), "sites") {
			args = append(append([]string{}, args...), "sites")
		}
		r := runWith(context.Background(), env, args...)
		if r.code != c.code {
			t.Errorf("%s: exit %d, want %d: %s", c.name, r.code, c.code, r.stderr)
		}
		if c.code == 1 && !strings.Contains(r.stderr, "unauthorized") && !strings.Contains(r.stderr, "token file") {
			t.Errorf("%s: stderr %q", c.name, r.stderr)
		}
		if strings.Contains(r.stderr, token) {
			t.Errorf("%s: the token is in the error output", c.name)
		}
	}
	// The endpoint flag beats HC_ENDPOINT.
	r := runWith(context.Background(), map[string]string{"HC_ENDPOINT": "http://127.0.0.1:1", "HC_TOKEN": token}, "--endpoint", srv.URL, "sites")
	r.ok(t)
}

func TestHelp(t *testing.T) {
	r := runWith(context.Background(), nil, "-h")
	if r.code != 0 {
		t.Fatalf("%+v", r)
	}
	for _, want := range []string{"HC_ENDPOINT", "HC_TOKEN", "HC_TOKEN_FILE", "--token-file", "--json", "--timeout", defaultEndpoint, "Exit status"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("-h lacks %q", want)
		}
	}
	for _, c := range commands {
		if !strings.Contains(r.stdout, c.name) {
			t.Errorf("-h lacks verb %q", c.name)
		}
		h := runWith(context.Background(), nil, append([]string{"help"}, strings.Fields(c.name)...)...)
		if h.code != 0 || !strings.Contains(h.stdout, "Usage: hcctl [global flags] "+c.name) {
			t.Errorf("help %s: %+v", c.name, h)
		}
	}
	h := runWith(context.Background(), nil, "help", "migrate")
	for _, want := range []string{"-wait", "-timeout", "2m0s", "active on NODE"} {
		if !strings.Contains(h.stdout, want) {
			t.Errorf("help migrate lacks %q:\n%s", want, h.stdout)
		}
	}
	if h := runWith(context.Background(), nil, "site", "create", "-h"); h.code != 0 || !strings.Contains(h.stdout, "-mysql-user") {
		t.Errorf("site create -h: %+v", h)
	}
	// The token from the environment never shows in help.
	h = runWith(context.Background(), map[string]string{"HC_TOKEN": token}, "-h")
	if strings.Contains(h.stdout, token) {
		t.Error("help shows the token")
	}
}

func TestSiteCreate(t *testing.T) {
	f := admintest.Sample()
	srv := endpoint(t, f)
	r := hcctl(srv, "site", "create", "new", "--domain", "New.Example", "--domain", "www.new.example", "--app", "node app.js",
		"--quota", "10G", "--redundancy", "3", "--ftp-user", "web:pa:ss", "--mysql-user", "app:pw:app_db,app_test").ok(t)
	if !strings.Contains(r.stdout, "site new: asked for (placing)") {
		t.Fatalf("%q", r.stdout)
	}
	sent := f.Sent()
	if len(sent) != 1 || sent[0].To != core.NodeAddr("n1") {
		t.Fatalf("sent %v", sent)
	}
	spec := sent[0].Msg.(*m.CreateSite).GetSpec()
	if spec.GetName() != "new" || strings.Join(spec.GetDomains(), ",") != "new.example,www.new.example" ||
		spec.GetQuotaBytes() != 10<<30 || spec.GetRedundancy() != 3 || spec.GetAppCommand() != "node app.js" {
		t.Fatalf("spec %v", spec)
	}
	if u := spec.GetFtpUsers()[0]; u.GetName() != "web" || !admin.VerifyFTPPassword(u.GetPasswordHash(), "pa:ss") {
		t.Fatalf("ftp user %v", u)
	}
	if u := spec.GetMysqlUsers()[0]; u.GetName() != "app" || u.GetPasswordHash() != admin.HashMySQLPassword("pw") ||
		strings.Join(u.GetDatabases(), ",") != "app_db,app_test" {
		t.Fatalf("mysql user %v", u)
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]uint64{"0": 0, "1024": 1024, "10G": 10 << 30, "10g": 10 << 30, "512MiB": 512 << 20,
		"1.5T": 3 << 39, "2KB": 2048} {
		if got, err := parseBytes(in); err != nil || got != want {
			t.Errorf("%s: %d %v, want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "G", "-1", "ten", "1X", "1.5.5G", "16E", "99999999999999999999"} {
		if _, err := parseBytes(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// ---------------------------------------------------------------- migrate --wait

// mover is a fake cluster in which shop moves from n1 to n2 once asked:
// every cluster query after the Migrate sees the next stage.
type mover struct {
	*admintest.Fake
	mu     sync.Mutex
	asked  bool
	stage  int
	stages []*m.AdminView
}

func newMover(stages ...func(spec *m.SiteSpec) []*m.NodeReport) *mover {
	mv := &mover{Fake: admintest.New("n1", "n1", "n2")}
	spec := admintest.Spec("shop", "shop.example")
	initial := admintest.View("n1", 1000, admintest.Report("n1", 1000,
		admintest.Master(spec, "n1", m.SitePhase_SITE_PHASE_ACTIVE, admintest.Epoch(10, "n1"), admintest.Snap(admintest.Epoch(10, "n1"), 5, 900))),
		admintest.Report("n2", 1000, admintest.Replica(spec, "n2", admintest.Epoch(10, "n1"), admintest.Snap(admintest.Epoch(10, "n1"), 3, 400))))
	mv.stages = []*m.AdminView{initial}
	for _, st := range stages {
		mv.stages = append(mv.stages, admintest.View("n1", 1000, st(spec)...))
	}
	mv.OnSend = func(to core.Address, msg proto.Message) {
		if _, ok := msg.(*m.Migrate); ok {
			mv.mu.Lock()
			mv.asked = true
			mv.mu.Unlock()
		}
	}
	mv.OnQuery = func(ctx context.Context, to core.Address, q *m.AdminQuery) (*m.AdminView, error) {
		mv.mu.Lock()
		defer mv.mu.Unlock()
		if mv.asked && mv.stage < len(mv.stages)-1 {
			mv.stage++
		}
		return proto.Clone(mv.stages[mv.stage]).(*m.AdminView), nil
	}
	return mv
}

// moving is the stage where n1 is master in phase p and n2 is behind by lagMs.
func moving(p m.SitePhase, lagMs int64) func(spec *m.SiteSpec) []*m.NodeReport {
	e := admintest.Epoch(10, "n1")
	return func(spec *m.SiteSpec) []*m.NodeReport {
		return []*m.NodeReport{
			admintest.Report("n1", 1000, admintest.Master(spec, "n1", p, e, admintest.Snap(e, 6, 1000))),
			admintest.Report("n2", 1000, admintest.Replica(spec, "n2", e, admintest.Snap(e, 5, 1000-lagMs))),
		}
	}
}

// movedTo is the stage where n2 is master at a new epoch in phase p.
func movedTo(p m.SitePhase) func(spec *m.SiteSpec) []*m.NodeReport {
	e1, e2 := admintest.Epoch(10, "n1"), admintest.Epoch(11, "n2")
	return func(spec *m.SiteSpec) []*m.NodeReport {
		return []*m.NodeReport{
			admintest.Report("n1", 1000, admintest.Replica(spec, "n1", e2, admintest.Snap(e1, 6, 1000))),
			admintest.Report("n2", 1000, admintest.Master(spec, "n2", p, e2, admintest.Snap(e1, 6, 1000))),
		}
	}
}

// resumed is the stage where n1 is master again, active at a new epoch: the
// target refused its promotion between two polls.
func resumed(spec *m.SiteSpec) []*m.NodeReport {
	e1, e2 := admintest.Epoch(10, "n1"), admintest.Epoch(12, "n1")
	return []*m.NodeReport{
		admintest.Report("n1", 1000, admintest.Master(spec, "n1", m.SitePhase_SITE_PHASE_ACTIVE, e2, admintest.Snap(e1, 6, 1000))),
		admintest.Report("n2", 1000, admintest.Replica(spec, "n2", e2, admintest.Snap(e1, 6, 1000))),
	}
}

func fastPolls(t *testing.T) {
	old := pollEvery
	pollEvery = 5 * time.Millisecond
	t.Cleanup(func() { pollEvery = old })
}

func TestMigrateWait(t *testing.T) {
	fastPolls(t)
	mv := newMover(
		moving(m.SitePhase_SITE_PHASE_PRE_COPY, 1500),
		moving(m.SitePhase_SITE_PHASE_PRE_COPY, 1500),
		moving(m.SitePhase_SITE_PHASE_PAUSED, 0),
		moving(m.SitePhase_SITE_PHASE_FINAL_DELTA, 0),
		movedTo(m.SitePhase_SITE_PHASE_PROMOTING),
		movedTo(m.SitePhase_SITE_PHASE_ACTIVE),
	)
	srv := endpoint(t, mv.Fake)
	r := hcctl(srv, "migrate", "shop", "n2").ok(t)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	var got []string
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) > 1 && strings.HasSuffix(f[0], "s") {
			if _, err := time.ParseDuration(f[0]); err != nil {
				t.Errorf("line without elapsed time: %q", l)
			}
			got = append(got, strings.Join(f[1:], " "))
		}
	}
	want := []string{
		"pre_copy replicas: n2 1.5s behind",
		"paused replicas: n2 0.0s behind",
		"final_delta replicas: n2 0.0s behind",
		"promoting on n2 replicas: n1 0.0s behind",
		"active on n2 replicas: n1 0.0s behind",
		"done: shop is active on n2 at epoch 11:n2",
	}
	if lines[0] != "moving shop from n1 to n2" || strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("progress:\n%s\nwant:\n%s", r.stdout, strings.Join(want, "\n"))
	}
	sent := mv.Sent()
	if len(sent) != 1 || sent[0].To != core.SiteAddr("n1", "shop") || !proto.Equal(sent[0].Msg, &m.Migrate{Site: "shop", Target: "n2", Reason: "admin"}) {
		t.Fatalf("sent %v", sent)
	}

	// With --json the progress goes to stderr and the site to stdout.
	mv = newMover(moving(m.SitePhase_SITE_PHASE_PRE_COPY, 10), movedTo(m.SitePhase_SITE_PHASE_ACTIVE))
	srv = endpoint(t, mv.Fake)
	r = hcctl(srv, "--json", "migrate", "shop", "n2").ok(t)
	var s admin.Site
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil || s.Master != "n2" || s.Phase != "active" {
		t.Fatalf("json %q: %v", r.stdout, err)
	}
	if !strings.Contains(r.stderr, "active on n2") {
		t.Fatalf("stderr %q", r.stderr)
	}
}

func TestMigrateTimeoutAndAbandon(t *testing.T) {
	fastPolls(t)
	mv := newMover(moving(m.SitePhase_SITE_PHASE_PRE_COPY, 1000))
	srv := endpoint(t, mv.Fake)
	start := time.Now()
	r := hcctl(srv, "migrate", "shop", "n2", "--timeout", "150ms")
	if r.code != 1 || !strings.Contains(r.stderr, `hcctl: site "shop": migrate to "n2": not active on n2 after 150ms (last seen: pre_copy)`) {
		t.Fatalf("%+v", r)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("the wait bound was not kept: %v", d)
	}

	mv = newMover(moving(m.SitePhase_SITE_PHASE_PRE_COPY, 1000), moving(m.SitePhase_SITE_PHASE_ACTIVE, 0))
	srv = endpoint(t, mv.Fake)
	r = hcctl(srv, "migrate", "shop", "n2")
	if r.code != 1 || !strings.Contains(r.stderr, "abandoned: shop is active on n1 again") {
		t.Fatalf("%+v", r)
	}

	// Abandoned between two polls: no phase of the move was seen, but the
	// source is active at a new epoch.
	mv = newMover(resumed)
	srv = endpoint(t, mv.Fake)
	r = hcctl(srv, "migrate", "shop", "n2", "--timeout", "10s")
	if r.code != 1 || !strings.Contains(r.stderr, "abandoned: shop is active on n1 again") {
		t.Fatalf("%+v", r)
	}

	// --wait=false returns at once.
	mv = newMover(moving(m.SitePhase_SITE_PHASE_PRE_COPY, 1000))
	srv = endpoint(t, mv.Fake)
	r = hcctl(srv, "migrate", "--wait=false", "shop", "n2").ok(t)
	if r.stdout != "site shop: move from n1 to n2 asked for\n" {
		t.Fatalf("%q", r.stdout)
	}
}

// ---------------------------------------------------------------- events

func TestEventsFollow(t *testing.T) {
	f := admintest.Sample()
	srv := endpoint(t, f)
	up := false
	at := time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.Local)
	go func() {
		for deadline := time.Now().Add(5 * time.Second); f.Subscribers() == 0 && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		f.Publish(admin.Event{Type: "route", At: at, Site: "shop", Master: "n2", Epoch: "11:n2", Phase: "active"})
		f.Publish(admin.Event{Type: "member", At: at, Node: "n4", Up: &up})
	}()
	r := hcctl(srv, "events", "--count", "2").ok(t)
	want := "03:04:05.006  route   shop master=n2 epoch=11:n2 phase=active\n03:04:05.006  member  n4 down\n"
	if r.stdout != want {
		t.Fatalf("got\n%q\nwant\n%q", r.stdout, want)
	}

	// Interrupted (the context ends): exit 0, the stream is closed.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	r = runWith(ctx, map[string]string{"HC_ENDPOINT": srv.URL, "HC_TOKEN": token}, "--json", "events")
	if r.code != 0 {
		t.Fatalf("%+v", r)
	}
	for deadline := time.Now().Add(5 * time.Second); f.Subscribers() != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the subscription outlived hcctl events")
		}
	}
}
