package zfsdriver_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/storage"
	"github.com/hybridcluster/hybridcluster/runtime/storage/zfsdriver/zfstest"
)

// BenchmarkPromote: a replica becomes writable (a move's or failover's
// promotion, inside the move's pause), on real zfs. The demotion back
// between rounds is not timed.
// go test -run '^$' -bench Promote -benchtime 20x ./runtime/storage/zfsdriver/
func BenchmarkPromote(b *testing.B) {
	d := zfstest.NewPool(b, zfstest.Logger())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	site := storage.MustSite("promoted")
	if err := d.Create(ctx, site, 0); err != nil {
		b.Fatal(err)
	}
	if _, err := d.Snapshot(ctx, site, storage.MustSnap("s1")); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		if err := d.SetReadOnly(ctx, site, true); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := d.SetReadOnly(ctx, site, false); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	dir, err := d.Mountpoint(ctx, site)
	if err != nil {
		b.Fatal(err)
	}
	storagetestWrite(b, dir)
}

// storagetestWrite checks that the promoted dataset takes writes.
func storagetestWrite(b *testing.B, dir string) {
	b.Helper()
	if err := os.WriteFile(filepath.Join(dir, "written"), []byte("x"), 0o644); err != nil {
		b.Fatalf("promoted dataset not writable: %v", err)
	}
}
