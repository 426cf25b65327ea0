package host

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// TestClusterDeleteSite: a site deleted while its replica's node is down
// is answered UNKNOWN_SITE through every node, its copies are stashed whole
// (nothing destroyed); the replica's node comes back and its old copy is
// stashed too instead of being failed over; a create of the same name
// afterwards is served again.
func TestClusterDeleteSite(t *testing.T) {
	c := startCluster(t, 3)
	const site = "eps"
	master, replica := c.placeSite(site)
	c.stop(replica)
	live := []string{master, c.other(master, replica)}
	c.nodes[live[1]].host.Send(core.BalancerAddr(live[1]), &m.AdminDeleteSite{Site: site})
	unknown := func(what string) {
		t.Helper()
		for _, entry := range live {
			eventually(t, what+" via "+entry, func() error {
				resp, err := c.request(entry, &m.SiteRequest{Site: site, Write: true, WriteId: 5})
				if err != nil {
					return err
				}
				if resp.Code != m.Code_CODE_UNKNOWN_SITE {
					return fmt.Errorf("answer %s from %q: %s", resp.Code, resp.Master, resp.Detail)
				}
				return nil
			})
		}
	}
	stashedWhole := func(node string) {
		t.Helper()
		eventually(t, "copy on "+node+" stashed whole", func() error {
			if s := c.snapshots(node, site); len(s) != 0 {
				return fmt.Errorf("%d snapshots left", len(s))
			}
			if !slices.ContainsFunc(c.stashNames(node, site), func(n string) bool { return strings.HasPrefix(n, "deleted-") }) {
				return fmt.Errorf("stashes %v", c.stashNames(node, site))
			}
			if rec := c.nodes[node].host.catalog.get(site); rec.role != m.Role_ROLE_DELETED || !core.IsTombstone(rec.tombstone) {
				return fmt.Errorf("catalog: role %s tombstone %v", rec.role, rec.tombstone)
			}
			return nil
		})
	}
	unknown("deleted")
	stashedWhole(master)
	if r, ok := c.nodes[live[1]].host.Route(site); !ok || r.Serving() {
		t.Errorf("route after delete: %+v %v", r, ok)
	}

	c.restart(replica)
	stashedWhole(replica)
	live = append(live, replica)
	unknown("deleted after the replica's node came back")

	c.nodes["n2"].host.Send(core.NodeAddr("n2"), &m.CreateSite{Spec: &m.SiteSpec{Name: site, Domains: []string{site + ".example"}}})
	eventually(t, "created again and served", func() error {
		resp, err := c.request(c.other(), &m.SiteRequest{Site: site, Write: true, WriteId: 6})
		if err != nil {
			return err
		}
		if resp.Code != m.Code_CODE_OK {
			return fmt.Errorf("answer %s: %s", resp.Code, resp.Detail)
		}
		return nil
	})
}
