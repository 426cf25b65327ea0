package http

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// HTTPS at the front: the certificate of the site whose domain the client
// names (SNI), from the site's spec (SiteSpec.tls_cert_pem/tls_key_pem).
// A handshake looks the domain up in the route mirror and the parsed pair
// in a cache kept per site and epoch; only the first handshake of a site
// (or the first after its route changed) asks the actors for its spec.

// Bounds of the certificate cache.
const (
	// certQueryWait bounds the actor query for a site's spec during a
	// handshake; at the bound the handshake fails (the client retries).
	certQueryWait = 3 * time.Second
	// certMissRetry: a site found without a certificate is asked again
	// only after this long (a handshake for it fails meanwhile without an
	// actor round trip).
	certMissRetry = 10 * time.Second
	// certCacheSitesMax bounds the cached certificates; at the bound the
	// cache is emptied and refilled by later handshakes.
	certCacheSitesMax = 10_000
)

type certEntry struct {
	epoch   string
	cert    *tls.Certificate // nil: the site has none
	checked time.Time
}

type certCache struct {
	mu    sync.Mutex
	sites map[string]*certEntry
}

// ErrNoCertificate: the site of the SNI name has no certificate stored.
var ErrNoCertificate = errors.New("no certificate for this name")

// TLSConfig returns the configuration of an HTTPS listener: per-site
// certificates by SNI. It needs Config.SiteSpec.
func (f *Front) TLSConfig() (*tls.Config, error) {
	if f.cfg.SiteSpec == nil {
		return nil, errors.New("http front: TLS needs Config.SiteSpec")
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: f.certificate, NextProtos: []string{"http/1.1"}}, nil
}

func (f *Front) certificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	domain := Domain(hello.ServerName)
	if domain == "" {
		return nil, errors.New("no server name (SNI) in the handshake: the site cannot be told")
	}
	route, ok := f.cfg.Cluster.RouteByDomain(domain)
	if !ok {
		return nil, fmt.Errorf("no site for %s", domain)
	}
	epoch := core.EpochString(route.Epoch)
	f.certs.mu.Lock()
	e := f.certs.sites[route.Site]
	f.certs.mu.Unlock()
	if e != nil && (e.cert != nil && e.epoch == epoch || e.cert == nil && time.Since(e.checked) < certMissRetry) {
		if e.cert == nil {
			return nil, ErrNoCertificate
		}
		return e.cert, nil
	}
	master := route.Master
	if master == "" {
		master = f.cfg.Cluster.Node()
	}
	ctx, cancel := context.WithTimeout(hello.Context(), certQueryWait)
	defer cancel()
	spec, err := f.cfg.SiteSpec(ctx, route.Site, master)
	if err != nil {
		if e != nil && e.cert != nil {
			return e.cert, nil // the stored pair is still the best we know
		}
		return nil, fmt.Errorf("site %s: %w", route.Site, err)
	}
	ne := &certEntry{epoch: epoch, checked: time.Now()}
	if len(spec.GetTlsCertPem()) > 0 {
		pair, err := tls.X509KeyPair(spec.GetTlsCertPem(), spec.GetTlsKeyPem())
		if err != nil {
			f.log.Warn("a site's stored certificate does not load", "site", route.Site, "err", err)
		} else {
			ne.cert = &pair
		}
	}
	f.certs.mu.Lock()
	if len(f.certs.sites) >= certCacheSitesMax {
		clear(f.certs.sites)
	}
	f.certs.sites[route.Site] = ne
	f.certs.mu.Unlock()
	if ne.cert == nil {
		return nil, ErrNoCertificate
	}
	return ne.cert, nil
}

// specFromView is what a SiteSpec hook built on an admin site query
// returns: the spec of the copy that answered.
func specFromView(v *m.AdminView) (*m.SiteSpec, error) {
	if v.GetCode() != m.Code_CODE_OK {
		return nil, fmt.Errorf("site query: %s %s", v.GetCode(), v.GetDetail())
	}
	return v.GetInfo().GetSpec(), nil
}

// SpecFromView turns the answer of an ADMIN_QUERY_SITE into the site's
// spec (for Config.SiteSpec hooks).
func SpecFromView(v *m.AdminView, err error) (*m.SiteSpec, error) {
	if err != nil {
		return nil, err
	}
	return specFromView(v)
}
