// Package zfstest makes ZFS drivers on throw-away file-backed pools for
// tests, and decides whether a missing ZFS skips or fails a test.
//
// ZFS tests skip with a clear message when zfs is unavailable, except when
// the environment says ZFS must be there (CI=true or HC_REQUIRE_ZFS=1):
// then they fail, because a ZFS test silently skipping in CI is a defect.
package zfstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/storage/zfsdriver"
)

const (
	// PoolBytes is the size of each test pool's backing file.
	PoolBytes = 512 << 20
	// setupTimeout bounds pool creation and destruction.
	setupTimeout = 2 * time.Minute
)

// Required reports whether the environment demands real ZFS tests.
func Required() bool {
	return os.Getenv("CI") == "true" || os.Getenv("HC_REQUIRE_ZFS") == "1"
}

var (
	shimOnce sync.Once
	shimErr  error
)

// Prepare checks that ZFS works here and, on zfs-fuse, puts
// scripts/zfs-shim first on this process's PATH. It skips or fails t when
// ZFS is unavailable.
func Prepare(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	unavailable := func(reason string) {
		t.Helper()
		msg := "ZFS unavailable: " + reason + " (run scripts/setup-zfs.sh as root to install and start zfs-fuse)"
		if Required() {
			t.Fatalf("%s; CI=true or HC_REQUIRE_ZFS=1 is set, so this is a failure, not a skip", msg)
		}
		t.Skipf("%s; set HC_REQUIRE_ZFS=1 to make this a failure", msg)
	}
	if _, err := exec.LookPath("zfs"); err != nil {
		unavailable("no zfs command on PATH")
	}
	if _, err := exec.LookPath("zpool"); err != nil {
		unavailable("no zpool command on PATH")
	}
	pools := zfsdriver.NewPools(nil)
	if ok, reason := pools.Available(ctx); !ok {
		unavailable(reason)
	}
	shimOnce.Do(func() { _, shimErr = pools.UseShimIfNeeded(ctx) })
	if shimErr != nil {
		t.Fatalf("zfs needs the test shim but it could not be put on PATH: %v", shimErr)
	}
}

// NewPool creates a fresh file-backed pool (destroyed at cleanup) and a
// driver rooted at <pool>/hc on it.
func NewPool(t testing.TB, log *slog.Logger) *zfsdriver.Driver {
	t.Helper()
	Prepare(t)
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	dir := t.TempDir()
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := "hct" + hex.EncodeToString(b[:])
	file := filepath.Join(dir, "pool.img")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(PoolBytes); err != nil {
		t.Fatal(err)
	}
	f.Close()
	pools := zfsdriver.NewPools(log)
	if err := pools.CreateFilePool(ctx, name, file, filepath.Join(dir, "mnt")); err != nil {
		t.Fatalf("create test pool: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
		defer cancel()
		if err := pools.DestroyPool(ctx, name); err != nil && !strings.Contains(err.Error(), "no such pool") {
			t.Errorf("destroy test pool %s: %v", name, err)
		}
	})
	d, err := zfsdriver.New(ctx, zfsdriver.Config{Root: name + "/hc", Logger: log})
	if err != nil {
		t.Fatalf("zfs driver on %s: %v", name, err)
	}
	return d
}

// Logger logs every zfs command to stderr when HC_ZFS_DEBUG=1, else nothing.
func Logger() *slog.Logger {
	if os.Getenv("HC_ZFS_DEBUG") != "1" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
