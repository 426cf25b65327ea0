package admin

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
)

func testPair(t *testing.T, domains ...string) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: domains[0]}, DNSNames: domains,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}))
}

// A site's certificate is stored with its spec once it pairs with its key
// and covers every domain; anything else is a clear error.
func TestCreateWithTLS(t *testing.T) {
	cert, key := testPair(t, "shop.example", "www.shop.example")
	otherCert, otherKey := testPair(t, "other.example")
	spec, err := ValidateCreate(&CreateSite{Name: "shop", Domains: []string{"shop.example", "WWW.shop.example"}, TLSCert: cert, TLSKey: key})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(spec.TlsCertPem, []byte(cert)) || !bytes.Equal(spec.TlsKeyPem, []byte(key)) {
		t.Fatal("certificate and key not in the spec")
	}
	if s := specSite("shop", spec); !s.TLS {
		t.Fatal("the site view does not say a certificate is stored")
	}
	// The balancer's view comes from the nodes' reports, which carry the
	// certificate's digest instead.
	if reported := core.ReportSpec(spec); len(reported.TlsCertPem) != 0 || len(reported.TlsKeyPem) != 0 || !specSite("shop", reported).TLS {
		t.Fatal("the site view of a reported spec does not say a certificate is stored (or the report carries it)")
	}
	for _, c := range []struct {
		name      string
		cert, key string
		want      string
	}{
		{"cert without key", cert, "", "both"},
		{"key of another cert", cert, otherKey, "TLS certificate and key"},
		{"cert not covering the domains", otherCert, otherKey, "does not cover"},
		{"garbage", "not pem", "not pem", "TLS certificate and key"},
		{"too long", strings.Repeat("x", MaxTLSPEMBytes+1), key, "longer than"},
	} {
		_, err := ValidateCreate(&CreateSite{Name: "shop", Domains: []string{"shop.example"}, TLSCert: c.cert, TLSKey: c.key})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want %q", c.name, err, c.want)
		}
	}
}
