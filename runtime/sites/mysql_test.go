package sites

import (
	"context"
	"database/sql"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	m "github.com/hybridcluster/hybridcluster/messages"
)

// shopHash is mysql_native_password's hash ("*" + hex SHA1(SHA1(pw))),
// as admin stores it.
const shopHash = "*D821809F681A40A6E379B50D0463EFAE20BDD122" // "pw"

func mysqlSpec() *m.SiteSpec {
	return &m.SiteSpec{Name: "shop", Domains: []string{"shop.example"},
		MysqlUsers: []*m.MysqlUser{{Name: "shop", PasswordHash: shopHash, Databases: []string{"shop_db"}}}}
}

// newMySQLSupervisor is a supervisor with a short run directory: the
// sockets go there (t.TempDir() is too long for a socket path).
func newMySQLSupervisor(t *testing.T) *Supervisor {
	t.Helper()
	run, err := os.MkdirTemp("", "hcr")
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{RunDir: run})
	t.Cleanup(func() {
		s.Close()
		os.RemoveAll(run)
	})
	return s
}

// TestMySQLServerLifecycle runs a real mariadbd: created at the first
// connection with the spec's user and database, shut down cleanly by
// Quiesce and started again (data kept), refused after Stop.
func TestMySQLServerLifecycle(t *testing.T) {
	s := newMySQLSupervisor(t)
	dir := t.TempDir()
	if err := s.Start("shop", mysqlSpec(), dir); err != nil {
		t.Fatal(err)
	}
	quick, cancelQuick := context.WithTimeout(context.Background(), time.Second)
	s.AwaitStarted(quick, "shop") // nothing started ahead: returns at once
	if quick.Err() != nil {
		t.Fatal("AwaitStarted waited for a site with no database yet")
	}
	cancelQuick()
	if s.IsRunning("shop") {
		t.Fatal("mariadbd started before any connection")
	}
	mysql.RegisterDialContext("sitestest", func(ctx context.Context, addr string) (net.Conn, error) {
		return s.DialMySQL(ctx, addr)
	})
	open := func(user, password string) *sql.DB {
		db, err := sql.Open("mysql", user+":"+password+"@sitestest(shop)/shop_db")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	db := open("shop", "pw")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, q := range []string{"CREATE TABLE t (id INT PRIMARY KEY, v TEXT)", "INSERT INTO t VALUES (1, 'one'), (2, 'two')"} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if !s.IsRunning("shop") {
		t.Fatal("mariadbd not reported running")
	}
	if _, err := os.Stat(filepath.Join(s.cfg.RunDir, "mysql", "shop.sock")); err != nil {
		t.Fatalf("socket not in the run directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "mysql", "data", "shop_db")); err != nil {
		t.Fatalf("data directory not inside the dataset: %v", err)
	}
	// The settings of mysqlOptions are the ones the server runs with.
	var threads string
	if err := db.QueryRowContext(ctx, "SELECT @@thread_handling").Scan(&threads); err != nil || threads != "pool-of-threads" {
		t.Fatalf("thread_handling %q, %v: want the thread pool", threads, err)
	}

	var me *mysql.MySQLError
	if err := open("shop", "wrong").PingContext(ctx); !errors.As(err, &me) || me.Number != 1045 {
		t.Fatalf("wrong password: %v, want error 1045", err)
	}
	if _, err := db.ExecContext(ctx, "CREATE DATABASE other"); !errors.As(err, &me) || me.Number != 1044 {
		t.Fatalf("create another database: %v, want error 1044", err)
	}

	db.SetMaxIdleConns(0) // the pool's connections must not hold the server
	if _, err := s.Quiesce(ctx, "shop", time.Second); err != nil {
		t.Fatal(err)
	}
	if s.IsRunning("shop") {
		t.Fatal("mariadbd still running after Quiesce")
	}
	errLog, _ := os.ReadFile(filepath.Join(dir, "mysql", "error.log"))
	if !strings.Contains(string(errLog), "Shutdown complete") {
		t.Fatalf("no clean shutdown in error.log:\n%s", errLog)
	}
	var n int
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM t").Scan(&n); err != nil || n != 2 {
		t.Fatalf("rows after restart: %d, %v", n, err)
	}

	// kill -9 (the OOM killer): a dial right after it starts the server
	// again, crash-recovered, instead of failing on the dead socket.
	for round := range 3 {
		var pidFile string
		if err := db.QueryRowContext(ctx, "SELECT @@pid_file").Scan(&pidFile); err != nil {
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
		// Dead once its socket refuses connections (until then a
		// connection may still land in the dying server's backlog).
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			c, err := net.Dial("unix", filepath.Join(s.cfg.RunDir, "mysql", "shop.sock"))
			if err != nil {
				break
			}
			c.Close()
			if time.Now().After(deadline) {
				t.Fatalf("mariadbd %d still accepts connections 10 s after kill -9", pid)
			}
		}
		c, err := s.DialMySQL(ctx, "shop")
		if err != nil {
			t.Fatalf("round %d: dial right after kill -9: %v", round, err)
		}
		c.Close()
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM t").Scan(&n); err != nil || n != 2 {
			t.Fatalf("round %d: rows after kill -9: %d, %v", round, n, err)
		}
	}

	s.Stop("shop")
	if s.IsRunning("shop") {
		t.Fatal("mariadbd running after Stop")
	}
	if _, err := s.DialMySQL(ctx, "shop"); !errors.Is(err, ErrMySQLNotServed) {
		t.Fatalf("dial after Stop: %v", err)
	}

	// Started again over a dataset that holds a database (as after a
	// move): the server starts ahead of any connection, and AwaitStarted
	// returns once it is up.
	if err := s.Start("shop", mysqlSpec(), dir); err != nil {
		t.Fatal(err)
	}
	s.AwaitStarted(ctx, "shop")
	if !s.IsRunning("shop") {
		t.Fatal("AwaitStarted returned before the moved site's mariadbd was up")
	}
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM t").Scan(&n); err != nil || n != 2 {
		t.Fatalf("rows after the start ahead of connections: %d, %v", n, err)
	}
}

func TestInitSQLRefusesBadNames(t *testing.T) {
	for _, u := range []*m.MysqlUser{
		{Name: "x'; DROP", PasswordHash: shopHash},
		{Name: "root", PasswordHash: shopHash},
		{Name: "ok", PasswordHash: "plain"},
		{Name: "ok", PasswordHash: shopHash, Databases: []string{"a`b"}},
		{Name: "ok", PasswordHash: shopHash, Databases: []string{"mysql"}},
	} {
		if sql, err := initSQL(&m.SiteSpec{MysqlUsers: []*m.MysqlUser{u}}); err == nil {
			t.Errorf("user %v accepted: %s", u, sql)
		}
	}
}
