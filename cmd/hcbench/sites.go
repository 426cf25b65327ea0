package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/admin"
	"github.com/hybridcluster/hybridcluster/runtime/localcluster"
)

const (
	// sitesMax bounds -n of `hcbench sites`.
	sitesMax = 10_000
	// placeWaitMax bounds the wait for every site to be active with a
	// replica; at the bound the run fails with the count reached.
	placeWaitMax = 20 * time.Minute
	// progressEvery is how often the wait prints its progress (stderr).
	progressEvery = 10 * time.Second
)

// idleSites creates n static sites on a 3-node cluster, lets it idle, and
// reports each node's heap, goroutines and CPU while idle, per site.
func idleSites(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("hcbench sites", flag.ExitOnError)
	n := fs.Int("n", 1000, "sites to create (1.."+strconv.Itoa(sitesMax)+")")
	idle := fs.Duration("idle", 10*time.Second, "how long to measure the idle cluster")
	_ = fs.Parse(args)
	if *n < 1 || *n > sitesMax {
		return fmt.Errorf("-n 1..%d", sitesMax)
	}
	dir, err := os.MkdirTemp("", "hcbench-sites-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin, err := localcluster.Build(ctx, dir)
	if err != nil {
		return err
	}
	c, err := localcluster.Start(ctx, localcluster.Options{Nodes: 3, Dir: dir, Bin: bin})
	if err != nil {
		return err
	}
	defer c.Close()
	time.Sleep(3 * time.Second) // every node's first report
	before := stats(ctx, c)
	cl := c.Client(0)
	started := time.Now()
	for i := range *n {
		name := fmt.Sprintf("s%05d", i)
		for attempt := 0; ; attempt++ {
			_, err := cl.CreateSite(ctx, admin.CreateSite{Name: name, Domains: []string{name + ".example"}})
			if err == nil {
				break
			}
			if attempt >= 20 {
				return fmt.Errorf("create %s: %w", name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	fmt.Fprintf(os.Stderr, "hcbench sites: %d created in %.1f s; waiting until each is active with a replica\n", *n, time.Since(started).Seconds())
	// Wait until every site is active with a replica.
	deadline := time.Now().Add(placeWaitMax)
	lastProgress := time.Now()
	for {
		sites, err := cl.Sites(ctx)
		active := 0
		if err == nil {
			for _, s := range sites {
				if s.Phase == "active" && len(s.Replicas) > 0 {
					active++
				}
			}
		}
		if active == *n {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d sites active with a replica after %v", active, *n, placeWaitMax)
		}
		if time.Since(lastProgress) >= progressEvery {
			lastProgress = time.Now()
			fmt.Fprintf(os.Stderr, "hcbench sites: %d of %d active with a replica after %.0f s\n", active, *n, time.Since(started).Seconds())
		}
		time.Sleep(time.Second)
	}
	placed := time.Since(started)
	cpu0 := cpuTicks(c)
	time.Sleep(*idle)
	cpu1 := cpuTicks(c)
	after := stats(ctx, c)
	fmt.Printf("sites=%d placed_s=%.1f\n", *n, placed.Seconds())
	for i, nd := range c.Nodes {
		cpu := float64(cpu1[i]-cpu0[i]) / 100 / idle.Seconds() // clock ticks at 100 Hz
		fmt.Printf("node=%s goroutines=%d heap_mb=%.1f heap_per_site_kb=%.1f idle_cpu_cores=%.2f\n", nd.Name, after[i].Goroutines,
			float64(after[i].HeapBytes)/(1<<20), float64(int64(after[i].HeapBytes)-int64(before[i].HeapBytes))/1024/float64(*n), cpu)
	}
	return nil
}

func stats(ctx context.Context, c *localcluster.Cluster) []admin.Stats {
	out := make([]admin.Stats, len(c.Nodes))
	for i := range c.Nodes {
		if s, err := c.Client(i).Stats(ctx); err == nil {
			out[i] = *s
		}
	}
	return out
}

// cpuTicks reads each node process's user+system clock ticks.
func cpuTicks(c *localcluster.Cluster) []int64 {
	out := make([]int64, len(c.Nodes))
	for i := range c.Nodes {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.Pid(i)))
		if err != nil {
			continue
		}
		f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
		if len(f) > 12 {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			s, _ := strconv.ParseInt(f[12], 10, 64)
			out[i] = u + s
		}
	}
	return out
}
