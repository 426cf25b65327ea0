package sites

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	m "github.com/hybridcluster/hybridcluster/messages"
)

// demoApp is cmd/hcdemoapp built once for the package's tests.
var demoApp string

func TestMain(mainM *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "hcdemoapp-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		gomod, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			fmt.Fprintln(os.Stderr, "go env GOMOD:", err)
			return 1
		}
		demoApp = filepath.Join(dir, "hcdemoapp")
		build := exec.Command("go", "build", "-o", demoApp, "./cmd/hcdemoapp")
		build.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build ./cmd/hcdemoapp: %v\n%s", err, out)
			return 1
		}
		return mainM.Run()
	}())
}

// Every wait in these tests polls a condition up to a generous deadline.
const waitMax = 20 * time.Second

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitMax)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitMax, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testLog sends the supervisor's log to t.Log until the test ends.
type testLog struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// messages records the message of every log record, for tests that wait
// for a state transition that has no other outward sign.
type messages struct {
	mu   sync.Mutex
	msgs []string
}

func (ms *messages) seen(msg string) bool {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return slices.Contains(ms.msgs, msg)
}

type recordingHandler struct {
	slog.Handler
	ms *messages
}

func (h recordingHandler) Handle(ctx context.Context, r slog.Record) error {
	h.ms.mu.Lock()
	h.ms.msgs = append(h.ms.msgs, r.Message)
	h.ms.mu.Unlock()
	return h.Handler.Handle(ctx, r)
}

func (h recordingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return recordingHandler{h.Handler.WithAttrs(attrs), h.ms}
}

func (h recordingHandler) WithGroup(name string) slog.Handler {
	return recordingHandler{h.Handler.WithGroup(name), h.ms}
}

func newSupervisor(t *testing.T, cfg Config) *Supervisor {
	s, _ := newRecordedSupervisor(t, cfg)
	return s
}

func newRecordedSupervisor(t *testing.T, cfg Config) (*Supervisor, *messages) {
	t.Helper()
	lw := &testLog{t: t}
	t.Cleanup(func() {
		lw.mu.Lock()
		lw.done = true
		lw.mu.Unlock()
	})
	ms := &messages{}
	cfg.Logger = slog.New(recordingHandler{slog.NewTextHandler(lw, &slog.HandlerOptions{Level: slog.LevelDebug}), ms})
	s := New(cfg)
	t.Cleanup(func() {
		s.Close()
		if pids := demoProcesses(t); len(pids) > 0 {
			t.Errorf("hcdemoapp processes left after Close: %v", pids)
		}
	})
	return s, ms
}

// serveSite is an HTTP server that hands every request to s for site.
func serveSite(t *testing.T, s *Supervisor, site string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.Serve(site, w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

type response struct {
	status int
	body   string
	header http.Header
}

var client = &http.Client{Timeout: waitMax}

func do(t *testing.T, method, url, body string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return response{resp.StatusCode, string(b), resp.Header}
}

func get(t *testing.T, url string) response { t.Helper(); return do(t, "GET", url, "") }

// demoProcesses lists the pids of running hcdemoapp processes of this test
// binary's build, from /proc: the real process table, not the supervisor's
// view of it.
func demoProcesses(t *testing.T) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && exe == demoApp {
			pids = append(pids, pid)
		}
	}
	return pids
}

// appSite starts site as an hcdemoapp site in a fresh dataset directory.
func appSite(t *testing.T, s *Supervisor, site string) string {
	t.Helper()
	dir := appDir(t)
	if err := s.Start(site, &m.SiteSpec{Name: site, AppCommand: "exec '" + demoApp + "'"}, dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// appDir is a fresh dataset directory with a web root.
func appDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "web"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "web", "hello.txt"), []byte("static hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func appPid(t *testing.T, url string) int {
	t.Helper()
	r := get(t, url+"/pid")
	if r.status != http.StatusOK {
		t.Fatalf("GET /pid: %d %q", r.status, r.body)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(r.body))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	// A zombie is not running any more.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && !bytes.Contains(b, []byte(") Z "))
}

func check503(t *testing.T, r response, want string) {
	t.Helper()
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") != "1" || !strings.Contains(r.body, want) {
		t.Fatalf("got %d Retry-After=%q %q, want 503 Retry-After=1 containing %q", r.status, r.header.Get("Retry-After"), r.body, want)
	}
}

