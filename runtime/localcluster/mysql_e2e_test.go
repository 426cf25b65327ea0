package localcluster

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	driver "github.com/go-sql-driver/mysql"

	"github.com/hybridcluster/hybridcluster/runtime/admin"
	"github.com/hybridcluster/hybridcluster/runtime/storage/zfsdriver/zfstest"
)

// createMySQLSite creates a static site with one MySQL user through the
// real hcctl and waits until it is active with a replica.
func createMySQLSite(t *testing.T, ctx context.Context, c *Cluster, name, mysqlUser string) admin.Site {
	t.Helper()
	return createSiteWith(t, ctx, c, name, "--domain", name+".example", "--mysql-user", mysqlUser)
}

// mariadbCLI runs the real mariadb client against node i's MySQL port.
func mariadbCLI(ctx context.Context, c *Cluster, i int, user, password, db, sqlText string) (string, error) {
	h, port, _ := net.SplitHostPort(c.Nodes[i].MySQL)
	args := []string{"--no-defaults", "-h", h, "-P", port, "-u" + user, "-p" + password, "--batch", "--skip-column-names",
		"--connect-timeout=60", "-e", sqlText}
	if db != "" {
		args = append(args, db)
	}
	out, err := exec.CommandContext(ctx, "mariadb", args...).CombinedOutput()
	return string(out), err
}

func sqlDB(t *testing.T, c *Cluster, i int, user, password, db string) *sql.DB {
	t.Helper()
	d, err := sql.Open("mysql", user+":"+password+"@tcp("+c.Nodes[i].MySQL+")/"+db+"?timeout=60s")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// A site's database is reachable through every node's MySQL port: tables
// and rows made through n1 are read through n2 and n3 with the real
// mariadb client and database/sql; wrong passwords, unknown users and
// another site's database get the server's error codes.
func TestE2EMySQLThroughEveryNode(t *testing.T) {
	if _, err := exec.LookPath("mariadb"); err != nil {
		t.Fatal("the mariadb client is needed (scripts/test-deps.sh installs it)")
	}
	c := newCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	shop := createMySQLSite(t, ctx, c, "shop", "shop_user:shop-pw:shop_db")
	blog := createMySQLSite(t, ctx, c, "blog", "blog_user:blog-pw:blog_db")
	t.Logf("shop: master %s replicas %v; blog: master %s replicas %v", shop.Master, shop.Replicas, blog.Master, blog.Replicas)

	out, err := mariadbCLI(ctx, c, 0, "shop_user", "shop-pw", "shop_db",
		"CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(64)); INSERT INTO items VALUES (1,'apple'),(2,'pear'),(3,'plum');")
	if err != nil {
		t.Fatalf("create through n1: %v\n%s", err, out)
	}
	for i := 1; i < 3; i++ {
		out, err := mariadbCLI(ctx, c, i, "shop_user", "shop-pw", "shop_db", "SELECT id, name FROM items ORDER BY id")
		if err != nil || out != "1\tapple\n2\tpear\n3\tplum\n" {
			t.Fatalf("read through %s with mariadb: %v\n%q", c.Nodes[i].Name, err, out)
		}
		db := sqlDB(t, c, i, "shop_user", "shop-pw", "shop_db")
		var names []string
		rows, err := db.QueryContext(ctx, "SELECT name FROM items WHERE id >= ? ORDER BY id", 2)
		if err != nil {
			t.Fatalf("read through %s with database/sql: %v", c.Nodes[i].Name, err)
		}
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				t.Fatal(err)
			}
			names = append(names, n)
		}
		rows.Close()
		if strings.Join(names, ",") != "pear,plum" {
			t.Fatalf("read through %s with database/sql: %v", c.Nodes[i].Name, names)
		}
	}

	for _, tc := range []struct {
		what           string
		user, pw, db   string
		code           uint16
		cliMustContain string
	}{
		{"wrong password", "shop_user", "wrong", "shop_db", 1045, "ERROR 1045"},
		{"unknown user", "nobody", "shop-pw", "", 1045, "ERROR 1045"},
		{"another site's database", "shop_user", "shop-pw", "blog_db", 1044, "ERROR 1044"},
		{"another site's database (blog)", "blog_user", "blog-pw", "shop_db", 1044, "ERROR 1044"},
	} {
		for i := range c.Nodes {
			err := sqlDB(t, c, i, tc.user, tc.pw, tc.db).PingContext(ctx)
			var me *driver.MySQLError
			if !errors.As(err, &me) || me.Number != tc.code {
				t.Fatalf("%s through %s: %v, want error %d", tc.what, c.Nodes[i].Name, err, tc.code)
			}
			out, _ := mariadbCLI(ctx, c, i, tc.user, tc.pw, tc.db, "SELECT 1")
			if !strings.Contains(out, tc.cliMustContain) || strings.Contains(out, "blog_db") && tc.db != "blog_db" {
				t.Fatalf("%s through %s with mariadb: %q", tc.what, c.Nodes[i].Name, out)
			}
		}
	}
}

