package host

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/storage"
	"github.com/hybridcluster/hybridcluster/runtime/storage/storagetest"
)

// stashNames lists the stashes a node's disk holds of site.
func (c *testCluster) stashNames(node, site string) []string {
	sts, err := c.nodes[node].driver.ListStash(context.Background(), storage.MustSite(site))
	if err != nil {
		return nil
	}
	var out []string
	for _, st := range sts {
		out = append(out, st.Name.String())
	}
	return out
}

// TestClusterRollbackThenRestore: a rollback stashes what it rolls away; an
// admin restore of that stash brings the rolled-away file back on the
// master at a new epoch, puts the rolled-back history aside as a displaced
// stash, and the site goes on being served by the same master.
func TestClusterRollbackThenRestore(t *testing.T) {
	c := startCluster(t, 3)
	const site = "gamma"
	master, _ := c.placeSite(site)
	ctx := context.Background()
	drv := c.nodes[master].driver
	first := c.snapshots(master, site)[0].Name.String()

	storagetest.WriteFile(t, ctx, drv, storage.MustSite(site), "later.txt", []byte("written after the first snapshot"))
	c.nodes[master].host.Send(core.SiteAddr(master, site), &m.AdminSnapshot{Site: site})
	eventually(t, "a second snapshot", func() error {
		if n := len(c.snapshots(master, site)); n < 2 {
			return fmt.Errorf("%d snapshots", n)
		}
		return nil
	})

	c.nodes[master].host.Send(core.SiteAddr(master, site), &m.AdminRollback{Site: site, Snapshot: first})
	var rollbackStash string
	eventually(t, "rolled back", func() error {
		for _, n := range c.stashNames(master, site) {
			if strings.HasPrefix(n, "rollback-") {
				rollbackStash = n
				return nil
			}
		}
		return fmt.Errorf("stashes %v", c.stashNames(master, site))
	})
	c.servedBy(c.other(master), site, master)
	if fileExists(t, ctx, drv, storage.MustSite(site), "later.txt") {
		t.Fatalf("later.txt live after the rollback")
	}

	c.nodes[master].host.Send(core.SiteAddr(master, site), &m.AdminRestoreStash{Site: site, Stash: rollbackStash})
	eventually(t, "restored", func() error {
		names := c.stashNames(master, site)
		for _, n := range names {
			if n == rollbackStash {
				return fmt.Errorf("stash %s still there: %v", rollbackStash, names)
			}
		}
		for _, n := range names {
			if strings.HasPrefix(n, "displaced-") {
				return nil
			}
		}
		return fmt.Errorf("no displaced stash: %v", names)
	})
	if !fileExists(t, ctx, drv, storage.MustSite(site), "later.txt") {
		t.Fatalf("later.txt not back after the restore")
	}
	c.servedBy(c.other(master), site, master)
	// The master serves at an epoch above the rollback's.
	resp, err := c.request(c.other(master), &m.SiteRequest{Site: site, Idempotent: true})
	if err != nil || resp.Code != m.Code_CODE_OK {
		t.Fatalf("request after restore: %v %v", resp, err)
	}
	if e, err := drv.Epoch(ctx, storage.MustSite(site)); err != nil || e.Term != resp.Epoch.GetTerm() || e.Node != resp.Epoch.GetNode() {
		t.Errorf("disk epoch %v (%v), served at %s", e, err, core.EpochString(resp.Epoch))
	}
}
