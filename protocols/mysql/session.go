package mysql

import (
	"bytes"
	"encoding/binary"
	"slices"
	"strings"
)

// session is what a session's reconnect to the site's next server must
// restore, learnt from the client's commands as they succeed:
//
//   - the current database (COM_INIT_DB, USE);
//   - SET statements (character set, session variables, user variables,
//     autocommit; SET TRANSACTION without SESSION is for one transaction
//     and is not kept), replayed in their order;
//   - autocommit, from the server's status flags;
//   - prepared statements (their SQL), prepared again: the client keeps
//     its statement ids, which the relay maps to the new server's. A
//     client sends a statement's parameter types with its first execute
//     only (libmysqlclient does); the new server has not seen them, so
//     the first execute there gets the types the client last sent.
//
// Not restored: temporary tables, locks (LOCK TABLES, GET_LOCK), an open
// transaction (a session inside one is not moved: see front.go), long
// data sent for a statement not executed yet (such a session is not
// moved either), and state changed inside stored programs. A session whose SET statements exceed
// sessionStatementsMax cannot be restored: a move ends it with an error.
type session struct {
	db   string
	sets []string
	// broken: a SET was not kept (bound); a reconnect fails.
	broken bool
	// longData: COM_STMT_SEND_LONG_DATA went to the server since the
	// last execute, reset or close answered; a reconnect fails (the new
	// server would execute without it).
	longData bool
	// stmts: the prepared statements by client statement id.
	stmts map[uint32]*stmt
	// serverID maps client statement ids to the server's, once a
	// reconnect made them differ (nil before: ids pass unchanged).
	serverID map[uint32]uint32
	// nextClientID is the next id given to the client once ids are mapped.
	nextClientID uint32

	// The command being relayed.
	pendingDB      *string
	pendingSet     string
	pendingPrepare string
	preparedClient uint32 // the id the client got for pendingPrepare
	preparedServer uint32
	preparedParams int
	reset          bool
	longDataUsed   bool
	// withTypes holds an execute with the parameter types put in.
	withTypes []byte
}

// stmt is a prepared statement, as a reconnect prepares it again.
type stmt struct {
	sql    string
	params int
	// types are the parameter types (2 bytes each) the client last sent;
	// typesOwed: the server prepared the statement again and has not
	// received them yet.
	types     []byte
	typesOwed bool
}

// sessionStatementsMax bounds the SET statements a session keeps for a
// reconnect (each at most sessionStatementBytesMax). Beyond, the session
// cannot be moved: a move ends it with error 1927.
const (
	sessionStatementsMax     = 64
	sessionStatementBytesMax = 4 << 10
	// sessionStatementsTotalMax bounds the prepared statements kept.
	sessionPreparedMax = 1024
)

// before looks at a command about to be sent (payload: the client's).
func (s *session) before(p []byte) {
	s.pendingDB, s.pendingSet, s.pendingPrepare, s.reset, s.longDataUsed = nil, "", "", false, false
	switch p[0] {
	case comStmtSendLongData:
		s.longData = true // it has no answer: it counts as sent now
	case comStmtReset:
		s.longDataUsed = true
	case comInitDB:
		db := string(p[1:])
		s.pendingDB = &db
	case comQuery:
		// Most queries are neither: looked at without copying them.
		q := bytes.TrimLeft(p[1:], " \t\r\n")
		switch {
		case keyword(q, "use"):
			if db, ok := parseUse(string(q[3:])); ok {
				s.pendingDB = &db
			}
		case keyword(q, "set"):
			rest := bytes.TrimLeft(q[3:], " \t\r\n")
			if !keyword(rest, "transaction") {
				s.pendingSet = string(q)
			}
		}
	case comStmtPrepare:
		s.pendingPrepare = string(p[1:])
	case comStmtExecute:
		s.longDataUsed = true
		if st, at := s.executed(p); st != nil && p[at] == 1 {
			st.types = append(st.types[:0], p[at+1:at+1+2*st.params]...)
		}
	case comStmtClose:
		s.longDataUsed = true
		if len(p) >= 5 {
			delete(s.stmts, binary.LittleEndian.Uint32(p[1:]))
		}
	case comResetConnection:
		s.reset, s.longDataUsed = true, true
	}
}

// executed finds the statement a COM_STMT_EXECUTE (p, the client's) runs
// and where its new-parameters-bound flag is (the types follow it); nil:
// unknown, without parameters, or too short to hold the types.
func (s *session) executed(p []byte) (*stmt, int) {
	if len(p) < 5 {
		return nil, 0
	}
	st := s.stmts[binary.LittleEndian.Uint32(p[1:])]
	if st == nil || st.params == 0 {
		return nil, 0
	}
	at := 10 + (st.params+7)/8 // command, id, flags, iteration count, null bitmap
	if len(p) < at+1+2*st.params {
		return nil, 0
	}
	return st, at
}

