package main

// hcbench mysql: the MySQL front end against a blind TCP proxy (HAProxy)
// and against the site's server itself, then a planned move under load.
//
// One 3-node local cluster (portable storage, or a file-backed ZFS pool with
// -zfs), one site with a MySQL user.
// Point selects by primary key (16 connections, Go's database/sql with
// go-sql-driver/mysql), each for -duration, one after another in one run:
//
//	direct      the site's mariadbd on its unix socket
//	haproxy     HAProxy in TCP mode in front of that socket
//	proxy       the master node's MySQL front end
//	proxy_remote another node's front end (through the tunnel)
//
// in text (client-side interpolated COM_QUERY) and prepared (COM_STMT_EXECUTE)
// form, with the proxies' CPU per query (HAProxy's process, the nodes' net of
// their background work), where the whole machine's CPU went per query
// (client, server, busy in all, idle and stolen), the spread of the
// proxy-to-HAProxy ratio over the rounds, then each target's
// one-connection latency. -cpuprofile writes the master node's CPU
// profiles during the proxy runs; -perf-events counts perf events
// machine-wide per query (e.g. context-switches). Then the database is
// grown to -db-mib MiB, an autocommit
// insert+select load runs through all nodes, and the site is migrated; the
// longest client-visible stall, lost rows and client errors are reported.
// The last line is
//
//	proxy_vs_haproxy=R proxy_vs_direct=R2 move_stall_ms=M lost_rows=L errors=E
//
// (R and R2: the lower of the text and prepared ratios; proxy is the master's
// front end, as HAProxy runs beside the server).

import (
	"bytes"
	"context"
	"database/sql"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/go-sql-driver/mysql"

	"github.com/hybridcluster/hybridcluster/runtime/localcluster"
)

// Bounds of hcbench mysql.
const (
	// mysqlBenchConnections is the client concurrency of the QPS runs.
	mysqlBenchConnections = 16
	// mysqlBenchRoundsMax bounds -rounds.
	mysqlBenchRoundsMax = 100
	// mysqlBenchRows is the point-select table's size.
	mysqlBenchRows = 10000
	// mysqlDBMiBMax bounds -db-mib.
	mysqlDBMiBMax = 4096
	// mysqlMoveLoadWorkers runs the autocommit load of the move.
	mysqlMoveLoadWorkers = 6
	// mysqlLatencyFor is each target's one-connection latency run;
	// mysqlLatencyQueriesMax bounds its queries.
	mysqlLatencyFor        = 2 * time.Second
	mysqlLatencyQueriesMax = 200000
	// mysqlMoveLoadMax bounds the load's inserts.
	mysqlMoveLoadMax = 200000
)

