package host

import (
	"fmt"
	"testing"

	m "github.com/hybridcluster/hybridcluster/messages"
)

// BenchmarkRouteLookup10k is the front end's routing cost per request with
// 10,000 sites (two domains each) in the route mirror, looked up from
// every core at once:
//
//	go test -run '^$' -bench RouteLookup ./runtime/host/
func BenchmarkRouteLookup10k(b *testing.B) {
	const sites = 10_000
	t := newRouteTable()
	for i := range sites {
		s := fmt.Sprintf("site%05d", i)
		t.set(s, &m.RouteUpdate{Site: s, Master: fmt.Sprintf("n%d", i%3+1), Epoch: &m.Epoch{Term: 1, Node: "n1"},
			Phase: m.SitePhase_SITE_PHASE_ACTIVE, Domains: []string{s + ".example", "www." + s + ".example"}})
	}
	domains := make([]string, 1024)
	for i := range domains {
		domains[i] = fmt.Sprintf("www.site%05d.example", (i*7919)%sites)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if r, ok := t.lookupDomain(domains[i%len(domains)]); !ok || !r.Serving() {
				b.Fatal("lookup failed")
			}
			i++
		}
	})
}
