package core_test

import (
	"strings"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

func ep(term uint64, node string) *m.Epoch { return &m.Epoch{Term: term, Node: node} }

func TestCompareEpoch(t *testing.T) {
	for _, tc := range []struct {
		a, b *m.Epoch
		want int
	}{
		{nil, nil, 0},
		{nil, ep(0, ""), -1},
		{ep(0, ""), nil, 1},
		{ep(1, "n1"), ep(1, "n1"), 0},
		{ep(1, "n9"), ep(2, "n1"), -1}, // term first, whatever the node
		{ep(3, "n1"), ep(2, "n9"), 1},
		{ep(2, "n1"), ep(2, "n2"), -1}, // then node
		{ep(2, "n2"), ep(2, "n1"), 1},
	} {
		if got := core.CompareEpoch(tc.a, tc.b); got != tc.want {
			t.Errorf("CompareEpoch(%s, %s) = %d, want %d", core.EpochString(tc.a), core.EpochString(tc.b), got, tc.want)
		}
		if got := core.EpochLess(tc.a, tc.b); got != (tc.want < 0) {
			t.Errorf("EpochLess(%s, %s) = %v", core.EpochString(tc.a), core.EpochString(tc.b), got)
		}
	}
}

func TestNextEpochAndMax(t *testing.T) {
	for _, tc := range []struct {
		seen  *m.Epoch
		node  string
		nowMs int64
		want  string
	}{
		{nil, "n1", 0, "1:n1"},
		{ep(1, "n1"), "n2", 0, "2:n2"},
		{ep(7, "n9"), "n1", 0, "8:n1"},
		// The term follows the clock, so a later decision made without
		// knowledge of an earlier one still gets the higher epoch...
		{ep(7, "n9"), "n1", 52_900, "52900:n1"},
		// ...and never goes backwards when a clock is behind.
		{ep(60_000, "n9"), "n1", 52_900, "60001:n1"},
	} {
		env := &core.Env{Now: time.UnixMilli(tc.nowMs)}
		got := core.NextEpoch(tc.seen, tc.node, env)
		if core.EpochString(got) != tc.want {
			t.Errorf("NextEpoch(%s, %s) = %s, want %s", core.EpochString(tc.seen), tc.node, core.EpochString(got), tc.want)
		}
		if !core.EpochLess(tc.seen, got) {
			t.Errorf("NextEpoch(%s) = %s is not newer", core.EpochString(tc.seen), core.EpochString(got))
		}
	}
	if got := core.MaxEpoch(ep(2, "n1"), ep(2, "n3")); core.EpochString(got) != "2:n3" {
		t.Errorf("MaxEpoch = %s", core.EpochString(got))
	}
	if got := core.MaxEpoch(nil, ep(1, "n1")); core.EpochString(got) != "1:n1" {
		t.Errorf("MaxEpoch(nil, 1:n1) = %s", core.EpochString(got))
	}
	if got := core.SnapshotName(ep(3, "n2"), 17); got != "e3-n2-s17" {
		t.Errorf("SnapshotName = %s", got)
	}
}

func TestNewer(t *testing.T) {
	snap := func(taken int64, e *m.Epoch, seq uint64) *m.SnapshotRef {
		return &m.SnapshotRef{Name: core.SnapshotName(e, seq), TakenMs: taken, Epoch: e, Seq: seq}
	}
	for _, tc := range []struct {
		name string
		a, b *m.SnapshotRef
		want bool
	}{
		{"anything beats nil", snap(1, ep(1, "n1"), 1), nil, true},
		{"nil beats nothing", nil, snap(1, ep(1, "n1"), 1), false},
		{"nil vs nil", nil, nil, false},
		{"later time wins over higher epoch", snap(20, ep(1, "n1"), 1), snap(10, ep(5, "n2"), 9), true},
		{"earlier time loses", snap(10, ep(5, "n2"), 9), snap(20, ep(1, "n1"), 1), false},
		{"same time: epoch breaks the tie", snap(10, ep(2, "n1"), 1), snap(10, ep(1, "n9"), 5), true},
		{"same time and epoch: sequence", snap(10, ep(2, "n1"), 4), snap(10, ep(2, "n1"), 3), true},
		{"identical is not newer", snap(10, ep(2, "n1"), 4), snap(10, ep(2, "n1"), 4), false},
	} {
		if got := core.Newer(tc.a, tc.b); got != tc.want {
			t.Errorf("%s: Newer = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := core.Default().Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
	for _, tc := range []struct {
		name   string
		mutate func(*core.Config)
		want   string
	}{
		{"zero redundancy", func(c *core.Config) { c.Redundancy = 0 }, "redundancy 0"},
		{"too much redundancy", func(c *core.Config) { c.Redundancy = 17 }, "redundancy 17"},
		{"no snapshot interval", func(c *core.Config) { c.SnapshotInterval = 0 }, "snapshot interval"},
		{"no held requests", func(c *core.Config) { c.HeldRequestsMax = 0 }, "held requests"},
		{"no held bytes", func(c *core.Config) { c.HeldBytesMax = 0 }, "held bytes"},
		{"no hold deadline", func(c *core.Config) { c.HoldDeadline = -time.Second }, "hold deadline"},
		{"no front pending", func(c *core.Config) { c.FrontPendingMax = 0 }, "front pending"},
		{"no attempts", func(c *core.Config) { c.RequestAttemptsMax = 0 }, "request attempts"},
		{"failure timeout within two heartbeats", func(c *core.Config) {
			c.HeartbeatInterval, c.FailureTimeout = time.Second, 2*time.Second
		}, "failure timeout"},
		{"no heartbeat", func(c *core.Config) { c.HeartbeatInterval = 0 }, "failure timeout"},
		{"no report interval", func(c *core.Config) { c.ReportInterval = 0 }, "report interval"},
		{"no step timeout", func(c *core.Config) { c.StepTimeout = 0 }, "migration step"},
		{"no activate attempts", func(c *core.Config) { c.ActivateAttemptsMax = 0 }, "migration step"},
		{"hysteresis of one", func(c *core.Config) { c.LoadHysteresis = 1 }, "load hysteresis"},
		{"negative hysteresis", func(c *core.Config) { c.LoadHysteresis = -0.1 }, "load hysteresis"},
		{"negative moves", func(c *core.Config) { c.MovesInFlightMax = -1 }, "moves in flight"},
	} {
		c := core.Default()
		tc.mutate(c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v, want an error mentioning %q", tc.name, err, tc.want)
		}
	}
	// Several problems are all reported.
	c := core.Default()
	c.Redundancy, c.HeldRequestsMax = 0, 0
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "redundancy") || !strings.Contains(err.Error(), "held requests") {
		t.Errorf("Validate() = %v, want both errors", err)
	}
}
