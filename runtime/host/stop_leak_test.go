package host

import (
	"bytes"
	"fmt"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	m "github.com/hybridcluster/hybridcluster/messages"
)

// goroutinesIn counts the goroutines with a frame whose function name
// contains fn.
func goroutinesIn(fn string) int {
	var buf bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&buf, 2)
	n := 0
	for _, g := range strings.Split(buf.String(), "\n\n") {
		if strings.Contains(g, fn) {
			n++
		}
	}
	return n
}

// protoactor's remote reads each member-to-member connection with one
// endpointReader goroutine on the receiving side.
// (The "(" leaves out its helper goroutine, Receive.func1.)
const endpointReaderFunc = "remote.(*endpointReader).Receive("

// TestStopClosesPeerConnections: a stopped host closes its connections to
// the other members, so that after it restarts the members are connected
// exactly as before: one reader per ordered pair. remote.Shutdown(false)
// alone stopped only the gRPC server; the stopped host's outgoing
// connections stayed open with their readers on the peers, and every stop
// and restart added to them (about 30 goroutines per cycle in a process
// hosting several nodes, as these tests do).
func TestStopClosesPeerConnections(t *testing.T) {
	c := startCluster(t, 3)
	c.placeSite("zeta")
	const pairs = 6 // ordered pairs of 3 members
	onePerPair := func() error {
		if got := goroutinesIn(endpointReaderFunc); got != pairs {
			return fmt.Errorf("%d endpoint readers, want %d", got, pairs)
		}
		return nil
	}
	eventually(t, "one reader per pair", onePerPair)
	for cycle := 1; cycle <= restartCycles; cycle++ {
		c.stop("n3")
		c.restart("n3")
		c.servedBy("n3", "zeta", c.masterOf("zeta"))
		eventually(t, fmt.Sprintf("one reader per pair after restart %d", cycle), onePerPair)
	}
}

// restartCycles is how many stops and restarts the test makes.
const restartCycles = 2

// masterOf asks n1 who serves site.
func (c *testCluster) masterOf(site string) string {
	c.t.Helper()
	resp, err := c.request("n1", &m.SiteRequest{Site: site, Idempotent: true})
	if err != nil || resp.Code != m.Code_CODE_OK {
		c.t.Fatalf("who serves %s: %v %v", site, resp, err)
	}
	return resp.Master
}

// grpcRedialFunc is the goroutine of a gRPC connection that is
// (re)connecting: one for every connection to an unreachable address that
// was never closed.
const grpcRedialFunc = "grpc.(*addrConn).resetTransport"

// downPeerWatch is how long TestADownPeerLeaksNoConnections watches: more
// than one round of protoactor's redials (MaxRetryCount attempts, 2 s
// apart), each of which opened a gRPC connection and left it open.
const downPeerWatch = 12 * time.Second

// TestADownPeerLeaksNoConnections: while a member is down, the others keep
// sending to it (heartbeats), and protoactor redials it. A redial whose
// connection failed left that gRPC connection open, redialing in the
// background for good: on a 3-node cluster with one node down, the others
// grew by about 16 goroutines and 200 KB of heap every 10 s. Dials now
// block until connected or failed, and a failed dial closes its connection.
func TestADownPeerLeaksNoConnections(t *testing.T) {
	c := startCluster(t, 3)
	c.placeSite("zeta")
	// Connections of the package's earlier tests may still be redialing
	// their own stopped members (and an etcd client its server): counted
	// before, and only what comes on top counts.
	before := goroutinesIn(grpcRedialFunc)
	c.stop("n3")
	deadline := time.Now().Add(downPeerWatch)
	most := 0
	for time.Now().Before(deadline) {
		most = max(most, goroutinesIn(grpcRedialFunc)-before)
		time.Sleep(100 * time.Millisecond)
	}
	// A dial under way on each of the two members is all there may be.
	if n := goroutinesIn(grpcRedialFunc) - before; n > 2 || most > 4 {
		var buf bytes.Buffer
		_ = pprof.Lookup("goroutine").WriteTo(&buf, 2)
		var stacks []string
		for _, g := range strings.Split(buf.String(), "\n\n") {
			if strings.Contains(g, grpcRedialFunc) {
				stacks = append(stacks, g)
			}
		}
		t.Fatalf("%d more gRPC connections redialing after the member was down %v (at most %d seen); want at most one per live member:\n%s",
			n, downPeerWatch, most, strings.Join(stacks, "\n\n"))
	}
}
