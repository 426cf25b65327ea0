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

// Admission is Admit for a long session that counts its units of work in
// and out one after another (a MySQL session's commands): Enter and Leave
// allocate nothing and take the gates' lock once each. It holds at most
// one unit at a time. Not safe for concurrent use.
type Admission struct {
	h    *Host
	site string
	g    *gate // the gate entered; nil: nothing held
}

// NewAdmission returns an Admission for site (nothing held).
func (h *Host) NewAdmission(site string) *Admission { return &Admission{h: h, site: site} }

// Enter counts one unit of work in as Admit does (false: this node does
// not serve the site now). With a unit already held it does nothing.
func (a *Admission) Enter(ctx context.Context) bool {
	if a.g != nil {
		return true
	}
	g, ok := a.h.gates.enter(ctx, a.site)
	if !ok {
		return false
	}
	a.g = g
	a.h.activity.bump(a.site)
	a.h.activity.bumpLoad(a.site)
	return true
}

// Leave counts the unit held out (nothing held: nothing done).
func (a *Admission) Leave() {
	if a.g != nil {
		a.h.gates.leave(a.g)
		a.g = nil
	}
}
