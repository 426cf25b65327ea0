package main

import (
	"net/http"
	"net/http/pprof"

	"github.com/hybridcluster/hybridcluster/runtime/host"
)

// ProfilePath is the internal endpoint that serves a CPU profile of this
// node (net/http/pprof's profile handler: ?seconds=N). It is on the
// internal port, so only holders of the node token get it; hcbench mysql
// -cpuprofile uses it to profile the MySQL front end under load.
const ProfilePath = host.InternalPrefix + "debug/pprof/profile"

// serveProfile registers ProfilePath on h's internal port.
func serveProfile(h *host.Host) {
	h.HandleInternal(ProfilePath, http.HandlerFunc(pprof.Profile))
}
