package localcluster

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/admin"
)

// TestE2ERemoveNode: with real hcnode processes and hcctl, a live node
// cannot be removed; once it is killed it can, it leaves every node's list,
// the site it held a copy of gets a copy on the remaining nodes and is
// served, and the removed node's name is refused when it starts again.
func TestE2ERemoveNode(t *testing.T) {
	c := newCluster(t, 4)
	ctx := context.Background()
	s := createSite(t, ctx, c, "leaving", "leaving.example")
	if len(s.Replicas) == 0 {
		t.Fatalf("site without replicas: %+v", s)
	}
	gone := c.NodeIndex(s.Replicas[0])
	goneName := c.Nodes[gone].Name
	asker := (gone + 1) % len(c.Nodes)
	if _, err := c.HCCtl(ctx, asker, "remove", goneName); err == nil || !strings.Contains(err.Error(), "is live") {
		t.Fatalf("hcctl remove of a live node: %v, want refused as live", err)
	}
	c.Kill(gone)
	var err error
	for attempt := 0; attempt < 60; attempt++ {
		if _, err = c.HCCtl(ctx, asker, "remove", goneName); err == nil {
			break
		}
		time.Sleep(250 * time.Millisecond) // until the balancer sees it down
	}
	if err != nil {
		t.Fatalf("hcctl remove %s after the kill: %v", goneName, err)
	}
	for i := range c.Nodes {
		if i == gone {
			continue
		}
		nodes, err := c.Client(i).Nodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(nodes, func(n admin.Node) bool { return n.Name == goneName }) {
			t.Fatalf("%s still lists removed %s", c.Nodes[i].Name, goneName)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	s, err = c.WaitSite(wctx, asker, "leaving", func(s admin.Site) bool {
		return len(s.Replicas) > 0 && !slices.Contains(s.Replicas, goneName) && s.Master != goneName
	})
	if err != nil {
		t.Fatalf("no replacement copy for the removed node's: %v (%+v)", err, s)
	}
	if st, _, err := c.Do(ctx, asker, "GET", "leaving.example", "/health", nil); err != nil || st != 200 {
		t.Fatalf("site after the removal: %d %v", st, err)
	}
	// The removed node comes back (it was down when removed): the others
	// tell it, and it stops; a later start under its name is refused.
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	defer scancel()
	if err := c.StartNode(sctx, gone); err != nil && !strings.Contains(err.Error(), "removed") {
		t.Fatalf("restart of removed %s: %v", goneName, err)
	}
	select {
	case <-c.Nodes[gone].done:
		c.Nodes[gone].cmd = nil
	case <-sctx.Done():
		t.Fatalf("removed %s kept running after it came back", goneName)
	}
	if err := c.StartNode(sctx, gone); err == nil || !strings.Contains(err.Error(), "was removed from the cluster") {
		t.Fatalf("start of removed %s under its name: %v, want refused", goneName, err)
	}
}
