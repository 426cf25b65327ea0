package host

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// TestHandOffMovesTheSiteAndTakesNoCopyBack: a stopping node's hand-off
// moves the site it masters to a live replica, which then serves it
// through every other node; from the hand-off on the node takes no copy,
// so a move back to it is aborted and the site stays where it went.
func TestHandOffMovesTheSiteAndTakesNoCopyBack(t *testing.T) {
	c := startCluster(t, 3)
	const site = "gamma"
	master, _ := c.placeSite(site)
	ctx, cancel := context.WithTimeout(context.Background(), waitMax)
	defer cancel()
	moved, left := c.nodes[master].host.HandOff(ctx)
	if moved != 1 || left != 0 {
		t.Fatalf("hand-off: moved=%d left=%d, want 1 and 0", moved, left)
	}
	var target string
	eventually(t, "served by the node the site was handed to", func() error {
		resp, err := c.request(c.other(master), &m.SiteRequest{Site: site, Idempotent: true})
		if err != nil {
			return err
		}
		if resp.Code != m.Code_CODE_OK || resp.Master == master {
			return fmt.Errorf("answer %s from %q: %s", resp.Code, resp.Master, resp.Detail)
		}
		target = resp.Master
		return nil
	})
	if !strings.Contains(c.logs.String(), "handed off") {
		t.Error("the stopping node logged no hand-off")
	}

	c.nodes[target].host.Send(core.SiteAddr(target, site), &m.Migrate{Site: site, Target: master, Reason: "admin"})
	eventually(t, "the move back to the stopping node aborted", func() error {
		for _, line := range strings.Split(c.logs.String(), "\n") {
			if strings.Contains(line, "migration aborted") && strings.Contains(line, "target="+master) {
				return nil
			}
		}
		return fmt.Errorf("no aborted move to %s in the log", master)
	})
	for _, n := range c.names {
		if n != master {
			c.servedBy(n, site, target)
		}
	}
}

// TestHandOffLeavesWhatItCannotMove: with its only replica's node gone,
// the site has nowhere to go and stays served here, counted as left; and
// a hand-off whose bound has already passed moves nothing and counts
// every site it did not try as left (the node's "hand-off done" line says
// how many will fail over).
func TestHandOffLeavesWhatItCannotMove(t *testing.T) {
	c := startCluster(t, 2)
	const site = "delta"
	master, replica := c.placeSite(site)

	done, cancel := context.WithCancel(context.Background())
	cancel()
	if moved, left := c.nodes[master].host.HandOff(done); moved != 0 || left != 1 {
		t.Errorf("hand-off past its bound: moved=%d left=%d, want 0 and 1", moved, left)
	}

	c.stop(replica)
	eventually(t, "the replica's node is seen gone", func() error {
		if c.nodes[master].host.Live(replica) {
			return fmt.Errorf("%s still live", replica)
		}
		return nil
	})
	ctx, cancel2 := context.WithTimeout(context.Background(), waitMax)
	defer cancel2()
	if moved, left := c.nodes[master].host.HandOff(ctx); moved != 0 || left != 1 {
		t.Errorf("hand-off with no live replica: moved=%d left=%d, want 0 and 1", moved, left)
	}
	if !strings.Contains(c.logs.String(), "no live replica") {
		t.Error("no warning that the site has no live replica")
	}
	c.servedBy(master, site, master)
}
