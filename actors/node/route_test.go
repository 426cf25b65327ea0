package node

import (
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// A route cache keeps the highest epoch, except that a dead master's epoch
// must not hide a live master with a lower one (a minority promoted n3,
// which died; n1 now serves at an epoch that sorts below n3's).
func TestRouteCacheDeadMasterDoesNotHideLiveOne(t *testing.T) {
	for _, tc := range []struct {
		name     string
		n3Down   bool
		wantNode string
	}{
		{"higher epoch kept while its master lives", false, "n3"},
		{"lower epoch taken once the master is down", true, "n1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := core.Default()
			n := New("n2")
			now := time.Unix(1000, 0)
			env := func() *core.Env { return &core.Env{Self: core.NodeAddr("n2"), Now: now, Config: cfg} }
			n.Step(env(), &m.NodeBoot{Node: "n2", Members: []string{"n1", "n2", "n3"}})
			n.Step(env(), &m.RouteUpdate{Site: "a", Master: "n3", Epoch: &m.Epoch{Term: 2, Node: "n3"}, Phase: m.SitePhase_SITE_PHASE_ACTIVE})
			// Heartbeats for FailureTimeout and more: n1 always, n3 unless down.
			for end := now.Add(2 * cfg.FailureTimeout); now.Before(end); now = now.Add(cfg.HeartbeatInterval) {
				n.Step(env(), &m.Heartbeat{Node: "n1"})
				if !tc.n3Down {
					n.Step(env(), &m.Heartbeat{Node: "n3"})
				}
				n.Step(env(), &m.Timer{Key: timerHeartbeat})
			}
			n.Step(env(), &m.RouteUpdate{Site: "a", Master: "n1", Epoch: &m.Epoch{Term: 2, Node: "n1"}, Phase: m.SitePhase_SITE_PHASE_ACTIVE})
			if got := n.Route("a").GetMaster(); got != tc.wantNode {
				t.Fatalf("route master %q, want %q (live %v)", got, tc.wantNode, n.Live())
			}
		})
	}
}

// A route learnt without domains (from a MOVED answer, or a balancer's
// table built from a report that lacked the spec) keeps the domains the
// cache knew: the front ends route by them. The message itself is not
// modified (it may be shared).
func TestRouteWithoutDomainsKeepsKnownOnes(t *testing.T) {
	n := New("n2")
	env := &core.Env{Self: core.NodeAddr("n2"), Now: time.Unix(1000, 0), Config: core.Default()}
	n.Step(env, &m.NodeBoot{Node: "n2", Members: []string{"n1", "n2"}})
	n.Step(env, &m.RouteUpdate{Site: "a", Master: "n1", Epoch: &m.Epoch{Term: 1, Node: "n1"}, Phase: m.SitePhase_SITE_PHASE_ACTIVE, Domains: []string{"a.example"}})
	bare := &m.RouteUpdate{Site: "a", Master: "n2", Epoch: &m.Epoch{Term: 2, Node: "n2"}, Phase: m.SitePhase_SITE_PHASE_ACTIVE}
	n.Step(env, &m.RouteTable{Routes: []*m.RouteUpdate{bare}})
	r := n.Route("a")
	if r.GetMaster() != "n2" || len(r.Domains) != 1 || r.Domains[0] != "a.example" {
		t.Fatalf("route %v, want master n2 with domain a.example", r)
	}
	if len(bare.Domains) != 0 {
		t.Fatalf("the incoming message was modified: %v", bare)
	}
	// New domains replace old ones.
	n.Step(env, &m.RouteUpdate{Site: "a", Master: "n2", Epoch: &m.Epoch{Term: 3, Node: "n2"}, Phase: m.SitePhase_SITE_PHASE_ACTIVE, Domains: []string{"b.example"}})
	if d := n.Route("a").Domains; len(d) != 1 || d[0] != "b.example" {
		t.Fatalf("domains %v, want [b.example]", d)
	}
}

