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

// GoroutinesPath serves the node's goroutines (?debug=1 counts them by
// stack, ?debug=2 lists each): where a node's goroutines or memory grow,
// this says which code holds them. Internal port, node token, as above.
const GoroutinesPath = host.InternalPrefix + "debug/pprof/goroutine"

// serveProfile registers ProfilePath and GoroutinesPath on h's internal
// port.
func serveProfile(h *host.Host) {
	h.HandleInternal(ProfilePath, http.HandlerFunc(pprof.Profile))
	h.HandleInternal(GoroutinesPath, pprof.Handler("goroutine"))
}
