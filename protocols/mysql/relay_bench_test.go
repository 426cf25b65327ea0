package mysql

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"testing"
)

// The relay's hot path in memory: a client that sends the same command
// over and over and a server that answers each with the same packets, so
// that what is measured is the relay's own work per command (parsing,
// copying, admission), not the network's. BenchmarkPointSelect measures
// the whole path with a real server and client.

// loopReader returns data over and over.
type loopReader struct {
	data []byte
	pos  int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], l.data[l.pos:])
		n += c
		l.pos = (l.pos + c) % len(l.data)
	}
	return n, nil
}

// countingAdmission is an Admission that counts commands in and out.
type countingAdmission struct{ in, entered int }

func (a *countingAdmission) Enter(context.Context) bool {
	if a.in == 0 {
		a.in, a.entered = 1, a.entered+1
	}
	return true
}
func (a *countingAdmission) Leave() { a.in = 0 }

func appendPacket(b []byte, seq byte, payload []byte) []byte {
	n := len(payload)
	return append(append(b, byte(n), byte(n>>8), byte(n>>16), seq), payload...)
}

func appendLenencString(b []byte, s string) []byte {
	return append(appendLenenc(b, uint64(len(s))), s...)
}

// pointSelectAnswer is a server's answer to SELECT v FROM kv WHERE id = ?:
// one VARCHAR column, one row (binaryRows: the prepared statement's form).
func pointSelectAnswer(binaryRows bool) []byte {
	column := []byte{}
	for _, s := range []string{"def", "bench_db", "kv", "kv", "v", "v"} {
		column = appendLenencString(column, s)
	}
	column = append(column, 0x0c, 0x21, 0, 192, 0, 0, 0, 0xfd, 0, 0, 0, 0, 0)
	eof := []byte{0xfe, 0, 0, 0x02, 0}
	row := appendLenencString(nil, "value-1234")
	if binaryRows {
		row = append([]byte{0x00, 0x00}, row...)
	}
	var b []byte
	b = appendPacket(b, 1, []byte{1})
	b = appendPacket(b, 2, column)
	b = appendPacket(b, 3, eof)
	b = appendPacket(b, 4, row)
	return appendPacket(b, 5, eof)
}

// pointSelectCommand is the client's command (text: client-side
// interpolated COM_QUERY; prepared: COM_STMT_EXECUTE with one BIGINT).
func pointSelectCommand(prepared bool) []byte {
	if !prepared {
		return appendPacket(nil, 0, append([]byte{comQuery}, "SELECT v FROM kv WHERE id = 1234"...))
	}
	p := []byte{comStmtExecute, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0x08, 0}
	p = binary.LittleEndian.AppendUint64(p, 1234)
	return appendPacket(nil, 0, p)
}

// memoryRelay is a relay between an endless client and server in memory.
func memoryRelay(prepared bool) (*relay, *countingAdmission) {
	a := &countingAdmission{}
	r := &relay{
		cr: bufio.NewReaderSize(&loopReader{data: pointSelectCommand(prepared)}, 16<<10),
		cw: bufio.NewWriterSize(io.Discard, 16<<10),
		be: &backend{r: bufio.NewReaderSize(&loopReader{data: pointSelectAnswer(prepared)}, 16<<10),
			w: bufio.NewWriterSize(io.Discard, 16<<10)},
		admission: a,
		status:    0x0002,
	}
	return r, a
}

// TestRelayCommandAllocatesNothing: relaying a command and its answer
// allocates nothing (text and prepared), and each command is admitted.
func TestRelayCommandAllocatesNothing(t *testing.T) {
	for _, prepared := range []bool{false, true} {
		r, a := memoryRelay(prepared)
		if err := r.step(); err != nil { // buffers reach their size
			t.Fatal(err)
		}
		var err error
		allocs := testing.AllocsPerRun(1000, func() {
			if e := r.step(); e != nil {
				err = e
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		if allocs != 0 {
			t.Errorf("prepared=%v: %.1f allocations per command, want 0", prepared, allocs)
		}
		if a.entered != 1002 || a.in != 0 {
			t.Errorf("prepared=%v: %d commands admitted (%d held), want 1002 (0)", prepared, a.entered, a.in)
		}
	}
}

// BenchmarkRelayCommand: the relay's CPU per point select, without the
// network (go test -run '^$' -bench RelayCommand ./protocols/mysql/).
func BenchmarkRelayCommand(b *testing.B) {
	for _, tc := range []struct {
		name     string
		prepared bool
	}{{"text", false}, {"prepared", true}} {
		b.Run(tc.name, func(b *testing.B) {
			r, _ := memoryRelay(tc.prepared)
			b.ReportAllocs()
			for b.Loop() {
				if err := r.step(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
