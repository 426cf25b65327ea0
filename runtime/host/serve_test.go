package host

import (
	"context"
	"net/http"
	"testing"
	"time"

	m "github.com/hybridcluster/hybridcluster/messages"
)

// A master whose site actor is active but whose processes are not started
// yet holds a request until they are; a closed route refuses at once; a
// final snapshot's wait sees the requests admitted before the pause.
func TestGateWaitsForStartAndDrains(t *testing.T) {
	gs := newGates()
	if _, ok := gs.admit(context.Background(), "a"); ok {
		t.Fatal("unknown site admitted")
	}
	gs.setRoute("a", true, &m.Epoch{Term: 1, Node: "n1"})
	admitted := make(chan func(), 1)
	go func() {
		release, ok := gs.admit(context.Background(), "a")
		if !ok {
			release = nil
		}
		admitted <- release
	}()
	select {
	case <-admitted:
		t.Fatal("admitted before the site's processes were started")
	case <-time.After(50 * time.Millisecond):
	}
	gs.setStarted("a", true)
	var release func()
	select {
	case release = <-admitted:
		if release == nil {
			t.Fatal("refused once started")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not admitted after the start")
	}
	// The pause closes the route: new requests are refused at once, the one
	// in flight is waited for.
	gs.setRoute("a", false, nil)
	start := time.Now()
	if _, ok := gs.admit(context.Background(), "a"); ok || time.Since(start) > time.Second {
		t.Fatalf("closed route: admitted=%v after %v", ok, time.Since(start))
	}
	if n := gs.waitIdle(context.Background(), "a", 20*time.Millisecond); n != 1 {
		t.Fatalf("in flight = %d, want 1", n)
	}
	go func() { time.Sleep(20 * time.Millisecond); release() }()
	if n := gs.waitIdle(context.Background(), "a", 5*time.Second); n != 0 {
		t.Fatalf("in flight after release = %d", n)
	}
	// A cancelled request stops waiting.
	gs.setRoute("b", true, nil)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	if _, ok := gs.admit(ctx, "b"); ok {
		t.Fatal("cancelled request admitted")
	}
}

type fakeRunner struct{ running bool }

func (fakeRunner) Start(string, *m.SiteSpec, string) error                     { return nil }
func (fakeRunner) Stop(string)                                                 {}
func (fakeRunner) Serve(string, http.ResponseWriter, *http.Request)            {}
func (fakeRunner) Quiesce(context.Context, string, time.Duration) (int, error) { return 0, nil }
func (f *fakeRunner) IsRunning(string) bool                                    { return f.running }

// An idle site (no request since the last check, no process, a recent
// check) needs no look at its dataset; anything else does.
func TestQuietSiteSkipsTheChangeCheck(t *testing.T) {
	r := &fakeRunner{}
	h := &Host{sites: r}
	if h.quiet("a") {
		t.Fatal("never checked: must be checked")
	}
	h.checkedAt("a", h.activity.count("a"), time.Now())
	if !h.quiet("a") {
		t.Fatal("checked, no request, no process: quiet")
	}
	h.activity.bump("a")
	if h.quiet("a") {
		t.Fatal("a request since the check: not quiet")
	}
	h.checkedAt("a", h.activity.count("a"), time.Now())
	r.running = true
	if h.quiet("a") {
		t.Fatal("a running app may write: not quiet")
	}
	r.running = false
	h.checkedAt("a", h.activity.count("a"), time.Now().Add(-changeFullCheckEvery))
	if h.quiet("a") {
		t.Fatal("the last full check is too old: not quiet")
	}
}
