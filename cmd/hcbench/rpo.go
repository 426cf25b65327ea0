package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/admin"
	"github.com/hybridcluster/hybridcluster/runtime/localcluster"
)

// Bounds of `hcbench rpo`.
const (
	rpoSitesPerNodeMax = 100
	rpoRateKiBMax      = 8 << 10
	rpoDurationMax     = 10 * time.Minute
	// writeBytes is one write's body (hcdemoapp takes at most 64 KiB).
	writeBytes = 64 << 10
)

// rpo measures replication lag under write load: sites-per-node sites
// mastered on each of 3 nodes, each written at rate KiB/s (64 KiB fsync'd
// writes) through the front ends; once a second, for every site, the age
// of the newest snapshot its replica holds (the data a crash of the master
// would lose at that moment) from the balancer's view.
func rpo(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("hcbench rpo", flag.ExitOnError)
	perNode := fs.Int("sites-per-node", 50, "sites per node (1.."+strconv.Itoa(rpoSitesPerNodeMax)+")")
	rate := fs.Int("rate-kib", 1024, "write rate per site in KiB/s (1.."+strconv.Itoa(rpoRateKiBMax)+")")
	dur := fs.Duration("duration", 30*time.Second, "how long to write and measure")
	useZFS := fs.Bool("zfs", false, "put the nodes' datasets on a file-backed ZFS pool (needs root and zfs)")
	_ = fs.Parse(args)
	if *perNode < 1 || *perNode > rpoSitesPerNodeMax || *rate < 1 || *rate > rpoRateKiBMax || *dur <= 0 || *dur > rpoDurationMax {
		return fmt.Errorf("-sites-per-node 1..%d, -rate-kib 1..%d, -duration up to %v", rpoSitesPerNodeMax, rpoRateKiBMax, rpoDurationMax)
	}
	dir, err := os.MkdirTemp("", "hcbench-rpo-")
	if err != nil {
		return err
	}
	if os.Getenv("HCBENCH_KEEP") != "" {
		fmt.Println("directory", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	bin, err := localcluster.Build(ctx, dir)
	if err != nil {
		return err
	}
	c, err := startCluster(ctx, localcluster.Options{Nodes: 3, Dir: dir, Bin: bin}, *useZFS)
	if err != nil {
		return err
	}
	defer c.Close()
	time.Sleep(3 * time.Second)
	n := *perNode * len(c.Nodes)
	cl := c.Client(0)
	for i := range n {
		name := fmt.Sprintf("w%03d", i)
		for attempt := 0; ; attempt++ {
			_, err := cl.CreateSite(ctx, admin.CreateSite{Name: name, Domains: []string{name + ".example"}, AppCommand: bin.HCDemoApp})
			if err == nil {
				break
			}
			if attempt >= 20 {
				return fmt.Errorf("create %s: %w", name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	deadline := time.Now().Add(5 * time.Minute)
	masters := map[string]int{}
	for {
		sites, err := cl.Sites(ctx)
		clear(masters)
		if err == nil {
			for _, s := range sites {
				if s.Phase == "active" && len(s.Replicas) > 0 {
					masters[s.Name] = c.NodeIndex(s.Master)
				}
			}
		}
		if len(masters) == n {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d sites active with a replica", len(masters), n)
		}
		time.Sleep(time.Second)
	}
	perMaster := map[int]int{}
	for _, m := range masters {
		perMaster[m]++
	}
	fmt.Printf("sites=%d masters_per_node=%v rate_kib_s=%d write_kib=%d\n", n, perMaster, *rate, writeBytes>>10)

	wctx, stop := context.WithTimeout(ctx, *dur)
	defer stop()
	var acked, failed atomic.Int64
	var firstFailure sync.Once
	var wg sync.WaitGroup
	body := bytes.Repeat([]byte("x"), writeBytes)
	interval := time.Duration(float64(time.Second) * float64(writeBytes) / float64(*rate<<10))
	i := 0
	for site, m := range masters {
		via := (m + 1) % len(c.Nodes) // through a node that is not the master
		i++
		wg.Go(func() {
			t := time.NewTicker(interval)
			defer t.Stop()
			for id := 1; ; id++ {
				select {
				case <-wctx.Done():
					return
				case <-t.C:
				}
				st, text, err := c.Do(wctx, via, "POST", site+".example", "/write?id="+strconv.Itoa(id), bytes.NewReader(body))
				if err == nil && st == 200 {
					acked.Add(1)
				} else if wctx.Err() == nil {
					failed.Add(1)
					firstFailure.Do(func() { fmt.Printf("first failed write: site %s status %d %v %.200s\n", site, st, err, text) })
				}
			}
		})
	}
	var lags []time.Duration
	started := time.Now()
	sample := time.NewTicker(time.Second)
	for done := false; !done; {
		select {
		case <-wctx.Done():
			done = true
			continue
		case <-sample.C:
		}
		if time.Since(started) < 5*time.Second {
			continue // let replication reach its steady state
		}
		sites, err := cl.Sites(ctx)
		if err != nil {
			fmt.Println("sample:", err)
			continue
		}
		for _, s := range sites {
			var newest time.Time
			for _, cp := range s.Copies {
				if cp.Role == "replica" && cp.Latest != nil && cp.Latest.TakenAt.After(newest) {
					newest = cp.Latest.TakenAt
				}
			}
			if !newest.IsZero() {
				lags = append(lags, max(0, s.ReportedAt.Sub(newest)))
			}
		}
	}
	sample.Stop()
	wg.Wait()
	secs := dur.Seconds()
	achieved := float64(acked.Load()) * float64(writeBytes>>10) / secs / float64(n)
	fmt.Printf("writes_acked=%d writes_failed=%d achieved_kib_s_per_site=%.0f samples=%d rpo_p50_s=%.2f rpo_max_s=%.2f\n",
		acked.Load(), failed.Load(), achieved, len(lags), localcluster.Percentile(lags, 50).Seconds(), localcluster.Percentile(lags, 100).Seconds())
	fmt.Printf("rpo_p99_s=%.2f sites=%d rate_kib_s=%d achieved_kib_s=%.0f\n", localcluster.Percentile(lags, 99).Seconds(), n, *rate, achieved)
	return nil
}
