package mysql

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	gm "github.com/go-mysql-org/go-mysql/mysql"
)

// The relay passes packets between a client and a site's server without
// translating them. It parses only what the proxy needs: where a command
// starts, where its response ends, and the status flags of the OK and EOF
// packets that end responses (a transaction open or not). That is what
// admission needs (the master counts a command in until its response
// ends, and a transaction in until it ends, so that a move's final
// snapshot waits for it, boundedly) and what a reconnect needs.

// codeNotServing is the error code of the ERR packet a master's tunnel
// end sends in place of a response when the site stopped being served
// there before the command was sent to its server (the command did not
// run). It never reaches a client: the entry node's relay takes it.
const codeNotServing = 0xfffe

// Relay outcomes other than I/O errors.
var (
	// errNotAdmitted: the command in relay.held was not sent; the site is
	// not served by this server any more.
	errNotAdmitted = errors.New("mysql: site no longer served by this master")
	// errQuit: the client ended the session (COM_QUIT).
	errQuit = errors.New("mysql: client quit")
)

// errClient wraps a failure on the client's side of the relay.
type errClient struct{ err error }

func (e errClient) Error() string { return "client: " + e.err.Error() }
func (e errClient) Unwrap() error { return e.err }

// errServer wraps a failure on the server's side; sent tells whether the
// command had reached the server.
type errServer struct {
	err  error
	sent bool
}

func (e errServer) Error() string { return "server: " + e.err.Error() }
func (e errServer) Unwrap() error { return e.err }

type relay struct {
	cr *bufio.Reader
	cw *bufio.Writer
	be *backend
	// admission, when set, counts a command in before it goes to the
	// server, and its transaction until it ends (Enter with a command or
	// transaction held does nothing); false: errNotAdmitted.
	admission Admission
	// tunnel: the server side is a master's tunnel end, whose
	// codeNotServing answers mean errNotAdmitted.
	tunnel bool
	// stale, when set, reports that the server side is gone (its server
	// exited): a command is not sent there (errNotAdmitted).
	stale func() bool
	// forwarded: part of the current command's response reached the client.
	forwarded bool
	// failed: the current command's response was an error.
	failed bool
	// session is what a reconnect restores (session.go).
	session session

	status uint16
	// held is the command not sent when run returned errNotAdmitted (a
	// copy; nil if it was too long to keep).
	held []byte
	// heldSeq is the sequence number of the last command read (of its
	// first segment); lastSeq, of its last segment read, which an answer
	// follows.
	heldSeq, lastSeq byte
	heldBuf          []byte

	cbuf, sbuf []byte

	// client is the client's connection when it is a plain socket, which
	// the event loops (loops, nil: none) can then relay (loop.go); lp is
	// the relay's state there.
	client net.Conn
	loops  *eventLoops
	lp     *loopSession
	// rewrite, when set, may change the next server packet before it is
	// forwarded (a prepared statement's id).
	rewrite func([]byte)
}

// releaseAdmission ends the admission held, if any.
func (r *relay) releaseAdmission() {
	if r.admission != nil {
		r.admission.Leave()
	}
}

// inTransaction reports whether the server said a transaction is open.
func (r *relay) inTransaction() bool { return r.status&gm.SERVER_STATUS_IN_TRANS != 0 }

// heldCommandMax bounds the command kept to be sent again after a move
// (one segment; a longer one, e.g. a huge INSERT, gets an error at a move).
const heldCommandMax = segmentMax

// run relays commands until the client quits or something fails.
func (r *relay) run() error {
	defer r.releaseAdmission()
	back := false
	for {
		// A session the loop handed back runs one command here first
		// (the one the loop did not take).
		if !back && r.loopReady() {
			if err := r.cw.Flush(); err != nil {
				return errClient{err}
			}
			if err := r.inLoop(); err != nil {
				return err
			}
			back = true
			continue
		}
		back = false
		if err := r.step(); err != nil {
			return err
		}
	}
}

// step sends the client what is buffered for it (the last answer), then
// reads the next command and relays it and its answer.
func (r *relay) step() error {
	if err := r.cw.Flush(); err != nil {
		return errClient{err}
	}
	p, buf, err := readPacket(r.cr, r.cbuf)
	r.cbuf = buf
	if err != nil {
		return errClient{err}
	}
	return r.command(p)
}

