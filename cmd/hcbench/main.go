// Command hcbench measures a local cluster of real hcnode processes.
//
//	hcbench failover [-runs N] [-nodes 3]
//	hcbench sites [-n 1000] [-idle 10s]
//	hcbench rpo [-sites-per-node 50] [-rate-kib 1024] [-duration 30s]
//	hcbench http [-rounds 3] [-duration 5s] [-connections 64] (see http.go)
//	hcbench mysql [-duration 3s] [-db-mib 256] [-zfs]   (see mysql.go)
//
// failover: repeated kill -9 of a site's master under continuous writes
// (hcdemoapp, acknowledged after fsync) through the other nodes. Each run
// prints the time from the kill to the first successful request and the
// data-loss window (how long before the kill the oldest lost acknowledged
// write was acknowledged), restarts the killed node and waits until it has
// caught up as a replica. The last line is
//
//	failover_p99_s=X rpo_p99_s=Y runs=N
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/admin"
	"github.com/hybridcluster/hybridcluster/runtime/localcluster"
)

// Bounds.
const (
	// runsMax bounds -runs.
	runsMax = 200
	// catchUpWaitMax bounds the wait for a restarted node to hold the
	// master's newest snapshot again.
	catchUpWaitMax = 90 * time.Second
)

func main() {
	if len(os.Args) >= 2 && os.Args[1] == "mysql" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
		defer stop()
		if err := mysqlBench(ctx, os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "hcbench:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) >= 2 && strings.HasPrefix(os.Args[1], "http") {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
		defer stop()
		if err := httpMain(ctx, os.Args[1], os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "hcbench:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) >= 2 && (os.Args[1] == "sites" || os.Args[1] == "rpo") {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
		defer stop()
		run := idleSites
		if os.Args[1] == "rpo" {
			run = rpo
		}
		if err := run(ctx, os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "hcbench:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) < 2 || os.Args[1] != "failover" {
		fmt.Fprintln(os.Stderr, "usage: hcbench failover [-runs N] [-nodes N] [-keep]\n       hcbench sites [-n N] [-idle 10s]\n       hcbench rpo [-sites-per-node 50] [-rate-kib 1024] [-duration 30s]\n       hcbench http [-rounds 3] [-duration 5s] [-skip-move]\n       hcbench mysql [-duration 3s] [-db-mib 256] [-zfs]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("hcbench failover", flag.ExitOnError)
	runs := fs.Int("runs", 10, "failovers to measure (1.."+fmt.Sprint(runsMax)+")")
	nodes := fs.Int("nodes", 3, "cluster size (3..9)")
	keep := fs.Bool("keep", false, "keep the cluster's directory (logs)")
	useZFS := fs.Bool("zfs", false, "put the nodes' datasets on a file-backed ZFS pool (needs root and zfs)")
	_ = fs.Parse(os.Args[2:])
	if *runs < 1 || *runs > runsMax || *nodes < 3 || *nodes > 9 {
		fmt.Fprintln(os.Stderr, "hcbench: -runs 1..200, -nodes 3..9")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := failover(ctx, *runs, *nodes, *keep, *useZFS); err != nil {
		fmt.Fprintln(os.Stderr, "hcbench:", err)
		os.Exit(1)
	}
}

func failover(ctx context.Context, runs, nodes int, keep, useZFS bool) error {
	dir, err := os.MkdirTemp("", "hcbench-")
	if err != nil {
		return err
	}
	if keep {
		fmt.Println("directory", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	bin, err := localcluster.Build(ctx, dir)
	if err != nil {
		return err
	}
	c, err := startCluster(ctx, localcluster.Options{Nodes: nodes, Dir: dir, Bin: bin, Args: []string{"-log-level", "debug"}}, useZFS)
	if err != nil {
		return err
	}
	defer c.Close()
	const site, domain = "bench", "bench.example"
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := c.HCCtl(ctx, 0, "site", "create", site, "--domain", domain, "--app", bin.HCDemoApp)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(500 * time.Millisecond)
	}
	var recoveries, rpos []time.Duration
	for run := 1; run <= runs; run++ {
		s, err := waitReplicated(ctx, c.Cluster, 0, site)
		if err != nil {
			return err
		}
		victim := c.NodeIndex(s.Master)
		var via []int
		for i := range c.Nodes {
			if i != victim && c.Running(i) {
				via = append(via, i)
			}
		}
		res, err := localcluster.Failover(ctx, c.Cluster, site, domain, via)
		if err != nil {
			return fmt.Errorf("run %d: %w\n%s", run, err, c.Logs(30))
		}
		recoveries = append(recoveries, res.Recovery)
		rpos = append(rpos, res.OldestLostAge)
		// Soak figures of the nodes that lived through every run so far:
		// goroutines and heap must not grow with each kill and rejoin.
		var soak string
		for _, i := range via {
			if st, err := c.Client(i).Stats(ctx); err == nil {
				soak += fmt.Sprintf(" %s_goroutines=%d %s_heap_mb=%.1f", st.Node, st.Goroutines, st.Node, float64(st.HeapBytes)/(1<<20))
			}
		}
		fmt.Printf("run=%d killed=%s new_master=%s failover_s=%.2f rpo_s=%.2f acked=%d lost=%d%s\n", run, res.Victim,
			res.NewMaster, res.Recovery.Seconds(), res.OldestLostAge.Seconds(), res.Acked, res.Lost, soak)
		if err := c.StartNode(ctx, victim); err != nil {
			return err
		}
		if _, err := waitReplicated(ctx, c.Cluster, via[0], site); err != nil {
			return fmt.Errorf("run %d: the restarted node did not catch up: %w", run, err)
		}
	}
	fmt.Printf("failover_p50_s=%.2f failover_max_s=%.2f rpo_p50_s=%.2f rpo_max_s=%.2f\n",
		localcluster.Percentile(recoveries, 50).Seconds(), localcluster.Percentile(recoveries, 100).Seconds(),
		localcluster.Percentile(rpos, 50).Seconds(), localcluster.Percentile(rpos, 100).Seconds())
	fmt.Printf("failover_p99_s=%.2f rpo_p99_s=%.2f runs=%d\n", localcluster.Percentile(recoveries, 99).Seconds(),
		localcluster.Percentile(rpos, 99).Seconds(), runs)
	return nil
}

// waitReplicated waits until the site is active and a replica holds the
// master's newest snapshot.
func waitReplicated(ctx context.Context, c *localcluster.Cluster, via int, site string) (admin.Site, error) {
	wctx, cancel := context.WithTimeout(ctx, catchUpWaitMax)
	defer cancel()
	return c.WaitSite(wctx, via, site, func(s admin.Site) bool {
		if s.Master == "" || s.Phase != "active" {
			return false
		}
		var newest string
		for _, cp := range s.Copies {
			if cp.Node == s.Master && cp.Latest != nil {
				newest = cp.Latest.Name
			}
		}
		if newest == "" {
			return false
		}
		for _, cp := range s.Copies {
			if cp.Node != s.Master && cp.Role == "replica" && cp.Latest != nil && cp.Latest.Name == newest {
				return true
			}
		}
		return false
	})
}

// startCluster starts a local cluster, on fresh file-backed ZFS pools in
// opt.Dir when useZFS, one per node (destroyed when the cluster closes).
func startCluster(ctx context.Context, opt localcluster.Options, useZFS bool) (*closingCluster, error) {
	var destroy func()
	if useZFS {
		// A pool per node: nodes are separate machines with disks of
		// their own.
		pools, env, d, err := localcluster.CreateNodePools(ctx, opt.Dir, opt.Nodes)
		if err != nil {
			return nil, fmt.Errorf("zfs pools: %w", err)
		}
		opt.ZFSPools, opt.Env, destroy = pools, append(opt.Env, env...), d
	}
	c, err := localcluster.Start(ctx, opt)
	if err != nil {
		if destroy != nil {
			destroy()
		}
		return nil, err
	}
	return &closingCluster{Cluster: c, destroy: destroy}, nil
}

// closingCluster destroys its pool after its nodes stop.
type closingCluster struct {
	*localcluster.Cluster
	destroy func()
}

func (c *closingCluster) Close() {
	c.Cluster.Close()
	if c.destroy != nil {
		c.destroy()
	}
}
