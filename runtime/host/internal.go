package host

import (
	"context"
	"crypto/subtle"
	"net/http"
	"strings"
)

// InternalPrefix is the path prefix under which protocol front ends
// register their node-to-node endpoints on the internal port (the FTP
// front end's remote file system, the MySQL front end's tunnel, ...).
const InternalPrefix = "/internal/"

// HandleInternal serves handler on this node's internal port under
// pattern, which must start with InternalPrefix. Every request must carry
// the node token in HeaderToken (401 otherwise); the handler never sees the
// token. It may be called after Start; registering a pattern twice panics,
// as http.ServeMux does.
func (h *Host) HandleInternal(pattern string, handler http.Handler) {
	if !strings.HasPrefix(pattern, InternalPrefix) {
		panic("host: internal pattern " + pattern + " outside " + InternalPrefix)
	}
	h.internalMux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get(HeaderToken)), []byte(h.internalToken)) != 1 {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		r.Header.Del(HeaderToken)
		handler.ServeHTTP(w, r)
	}))
}

// InternalURL is the base URL of member's internal port (where its
// HandleInternal endpoints are), and false for a node not in the list.
func (h *Host) InternalURL(member string) (string, bool) {
	mb, ok := h.members[member]
	return mb.StreamURL, ok
}

// Admit counts one unit of work (a request, a session's command) in, as
// activity and as load, for a
// site whose master is this node, waiting boundedly while it starts. It
// returns false when this node does not serve the site now (the caller
// answers as the HTTP path does with 421: ask the actors where it went).
// A snapshot that must hold every acknowledged write waits, bounded, for
// admitted work to be released.
func (h *Host) Admit(ctx context.Context, site string) (release func(), ok bool) {
	release, ok = h.gates.admit(ctx, site)
	if ok {
		h.activity.bump(site)
		// Work that never passes the actors (MySQL commands, FTP
		// operations) is load the balancer must see, as HTTP requests
		// forwarded straight to the master are.
		h.activity.bumpLoad(site)
	}
	return release, ok
}