func TestStaticSiteStaysInsideWebRoot(t *testing.T) {
	s := newSupervisor(t, Config{})
	dir := t.TempDir()
	files := map[string]string{
		"web/index.html":     "home page",
		"web/sub/a.txt":      "file a",
		"web/sub/index.html": "sub index",
		"web/bare/b.txt":     "file b",
		"secret/s.txt":       "TOP SECRET",
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{"web/x": "/etc", "web/y": "../secret", "web/z": "../secret/s.txt", "web/inside": "sub"} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Start("static-one", &m.SiteSpec{Name: "static-one"}, dir); err != nil {
		t.Fatal(err)
	}
	if got := s.Running(); len(got) != 0 {
		t.Fatalf("Running() = %v for a static site", got)
	}
	url := serveSite(t, s, "static-one")

	for path, want := range map[string]string{
		"/":             "home page",
		"/sub/a.txt":    "file a",
		"/sub/":         "sub index",
		"/inside/a.txt": "file a", // a symlink that stays inside is fine
	} {
		if r := get(t, url+path); r.status != http.StatusOK || r.body != want {
			t.Errorf("GET %s = %d %q, want 200 %q", path, r.status, r.body, want)
		}
	}

	etcPasswd, _ := os.ReadFile("/etc/passwd")
	for _, path := range []string{"/x", "/x/", "/x/passwd", "/x/hostname", "/y", "/y/", "/y/s.txt", "/z", "/etc/passwd", "//etc/passwd"} {
		r := get(t, url+path)
		if r.status != http.StatusForbidden && r.status != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 403 or 404", path, r.status)
		}
		if strings.Contains(r.body, "TOP SECRET") || strings.Contains(r.body, "root:") ||
			(len(etcPasswd) > 0 && strings.Contains(r.body, string(etcPasswd[:min(len(etcPasswd), 20)]))) {
			t.Errorf("GET %s leaked content outside the web root: %q", path, r.body)
		}
	}

	// Paths the HTTP client would clean, sent as they are.
	for _, path := range []string{"/../secret/s.txt", "/sub/../../secret/s.txt", "/..%2fsecret/s.txt"} {
		w := httptest.NewRecorder()
		s.Serve("static-one", w, httptest.NewRequest("GET", path, nil))
		if w.Code != http.StatusForbidden && w.Code != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 403 or 404", path, w.Code)
		}
		if strings.Contains(w.Body.String(), "TOP SECRET") {
			t.Errorf("GET %s leaked the secret", path)
		}
	}

	// No directory listings.
	if r := get(t, url+"/bare/"); r.status != http.StatusNotFound || strings.Contains(r.body, "b.txt") {
		t.Errorf("GET /bare/ = %d %q, want 404 without a listing", r.status, r.body)
	}

	if r := get(t, url+"/missing.txt"); r.status != http.StatusNotFound {
		t.Errorf("GET /missing.txt = %d, want 404", r.status)
	}
	if n := s.InFlight("static-one"); n != 0 {
		t.Errorf("InFlight = %d after the requests", n)
	}

	s.Stop("static-one")
	check503(t, get(t, url+"/"), "not served")
	s.Stop("static-one") // idempotent
}

