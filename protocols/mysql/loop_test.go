package mysql

import (
	"context"
	"runtime"
	"testing"
	"time"
)

// TestLoopRelaysLargeAnswersToSlowClients: answers far larger than the
// event loop's buffer and than the sockets' buffers reach a client that
// reads slowly (the loop waits for room to write), text and prepared,
// and the session goes on with its next commands in the loop.
func TestLoopRelaysLargeAnswersToSlowClients(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the event loop is Linux's (epoll)")
	}
	n := startNodes(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	db := openDB(t, n.master, "shop", "shop-pw", "shop_db", "")
	db.SetMaxOpenConns(1)
	const rows = 100000
	// seq_1_to_N: MariaDB's Sequence engine.
	const q = "SELECT seq, REPEAT('y', ?) FROM seq_1_to_100000"
	for _, prepared := range []bool{false, true} {
		before := n.masterFront.LoopCommands()
		var args []any
		query := q
		if prepared {
			args = []any{200}
		} else {
			query = "SELECT seq, REPEAT('y', 200) FROM seq_1_to_100000"
		}
		res, err := db.QueryContext(ctx, query, args...)
		if err != nil {
			t.Fatal(err)
		}
		count, sum := 0, 0
		for res.Next() {
			if count == 0 {
				time.Sleep(500 * time.Millisecond) // the sockets' buffers fill up
			}
			var v int
			var s string
			if err := res.Scan(&v, &s); err != nil {
				t.Fatal(err)
			}
			if len(s) != 200 {
				t.Fatalf("row %d: %d bytes", v, len(s))
			}
			count, sum = count+1, sum+v
		}
		if err := res.Err(); err != nil {
			t.Fatal(err)
		}
		res.Close()
		if count != rows || sum != rows*(rows+1)/2 {
			t.Fatalf("prepared=%v: %d rows (sum %d), want %d", prepared, count, sum, rows)
		}
		var one int
		if err := db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
			t.Fatalf("after the large answer: %d %v", one, err)
		}
		if n.masterFront.LoopCommands() == before {
			t.Fatalf("prepared=%v: the event loop relayed none of the commands", prepared)
		}
	}
}
