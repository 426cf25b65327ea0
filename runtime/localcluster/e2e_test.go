package localcluster

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/admin"
	"github.com/hybridcluster/hybridcluster/runtime/storage/zfsdriver/zfstest"
)

// End-to-end tests: real hcnode processes on 127.0.0.1, the real hcctl,
// curl, and hcdemoapp as the sites' application (its writes are
// acknowledged only after fsync). `make e2e` runs only these.

var bins *Binaries

var keepLogs = flag.Bool("keep", false, "keep the clusters' directories (logs) after the tests")

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "hc-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins, err = Build(context.Background(), dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// storages are the storage drivers the end-to-end tests run on: the
// portable driver always, real ZFS (zfs-fuse here) when it works, which CI
// demands (zfstest.Required).
func storages(t *testing.T) []string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if ok, why := ZFSAvailable(ctx); ok {
		return []string{"portable", "zfs"}
	} else if zfstest.Required() {
		t.Fatalf("ZFS is required here (CI) but not available: %s", why)
	}
	return []string{"portable"}
}

func newCluster(t *testing.T, nodes int, storage ...string) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test (real processes)")
	}
	dir := t.TempDir()
	if *keepLogs {
		dir, _ = os.MkdirTemp("", "hc-e2e-")
		t.Logf("cluster directory %s", dir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	opt := Options{Nodes: nodes, Dir: dir, Bin: bins, Args: []string{"-log-level", "debug"}}
	if len(storage) > 0 && storage[0] == "zfs" {
		pool, env, destroy, err := CreatePool(ctx, dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(destroy) // runs after the nodes stop (cleanups run last-in first-out)
		opt.ZFSPool, opt.Env = pool, env
	}
	c, err := Start(ctx, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			t.Logf("node logs:\n%s", c.Logs(60))
		}
	})
	return c
}

// createSite creates an app site through the real hcctl (retrying while
// the balancer waits for every node's first report) and waits until it is
// active with a replica that holds a snapshot.
func createSite(t *testing.T, ctx context.Context, c *Cluster, name, domain string) admin.Site {
	t.Helper()
	return createSiteWith(t, ctx, c, name, "--domain", domain, "--app", bins.HCDemoApp)
}