// command relays one command and its response.
func (r *relay) command(p packet) error {
	if len(p.payload) == 0 {
		return errClient{errors.New("empty command")}
	}
	cmd := p.payload[0]
	r.heldSeq, r.lastSeq = p.seq, p.seq
	switch cmd {
	case comQuit:
		return errQuit
	case comChangeUser, comBinlogDump, comBinlogDumpGTID, 0x15: // 0x15: COM_REGISTER_SLAVE
		// A change of user would take the session to another site's
		// server; replication is not offered to sites' users.
		e := gm.NewError(gm.ER_NOT_SUPPORTED_YET, "this command is not supported by the hybridcluster proxy")
		if err := writePacket(r.cw, p.seq+1, errPayload(e)); err != nil {
			return errClient{err}
		}
		return nil
	}
	// Kept until its response ends: a command the server side refuses
	// unsent goes to the site's next server.
	r.hold(p)
	if r.admission != nil && !r.admission.Enter(context.Background()) {
		return r.notSent(p, errNotAdmitted)
	}
	if r.stale != nil && r.stale() {
		return r.notSent(p, errNotAdmitted)
	}
	r.session.before(p.payload)
	p.payload = r.session.toServer(p.payload)
	r.forwarded, r.failed = false, false
	if err := r.send(p); err != nil {
		return err
	}
	if err := r.response(cmd); err != nil {
		return err
	}
	r.held = nil
	r.session.after(!r.failed)
	if !r.inTransaction() {
		r.releaseAdmission()
	}
	return nil
}

func (r *relay) hold(p packet) {
	r.held, r.heldSeq = nil, p.seq
	if len(p.payload) < heldCommandMax {
		// heldBuf is reused: one copy per command, no allocation.
		r.heldBuf = append(r.heldBuf[:0], p.payload...)
		r.held = r.heldBuf
	}
}

// commandSkipMax bounds what the relay reads and drops of a command it
// does not send on (MariaDB's largest max_allowed_packet): past it the
// session ends without an answer.
const commandSkipMax = 1 << 30

// errCommandTooLong: a command not sent on was longer than commandSkipMax.
var errCommandTooLong = errors.New("mysql: command too long to skip")

// notSent reads and drops the rest of the command whose last segment read
// is last (a full segment: the client is still sending it), so that an
// answer to it can follow, then returns err.
func (r *relay) notSent(last packet, err error) error {
	total := len(last.payload)
	for len(last.payload) == segmentMax {
		if total > commandSkipMax {
			return errClient{errCommandTooLong}
		}
		p, buf, rerr := readPacket(r.cr, r.cbuf)
		r.cbuf = buf
		if rerr != nil {
			return errClient{rerr}
		}
		r.lastSeq, last = p.seq, p
		total += len(p.payload)
	}
	return err
}

// send forwards the command packet p (and its continuation segments).
func (r *relay) send(p packet) error {
	if err := writePacket(r.be.w, p.seq, p.payload); err != nil {
		return r.notSent(p, errServer{err, false})
	}
	for len(p.payload) == segmentMax {
		var err error
		var buf []byte
		p, buf, err = readPacket(r.cr, r.cbuf)
		r.cbuf = buf
		if err != nil {
			return errClient{err}
		}
		r.lastSeq = p.seq
		if err := writePacket(r.be.w, p.seq, p.payload); err != nil {
			return r.notSent(p, errServer{err, true})
		}
	}
	if err := r.be.w.Flush(); err != nil {
		return errServer{err, true}
	}
	return nil
}

// next reads one logical packet of the server's response, forwards it
// (every segment) to the client, and returns its first segment's payload
// (valid until the next call). The client's buffer is flushed whenever the
// server has nothing more buffered, so a slow response streams.
func (r *relay) next() ([]byte, error) {
	if r.be.r.Buffered() < 4 {
		if err := r.cw.Flush(); err != nil {
			return nil, errClient{err}
		}
	}
	p, buf, err := readPacket(r.be.r, r.sbuf)
	r.sbuf = buf
	if err != nil {
		return nil, errServer{err, true}
	}
	if r.rewrite != nil {
		r.rewrite(p.payload)
		r.rewrite = nil
	}
	r.forwarded = true
	if err := writePacket(r.cw, p.seq, p.payload); err != nil {
		return nil, errClient{err}
	}
	first := p.payload
	if len(first) == segmentMax {
		first = append([]byte(nil), first[:16]...)
		for long := true; long; {
			q, _, err := readPacket(r.be.r, nil)
			if err != nil {
				return nil, errServer{err, true}
			}
			if err := writePacket(r.cw, q.seq, q.payload); err != nil {
				return nil, errClient{err}
			}
			long = len(q.payload) == segmentMax
		}
	}
	if len(first) == 0 {
		return nil, errServer{errors.New("empty packet in a response"), true}
	}
	return first, nil
}

