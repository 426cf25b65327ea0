package node

import (
	"fmt"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// BenchmarkNodeAtScale: the node actor's recurring work with 10,000 sites:
// the balancer's route table (broadcast every plan) and the report to the
// balancer (every report interval). Both run on the node actor, which also
// carries the heartbeats: their cost per second bounds how many sites a
// node can hold before heartbeats wait.
func BenchmarkNodeAtScale(b *testing.B) {
	const sites = 10000
	cfg := core.Default()
	now := time.Unix(1000, 0)
	env := &core.Env{Self: core.NodeAddr("n1"), Now: now, Config: cfg}
	newNode := func() *Node {
		n := New("n1")
		n.Step(env, &m.NodeBoot{Node: "n1", Members: []string{"n1", "n2", "n3"}})
		for i := range sites {
			site := fmt.Sprintf("s%05d", i)
			n.Step(env, &m.DatasetInfo{Site: site, Node: "n1", Role: m.Role_ROLE_MASTER, Epoch: &m.Epoch{Term: 1, Node: "n1"},
				Phase: m.SitePhase_SITE_PHASE_ACTIVE, Spec: &m.SiteSpec{Name: site, Domains: []string{site + ".example"}}})
		}
		return n
	}
	table := &m.RouteTable{}
	for i := range sites {
		site := fmt.Sprintf("s%05d", i)
		table.Routes = append(table.Routes, &m.RouteUpdate{Site: site, Master: "n1", Epoch: &m.Epoch{Term: 1, Node: "n1"},
			Phase: m.SitePhase_SITE_PHASE_ACTIVE, Domains: []string{site + ".example"}})
	}
	b.Run("route-table", func(b *testing.B) {
		n := newNode()
		for b.Loop() {
			n.Step(env, table)
		}
	})
	b.Run("report", func(b *testing.B) {
		n := newNode()
		for b.Loop() {
			n.Step(env, &m.Timer{Key: timerReport})
		}
	})
}
