package host

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/storage"
	"github.com/hybridcluster/hybridcluster/runtime/storage/storagetest"
)

// TestMountSurvivesRestart: an admin's read-only mount of a snapshot is
// still there after its node restarts, and the restarted dataset actor
// lists it; a use of the mount that a stopped run left behind (a change
// check that never unmounted) is removed at boot. Before, the actor forgot
// the mount while the disk kept it, and leftovers piled up.
func TestMountSurvivesRestart(t *testing.T) {
	c := startCluster(t, 3)
	const site = "epsilon"
	master, _ := c.placeSite(site)
	ctx := context.Background()
	s := storage.MustSite(site)
	first := c.snapshots(master, site)[0].Name
	admin := c.nodes[c.other(master)].host
	query := func(kind m.AdminQueryKind) *m.AdminView {
		t.Helper()
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		v, err := admin.Query(qctx, core.DatasetAddr(master, site), &m.AdminQuery{Kind: kind, Site: site, Snapshot: first.String()})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	v := query(m.AdminQueryKind_ADMIN_QUERY_MOUNT)
	if v.Code != m.Code_CODE_OK || v.MountPath == "" {
		t.Fatalf("mount: %v", v)
	}
	path := v.MountPath
	files := storagetest.HashTree(t, path)
	// A leftover: a use of the same snapshot that nobody will unmount.
	if _, err := c.nodes[master].driver.MountReadOnly(ctx, s, first); err != nil {
		t.Fatal(err)
	}

	c.stop(master)
	c.restart(master)

	mounts, err := c.nodes[master].driver.ListMounts(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) != 1 || mounts[0].Snapshot != first || mounts[0].Users != 1 || mounts[0].Path != path {
		t.Fatalf("mounts after restart: %+v; want %s at %s with one user (the admin's)", mounts, first, path)
	}
	if got := storagetest.HashTree(t, path); len(got) != len(files) {
		t.Fatalf("mounted files after restart: %v, before: %v", got, files)
	}
	eventually(t, "the restarted dataset actor lists the mount", func() error {
		v := query(m.AdminQueryKind_ADMIN_QUERY_SITE)
		if v.Code != m.Code_CODE_OK || v.Mounts[first.String()] != path {
			return fmt.Errorf("site view %s: mounts %v", v.Code, v.Mounts)
		}
		return nil
	})
}
