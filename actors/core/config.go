package core

import (
	"errors"
	"fmt"
	"time"
)

// Config holds every bound and interval the actors use. Hosts fill it from
// their own configuration; Default gives the embedded defaults.
type Config struct {
	// Redundancy is the number of copies of each site, master included.
	Redundancy int

	// SnapshotInterval is how often a master snapshots and replicates each site.
	SnapshotInterval time.Duration
	// PruneInterval is how often retention runs on each copy.
	PruneInterval time.Duration
	Retention     Retention
	// StorageLowBytes: below this much free space in its pool a node's
	// copies prune what only retention's recent tiers keep (every
	// snapshot, one a minute), at once and then every PruneInterval while
	// it lasts. 0: never.
	StorageLowBytes uint64
	// StorageLowPercent lowers that bound for a small pool: space is low
	// below the lower of StorageLowBytes and this share of the pool's
	// size (so that a pool smaller than StorageLowBytes is not low for
	// good). 0: StorageLowBytes alone.
	StorageLowPercent uint64

	// HeldRequestsMax, HeldBytesMax and HoldDeadline bound the requests a
	// paused site holds: past the count or byte bound a request is answered
	// at once with CODE_OVERLOADED, past the deadline with CODE_TIMEOUT (both
	// 503 with Retry-After at the protocol front ends).
	HeldRequestsMax int
	HeldBytesMax    uint64
	HoldDeadline    time.Duration
	// RetryAfter is what a 503 from a hold bound tells the client.
	RetryAfter time.Duration

	// FrontPendingMax bounds the requests an entry node waits on (for a route,
	// or for an answer); past it new requests get CODE_OVERLOADED.
	FrontPendingMax int
	// RequestTimeout is how long an entry node waits for an answer before it
	// retries an idempotent request once or fails it.
	RequestTimeout time.Duration
	// RequestAttemptsMax bounds redirects and retries of one request.
	RequestAttemptsMax int

	// StepTimeout bounds each step of a migration (pre-copy, final delta,
	// activation); at the bound the migration is aborted if the target has
	// not been asked to activate yet, and retried otherwise.
	StepTimeout time.Duration
	// ActivateAttemptsMax bounds how often the old master re-sends Activate.
	ActivateAttemptsMax int
	// StreamTimeout bounds one replication stream.
	StreamTimeout time.Duration

	HeartbeatInterval time.Duration
	// FailureTimeout: a member not heard from for this long is down.
	FailureTimeout time.Duration
	ReportInterval time.Duration

	// BalancerWarmup: a newly active balancer waits this long for reports
	// before it acts on anything.
	BalancerWarmup time.Duration
	// ProbeTimeout bounds how long a failover waits for copies to answer.
	ProbeTimeout time.Duration
	// ActionTimeout: a balancer action with no visible effect after this long
	// may be tried again.
	ActionTimeout time.Duration
	// LoadHysteresis: a node is hot above mean*(1+h) and cold below mean*(1-h).
	LoadHysteresis float64
	// LoadMin: nodes below this load are never hot, whatever the mean.
	LoadMin uint64
	// MoveCooldown: a site that moved does not move again for this long.
	MoveCooldown time.Duration
	// MovesInFlightMax bounds concurrent load-based moves cluster-wide.
	MovesInFlightMax int

	// Mutations break the logic on purpose, so that tests can show the
	// simulator catches each bug. Never set outside tests.
	Mutations Mutations
}

// Mutations are deliberate bugs for simulator self-tests.
type Mutations struct {
	SkipFencing    bool // a copy accepts streams and activations from older epochs
	SkipFinalDelta bool // a migration promotes the target without the final delta
	PromoteOldest  bool // failover promotes the copy with the oldest snapshot
	// ForgetTombstones: the balancer plans a deleted site from whatever
	// copies are reported (a copy that missed the deletion is failed over).
	ForgetTombstones bool
}

// Retention keeps every snapshot younger than KeepAll, one per minute for
// KeepMinutely, one per hour for KeepHourly, one per day for KeepDaily;
// older ones are pruned unless protected. A tier no longer than the one
// before it keeps nothing of its own.
type Retention struct {
	KeepAll      time.Duration
	KeepMinutely time.Duration
	KeepHourly   time.Duration
	KeepDaily    time.Duration
}

// Default returns the embedded defaults.
func Default() *Config {
	return &Config{
		Redundancy:       2,
		SnapshotInterval: time.Second,
		PruneInterval:    time.Minute,
		// Snapshots are taken every second a site changes, and each of a
		// busy database's holds the pages rewritten in that second: under
		// sysbench at 100 transactions a second (57 MiB database,
		// zfs-fuse) one held 7.5 MiB and one a minute 20.5 MiB, so keeping
		// every one for an hour held 2.8 GB after five minutes (27 GB an
		// hour). Every one for two minutes, then one a minute for a
		// quarter of an hour: about 1.2 GB for that site.
		StorageLowBytes:     1 << 30,
		StorageLowPercent:   10,
		Retention:           Retention{KeepAll: 2 * time.Minute, KeepMinutely: 15 * time.Minute, KeepHourly: 24 * time.Hour, KeepDaily: 7 * 24 * time.Hour},
		HeldRequestsMax:     1024,
		HeldBytesMax:        64 << 20,
		HoldDeadline:        15 * time.Second,
		RetryAfter:          2 * time.Second,
		FrontPendingMax:     4096,
		RequestTimeout:      20 * time.Second,
		RequestAttemptsMax:  4,
		StepTimeout:         10 * time.Second,
		ActivateAttemptsMax: 5,
		StreamTimeout:       30 * time.Second,
		HeartbeatInterval:   250 * time.Millisecond,
		FailureTimeout:      1500 * time.Millisecond,
		ReportInterval:      time.Second,
		BalancerWarmup:      2 * time.Second,
		ProbeTimeout:        time.Second,
		ActionTimeout:       15 * time.Second,
		LoadHysteresis:      0.5,
		LoadMin:             20,
		MoveCooldown:        time.Minute,
		MovesInFlightMax:    2,
	}
}

// Validate reports contradictory or missing settings.
func (c *Config) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.Redundancy >= 1 && c.Redundancy <= 16, "redundancy %d: want 1..16", c.Redundancy)
	check(c.SnapshotInterval > 0, "snapshot interval must be positive")
	check(c.HeldRequestsMax > 0, "held requests bound must be positive")
	check(c.HeldBytesMax > 0, "held bytes bound must be positive")
	check(c.HoldDeadline > 0, "hold deadline must be positive")
	check(c.FrontPendingMax > 0, "front pending bound must be positive")
	check(c.RequestAttemptsMax >= 1, "request attempts must be at least 1")
	check(c.HeartbeatInterval > 0 && c.FailureTimeout > 2*c.HeartbeatInterval,
		"failure timeout %v must exceed two heartbeats (%v)", c.FailureTimeout, c.HeartbeatInterval)
	check(c.ReportInterval > 0, "report interval must be positive")
	check(c.StepTimeout > 0 && c.ActivateAttemptsMax >= 1, "migration step bounds must be positive")
	check(c.LoadHysteresis >= 0 && c.LoadHysteresis < 1, "load hysteresis %v: want [0,1)", c.LoadHysteresis)
	check(c.MovesInFlightMax >= 0, "moves in flight must not be negative")
	check(c.StorageLowPercent <= 100, "storage low percent %d: want 0..100", c.StorageLowPercent)
	return errors.Join(errs...)
}
