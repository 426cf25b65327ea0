package actortest

import (
	"bytes"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hybridcluster/hybridcluster/actors/core"
	"github.com/hybridcluster/hybridcluster/actors/site"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// A site's certificate and key never travel in the nodes' reports (their
// digest does, so the balancer knows the site has HTTPS), and still every
// activation keeps them: a failover's (its spec comes from the probe's
// answers) and a heal's when a partition that cut the master off ends
// (its spec is the one the winner reported).
func TestReportsCarryNoKeyAndFailoverKeepsIt(t *testing.T) {
	h := New()
	h.Boot([]string{"n1", "n2", "n3"})
	cert, key := []byte("-----BEGIN CERTIFICATE-----\nchain\n"), []byte("-----BEGIN PRIVATE KEY-----\nsecret\n")
	spec := &m.SiteSpec{Name: "a", Domains: []string{"a.example"}, TlsCertPem: cert, TlsKeyPem: key}
	digest := core.TLSDigest(spec)
	var reports, withDigest, heals int
	h.Sent = func(_ string, to core.Address, msg proto.Message) {
		if a, ok := msg.(*m.Activate); ok && a.GetReason() == "heal" {
			heals++
		}
		r, ok := msg.(*m.NodeReport)
		if !ok {
			return
		}
		reports++
		for _, d := range r.GetDatasets() {
			if len(d.GetSpec().GetTlsKeyPem()) > 0 || len(d.GetSpec().GetTlsCertPem()) > 0 {
				t.Fatalf("a report to %s carries the certificate or key of %s", to, d.GetSite())
			}
			if d.GetSite() == "a" && d.GetSpec() != nil {
				if !bytes.Equal(d.GetSpec().GetTlsSha256(), digest) {
					t.Fatalf("report of a: tls_sha256 %x, want %x", d.GetSpec().GetTlsSha256(), digest)
				}
				withDigest++
			}
		}
	}
	h.enqueue("", core.NodeAddr("n1"), &m.CreateSite{Spec: spec})
	h.Tick(10 * time.Second)
	old := h.master("a")
	if reports == 0 || withDigest == 0 {
		t.Fatalf("%d reports, %d entries of a with the digest: the check saw nothing", reports, withDigest)
	}
	// The master is cut off: the others fail over, it stays master on its
	// side, and when the partition heals the balancer finds two masters.
	for _, n := range h.nodes {
		if n != old {
			h.Partition(old, n)
		}
	}
	h.Tick(15 * time.Second)
	now := ""
	for _, n := range h.nodes {
		if n != old {
			if st, ok := h.actors[core.SiteAddr(n, "a")].(*site.Site); ok && st.Phase() == m.SitePhase_SITE_PHASE_ACTIVE {
				now = n
			}
		}
	}
	if now == "" {
		t.Fatalf("no failover on the majority's side (the old master is %s)", old)
	}
	check := func(when string) {
		t.Helper()
		got := h.disk[now]["a"].spec
		if !bytes.Equal(got.GetTlsCertPem(), cert) || !bytes.Equal(got.GetTlsKeyPem(), key) || len(got.GetTlsSha256()) != 0 {
			t.Fatalf("%s: the master %s was activated with spec %v; want the certificate and key, no digest", when, now, got)
		}
	}
	check("after the failover")
	h.Heal()
	h.Tick(15 * time.Second)
	if heals == 0 {
		t.Fatalf("the partition healed and no heal activated anything (master now %s)", h.master("a"))
	}
	now = h.master("a")
	check("after the heal")
}
