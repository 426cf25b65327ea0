package host

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/internal/loopback"
	"github.com/hybridcluster/hybridcluster/runtime/storage"
	"github.com/hybridcluster/hybridcluster/runtime/storage/portable"
)

// waitMax bounds every wait in these tests.
const waitMax = 10 * time.Second

func testConfig() *core.Config {
	c := core.Default()
	c.SnapshotInterval = 200 * time.Millisecond
	c.ReportInterval = 200 * time.Millisecond
	c.BalancerWarmup = 400 * time.Millisecond
	c.HeartbeatInterval = 100 * time.Millisecond
	c.FailureTimeout = time.Second
	c.ProbeTimeout = 500 * time.Millisecond
	c.RequestTimeout = 3 * time.Second
	c.StepTimeout = 3 * time.Second
	c.StreamTimeout = 5 * time.Second
	c.ActionTimeout = 3 * time.Second
	return c
}

// syncBuffer collects the cluster's log; it is printed when a test fails.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type testNode struct {
	opt    Options
	driver *portable.Driver
	host   *Host
}

type testCluster struct {
	t     *testing.T
	nodes map[string]*testNode
	names []string
	logs  *syncBuffer // every node's log
}

// freePort is a loopback port for an address protoactor binds itself,
// from below the ephemeral range (loopback.FreePorts): a port the kernel
// handed out and took back can go to another test's connection before
// protoactor binds it.
func freePort(t *testing.T) int {
	t.Helper()
	ports, err := loopback.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	return ports[0]
}

// startCluster starts n hosts on 127.0.0.1, each with its own protoactor
// port, stream endpoint and portable store in a temp dir.
func startCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	return startClusterWith(t, n, nil)
}

// startClusterWith is startCluster with a hook that may change each node's
// options before it starts.
func startClusterWith(t *testing.T, n int, tweak func(name string, opt *Options)) *testCluster {
	t.Helper()
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	c := &testCluster{t: t, nodes: map[string]*testNode{}, logs: logs}
	var members []Member
	listeners := map[string]net.Listener{}
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("n%d", i)
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		listeners[name] = lis
		members = append(members, Member{Name: name, ActorAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			StreamURL: "http://" + lis.Addr().String()})
		c.names = append(c.names, name)
	}
	dir := t.TempDir()
	// Registered before the first start, so that a node that fails to
	// start does not leave the ones started before it running (their
	// connections would count in the next test's).
	t.Cleanup(func() {
		for _, name := range c.names {
			if n := c.nodes[name]; n != nil && n.host != nil {
				h := n.host
				if p := h.Panics(); p != 0 {
					t.Errorf("%s: %d actor panics", name, p)
				}
				h.Stop()
			}
		}
		if t.Failed() || os.Getenv("HC_HOST_LOG") != "" {
			t.Logf("cluster log:\n%s", logs.String())
		}
	})
	for _, mb := range members {
		drv, err := portable.New(filepath.Join(dir, mb.Name, "store"), nil)
		if err != nil {
			t.Fatal(err)
		}
		opt := Options{Node: mb.Name, Members: members, Config: testConfig(), Driver: drv,
			StateDir: filepath.Join(dir, mb.Name, "state"), StreamToken: "test-token",
			StreamListener: listeners[mb.Name], Logger: log.With("host", mb.Name)}
		if tweak != nil {
			tweak(mb.Name, &opt)
		}
		h, err := Start(opt)
		if err != nil {
			t.Fatal(err)
		}
		c.nodes[mb.Name] = &testNode{opt: opt, driver: drv, host: h}
	}
	return c
}

// eventually polls f every 50 ms until it returns nil, for at most waitMax.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(waitMax)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v: %v", what, waitMax, err)
}

func (c *testCluster) request(entry string, req *m.SiteRequest) (*m.SiteResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.nodes[entry].host.Request(ctx, req)
}

// snapshots lists what a node's disk holds of site (nil if no dataset).
func (c *testCluster) snapshots(node, site string) []storage.Snapshot {
	ctx := context.Background()
	s := storage.MustSite(site)
	if ok, err := c.nodes[node].driver.Exists(ctx, s); err != nil || !ok {
		return nil
	}
	snaps, err := c.nodes[node].driver.ListSnapshots(ctx, s)
	if err != nil {
		c.t.Fatal(err)
	}
	return snaps
}

func has(snaps []storage.Snapshot, name string) bool {
	for _, s := range snaps {
		if s.Name.String() == name {
			return true
		}
	}
	return false
}

