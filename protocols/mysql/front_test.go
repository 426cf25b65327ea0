package mysql

import (
	"context"
	"crypto/sha1"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	gmysql "github.com/go-mysql-org/go-mysql/mysql"
	driver "github.com/go-sql-driver/mysql"

	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/host"
	"github.com/hybridcluster/hybridcluster/runtime/sites"
)

func nativeHash(pw string) string {
	h1 := sha1.Sum([]byte(pw))
	h2 := sha1.Sum(h1[:])
	return "*" + strings.ToUpper(hex.EncodeToString(h2[:]))
}

// fakeCluster routes every user of its table to one master (an in-process
// stand-in for the route mirror: unit tests only).
type fakeCluster struct {
	node  string
	mu    sync.Mutex
	users map[string]host.Route
}

func (c *fakeCluster) Node() string     { return c.node }
func (c *fakeCluster) Live(string) bool { return true }
func (c *fakeCluster) RouteByMysqlUser(u string) (host.Route, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.users[u]
	return r, ok
}

// gate is an in-process stand-in for host.Host.Admit.
type gate struct {
	mu       sync.Mutex
	open     bool
	inflight int
}

func (g *gate) admit(context.Context, string) (func(), bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.open {
		return nil, false
	}
	g.inflight++
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			g.inflight--
			g.mu.Unlock()
		})
	}, true
}

type testNodes struct {
	master, entry string // client addresses of the front ends
	masterFront   *Front
	entryFront    *Front
	// masterGoroutines is another front end of the master, without event
	// loops (for side by side benchmarks).
	masterGoroutines string
	gate             *gate
	sup              *sites.Supervisor
}

// relayModes are the two ways a session is relayed (loop.go): the tests
// that cover the relay run in both.
var relayModes = []struct {
	name   string
	config func(*Config)
}{
	{"event-loop", func(*Config) {}},
	{"goroutines", func(c *Config) { c.NoEventLoop = true }},
}

// startNodes runs a master (site processes, front end, tunnel endpoint)
// and an entry node whose front end reaches the master by the tunnel.
func startNodes(t testing.TB, configs ...func(*Config)) *testNodes {
	t.Helper()
	sup := sites.New(sites.Config{})
	t.Cleanup(sup.Close)
	spec := &m.SiteSpec{Name: "shop", Domains: []string{"shop.example"}, MysqlUsers: []*m.MysqlUser{
		{Name: "shop", PasswordHash: nativeHash("shop-pw"), Databases: []string{"shop_db"}},
	}}
	if err := sup.Start("shop", spec, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	g := &gate{open: true}
	routes := map[string]host.Route{
		"shop": {Site: "shop", Master: "n1", Phase: m.SitePhase_SITE_PHASE_ACTIVE},
		// A user the route mirror knows from another site whose master
		// does not have it: refused like an unknown user.
		"ghost": {Site: "shop", Master: "n1", Phase: m.SitePhase_SITE_PHASE_ACTIVE},
	}
	var tunnelURL string
	internal := func(n string) (string, bool) { return tunnelURL, n == "n1" }
	mc := Config{Cluster: &fakeCluster{node: "n1", users: routes}, Internal: internal, Token: "t", Sites: sup, Admit: g.admit}
	ec := Config{Cluster: &fakeCluster{node: "n2", users: routes}, Internal: internal, Token: "t"}
	for _, c := range configs {
		c(&mc)
		c(&ec)
	}
	gc := mc
	gc.NoEventLoop = true
	masterGoroutines, err := New(gc)
	if err != nil {
		t.Fatal(err)
	}
	master, err := New(mc)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(TunnelPath, master.TunnelHandler())
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	tunnelURL = ts.URL
	entry, err := New(ec)
	if err != nil {
		t.Fatal(err)
	}
	serve := func(f *Front) string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go f.Serve(l)
		t.Cleanup(f.Close)
		return l.Addr().String()
	}
	return &testNodes{master: serve(master), entry: serve(entry), masterFront: master, entryFront: entry, masterGoroutines: serve(masterGoroutines), gate: g, sup: sup}
}