func mysqlBench(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("hcbench mysql", flag.ExitOnError)
	duration := fs.Duration("duration", 1500*time.Millisecond, "length of each QPS measurement")
	rounds := fs.Int("rounds", 12, "how many times each target is measured, in turn (short interleaved rounds let a change in the machine's load fall on every target alike)")
	dbMiB := fs.Int("db-mib", 256, "database size for the move (MiB, 0.."+fmt.Sprint(mysqlDBMiBMax)+")")
	keep := fs.Bool("keep", false, "keep the cluster's directory (logs)")
	logLevel := fs.String("log-level", "info", "the nodes' log level: debug (every zfs command and its duration), info, warn or error")
	useZFS := fs.Bool("zfs", false, "put each node's datasets on a file-backed ZFS pool of its own (needs root and zfs; default: the portable driver)")
	perfEvents := fs.String("perf-events", "", "count these perf events machine-wide (`list`, as perf stat -e takes it, e.g. context-switches) during each QPS run and print them per query")
	cpuProfile := fs.String("cpuprofile", "", "write CPU profiles of the master node (its MySQL front end) during the proxy runs to `prefix`.N.pprof")
	_ = fs.Parse(args)
	if !perfEventsPattern.MatchString(*perfEvents) {
		return fmt.Errorf("-perf-events: a comma-separated list of perf event names, got %q", *perfEvents)
	}
	if *duration < 100*time.Millisecond || *duration > 10*time.Minute || *dbMiB < 0 || *dbMiB > mysqlDBMiBMax || *rounds < 1 || *rounds > mysqlBenchRoundsMax {
		return fmt.Errorf("-duration 100ms..10m, -rounds 1..%d, -db-mib 0..%d", mysqlBenchRoundsMax, mysqlDBMiBMax)
	}
	switch *logLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("-log-level: debug, info, warn or error, got %q", *logLevel)
	}
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		// Debian puts it in /usr/sbin, not on every user's PATH.
		if _, serr := os.Stat("/usr/sbin/haproxy"); serr != nil {
			return fmt.Errorf("haproxy is needed (scripts/test-deps.sh installs it): %w", err)
		}
		haproxy = "/usr/sbin/haproxy"
	}
	dir, err := os.MkdirTemp("", "hcbench-mysql-")
	if err != nil {
		return err
	}
	if *keep {
		fmt.Println("directory", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	bin, err := localcluster.Build(ctx, dir)
	if err != nil {
		return err
	}
	cc, err := startCluster(ctx, localcluster.Options{Nodes: 3, Dir: dir, Bin: bin, Args: []string{"-log-level", *logLevel}}, *useZFS)
	if err != nil {
		return err
	}
	defer cc.Close()
	c := cc.Cluster
	const site, user, password, db = "bench", "bench_user", "bench-pw", "bench_db"
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := c.HCCtl(ctx, 0, "site", "create", site, "--domain", site+".example", "--mysql-user", user+":"+password+":"+db)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("site create: %v: %s", err, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	s, err := waitReplicated(ctx, c, 0, site)
	if err != nil {
		return err
	}
	master := c.NodeIndex(s.Master)
	remote := (master + 1) % len(c.Nodes)
	open := func(addr, params string) (*sql.DB, error) {
		d, err := sql.Open("mysql", user+":"+password+"@"+addr+"/"+db+"?"+params)
		if err != nil {
			return nil, err
		}
		d.SetMaxOpenConns(mysqlBenchConnections)
		d.SetMaxIdleConns(mysqlBenchConnections)
		return d, nil
	}
	setup, err := open("tcp("+c.Nodes[master].MySQL+")", "multiStatements=true")
	if err != nil {
		return err
	}
	defer setup.Close()
	if _, err := setup.ExecContext(ctx, "CREATE TABLE kv (id INT PRIMARY KEY, v VARCHAR(64)) ENGINE=InnoDB"); err != nil {
		return fmt.Errorf("create table: %w", err)
	}
	for start := 0; start < mysqlBenchRows; start += 1000 {
		var b strings.Builder
		b.WriteString("INSERT INTO kv VALUES ")
		for i := start; i < start+1000; i++ {
			if i > start {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "(%d,'value-%d')", i, i)
		}
		if _, err := setup.ExecContext(ctx, b.String()); err != nil {
			return fmt.Errorf("fill: %w", err)
		}
	}

	// The site's server: its socket is in the option file in its dataset.
	cnf := filepath.Join(c.Nodes[master].DataDir, "datasets", "sites", site, "live", "mysql", "my.cnf")
	if *useZFS {
		cnf = filepath.Join(c.ZFSLiveDir(master, site), "mysql", "my.cnf")
	}
	sock, err := cnfValue(cnf, "socket")
	if err != nil {
		return err
	}
	serverPid := serverPidOf(cnf)
	hport, hpid, stopHAProxy, err := startHAProxy(ctx, haproxy, dir, sock)
	if err != nil {
		return err
	}
	defer stopHAProxy()

	// pids are the proxy processes of a target, whose CPU time per query
	// is reported: a figure a busy shared machine disturbs less than QPS
	// (the site's server and the client are not counted; for the nodes,
	// net of their background work).
	targets := []struct {
		name, addr string
		pids       []int
	}{
		{"direct", "unix(" + sock + ")", nil},
		{"haproxy", fmt.Sprintf("tcp(127.0.0.1:%d)", hport), []int{hpid}},
		{"proxy", "tcp(" + c.Nodes[master].MySQL + ")", []int{c.Pid(master)}},
		{"proxy_remote", "tcp(" + c.Nodes[remote].MySQL + ")", []int{c.Pid(master), c.Pid(remote)}},
	}
	var profile *nodeProfile
	if *cpuProfile != "" {
		if profile, err = startNodeProfile(ctx, c, master, *cpuProfile, *duration); err != nil {
			return err
		}
		defer profile.stop()
	}
	// Rounds of every target in turn, so that a change in what else runs
	// on the machine falls on all of them alike.
	counts := map[string]int64{}
	// roundCounts are each round's counts: a round's proxy and HAProxy
	// runs follow each other within seconds, so their ratio is one paired
	// sample, and the spread of those says how far a run's figure can move
	// with what else the machine does.
	roundCounts := map[string][]int64{}
	cpu := map[string]time.Duration{}
	// The nodes' own background work (the site's change checks, the
	// actors) goes on whatever the front does: its rate, measured while
	// the direct target runs (the front idle, the site as busy), is taken
	// out of the proxies' CPU.
	background := map[int]time.Duration{}
	// Where the whole machine's CPU went per query (the client is this
	// process): a proxy that costs little itself can still cost QPS by
	// the work it makes elsewhere, or by leaving processors idle.
	client, server, machine := map[string]time.Duration{}, map[string]time.Duration{}, map[string]machineCPU{}
	var backgroundFor time.Duration
	nodes := []int{c.Pid(master), c.Pid(remote)}
	for round := range *rounds {
		// Every other round runs the targets in reverse, so that what a
		// run leaves behind (the server's warm threads, the machine's
		// drift within a round) does not always fall on the same one.
		order := slices.Clone(targets)
		if round%2 == 1 {
			slices.Reverse(order)
		}
		for _, mode := range []string{"text", "prepared"} {
			for _, tg := range order {
				params := "interpolateParams=true"
				if mode == "prepared" {
					params = ""
				}
				d, err := open(tg.addr, params)
				if err != nil {
					return err
				}
				if tg.name == "proxy" {
					profile.resume(ctx)
				}
				before, nodesBefore, begun := pidsCPU(tg.pids), pidCPUs(nodes), time.Now()
				clientBefore, serverBefore, machineBefore := processCPU(os.Getpid()), processCPU(serverPid), readMachineCPU()
				key := tg.name + "_" + mode
				perf := startPerfStat(*perfEvents)
				n, err := pointSelects(ctx, d, mode == "prepared", *duration)
				took := time.Since(begun)
				client[key] += processCPU(os.Getpid()) - clientBefore
				server[key] += processCPU(serverPid) - serverBefore
				machine[key] = machine[key].add(readMachineCPU().sub(machineBefore))
				if counts := perf.stop(); len(counts) > 0 && n > 0 {
					var parts []string
					for _, c := range counts {
						parts = append(parts, fmt.Sprintf("%s=%.2f", c.event, c.value/float64(n)))
					}
					fmt.Fprintf(os.Stderr, "mysql_perf_per_query round=%d target=%s mode=%s %s\n", round+1, tg.name, mode, strings.Join(parts, " "))
				}
				used := pidsCPU(tg.pids) - before
				if tg.name == "direct" {
					for i, t := range pidCPUs(nodes) {
						background[nodes[i]] += t - nodesBefore[i]
					}
					backgroundFor += took
				} else if backgroundFor > 0 {
					for _, pid := range tg.pids {
						used -= time.Duration(float64(background[pid]) * float64(took) / float64(backgroundFor))
					}
				}
				cpu[tg.name+"_"+mode] += used
				if tg.name == "proxy" {
					profile.pause()
				}
				d.Close()
				if err != nil {
					return fmt.Errorf("%s %s: %w", tg.name, mode, err)
				}
				counts[tg.name+"_"+mode] += n
				roundCounts[tg.name+"_"+mode] = append(roundCounts[tg.name+"_"+mode], n)
				fmt.Fprintf(os.Stderr, "round=%d target=%s mode=%s qps=%.0f\n", round+1, tg.name, mode, float64(n)/duration.Seconds())
			}
		}
	}
	qps := map[string]float64{}
	for _, mode := range []string{"text", "prepared"} {
		for _, tg := range targets {
			q := float64(counts[tg.name+"_"+mode]) / (duration.Seconds() * float64(*rounds))
			qps[tg.name+"_"+mode] = q
			cpuUs := 0.0
			if n := counts[tg.name+"_"+mode]; n > 0 && tg.pids != nil {
				cpuUs = float64(cpu[tg.name+"_"+mode].Microseconds()) / float64(n)
			}
			fmt.Printf("mysql_qps target=%s mode=%s connections=%d qps=%.0f proxy_cpu_us_per_query=%.1f\n", tg.name, mode, mysqlBenchConnections, q, cpuUs)
			if n := counts[tg.name+"_"+mode]; n > 0 {
				key, per := tg.name+"_"+mode, func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) }
				m := machine[key]
				fmt.Printf("mysql_machine target=%s mode=%s busy_us_per_query=%.1f client_us=%.1f server_us=%.1f idle_pct=%.1f steal_pct=%.1f\n",
					tg.name, mode, per(m.busy), per(client[key]), per(server[key]), m.idlePercent(), m.percent(m.steal))
			}
		}
	}
	ratio := func(a, b string) float64 {
		return min(qps[a+"_text"]/qps[b+"_text"], qps[a+"_prepared"]/qps[b+"_prepared"])
	}
	fmt.Printf("mysql_ratios proxy_vs_haproxy_text=%.2f proxy_vs_haproxy_prepared=%.2f proxy_vs_direct_text=%.2f proxy_vs_direct_prepared=%.2f haproxy_vs_direct_text=%.2f remote_vs_direct_text=%.2f\n",
		qps["proxy_text"]/qps["haproxy_text"], qps["proxy_prepared"]/qps["haproxy_prepared"],
		qps["proxy_text"]/qps["direct_text"], qps["proxy_prepared"]/qps["direct_prepared"],
		qps["haproxy_text"]/qps["direct_text"], qps["proxy_remote_text"]/qps["direct_text"])
	var spread []string
	for _, mode := range []string{"text", "prepared"} {
		p, h := roundCounts["proxy_"+mode], roundCounts["haproxy_"+mode]
		var rs []float64
		for i := range min(len(p), len(h)) {
			if h[i] > 0 {
				rs = append(rs, float64(p[i])/float64(h[i]))
			}
		}
		if len(rs) > 0 {
			spread = append(spread, fmt.Sprintf("%s=%.2f/%.2f/%.2f", mode, slices.Min(rs), median(rs), slices.Max(rs)))
		}
	}
	fmt.Printf("mysql_round_ratios proxy_vs_haproxy %s (min/median/max of %d rounds, each a proxy run and the HAProxy run beside it, in alternating order)\n", strings.Join(spread, " "), *rounds)
	// One connection's latency (the median of sequential point selects),
	// each target in turn, text form.
	var lat []string
	for _, tg := range targets {
		d, err := open(tg.addr, "interpolateParams=true")
		if err != nil {
			return err
		}
		p50, err := pointSelectLatency(ctx, d, mysqlLatencyFor)
		d.Close()
		if err != nil {
			return fmt.Errorf("%s latency: %w", tg.name, err)
		}
		lat = append(lat, fmt.Sprintf("%s=%d", tg.name, p50.Microseconds()))
	}
	fmt.Printf("mysql_latency_p50_us %s (1 connection, text)\n", strings.Join(lat, " "))
	if profile != nil {
		files, err := profile.stop()
		if err != nil {
			return err
		}
		fmt.Println("cpu profiles of the master node during the proxy runs (go tool pprof merges them):", strings.Join(files, " "))
	}
	stopHAProxy()

	// Grow the database, then move it under load.
	if _, err := setup.ExecContext(ctx, "CREATE TABLE blobs (id INT PRIMARY KEY, b LONGBLOB) ENGINE=InnoDB; CREATE TABLE load_rows (id INT PRIMARY KEY, node INT) ENGINE=InnoDB"); err != nil {
		return err
	}
	chunk := strings.Repeat("x", 1<<20)
	for i := range *dbMiB {
		if _, err := setup.ExecContext(ctx, "INSERT INTO blobs VALUES (?, ?)", i, chunk); err != nil {
			return fmt.Errorf("grow: %w", err)
		}
	}
	if _, err := waitReplicated(ctx, c, 0, site); err != nil {
		return err
	}
	time.Sleep(3 * time.Second) // a snapshot with the grown database reaches the replica
	moving, err := c.Client(0).Site(ctx, site)
	if err != nil {
		return err
	}
	s = *moving
	target := c.Nodes[(c.NodeIndex(s.Master)+1)%len(c.Nodes)].Name
	stall, lost, acked, errs, moveTook, err := mysqlMoveUnderLoad(ctx, c, user, password, db, site, target, open)
	if err != nil {
		return err
	}
	storageKind := "portable"
	if *useZFS {
		storageKind = "zfs"
	}
	fmt.Printf("mysql_move storage=%s db_mib=%d from=%s to=%s move_s=%.2f inserts_acked=%d stall_ms=%d lost_rows=%d errors=%d\n",
		storageKind, *dbMiB, s.Master, target, moveTook.Seconds(), acked, stall.Milliseconds(), lost, errs)
	fmt.Printf("proxy_vs_haproxy=%.2f proxy_vs_direct=%.2f move_stall_ms=%d lost_rows=%d errors=%d\n",
		ratio("proxy", "haproxy"), ratio("proxy", "direct"), stall.Milliseconds(), lost, errs)
	return nil
}

