package host

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// withAutomanaged gives every node of a test cluster the automanaged
// provider on loopback ports, each node seeding from all.
func withAutomanaged(t *testing.T, n int) func(string, *Options) {
	addrs, seeds := map[string]string{}, []string{}
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("n%d", i)
		addrs[name] = fmt.Sprintf("127.0.0.1:%d", freePort(t))
		seeds = append(seeds, fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	}
	return func(name string, opt *Options) {
		var i int
		fmt.Sscanf(name, "n%d", &i)
		opt.Cluster = ClusterOptions{Provider: "automanaged", Addr: addrs[name], AutomanagedAddr: seeds[i-1], Seeds: seeds}
	}
}

// TestClusterLayerMembershipAndAskByIdentity: three hosts with the
// automanaged provider form one protoactor cluster whose members carry
// their node names; a request by identity from any node reaches the site's
// dataset actor on its master (placement is ours, not the hash's); after a
// migration the same request reaches the new master (the route change
// evicts protoactor's PID cache); a stopped member leaves the topology and
// rejoins with a new incarnation's id.
func TestClusterLayerMembershipAndAskByIdentity(t *testing.T) {
	c := startClusterWith(t, 3, withAutomanaged(t, 3))
	eventually(t, "3 members in every node's topology", func() error {
		for _, name := range c.names {
			ms, _ := c.nodes[name].host.ClusterMembers()
			if len(ms) != 3 {
				return fmt.Errorf("%s sees %d members: %v", name, len(ms), ms)
			}
			for i, mb := range ms {
				if mb.Node != c.names[i] || mb.Incarnation == 0 {
					return fmt.Errorf("%s: member %d is %+v", name, i, mb)
				}
			}
		}
		return nil
	})
	const site = "ident"
	master, replica := c.placeSite(site)
	ask := func(from string) *m.AdminView {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		v, err := c.nodes[from].host.Ask(ctx, site, ClusterKindDataset, &m.AdminQuery{Kind: m.AdminQueryKind_ADMIN_QUERY_SITE})
		if err != nil {
			t.Fatalf("ask from %s: %v", from, err)
		}
		return v
	}
	for _, from := range c.names {
		if v := ask(from); v.Code != m.Code_CODE_OK || v.Node != master || v.GetInfo().GetRole() != m.Role_ROLE_MASTER {
			t.Fatalf("ask from %s: %s by %s (role %s), want OK by master %s", from, v.Code, v.Node, v.GetInfo().GetRole(), master)
		}
	}
	// Requests by identity carry no token: only the read-only view is
	// answered that way, not a mount.
	mctx, mcancel := context.WithTimeout(context.Background(), 5*time.Second)
	v, err := c.nodes[replica].host.Ask(mctx, site, ClusterKindDataset, &m.AdminQuery{Kind: m.AdminQueryKind_ADMIN_QUERY_MOUNT, Snapshot: "x"})
	mcancel()
	if err != nil || v.Code != m.Code_CODE_INVALID {
		t.Fatalf("a mount by identity: %v %v, want CODE_INVALID", v, err)
	}
	c.nodes[master].host.Send(core.SiteAddr(master, site), &m.Migrate{Site: site, Target: replica, Reason: "admin"})
	c.servedBy(c.other(master, replica), site, replica)
	eventually(t, "asks reach the new master", func() error {
		for _, from := range c.names {
			if v := ask(from); v.Code != m.Code_CODE_OK || v.Node != replica {
				return fmt.Errorf("ask from %s: %s by %s, want OK by %s", from, v.Code, v.Node, replica)
			}
		}
		return nil
	})
	if _, err := c.nodes["n1"].host.Ask(context.Background(), "no-such-site", ClusterKindSite, &m.AdminQuery{Kind: m.AdminQueryKind_ADMIN_QUERY_SITE}); err == nil {
		t.Fatal("ask for a site nobody knows answered")
	}

	stopped := c.other(master, replica)
	oldID := MemberID(stopped, c.nodes[stopped].host.Incarnation())
	c.stop(stopped)
	watcher := c.other(stopped)
	eventually(t, stopped+" leaves the topology", func() error {
		ms, _ := c.nodes[watcher].host.ClusterMembers()
		for _, mb := range ms {
			if mb.Node == stopped {
				return fmt.Errorf("%s still a member: %+v", stopped, mb)
			}
		}
		return nil
	})
	c.restart(stopped)
	eventually(t, stopped+" rejoins under a new id", func() error {
		ms, blocked := c.nodes[watcher].host.ClusterMembers()
		for _, mb := range ms {
			if mb.Node == stopped && mb.ID != oldID {
				return nil
			}
		}
		return fmt.Errorf("%s not back: members %v, blocked %v", stopped, ms, blocked)
	})
}
