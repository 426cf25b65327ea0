package mysql

import (
	"bufio"
	"bytes"
	"io"
	"math/rand/v2"
	"testing"

	gm "github.com/go-mysql-org/go-mysql/mysql"
)

// TestAnswerScanAgreesWithRelay: the event loop's scan of an answer
// (answer.go) finds the end the blocking relay finds, with the same
// status and failure, however the bytes arrive in pieces.
func TestAnswerScanAgreesWithRelay(t *testing.T) {
	okMore := []byte{0, 1, 0, byte(gm.SERVER_MORE_RESULTS_EXISTS | gm.SERVER_STATUS_AUTOCOMMIT), 0, 0, 0}
	okInTrans := []byte{0, 0, 0, byte(gm.SERVER_STATUS_IN_TRANS), 0, 0, 0}
	eofMore := []byte{0xfe, 0, 0, byte(gm.SERVER_MORE_RESULTS_EXISTS), 0}
	eof := []byte{0xfe, 0, 0, byte(gm.SERVER_STATUS_AUTOCOMMIT), 0}
	column := appendLenencString(nil, "def")
	longRow := make([]byte, segmentMax) // a row that continues in a second segment
	longRow[0] = 0xfc
	var tail = []byte("the row's last bytes")
	cases := []struct {
		name    string
		cmd     byte
		answer  []byte
		failed  bool
		status  uint16
		trailer bool // bytes of a next answer follow (not this one's)
	}{
		{"point select", comQuery, pointSelectAnswer(false), false, gm.SERVER_STATUS_AUTOCOMMIT, true},
		{"execute", comStmtExecute, pointSelectAnswer(true), false, gm.SERVER_STATUS_AUTOCOMMIT, false},
		{"ok in a transaction", comQuery, appendPacket(nil, 1, okInTrans), false, gm.SERVER_STATUS_IN_TRANS, true},
		{"error", comQuery, appendPacket(nil, 1, errPayload(gm.NewError(1062, "dup"))), true, 0, false},
		{"ping", comPing, appendPacket(nil, 1, okPayload(gm.SERVER_STATUS_AUTOCOMMIT)), false, gm.SERVER_STATUS_AUTOCOMMIT, true},
		{"multi results", comQuery, func() []byte {
			b := appendPacket(nil, 1, okMore)
			b = appendPacket(b, 2, []byte{1})
			b = appendPacket(b, 3, column)
			b = appendPacket(b, 4, eof)
			b = appendPacket(b, 5, appendLenencString(nil, "row"))
			b = appendPacket(b, 6, eofMore)
			return appendPacket(b, 7, okPayload(gm.SERVER_STATUS_AUTOCOMMIT))
		}(), false, gm.SERVER_STATUS_AUTOCOMMIT, true},
		{"error in rows", comQuery, func() []byte {
			b := appendPacket(nil, 1, []byte{1})
			b = appendPacket(b, 2, column)
			b = appendPacket(b, 3, eof)
			return appendPacket(b, 4, errPayload(gm.NewError(1317, "interrupted")))
		}(), true, gm.SERVER_STATUS_AUTOCOMMIT, true},
		{"long row", comQuery, func() []byte {
			b := appendPacket(nil, 1, []byte{1})
			b = appendPacket(b, 2, column)
			b = appendPacket(b, 3, eof)
			b = appendPacket(b, 4, longRow)
			b = appendPacket(b, 5, tail)
			return appendPacket(b, 6, eof)
		}(), false, gm.SERVER_STATUS_AUTOCOMMIT, false},
	}
	next := appendPacket(nil, 1, okPayload(0))
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range cases {
		stream := tc.answer
		if tc.trailer {
			stream = append(append([]byte(nil), tc.answer...), next...)
		}
		// The blocking relay's reading.
		want := &relay{cw: bufio.NewWriter(io.Discard), be: &backend{r: bufio.NewReader(bytes.NewReader(stream))}}
		if err := want.response(tc.cmd); err != nil {
			t.Fatalf("%s: relay: %v", tc.name, err)
		}
		if want.failed != tc.failed || want.status != tc.status {
			t.Fatalf("%s: relay read failed=%v status=%#x, want %v %#x", tc.name, want.failed, want.status, tc.failed, tc.status)
		}
		for round := range 20 {
			r := &relay{}
			var s answerScan
			s.reset(r, tc.cmd)
			start, end := 0, 0 // stream[start:end] was given and not taken
			for !s.done() && end < len(stream) {
				n := 1 + rng.IntN(64<<10)
				if round == 0 {
					n = 1 // byte by byte
					if len(stream) > 1<<20 {
						n = 1000
					}
				}
				end = min(end+n, len(stream))
				took, err := s.scan(stream[start:end])
				if err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				start += took
			}
			if !s.done() || start != len(tc.answer) {
				t.Fatalf("%s round %d: scan ended at %d (done %v), want %d", tc.name, round, start, s.done(), len(tc.answer))
			}
			if r.failed != tc.failed || r.status != tc.status {
				t.Fatalf("%s: scan read failed=%v status=%#x, want %v %#x", tc.name, r.failed, r.status, tc.failed, tc.status)
			}
		}
	}
}