// first reads the first packet of a response; on a tunnel, a
// codeNotServing error is taken (not forwarded) as errNotAdmitted.
func (r *relay) first() ([]byte, error) {
	if r.tunnel {
		if b, err := r.be.r.Peek(7); err == nil && b[4] == 0xff && binary.LittleEndian.Uint16(b[5:]) == codeNotServing {
			_, _, _ = readPacket(r.be.r, nil)
			return nil, errNotAdmitted
		}
	}
	return r.next()
}

func (r *relay) response(cmd byte) error {
	switch cmd {
	case comStmtSendLongData, comStmtClose:
		return nil
	case comQuery:
		return r.results(false)
	case comStmtExecute:
		return r.results(true)
	case comStmtPrepare:
		return r.prepared()
	}
	p, err := r.first()
	if err != nil {
		return err
	}
	switch cmd {
	case comFieldList, comStmtFetch:
		// Column definitions or rows, until EOF or ERR.
		for p[0] != 0xff && !isEOF(p) {
			if p, err = r.next(); err != nil {
				return err
			}
		}
		if isEOF(p) {
			r.statusFromEOF(p)
		}
		return nil
	case comStatistics:
		return nil // a plain string
	}
	switch {
	case p[0] == 0x00:
		r.statusFromOK(p)
	case isEOF(p):
		r.statusFromEOF(p)
	case p[0] == 0xff:
		r.failed = true
	}
	return nil
}

func (r *relay) statusFromOK(p []byte) {
	if st, ok := okStatus(p); ok {
		r.status = st
	}
}

func (r *relay) statusFromEOF(p []byte) {
	if st, ok := eofStatus(p); ok {
		r.status = st
	}
}

// results relays the response to a query or an executed statement: OK,
// ERR, a LOCAL INFILE request, or result sets, possibly several.
func (r *relay) results(binaryRows bool) error {
	p, err := r.first()
	for {
		if err != nil {
			return err
		}
		switch {
		case p[0] == 0x00:
			r.statusFromOK(p)
			if r.status&gm.SERVER_MORE_RESULTS_EXISTS == 0 {
				return nil
			}
		case p[0] == 0xff:
			r.failed = true
			return nil
		case p[0] == 0xfb:
			if err := r.localInfile(); err != nil {
				return err
			}
		default:
			more, err := r.resultSet(p, binaryRows)
			if err != nil || !more {
				return err
			}
		}
		p, err = r.next()
	}
}

// resultSet relays one result set whose column count packet p was
// relayed; more: another result follows.
func (r *relay) resultSet(p []byte, binaryRows bool) (more bool, err error) {
	n, _, ok := lenenc(p, 0)
	if !ok {
		return false, errServer{fmt.Errorf("bad column count packet"), true}
	}
	for range n {
		if _, err := r.next(); err != nil {
			return false, err
		}
	}
	if p, err = r.next(); err != nil {
		return false, err
	}
	if !isEOF(p) {
		return false, errServer{fmt.Errorf("no EOF after column definitions"), true}
	}
	r.statusFromEOF(p)
	if binaryRows && r.status&gm.SERVER_STATUS_CURSOR_EXISTS != 0 {
		return false, nil // rows come with COM_STMT_FETCH
	}
	for {
		if p, err = r.next(); err != nil {
			return false, err
		}
		if p[0] == 0xff {
			r.failed = true
			return false, nil
		}
		if isEOF(p) {
			r.statusFromEOF(p)
			return r.status&gm.SERVER_MORE_RESULTS_EXISTS != 0, nil
		}
	}
}