// grows reports whether toServer would put parameter types into the
// command p (so that it cannot be changed in place).
func (s *session) grows(p []byte) bool {
	if s.serverID == nil {
		return false
	}
	st, at := s.executed(p)
	return st != nil && st.typesOwed && p[at] == 0 && len(st.types) == 2*st.params && len(p)+len(st.types) < segmentMax
}

// toServer maps a statement id in the command to the server's, and puts
// the parameter types a server owes into an execute that does not carry
// them (in place, or in a buffer of the session's: the relay keeps the
// client's copy). It returns the command to send.
func (s *session) toServer(p []byte) []byte {
	if s.serverID == nil || len(p) < 5 {
		return p
	}
	if st, at := s.executed(p); st != nil && st.typesOwed {
		if s.grows(p) {
			s.withTypes = append(append(append(append(s.withTypes[:0], p[:at]...), 1), st.types...), p[at+1:]...)
			p = s.withTypes
		}
		st.typesOwed = false // this execute carries them
	}
	switch p[0] {
	case comStmtExecute, comStmtSendLongData, comStmtClose, comStmtReset, comStmtFetch:
		id := binary.LittleEndian.Uint32(p[1:])
		if sid, ok := s.serverID[id]; ok {
			binary.LittleEndian.PutUint32(p[1:], sid)
		} else {
			// Unknown to this server: an id no server has (error 1243).
			binary.LittleEndian.PutUint32(p[1:], 0xffffffff)
		}
		if p[0] == comStmtClose {
			delete(s.serverID, id)
		}
	}
	return p
}

// preparedID sees the first packet of a prepare's answer: it records the
// server's id and, once ids are mapped, gives the client its own.
func (s *session) preparedID(p []byte) {
	if len(p) < 5 || p[0] != 0x00 {
		return
	}
	sid := binary.LittleEndian.Uint32(p[1:])
	s.preparedServer, s.preparedClient, s.preparedParams = sid, sid, 0
	if len(p) >= 9 {
		s.preparedParams = int(binary.LittleEndian.Uint16(p[7:]))
	}
	if s.serverID != nil {
		s.preparedClient = s.nextClientID
		s.nextClientID++
		binary.LittleEndian.PutUint32(p[1:], s.preparedClient)
	}
}

// after records what a command changed, if it succeeded.
func (s *session) after(ok bool) {
	if s.longDataUsed {
		s.longData = false // answered, even with an error: the server let go of it
	}
	if !ok {
		return
	}
	if s.pendingDB != nil {
		s.db = *s.pendingDB
	}
	if s.pendingSet != "" {
		switch {
		case slices.Contains(s.sets, s.pendingSet):
		case len(s.sets) >= sessionStatementsMax || len(s.pendingSet) > sessionStatementBytesMax:
			s.broken = true
		default:
			s.sets = append(s.sets, s.pendingSet)
		}
	}
	if s.pendingPrepare != "" {
		if s.stmts == nil {
			s.stmts = map[uint32]*stmt{}
		}
		if len(s.stmts) >= sessionPreparedMax {
			s.broken = true
		}
		s.stmts[s.preparedClient] = &stmt{sql: s.pendingPrepare, params: s.preparedParams}
		if s.serverID != nil {
			s.serverID[s.preparedClient] = s.preparedServer
		}
	}
	if s.reset {
		s.sets, s.stmts, s.broken = nil, nil, false
		if s.serverID != nil {
			s.serverID = map[uint32]uint32{}
		}
	}
}

// keyword reports whether q starts with the keyword kw (any case)
// followed by a non-identifier character.
func keyword(q []byte, kw string) bool {
	if len(q) < len(kw) || !bytes.EqualFold(q[:len(kw)], []byte(kw)) {
		return false
	}
	if len(q) == len(kw) {
		return true
	}
	c := q[len(kw)]
	return !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9')
}

// parseUse reads the database name of "USE name" (after USE).
func parseUse(rest string) (string, bool) {
	rest = strings.TrimSpace(strings.TrimRight(strings.TrimSpace(rest), ";"))
	if strings.HasPrefix(rest, "`") && strings.HasSuffix(rest, "`") && len(rest) >= 2 {
		return strings.ReplaceAll(rest[1:len(rest)-1], "``", "`"), true
	}
	if rest == "" || strings.ContainsAny(rest, " \t\r\n;`'\"") {
		return "", false
	}
	return rest, true
}
