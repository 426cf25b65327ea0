package localcluster

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/admin"
)

// The HTTP front end's acceptance tests: a bounded load of GETs and
// fsync'd writes through the front ends of real hcnode processes while the
// site moves, and while its master is killed. (That every node serves the
// same content is TestE2EServedByEveryNode, with curl.)

// httpLoadRate is the load of these tests: requests per second through
// the nodes, all workers together.
const httpLoadRate = 100

// A planned move under load fails no request (GETs are held, writes too);
// the longest hold and the latencies during the moves are reported.
func TestE2EHTTPMoveUnderLoad(t *testing.T) {
	c := newCluster(t, 3)
	ctx := context.Background()
	s := createSite(t, ctx, c, "move", "move.example")
	servedEverywhere(t, c, "move.example", []int{0, 1, 2})
	lctx, stop := context.WithTimeout(ctx, 3*time.Minute)
	defer stop()
	load := &HTTPLoad{Domain: "move.example", Nodes: []int{0, 1, 2}, Workers: 8, Rate: httpLoadRate, Max: 100_000, WriteEvery: 4}
	done := make(chan struct{})
	go func() { _ = load.Run(lctx, c); close(done) }()
	var windows []Window
	master := s.Master
	for range 2 {
		time.Sleep(1500 * time.Millisecond)
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		s, err := c.WaitSite(wctx, 0, "move", replicated)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		target := ""
		for _, cp := range s.Copies {
			if cp.Node != s.Master && cp.Role == "replica" {
				target = cp.Node
			}
		}
		start := time.Now()
		out, err := c.HCCtl(ctx, 0, "migrate", "move", target, "--timeout", "60s")
		windows = append(windows, Window{Start: start, End: time.Now()})
		if err != nil {
			t.Fatalf("migrate to %s: %v\n%s", target, err, out)
		}
		master = target
	}
	time.Sleep(1500 * time.Millisecond)
	stop()
	<-done
	sum := Summarize(load.Results(), windows)
	t.Logf("moves=2 last master %s: requests=%d failed=%d during moves n=%d p50=%v p99=%v max (longest hold)=%v",
		master, sum.Requests, sum.Failed, len(sum.During), sum.P50, sum.P99, sum.Max)
	for _, f := range sum.FirstFailures {
		t.Errorf("failed: %s", f)
	}
	if sum.Failed > 0 {
		t.Fatalf("%d requests failed during planned moves", sum.Failed)
	}
	if len(sum.During) == 0 || sum.Requests < 100 {
		t.Fatalf("the load did not run through the moves: %d requests, %d during moves", sum.Requests, len(sum.During))
	}
}

// kill -9 of the master under a GET load through the other nodes: no GET
// fails (held while the site fails over, retried once on the new master
// when the old one died with it); the time to recover is reported.
func TestE2EHTTPMasterKilledUnderLoad(t *testing.T) {
	c := newCluster(t, 3)
	ctx := context.Background()
	s := createSite(t, ctx, c, "kill", "kill.example")
	victim := c.NodeIndex(s.Master)
	var via []int
	for i := range c.Nodes {
		if i != victim {
			via = append(via, i)
		}
	}
	servedEverywhere(t, c, "kill.example", via)
	lctx, stop := context.WithTimeout(ctx, 3*time.Minute)
	defer stop()
	load := &HTTPLoad{Domain: "kill.example", Nodes: via, Workers: 8, Rate: httpLoadRate, Max: 100_000}
	done := make(chan struct{})
	go func() { _ = load.Run(lctx, c); close(done) }()
	time.Sleep(2 * time.Second)
	c.Kill(victim)
	killed := time.Now()
	// Recovered: a GET that started after the kill was answered by the
	// new master, through every surviving node.
	var recovered time.Duration
	deadline := killed.Add(90 * time.Second)
	for recovered == 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		seen := map[int]time.Time{}
		for _, r := range load.Results() {
			if r.OK() && r.Start.After(killed) {
				if end := r.Start.Add(r.Latency); seen[r.Node].IsZero() || end.Before(seen[r.Node]) {
					seen[r.Node] = end
				}
			}
		}
		if len(seen) == len(via) {
			var last time.Time
			for _, end := range seen {
				if end.After(last) {
					last = end
				}
			}
			recovered = last.Sub(killed)
		}
	}
	time.Sleep(2 * time.Second)
	stop()
	<-done
	after, err := c.Client(via[0]).Site(ctx, "kill")
	if err != nil {
		t.Fatal(err)
	}
	sum := Summarize(load.Results(), []Window{{Start: killed, End: killed.Add(recovered)}})
	t.Logf("killed %s, new master %s: requests=%d failed_gets=%d recovery=%v during recovery n=%d p50=%v p99=%v max=%v",
		s.Master, after.Master, sum.Requests, sum.FailedGets, recovered, len(sum.During), sum.P50, sum.P99, sum.Max)
	if recovered == 0 {
		t.Fatalf("not served through every surviving node within 90 s of the kill")
	}
	if after.Master == s.Master || !slices.Contains([]string{c.Nodes[via[0]].Name, c.Nodes[via[1]].Name}, after.Master) {
		t.Fatalf("master after the kill: %q", after.Master)
	}
	for _, f := range sum.FirstFailures {
		t.Errorf("failed: %s", f)
	}
	if sum.FailedGets > 0 {
		t.Fatalf("%d GETs failed across the kill of the master", sum.FailedGets)
	}
}

// replicated: the site is active and a replica holds its master's newest
// snapshot (a move is then incremental).
func replicated(s admin.Site) bool {
	if s.Master == "" || s.Phase != "active" {
		return false
	}
	newest := ""
	for _, cp := range s.Copies {
		if cp.Node == s.Master && cp.Latest != nil {
			newest = cp.Latest.Name
		}
	}
	for _, cp := range s.Copies {
		if cp.Node != s.Master && cp.Role == "replica" && cp.Latest != nil && cp.Latest.Name == newest {
			return true
		}
	}
	return false
}

// servedEverywhere waits (bounded) until every node in nodes serves domain.
func servedEverywhere(t *testing.T, c *Cluster, domain string, nodes []int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.ServedThrough(ctx, domain, "/health", nodes); err != nil {
		t.Fatal(err)
	}
}
