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
