package ftp

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ftpserver "github.com/fclairamb/ftpserverlib"
	"google.golang.org/protobuf/proto"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/host"
)

// newTestJail makes a dataset directory with a web root holding a file, a
// directory and symlinks out of it (to /etc, to a sibling site, to a
// writable directory outside, upwards), as an app could write them.
func newTestJail(t *testing.T) (*jail, string, string, *bytes.Buffer) {
	t.Helper()
	base := t.TempDir()
	dataset := filepath.Join(base, "site")
	outside := filepath.Join(base, "outside")
	other := filepath.Join(base, "other", "web")
	for _, d := range []string{filepath.Join(dataset, "web", "dir"), outside, other} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(dataset, "web", "dir", "a.txt"), []byte("hello"), 0o644))
	must(os.WriteFile(filepath.Join(other, "secret"), []byte("other site"), 0o644))
	must(os.Symlink("/etc", filepath.Join(dataset, "web", "etc")))
	must(os.Symlink(other, filepath.Join(dataset, "web", "othersite")))
	must(os.Symlink(outside, filepath.Join(dataset, "web", "outside")))
	must(os.Symlink("../..", filepath.Join(dataset, "web", "up")))
	must(os.Symlink("dir/a.txt", filepath.Join(dataset, "web", "inside")))
	var logs bytes.Buffer
	j, err := openJail(dataset, "site", slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j, base, outside, &logs
}

// Every way out of the web root is refused with errEscape, logged, and
// the error names only the client's path.
func TestJailRefusesEscapes(t *testing.T) {
	j, base, outside, logs := newTestJail(t)
	read := func(name string) error {
		f, err := j.OpenRead(name, 0)
		if err == nil {
			f.Close()
		}
		return err
	}
	write := func(name string) error {
		f, err := j.OpenWrite(name, os.O_CREATE|os.O_TRUNC, 0)
		if err == nil {
			f.Close()
		}
		return err
	}
	cases := map[string]error{
		"read etc/passwd":       read("/etc/passwd"),
		"read up/outside":       read("/up/outside"),
		"read othersite/secret": read("othersite/secret"),
		"list etc":              func() error { _, err := j.ReadDir("/etc"); return err }(),
		"stat up/site":          func() error { _, err := j.Stat("/up/site"); return err }(),
		"write outside/x":       write("/outside/x"),
		"mkdir outside/d":       j.Mkdir("/outside/d"),
		"rename into outside":   j.Rename("/dir/a.txt", "/outside/a.txt"),
		"removeall othersite":   j.RemoveAll("/othersite/secret"),
		"chtimes etc/passwd":    j.Chtimes("/etc/passwd", time.Now()),
	}
	for what, err := range cases {
		if !errors.Is(err, errEscape) {
			t.Errorf("%s: %v, want an escape refused", what, err)
		}
		if err != nil && strings.Contains(err.Error(), base) {
			t.Errorf("%s: the error shows a host path: %v", what, err)
		}
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("written outside: %v", ents)
	}
	if _, err := os.Stat(filepath.Join(base, "site", "web", "dir", "a.txt")); err != nil {
		t.Fatalf("a.txt left the root: %v", err)
	}
	if _, err := os.Stat(filepath.Join(base, "other", "web", "secret")); err != nil {
		t.Fatalf("the other site's file was removed: %v", err)
	}
	if !strings.Contains(logs.String(), "path escape refused") {
		t.Fatalf("escapes not logged:\n%s", logs.String())
	}
	// ".." never leaves the root: it is resolved against "/".
	if fi, err := j.Stat("/../../dir/../.."); err != nil || !fi.IsDir() || fi.Name() != "/" {
		t.Fatalf("stat of /../..: %v %v", fi, err)
	}
	// Links inside the root work; links out of it are not listed.
	f, err := j.OpenRead("/inside", 2)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(f)
	f.Close()
	if string(b) != "llo" {
		t.Fatalf("read through an inner link at offset 2: %q", b)
	}
	fis, err := j.ReadDir("/")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, fi := range fis {
		names = append(names, fi.Name())
	}
	got := "," + strings.Join(names, ",") + ","
	for _, hidden := range []string{",etc,", ",outside,", ",othersite,", ",up,"} {
		if strings.Contains(got, hidden) {
			t.Fatalf("listing shows %s: %s", hidden, got)
		}
	}
	if !strings.Contains(got, ",inside,") || !strings.Contains(got, ",dir,") {
		t.Fatalf("listing lacks inside or dir: %s", got)
	}
}

