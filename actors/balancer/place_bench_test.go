package balancer

import (
	"fmt"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// BenchmarkPlaceBurst: one plan of an active balancer that holds a burst
// of creates (as `hcbench sites -n 10000` sends them) over three nodes that
// already hold 10,000 sites. Placement must stay linear in the burst.
func BenchmarkPlaceBurst(b *testing.B) {
	for _, burst := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("creates=%d", burst), func(b *testing.B) {
			cfg := core.Default()
			live := []string{"n1", "n2", "n3"}
			now := time.Unix(1000, 0)
			env := &core.Env{Self: core.BalancerAddr("n1"), Now: now, Config: cfg}
			reports := map[string]*m.NodeReport{}
			for i, n := range live {
				r := &m.NodeReport{Node: n}
				for s := range 10000 {
					if s%3 == i || (s+1)%3 == i {
						role := m.Role_ROLE_REPLICA
						if s%3 == i {
							role = m.Role_ROLE_MASTER
						}
						r.Datasets = append(r.Datasets, &m.DatasetInfo{Site: fmt.Sprintf("old%d", s), Node: n, Role: role,
							Phase: m.SitePhase_SITE_PHASE_ACTIVE, Epoch: &m.Epoch{Term: 1, Node: live[s%3]}, Replicas: []string{live[(s+1)%3]}})
					}
				}
				reports[n] = r
			}
			b.ResetTimer()
			for b.Loop() {
				b.StopTimer()
				bal := New("n1")
				bal.Step(env, &m.BalancerRole{Active: true, Live: live})
				for _, n := range live {
					bal.Step(env, reports[n])
				}
				for i := range burst {
					bal.Step(env, &m.CreateSite{Spec: &m.SiteSpec{Name: fmt.Sprintf("new%d", i)}})
				}
				b.StartTimer()
				fx := bal.Step(env, &m.Timer{Key: timerPlan})
				if len(fx) < burst {
					b.Fatalf("%d effects for %d creates", len(fx), burst)
				}
			}
		})
	}
}
