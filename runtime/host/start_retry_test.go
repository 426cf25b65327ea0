package host

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/storage"
)

// brokenMounts is a driver whose Mountpoint fails while broken is set (a
// mount that failed at a promotion, say over a directory not empty).
type brokenMounts struct {
	storage.Driver
	broken *atomic.Bool
}

func (d brokenMounts) Mountpoint(ctx context.Context, s storage.Site) (string, error) {
	if d.broken.Load() {
		return "", errors.New("cannot mount: directory is not empty")
	}
	return d.Driver.Mountpoint(ctx, s)
}

// countingSites counts the sites' starts.
type countingSites struct{ starts *atomic.Int32 }

func (c countingSites) Start(string, *m.SiteSpec, string) error {
	c.starts.Add(1)
	return nil
}
func (countingSites) Stop(string)                                                 {}
func (countingSites) Serve(string, http.ResponseWriter, *http.Request)            {}
func (countingSites) Quiesce(context.Context, string, time.Duration) (int, error) { return 0, nil }
func (countingSites) IsRunning(string) bool                                       { return false }

// TestAFailedStartIsTriedAgain: a master whose site could not start (no
// mountpoint) says why in its health, and starts the site on a later try
// once the cause is gone, rather than staying down until the site's role
// changes.
func TestAFailedStartIsTriedAgain(t *testing.T) {
	broken := &atomic.Bool{}
	broken.Store(true)
	starts := map[string]*atomic.Int32{}
	c := startClusterWith(t, 2, func(name string, opt *Options) {
		starts[name] = &atomic.Int32{}
		opt.Driver = brokenMounts{Driver: opt.Driver, broken: broken}
		opt.Sites = countingSites{starts: starts[name]}
	})
	const site = "eps"
	master, _ := c.placeSite(site)
	h := c.nodes[master].host
	eventually(t, "the failed start in the master's health", func() error {
		if why := h.notStarted.all()[site]; !strings.Contains(why, "not started: no mountpoint") {
			return fmt.Errorf("health %q", why)
		}
		return nil
	})
	if n := starts[master].Load(); n != 0 || h.gates.isOpen(site) {
		t.Fatalf("started %d times, gate open %v, with no mountpoint", n, h.gates.isOpen(site))
	}
	broken.Store(false)
	eventually(t, "the site started on a later try", func() error {
		if n := starts[master].Load(); n != 1 {
			return fmt.Errorf("started %d times", n)
		}
		if why, ok := h.notStarted.all()[site]; ok {
			return fmt.Errorf("health still %q", why)
		}
		if !h.gates.isOpen(site) {
			return errors.New("gate closed")
		}
		return nil
	})
	if !strings.Contains(c.logs.String(), "site started on a later try") {
		t.Error("the later start is not in the log")
	}
}

// The tries back off, and a later stop (or start) supersedes a failed
// start: its tries end, and one already queued does nothing.
func TestFailedStartsBackOffAndAStopEndsThem(t *testing.T) {
	var f startFailures
	now := time.Unix(1000, 0)
	start := &m.ProcessRequest{Site: "a", Start: true}
	g1 := f.asked("a")
	if w := f.failed(start, g1, "not started: x", now); w != startRetryFirst {
		t.Fatalf("first wait %v, want %v", w, startRetryFirst)
	}
	if d := f.due(now.Add(startRetryFirst - time.Millisecond)); len(d) != 0 {
		t.Fatalf("due before its wait: %v", d)
	}
	if d := f.due(now.Add(startRetryFirst)); len(d) != 1 || d[0].gen != g1 {
		t.Fatalf("due after its wait: %v", d)
	}
	if d := f.due(now.Add(startRetryFirst)); len(d) != 0 {
		t.Fatalf("due twice at once: %v", d)
	}
	var w time.Duration
	for range 10 {
		w = f.failed(start, g1, "not started: x", now)
	}
	if w != startRetryMax {
		t.Fatalf("wait after 11 failures %v, want the bound %v", w, startRetryMax)
	}
	if why, want := f.all()["a"], "not started: x (11 tries since 1970-01-01T00:16:40Z)"; why != want {
		t.Fatalf("health %q, want %q", why, want)
	}
	if !f.stillFailed("a", g1) {
		t.Fatal("a failed start does not count as failed")
	}
	g2 := f.asked("a") // the stop
	f.ok("a", g2)
	if f.stillFailed("a", g1) || len(f.all()) != 0 || len(f.due(now.Add(time.Hour))) != 0 {
		t.Fatalf("the stop left the failed start in: %v", f.all())
	}
	// A failure that a later effect superseded is not recorded.
	g3 := f.asked("a")
	f.asked("a")
	if f.failed(start, g3, "not started: y", now); len(f.all()) != 0 {
		t.Fatalf("a superseded failure was recorded: %v", f.all())
	}
}