// prepared relays the answer to COM_STMT_PREPARE.
func (r *relay) prepared() error {
	r.rewrite = r.session.preparedID
	p, err := r.first()
	r.rewrite = nil
	if err != nil {
		return err
	}
	if p[0] == 0xff {
		r.failed = true
		return nil
	}
	if p[0] != 0x00 || len(p) < 9 {
		return errServer{fmt.Errorf("bad prepare answer"), true}
	}
	columns := int(binary.LittleEndian.Uint16(p[5:]))
	params := int(binary.LittleEndian.Uint16(p[7:]))
	for _, n := range []int{params, columns} {
		if n == 0 {
			continue
		}
		for range n + 1 { // definitions and their EOF
			if _, err := r.next(); err != nil {
				return err
			}
		}
	}
	return nil
}

// localInfile relays a LOAD DATA LOCAL INFILE's file, which the client
// sends after the server asked for it, up to an empty packet.
func (r *relay) localInfile() error {
	if err := r.cw.Flush(); err != nil {
		return errClient{err}
	}
	for {
		p, buf, err := readPacket(r.cr, r.cbuf)
		r.cbuf = buf
		if err != nil {
			return errClient{err}
		}
		if err := writePacket(r.be.w, p.seq, p.payload); err != nil {
			return errServer{err, true}
		}
		if len(p.payload) == 0 {
			break
		}
	}
	if err := r.be.w.Flush(); err != nil {
		return errServer{err, true}
	}
	return nil
}

// resend relays the held command (after a reconnect).
func (r *relay) resend() error {
	// A copy: command keeps the client's bytes in heldBuf while the
	// statement id in the sent ones is mapped.
	return r.command(packet{seq: r.heldSeq, payload: append([]byte(nil), r.held...)})
}

// execInternal runs one command of the proxy's own on the server side;
// the answer does not reach the client. ok: not an error.
func (r *relay) execInternal(payload []byte) (ok bool, err error) {
	cw, ids := r.cw, r.session.serverID
	r.cw, r.session.serverID = bufio.NewWriterSize(discard{}, 512), nil
	defer func() { r.cw, r.session.serverID = cw, ids }()
	r.failed = false
	if err := r.send(packet{seq: 0, payload: payload}); err != nil {
		return false, err
	}
	if err := r.response(payload[0]); err != nil {
		return false, err
	}
	return !r.failed, nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// restore replays the session's state on a new server (session.go).
func (r *relay) restore(autocommit bool) error {
	for _, q := range r.session.sets {
		ok, err := r.execInternal(append([]byte{comQuery}, q...))
		if err != nil || !ok {
			return fmt.Errorf("replaying %.60q: %v", q, err)
		}
	}
	if !autocommit {
		if ok, err := r.execInternal(append([]byte{comQuery}, "SET autocommit=0"...)); err != nil || !ok {
			return fmt.Errorf("autocommit: %v", err)
		}
	}
	ids := map[uint32]uint32{}
	next := r.session.nextClientID
	for id, st := range r.session.stmts {
		ok, err := r.execInternal(append([]byte{comStmtPrepare}, st.sql...))
		if err != nil || !ok {
			return fmt.Errorf("preparing %.60q again: %v", st.sql, err)
		}
		ids[id] = r.session.preparedServer
		st.typesOwed = st.params > 0
		next = max(next, id+1)
	}
	r.session.serverID, r.session.nextClientID = ids, next
	return nil
}

// lastWordWaitMax bounds the wait for the error a server sends as it
// closes a session (e.g. 1153 for a packet over its max_allowed_packet),
// after its side of the relay failed.
const lastWordWaitMax = 250 * time.Millisecond

// lastWordMax bounds that error packet.
const lastWordMax = 4 << 10

// serverLastWord forwards, as the answer to the command in flight, the
// error packet the server sent before its side failed, if there is one and
// nothing of an answer went out yet. A tunnel's codeNotServing is not one.
func (r *relay) serverLastWord() bool {
	if r.forwarded || r.be == nil {
		return false
	}
	_ = r.be.conn.SetReadDeadline(time.Now().Add(lastWordWaitMax))
	h, err := r.be.r.Peek(7)
	if err != nil || h[4] != 0xff || int(h[0])|int(h[1])<<8|int(h[2])<<16 > lastWordMax {
		return false
	}
	if binary.LittleEndian.Uint16(h[5:]) == codeNotServing {
		return false
	}
	p, _, err := readPacket(r.be.r, nil)
	if err != nil {
		return false
	}
	if writePacket(r.cw, r.lastSeq+1, p.payload) != nil {
		return false
	}
	return r.cw.Flush() == nil
}
