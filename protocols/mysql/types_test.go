package mysql

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
)

// rawStmt prepares and executes a statement with packets of its own, as
// libmysqlclient does (sysbench, PHP's mysqli): the parameter types go
// with the first execute only.
type rawStmt struct {
	c  *client.Conn
	id uint32
}

func (s *rawStmt) roundTrip(payload []byte) ([]byte, error) {
	s.c.ResetSequence()
	if err := s.c.WritePacket(append(make([]byte, 4), payload...)); err != nil {
		return nil, err
	}
	p, err := s.c.ReadPacket()
	if err != nil {
		return nil, err
	}
	if p[0] == 0xff {
		return nil, fmt.Errorf("error %d: %s", binary.LittleEndian.Uint16(p[1:]), p[9:])
	}
	return p, nil
}

func prepareRaw(t *testing.T, c *client.Conn, query string) *rawStmt {
	t.Helper()
	s := &rawStmt{c: c}
	p, err := s.roundTrip(append([]byte{comStmtPrepare}, query...))
	if err != nil {
		t.Fatalf("prepare %q: %v", query, err)
	}
	s.id = binary.LittleEndian.Uint32(p[1:])
	params, columns := binary.LittleEndian.Uint16(p[7:]), binary.LittleEndian.Uint16(p[5:])
	for _, n := range []uint16{params, columns} {
		if n == 0 {
			continue
		}
		for range n + 1 { // definitions and their EOF
			if _, err := c.ReadPacket(); err != nil {
				t.Fatal(err)
			}
		}
	}
	return s
}

// execInt executes the one-parameter statement with v, sending its type
// (BIGINT) only if withTypes.
func (s *rawStmt) execInt(v int64, withTypes bool) error {
	p := []byte{comStmtExecute, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0} // id, no cursor, one iteration, null bitmap
	binary.LittleEndian.PutUint32(p[1:], s.id)
	if withTypes {
		p = append(p, 1, 0x08, 0) // new parameters bound: MYSQL_TYPE_LONGLONG, signed
	} else {
		p = append(p, 0)
	}
	p = binary.LittleEndian.AppendUint64(p, uint64(v))
	_, err := s.roundTrip(p)
	return err
}

// TestExecuteWithoutTypesAfterAMove: a client that sends a statement's
// parameter types with its first execute only keeps executing it after its
// session moved to another server (which prepared it again and has not
// seen the types), through the master's front end and through a tunnel.
func TestExecuteWithoutTypesAfterAMove(t *testing.T) {
	n := startNodes(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var stmts []*rawStmt
	for i, addr := range []string{n.master, n.entry} {
		c, err := client.Connect(addr, "shop", "shop-pw", "shop_db")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Execute("CREATE TABLE IF NOT EXISTS typed (id BIGINT PRIMARY KEY)"); err != nil {
			t.Fatal(err)
		}
		s := prepareRaw(t, c, "INSERT INTO typed VALUES (?)")
		if err := s.execInt(int64(10*i+1), true); err != nil {
			t.Fatalf("%s: first execute: %v", addr, err)
		}
		if err := s.execInt(int64(10*i+2), false); err != nil {
			t.Fatalf("%s: execute without types on the same server: %v", addr, err)
		}
		stmts = append(stmts, s)
	}
	n.pauseAndRestart(t, ctx)
	for i, s := range stmts {
		for k := range 2 {
			if err := s.execInt(int64(10*i+3+k), false); err != nil {
				t.Fatalf("session %d: execute %d without types after the move: %v", i, k, err)
			}
		}
	}
	var count int
	if err := openDB(t, n.master, "shop", "shop-pw", "shop_db", "").QueryRowContext(ctx, "SELECT COUNT(*) FROM typed").Scan(&count); err != nil || count != 8 {
		t.Fatalf("rows: %d %v, want 8", count, err)
	}
}

// TestLongDataIsNotLostInAMove: a session that sent long data for a
// statement and executes it after a move gets 1927 (the new server never
// got the data) instead of a row without it.
func TestLongDataIsNotLostInAMove(t *testing.T) {
	n := startNodes(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var stmts []*rawStmt
	for _, addr := range []string{n.master, n.entry} {
		c, err := client.Connect(addr, "shop", "shop-pw", "shop_db")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Execute("CREATE TABLE IF NOT EXISTS docs (body TEXT)"); err != nil {
			t.Fatal(err)
		}
		s := prepareRaw(t, c, "INSERT INTO docs VALUES (?)")
		long := []byte{0, 0, 0, 0, comStmtSendLongData, 0, 0, 0, 0, 0, 0} // header, command, id, parameter 0
		binary.LittleEndian.PutUint32(long[5:], s.id)
		c.ResetSequence()
		if err := c.WritePacket(append(long, "a chunk of a long text"...)); err != nil { // no answer
			t.Fatal(err)
		}
		stmts = append(stmts, s)
	}
	n.pauseAndRestart(t, ctx)
	for i, s := range stmts {
		// Types bound (MYSQL_TYPE_BLOB), the value left out: it was sent as long data.
		p := []byte{comStmtExecute, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0xfc, 0}
		binary.LittleEndian.PutUint32(p[1:], s.id)
		if _, err := s.roundTrip(p); err == nil || !strings.Contains(err.Error(), "error 1927") {
			t.Fatalf("session %d: execute after a move with its long data sent before: %v, want error 1927", i, err)
		}
	}
	var count int
	if err := openDB(t, n.master, "shop", "shop-pw", "shop_db", "").QueryRowContext(ctx, "SELECT COUNT(*) FROM docs").Scan(&count); err != nil || count != 0 {
		t.Fatalf("rows: %d %v, want none", count, err)
	}
}