// placeSite creates site through node "n2" and waits until it is served and
// one other node's disk holds a snapshot the master took.
func (c *testCluster) placeSite(site string) (master, replica string) {
	t := c.t
	t.Helper()
	c.nodes["n2"].host.Send(core.NodeAddr("n2"), &m.CreateSite{
		Spec: &m.SiteSpec{Name: site, Domains: []string{site + ".example"}}, RequestId: 1, ReplyNode: "n2"})
	eventually(t, "site placed and served", func() error {
		resp, err := c.request("n1", &m.SiteRequest{Site: site, Idempotent: true})
		if err != nil {
			return err
		}
		if resp.Code != m.Code_CODE_OK {
			return fmt.Errorf("answer %s: %s", resp.Code, resp.Detail)
		}
		master = resp.Master
		return nil
	})
	eventually(t, "replica holds the master's snapshot", func() error {
		ms := c.snapshots(master, site)
		if len(ms) == 0 {
			return fmt.Errorf("master %s has no snapshot", master)
		}
		for _, n := range c.names {
			if n == master {
				continue
			}
			rs := c.snapshots(n, site)
			if len(rs) > 0 && has(ms, rs[len(rs)-1].Name.String()) {
				replica = n
				return nil
			}
		}
		return fmt.Errorf("no replica holds any of %d snapshots of %s", len(ms), master)
	})
	t.Logf("site %s: master %s, replica %s holds %d snapshots", site, master, replica, len(c.snapshots(replica, site)))
	return master, replica
}

// other returns a member that is none of not.
func (c *testCluster) other(not ...string) string {
	for _, n := range c.names {
		if !slices.Contains(not, n) {
			return n
		}
	}
	c.t.Fatalf("no member besides %v", not)
	return ""
}

// servedBy waits until a write entering at entry is answered OK by master.
func (c *testCluster) servedBy(entry, site, master string) {
	c.t.Helper()
	eventually(c.t, "served by "+master, func() error {
		resp, err := c.request(entry, &m.SiteRequest{Site: site, Write: true, WriteId: 9})
		if err != nil {
			return err
		}
		if resp.Code != m.Code_CODE_OK || resp.Master != master {
			return fmt.Errorf("answer %s from %q: %s", resp.Code, resp.Master, resp.Detail)
		}
		return nil
	})
}

// TestClusterCreateReplicateServeMigrate: three hosts; a created site is
// placed, snapshotted and streamed to its replica's disk; a write through a
// node that is not master is served; a migration moves the master and later
// requests are served by the new one.
func TestClusterCreateReplicateServeMigrate(t *testing.T) {
	c := startCluster(t, 3)
	const site = "alpha"
	master, replica := c.placeSite(site)

	// A write through a node that is not master is served by the master.
	entry := c.other(master)
	resp, err := c.request(entry, &m.SiteRequest{Site: site, Write: true, WriteId: 7, BodyBytes: 100})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Code != m.Code_CODE_OK || resp.Master != master || resp.WriteId != 7 {
		t.Fatalf("write through %s: got %v, want OK from %s", entry, resp, master)
	}

	// Migration to the replica: afterwards the new master serves.
	c.nodes[master].host.Send(core.SiteAddr(master, site), &m.Migrate{Site: site, Target: replica, Reason: "admin"})
	c.servedBy(c.other(master, replica), site, replica)
	// And the old master now holds a copy of the new master's history.
	eventually(t, "old master receives from the new master", func() error {
		rs := c.snapshots(master, site)
		if len(rs) == 0 {
			return fmt.Errorf("old master %s has no snapshot", master)
		}
		e, _, ok := parseSnapshotName(rs[len(rs)-1].Name.String())
		if !ok || e.Node != replica {
			return fmt.Errorf("newest snapshot on old master is %s", rs[len(rs)-1].Name)
		}
		return nil
	})
}

