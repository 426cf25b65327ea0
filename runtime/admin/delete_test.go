package admin_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/admin"
	"github.com/hybridcluster/hybridcluster/runtime/admin/admintest"
)

// DELETE /v1/sites/{site} sends AdminDeleteSite to the active balancer of
// the cluster view and answers 202 with the site as it was; an unknown site
// is 404 and nothing is sent.
func TestDeleteSite(t *testing.T) {
	fx := newFixture(t, admintest.Sample())
	st, body := fx.do("DELETE", "/v1/sites/nosuch", "")
	wantError(t, st, body, http.StatusNotFound, admin.CodeNotFound)
	st, body = fx.do("DELETE", "/v1/sites/BAD", "")
	wantError(t, st, body, http.StatusBadRequest, admin.CodeBadRequest)
	if sent := fx.f.Sent(); len(sent) != 0 {
		t.Fatalf("sent %v", sent)
	}
	st, body = fx.do("DELETE", "/v1/sites/shop", "")
	if st != http.StatusAccepted {
		t.Fatalf("%d %s", st, body)
	}
	if sb := decodeAs[admin.SiteBody](t, body); sb.Site.Name != "shop" || sb.Site.Master != "n1" {
		t.Fatalf("answer %+v", sb)
	}
	sent := fx.f.Sent()
	if len(sent) != 1 || sent[0].To != core.BalancerAddr("n1") || !proto.Equal(sent[0].Msg, &m.AdminDeleteSite{Site: "shop"}) {
		t.Fatalf("sent %v", sent)
	}

	srv := httptest.NewServer(fx.h)
	defer srv.Close()
	c := admin.NewClient(srv.URL, token, nil)
	if s, err := c.DeleteSite(context.Background(), "blog"); err != nil || s.Name != "blog" {
		t.Fatalf("client delete: %+v %v", s, err)
	}
	_, err := c.DeleteSite(context.Background(), "nosuch")
	wantAPIError(t, err, 404, admin.CodeNotFound)
}

// A deleted site is not listed: neither the copies that record its
// tombstone nor a copy of its old history (a node that missed the delete);
// a site created again after its tombstone shows its new copies only, and
// its name can be created again once deleted.
func TestDeletedSitesNotListed(t *testing.T) {
	at := admintest.SampleAtMs
	old, again := admintest.Spec("old", "old.example"), admintest.Spec("again", "again.example")
	old.Created = admintest.Epoch(1, "n1")
	tomb := &m.Epoch{Term: 500, Node: "n1" + core.TombstoneMark}
	deleted := func(spec *m.SiteSpec, node string) *m.DatasetInfo {
		return &m.DatasetInfo{Site: spec.GetName(), Node: node, Role: m.Role_ROLE_DELETED, Epoch: tomb,
			Phase: m.SitePhase_SITE_PHASE_STOPPED, Spec: spec}
	}
	e600 := admintest.Epoch(600, "n2")
	newAgain := proto.CloneOf(again)
	newAgain.Created = e600
	oldAgain := proto.CloneOf(again)
	oldAgain.Created = admintest.Epoch(1, "n3")
	v := admintest.View("n1", at,
		admintest.Report("n1", at-100, deleted(old, "n1"), deleted(again, "n1")),
		admintest.Report("n2", at-100, deleted(old, "n2"),
			admintest.Master(newAgain, "n2", m.SitePhase_SITE_PHASE_ACTIVE, e600, admintest.Snap(e600, 1, at-1000))),
		// n3 was away at both deletions: its copies are of the old histories.
		admintest.Report("n3", at-100, admintest.Replica(old, "n3", admintest.Epoch(1, "n1"), admintest.Snap(admintest.Epoch(1, "n1"), 3, at-90_000)),
			admintest.Master(oldAgain, "n3", m.SitePhase_SITE_PHASE_STOPPED, admintest.Epoch(1, "n3"), nil)),
	)
	f := admintest.New("n1", "n1", "n2", "n3")
	f.SetCluster(v)
	fx := newFixture(t, f)
	st, body := fx.do("GET", "/v1/sites", "")
	if st != http.StatusOK {
		t.Fatalf("%d %s", st, body)
	}
	sites := decodeAs[admin.SiteList](t, body).Sites
	if len(sites) != 1 || sites[0].Name != "again" || sites[0].Master != "n2" || len(sites[0].Copies) != 1 {
		t.Fatalf("sites %+v", sites)
	}
	st, body = fx.do("GET", "/v1/sites/old", "")
	wantError(t, st, body, http.StatusNotFound, admin.CodeNotFound)
	st, body = fx.do("DELETE", "/v1/sites/old", "")
	wantError(t, st, body, http.StatusNotFound, admin.CodeNotFound)
	st, body = fx.do("POST", "/v1/sites", `{"name":"old","domains":["old.example"]}`)
	if st != http.StatusAccepted {
		t.Fatalf("create of a deleted name: %d %s", st, body)
	}
	if sent := fx.f.Sent(); len(sent) != 1 || !slices.ContainsFunc(sent, func(s admintest.Sent) bool {
		c, ok := s.Msg.(*m.CreateSite)
		return ok && c.Spec.GetName() == "old"
	}) {
		t.Fatalf("sent %v", sent)
	}
}