// pauseAndRestart is a move as the sessions see it: the gate closes (the
// pause), the site's server shuts down cleanly, and the gate opens again
// 300 ms later (the site is served again, by a new server).
func (n *testNodes) pauseAndRestart(t *testing.T, ctx context.Context) {
	t.Helper()
	n.gate.mu.Lock()
	n.gate.open = false
	n.gate.mu.Unlock()
	if _, err := n.sup.Quiesce(ctx, "shop", 0); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		n.gate.mu.Lock()
		n.gate.open = true
		n.gate.mu.Unlock()
	}()
}

func openDB(t testing.TB, addr, user, pw, db string, params string) *sql.DB {
	t.Helper()
	d, err := sql.Open("mysql", user+":"+pw+"@tcp("+addr+")/"+db+"?"+params)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func wantCode(t *testing.T, what string, err error, code uint16) {
	t.Helper()
	var me *driver.MySQLError
	if !errors.As(err, &me) || me.Number != code {
		t.Fatalf("%s: %v, want MySQL error %d", what, err, code)
	}
}

// TestFrontRelaysToSiteServer: through the master's own front end and
// through another node's (tunnel), text and prepared statements, multi
// statements, transactions and the server's error codes reach the client.
func TestFrontRelaysToSiteServer(t *testing.T) {
	for _, mode := range relayModes {
		t.Run(mode.name, func(t *testing.T) { testFrontRelays(t, mode.config) })
	}
}

func testFrontRelays(t *testing.T, config func(*Config)) {
	n := startNodes(t, config)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	direct := openDB(t, n.master, "shop", "shop-pw", "shop_db", "multiStatements=true")
	if _, err := direct.ExecContext(ctx, "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(64)); INSERT INTO items VALUES (1, 'one')"); err != nil {
		t.Fatalf("multi statement: %v", err)
	}
	if _, err := direct.ExecContext(ctx, "CREATE PROCEDURE names() SELECT name FROM items"); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{n.master, n.entry} {
		db := openDB(t, addr, "shop", "shop-pw", "shop_db", "")
		var name string
		// A procedure that returns rows needs CLIENT_MULTI_RESULTS.
		if err := db.QueryRowContext(ctx, "CALL names()").Scan(&name); err != nil || name != "one" {
			t.Fatalf("%s: call: %q %v", addr, name, err)
		}
		if err := db.QueryRowContext(ctx, "SELECT name FROM items WHERE id = ?", 1).Scan(&name); err != nil || name != "one" {
			t.Fatalf("%s: prepared select: %q %v", addr, name, err)
		}
		_, err := db.ExecContext(ctx, "INSERT INTO items VALUES (?, ?)", 1, "dup")
		wantCode(t, addr+": duplicate key through a prepared statement", err, 1062)

		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO items VALUES (100, 'rolled back')"); err != nil {
			t.Fatal(err)
		}
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		var c int
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM items WHERE id = 100").Scan(&c); err != nil || c != 0 {
			t.Fatalf("%s: rolled back row: %d %v", addr, c, err)
		}

		// Longer than the server's max_allowed_packet (16 MiB): the
		// server's own error as it closes the session, not a lost
		// connection.
		_, err = openDB(t, addr, "shop", "shop-pw", "shop_db", "").ExecContext(ctx, "SELECT LENGTH('"+strings.Repeat("a", 20<<20)+"')")
		wantCode(t, addr+": a command over max_allowed_packet", err, 1153)

		wantCode(t, addr+": wrong password", openDB(t, addr, "shop", "nope", "", "").PingContext(ctx), 1045)
		wantCode(t, addr+": unknown user", openDB(t, addr, "nobody", "nope", "", "").PingContext(ctx), 1045)
		wantCode(t, addr+": user not in the master's spec", openDB(t, addr, "ghost", "x", "", "").PingContext(ctx), 1045)
		wantCode(t, addr+": another database", openDB(t, addr, "shop", "shop-pw", "other_db", "").PingContext(ctx), 1044)
	}
	n.gate.mu.Lock()
	inflight := n.gate.inflight
	n.gate.mu.Unlock()
	if inflight != 0 {
		t.Fatalf("%d admissions still held with every session idle", inflight)
	}
	var probe Config
	config(&probe)
	if loop := n.masterFront.LoopCommands(); (loop > 0) != (!probe.NoEventLoop && runtime.GOOS == "linux") {
		t.Fatalf("%d commands relayed by the master's event loops (NoEventLoop %v)", loop, probe.NoEventLoop)
	}
	if loop := n.entryFront.LoopCommands(); (loop > 0) != (!probe.NoEventLoop && runtime.GOOS == "linux") {
		t.Fatalf("%d commands relayed by the entry node's event loops (tunnel sessions; NoEventLoop %v)", loop, probe.NoEventLoop)
	}

	// The real command-line client, over TLS (it asks for it) and not.
	for _, args := range [][]string{{"--ssl"}, {"--skip-ssl"}} {
		host, port, _ := net.SplitHostPort(n.entry)
		cmd := exec.CommandContext(ctx, "mariadb", append([]string{"--no-defaults", "-h", host, "-P", port, "-ushop", "-pshop-pw",
			"--ssl-verify-server-cert=0", "shop_db", "--batch", "--skip-column-names", "-e", "SELECT name FROM items; status; CALL nothing_here()"}, args...)...)
		out, err := cmd.CombinedOutput()
		t.Logf("mariadb %v: %s", args, out)
		tlsUsed := strings.Contains(string(out), "Cipher in use")
		if !strings.Contains(string(out), "one") || !strings.Contains(string(out), "1305") || tlsUsed != (args[0] == "--ssl") {
			t.Fatalf("mariadb %v: %v\n%s", args, err, out)
		}
	}
}

