package sim

import (
	"container/heap"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// Options choose one scenario. Zero fields take the defaults of DefaultOptions.
type Options struct {
	Seed  uint64
	Nodes int // 3..100
	Sites int // 1..10000
	// Safety is the phase with faults; Liveness follows on a healed cluster.
	Safety   time.Duration
	Liveness time.Duration
	// RequestRate is client requests per site per second; WriteFraction of them write.
	RequestRate   float64
	WriteFraction float64
	// FaultRate scales how often faults come (1 = the swarm's base rates; 0 = none).
	FaultRate float64
	// FaultKinds forces the swarm (nil: the seed picks): crash, partition,
	// oneway, slowdisk, fulldisk, drop, dup, crash-mid-migration, crash-mid-receive.
	FaultKinds []string
	// MigrationEvery is the mean time between admin-requested planned moves.
	MigrationEvery time.Duration
	// RollbackEvery is the mean time between user-requested rollbacks (<0: none).
	RollbackEvery time.Duration
	// DeleteEvery is the mean time between admin-requested site deletions
	// during the safety phase, each followed later by a create of the same
	// name (<0: none).
	DeleteEvery time.Duration
	// RPO is the recovery-point bound I3 checks after a crash.
	RPO time.Duration
	// RecoveryBound is how long after the heal every site must serve again (I5).
	RecoveryBound time.Duration

	LatencyMin, LatencyMax time.Duration
	BandwidthBytesPerS     int64

	Config          *core.Config // nil: SimConfig()
	Verbose         io.Writer    // readable trace
	VerboseMessages bool         // also every message delivery
}

// DefaultOptions is the scenario `hcsim -seed N` runs.
func DefaultOptions() Options {
	return Options{
		Nodes: 5, Sites: 50, Safety: 8 * time.Minute, Liveness: 2 * time.Minute,
		RequestRate: 0.5, WriteFraction: 0.5, FaultRate: 1, MigrationEvery: 20 * time.Second, RollbackEvery: time.Minute,
		DeleteEvery: 2 * time.Minute,
		RPO:         10 * time.Second, RecoveryBound: 45 * time.Second,
		LatencyMin: 100 * time.Microsecond, LatencyMax: 2 * time.Millisecond, BandwidthBytesPerS: 100 << 20,
	}
}

// SimConfig is the actors' configuration in the simulator: the embedded
// defaults with a one-second snapshot interval.
func SimConfig() *core.Config {
	c := core.Default()
	c.SnapshotInterval = time.Second
	return c
}

// Result is what one seed produced.
type Result struct {
	Seed       uint64
	Violations []Violation
	Trace      uint64 // digest of the whole event trace
	Simulated  time.Duration
	Events     int
	Stats      Stats
}

// Stats summarise a run.
type Stats struct {
	Requests, OK, Failed, Writes, Acked   int
	Migrations, Failovers, Heals, Stashes int
	Rollbacks, Restores                   int
	Deletes, Recreates, UnknownSite       int
	Resurrections                         int // transient, under faults (violations otherwise)
	Crashes, Partitions                   int
	MaxPauseMs                            int64
	BytesStreamed                         uint64
	Faults                                string
}

func (r Result) Line() string {
	return fmt.Sprintf("seed=%d violations=%d trace=%016x", r.Seed, len(r.Violations), r.Trace)
}

// orDefault sets *v to def when it is the zero value.
func orDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

func (o *Options) fill() error {
	d := DefaultOptions()
	orDefault(&o.Nodes, d.Nodes)
	orDefault(&o.Sites, d.Sites)
	orDefault(&o.Safety, d.Safety)
	orDefault(&o.Liveness, d.Liveness)
	orDefault(&o.RequestRate, d.RequestRate)
	orDefault(&o.WriteFraction, d.WriteFraction)
	orDefault(&o.MigrationEvery, d.MigrationEvery)
	orDefault(&o.RollbackEvery, d.RollbackEvery)
	orDefault(&o.DeleteEvery, d.DeleteEvery)
	orDefault(&o.RPO, d.RPO)
	orDefault(&o.RecoveryBound, d.RecoveryBound)
	if o.LatencyMax == 0 {
		o.LatencyMin, o.LatencyMax = d.LatencyMin, d.LatencyMax
	}
	orDefault(&o.BandwidthBytesPerS, d.BandwidthBytesPerS)
	if o.Config == nil {
		o.Config = SimConfig()
	}
	switch {
	case o.Nodes < 3 || o.Nodes > 100:
		return fmt.Errorf("nodes %d: want 3..100", o.Nodes)
	case o.Sites < 1 || o.Sites > 10000:
		return fmt.Errorf("sites %d: want 1..10000", o.Sites)
	case o.Liveness < o.RecoveryBound+20*time.Second:
		return fmt.Errorf("liveness phase %v must exceed the recovery bound %v by 20s", o.Liveness, o.RecoveryBound)
	case o.RequestRate < 0 || o.WriteFraction < 0 || o.WriteFraction > 1 || o.FaultRate < 0:
		return fmt.Errorf("rates must not be negative and the write fraction at most 1")
	}
	return o.Config.Validate()
}

// Run runs one seed.
func Run(opt Options) (Result, error) {
	if err := opt.fill(); err != nil {
		return Result{}, err
	}
	w := &World{
		opt: opt, cfg: opt.Config,
		rng:     rand.New(rand.NewPCG(opt.Seed, opt.Seed^0x9e3779b97f4a7c15)),
		hosts:   map[string]*host{},
		blocked: map[[2]string]bool{},
		trace:   newTrace(),
		verbose: opt.Verbose,
	}
	w.chk = newChecker(w)
	for i := 1; i <= opt.Nodes; i++ {
		name := fmt.Sprintf("n%d", i)
		w.names = append(w.names, name)
		w.hosts[name] = &host{name: name, store: newStore()}
	}
	for _, n := range w.names {
		w.boot(w.hosts[n])
	}
	w.clientsStart()
	faults := w.faultsStart()
	w.at(opt.Safety, func() { w.healAll() })
	end := opt.Safety + opt.Liveness
	w.at(opt.Safety+opt.RecoveryBound, func() { w.chk.probeAll() })
	endUs := int64(end / time.Microsecond)
	for w.events.Len() > 0 {
		ev := heap.Pop(&w.events).(*event)
		if ev.at > endUs {
			break
		}
		w.now = ev.at
		fn := ev.fn
		ev.fn = nil
		w.free = append(w.free, ev)
		fn()
	}
	w.now = endUs
	w.chk.finish()
	st := w.chk.stats
	st.Stashes = w.stashes
	st.BytesStreamed = w.chk.bytesStreamed
	st.Faults = faults
	w.tracef("end %s", w.chk.summary())
	return Result{Seed: opt.Seed, Violations: w.violations, Trace: w.trace.Sum64(),
		Simulated: end, Events: w.eventCount, Stats: st}, nil
}

// createSites asks the cluster to create every site through the admin path
// of a node (which forwards to the balancer).
func (w *World) createSites() {
	for i := 0; i < w.opt.Sites; i++ {
		name := siteName(i)
		spec := &m.SiteSpec{Name: name, Domains: []string{name + ".example"}}
		entry := w.names[i%len(w.names)]
		w.deliver(core.NodeAddr(entry), &m.CreateSite{Spec: spec})
	}
}

func siteName(i int) string { return fmt.Sprintf("s%03d", i) }
