package balancer

import (
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// clusterView asks b for the cluster view and returns the answer.
func clusterView(t *testing.T, b *Balancer, env *core.Env, id uint64) *m.AdminView {
	t.Helper()
	fx := b.Step(env, &m.AdminQuery{QueryId: id, ReplyNode: "n9", Kind: m.AdminQueryKind_ADMIN_QUERY_CLUSTER})
	if len(fx) != 1 {
		t.Fatalf("%d effects, want one answer: %v", len(fx), fx)
	}
	s, ok := fx[0].(core.Send)
	if !ok || s.To != core.ClientAddr("n9") {
		t.Fatalf("got %#v, want a send to client@n9", fx[0])
	}
	v, ok := s.Msg.(*m.AdminView)
	if !ok {
		t.Fatalf("got %T, want an AdminView", s.Msg)
	}
	return v
}

// The cluster view is a deep copy: a client that changes the answer (the
// host hands it over unmarshaled) changes neither the balancer's state, nor
// the next answer, nor the reports it was sent (which the sim shares with
// the reporting node actor).
func TestClusterViewDoesNotAlias(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(v *m.AdminView)
	}{
		{"report dataset spec", func(v *m.AdminView) { v.Reports[0].Datasets[0].Spec.Name = "x" }},
		{"report dataset spec domains", func(v *m.AdminView) { v.Reports[0].Datasets[0].Spec.Domains[0] = "x" }},
		{"report dataset epoch", func(v *m.AdminView) { v.Reports[0].Datasets[0].Epoch.Term = 99 }},
		{"report dataset latest", func(v *m.AdminView) { v.Reports[0].Datasets[0].Latest.Name = "x" }},
		{"report dataset replicas", func(v *m.AdminView) { v.Reports[0].Datasets[0].Replicas[0] = "x" }},
		{"report dataset phase", func(v *m.AdminView) { v.Reports[0].Datasets[0].Phase = m.SitePhase_SITE_PHASE_STOPPED }},
		{"report datasets element", func(v *m.AdminView) { v.Reports[0].Datasets[0] = &m.DatasetInfo{Site: "x"} }},
		{"report datasets appended", func(v *m.AdminView) {
			v.Reports[1].Datasets = append(v.Reports[1].Datasets[:0], &m.DatasetInfo{Site: "x"})
		}},
		{"report load", func(v *m.AdminView) { v.Reports[1].Load = 1 << 40 }},
		{"reports element", func(v *m.AdminView) { v.Reports[0] = &m.NodeReport{Node: "x"} }},
		{"live", func(v *m.AdminView) { v.Live[0] = "x" }},
		{"live appended", func(v *m.AdminView) { v.Live = append(v.Live[:1], "x") }},
		{"draining", func(v *m.AdminView) { v.Draining[0] = "x" }},
		{"pending create", func(v *m.AdminView) { v.PendingCreates[0].Name = "x" }},
		{"pending create domains", func(v *m.AdminView) { v.PendingCreates[0].Domains[0] = "x" }},
		{"pending create users", func(v *m.AdminView) { v.PendingCreates[0].FtpUsers[0].PasswordHash = "x" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := &core.Env{Self: core.BalancerAddr("n1"), Now: time.Unix(1000, 0), Config: core.Default()}
			b := New("n1")
			b.Step(env, &m.BalancerRole{Active: true, Live: []string{"n1", "n2", "n3"}})
			reports := []*m.NodeReport{
				{Node: "n2", Load: 3, AtMs: 999_000, Datasets: []*m.DatasetInfo{{Site: "a", Node: "n2", Role: m.Role_ROLE_REPLICA,
					Epoch: &m.Epoch{Term: 1, Node: "n1"}, Latest: &m.SnapshotRef{Name: "e1-n1-s1"}, Spec: &m.SiteSpec{Name: "a", Domains: []string{"a.example"}}}}},
				{Node: "n1", Load: 5, AtMs: 999_000, Datasets: []*m.DatasetInfo{{Site: "a", Node: "n1", Role: m.Role_ROLE_MASTER,
					Epoch: &m.Epoch{Term: 1, Node: "n1"}, Latest: &m.SnapshotRef{Name: "e1-n1-s1"}, Spec: &m.SiteSpec{Name: "a", Domains: []string{"a.example"}},
					Replicas: []string{"n2"}, Phase: m.SitePhase_SITE_PHASE_ACTIVE, Requests: 5}}},
				{Node: "n3", Draining: true, AtMs: 999_000},
			}
			sent := make([]*m.NodeReport, len(reports))
			for i, r := range reports {
				sent[i] = proto.CloneOf(r)
				b.Step(env, r)
			}
			create := &m.CreateSite{Spec: &m.SiteSpec{Name: "b", Domains: []string{"b.example"}, FtpUsers: []*m.FtpUser{{Name: "u", PasswordHash: "h"}}}}
			createSent := proto.CloneOf(create)
			b.Step(env, create)
			b.Step(env, proto.CloneOf(create)) // a duplicate is one pending site

			first := clusterView(t, b, env, 1)
			want := proto.CloneOf(first)
			if got := []string{want.Reports[0].Node, want.Reports[1].Node, want.Reports[2].Node}; got[0] != "n1" || got[1] != "n2" || got[2] != "n3" {
				t.Fatalf("reports of %v, want n1,n2,n3 in order", got)
			}
			if len(want.PendingCreates) != 1 || len(want.Draining) != 1 || want.Code != m.Code_CODE_OK || want.Balancer != "n1" {
				t.Fatalf("unexpected first answer %v", want)
			}
			tc.mutate(first)
			want.QueryId = 2
			if next := clusterView(t, b, env, 2); !proto.Equal(next, want) {
				t.Fatalf("the next answer changed after the first was mutated:\n got %v\nwant %v", next, want)
			}
			for i := range reports {
				if !proto.Equal(reports[i], sent[i]) {
					t.Fatalf("report of %s changed: %v, was %v", sent[i].Node, reports[i], sent[i])
				}
			}
			if !proto.Equal(create, createSent) {
				t.Fatalf("create changed: %v, was %v", create, createSent)
			}
		})
	}
}