func TestStaticSiteWithoutWebRoot(t *testing.T) {
	s := newSupervisor(t, Config{})
	dir := t.TempDir()
	if err := s.Start("bare", &m.SiteSpec{}, dir); err != nil {
		t.Fatal(err)
	}
	url := serveSite(t, s, "bare")
	if r := get(t, url+"/"); r.status != http.StatusNotFound || !strings.Contains(r.body, "no web root") {
		t.Fatalf("GET / = %d %q, want 404 no web root", r.status, r.body)
	}
	// The web root appears (say, a replica was received into the dataset).
	if err := os.MkdirAll(filepath.Join(dir, "web"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "web", "index.html"), []byte("now here"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := get(t, url+"/"); r.status != http.StatusOK || r.body != "now here" {
		t.Fatalf("GET / = %d %q after the web root appeared", r.status, r.body)
	}

	// Start opens the root again: the dataset moved to a new directory.
	moved := t.TempDir()
	if err := os.MkdirAll(filepath.Join(moved, "web"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(moved, "web", "index.html"), []byte("moved"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Start("bare", &m.SiteSpec{}, moved); err != nil {
		t.Fatal(err)
	}
	if r := get(t, url+"/"); r.status != http.StatusOK || r.body != "moved" {
		t.Fatalf("GET / = %d %q after Start with a new dir", r.status, r.body)
	}
}

func TestSiteNamesAreValidated(t *testing.T) {
	s := newSupervisor(t, Config{})
	dir := t.TempDir()
	for _, name := range []string{"", "UPPER", "-lead", "trail-", "a/b", "../x", "a.b", strings.Repeat("a", 64)} {
		if err := s.Start(name, &m.SiteSpec{}, dir); err == nil {
			t.Errorf("Start(%q) succeeded", name)
		}
		w := httptest.NewRecorder()
		s.Serve(name, w, httptest.NewRequest("GET", "/", nil))
		if w.Code == http.StatusOK {
			t.Errorf("Serve(%q) = 200", name)
		}
		if _, err := s.Quiesce(t.Context(), name, time.Second); err == nil {
			t.Errorf("Quiesce(%q) succeeded", name)
		}
	}
	if err := s.Start(strings.Repeat("a", 63), &m.SiteSpec{}, dir); err != nil {
		t.Errorf("63-character name refused: %v", err)
	}
	if err := s.Start("good", &m.SiteSpec{Name: "other"}, dir); err == nil {
		t.Error("Start accepted a spec of another site")
	}
	if err := s.Start("good", nil, dir); err == nil {
		t.Error("Start accepted a nil spec")
	}
	w := httptest.NewRecorder()
	s.Serve("never-started", w, httptest.NewRequest("GET", "/", nil))
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != "1" {
		t.Errorf("unknown site: %d Retry-After=%q, want 503 with Retry-After", w.Code, w.Header().Get("Retry-After"))
	}
}

func TestAppStartsLazilyStoresWritesAndRestartsAfterCrash(t *testing.T) {
	s := newSupervisor(t, Config{RestartBackoffMin: 50 * time.Millisecond, RestartBackoffMax: 500 * time.Millisecond})
	dir := appSite(t, s, "app-one")
	url := serveSite(t, s, "app-one")

	// Lazy: nothing runs until the first request.
	if got := s.Running(); len(got) != 0 {
		t.Fatalf("Running() = %v before any request", got)
	}
	if pids := demoProcesses(t); len(pids) != 0 {
		t.Fatalf("hcdemoapp running before any request: %v", pids)
	}

	if r := get(t, url+"/health"); r.status != http.StatusOK || strings.TrimSpace(r.body) != "ok" {
		t.Fatalf("GET /health = %d %q", r.status, r.body)
	}
	if got := s.Running(); !slices.Equal(got, []string{"app-one"}) {
		t.Fatalf("Running() = %v after the first request", got)
	}
	pid1 := appPid(t, url)
	if pids := demoProcesses(t); !slices.Equal(pids, []int{pid1}) {
		t.Fatalf("hcdemoapp processes %v, want [%d]", pids, pid1)
	}
	if r := get(t, url+"/"); r.status != http.StatusOK || !strings.Contains(r.body, "app-one") {
		t.Fatalf("GET / = %d %q, want the page naming the site", r.status, r.body)
	}
	if r := get(t, url+"/static/hello.txt"); r.status != http.StatusOK || r.body != "static hello\n" {
		t.Fatalf("GET /static/hello.txt = %d %q", r.status, r.body)
	}

	var want []string
	for i := 1; i <= 20; i++ {
		id := strconv.Itoa(i)
		r := do(t, "POST", url+"/write?id="+id, "note "+id)
		if r.status != http.StatusOK || strings.TrimSpace(r.body) != "ok id="+id {
			t.Fatalf("POST /write?id=%s = %d %q", id, r.status, r.body)
		}
		want = append(want, id)
	}
	checkWrites := func() {
		t.Helper()
		r := get(t, url+"/writes")
		if got := strings.Fields(r.body); r.status != http.StatusOK || !slices.Equal(got, want) {
			t.Fatalf("GET /writes = %d %v, want %v", r.status, got, want)
		}
	}
	checkWrites()
	log, err := os.ReadFile(filepath.Join(dir, "data", "writes.log"))
	if err != nil || bytes.Count(log, []byte{'\n'}) != len(want) {
		t.Fatalf("writes.log: %v, %d lines, want %d", err, bytes.Count(log, []byte{'\n'}), len(want))
	}
	if r := do(t, "POST", url+"/write?id=big", strings.Repeat("x", 64<<10+1)); r.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized write: %d %q, want 413", r.status, r.body)
	}

	// Crash: the runner restarts it at once (the site had traffic), before
	// any new request.
	if err := syscall.Kill(pid1, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var pid2 int
	waitFor(t, "a new hcdemoapp process after the crash", func() bool {
		pids := demoProcesses(t)
		if len(pids) == 1 && pids[0] != pid1 {
			pid2 = pids[0]
			return true
		}
		return false
	})
	waitFor(t, "the restarted app to answer", func() bool {
		r := get(t, url+"/pid")
		return r.status == http.StatusOK && strings.TrimSpace(r.body) == strconv.Itoa(pid2)
	})
	checkWrites()
	if r := do(t, "POST", url+"/write?id=21", ""); r.status != http.StatusOK {
		t.Fatalf("write after restart: %d %q", r.status, r.body)
	}
	want = append(want, "21")
	checkWrites()
}

func TestStopKillsAppThen503(t *testing.T) {
	s := newSupervisor(t, Config{StopWaitMax: 2 * time.Second})
	appSite(t, s, "app-stop")
	url := serveSite(t, s, "app-stop")
	pid := appPid(t, url)

	s.Stop("app-stop")
	if alive(pid) {
		t.Fatalf("app pid %d still running after Stop returned", pid)
	}
	if got := s.Running(); len(got) != 0 {
		t.Fatalf("Running() = %v after Stop", got)
	}
	check503(t, get(t, url+"/health"), "not served on this node")
	s.Stop("app-stop") // idempotent
	if pids := demoProcesses(t); len(pids) != 0 {
		t.Fatalf("hcdemoapp processes after Stop: %v", pids)
	}

	// Master here again: served again, by a new process.
	if err := s.Start("app-stop", &m.SiteSpec{AppCommand: "exec '" + demoApp + "'"}, appDir(t)); err != nil {
		t.Fatal(err)
	}
	if pid2 := appPid(t, url); pid2 == pid {
		t.Fatalf("same pid %d after Stop and Start", pid)
	}
}

func TestQuiesce(t *testing.T) {
	s := newSupervisor(t, Config{StopWaitMax: 2 * time.Second})
	appSite(t, s, "app-q")
	url := serveSite(t, s, "app-q")
	ctx := t.Context()

	if n, err := s.Quiesce(ctx, "app-q", time.Second); n != 0 || err != nil {
		t.Fatalf("Quiesce of a site without requests = %d, %v", n, err)
	}
	pid := appPid(t, url)
	if n, err := s.Quiesce(ctx, "app-q", time.Second); n != 0 || err != nil {
		t.Fatalf("Quiesce of an idle site = %d, %v", n, err)
	}
	if !alive(pid) {
		t.Fatal("Quiesce of an idle site stopped its app")
	}

	// A request that will not finish in time.
	slow := make(chan response, 1)
	go func() {
		resp, err := client.Get(url + "/sleep?ms=15000")
		if err != nil {
			slow <- response{status: -1, body: err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		slow <- response{status: resp.StatusCode, body: string(b)}
	}()
	waitFor(t, "the slow request to be in flight", func() bool { return s.InFlight("app-q") == 1 })

	began := time.Now()
	n, err := s.Quiesce(ctx, "app-q", 300*time.Millisecond)
	if n != 1 || err != nil {
		t.Fatalf("Quiesce with a slow request = %d, %v; want 1, nil", n, err)
	}
	if took := time.Since(began); took > 10*time.Second {
		t.Fatalf("Quiesce took %v", took)
	}
	if alive(pid) {
		t.Fatalf("app pid %d alive after Quiesce hit its bound", pid)
	}
	select {
	case r := <-slow:
		if r.status == http.StatusOK {
			t.Fatalf("the in-flight request succeeded after the quiesce kill: %q", r.body)
		}
		t.Logf("in-flight request ended with %d %q", r.status, strings.TrimSpace(r.body))
	case <-time.After(waitMax):
		t.Fatal("the in-flight request did not end after the quiesce kill")
	}
	if n := s.InFlight("app-q"); n != 0 {
		t.Fatalf("InFlight = %d after Quiesce", n)
	}

	// Still started: the app comes back on the next request.
	if pid2 := appPid(t, url); pid2 == pid {
		t.Fatal("same pid after the quiesce kill")
	}
}

func TestQuiesceFailsRequestsWaitingForStart(t *testing.T) {
	s := newSupervisor(t, Config{StartWaitMax: waitMax, StopWaitMax: time.Second})
	if err := s.Start("deaf-q", &m.SiteSpec{AppCommand: "exec sleep 60"}, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	url := serveSite(t, s, "deaf-q")
	waiting := make(chan response, 1)
	go func() {
		resp, err := client.Get(url + "/")
		if err != nil {
			waiting <- response{status: -1, body: err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		waiting <- response{resp.StatusCode, string(b), resp.Header}
	}()
	waitFor(t, "the request to wait for the app", func() bool { return s.InFlight("deaf-q") == 1 })
	if n, err := s.Quiesce(t.Context(), "deaf-q", 200*time.Millisecond); n != 1 || err != nil {
		t.Fatalf("Quiesce = %d, %v; want 1, nil", n, err)
	}
	select {
	case r := <-waiting:
		// Answered by Quiesce, not by a new process nor by StartWaitMax.
		check503(t, r, "being moved")
	case <-time.After(waitMax):
		t.Fatal("the waiting request was not answered")
	}
}

func TestIdleStopAndLazyRestart(t *testing.T) {
	const idle = 300 * time.Millisecond
	s := newSupervisor(t, Config{IdleStopAfter: idle})
	appSite(t, s, "app-idle")
	url := serveSite(t, s, "app-idle")
	pid := appPid(t, url)

	// A request longer than IdleStopAfter is in flight: no idle stop.
	if r := get(t, url+"/sleep?ms=1000"); r.status != http.StatusOK {
		t.Fatalf("GET /sleep during idle timer = %d %q", r.status, r.body)
	}

	waitFor(t, "the idle app to be stopped", func() bool {
		return len(s.Running()) == 0 && !alive(pid)
	})
	if pids := demoProcesses(t); len(pids) != 0 {
		t.Fatalf("hcdemoapp processes after the idle stop: %v", pids)
	}
	if pid2 := appPid(t, url); pid2 == pid {
		t.Fatal("same pid after the idle stop")
	}
	if got := s.Running(); !slices.Equal(got, []string{"app-idle"}) {
		t.Fatalf("Running() = %v after the lazy restart", got)
	}
}

func TestCrashLoopBacksOffThenWaitsForTraffic(t *testing.T) {
	s, logged := newRecordedSupervisor(t, Config{
		RestartBackoffMin: 100 * time.Millisecond,
		RestartBackoffMax: 400 * time.Millisecond,
		IdleStopAfter:     1500 * time.Millisecond,
		StartWaitMax:      300 * time.Millisecond,
	})
	dir := t.TempDir()
	if err := s.Start("crashy", &m.SiteSpec{AppCommand: "echo start >> starts.log; exit 1"}, dir); err != nil {
		t.Fatal(err)
	}
	url := serveSite(t, s, "crashy")
	starts := func() int {
		b, _ := os.ReadFile(filepath.Join(dir, "starts.log"))
		return bytes.Count(b, []byte{'\n'})
	}

	began := time.Now()
	check503(t, get(t, url+"/"), "starting")
	waitFor(t, "four starts", func() bool { return starts() >= 4 })
	// Three waits between four starts: at least 100+200+400 ms.
	if took := time.Since(began); took < 700*time.Millisecond {
		t.Fatalf("four starts within %v: no backoff", took)
	}

	// No traffic for IdleStopAfter: the runner gives up until a request comes.
	waitFor(t, "the runner to wait for traffic", func() bool { return logged.seen("app will restart on the next request") })
	n := starts()
	// Failing for crashLoopFailures runs: the request is answered without
	// waiting for a start (the message of the bound is "starting"), and
	// it still starts the app again.
	check503(t, get(t, url+"/"), "keeps failing")
	waitFor(t, "a start on the next request", func() bool { return starts() > n })
}

func TestStartWaitAndWaitingBounds(t *testing.T) {
	s := newSupervisor(t, Config{StartWaitMax: 500 * time.Millisecond, WaitingRequestsMax: 1, StopWaitMax: time.Second})
	dir := t.TempDir()
	// Runs but never listens.
	if err := s.Start("deaf", &m.SiteSpec{AppCommand: "exec sleep 60"}, dir); err != nil {
		t.Fatal(err)
	}
	url := serveSite(t, s, "deaf")

	first := make(chan response, 1)
	go func() {
		resp, err := client.Get(url + "/")
		if err != nil {
			first <- response{status: -1}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		first <- response{resp.StatusCode, string(b), resp.Header}
	}()
	waitFor(t, "the first request to wait", func() bool { return s.InFlight("deaf") == 1 })
	check503(t, get(t, url+"/"), "too many requests waiting")
	select {
	case r := <-first:
		check503(t, r, "starting")
	case <-time.After(waitMax):
		t.Fatal("the waiting request was not answered")
	}
	if got := s.Running(); !slices.Equal(got, []string{"deaf"}) {
		t.Fatalf("Running() = %v", got)
	}
	began := time.Now()
	s.Stop("deaf")
	if took := time.Since(began); took > 5*time.Second {
		t.Fatalf("Stop took %v", took)
	}
	if got := s.Running(); len(got) != 0 {
		t.Fatalf("Running() = %v after Stop", got)
	}
}

func TestNewCommandRestartsApp(t *testing.T) {
	s := newSupervisor(t, Config{})
	dir := appSite(t, s, "app-cmd")
	url := serveSite(t, s, "app-cmd")
	pid := appPid(t, url)

	if err := s.Start("app-cmd", &m.SiteSpec{AppCommand: "HC_VARIANT=2 exec '" + demoApp + "'"}, dir); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the old process to stop", func() bool { return !alive(pid) })
	pid2 := appPid(t, url)
	if pid2 == pid {
		t.Fatal("same pid after a new command")
	}
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid2))
	if err != nil {
		t.Fatal(err)
	}
	vars := strings.Split(string(env), "\x00")
	for _, want := range []string{"HC_VARIANT=2", "HC_SITE=app-cmd", "HC_DATA_DIR=" + dir, "HC_WEB_ROOT=" + filepath.Join(dir, "web")} {
		if !slices.Contains(vars, want) {
			t.Errorf("app environment lacks %s: %q", want, vars)
		}
	}
}

func TestCloseStopsEverything(t *testing.T) {
	s := New(Config{StopWaitMax: 2 * time.Second})
	appSite(t, s, "app-a")
	appSite(t, s, "app-b")
	urlA, urlB := serveSite(t, s, "app-a"), serveSite(t, s, "app-b")
	appPid(t, urlA)
	appPid(t, urlB)
	if got := s.Running(); !slices.Equal(got, []string{"app-a", "app-b"}) {
		t.Fatalf("Running() = %v", got)
	}
	s.Close()
	if pids := demoProcesses(t); len(pids) != 0 {
		t.Fatalf("hcdemoapp processes after Close: %v", pids)
	}
	check503(t, get(t, urlA+"/health"), "not served")
	if err := s.Start("app-c", &m.SiteSpec{}, t.TempDir()); err == nil {
		t.Fatal("Start after Close succeeded")
	}
}

func TestLogLinesAreBounded(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	long := strings.Repeat("x", appLogLineMax*3)
	logLines(log, "stdout", strings.NewReader("first\n"+long+"\nlast"))
	var lines []string
	for l := range strings.Lines(buf.String()) {
		lines = append(lines, l)
	}
	if len(lines) != 3 {
		t.Fatalf("got %d log lines, want 3:\n%s", len(lines), buf.String())
	}
	if !strings.Contains(lines[0], `"line":"first"`) || !strings.Contains(lines[2], `"line":"last"`) {
		t.Fatalf("first or last line wrong:\n%s", buf.String())
	}
	if !strings.Contains(lines[1], `"truncated":true`) || len(lines[1]) > appLogLineMax+200 {
		t.Fatalf("long line not cut at %d bytes: %d bytes logged", appLogLineMax, len(lines[1]))
	}
}
