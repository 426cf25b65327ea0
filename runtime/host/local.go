package host

import "net/http"

// ServeLocal serves a request of a site whose master is this node, as the
// internal port would for a forward from another node, but in process: the
// front end of the master's own node skips the internal port's round trip.
// It returns false, having read nothing of the request, when this node does
// not serve the site now (the caller asks the actors where it went, as on
// a 421 from the internal port). counted: the actors already counted the
// request as load (it went through the site actor).
func (h *Host) ServeLocal(w http.ResponseWriter, r *http.Request, site string, counted bool) bool {
	if h.sites == nil {
		return false
	}
	release, ok := h.gates.admit(r.Context(), site)
	if !ok {
		return false
	}
	defer release()
	h.activity.bump(site)
	if !counted {
		h.activity.bumpLoad(site)
	}
	h.sites.Serve(site, w, r)
	return true
}