// pointSelectLatency runs primary-key selects one after another on one
// connection for d0 and returns their median time.
func pointSelectLatency(ctx context.Context, d *sql.DB, d0 time.Duration) (time.Duration, error) {
	d.SetMaxOpenConns(1)
	if err := d.PingContext(ctx); err != nil {
		return 0, err
	}
	var took []time.Duration
	var v string
	for i, end := 0, time.Now().Add(d0); time.Now().Before(end) && len(took) < mysqlLatencyQueriesMax; i++ {
		begun := time.Now()
		if err := d.QueryRowContext(ctx, "SELECT v FROM kv WHERE id = ?", (i*7919)%mysqlBenchRows).Scan(&v); err != nil {
			return 0, err
		}
		took = append(took, time.Since(begun))
	}
	slices.Sort(took)
	return took[len(took)/2], nil
}

// pointSelects runs primary-key selects on 16 connections for d and
// returns how many completed.
func pointSelects(ctx context.Context, d *sql.DB, prepared bool, d0 time.Duration) (int64, error) {
	var stmt *sql.Stmt
	if prepared {
		var err error
		if stmt, err = d.PrepareContext(ctx, "SELECT v FROM kv WHERE id = ?"); err != nil {
			return 0, err
		}
		defer stmt.Close()
	}
	// Warm the pool: every connection is opened (and authenticated) before
	// the clock starts, so that no target's figure includes its handshakes.
	conns := make([]*sql.Conn, 0, mysqlBenchConnections)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range mysqlBenchConnections {
		c, err := d.Conn(ctx)
		if err != nil {
			return 0, err
		}
		conns = append(conns, c)
		if err := c.PingContext(ctx); err != nil {
			return 0, err
		}
	}
	for _, c := range conns {
		c.Close() // back to the pool, idle
	}
	conns = nil
	var n atomic.Int64
	var firstErr error
	var mu sync.Mutex
	end := time.Now().Add(d0)
	var wg sync.WaitGroup
	for w := range mysqlBenchConnections {
		wg.Go(func() {
			var v string
			for i := w; time.Now().Before(end) && ctx.Err() == nil; i += mysqlBenchConnections {
				id := (i * 7919) % mysqlBenchRows
				var err error
				if prepared {
					err = stmt.QueryRowContext(ctx, id).Scan(&v)
				} else {
					err = d.QueryRowContext(ctx, "SELECT v FROM kv WHERE id = ?", id).Scan(&v)
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	return n.Load(), firstErr
}

// mysqlMoveUnderLoad migrates site to target while autocommit inserts and
// selects run through every node, and counts what the clients saw.
func mysqlMoveUnderLoad(ctx context.Context, c *localcluster.Cluster, user, password, db, site, target string,
	open func(addr, params string) (*sql.DB, error)) (stall time.Duration, lost, acked, errs int, took time.Duration, err error) {
	lctx, stop := context.WithTimeout(ctx, 5*time.Minute)
	defer stop()
	type op struct {
		start time.Time
		took  time.Duration
		id    int
		ok    bool
		via   string
	}
	var mu sync.Mutex
	var ops []op
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range mysqlMoveLoadWorkers {
		i := w % len(c.Nodes)
		d, err := open("tcp("+c.Nodes[i].MySQL+")", "")
		if err != nil {
			return 0, 0, 0, 0, 0, err
		}
		d.SetMaxOpenConns(1)
		defer d.Close()
		wg.Go(func() {
			for lctx.Err() == nil {
				id := int(next.Add(1))
				if id > mysqlMoveLoadMax {
					return
				}
				begun := time.Now()
				_, err := d.ExecContext(context.Background(), "INSERT INTO load_rows VALUES (?, ?)", id, i)
				var n int
				if err == nil {
					err = d.QueryRowContext(context.Background(), "SELECT COUNT(*) FROM load_rows WHERE id = ?", id).Scan(&n)
				}
				mu.Lock()
				ops = append(ops, op{begun, time.Since(begun), id, err == nil, c.Nodes[i].Name})
				if err != nil {
					errs++
					if errs <= 5 {
						fmt.Fprintf(os.Stderr, "hcbench: client error via %s: %v\n", c.Nodes[i].Name, err)
					}
				}
				mu.Unlock()
			}
		})
	}
	time.Sleep(2 * time.Second)
	moveStart := time.Now()
	out, merr := c.HCCtl(ctx, 0, "migrate", site, target, "--timeout", "120s")
	moveEnd := time.Now()
	time.Sleep(2 * time.Second)
	stop()
	wg.Wait()
	if merr != nil {
		return 0, 0, 0, 0, 0, fmt.Errorf("migrate: %v: %s", merr, out)
	}
	check, err := open("tcp("+c.Nodes[0].MySQL+")", "")
	if err != nil {
		return 0, 0, 0, 0, 0, err
	}
	defer check.Close()
	stored := map[int]bool{}
	rows, err := check.QueryContext(ctx, "SELECT id FROM load_rows")
	if err != nil {
		return 0, 0, 0, 0, 0, err
	}
	for rows.Next() {
		var id int
		if err := rows.Scan(&id); err != nil {
			return 0, 0, 0, 0, 0, err
		}
		stored[id] = true
	}
	rows.Close()
	var longest op
	for _, o := range ops {
		if o.ok {
			acked++
			if !stored[o.id] {
				lost++
			}
		}
		if o.start.Before(moveEnd) && o.start.Add(o.took).After(moveStart) && o.took > stall {
			stall, longest = o.took, o
		}
	}
	// When the longest stall began and ended, to line it up with the
	// nodes' logs (UTC, as they log).
	const clock = "15:04:05.000"
	fmt.Fprintf(os.Stderr, "mysql_move_stall via=%s began=%s ended=%s took_ms=%d migrate_began=%s migrate_ended=%s\n",
		longest.via, longest.start.UTC().Format(clock), longest.start.Add(longest.took).UTC().Format(clock), stall.Milliseconds(),
		moveStart.UTC().Format(clock), moveEnd.UTC().Format(clock))
	return stall, lost, acked, errs, moveEnd.Sub(moveStart), nil
}

// cnfValue reads key's value from a site server's option file (the
// key=value lines runtime/sites writes).
func cnfValue(cnf, key string) (string, error) {
	b, err := os.ReadFile(cnf)
	if err != nil {
		return "", err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+"="); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("%s: no %s", cnf, key)
}

// serverPidOf is the pid of a site's server, from the pid-file its option
// file names (0: not known; its CPU is then not reported).
func serverPidOf(cnf string) int {
	file, err := cnfValue(cnf, "pid-file")
	if err != nil {
		return 0
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// perfEventsPattern is what -perf-events takes (empty: none): event names
// as perf stat -e lists them, never an option of perf's.
var perfEventsPattern = regexp.MustCompile(`^([A-Za-z0-9_][A-Za-z0-9_:.-]*(,[A-Za-z0-9_][A-Za-z0-9_:.-]*)*)?$`)

// perfStat is a machine-wide perf stat run (nil: none).
type perfStat struct {
	cmd *exec.Cmd
	out bytes.Buffer
}

type perfCount struct {
	event string
	value float64
}

// startPerfStat counts events machine-wide until stop ("": nothing, and
// a perf that does not start is reported and skipped).
func startPerfStat(events string) *perfStat {
	if events == "" {
		return nil
	}
	p := &perfStat{}
	p.cmd = exec.Command("perf", "stat", "-a", "-x,", "-e", events)
	p.cmd.Stderr = &p.out
	if err := p.cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "perf stat:", err)
		return nil
	}
	return p
}

// stop ends the count and returns it (perf stat -x, lines: value,unit,event,...).
func (p *perfStat) stop() []perfCount {
	if p == nil {
		return nil
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	_ = p.cmd.Wait()
	var out []perfCount
	for line := range strings.Lines(p.out.String()) {
		f := strings.Split(line, ",")
		if len(f) < 3 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			out = append(out, perfCount{f[2], v})
		}
	}
	return out
}

// machineCPU is the machine's CPU time (all processors) by whether it
// was busy, from /proc/stat.
type machineCPU struct{ busy, idle, steal time.Duration }

func readMachineCPU() machineCPU {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return machineCPU{}
	}
	var m machineCPU
	const ticksPerSecond = 100 // USER_HZ on Linux
	for i, v := range f[1:] {
		t, _ := strconv.ParseInt(v, 10, 64)
		d := time.Duration(t) * time.Second / ticksPerSecond
		switch i {
		case 3, 4: // idle, iowait
			m.idle += d
		case 7: // steal: the hypervisor ran something else
			m.steal += d
		case 8, 9: // guest, guest_nice: already in user and nice
		default:
			m.busy += d
		}
	}
	return m
}

func (m machineCPU) sub(o machineCPU) machineCPU {
	return machineCPU{m.busy - o.busy, m.idle - o.idle, m.steal - o.steal}
}

func (m machineCPU) add(o machineCPU) machineCPU {
	return machineCPU{m.busy + o.busy, m.idle + o.idle, m.steal + o.steal}
}

func (m machineCPU) idlePercent() float64 {
	return m.percent(m.idle)
}

func (m machineCPU) percent(d time.Duration) float64 {
	if m.busy+m.idle+m.steal <= 0 {
		return 0
	}
	return 100 * float64(d) / float64(m.busy+m.idle+m.steal)
}

// pidCPUs is the CPU time each of pids has used.
func pidCPUs(pids []int) []time.Duration {
	out := make([]time.Duration, len(pids))
	for i, pid := range pids {
		out[i] = processCPU(pid)
	}
	return out
}

// pidsCPU is the CPU time the processes pids have used.
func pidsCPU(pids []int) time.Duration {
	var t time.Duration
	for _, pid := range pids {
		t += processCPU(pid)
	}
	return t
}

// startHAProxy runs HAProxy in TCP mode from a free loopback port to sock.
func startHAProxy(ctx context.Context, bin, dir, sock string) (port, pid int, stop func(), err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, nil, err
	}
	port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	cfg := filepath.Join(dir, "haproxy.cfg")
	text := fmt.Sprintf(`global
    maxconn 1024
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend mysql
    bind 127.0.0.1:%d
    default_backend site
backend site
    server db %s
`, port, sock)
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		return 0, 0, nil, err
	}
	cmd := exec.CommandContext(ctx, bin, "-db", "-f", cfg)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return 0, 0, nil, err
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
	}
	for range 100 {
		if conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
			conn.Close()
			return port, cmd.Process.Pid, stop, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	return 0, 0, nil, fmt.Errorf("haproxy did not listen on %d", port)
}
