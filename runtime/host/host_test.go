package host

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
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
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startCluster starts n hosts on 127.0.0.1, each with its own protoactor
// port, stream endpoint and portable store in a temp dir.
func startCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	c := &testCluster{t: t, nodes: map[string]*testNode{}}
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
	for _, mb := range members {
		drv, err := portable.New(filepath.Join(dir, mb.Name, "store"), nil)
		if err != nil {
			t.Fatal(err)
		}
		opt := Options{Node: mb.Name, Members: members, Config: testConfig(), Driver: drv,
			StateDir: filepath.Join(dir, mb.Name, "state"), StreamToken: "test-token",
			StreamListener: listeners[mb.Name], Logger: log.With("host", mb.Name)}
		h, err := Start(opt)
		if err != nil {
			t.Fatal(err)
		}
		c.nodes[mb.Name] = &testNode{opt: opt, driver: drv, host: h}
	}
	t.Cleanup(func() {
		for _, name := range c.names {
			if h := c.nodes[name].host; h != nil {
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

// TestClusterCreateReplicateServeMigrate: three hosts; a created site is
// placed, snapshotted and streamed to its replica's disk; a write through a
// node that is not master is served; a migration moves the master and later
// requests are served by the new one.
func TestClusterCreateReplicateServeMigrate(t *testing.T) {
	c := startCluster(t, 3)
	const site = "alpha"
	c.nodes["n2"].host.Send(core.NodeAddr("n2"), &m.CreateSite{
		Spec: &m.SiteSpec{Name: site, Domains: []string{"alpha.example"}}, RequestId: 1, ReplyNode: "n2"})

	// Placement: some node answers a read as master.
	var master string
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
	t.Logf("master %s", master)

	// Replication: a snapshot the master took is on another node's disk.
	var replica string
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
	t.Logf("replica %s holds %v", replica, c.snapshots(replica, site))

	// A write through a node that is not master is served by the master.
	entry := ""
	for _, n := range c.names {
		if n != master {
			entry = n
			break
		}
	}
	resp, err := c.request(entry, &m.SiteRequest{Site: site, Write: true, WriteId: 7, BodyBytes: 100})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Code != m.Code_CODE_OK || resp.Master != master || resp.WriteId != 7 {
		t.Fatalf("write through %s: got %v, want OK from %s", entry, resp, master)
	}

	// Migration to the replica: afterwards the new master serves.
	c.nodes[master].host.Send(core.SiteAddr(master, site), &m.Migrate{Site: site, Target: replica, Reason: "admin"})
	third := ""
	for _, n := range c.names {
		if n != master && n != replica {
			third = n
		}
	}
	eventually(t, "new master serves after migration", func() error {
		resp, err := c.request(third, &m.SiteRequest{Site: site, Write: true, WriteId: 8})
		if err != nil {
			return err
		}
		if resp.Code != m.Code_CODE_OK || resp.Master != replica {
			return fmt.Errorf("answer %s from %q: %s", resp.Code, resp.Master, resp.Detail)
		}
		return nil
	})
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