func TestParseSnapshotName(t *testing.T) {
	for _, tc := range []struct {
		e   *m.Epoch
		seq uint64
	}{{&m.Epoch{Term: 1, Node: "n1"}, 1}, {&m.Epoch{Term: 1723456789012, Node: "node-a-s3"}, 42}} {
		name := core.SnapshotName(tc.e, tc.seq)
		e, seq, ok := parseSnapshotName(name)
		if !ok || e.Term != tc.e.Term || e.Node != tc.e.Node || seq != tc.seq {
			t.Errorf("%s: got %v %d %v", name, e, seq, ok)
		}
	}
	for _, bad := range []string{"", "x1-n1-s1", "e-n1-s1", "e1-n1", "e1-n1-sx", "hc-safety"} {
		if _, _, ok := parseSnapshotName(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}

func (c *testCluster) stop(name string) {
	c.nodes[name].host.Stop()
	c.nodes[name].host = nil
}

// restart starts a stopped node again on the same ports, store and state.
func (c *testCluster) restart(name string) {
	n := c.nodes[name]
	opt := n.opt
	opt.StreamListener = nil // closed by Stop: listen on the StreamURL again
	h, err := Start(opt)
	if err != nil {
		c.t.Fatal(err)
	}
	n.host = h
}

// TestClusterFailoverAndRejoin: the master's host stops; the replica is
// promoted and serves; the old master restarts from its disk and rejoins;
// the cluster converges on one master and both copies hold its history.
func TestClusterFailoverAndRejoin(t *testing.T) {
	c := startCluster(t, 3)
	const site = "beta"
	master, replica := c.placeSite(site)
	stopped := time.Now()
	c.stop(master)
	c.servedBy(c.other(master, replica), site, replica)
	t.Logf("served by %s %v after %s stopped", replica, time.Since(stopped).Round(time.Millisecond), master)

	c.restart(master)
	if inc := c.nodes[master].host.Incarnation(); inc != 2 {
		t.Errorf("incarnation after restart %d, want 2", inc)
	}
	// Which history wins is the actors' decision (a rejoined balancer that
	// has not heard its peers yet may promote its own copy, and the heal
	// then keeps the newest history); the host's part is that the cluster
	// converges: one master serves through every node, and the other copy
	// holds the master's newest snapshot.
	var winner string
	eventually(t, "cluster converges after the rejoin", func() error {
		resp, err := c.request(master, &m.SiteRequest{Site: site, Idempotent: true})
		if err != nil {
			return err
		}
		if resp.Code != m.Code_CODE_OK {
			return fmt.Errorf("answer %s: %s", resp.Code, resp.Detail)
		}
		winner = resp.Master
		loser := master
		if winner == master {
			loser = replica
		}
		ws, ls := c.snapshots(winner, site), c.snapshots(loser, site)
		if len(ws) == 0 || len(ls) == 0 || ws[len(ws)-1].Name != ls[len(ls)-1].Name {
			return fmt.Errorf("master %s and copy %s not at the same snapshot", winner, loser)
		}
		return nil
	})
	t.Logf("after the rejoin %s is master", winner)
	for _, n := range c.names {
		c.servedBy(n, site, winner)
	}
}

// TestBootFromDisk: NodeBoot carries what the driver and the catalog hold.
func TestBootFromDisk(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	drv, err := portable.New(filepath.Join(dir, "store"), nil)
	if err != nil {
		t.Fatal(err)
	}
	site := storage.MustSite("gamma")
	if err := drv.Create(ctx, site, 0); err != nil {
		t.Fatal(err)
	}
	e5 := &m.Epoch{Term: 5, Node: "n1"}
	for seq := uint64(1); seq <= 2; seq++ {
		if _, err := drv.Snapshot(ctx, site, storage.MustSnap(core.SnapshotName(e5, seq))); err != nil {
			t.Fatal(err)
		}
	}
	if err := drv.Fence(ctx, site, storage.Epoch{Term: 7, Node: "n2"}); err != nil {
		t.Fatal(err)
	}
	spec := &m.SiteSpec{Name: "gamma", Domains: []string{"gamma.example"}}
	opt := Options{Node: "n1", Members: []Member{{Name: "n1", ActorAddr: "127.0.0.1:1", StreamURL: "http://127.0.0.1:2"}},
		Driver: drv, StateDir: filepath.Join(dir, "state"), StreamToken: "t"}
	cat, err := openCatalog(opt.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := cat.put("gamma", m.Role_ROLE_MASTER, spec); err != nil {
		t.Fatal(err)
	}
	// A record whose dataset is gone is not booted.
	if err := cat.ensure("gone", m.Role_ROLE_REPLICA); err != nil {
		t.Fatal(err)
	}
	for want := uint64(1); want <= 2; want++ {
		h, err := newHost(opt)
		if err != nil {
			t.Fatal(err)
		}
		if h.Incarnation() != want {
			t.Errorf("incarnation %d, want %d", h.Incarnation(), want)
		}
		boot, err := h.bootDatasets(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(boot) != 1 {
			t.Fatalf("booted %d datasets, want 1: %v", len(boot), boot)
		}
		b := boot[0]
		info := b.Info
		if info.Site != "gamma" || info.Node != "n1" || info.Role != m.Role_ROLE_MASTER ||
			core.CompareEpoch(info.Epoch, &m.Epoch{Term: 7, Node: "n2"}) != 0 || !proto.Equal(info.Spec, spec) {
			t.Errorf("info %v", info)
		}
		if len(b.Snapshots) != 2 || info.Latest.GetName() != "e5-n1-s2" || info.Latest.Seq != 2 ||
			core.CompareEpoch(info.Latest.Epoch, e5) != 0 || info.Latest.TakenMs == 0 {
			t.Errorf("snapshots %v latest %v", b.Snapshots, info.Latest)
		}
	}
}
