// Package loopback hands out loopback ports for processes and tests that
// must name their ports before they bind them (local clusters, protoactor's
// remote, which binds an address it is given).
package loopback

import (
	"fmt"
	mrand "math/rand/v2"
	"net"
	"sync"
)

// Ports come from below Linux's ephemeral range (32768-60999): a port the
// kernel picked from that range and released can be taken by any outgoing
// connection before its user binds it (seen: a local cluster's node, and a
// host test's protoactor remote, that failed to start with "address
// already in use" while other tests made connections).
const (
	portRangeLow  = 20000
	portRangeHigh = 32000
	// portTriesMax bounds the candidates FreePorts tries per call; at the
	// bound it fails.
	portTriesMax = 4096
)

var (
	portMu sync.Mutex
	// nextPort starts at a random place, so that two processes that pick
	// ports at once rarely try the same ones.
	nextPort = portRangeLow + mrand.IntN(portRangeHigh-portRangeLow)
)

// FreePorts returns n distinct loopback ports that could be bound just
// now; within a process a port is not handed out twice until the range
// wraps.
func FreePorts(n int) ([]int, error) {
	portMu.Lock()
	defer portMu.Unlock()
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries >= portTriesMax {
			return nil, fmt.Errorf("loopback: %d free ports not found in %d tries", n, portTriesMax)
		}
		p := nextPort
		if nextPort++; nextPort >= portRangeHigh {
			nextPort = portRangeLow
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		_ = l.Close()
		ports = append(ports, p)
	}
	return ports, nil
}