// A full quota is a clear error that the library answers with 552, on
// the master and across the channel.
func TestJailQuota(t *testing.T) {
	j, _, _, _ := newTestJail(t)
	j.quota = func() (int64, bool) { return 10, true }
	w, err := j.OpenWrite("/q.bin", os.O_CREATE|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("0123456789abcdef")); !errors.Is(err, ftpserver.ErrStorageExceeded) {
		t.Fatalf("write past the quota: %v", err)
	}
	if err := w.Close(); !errors.Is(err, ftpserver.ErrStorageExceeded) || !strings.Contains(err.Error(), "quota is full") {
		t.Fatalf("close after the quota: %v", err)
	}
	j.quota = func() (int64, bool) { return 0, true }
	if _, err := j.OpenWrite("/q2.bin", os.O_CREATE, 0); !errors.Is(err, ftpserver.ErrStorageExceeded) {
		t.Fatalf("open with a full quota: %v", err)
	}
	rec := &fakeResponse{header: http.Header{}}
	writeError(rec, j.fail("write", "/q.bin", errQuota))
	resp := &http.Response{StatusCode: rec.code, Header: rec.header, Body: io.NopCloser(strings.NewReader(""))}
	if err := readError("write", resp); !errors.Is(err, ftpserver.ErrStorageExceeded) || rec.code != http.StatusInsufficientStorage {
		t.Fatalf("quota over the channel: %d %v", rec.code, err)
	}
}

type fakeResponse struct {
	header http.Header
	code   int
}

func (f *fakeResponse) Header() http.Header         { return f.header }
func (f *fakeResponse) Write(b []byte) (int, error) { return len(b), nil }
func (f *fakeResponse) WriteHeader(code int)        { f.code = code }

// fakeCluster is a route table that a test changes under the waiter.
type fakeCluster struct {
	route func() (host.Route, bool)
	sent  []proto.Message
}

var _ Cluster = (*fakeCluster)(nil)

func (f *fakeCluster) Node() string                                 { return "n2" }
func (f *fakeCluster) Route(string) (host.Route, bool)              { return f.route() }
func (f *fakeCluster) Live(string) bool                             { return true }
func (f *fakeCluster) Send(_ core.Address, msg proto.Message)       { f.sent = append(f.sent, msg) }
func (f *fakeCluster) Admit(context.Context, string) (func(), bool) { return nil, false }
func (f *fakeCluster) HandleInternal(string, http.Handler)          {}
func (f *fakeCluster) InternalURL(string) (string, bool)            { return "http://127.0.0.1:1", true }
func (f *fakeCluster) SiteSpec(string) (*m.SiteSpec, bool)          { return nil, false }

// A login (or a command) that arrives while the site is paused for a move
// waits until it is served again, then goes to the new master; past the
// bound it gets a clear error. A session's lease follows the master.
func TestWaitServingWaitsForTheMove(t *testing.T) {
	start := time.Now()
	fc := &fakeCluster{route: func() (host.Route, bool) {
		if time.Since(start) < 300*time.Millisecond {
			return host.Route{Site: "a", Master: "n1", Phase: m.SitePhase_SITE_PHASE_PAUSED}, true
		}
		return host.Route{Site: "a", Master: "n3", Phase: m.SitePhase_SITE_PHASE_ACTIVE}, true
	}}
	s := &Server{cfg: Config{Cluster: fc}, node: "n2", log: slog.New(slog.DiscardHandler), active: map[*session]struct{}{}}
	r, err := s.waitServing(context.Background(), "a", time.Now().Add(5*time.Second), 0)
	if err != nil || r.Master != "n3" || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("route %+v err %v after %v", r, err, time.Since(start))
	}
	fc.route = func() (host.Route, bool) {
		return host.Route{Site: "a", Master: "n1", Phase: m.SitePhase_SITE_PHASE_PAUSED}, true
	}
	if _, err := s.waitServing(context.Background(), "a", time.Now().Add(200*time.Millisecond), 0); err == nil ||
		!strings.Contains(err.Error(), "try again") {
		t.Fatalf("past the bound: %v", err)
	}
	ss := &session{s: s, site: "a", holder: "ftp/n2/x-1"}
	ss.lease("n1")
	ss.lease("n1")
	ss.lease("n3")
	ss.renew("n3")
	ss.end()
	ss.end()
	ss.renew("n3")
	var got []string
	for _, msg := range fc.sent {
		got = append(got, string(proto.MessageName(msg).Name()))
	}
	if strings.Join(got, ",") != "LeaseAcquire,LeaseRelease,LeaseAcquire,LeaseAcquire,LeaseRelease" {
		t.Fatalf("lease messages: %v", got)
	}
}

// An upload that meets a move's pause stops before its next write (the
// move's final snapshot waits for it), with an error that says to resume.
func TestJailUploadStopsAtAMove(t *testing.T) {
	j, _, _, _ := newTestJail(t)
	serving := true
	j.serving = func() bool { return serving }
	w, err := j.OpenWrite("/up.bin", os.O_CREATE|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("before")); err != nil {
		t.Fatal(err)
	}
	serving = false
	if _, err := w.Write([]byte("after")); !errors.Is(err, errMoving) || !strings.Contains(err.Error(), "resume") {
		t.Fatalf("write during the pause: %v", err)
	}
	if err := w.Close(); !errors.Is(err, errMoving) {
		t.Fatalf("close: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(j.root.Name(), "up.bin")); string(b) != "before" {
		t.Fatalf("file holds %q", b)
	}
}
