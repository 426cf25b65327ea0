package host

import (
	"time"

	"github.com/asynkron/protoactor-go/remote"
)

// peerEndpointsCloseWait bounds the pause Stop makes for protoactor's
// endpoint writers to close their gRPC connections after being told their
// peers are gone; past it Stop goes on (a connection left open is closed
// with the process, or leaks in a process that hosts several nodes).
const peerEndpointsCloseWait = 200 * time.Millisecond

// closePeerEndpoints makes protoactor's remote close its client connections
// to the other members. remote.Shutdown(false) stops only the gRPC server:
// the endpoint writers' connections stay open, and so do the peers'
// readers of them (about 30 goroutines per stop and restart in a process
// that hosts several nodes, as the host tests do). The graceful shutdown
// closes them but waits up to 10 s for gRPC. An EndpointTerminatedEvent
// per peer is what protoactor itself publishes when a peer is lost: its
// endpoint manager stops that peer's writer, which closes the connection.
func (h *Host) closePeerEndpoints() {
	if h.system == nil || h.remote == nil {
		return
	}
	n := 0
	for _, name := range h.names {
		if name == h.node {
			continue
		}
		h.system.EventStream.Publish(&remote.EndpointTerminatedEvent{Address: h.members[name].ActorAddr})
		n++
	}
	if n > 0 {
		time.Sleep(peerEndpointsCloseWait)
	}
}
