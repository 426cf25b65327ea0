package node

import (
	"slices"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// A removed member is down at once (the balancer is told the smaller live
// set, with the leader re-picked), its heartbeats are not heard any more,
// and the node keeps heartbeating only the others. Removing this node
// itself is refused.
func TestRemoveNode(t *testing.T) {
	cfg := core.Default()
	n := New("n2")
	now := time.Unix(1000, 0)
	env := func() *core.Env { return &core.Env{Self: core.NodeAddr("n2"), Now: now, Config: cfg} }
	n.Step(env(), &m.NodeBoot{Node: "n2", Members: []string{"n1", "n2", "n3"}})
	n.Step(env(), &m.Heartbeat{Node: "n1"})
	n.Step(env(), &m.Heartbeat{Node: "n3"})
	if got := n.Live(); !slices.Equal(got, []string{"n1", "n2", "n3"}) {
		t.Fatalf("live %v before removal", got)
	}
	fx := n.Step(env(), &m.RemoveNode{Node: "n1"})
	var role *m.BalancerRole
	for _, e := range fx {
		if s, ok := e.(core.Send); ok {
			if r, ok := s.Msg.(*m.BalancerRole); ok {
				role = r
			}
		}
	}
	if role == nil || !slices.Equal(role.Live, []string{"n2", "n3"}) || !role.Active {
		t.Fatalf("balancer told %v after removing n1, want live [n2 n3] with n2 active", role)
	}
	now = now.Add(cfg.HeartbeatInterval)
	n.Step(env(), &m.Heartbeat{Node: "n1"})
	if got := n.Live(); !slices.Equal(got, []string{"n2", "n3"}) {
		t.Fatalf("a removed member's heartbeat was heard: live %v", got)
	}
	for _, e := range n.Step(env(), &m.Timer{Key: timerHeartbeat}) {
		if s, ok := e.(core.Send); ok && s.To == core.NodeAddr("n1") {
			t.Fatalf("heartbeat sent to removed n1: %v", s)
		}
	}
	n.Step(env(), &m.RemoveNode{Node: "n2"})
	if got := n.Live(); !slices.Contains(got, "n2") {
		t.Fatalf("the node removed itself: live %v", got)
	}
}
