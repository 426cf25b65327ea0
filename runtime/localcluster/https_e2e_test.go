package localcluster

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/admin"
)

// A site created with its certificate (hcctl --tls-cert/--tls-key) is
// served over HTTPS by every node with that certificate, chosen by SNI
// (real curl, verifying against the certificate); /metrics counts it.
func TestE2EHTTPSBySNIAndMetrics(t *testing.T) {
	c := newCluster(t, 3)
	ctx := context.Background()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writePair(t, certFile, keyFile, "secure.example")
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := c.HCCtl(ctx, 0, "site", "create", "secure", "--domain", "secure.example", "--app", bins.HCDemoApp,
			"--tls-cert", certFile, "--tls-key", keyFile)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hcctl site create: %v\n%s", err, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := c.WaitSite(wctx, 0, "secure", func(s admin.Site) bool { return s.Master != "" && s.Phase == "active" }); err != nil {
		t.Fatal(err)
	}
	show, err := c.HCCtl(ctx, 1, "site", "show", "secure")
	if err != nil || !strings.Contains(show, "certificate stored") || strings.Contains(show, "PRIVATE KEY") {
		t.Fatalf("hcctl site show: %v\n%s", err, show)
	}
	for i, n := range c.Nodes {
		_, port, _ := net.SplitHostPort(n.HTTPS)
		got := curl(t, "--cacert", certFile, "--resolve", "secure.example:"+port+":127.0.0.1", "https://secure.example:"+port+"/health")
		if strings.TrimSpace(got) != "ok" {
			t.Fatalf("HTTPS through %s: %q", c.Nodes[i].Name, got)
		}
		// A name without a site: no certificate, the handshake fails.
		out, err := exec.Command("curl", "-sS", "--max-time", "10", "--cacert", certFile, "--resolve", "nosuch.example:"+port+":127.0.0.1", "https://nosuch.example:"+port+"/").CombinedOutput()
		if err == nil {
			t.Fatalf("HTTPS for a name without a site through %s succeeded: %s", n.Name, out)
		}
	}
	metrics := curl(t, "http://"+c.Nodes[2].Metrics+"/metrics")
	for _, want := range []string{`hc_http_requests_total{site="secure"} 1`, `hc_http_responses_total{site="secure",code="200"} 1`, "hc_http_hold_seconds_bucket"} {
		if !strings.Contains(metrics, want) {
			t.Fatalf("metrics of n3 lack %q:\n%s", want, metrics)
		}
	}
}

func writePair(t *testing.T, certFile, keyFile, domain string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: domain}, DNSNames: []string{domain},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
}