// A balancer that is not active answers MOVED and names the balancer its
// node believes active; it shares nothing either.
func TestClusterViewNotActive(t *testing.T) {
	env := &core.Env{Self: core.BalancerAddr("n2"), Now: time.Unix(1000, 0), Config: core.Default()}
	b := New("n2")
	b.Step(env, &m.BalancerRole{Active: false, Live: []string{"n1", "n2"}})
	v := clusterView(t, b, env, 1)
	if v.Code != m.Code_CODE_MOVED || v.Node != "n2" || v.Balancer != "n1" || v.Detail != "not the active balancer" ||
		len(v.Reports)+len(v.Live)+len(v.PendingCreates) != 0 {
		t.Fatalf("answer %v, want MOVED from n2 naming n1 and nothing else", v)
	}
}

// A CLAIMS query answers only the copies and pending creates that claim
// the asked name or one of its domains, from every live node's report;
// the others are left out (a create checks these, at a cost that must not
// grow with the number of sites).
func TestClaimsViewCutsToClaimants(t *testing.T) {
	env := &core.Env{Self: core.BalancerAddr("n1"), Now: time.Unix(1000, 0), Config: core.Default()}
	b := New("n1")
	b.Step(env, &m.BalancerRole{Active: true, Live: []string{"n1", "n2"}})
	info := func(site, domain string) *m.DatasetInfo {
		return &m.DatasetInfo{Site: site, Role: m.Role_ROLE_MASTER, Phase: m.SitePhase_SITE_PHASE_ACTIVE,
			Spec: &m.SiteSpec{Name: site, Domains: []string{domain}}}
	}
	b.Step(env, &m.NodeReport{Node: "n1", Datasets: []*m.DatasetInfo{info("shop", "shop.example"), info("blog", "blog.example")}})
	b.Step(env, &m.NodeReport{Node: "n2", Datasets: []*m.DatasetInfo{info("wiki", "wiki.example")}})
	b.Step(env, &m.CreateSite{Spec: &m.SiteSpec{Name: "news", Domains: []string{"news.example"}}})
	b.Step(env, &m.CreateSite{Spec: &m.SiteSpec{Name: "mail", Domains: []string{"mail.example"}}})

	fx := b.Step(env, &m.AdminQuery{QueryId: 5, ReplyNode: "n9", Kind: m.AdminQueryKind_ADMIN_QUERY_CLAIMS,
		Site: "shop", Domains: []string{"wiki.example", "news.example"}})
	v := fx[0].(core.Send).Msg.(*m.AdminView)
	if v.Code != m.Code_CODE_OK || len(v.Reports) != 2 {
		t.Fatalf("claims view: %v", v)
	}
	var sites []string
	for _, r := range v.Reports {
		for _, d := range r.Datasets {
			sites = append(sites, r.Node+":"+d.Site)
		}
	}
	if want := []string{"n1:shop", "n2:wiki"}; !slices.Equal(sites, want) {
		t.Fatalf("copies in the claims view %v, want %v", sites, want)
	}
	if len(v.PendingCreates) != 1 || v.PendingCreates[0].Name != "news" {
		t.Fatalf("pending creates in the claims view %v, want news only", v.PendingCreates)
	}
	// The full view still has everything.
	if full := clusterView(t, b, env, 6); len(full.Reports[0].Datasets) != 2 || len(full.PendingCreates) != 2 {
		t.Fatalf("cluster view cut too: %v", full)
	}
}
