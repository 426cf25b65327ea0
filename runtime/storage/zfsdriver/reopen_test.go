package zfsdriver_test

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/storage"
	"github.com/hybridcluster/hybridcluster/runtime/storage/zfsdriver"
	"github.com/hybridcluster/hybridcluster/runtime/storage/zfsdriver/zfstest"
)

// A node restarts while a replica's mount is in use (a shell, an open file):
// opening the driver again sets nothing on the replicas' parent, whose
// property changes would remount every replica and fail on the busy one.
func TestReopensWithABusyReplica(t *testing.T) {
	d := zfstest.NewPool(t, zfstest.Logger())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	site := storage.MustSite("busy")
	if err := d.Create(ctx, site, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Snapshot(ctx, site, storage.MustSnap("s1")); err != nil {
		t.Fatal(err)
	}
	if err := d.SetReadOnly(ctx, site, true); err != nil { // a replica now
		t.Fatal(err)
	}
	dir, err := d.Mountpoint(ctx, site)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(dir) // keeps the mount busy
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	c := &commandCounter{ops: map[string]int{}}
	again, err := zfsdriver.New(ctx, zfsdriver.Config{Root: d.Root(), Logger: slog.New(c)})
	if err != nil {
		t.Fatalf("reopen with a busy replica: %v", err)
	}
	if n := c.count("set"); n != 0 {
		t.Fatalf("reopen set %d properties that were set already", n)
	}
	if snaps, err := again.ListSnapshots(ctx, site); err != nil || len(snaps) != 1 {
		t.Fatalf("the replica after the reopen: %v %v", snaps, err)
	}
}
