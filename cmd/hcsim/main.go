// Command hcsim runs the deterministic failure simulator: the product's own
// actors on a seeded virtual cluster with faults, checked against the
// invariants of DESIGN.md.
//
//	hcsim -seed N [-v]           one scenario; last line: seed=N violations=V trace=<hex>
//	hcsim -seeds K [-start S]    K scenarios; last line: seeds=K violations=V simulated_s=X wall_s=Y speedup=Zx
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/hybridcluster/hybridcluster/sim"
)

func main() {
	// The simulator's heap is small and short-lived; collecting less often
	// buys about a quarter of the run time for a few tens of MiB.
	debug.SetGCPercent(400)
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("hcsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	d := sim.DefaultOptions()
	seed := fs.Uint64("seed", 1, "run this one seed")
	seeds := fs.Int("seeds", 0, "run this many seeds (from -start) instead of one")
	start := fs.Uint64("start", 1, "first seed of a -seeds sweep")
	verbose := fs.Bool("v", false, "print the readable trace of the run")
	verboseMsgs := fs.Bool("vv", false, "print every message delivery too (implies -v)")
	nodes := fs.Int("nodes", d.Nodes, "cluster nodes (3..100)")
	sites := fs.Int("sites", d.Sites, "sites (1..10000)")
	safety := fs.Duration("safety", d.Safety, "simulated time with faults")
	liveness := fs.Duration("liveness", d.Liveness, "simulated time on the healed cluster afterwards")
	rate := fs.Float64("rate", d.RequestRate, "client requests per site per second")
	writes := fs.Float64("writes", d.WriteFraction, "fraction of requests that write")
	faults := fs.Float64("faults", d.FaultRate, "fault rate multiplier (0: no faults)")
	parallel := fs.Int("parallel", runtime.GOMAXPROCS(0), "seeds run at once in a sweep")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: hcsim [-seed N [-v] | -seeds K [-start S]] [options]\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "hcsim: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 2
	}
	opt := d
	opt.Nodes, opt.Sites, opt.Safety, opt.Liveness = *nodes, *sites, *safety, *liveness
	opt.RequestRate, opt.WriteFraction, opt.FaultRate = *rate, *writes, *faults
	// The flags that change the scenario, for the reproduce line.
	var scenario []string
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "seed", "seeds", "start", "v", "vv", "parallel":
		default:
			scenario = append(scenario, "-"+f.Name+" "+f.Value.String())
		}
	})
	repro := func(s uint64) string {
		return strings.TrimSpace(fmt.Sprintf("go run ./cmd/hcsim -seed %d %s", s, strings.Join(scenario, " ")))
	}

	if *seeds == 0 {
		opt.Seed = *seed
		if *verbose || *verboseMsgs {
			opt.Verbose = stdout
			opt.VerboseMessages = *verboseMsgs
		}
		t0 := time.Now()
		res, err := sim.Run(opt)
		if err != nil {
			fmt.Fprintf(stderr, "hcsim: %v\n", err)
			return 2
		}
		st := res.Stats
		fmt.Fprintf(stdout, "faults: %s\n", st.Faults)
		fmt.Fprintf(stdout, "requests=%d ok=%d failed=%d acked_writes=%d migrations=%d failovers=%d heals=%d rollbacks=%d restores=%d deletes=%d recreates=%d unknown_site=%d resurrections=%d stashes=%d crashes=%d partitions=%d streamed_bytes=%d events=%d wall_s=%.2f\n",
			st.Requests, st.OK, st.Failed, st.Acked, st.Migrations, st.Failovers, st.Heals, st.Rollbacks, st.Restores, st.Deletes, st.Recreates, st.UnknownSite, st.Resurrections, st.Stashes, st.Crashes, st.Partitions,
			st.BytesStreamed, res.Events, time.Since(t0).Seconds())
		for _, v := range res.Violations {
			fmt.Fprintf(stdout, "violation: %s\n", v)
		}
		if len(res.Violations) > 0 {
			fmt.Fprintf(stdout, "reproduce: %s -v\n", repro(res.Seed))
		}
		fmt.Fprintln(stdout, res.Line())
		if len(res.Violations) > 0 {
			return 1
		}
		return 0
	}

	if *seeds < 0 || *parallel < 1 {
		fmt.Fprintln(stderr, "hcsim: -seeds and -parallel must be positive")
		return 2
	}
	t0 := time.Now()
	var (
		mu         sync.Mutex
		violations int
		simulated  time.Duration
		failed     []uint64
		next       = *start
		last       = *start + uint64(*seeds)
		wg         sync.WaitGroup
		runErr     error
	)
	for range *parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if next >= last || runErr != nil {
					mu.Unlock()
					return
				}
				s := next
				next++
				mu.Unlock()
				o := opt
				o.Seed = s
				res, err := sim.Run(o)
				mu.Lock()
				if err != nil {
					runErr = err
				}
				simulated += res.Simulated
				if len(res.Violations) > 0 {
					violations += len(res.Violations)
					failed = append(failed, s)
					fmt.Fprintf(stdout, "seed %d: %d violations, first: %s\n  reproduce: %s -v\n", s, len(res.Violations), res.Violations[0], repro(s))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if runErr != nil {
		fmt.Fprintf(stderr, "hcsim: %v\n", runErr)
		return 2
	}
	wall := time.Since(t0).Seconds()
	fmt.Fprintf(stdout, "seeds=%d violations=%d simulated_s=%.0f wall_s=%.2f speedup=%.0fx\n",
		*seeds, violations, simulated.Seconds(), wall, simulated.Seconds()/wall)
	if violations > 0 {
		return 1
	}
	return 0
}
