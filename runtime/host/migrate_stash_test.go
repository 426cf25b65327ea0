package host

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/storage"
)

// slowStopSites is a SiteRunner whose Stop takes as long as a real app's
// graceful stop; nothing else is run. It reports a process running, as an
// app that writes on its own would, so every scheduled snapshot looks at
// the tree (the test writes files directly).
type slowStopSites struct{ stop time.Duration }

func (s slowStopSites) Start(string, *m.SiteSpec, string) error { return nil }
func (s slowStopSites) Stop(string)                             { time.Sleep(s.stop) }
func (s slowStopSites) Serve(_ string, w http.ResponseWriter, _ *http.Request) {
	w.WriteHeader(http.StatusOK)
}
func (s slowStopSites) Quiesce(context.Context, string, time.Duration) (int, error) { return 0, nil }
func (s slowStopSites) IsRunning(string) bool                                       { return true }

// TestCleanMigrationLeavesNoStash: a planned move leaves nothing diverged,
// so neither copy has a stash once the old master holds the new master's
// history. The old master's processes stop before its dataset turns
// read-only (storage carries both out in order); an old master with a
// slow stop used to accept the new master's first offer while still
// writable, storage refused the stream (not a replica), and the copy
// stashed its unchanged live state: an empty stash after every move.
func TestCleanMigrationLeavesNoStash(t *testing.T) {
	c := startClusterWith(t, 3, func(_ string, opt *Options) { opt.Sites = slowStopSites{stop: time.Second} })
	const site = "gamma"
	master, replica := c.placeSite(site)
	c.writeFile(master, site, "before-move.html")
	c.nodes[master].host.Send(core.SiteAddr(master, site), &m.Migrate{Site: site, Target: replica, Reason: "admin"})
	c.servedBy(c.other(master, replica), site, replica)
	// Two snapshots of the new master on the old one: the first offer (where
	// the stash was made) is over.
	writeID := uint64(100)
	eventually(t, "old master holds the new master's history", func() error {
		writeID++ // a change each time, so the new master keeps snapshotting
		c.writeFile(replica, site, fmt.Sprintf("after-move-%d.html", writeID))
		n := 0
		for _, s := range c.snapshots(master, site) {
			if e, _, ok := parseSnapshotName(s.Name.String()); ok && e.Node == replica {
				n++
			}
		}
		if n < 2 {
			return fmt.Errorf("old master %s holds %d snapshots of the new master", master, n)
		}
		return nil
	})
	for _, n := range []string{master, replica} {
		stashes, err := c.nodes[n].driver.ListStash(context.Background(), storage.MustSite(site))
		if err != nil {
			t.Fatal(err)
		}
		if len(stashes) != 0 {
			t.Errorf("%s holds %d stash(es) after a clean move: %+v", n, len(stashes), stashes)
		}
	}
}

// writeFile writes a file into the live tree of node's copy of site.
func (c *testCluster) writeFile(node, site, name string) {
	c.t.Helper()
	mp, err := c.nodes[node].driver.Mountpoint(context.Background(), storage.MustSite(site))
	if err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mp, name), []byte(name), 0o644); err != nil {
		c.t.Fatal(err)
	}
}
