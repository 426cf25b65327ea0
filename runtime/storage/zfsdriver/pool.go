package zfsdriver

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"

	"github.com/hybridcluster/hybridcluster/runtime/storage"
)

var poolNamePattern = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)

// Pools creates and destroys file-backed pools for tests and benchmarks,
// through the same choke point as the driver.
type Pools struct{ d *Driver }

// NewPools returns a pool helper logging to log (nil discards).
func NewPools(log *slog.Logger) *Pools {
	return &Pools{d: &Driver{log: newLogger(log).With("driver", Kind)}}
}

// CreateFilePool creates pool name on the file vdev (which must exist and
// be at least 64 MiB), mounted at mountpoint.
func (p *Pools) CreateFilePool(ctx context.Context, name, file, mountpoint string) error {
	if !poolNamePattern.MatchString(name) {
		return fmt.Errorf("%w: pool name %q", storage.ErrInvalidName, name)
	}
	_, err := p.d.command(ctx, "create pool", "zpool", []string{"create", "-m", mountpoint, name, file}, nil, nil)
	return err
}

// DestroyPool destroys a pool, retrying while it is busy.
func (p *Pools) DestroyPool(ctx context.Context, name string) error {
	if !poolNamePattern.MatchString(name) {
		return fmt.Errorf("%w: pool name %q", storage.ErrInvalidName, name)
	}
	_, err := p.d.commandRetry(ctx, "destroy pool", "zpool", []string{"destroy", "-f", name}, nil, nil, true)
	return err
}

// Available reports whether zfs commands work here (the tools exist and the
// daemon or kernel module answers), with the reason when they do not.
func (p *Pools) Available(ctx context.Context) (bool, string) {
	if _, err := p.d.command(ctx, opProbe, "zpool", []string{"list", "-H", "-o", "name"}, nil, nil); err != nil {
		return false, err.Error()
	}
	return true, ""
}

// NeedsShim reports whether the zfs on PATH lacks `list -p` (zfs-fuse), so
// go-zfs needs scripts/zfs-shim first on PATH.
func (p *Pools) NeedsShim(ctx context.Context) bool {
	_, err := p.d.command(ctx, opProbe, "zfs", []string{"list", "-Hp", "-o", "name", "-d", "0"}, nil, nil)
	return err != nil
}

// ShimDir finds scripts/zfs-shim of this repository (HC_ZFS_SHIM_DIR
// overrides), searching upwards from the working directory for go.mod. Only
// tests and the benchmark use the shim; production runs stock OpenZFS.
func ShimDir() (string, error) {
	if dir := os.Getenv("HC_ZFS_SHIM_DIR"); dir != "" {
		return dir, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			shim := filepath.Join(dir, "scripts", "zfs-shim")
			if _, err := os.Stat(filepath.Join(shim, "zfs")); err != nil {
				return "", fmt.Errorf("no zfs shim at %s: %w", shim, err)
			}
			return shim, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("this zfs (zfs-fuse) needs scripts/zfs-shim: run from the repository, or set HC_ZFS_SHIM_DIR to that directory (no go.mod above the working directory)")
		}
		dir = parent
	}
}

// UseShimIfNeeded puts the shim first on this process's PATH when the zfs
// on PATH is zfs-fuse (no `list -p`). It reports whether it did.
func (p *Pools) UseShimIfNeeded(ctx context.Context) (bool, error) {
	if !p.NeedsShim(ctx) {
		return false, nil
	}
	dir, err := ShimDir()
	if err != nil {
		return false, err
	}
	return true, os.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
}
