package http

import (
	"net/http"
)

// AppProxy forwards requests to a site's app listening on addr (its
// master's runtime/sites runs it), with the front end's engine: kept
// connections, no per-request goroutine. The forwarding headers
// (X-Forwarded-*) are passed as the front end set them; the Host is the
// client's (apps build their URLs from the site's domain).
type AppProxy struct {
	addr   string
	usable func() bool
	engine *engine
}

// NewAppProxy returns a proxy to the app at addr (host:port). usable
// reports whether the app still takes new requests (false once it is being
// stopped: no request may reach a process started after it on the same
// port); nil means always.
func NewAppProxy(addr string, usable func() bool) *AppProxy {
	return &AppProxy{addr: addr, usable: usable, engine: newEngine()}
}

// CloseIdle closes the kept connections to the app (its process ended).
func (p *AppProxy) CloseIdle() { p.engine.closeIdle("") }

func (p *AppProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p.usable != nil && !p.usable() {
		badGateway(w, "the site's app has ended")
		return
	}
	o := outbound{in: r, upgrade: upgradeOf(r)}
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		o.body = &trackedBody{ReadCloser: r.Body}
	}
	responded, err := p.engine.forward(w, p.addr, &o)
	if err == nil || r.Context().Err() != nil {
		return
	}
	if responded {
		if err != errConnDone {
			// Cut mid-answer: the client must see a broken response.
			panic(http.ErrAbortHandler)
		}
		return
	}
	http.Error(w, "502 bad gateway: the site's app did not answer", http.StatusBadGateway)
}

// AppProxyFor has the shape of runtime/sites.Config.AppProxy.
func AppProxyFor(addr string, usable func() bool) (http.Handler, func()) {
	p := NewAppProxy(addr, usable)
	return p, p.CloseIdle
}
