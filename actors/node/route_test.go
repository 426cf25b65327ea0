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