// mysqlLoad runs autocommit inserts (prepared, with arguments) and
// selects through the given nodes' MySQL ports until ctx ends or max
// inserts were sent. Every insert's outcome is recorded.
type mysqlLoad struct {
	mu      sync.Mutex
	acked   []int
	errs    []string
	latency []mysqlOp
}

type mysqlOp struct {
	start time.Time
	took  time.Duration
	id    int
	ok    bool
}

func (l *mysqlLoad) run(ctx context.Context, t *testing.T, c *Cluster, nodes []int, workers, max int) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		i := nodes[w%len(nodes)]
		db := sqlDB(t, c, i, "shop_user", "shop-pw", "shop_db")
		db.SetMaxOpenConns(1)
		wg.Go(func() {
			for ctx.Err() == nil {
				id := int(next.Add(1))
				if id > max {
					return
				}
				begun := time.Now()
				_, err := db.ExecContext(context.Background(), "INSERT INTO load_rows (id, node) VALUES (?, ?)", id, i)
				var n int
				if err == nil {
					err = db.QueryRowContext(context.Background(), "SELECT COUNT(*) FROM load_rows WHERE id = ?", id).Scan(&n)
				}
				took := time.Since(begun)
				l.mu.Lock()
				if err != nil {
					l.errs = append(l.errs, fmt.Sprintf("id %d via %s: %v", id, c.Nodes[i].Name, err))
				} else {
					l.acked = append(l.acked, id)
				}
				l.latency = append(l.latency, mysqlOp{begun, took, id, err == nil})
				l.mu.Unlock()
			}
		})
	}
	wg.Wait()
}

// A bounded workload of autocommit inserts and selects through every node
// runs through a planned migration of the site: no client sees an error,
// no acknowledged row is lost; the longest stall is reported.
func TestE2EMySQLMigrationUnderLoad(t *testing.T) {
	for _, st := range storages(t) {
		t.Run(st, func(t *testing.T) { testMySQLMigrationUnderLoad(t, st) })
	}
}

