package mysql

import (
	"errors"

	gm "github.com/go-mysql-org/go-mysql/mysql"
)

// answerScan follows a server's answer to one command through the bytes
// as they arrive, without copying them, to find where the answer ends: the
// event loop (loop_linux.go) forwards bytes as they come and needs only
// the packet boundaries and the first bytes of each packet. It reads what
// relay.results and relay.response read (status flags, errors) into the
// relay, so that both paths leave a session in the same state.
type answerScan struct {
	r          *relay
	binaryRows bool
	state      answerState
	columns    uint64 // column definitions still to come
	// skip is how many bytes of the current packet are still to pass.
	skip int
	// more: the current logical packet continues in the next segment.
	more bool
}

type answerState uint8

const (
	answerFirst      answerState = iota // OK, ERR or a result set's column count
	answerColumns                       // column definitions
	answerColumnsEOF                    // the EOF after them
	answerRows                          // rows up to EOF or ERR
	answerOne                           // a single OK, EOF or ERR packet (COM_PING)
	answerDone
)

// answerPrefixMax is how much of a packet's start the scan looks at: an
// OK packet's status flags come after two length-encoded integers (at most
// 1+9+9 bytes).
const answerPrefixMax = 1 + 9 + 9 + 2

// reset starts the scan of the answer to cmd.
func (s *answerScan) reset(r *relay, cmd byte) {
	*s = answerScan{r: r, binaryRows: cmd == comStmtExecute}
	switch cmd {
	case comQuery, comStmtExecute:
		s.state = answerFirst
	case comStmtClose:
		s.state = answerDone
	default:
		s.state = answerOne
	}
}

func (s *answerScan) done() bool { return s.state == answerDone }

// scan reads b, the next bytes of the stream, and returns how many belong
// to the answer: all of b while it goes on, fewer when it ended or when a
// packet's start is not all there yet (the caller keeps the rest and calls
// again with it and what follows).
func (s *answerScan) scan(b []byte) (int, error) {
	pos := 0
	for s.state != answerDone || s.skip > 0 || s.more {
		if s.skip > 0 {
			n := min(s.skip, len(b)-pos)
			pos += n
			s.skip -= n
			if s.skip > 0 {
				return pos, nil
			}
			continue
		}
		if len(b)-pos < 4 {
			return pos, nil
		}
		n := int(b[pos]) | int(b[pos+1])<<8 | int(b[pos+2])<<16
		if s.more {
			// A continuation segment: nothing in it to look at.
			s.more = n == segmentMax
			pos, s.skip = pos+4, n
			continue
		}
		prefix := min(n, answerPrefixMax)
		if len(b)-pos < 4+prefix {
			return pos, nil
		}
		if n == 0 {
			return pos, errServer{errors.New("empty packet in a response"), true}
		}
		if err := s.packet(b[pos+4:pos+4+prefix], n); err != nil {
			return pos, err
		}
		s.more = n == segmentMax
		pos, s.skip = pos+4, n
	}
	return pos, nil
}

// packet looks at the start p of a packet whose payload is n bytes long.
func (s *answerScan) packet(p []byte, n int) error {
	r := s.r
	eof := p[0] == 0xfe && n < 9
	switch s.state {
	case answerOne:
		switch {
		case p[0] == 0x00:
			r.statusFromOK(p)
		case eof:
			r.statusFromEOF(p)
		case p[0] == 0xff:
			r.failed = true
		}
		s.state = answerDone
	case answerFirst:
		switch {
		case p[0] == 0x00:
			r.statusFromOK(p)
			if r.status&gm.SERVER_MORE_RESULTS_EXISTS == 0 {
				s.state = answerDone
			}
		case p[0] == 0xff:
			r.failed = true
			s.state = answerDone
		case p[0] == 0xfb:
			// LOAD DATA LOCAL INFILE: the loop does not take such queries
			// (loopCommand); the server asking for a file here is a
			// protocol error for this path.
			return errServer{errors.New("unexpected LOCAL INFILE request"), true}
		default:
			c, _, ok := lenenc(p, 0)
			if !ok || c == 0 || c >= 1<<32 {
				return errServer{errors.New("bad column count packet"), true}
			}
			s.columns, s.state = c, answerColumns
		}
	case answerColumns:
		s.columns--
		if s.columns == 0 {
			s.state = answerColumnsEOF
		}
	case answerColumnsEOF:
		if !eof {
			return errServer{errors.New("no EOF after column definitions"), true}
		}
		r.statusFromEOF(p)
		s.state = answerRows
		if s.binaryRows && r.status&gm.SERVER_STATUS_CURSOR_EXISTS != 0 {
			s.state = answerDone // rows come with COM_STMT_FETCH
		}
	case answerRows:
		switch {
		case p[0] == 0xff:
			r.failed = true
			s.state = answerDone
		case eof:
			r.statusFromEOF(p)
			s.state = answerDone
			if r.status&gm.SERVER_MORE_RESULTS_EXISTS != 0 {
				s.state = answerFirst
			}
		}
	}
	return nil
}
