package localcluster

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// A master told to stop (SIGTERM, as systemctl stop or restart does) hands
// its site to a replica before it exits: a planned move, so writes through
// the other nodes are paused, not failed, and none acknowledged is lost.
// Before the hand-off a stop was a failover: what the master had written
// since the site's last replicated snapshot was gone from the site (found
// by hand: 150 acknowledged inserts, 146 rows after the master's SIGTERM).
func TestE2EStopHandsSitesOff(t *testing.T) {
	c := newCluster(t, 3)
	ctx := context.Background()
	s := createSite(t, ctx, c, "shop", "shop.example")
	master := -1
	var others []int
	for i, n := range c.Nodes {
		if n.Name == s.Master {
			master = i
		} else {
			others = append(others, i)
		}
	}
	wctx, stopWrites := context.WithTimeout(ctx, 90*time.Second)
	defer stopWrites()
	w := &Writer{Domain: "shop.example", Nodes: others, Max: 20000}
	done := make(chan struct{})
	go func() { w.Run(wctx, c); close(done) }()
	time.Sleep(time.Second)
	stopBegun := time.Now()
	c.Stop(master) // SIGTERM; killed if not gone within stopWaitMax
	stopTook := time.Since(stopBegun)
	time.Sleep(2 * time.Second)
	stopWrites()
	<-done

	logText, err := os.ReadFile(c.Nodes[master].LogPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(logText), "msg=\"hand-off done\" node="+s.Master+" moved=1 left=0") {
		t.Fatalf("the stopped master's log has no hand-off of its site:\n%s", tail(c.Nodes[master].LogPath, 30))
	}
	writes := w.Writes()
	stored, err := c.StoredIDs(ctx, others[0], "shop.example")
	if err != nil {
		t.Fatal(err)
	}
	failed, lost := 0, 0
	var longest time.Duration
	for _, wr := range writes {
		if !wr.Acked {
			failed++
			t.Errorf("write %d through %s failed: status %d %s", wr.ID, c.Nodes[wr.Node].Name, wr.Status, wr.Err)
		} else if !stored[wr.ID] {
			lost++
		}
		longest = max(longest, wr.Latency)
	}
	after, err := c.Client(others[0]).Site(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stop of master %s: took %v, new master %s, writes=%d failed=%d lost_acknowledged=%d longest_write=%v",
		s.Master, stopTook.Round(time.Millisecond), after.Master, len(writes), failed, lost, longest.Round(time.Millisecond))
	if after.Master == s.Master || after.Master == "" {
		t.Fatalf("master after the stop: %q", after.Master)
	}
	if lost > 0 {
		t.Fatalf("%d acknowledged writes lost when the master was stopped", lost)
	}
	if len(writes) < 10 {
		t.Fatalf("only %d writes: the load did not run", len(writes))
	}
}