// createSiteWith creates a site through the real hcctl with the given
// flags (retrying while the cluster settles, for a bounded time) and waits
// until it is active with a replica that holds a snapshot.
func createSiteWith(t *testing.T, ctx context.Context, c *Cluster, name string, flags ...string) admin.Site {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := c.HCCtl(ctx, 0, append([]string{"site", "create", name}, flags...)...)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hcctl site create: %v\n%s", err, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	s, err := c.WaitSite(wctx, 0, name, func(s admin.Site) bool {
		if s.Master == "" || s.Phase != "active" {
			return false
		}
		for _, cp := range s.Copies {
			if cp.Role == "replica" && cp.Latest != nil {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func curl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("curl", append([]string{"-sS", "--max-time", "10"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %v: %v: %s", args, err, out)
	}
	return string(out)
}

// A site created through hcctl is served by every node, by Host, with the
// same content; an unknown host gets a 404 page.
func TestE2EServedByEveryNode(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is needed (make deps installs it)")
	}
	c := newCluster(t, 3)
	ctx := context.Background()
	s := createSite(t, ctx, c, "shop", "shop.example")
	t.Logf("shop: master %s, replicas %v, epoch %s", s.Master, s.Replicas, s.Epoch)

	if got := curl(t, "-X", "POST", "-H", "Host: shop.example", c.URL(1)+"/write?id=7"); strings.TrimSpace(got) != "ok id=7" {
		t.Fatalf("write through n2: %q", got)
	}
	var pages []string
	for i := range c.Nodes {
		got := curl(t, "-H", "Host: shop.example", c.URL(i)+"/writes")
		if strings.TrimSpace(got) != "7" {
			t.Fatalf("GET /writes through %s: %q", c.Nodes[i].Name, got)
		}
		page := curl(t, "-H", "Host: SHOP.example:80", c.URL(i)+"/")
		if !strings.Contains(page, "<h1>shop</h1>") {
			t.Fatalf("GET / through %s: %q", c.Nodes[i].Name, page)
		}
		pages = append(pages, regexp.MustCompile(`note-\d+`).ReplaceAllString(page, "note"))
	}
	if pages[0] != pages[1] || pages[1] != pages[2] {
		t.Fatalf("nodes serve different content:\n%s\n%s\n%s", pages[0], pages[1], pages[2])
	}
	code := curl(t, "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: nosuch.example", c.URL(2)+"/")
	if code != "404" {
		t.Fatalf("unknown host: %s", code)
	}

	// The balancer sees the requests the front ends forwarded straight to
	// the master (its load) and every node's free space and pool size.
	loadSeen, freeSeen := false, false
	var nodes []admin.Node
	for attempt := 0; attempt < 60 && !(loadSeen && freeSeen); attempt++ {
		for range 20 {
			if st, _, err := c.Do(ctx, 2, "GET", "shop.example", "/health", nil); err != nil || st != 200 {
				t.Fatalf("GET /health: %d %v", st, err)
			}
		}
		var err error
		if nodes, err = c.Client(0).Nodes(ctx); err != nil {
			t.Fatal(err)
		}
		freeSeen = true
		for _, n := range nodes {
			if !n.Live || n.FreeBytes == 0 || n.SizeBytes < n.FreeBytes {
				freeSeen = false
			}
			if n.Name == s.Master && n.Load > 0 {
				loadSeen = true
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	if !loadSeen || !freeSeen {
		t.Fatalf("the balancer's view lacks the master's load (%v) or a node's free space and size (%v): %+v", loadSeen, freeSeen, nodes)
	}

	// The three processes are one protoactor cluster (the automanaged
	// provider, seeded with the members' health endpoints): every node's
	// topology comes to name every member (bounded wait: a few polls).
	var missing string
	for attempt := 0; attempt < 40; attempt++ {
		missing = ""
		for i := range c.Nodes {
			nodes, err := c.Client(i).Nodes(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range nodes {
				if !strings.HasPrefix(n.ClusterMember, n.Name+"@") {
					missing = fmt.Sprintf("%s's view: node %s has cluster member id %q, want %s@<incarnation>", c.Nodes[i].Name, n.Name, n.ClusterMember, n.Name)
				}
			}
		}
		if missing == "" {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if missing != "" {
		t.Fatal(missing)
	}

	// hcctl's table and --json agree on the site.
	out, err := c.HCCtl(ctx, 2, "sites", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var list struct{ Sites []admin.Site }
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("hcctl sites --json: %v\n%s", err, out)
	}
	if len(list.Sites) != 1 || list.Sites[0].Name != "shop" || list.Sites[0].Master != s.Master {
		t.Fatalf("hcctl sites --json: %s", out)
	}
	table, err := c.HCCtl(ctx, 1, "sites")
	if err != nil || !strings.Contains(table, "shop") || !strings.Contains(table, s.Master) {
		t.Fatalf("hcctl sites: %v\n%s", err, table)
	}
	if show, err := c.HCCtl(ctx, 1, "site", "show", "shop"); err != nil || strings.Contains(show, "FAILING") {
		t.Fatalf("hcctl site show of a healthy site: %v\n%s", err, show)
	}

	// A site whose app cannot stay up is active (its dataset is), and the
	// operator sees why it does not serve in hcctl site show.
	createSiteWith(t, ctx, c, "broken", "--domain", "broken.example", "--app", "/bin/false")
	// (The request waits for a start, up to the supervisor's bound.)
	if code := curl(t, "--max-time", "30", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: broken.example", c.URL(0)+"/"); code != "503" {
		t.Fatalf("a site whose app exits at once answered %s, want 503", code)
	}
	var show string
	for attempt := 0; attempt < 40 && !strings.Contains(show, "FAILING: app exited: exit status 1"); attempt++ {
		time.Sleep(250 * time.Millisecond)
		if show, err = c.HCCtl(ctx, 2, "site", "show", "broken"); err != nil {
			t.Fatal(err)
		}
	}
	if !strings.Contains(show, "processes:") || !strings.Contains(show, "FAILING: app exited: exit status 1") {
		t.Fatalf("hcctl site show of a site whose app exits:\n%s", show)
	}
}

// A planned migration under continuous writes loses no acknowledged write
// and fails none; the pause (the longest write during the move) is reported.
func TestE2EMigrationUnderWrites(t *testing.T) {
	for _, st := range storages(t) {
		t.Run(st, func(t *testing.T) { testMigrationUnderWrites(t, st) })
	}
}

func testMigrationUnderWrites(t *testing.T, storage string) {
	c := newCluster(t, 3, storage)
	ctx := context.Background()
	s := createSite(t, ctx, c, "blog", "blog.example")
	target := ""
	for _, n := range c.Nodes {
		if n.Name != s.Master {
			target = n.Name
			break
		}
	}
	wctx, stopWrites := context.WithTimeout(ctx, 90*time.Second)
	defer stopWrites()
	w := &Writer{Domain: "blog.example", Nodes: []int{0, 1, 2}, Max: 20000}
	done := make(chan struct{})
	go func() { w.Run(wctx, c); close(done) }()
	time.Sleep(time.Second)
	moveStart := time.Now()
	out, err := c.HCCtl(ctx, 0, "migrate", "blog", target, "--timeout", "60s")
	moveEnd := time.Now()
	if err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	t.Logf("hcctl migrate:\n%s", out)
	time.Sleep(time.Second)
	stopWrites()
	<-done

	writes := w.Writes()
	var during []time.Duration
	failed := 0
	for _, wr := range writes {
		if !wr.Acked {
			failed++
			t.Errorf("write %d through %s failed: status %d %s", wr.ID, c.Nodes[wr.Node].Name, wr.Status, wr.Err)
		}
		if wr.Start.Before(moveEnd) && wr.Start.Add(wr.Latency).After(moveStart) {
			during = append(during, wr.Latency)
		}
	}
	stored, err := c.StoredIDs(ctx, 0, "blog.example")
	if err != nil {
		t.Fatal(err)
	}
	lost := 0
	for _, wr := range writes {
		if wr.Acked && !stored[wr.ID] {
			lost++
		}
	}
	after, err := c.Client(1).Site(ctx, "blog")
	if err != nil {
		t.Fatal(err)
	}
	if after.Master != target {
		t.Fatalf("master after the move: %s, want %s", after.Master, target)
	}
	t.Logf("migration %s -> %s: writes=%d failed=%d lost_acknowledged=%d move_s=%.2f during_move: n=%d p50=%v p99=%v max(pause)=%v",
		s.Master, target, len(writes), failed, lost, moveEnd.Sub(moveStart).Seconds(), len(during),
		Percentile(during, 50), Percentile(during, 99), Percentile(during, 100))
	if lost > 0 {
		t.Fatalf("%d acknowledged writes lost in a planned move", lost)
	}
	if len(writes) < 10 {
		t.Fatalf("only %d writes: the load did not run", len(writes))
	}
}

// kill -9 of a site's master: the site is served again from the newest
// replica; every write acknowledged more than the replication bound before
// the kill survives; the killed node rejoins and catches up incrementally.
func TestE2EFailoverAndRejoin(t *testing.T) {
	for _, st := range storages(t) {
		t.Run(st, func(t *testing.T) { testFailoverAndRejoin(t, st) })
	}
}

func testFailoverAndRejoin(t *testing.T, storage string) {
	c := newCluster(t, 3, storage)
	ctx := context.Background()
	s := createSite(t, ctx, c, "news", "news.example")
	victim := c.NodeIndex(s.Master)
	var others []int
	for i := range c.Nodes {
		if i != victim {
			others = append(others, i)
		}
	}
	res, err := Failover(ctx, c, "news", "news.example", others)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("failover of %s: served again after %.2fs (new master %s); acknowledged writes=%d lost=%d newest_lost_age_s=%.2f",
		s.Master, res.Recovery.Seconds(), res.NewMaster, res.Acked, res.Lost, res.NewestLostAge.Seconds())
	// Every write acknowledged before the newest snapshot of the old
	// master's history that the new master holds was taken is in that
	// snapshot, so it survives (how old that snapshot was at the kill is
	// the data-loss window, a figure for the benchmark, not a pass mark).
	snaps, err := c.Client(others[0]).Snapshots(ctx, "news")
	if err != nil {
		t.Fatal(err)
	}
	var replicated time.Time
	for _, sn := range snaps.Snapshots {
		if sn.Epoch == res.OldEpoch && sn.TakenAt.After(replicated) {
			replicated = sn.TakenAt
		}
	}
	if replicated.IsZero() {
		t.Fatalf("the new master holds no snapshot of the old history (epoch %s): %+v", res.OldEpoch, snaps.Snapshots)
	}
	covered := 0
	for _, wr := range res.Writes {
		if wr.Acked && wr.AckedAt.Before(replicated) {
			covered++
			if !res.Stored[wr.ID] {
				t.Fatalf("write %d, acknowledged before snapshot time %v that reached the new master, was lost", wr.ID, replicated)
			}
		}
	}
	t.Logf("%d writes acknowledged before the newest replicated snapshot all survived; data-loss window %.2fs",
		covered, res.OldestLostAge.Seconds())
	if covered == 0 {
		t.Fatal("no write preceded the replicated snapshot: the check checked nothing")
	}

	// The killed node comes back, is told of the new master and catches up
	// from the snapshot both hold.
	more := &Writer{Domain: "news.example", Nodes: others, Max: 50}
	more.Run(ctx, c)
	if err := c.StartNode(ctx, victim); err != nil {
		t.Fatal(err)
	}
	name := c.Nodes[victim].Name
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	final, err := c.WaitSite(wctx, others[0], "news", func(s admin.Site) bool {
		var master *admin.Copy
		for i := range s.Copies {
			if s.Copies[i].Node == s.Master {
				master = &s.Copies[i]
			}
		}
		for _, cp := range s.Copies {
			if cp.Node == name && cp.Role == "replica" && cp.Latest != nil && master != nil && master.Latest != nil &&
				cp.Latest.Name == master.Latest.Name {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatal(err)
	}
	sent, full := streamBytes(t, c.Nodes[c.NodeIndex(final.Master)].LogPath, name)
	t.Logf("rejoin of %s: caught up; bytes sent to it since: incremental=%d full=%d", name, sent, full)
	if full > 0 {
		t.Fatalf("the rejoining node got a full stream (%d bytes); want incremental only", full)
	}
}

// streamBytes sums the "snapshot sent" debug lines of a node's log for
// streams to node `to`.
func streamBytes(t *testing.T, logPath, to string) (incremental, full int64) {
	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	re := regexp.MustCompile(`msg="snapshot sent".* to=(\S+) .* full=(\S+) bytes=(\d+)`)
	for sc.Scan() {
		mt := re.FindStringSubmatch(sc.Text())
		if mt == nil || mt[1] != to {
			continue
		}
		n, _ := strconv.ParseInt(mt[3], 10, 64)
		if mt[2] == "true" {
			full += n
		} else {
			incremental += n
		}
	}
	return incremental, full
}

var _ = filepath.Join
