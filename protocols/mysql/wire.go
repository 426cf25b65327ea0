package mysql

import (
	"bufio"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	gm "github.com/go-mysql-org/go-mysql/mysql"
)

// segmentMax is the largest payload of one packet; a payload this long
// continues in the next packet. It also bounds the memory one relayed
// packet takes (a longer payload is forwarded segment by segment).
const segmentMax = 1<<24 - 1

// Commands (the first byte of a command packet).
const (
	comQuit             = 0x01
	comInitDB           = 0x02
	comQuery            = 0x03
	comFieldList        = 0x04
	comStatistics       = 0x09
	comPing             = 0x0e
	comProcessKill      = 0x0c
	comChangeUser       = 0x11
	comBinlogDump       = 0x12
	comStmtPrepare      = 0x16
	comStmtExecute      = 0x17
	comStmtSendLongData = 0x18
	comStmtClose        = 0x19
	comStmtReset        = 0x1a
	comSetOption        = 0x1b
	comStmtFetch        = 0x1c
	comBinlogDumpGTID   = 0x1e
	comResetConnection  = 0x1f
)

// packet is one packet as read: header (length, sequence) and payload.
type packet struct {
	seq     byte
	payload []byte
}

// readPacket reads one packet. Its payload is in r's buffer when it fits
// there (valid until r's next read; nothing is copied or allocated), in buf
// (grown as needed) otherwise.
func readPacket(r *bufio.Reader, buf []byte) (packet, []byte, error) {
	h, err := r.Peek(4)
	if err != nil {
		if err == io.EOF && len(h) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return packet{}, buf, err
	}
	n := int(h[0]) | int(h[1])<<8 | int(h[2])<<16
	seq := h[3]
	if 4+n <= r.Size() {
		// The whole packet fits in the reader's buffer: Peek waits for it.
		b, err := r.Peek(4 + n)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return packet{}, buf, err
		}
		_, _ = r.Discard(4 + n)
		return packet{seq: seq, payload: b[4:]}, buf, nil
	}
	_, _ = r.Discard(4)
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return packet{}, buf, err
	}
	return packet{seq: seq, payload: buf}, buf, nil
}

// writePacket writes one packet (payload at most segmentMax).
func writePacket(w *bufio.Writer, seq byte, payload []byte) error {
	n := len(payload)
	if n > segmentMax {
		return fmt.Errorf("mysql: packet of %d bytes", n)
	}
	// The header goes straight into w's buffer: a header of its own would
	// be allocated for every packet (Write may hand it to the connection).
	if w.Available() < 4 {
		if err := w.Flush(); err != nil {
			return err
		}
	}
	_, err := w.Write(append(w.AvailableBuffer(), byte(n), byte(n>>8), byte(n>>16), seq))
	if err != nil {
		return err
	}
	_, err = w.Write(payload)
	return err
}

// lenenc reads a length-encoded integer at b[pos:].
func lenenc(b []byte, pos int) (v uint64, next int, ok bool) {
	if pos >= len(b) {
		return 0, pos, false
	}
	switch c := b[pos]; {
	case c < 0xfb:
		return uint64(c), pos + 1, true
	case c == 0xfc && pos+3 <= len(b):
		return uint64(binary.LittleEndian.Uint16(b[pos+1:])), pos + 3, true
	case c == 0xfd && pos+4 <= len(b):
		return uint64(b[pos+1]) | uint64(b[pos+2])<<8 | uint64(b[pos+3])<<16, pos + 4, true
	case c == 0xfe && pos+9 <= len(b):
		return binary.LittleEndian.Uint64(b[pos+1:]), pos + 9, true
	}
	return 0, pos, false
}

func appendLenenc(b []byte, v uint64) []byte {
	switch {
	case v < 0xfb:
		return append(b, byte(v))
	case v <= 0xffff:
		return append(b, 0xfc, byte(v), byte(v>>8))
	case v <= 0xffffff:
		return append(b, 0xfd, byte(v), byte(v>>8), byte(v>>16))
	}
	return binary.LittleEndian.AppendUint64(append(b, 0xfe), v)
}

// okStatus returns the status flags of an OK packet (0x00 or, as end of
// rows, 0xfe header).
func okStatus(p []byte) (uint16, bool) {
	_, pos, ok1 := lenenc(p, 1)
	_, pos, ok2 := lenenc(p, pos)
	if !ok1 || !ok2 || pos+2 > len(p) {
		return 0, false
	}
	return binary.LittleEndian.Uint16(p[pos:]), true
}

// eofStatus returns the status flags of an EOF packet.
func eofStatus(p []byte) (uint16, bool) {
	if len(p) < 5 {
		return 0, false
	}
	return binary.LittleEndian.Uint16(p[3:]), true
}

// isEOF: an EOF packet (a text row starting with 0xfe is 9 bytes or more).
func isEOF(p []byte) bool { return len(p) > 0 && p[0] == 0xfe && len(p) < 9 }

// errPayload builds an ERR packet's payload.
func errPayload(e *gm.MyError) []byte {
	b := []byte{0xff, byte(e.Code), byte(e.Code >> 8), '#'}
	state := e.State
	if len(state) != 5 {
		state = "HY000"
	}
	b = append(b, state...)
	return append(b, e.Message...)
}

// parseErr reads an ERR packet's payload.
func parseErr(p []byte) *gm.MyError {
	if len(p) < 3 || p[0] != 0xff {
		return gm.NewError(gm.ER_UNKNOWN_ERROR, "malformed error packet")
	}
	e := &gm.MyError{Code: binary.LittleEndian.Uint16(p[1:]), State: "HY000"}
	rest := p[3:]
	if len(rest) >= 6 && rest[0] == '#' {
		e.State, rest = string(rest[1:6]), rest[6:]
	}
	e.Message = string(rest)
	return e
}

// okPayload is a plain OK packet's payload.
func okPayload(status uint16) []byte {
	return []byte{0, 0, 0, byte(status), byte(status >> 8), 0, 0}
}

// nativeStage2 decodes a mysql_native_password hash ("*" + 40 hex digits)
// into SHA1(SHA1(password)).
func nativeStage2(hash string) ([]byte, error) {
	if len(hash) != 41 || hash[0] != '*' {
		return nil, errors.New("not a mysql_native_password hash")
	}
	return gm.DecodePasswordHex(hash)
}

// recoverStage1 checks a mysql_native_password answer to salt against
// the stored SHA1(SHA1(password)) and returns SHA1(password), which lets
// this proxy log in to the site's server with any other salt.
func recoverStage1(answer, salt, stage2 []byte) ([]byte, bool) {
	if len(answer) != sha1.Size || len(stage2) != sha1.Size {
		return nil, false
	}
	h := sha1.New()
	h.Write(salt)
	h.Write(stage2)
	stage1 := h.Sum(nil)
	for i := range stage1 {
		stage1[i] ^= answer[i]
	}
	check := sha1.Sum(stage1)
	return stage1, subtle.ConstantTimeCompare(check[:], stage2) == 1
}

// nativeAnswer is mysql_native_password's answer to salt, from SHA1(password).
func nativeAnswer(stage1, salt []byte) []byte {
	stage2 := sha1.Sum(stage1)
	h := sha1.New()
	h.Write(salt)
	h.Write(stage2[:])
	out := h.Sum(nil)
	for i := range out {
		out[i] ^= stage1[i]
	}
	return out
}

// erConnectionKilled is MariaDB's ER_CONNECTION_KILLED (not in go-mysql's
// list): the session's server connection is gone.
const erConnectionKilled = 1927
