package mysql

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"syscall"
)

// The event loop relays the common commands of sessions whose client and
// server are both plain sockets on this node (a client of the master's own
// front end without TLS, or another node's tunnel, to the site's server):
// text queries, executions of prepared statements, pings and statement
// closes. A profile of the front under load showed its CPU per
// query going mostly to Go's netpoller and scheduler (two goroutine
// parks and wake-ups per query, a failed read before each park), not to
// the relay's own work; the loop waits for all its sessions with one
// epoll set, as HAProxy does, and reads and writes each socket only when
// it is ready: one read and one write per command and per answer.
//
// Everything else (logins, other commands, LOCAL INFILE, commands longer
// than the loop's buffer, a server side that went away, reconnects after a
// move) stays with the session's goroutine and the blocking relay
// (relay.go): the loop hands the session back, with the bytes it has read
// and not relayed, at a command boundary, or with the error that ended it.
// Both paths keep the same state in the relay (admission, transaction
// status, session state to restore, the held command).

// loopBufferSize is each direction's buffer of a session in the loop; a
// command longer than this goes to the session's goroutine, and an answer
// longer than this is relayed in pieces of this size.
const loopBufferSize = 16 << 10

// cancelled is the context of admissions from the loop: the loop must
// not wait (a site not started yet), so such a command goes back to the
// session's goroutine, which waits.
var cancelled = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// pendingReader reads the bytes the loop had read and not relayed when it
// handed its session back, then the connection.
type pendingReader struct {
	conn    net.Conn
	pending []byte
}

func (p *pendingReader) Read(b []byte) (int, error) {
	if len(p.pending) > 0 {
		n := copy(b, p.pending)
		p.pending = p.pending[n:]
		return n, nil
	}
	return p.conn.Read(b)
}

// loopSession is a relay's state for the loop (kept across its turns).
type loopSession struct {
	clientRaw syscall.RawConn
	client    *pendingReader
	// be is the backend the fields below are for (a reconnect makes
	// another).
	be        *backend
	serverRaw syscall.RawConn
	server    *pendingReader

	r         *relay // while in a loop
	l         *eventLoop
	slot      int32
	cfd, sfd  int
	cin       []byte // client bytes read, not yet relayed: cin[:cinN]
	cinN      int
	sin       []byte // server bytes read: sin[:sinN]
	sinN      int
	scanned   int // sin[:scanned] belongs to the answer
	written   int // sin[:written] went to the client
	cmdOut    []byte
	awaiting  bool // a command went to the server; its answer is relayed
	cReadable bool
	sReadable bool
	// cWatch, sWatch: the loop asks for room to write on the client's,
	// the server's socket.
	cWatch, sWatch bool
	answer         answerScan
	done           chan error
	budget         int // bytes this turn may still relay
	handedBack     bool
	backErr        error
}

// loopReady reports whether the relay can go into an event loop now (and
// prepares it to).
func (r *relay) loopReady() bool {
	lp := r.lp
	if lp == nil || r.loops == nil || r.be == nil || r.rewrite != nil {
		return false
	}
	if lp.client == nil {
		if r.cr.Buffered() != 0 {
			return false
		}
		lp.client = &pendingReader{conn: r.client}
		r.cr = bufio.NewReaderSize(lp.client, 16<<10)
	}
	if lp.be != r.be {
		sc, ok := r.be.conn.(syscall.Conn)
		if !ok || r.be.r.Buffered() != 0 {
			return false
		}
		raw, err := sc.SyscallConn()
		if err != nil {
			return false
		}
		lp.be, lp.serverRaw, lp.server = r.be, raw, &pendingReader{conn: r.be.conn}
		r.be.r = bufio.NewReaderSize(lp.server, 16<<10)
	}
	return r.cr.Buffered() == 0 && len(lp.client.pending) == 0 && r.be.r.Buffered() == 0 && len(lp.server.pending) == 0
}

// inLoop relays in an event loop until the loop hands the session back:
// nil to go on in this goroutine (the next command is for it), or the
// error that ended the session's relay.
func (r *relay) inLoop() error {
	lp := r.lp
	var err error
	var ran bool
	cerr := lp.clientRaw.Control(func(cfd uintptr) {
		serr := lp.serverRaw.Control(func(sfd uintptr) {
			// Inside Control both descriptors stay open (a Close waits),
			// so the loop never uses a number the system gave to another
			// connection.
			ran, err = r.loops.serve(r, int(cfd), int(sfd))
		})
		if serr != nil && err == nil {
			err = errServer{serr, false}
		}
	})
	if cerr != nil && err == nil {
		err = errClient{cerr}
	}
	if !ran && err == nil {
		r.loops = nil // no loop (closed): the goroutine relays from now on
	}
	return err
}

// refusedByMaster reports whether the answer in b, of a command sent
// through a tunnel, starts with the master's codeNotServing error (the
// command did not run there: the session's goroutine sends it to the
// site's next master), and whether that packet is all in b.
func (r *relay) refusedByMaster(b []byte) (refused, whole bool) {
	if !r.tunnel || r.forwarded || len(b) < 7 || b[4] != 0xff || binary.LittleEndian.Uint16(b[5:]) != codeNotServing {
		return false, false
	}
	return true, len(b) >= 4+(int(b[0])|int(b[1])<<8|int(b[2])<<16)
}

// loopCommand reports whether the loop relays the command p: the common
// commands whose answers answerScan follows. A query that may be LOAD
// DATA LOCAL INFILE (the server would ask the client for a file) is left
// to the blocking relay.
func loopCommand(p []byte) bool {
	switch p[0] {
	case comStmtExecute, comPing, comStmtClose:
		return true
	case comQuery:
		return !containsFold(p[1:], "infile")
	}
	return false
}

// containsFold reports whether s contains the lower-case ASCII word w in
// any case.
func containsFold(s []byte, w string) bool {
	for i := 0; i+len(w) <= len(s); i++ {
		if s[i]|0x20 == w[0] && bytes.EqualFold(s[i:i+len(w)], []byte(w)) {
			return true
		}
	}
	return false
}