// TestSessionSurvivesServerRestart: while the gate is closed (a move's
// pause) and the site's server shuts down, a session between transactions
// holds its next command, reconnects when the site is served again, and
// finds its database, variables and prepared statements as they were. A
// session inside a transaction gets error 1927 instead.
func TestSessionSurvivesServerRestart(t *testing.T) {
	for _, mode := range relayModes {
		t.Run(mode.name, func(t *testing.T) { testSessionSurvivesServerRestart(t, mode.config) })
	}
}

func testSessionSurvivesServerRestart(t *testing.T, config func(*Config)) {
	n := startNodes(t, config)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sessions := openSessions(t, ctx, n)
	n.pauseAndRestart(t, ctx)
	if n.sup.IsRunning("shop") {
		t.Fatal("server still running after the quiesce")
	}
	checkSessions(t, ctx, sessions)

	// The moved sessions' prepared statements (ids mapped to the new
	// server's) are executed by the event loops again.
	before := n.masterFront.LoopCommands() + n.entryFront.LoopCommands()
	executes := 0
	for _, s := range sessions {
		if s.tx != nil {
			continue
		}
		var sum int
		var db, cs string
		if err := s.stmt.QueryRowContext(ctx, 2).Scan(&sum, &db, &cs); err != nil || sum != 44 {
			t.Fatalf("%s: prepared statement again after the move: %d %v", s.name, sum, err)
		}
		executes++
	}
	var probe Config
	config(&probe)
	loops := n.masterFront.LoopCommands() + n.entryFront.LoopCommands() - before
	if wantLoop := !probe.NoEventLoop && runtime.GOOS == "linux"; wantLoop && loops < uint64(executes) || !wantLoop && loops != 0 {
		t.Fatalf("%d of %d executes after the move relayed by event loops (NoEventLoop %v)", loops, executes, probe.NoEventLoop)
	}
}

