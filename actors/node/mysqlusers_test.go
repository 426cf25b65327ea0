package node

import (
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// A route learnt without the spec (a MOVED answer) keeps the MySQL users
// the cache knew, as it keeps domains: the MySQL front end routes by them.
// A tombstone claims none.
func TestRouteWithoutSpecKeepsMysqlUsers(t *testing.T) {
	n := New("n2")
	env := &core.Env{Self: core.NodeAddr("n2"), Now: time.Unix(1000, 0), Config: core.Default()}
	n.Step(env, &m.NodeBoot{Node: "n2", Members: []string{"n1", "n2"}})
	n.Step(env, &m.RouteUpdate{Site: "a", Master: "n1", Epoch: &m.Epoch{Term: 1, Node: "n1"}, Phase: m.SitePhase_SITE_PHASE_ACTIVE,
		Domains: []string{"a.example"}, MysqlUsers: []string{"shop"}})
	n.Step(env, &m.RouteTable{Routes: []*m.RouteUpdate{{Site: "a", Master: "n2", Epoch: &m.Epoch{Term: 2, Node: "n2"}, Phase: m.SitePhase_SITE_PHASE_ACTIVE}}})
	if r := n.Route("a"); r.GetMaster() != "n2" || len(r.MysqlUsers) != 1 || r.MysqlUsers[0] != "shop" {
		t.Fatalf("route %v, want master n2 with mysql user shop", r)
	}
	tomb := &m.Epoch{Term: 3, Node: "n2" + core.TombstoneMark}
	n.Step(env, &m.RouteUpdate{Site: "a", Master: "n2", Epoch: tomb, Phase: m.SitePhase_SITE_PHASE_STOPPED, Domains: []string{"a.example"}, MysqlUsers: []string{"shop"}})
	if r := n.Route("a"); len(r.GetMysqlUsers()) != 0 {
		t.Fatalf("a deleted site's route claims mysql users %v", r.GetMysqlUsers())
	}
}
