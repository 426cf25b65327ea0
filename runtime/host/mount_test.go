package host

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/storage"
	"github.com/hybridcluster/hybridcluster/runtime/storage/storagetest"
)

// TestClusterMountSnapshot: an admin on another node asks the master's
// dataset actor to mount a snapshot; the answer (an AdminView by QueryId)
// names a directory holding the snapshot's files, not the live ones;
// unmount ends it, and a replica's copy refuses.
func TestClusterMountSnapshot(t *testing.T) {
	c := startCluster(t, 3)
	const site = "delta"
	master, replica := c.placeSite(site)
	ctx := context.Background()
	drv := c.nodes[master].driver
	first := c.snapshots(master, site)[0].Name.String()
	storagetest.WriteFile(t, ctx, drv, storage.MustSite(site), "index.html", []byte("after the first snapshot"))

	admin := c.nodes[c.other(master)].host
	query := func(to string, kind m.AdminQueryKind) *m.AdminView {
		t.Helper()
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		v, err := admin.Query(qctx, core.DatasetAddr(to, site), &m.AdminQuery{Kind: kind, Site: site, Snapshot: first})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	v := query(master, m.AdminQueryKind_ADMIN_QUERY_MOUNT)
	if v.Code != m.Code_CODE_OK || v.MountPath == "" || v.Node != master {
		t.Fatalf("mount: %v", v)
	}
	if _, err := os.Stat(filepath.Join(v.MountPath, "index.html")); !os.IsNotExist(err) {
		t.Fatalf("the mounted snapshot holds a file written after it (%v)", err)
	}
	if v := query(master, m.AdminQueryKind_ADMIN_QUERY_UNMOUNT); v.Code != m.Code_CODE_OK {
		t.Fatalf("unmount: %v", v)
	}
	if v := query(replica, m.AdminQueryKind_ADMIN_QUERY_MOUNT); v.Code != m.Code_CODE_MOVED {
		t.Fatalf("mount on the replica: %v, want MOVED", v)
	}
}
