package loopback

import (
	"net"
	"strconv"
	"testing"
)

// FreePorts gives distinct ports below the ephemeral range that can be
// bound, and passes over a port that is taken.
func TestFreePorts(t *testing.T) {
	// Hold a port of the range (the first one that can be bound).
	var busy int
	var held net.Listener
	for p := portRangeLow; p < portRangeHigh && held == nil; p++ {
		if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p)); err == nil {
			busy, held = p, l
		}
	}
	if held == nil {
		t.Fatalf("no port of [%d,%d) can be bound", portRangeLow, portRangeHigh)
	}
	defer held.Close()
	portMu.Lock()
	nextPort = busy // the first candidate is the taken port
	portMu.Unlock()
	ports, err := FreePorts(50)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p < portRangeLow || p >= portRangeHigh || seen[p] || p == busy {
			t.Fatalf("port %d: outside [%d,%d), given twice or taken: %v", p, portRangeLow, portRangeHigh, ports)
		}
		seen[p] = true
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Fatalf("port %d cannot be bound: %v", p, err)
		}
		l.Close()
	}
}