// The cached master answering MOVED names a master at a lower epoch: it
// disowns the site, so the cache follows it instead of sending every
// request back (seed 141: an epoch learnt for a heal winner that a fence
// demoted before it ever served).
func TestCachedMasterDisowningTheSiteIsBelieved(t *testing.T) {
	cfg := core.Default()
	n := New("n1")
	env := &core.Env{Self: core.NodeAddr("n1"), Now: time.Unix(1000, 0), Config: cfg}
	n.Step(env, &m.NodeBoot{Node: "n1", Members: []string{"n1", "n4", "n5"}})
	n.Step(env, &m.RouteUpdate{Site: "a", Master: "n4", Epoch: &m.Epoch{Term: 469000, Node: "n4"}, Phase: m.SitePhase_SITE_PHASE_ACTIVE, Domains: []string{"a.example"}})
	fx := n.Step(env, &m.SiteRequest{Site: "a", RequestId: 7, EntryNode: "n1"})
	if s, ok := fx[len(fx)-1].(core.Send); !ok || s.To != core.SiteAddr("n4", "a") {
		t.Fatalf("first try: %v", fx)
	}
	fx = n.Step(env, &m.SiteResponse{Site: "a", RequestId: 7, Code: m.Code_CODE_MOVED, Master: "n5", Epoch: &m.Epoch{Term: 445503, Node: "n5"}})
	if s, ok := fx[len(fx)-1].(core.Send); !ok || s.To != core.SiteAddr("n5", "a") {
		t.Fatalf("after n4 disowned the site: %v, want the request sent to n5", fx)
	}
	if r := n.Route("a"); r.GetMaster() != "n5" || len(r.Domains) != 1 {
		t.Fatalf("route %v, want n5 with the known domains", r)
	}
	// A MOVED from a node that is no longer the cached master (the cache
	// moved on meanwhile) does not lower the cache.
	n.Step(env, &m.SiteRequest{Site: "a", RequestId: 8, EntryNode: "n1"}) // tried n5
	n.Step(env, &m.RouteUpdate{Site: "a", Master: "n4", Epoch: &m.Epoch{Term: 600000, Node: "n4"}, Phase: m.SitePhase_SITE_PHASE_ACTIVE})
	n.Step(env, &m.SiteResponse{Site: "a", RequestId: 8, Code: m.Code_CODE_MOVED, Master: "n5", Epoch: &m.Epoch{Term: 1, Node: "n5"}})
	if r := n.Route("a"); r.GetMaster() != "n4" || r.GetEpoch().GetTerm() != 600000 {
		t.Fatalf("route %v, want n4 at 600000 kept", r)
	}
}

// The host's figures reach the balancer through the node's report: the
// requests its front ends forwarded straight to a master (a DatasetInfo
// without node) and its free space (a NodeReport of this node).
func TestHostFiguresInReport(t *testing.T) {
	n := New("n1")
	env := &core.Env{Self: core.NodeAddr("n1"), Now: time.Unix(1000, 0), Config: core.Default()}
	n.Step(env, &m.NodeBoot{Node: "n1", Members: []string{"n1"}})
	n.Step(env, &m.DatasetInfo{Site: "a", Node: "n1", Role: m.Role_ROLE_MASTER, Phase: m.SitePhase_SITE_PHASE_ACTIVE})
	n.Step(env, &m.DatasetInfo{Site: "a", Node: "n1", Phase: m.SitePhase_SITE_PHASE_ACTIVE, Requests: 2})
	n.Step(env, &m.DatasetInfo{Site: "a", Requests: 40})
	n.Step(env, &m.NodeReport{Node: "n1", FreeBytes: 7 << 30})
	n.Step(env, &m.NodeReport{Node: "n9", FreeBytes: 1})
	r := n.report(env)
	if r.Load != 42 || r.FreeBytes != 7<<30 || len(r.Datasets) != 1 || r.Datasets[0].Requests != 42 ||
		r.Datasets[0].Phase != m.SitePhase_SITE_PHASE_ACTIVE {
		t.Fatalf("report %v", r)
	}
	if r2 := n.report(env); r2.Load != 0 || r2.Datasets[0].Requests != 0 || r2.FreeBytes != 7<<30 {
		t.Fatalf("second report %v: load must restart from zero, free space stays", r2)
	}
}

// A deleted site's route (STOPPED at a tombstone) keeps outranking the old
// history but claims no domain; a re-created site takes its domains again.
func TestTombstoneRouteClaimsNoDomain(t *testing.T) {
	n := New("n1")
	env := &core.Env{Self: core.NodeAddr("n1"), Now: time.Unix(1000, 0), Config: core.Default()}
	n.Step(env, &m.NodeBoot{Node: "n1", Members: []string{"n1", "n2"}})
	n.Step(env, &m.RouteUpdate{Site: "a", Master: "n2", Epoch: &m.Epoch{Term: 5, Node: "n2"}, Phase: m.SitePhase_SITE_PHASE_ACTIVE, Domains: []string{"a.example"}})
	tomb := &m.Epoch{Term: 9, Node: "n2" + core.TombstoneMark}
	n.Step(env, &m.RouteUpdate{Site: "a", Master: "n2", Epoch: tomb, Phase: m.SitePhase_SITE_PHASE_STOPPED, Domains: []string{"a.example"}})
	if r := n.Route("a"); len(r.GetDomains()) != 0 || r.GetPhase() != m.SitePhase_SITE_PHASE_STOPPED {
		t.Fatalf("route after the delete: %v, want STOPPED without domains", r)
	}
	n.Step(env, &m.RouteUpdate{Site: "a", Master: "n2", Epoch: &m.Epoch{Term: 6, Node: "n2"}, Phase: m.SitePhase_SITE_PHASE_ACTIVE, Domains: []string{"a.example"}})
	if r := n.Route("a"); len(r.GetDomains()) != 0 {
		t.Fatalf("a stale update of the deleted history brought its domain back: %v", r)
	}
	n.Step(env, &m.RouteUpdate{Site: "a", Master: "n1", Epoch: &m.Epoch{Term: 12, Node: "n1"}, Phase: m.SitePhase_SITE_PHASE_ACTIVE, Domains: []string{"a.example"}})
	if r := n.Route("a"); r.GetMaster() != "n1" || len(r.GetDomains()) != 1 {
		t.Fatalf("re-created site: %v", r)
	}
}