// TestSessionSurvivesServerCrash: after a kill -9 of the site's server, a
// session between transactions runs its next command on the server the
// supervisor starts again, its state restored; one inside a transaction
// gets 1927.
func TestSessionSurvivesServerCrash(t *testing.T) {
	n := startNodes(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sessions := openSessions(t, ctx, n)
	var pidFile string
	if err := openDB(t, n.master, "shop", "shop-pw", "shop_db", "").QueryRowContext(ctx, "SELECT @@pid_file").Scan(&pidFile); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid file %s: %q", pidFile, b)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	checkSessions(t, ctx, sessions)
	if b, err := os.ReadFile(pidFile); err != nil || strings.TrimSpace(string(b)) == strconv.Itoa(pid) {
		t.Fatalf("the server after the kill: pid file %q %v, killed %d", b, err, pid)
	}
}

// testSession is a client session with state to restore: its database, a
// user variable, a character set, a prepared statement and, for tx, an
// open transaction that inserted a row into t.
type testSession struct {
	name string
	conn *sql.Conn
	stmt *sql.Stmt
	tx   *sql.Tx
}

// openSessions creates the table t and opens, through the master's front
// end and the entry node's, a session between transactions and one inside
// a transaction.
func openSessions(t *testing.T, ctx context.Context, n *testNodes) []*testSession {
	t.Helper()
	setup := openDB(t, n.master, "shop", "shop-pw", "shop_db", "")
	if _, err := setup.ExecContext(ctx, "CREATE TABLE t (id INT PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	var sessions []*testSession
	for _, addr := range []string{n.master, n.entry} {
		db := openDB(t, addr, "shop", "shop-pw", "", "")
		for _, inTx := range []bool{false, true} {
			c, err := db.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			s := &testSession{name: addr, conn: c}
			for _, q := range []string{"USE shop_db", "SET @v = 42", "SET NAMES latin1"} {
				if _, err := c.ExecContext(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			if s.stmt, err = c.PrepareContext(ctx, "SELECT ? + @v, DATABASE(), @@character_set_client"); err != nil {
				t.Fatal(err)
			}
			if inTx {
				s.name += " in a transaction"
				if s.tx, err = c.BeginTx(ctx, nil); err != nil {
					t.Fatal(err)
				}
				if _, err := s.tx.ExecContext(ctx, "INSERT INTO t VALUES (?)", len(sessions)); err != nil {
					t.Fatal(err)
				}
			}
			sessions = append(sessions, s)
		}
	}
	return sessions
}

// checkSessions runs the next command of each session after its server
// went away: 1927 inside a transaction, else the session as it was.
func checkSessions(t *testing.T, ctx context.Context, sessions []*testSession) {
	t.Helper()
	for _, s := range sessions {
		if s.tx != nil {
			_, err := s.tx.ExecContext(ctx, "INSERT INTO t VALUES (100)")
			wantCode(t, s.name+": statement after the server went away", err, 1927)
			continue
		}
		var sum int
		var db, cs string
		if err := s.stmt.QueryRowContext(ctx, 1).Scan(&sum, &db, &cs); err != nil {
			t.Fatalf("%s: prepared statement after the restart: %v", s.name, err)
		}
		if sum != 43 || db != "shop_db" || cs != "latin1" {
			t.Fatalf("%s: session after the restart: sum %d db %q charset %q, want 43 shop_db latin1", s.name, sum, db, cs)
		}
		var c int
		if err := s.conn.QueryRowContext(ctx, "SELECT COUNT(*) FROM t").Scan(&c); err != nil || c != 0 {
			t.Fatalf("%s: rows of the rolled back transaction: %d %v", s.name, c, err)
		}
	}
}

// BenchmarkPointSelect: primary-key selects through the master's front end
// and directly on the site's server, 16 connections, side by side
// (go test -run '^$' -bench PointSelect ./protocols/mysql/).
func BenchmarkPointSelect(b *testing.B) {
	n := startNodes(b)
	ctx := context.Background()
	setup, err := sql.Open("mysql", "shop:shop-pw@tcp("+n.master+")/shop_db")
	if err != nil {
		b.Fatal(err)
	}
	defer setup.Close()
	if _, err := setup.ExecContext(ctx, "CREATE TABLE kv (id INT PRIMARY KEY, v VARCHAR(64))"); err != nil {
		b.Fatal(err)
	}
	for i := range 1000 {
		if _, err := setup.ExecContext(ctx, "INSERT INTO kv VALUES (?, ?)", i, fmt.Sprint("v", i)); err != nil {
			b.Fatal(err)
		}
	}
	driver.RegisterDialContext("benchsite", func(ctx context.Context, addr string) (net.Conn, error) {
		return n.sup.DialMySQL(ctx, addr)
	})
	for _, tc := range []struct{ name, dsn string }{
		{"direct", "shop:shop-pw@benchsite(shop)/shop_db"},
		{"proxy", "shop:shop-pw@tcp(" + n.master + ")/shop_db"},
		{"proxy-goroutines", "shop:shop-pw@tcp(" + n.masterGoroutines + ")/shop_db"},
	} {
		for _, prepared := range []bool{false, true} {
			name, dsn := tc.name+"/text", tc.dsn+"?interpolateParams=true"
			if prepared {
				name, dsn = tc.name+"/prepared", tc.dsn
			}
			b.Run(name, func(b *testing.B) {
				d, err := sql.Open("mysql", dsn)
				if err != nil {
					b.Fatal(err)
				}
				defer d.Close()
				d.SetMaxOpenConns(16)
				d.SetMaxIdleConns(16)
				stmt, err := d.PrepareContext(ctx, "SELECT v FROM kv WHERE id = ?")
				if err != nil {
					b.Fatal(err)
				}
				defer stmt.Close()
				b.SetParallelism(8) // 16 goroutines on 2 cores
				var i atomic.Int64
				cpu := processCPU()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					var v string
					for pb.Next() {
						var row *sql.Row
						if prepared {
							row = stmt.QueryRowContext(ctx, i.Add(1)%1000)
						} else {
							row = d.QueryRowContext(ctx, "SELECT v FROM kv WHERE id = ?", i.Add(1)%1000)
						}
						if err := row.Scan(&v); err != nil {
							b.Error(err)
							return
						}
					}
				})
				// The whole process's CPU (client, front end): the
				// front ends' difference is the proxies' difference.
				b.ReportMetric(float64((processCPU()-cpu).Microseconds())/float64(b.N), "cpu-us/op")
			})
		}
	}
}

// processCPU is this process's user and system CPU time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestFrontRelaysOtherCommands: COM_INIT_DB, COM_FIELD_LIST, COM_PING,
// multi-statement results and prepared statements with go-mysql's client
// (another client implementation), through the tunnel.
func TestFrontRelaysOtherCommands(t *testing.T) {
	n := startNodes(t)
	c, err := client.Connect(n.entry, "shop", "shop-pw", "", func(c *client.Conn) error {
		return c.SetCapability(gmysql.CLIENT_MULTI_STATEMENTS)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Ping(); err != nil {
		t.Fatalf("ping: %v", err)
	}
	if err := c.UseDB("shop_db"); err != nil {
		t.Fatalf("COM_INIT_DB: %v", err)
	}
	if _, err := c.Execute("CREATE TABLE f (id INT PRIMARY KEY, label VARCHAR(10))"); err != nil {
		t.Fatal(err)
	}
	fields, err := c.FieldList("f", "")
	if err != nil || len(fields) != 2 || string(fields[1].Name) != "label" {
		t.Fatalf("COM_FIELD_LIST: %v %v", fields, err)
	}
	var results int
	if _, err := c.ExecuteMultiple("INSERT INTO f VALUES (1, 'a'); SELECT label FROM f; SELECT COUNT(*) FROM f", func(r *gmysql.Result, err error) {
		if err == nil {
			results++
		}
	}); err != nil || results != 3 {
		t.Fatalf("multi statement: %d results, %v", results, err)
	}
	if v, _ := c.Execute("SELECT COUNT(*) FROM f"); v == nil {
		t.Fatal("session unusable after the multi statement")
	}
	st, err := c.Prepare("SELECT label FROM f WHERE id = ?")
	if err != nil {
		t.Fatal(err)
	}
	r, err := st.Execute(1)
	if err != nil || r.RowNumber() != 1 {
		t.Fatalf("prepared: %v %v", r, err)
	}
	if s, _ := r.GetString(0, 0); s != "a" {
		t.Fatalf("prepared: %q", s)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Execute("SELECT * FROM nosuch"); err == nil || !strings.Contains(err.Error(), "1146") {
		t.Fatalf("missing table: %v, want 1146", err)
	}
}