func testMySQLMigrationUnderLoad(t *testing.T, storage string) {
	c := newCluster(t, 3, storage)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s := createMySQLSite(t, ctx, c, "shop", "shop_user:shop-pw:shop_db")
	if out, err := mariadbCLI(ctx, c, 0, "shop_user", "shop-pw", "shop_db",
		"CREATE TABLE load_rows (id INT PRIMARY KEY, node INT) ENGINE=InnoDB"); err != nil {
		t.Fatalf("create table: %v\n%s", err, out)
	}
	target := ""
	for _, n := range c.Nodes {
		if n.Name != s.Master {
			target = n.Name
			break
		}
	}
	lctx, stopLoad := context.WithTimeout(ctx, 2*time.Minute)
	defer stopLoad()
	load := &mysqlLoad{}
	done := make(chan struct{})
	go func() { load.run(lctx, t, c, []int{0, 1, 2}, 6, 100000); close(done) }()
	time.Sleep(2 * time.Second)
	moveStart := time.Now()
	out, err := c.HCCtl(ctx, 0, "migrate", "shop", target, "--timeout", "60s")
	moveEnd := time.Now()
	if err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	time.Sleep(2 * time.Second)
	stopLoad()
	<-done

	after, err := c.Client(1).Site(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	if after.Master != target {
		t.Fatalf("master after the move: %s, want %s", after.Master, target)
	}
	stored := map[int]bool{}
	db := sqlDB(t, c, 2, "shop_user", "shop-pw", "shop_db")
	rows, err := db.QueryContext(ctx, "SELECT id FROM load_rows")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		stored[id] = true
	}
	rows.Close()
	lost := 0
	for _, id := range load.acked {
		if !stored[id] {
			lost++
		}
	}
	var stall time.Duration
	for _, op := range load.latency {
		if op.start.Before(moveEnd) && op.start.Add(op.took).After(moveStart) {
			stall = max(stall, op.took)
		}
	}
	t.Logf("mysql migration %s -> %s: inserts_acked=%d errors=%d lost_rows=%d move_s=%.2f max_stall_ms=%d",
		s.Master, target, len(load.acked), len(load.errs), lost, moveEnd.Sub(moveStart).Seconds(), stall.Milliseconds())
	for i, e := range load.errs {
		if i < 10 {
			t.Errorf("client error: %s", e)
		}
	}
	if lost > 0 {
		t.Fatalf("%d acknowledged rows lost in a planned move", lost)
	}
	if len(load.acked) < 50 {
		t.Fatalf("only %d inserts acknowledged: the load did not run", len(load.acked))
	}
}

// kill -9 of a MySQL site's master under autocommit load through the other
// nodes: every row acknowledged before the newest snapshot that reached
// the new master survives; the rows lost (newer) and the time until
// inserts succeed again are reported. ZFS only: its snapshots are atomic,
// so a snapshot of a running server is crash-consistent; the portable
// driver copies changed files one by one, which only a cleanly shut down
// server (a planned move's final snapshot) survives.
func TestE2EMySQLFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if ok, why := ZFSAvailable(ctx); !ok {
		if zfstest.Required() {
			t.Fatalf("ZFS is required here (CI) but not available: %s", why)
		}
		t.Skipf("needs ZFS (atomic snapshots of a running server): %s", why)
	}
	c := newCluster(t, 3, "zfs")
	s := createMySQLSite(t, ctx, c, "shop", "shop_user:shop-pw:shop_db")
	if out, err := mariadbCLI(ctx, c, 0, "shop_user", "shop-pw", "shop_db",
		"CREATE TABLE load_rows (id INT PRIMARY KEY, node INT) ENGINE=InnoDB"); err != nil {
		t.Fatalf("create table: %v\n%s", err, out)
	}
	victim := c.NodeIndex(s.Master)
	var others []int
	for i := range c.Nodes {
		if i != victim {
			others = append(others, i)
		}
	}
	lctx, stopLoad := context.WithTimeout(ctx, 3*time.Minute)
	defer stopLoad()
	load := &mysqlLoad{}
	done := make(chan struct{})
	go func() { load.run(lctx, t, c, others, 4, 1_000_000); close(done) }()
	time.Sleep(8 * time.Second) // several snapshots reach the replicas
	c.Kill(victim)
	killed := time.Now()
	var recovered time.Duration
	for deadline := killed.Add(90 * time.Second); recovered == 0 && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		load.mu.Lock()
		for _, op := range load.latency {
			if op.ok && op.start.After(killed) {
				recovered = op.start.Add(op.took).Sub(killed)
				break
			}
		}
		load.mu.Unlock()
	}
	time.Sleep(2 * time.Second)
	stopLoad()
	<-done
	if recovered == 0 {
		t.Fatalf("no insert succeeded within 90 s of the kill of %s; errors: %v", s.Master, load.errs)
	}
	snaps, err := c.Client(others[0]).Snapshots(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	var replicated time.Time
	for _, sn := range snaps.Snapshots {
		if sn.Epoch == s.Epoch && sn.TakenAt.After(replicated) {
			replicated = sn.TakenAt
		}
	}
	if replicated.IsZero() {
		t.Fatalf("the new master holds no snapshot of the old history (epoch %s)", s.Epoch)
	}
	stored := map[int]bool{}
	rows, err := sqlDB(t, c, others[0], "shop_user", "shop-pw", "shop_db").QueryContext(ctx, "SELECT id FROM load_rows")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		stored[id] = true
	}
	rows.Close()
	covered, lost := 0, 0
	for _, op := range load.latency {
		if !op.ok {
			continue
		}
		if !stored[op.id] {
			lost++
		}
		if op.start.Add(op.took).Before(replicated) {
			covered++
			if !stored[op.id] {
				t.Errorf("row %d, acknowledged before the snapshot of %v that reached the new master, was lost", op.id, replicated)
			}
		}
	}
	t.Logf("mysql failover of %s: recovered_s=%.2f acked=%d covered_by_replicated_snapshot=%d lost_newer=%d client_errors=%d window_s=%.2f",
		s.Master, recovered.Seconds(), len(load.acked), covered, lost, len(load.errs), killed.Sub(replicated).Seconds())
	for i, e := range load.errs {
		if i < 5 {
			t.Logf("client error: %s", e)
		}
	}
	if covered == 0 {
		t.Fatal("no row preceded the replicated snapshot: the check checked nothing")
	}
}

