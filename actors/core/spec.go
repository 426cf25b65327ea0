package core

import (
	"bytes"
	"crypto/sha256"

	"google.golang.org/protobuf/proto"

	"github.com/hybridcluster/hybridcluster/messages"
)

// MysqlUserNames lists the names of a spec's MySQL users (what a route
// carries so that every node's MySQL front end can route by user name),
// nil for none.
func MysqlUserNames(spec *messages.SiteSpec) []string {
	var names []string
	for _, u := range spec.GetMysqlUsers() {
		names = append(names, u.GetName())
	}
	return names
}

// TLSDigest is what stands for a spec's certificate and key in reports
// (SiteSpec.tls_sha256): the SHA-256 of the chain, a zero byte and the key;
// nil for a spec without them.
func TLSDigest(spec *messages.SiteSpec) []byte {
	if len(spec.GetTlsCertPem()) == 0 && len(spec.GetTlsKeyPem()) == 0 {
		return nil
	}
	h := sha256.New()
	h.Write(spec.GetTlsCertPem())
	h.Write([]byte{0})
	h.Write(spec.GetTlsKeyPem())
	return h.Sum(nil)
}

// HasTLS reports whether the site has HTTPS: a certificate, or (in a
// report) what stands for one.
func HasTLS(spec *messages.SiteSpec) bool {
	return len(spec.GetTlsCertPem()) > 0 || len(spec.GetTlsSha256()) > 0
}

// ReportSpec is spec as a node reports it to the balancer: the
// certificate and key replaced by their digest. spec is not changed (a
// spec with neither is returned as it is).
func ReportSpec(spec *messages.SiteSpec) *messages.SiteSpec {
	digest := TLSDigest(spec)
	if digest == nil {
		return spec
	}
	out := proto.CloneOf(spec)
	out.TlsCertPem, out.TlsKeyPem, out.TlsSha256 = nil, nil, digest
	return out
}

// WithOwnTLS is spec, which may have come back from a report (an
// Activate's spec is the reported one of the copy it activates), with the
// certificate and key of own, the activated copy's spec, in place of
// their digest. The copy reported the spec, so its own is at least as
// new; matches is false when own's differ from what the digest stands
// for (the copy's spec changed since it reported).
func WithOwnTLS(spec, own *messages.SiteSpec) (out *messages.SiteSpec, matches bool) {
	if len(spec.GetTlsSha256()) == 0 {
		return spec, true
	}
	out = proto.CloneOf(spec)
	out.TlsSha256 = nil
	out.TlsCertPem, out.TlsKeyPem = own.GetTlsCertPem(), own.GetTlsKeyPem()
	return out, bytes.Equal(TLSDigest(own), spec.GetTlsSha256())
}
