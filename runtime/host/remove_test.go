package host

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// TestRemoveNode: a member that is down is removed; the others drop it
// from their member lists, the sites keep two copies on the remaining
// nodes, the removed node is not heard when it comes back, and a restart
// of a remaining node keeps it out (persisted).
func TestRemoveNode(t *testing.T) {
	c := startCluster(t, 3)
	const site = "keep"
	master, replica := c.placeSite(site)
	gone := replica
	if gone == "n1" {
		// Keep n1 (placeSite's entry) alive; remove a non-master.
		gone = c.other(master, replica)
	}
	c.stop(gone)
	remaining := []string{}
	for _, n := range c.names {
		if n != gone {
			remaining = append(remaining, n)
		}
	}
	eventually(t, gone+" seen down", func() error {
		for _, n := range remaining {
			if c.nodes[n].host.Live(gone) {
				return fmt.Errorf("%s still believes %s live", n, gone)
			}
		}
		return nil
	})
	for _, n := range remaining {
		c.nodes[n].host.Send(core.NodeAddr(n), &m.RemoveNode{Node: gone})
	}
	eventually(t, gone+" out of the member lists, two copies on the rest", func() error {
		for _, n := range remaining {
			if slices.Contains(c.nodes[n].host.Members(), gone) {
				return fmt.Errorf("%s still lists %s", n, gone)
			}
			if len(c.snapshots(n, site)) == 0 {
				return fmt.Errorf("%s holds no copy of %s", n, site)
			}
		}
		return nil
	})
	c.restart(gone)
	time.Sleep(3 * testConfig().FailureTimeout) // it heartbeats; nobody must hear it
	for _, n := range remaining {
		if c.nodes[n].host.Live(gone) {
			t.Fatalf("%s hears removed %s again", n, gone)
		}
	}
	c.stop(gone)
	keep := remaining[0]
	c.stop(keep)
	c.restart(keep)
	if slices.Contains(c.nodes[keep].host.Members(), gone) {
		t.Fatalf("%s lists removed %s after a restart", keep, gone)
	}
	eventually(t, site+" served after the restart", func() error {
		resp, err := c.request(keep, &m.SiteRequest{Site: site, Idempotent: true})
		if err != nil {
			return err
		}
		if resp.Code != m.Code_CODE_OK || resp.Master == gone {
			return fmt.Errorf("answer %s from %q: %s", resp.Code, resp.Master, resp.Detail)
		}
		return nil
	})
}