// sysbench's OLTP read-write workload (transactions of point and range
// selects, updates, a delete and an insert, as prepared statements through
// libmysqlclient) runs through the entry node while the site moves twice:
// sysbench stops at the first error other than the deadlocks and lock
// wait timeouts it retries, so it must end cleanly.
func TestE2EMySQLSysbenchThroughMoves(t *testing.T) {
	if _, err := exec.LookPath("sysbench"); err != nil {
		t.Fatal("sysbench is needed (scripts/test-deps.sh installs it)")
	}
	c := newCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s := createMySQLSite(t, ctx, c, "shop", "shop_user:shop-pw:shop_db")
	sysbench := func(ctx context.Context, node int, args ...string) *exec.Cmd {
		h, port, _ := net.SplitHostPort(c.Nodes[node].MySQL)
		return exec.CommandContext(ctx, "sysbench", append([]string{"--db-driver=mysql", "--mysql-host=" + h, "--mysql-port=" + port,
			"--mysql-user=shop_user", "--mysql-password=shop-pw", "--mysql-db=shop_db", "--tables=2", "--table-size=2000"}, args...)...)
	}
	if out, err := sysbench(ctx, 0, "oltp_read_write", "prepare").CombinedOutput(); err != nil {
		t.Fatalf("sysbench prepare: %v\n%s", err, out)
	}
	entry := 0
	for i, n := range c.Nodes {
		if n.Name != s.Master {
			entry = i
		}
	}
	var out strings.Builder
	run := sysbench(ctx, entry, "--threads=4", "--time=30", "--report-interval=2", "oltp_read_write", "run")
	run.Stdout, run.Stderr = &out, &out
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	master := s.Master
	for _, n := range c.Nodes { // every other node in turn
		if n.Name == s.Master {
			continue
		}
		time.Sleep(6 * time.Second)
		if o, err := c.HCCtl(ctx, 0, "migrate", "shop", n.Name, "--timeout", "60s"); err != nil {
			t.Fatalf("migrate %s -> %s: %v\n%s", master, n.Name, err, o)
		}
		master = n.Name
	}
	err := run.Wait()
	t.Logf("sysbench through %s, moves to %s:\n%s", c.Nodes[entry].Name, master, out.String())
	if err != nil || strings.Contains(out.String(), "FATAL") || !strings.Contains(out.String(), "transactions:") {
		t.Fatalf("sysbench through the moves: %v", err)
	}
}
