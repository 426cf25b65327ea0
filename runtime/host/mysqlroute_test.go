package host

import (
	"testing"

	m "github.com/hybridcluster/hybridcluster/messages"
)

func TestRouteByMysqlUser(t *testing.T) {
	tb := newRouteTable()
	e := &m.Epoch{Term: 1, Node: "n1"}
	tb.set("a", &m.RouteUpdate{Site: "a", Master: "n1", Epoch: e, Phase: m.SitePhase_SITE_PHASE_ACTIVE, MysqlUsers: []string{"shop", "both"}})
	tb.set("b", &m.RouteUpdate{Site: "b", Master: "n2", Epoch: e, Phase: m.SitePhase_SITE_PHASE_ACTIVE, MysqlUsers: []string{"blog", "both"}})
	if r, ok := tb.lookupMysqlUser("shop"); !ok || r.Site != "a" || r.Master != "n1" {
		t.Fatalf("shop: %+v %v", r, ok)
	}
	if r, ok := tb.lookupMysqlUser("both"); ok {
		t.Fatalf("a user two sites name must be routed nowhere, got %+v", r)
	}
	if _, ok := tb.lookupMysqlUser("nobody"); ok {
		t.Fatal("unknown user routed")
	}
	// b drops "both": it is a's alone now; a's move keeps its users.
	tb.set("b", &m.RouteUpdate{Site: "b", Master: "n2", Epoch: e, Phase: m.SitePhase_SITE_PHASE_ACTIVE, MysqlUsers: []string{"blog"}})
	tb.set("a", &m.RouteUpdate{Site: "a", Master: "n3", Epoch: &m.Epoch{Term: 2, Node: "n3"}, Phase: m.SitePhase_SITE_PHASE_ACTIVE, MysqlUsers: []string{"shop", "both"}})
	if r, ok := tb.lookupMysqlUser("both"); !ok || r.Site != "a" || r.Master != "n3" {
		t.Fatalf("both after b dropped it: %+v %v", r, ok)
	}
	tb.set("a", nil)
	if _, ok := tb.lookupMysqlUser("shop"); ok {
		t.Fatal("forgotten site still routes its user")
	}
}
