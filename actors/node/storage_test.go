package node

import (
	"slices"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// told returns the sites effects tell to prune for space.
func told(fx []core.Effect) []string {
	var sites []string
	for _, e := range fx {
		if s, ok := e.(core.Send); ok {
			if low, ok := s.Msg.(*m.StorageLow); ok {
				if s.To != core.DatasetAddr("n1", low.Site) {
					panic("StorageLow to " + s.To.String())
				}
				sites = append(sites, low.Site)
			}
		}
	}
	return sites
}

// Under Config.StorageLowBytes free, every local copy is told to prune for
// space at once, then once per PruneInterval while it lasts; above it,
// none is. Without a figure from the host (the simulator), nothing.
func TestStorageLowTellsTheCopies(t *testing.T) {
	cfg := core.Default()
	n := New("n1")
	now := time.Unix(1000, 0)
	env := func() *core.Env { return &core.Env{Self: core.NodeAddr("n1"), Now: now, Config: cfg} }
	n.Step(env(), &m.NodeBoot{Node: "n1", Members: []string{"n1", "n2"}})
	for _, site := range []string{"shop", "blog"} {
		n.Step(env(), &m.DatasetInfo{Site: site, Node: "n1", Role: m.Role_ROLE_REPLICA})
	}
	low := cfg.StorageLowBytes - 1
	if got := told(n.Step(env(), &m.NodeReport{Node: "n1", FreeBytes: cfg.StorageLowBytes + 1})); got != nil {
		t.Fatalf("told %v with enough space", got)
	}
	if got := told(n.Step(env(), &m.NodeReport{Node: "n1", FreeBytes: low})); !slices.Equal(got, []string{"blog", "shop"}) {
		t.Fatalf("told %v when space went low, want every copy", got)
	}
	now = now.Add(cfg.PruneInterval / 2)
	if got := told(n.Step(env(), &m.NodeReport{Node: "n1", FreeBytes: low})); got != nil {
		t.Fatalf("told %v again within PruneInterval", got)
	}
	now = now.Add(cfg.PruneInterval / 2)
	if got := told(n.Step(env(), &m.NodeReport{Node: "n1", FreeBytes: low})); len(got) != 2 {
		t.Fatalf("told %v after PruneInterval, still low", got)
	}
	if got := told(n.Step(env(), &m.NodeReport{Node: "n1", FreeBytes: cfg.StorageLowBytes})); got != nil {
		t.Fatalf("told %v once space came back", got)
	}
	if got := told(n.Step(env(), &m.NodeReport{Node: "n2", FreeBytes: 0})); got != nil {
		t.Fatalf("another node's figure told %v", got)
	}
	cfg.StorageLowBytes = 0
	if got := told(n.Step(env(), &m.NodeReport{Node: "n1", FreeBytes: 0})); got != nil {
		t.Fatalf("told %v with the bound off", got)
	}
}

// A pool smaller than StorageLowBytes is low only below StorageLowPercent
// of its size; without a size figure, or with the percentage off, the
// bytes bound alone applies.
func TestStorageLowOnASmallPool(t *testing.T) {
	cfg := core.Default()
	const size = 512 << 20 // 10%: 51.2 MiB
	for _, tc := range []struct {
		name      string
		percent   uint64
		size      uint64
		free      uint64
		wantTold  bool
		wantBound uint64
	}{
		{"half the pool free", 10, size, 256 << 20, false, size / 100 * 10},
		{"under the share", 10, size, 50 << 20, true, size / 100 * 10},
		{"no size reported", 10, 0, 256 << 20, true, cfg.StorageLowBytes},
		{"share off", 0, size, 256 << 20, true, cfg.StorageLowBytes},
		{"large pool: the bytes bound is lower", 10, 1 << 40, (1 << 30) - 1, true, cfg.StorageLowBytes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := *cfg
			c.StorageLowPercent = tc.percent
			n := New("n1")
			env := &core.Env{Self: core.NodeAddr("n1"), Now: time.Unix(1000, 0), Config: &c}
			n.Step(env, &m.NodeBoot{Node: "n1", Members: []string{"n1"}})
			n.Step(env, &m.DatasetInfo{Site: "shop", Node: "n1", Role: m.Role_ROLE_REPLICA})
			got := told(n.Step(env, &m.NodeReport{Node: "n1", FreeBytes: tc.free, SizeBytes: tc.size}))
			if (got != nil) != tc.wantTold {
				t.Fatalf("free %d of %d (%d%%): told %v, want told %v", tc.free, tc.size, tc.percent, got, tc.wantTold)
			}
			if b := n.lowBound(&c); b != tc.wantBound {
				t.Fatalf("bound %d, want %d", b, tc.wantBound)
			}
		})
	}
}
