package main

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/admin/admintest"
)

// site delete asks for --yes (exit 2 and nothing sent without it), then
// asks the active balancer.
func TestSiteDelete(t *testing.T) {
	f := admintest.Sample()
	srv := endpoint(t, f)
	if r := hcctl(srv, "site", "delete", "shop"); r.code != 2 || !strings.Contains(r.stderr, "--yes") {
		t.Fatalf("without --yes: %+v", r)
	}
	if sent := f.Sent(); len(sent) != 0 {
		t.Fatalf("sent without --yes: %v", sent)
	}
	r := hcctl(srv, "site", "delete", "shop", "--yes").ok(t)
	if !strings.Contains(r.stdout, "delete asked for") {
		t.Fatalf("stdout %q", r.stdout)
	}
	sent := f.Sent()
	if len(sent) != 1 || sent[0].To != core.BalancerAddr("n1") || !proto.Equal(sent[0].Msg, &m.AdminDeleteSite{Site: "shop"}) {
		t.Fatalf("sent %v", sent)
	}
	if r := hcctl(srv, "site", "delete", "nosuch", "--yes"); r.code != 1 || !strings.Contains(r.stderr, "not_found") {
		t.Fatalf("unknown site: %+v", r)
	}
}
