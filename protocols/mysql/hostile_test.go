package mysql

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	gm "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/hybridcluster/hybridcluster/runtime/host"
)

// firstPacket reads the first packet a front end sends on c.
func firstPacket(t *testing.T, c net.Conn) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var h [4]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		t.Fatalf("first packet: %v", err)
	}
	p := make([]byte, int(h[0])|int(h[1])<<8|int(h[2])<<16)
	if _, err := io.ReadFull(c, p); err != nil {
		t.Fatalf("first packet: %v", err)
	}
	return p
}

// One host that opens connections and never logs in takes at most
// handshakesPerHostMax of them; its next one is refused with 1040 at once,
// and a slot it gives back can be used again.
func TestSilentConnectionsFromOneHostAreBounded(t *testing.T) {
	f, err := New(Config{Cluster: &fakeCluster{node: "n1", users: map[string]host.Route{}},
		Internal: func(string) (string, bool) { return "", false }, Token: "t"})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go f.Serve(l)
	t.Cleanup(f.Close)
	dial := func() net.Conn {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	silent := make([]net.Conn, 0, handshakesPerHostMax)
	for range handshakesPerHostMax {
		c := dial()
		if p := firstPacket(t, c); p[0] != 10 { // protocol version 10: a greeting
			t.Fatalf("connection %d: greeting %x", len(silent), p[:1])
		}
		silent = append(silent, c)
	}
	p := firstPacket(t, dial())
	if p[0] != 0xff || binary.LittleEndian.Uint16(p[1:]) != gm.ER_CON_COUNT_ERROR {
		t.Fatalf("connection over the bound: first packet %x, want error 1040", p[:min(len(p), 3)])
	}
	silent[0].Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if p := firstPacket(t, dial()); p[0] == 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a closed silent connection's slot was not given back")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
