// Command hcstoragebench measures the storage layer: an incremental send of
// a small aligned change in a large dataset, node to node over the stream
// endpoint on loopback, and one snapshot of many datasets at once. It uses
// the ZFS driver on two throw-away file-backed pools when zfs works here
// (zfs-fuse through scripts/zfs-shim), else the portable driver, and says
// which. Its last line is always
//
//	incremental_ratio=R changed_bytes=C sent_bytes=S snapshot100_s=T
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/storage"
	"github.com/hybridcluster/hybridcluster/runtime/storage/portable"
	"github.com/hybridcluster/hybridcluster/runtime/storage/stream"
	"github.com/hybridcluster/hybridcluster/runtime/storage/zfsdriver"
)

const (
	// benchTimeout bounds the whole run.
	benchTimeout    = 10 * time.Minute
	poolSlackBytes  = 256 << 20
	writeChunkBytes = 1 << 20
)

func main() {
	driverFlag := flag.String("driver", "auto", "auto, zfs or portable")
	datasetBytes := flag.Int64("size", 256<<20, "dataset size in bytes")
	changeBytes := flag.Int64("change", 1<<20, "bytes overwritten (aligned) before the incremental send")
	datasets := flag.Int("datasets", 100, "datasets snapshotted at once")
	verbose := flag.Bool("v", false, "log every storage command")
	flag.Parse()
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := run(log, *driverFlag, *datasetBytes, *changeBytes, *datasets); err != nil {
		fmt.Fprintln(os.Stderr, "hcstoragebench:", err)
		os.Exit(1)
	}
}

type node struct {
	driver  storage.Driver
	cleanup func()
}

