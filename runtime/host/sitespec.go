package host

import (
	"google.golang.org/protobuf/proto"

	m "github.com/hybridcluster/hybridcluster/messages"
)

// SiteSpec returns a copy of the spec this node's catalog holds for site
// (every node holding a copy of the site has it; the site's master always
// does), and false when it holds none. The FTP front end checks logins
// against its users on the site's master.
func (h *Host) SiteSpec(site string) (*m.SiteSpec, bool) {
	r := h.catalog.get(site)
	if r.spec == nil || r.role == m.Role_ROLE_DELETED {
		return nil, false
	}
	return proto.Clone(r.spec).(*m.SiteSpec), true
}