func run(log *slog.Logger, which string, size, change int64, datasets int) error {
	ctx, cancel := context.WithTimeout(context.Background(), benchTimeout)
	defer cancel()
	if change <= 0 || size < 2*change || size%change != 0 {
		return fmt.Errorf("-size must be a multiple of -change and at least twice it")
	}
	work, err := os.MkdirTemp("", "hcstoragebench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	useZFS := false
	pools := zfsdriver.NewPools(log)
	switch which {
	case "zfs":
		useZFS = true
	case "auto":
		if ok, reason := pools.Available(ctx); ok {
			useZFS = true
		} else {
			fmt.Printf("driver=portable (ZFS unavailable: %s)\n", firstLine(reason))
		}
	case "portable":
		fmt.Println("driver=portable (chosen with -driver)")
	default:
		return fmt.Errorf("unknown -driver %q", which)
	}
	var a, b node
	if useZFS {
		shim, err := pools.UseShimIfNeeded(ctx)
		if err != nil {
			return err
		}
		fmt.Printf("driver=zfs (shim for zfs-fuse on PATH: %v)\n", shim)
		poolBytes := size + int64(datasets)*(1<<20) + poolSlackBytes
		if a, err = zfsNode(ctx, log, pools, work, "a", poolBytes); err != nil {
			return err
		}
		defer a.cleanup()
		if b, err = zfsNode(ctx, log, pools, work, "b", poolBytes); err != nil {
			return err
		}
		defer b.cleanup()
	} else {
		for _, n := range []struct {
			name string
			dst  *node
		}{{"a", &a}, {"b", &b}} {
			d, err := portable.New(filepath.Join(work, n.name), log)
			if err != nil {
				return err
			}
			*n.dst = node{driver: d, cleanup: func() {}} // the work directory goes at exit
		}
	}

	// The receiving node's stream endpoint on loopback.
	token := randomHex(16)
	server, err := stream.NewServer(stream.ServerConfig{Driver: b.driver, Token: token, Logger: log})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	httpServer := &http.Server{Handler: server, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = httpServer.Serve(ln) }()
	defer httpServer.Close()
	client, err := stream.NewClient(stream.ClientConfig{BaseURL: "http://" + ln.Addr().String(), Token: token, Driver: a.driver, Logger: log})
	if err != nil {
		return err
	}

	site := storage.MustSite("bench")
	epoch := storage.Epoch{Term: 1, Node: "bench-a"}
	if err := a.driver.Create(ctx, site, 0); err != nil {
		return err
	}
	mp, err := a.driver.Mountpoint(ctx, site)
	if err != nil {
		return err
	}
	file := filepath.Join(mp, "data.bin")
	started := time.Now()
	if err := writeRandom(file, size); err != nil {
		return err
	}
	fmt.Printf("wrote %d MiB in %.2fs\n", size>>20, time.Since(started).Seconds())
	if _, err := a.driver.Snapshot(ctx, site, storage.MustSnap("base")); err != nil {
		return err
	}
	started = time.Now()
	full, err := client.Push(ctx, site, epoch, storage.MustSnap("base"), nil)
	if err != nil {
		return fmt.Errorf("full push: %w", err)
	}
	fmt.Printf("full send: %d bytes in %.2fs\n", full.SentBytes, time.Since(started).Seconds())

	// An aligned overwrite in the middle of the file.
	if err := overwrite(file, size/2/change*change, change); err != nil {
		return err
	}
	if _, err := a.driver.Snapshot(ctx, site, storage.MustSnap("changed")); err != nil {
		return err
	}
	var progressCalls int
	inc, err := client.Push(ctx, site, epoch, storage.MustSnap("changed"), func(done, total int64) { progressCalls++ })
	if err != nil {
		return fmt.Errorf("incremental push: %w", err)
	}
	ratio := float64(inc.SentBytes) / float64(change)
	fmt.Printf("incremental send node-to-node over loopback: %d bytes for %d changed (estimate %d) in %.3fs, %d progress callbacks\n",
		inc.SentBytes, change, inc.EstimatedBytes, inc.Duration.Seconds(), progressCalls)

	// Many datasets snapshotted at once.
	var sites []storage.Site
	for i := 0; i < datasets; i++ {
		s := storage.MustSite(fmt.Sprintf("bench-%03d", i))
		if err := a.driver.Create(ctx, s, 0); err != nil {
			return err
		}
		sites = append(sites, s)
	}
	started = time.Now()
	done, err := a.driver.SnapshotAll(ctx, storage.MustSnap("tick"), sites)
	if err != nil {
		return err
	}
	snapAll := time.Since(started)
	fmt.Printf("snapshot of %d datasets at once (%s driver): %.3fs\n", len(done), a.driver.Kind(), snapAll.Seconds())

	// Clean up before the last line, so it stays the last line.
	httpServer.Close()
	b.cleanup()
	a.cleanup()
	fmt.Printf("incremental_ratio=%.3f changed_bytes=%d sent_bytes=%d snapshot100_s=%.3f\n", ratio, change, inc.SentBytes, snapAll.Seconds())
	return nil
}

func zfsNode(ctx context.Context, log *slog.Logger, pools *zfsdriver.Pools, work, name string, poolBytes int64) (node, error) {
	dir := filepath.Join(work, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return node{}, err
	}
	img := filepath.Join(dir, "pool.img")
	f, err := os.Create(img)
	if err != nil {
		return node{}, err
	}
	if err := f.Truncate(poolBytes); err != nil {
		f.Close()
		return node{}, err
	}
	f.Close()
	pool := "hcbench" + name + randomHex(4)
	if err := pools.CreateFilePool(ctx, pool, img, filepath.Join(dir, "mnt")); err != nil {
		return node{}, err
	}
	// Runs once: explicitly before the last line, and deferred on errors.
	var once sync.Once
	cleanup := func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := pools.DestroyPool(ctx, pool); err != nil {
				fmt.Fprintln(os.Stderr, "hcstoragebench: destroy pool:", err)
			}
		})
	}
	d, err := zfsdriver.New(ctx, zfsdriver.Config{Root: pool + "/hc", Logger: log})
	if err != nil {
		cleanup()
		return node{}, err
	}
	return node{driver: d, cleanup: cleanup}, nil
}

func writeRandom(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func overwrite(path string, offset, n int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	buf := make([]byte, writeChunkBytes)
	for done := int64(0); done < n; done += int64(len(buf)) {
		chunk := buf[:min(int64(len(buf)), n-done)]
		if _, err := rand.Read(chunk); err != nil {
			f.Close()
			return err
		}
		if _, err := f.WriteAt(chunk, offset+done); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func firstLine(s string) string {
	for i, c := range s {
		if c == '\n' {
			return s[:i]
		}
	}
	if s == "" {
		return errors.New("unknown").Error()
	}
	return s
}
