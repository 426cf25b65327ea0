// Package localcluster starts a hybridcluster of real hcnode processes on
// 127.0.0.1, each with its own ports and data directory: what `make run`
// does by script, for the end-to-end tests and the failover benchmark.
package localcluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/admin"
	"github.com/hybridcluster/hybridcluster/runtime/internal/loopback"
	"github.com/hybridcluster/hybridcluster/runtime/storage/zfsdriver"
)

// Bounds.
const (
	// buildWaitMax bounds building the binaries.
	buildWaitMax = 5 * time.Minute
	// startWaitMax bounds how long a node may take to answer its health
	// check after it was started.
	startWaitMax = 30 * time.Second
	// stopWaitMax bounds a node's graceful stop before it is killed.
	stopWaitMax = 15 * time.Second
	// commandWaitMax bounds one hcctl run.
	commandWaitMax = 2 * time.Minute
)

// Binaries holds the paths of the built commands.
type Binaries struct {
	Dir                      string
	HCNode, HCCtl, HCDemoApp string
}

// Build builds hcnode, hcctl and hcdemoapp into dir, from the module that
// contains the working directory.
func Build(ctx context.Context, dir string) (*Binaries, error) {
	ctx, cancel := context.WithTimeout(ctx, buildWaitMax)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return nil, fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+string(os.PathSeparator), "./cmd/hcnode", "./cmd/hcctl", "./cmd/hcdemoapp")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build: %w\n%s", err, b)
	}
	return &Binaries{Dir: dir, HCNode: filepath.Join(dir, "hcnode"), HCCtl: filepath.Join(dir, "hcctl"),
		HCDemoApp: filepath.Join(dir, "hcdemoapp")}, nil
}

// Options configure a cluster.
type Options struct {
	Nodes int
	// Dir holds the nodes' data, logs and tokens.
	Dir string
	Bin *Binaries
	// Env is added to every node's environment.
	Env []string
	// Args are added to every node's command line.
	Args []string
	// ZFSPool, when set, puts node n's datasets under <ZFSPool>/<n> on ZFS
	// (see CreatePool); otherwise the portable driver under its data dir.
	ZFSPool string
	// ZFSPools, when set, gives node i a pool of its own, ZFSPools[i]
	// (see CreateNodePools); it takes precedence over ZFSPool.
	ZFSPools []string
}

// Node is one hcnode process.
type Node struct {
	Name                         string
	HTTP, Admin, Actor, Internal string // host:port
	Cluster, ClusterHealth       string // host:port of the protoactor cluster layer and its automanaged health endpoint
	FTP                          string // host:port of the FTP front end's control connection
	HTTPS, Metrics               string // host:port of the HTTPS front end and of /metrics
	MySQL                        string // host:port of its MySQL front end
	DataDir, LogPath             string
	zfsRoot                      string // its datasets' parent on ZFS; "" for the portable driver
	cmd                          *exec.Cmd
	done                         chan struct{}
}

// Cluster is a running local cluster.
type Cluster struct {
	opt                   Options
	Nodes                 []*Node
	NodeToken, AdminToken string
	AdminTokenFile        string
	mu                    sync.Mutex
}

// portsPerNode is how many loopback ports each node listens on: HTTP,
// admin, actor, internal, cluster, cluster health, FTP, HTTPS, metrics.
const portsPerNode = 9

func token() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// nodesMax bounds the nodes of a local cluster (ports, pools and
// processes on one machine).
const nodesMax = 64

func nodeName(i int) string { return fmt.Sprintf("n%d", i+1) }

// Start starts opt.Nodes nodes (n1..nN) and waits until each answers.
func Start(ctx context.Context, opt Options) (*Cluster, error) {
	if opt.Nodes < 1 || opt.Nodes > nodesMax || opt.Bin == nil || opt.Dir == "" {
		return nil, fmt.Errorf("localcluster: need 1..%d nodes, binaries and a directory", nodesMax)
	}
	ports, err := loopback.FreePorts(portsPerNode * opt.Nodes)
	if err != nil {
		return nil, err
	}
	mysqlPorts, err := loopback.FreePorts(opt.Nodes)
	if err != nil {
		return nil, err
	}
	c := &Cluster{opt: opt, NodeToken: token(), AdminToken: token()}
	c.AdminTokenFile = filepath.Join(opt.Dir, "admin.token")
	if err := os.WriteFile(c.AdminTokenFile, []byte(c.AdminToken), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(opt.Dir, "node.token"), []byte(c.NodeToken), 0o600); err != nil {
		return nil, err
	}
	for i := range opt.Nodes {
		p := ports[portsPerNode*i : portsPerNode*(i+1)]
		name := nodeName(i)
		pool := opt.ZFSPool
		if i < len(opt.ZFSPools) {
			pool = opt.ZFSPools[i]
		}
		zfsRoot := ""
		if pool != "" {
			zfsRoot = pool + "/" + name
		}
		c.Nodes = append(c.Nodes, &Node{Name: name, zfsRoot: zfsRoot,
			HTTP: fmt.Sprintf("127.0.0.1:%d", p[0]), Admin: fmt.Sprintf("127.0.0.1:%d", p[1]),
			Actor: fmt.Sprintf("127.0.0.1:%d", p[2]), Internal: fmt.Sprintf("127.0.0.1:%d", p[3]),
			Cluster: fmt.Sprintf("127.0.0.1:%d", p[4]), ClusterHealth: fmt.Sprintf("127.0.0.1:%d", p[5]),
			FTP:   fmt.Sprintf("127.0.0.1:%d", p[6]),
			HTTPS: fmt.Sprintf("127.0.0.1:%d", p[7]), Metrics: fmt.Sprintf("127.0.0.1:%d", p[8]),
			DataDir: filepath.Join(opt.Dir, name), LogPath: filepath.Join(opt.Dir, name+".log"),
			MySQL: fmt.Sprintf("127.0.0.1:%d", mysqlPorts[i])})
	}
	for i := range c.Nodes {
		if err := c.StartNode(ctx, i); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

func (c *Cluster) args(n *Node) []string {
	storageArgs := []string{"-storage", "portable"}
	if n.zfsRoot != "" {
		storageArgs = []string{"-storage", "zfs", "-zfs-root", n.zfsRoot}
	}
	args := append([]string{"-node", n.Name, "-data-dir", n.DataDir}, storageArgs...)
	args = append(args,
		"-http", n.HTTP, "-admin", n.Admin, "-actor", n.Actor, "-internal", n.Internal, "-https", n.HTTPS, "-metrics", n.Metrics,
		"-cluster", n.Cluster, "-cluster-health", n.ClusterHealth,
		"-node-token-file", filepath.Join(c.opt.Dir, "node.token"), "-admin-token-file", c.AdminTokenFile)
	args = append(args, "-ftp", n.FTP)
	args = append(args, "-mysql", n.MySQL)
	for _, mb := range c.Nodes {
		args = append(args, "-member", mb.Name+"="+mb.Actor+",http://"+mb.Internal+","+mb.ClusterHealth)
	}
	return append(args, c.opt.Args...)
}

// StartNode (re)starts node i and waits for its health check.
func (c *Cluster) StartNode(ctx context.Context, i int) error {
	n := c.Nodes[i]
	if n.cmd != nil {
		return fmt.Errorf("node %s is running", n.Name)
	}
	logf, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.opt.Bin.HCNode, c.args(n)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), c.opt.Env...)
	// Own group (Kill takes the node and its sites down together); dies
	// with the test or bench that started it, even on SIGKILL.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	n.cmd, n.done = cmd, make(chan struct{})
	go func(done chan struct{}) {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}(n.done)
	deadline := time.Now().Add(startWaitMax)
	cl := c.Client(i)
	for {
		hctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := cl.Health(hctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-n.done:
			n.cmd = nil
			return fmt.Errorf("node %s exited at start; log %s:\n%s", n.Name, n.LogPath, tail(n.LogPath, 20))
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("node %s not healthy within %v: %v", n.Name, startWaitMax, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Kill kills node i's process group with SIGKILL (a crash) and waits.
func (c *Cluster) Kill(i int) {
	n := c.Nodes[i]
	if n.cmd == nil {
		return
	}
	_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
	<-n.done
	n.cmd = nil
}

// Stop stops node i with SIGTERM, killing it after stopWaitMax.
func (c *Cluster) Stop(i int) {
	n := c.Nodes[i]
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(stopWaitMax):
		_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
		<-n.done
	}
	// The site processes it started are in their own groups; the node
	// stops them itself on SIGTERM.
	n.cmd = nil
}

// Running reports whether node i's process is up.
func (c *Cluster) Running(i int) bool { return c.Nodes[i].cmd != nil }

// Close stops every node.
func (c *Cluster) Close() {
	var wg sync.WaitGroup
	for i := range c.Nodes {
		wg.Add(1)
		go func() { defer wg.Done(); c.Stop(i) }()
	}
	wg.Wait()
}

// Client is an admin client for node i.
func (c *Cluster) Client(i int) *admin.Client {
	return admin.NewClient("http://"+c.Nodes[i].Admin, c.AdminToken, &http.Client{Timeout: 10 * time.Second})
}

// HCCtl runs the real hcctl against node i's admin endpoint.
func (c *Cluster) HCCtl(ctx context.Context, i int, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, commandWaitMax)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.opt.Bin.HCCtl, args...)
	cmd.Env = append(os.Environ(), "HC_ENDPOINT=http://"+c.Nodes[i].Admin, "HC_TOKEN_FILE="+c.AdminTokenFile, "HC_TOKEN=")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("hcctl %s: %w: %s", strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

// URL is the base URL of node i's HTTP front end.
func (c *Cluster) URL(i int) string { return "http://" + c.Nodes[i].HTTP }

// Logs returns the last lines of every node's log (for failure reports).
func (c *Cluster) Logs(lines int) string {
	var b strings.Builder
	for _, n := range c.Nodes {
		fmt.Fprintf(&b, "==== %s (%s)\n%s\n", n.Name, n.LogPath, tail(n.LogPath, lines))
	}
	return b.String()
}

func tail(path string, lines int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	ls := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

// Pid returns node i's process id (0 when it is not running).
func (c *Cluster) Pid(i int) int {
	if c.Nodes[i].cmd == nil {
		return 0
	}
	return c.Nodes[i].cmd.Process.Pid
}

// poolBytes is the size of CreatePool's file-backed pool.
const poolBytes = 2 << 30

// ZFSAvailable reports whether zfs works here (tools, daemon or module).
func ZFSAvailable(ctx context.Context) (bool, string) {
	if _, err := exec.LookPath("zpool"); err != nil {
		return false, "no zpool command"
	}
	return zfsdriver.NewPools(nil).Available(ctx)
}

// CreatePool creates a file-backed pool in dir for a ZFS cluster, shared by
// its nodes, and returns its name, the environment the nodes need (the
// zfs-fuse shim, when this zfs is zfs-fuse; production runs stock OpenZFS),
// and a destroy func.
func CreatePool(ctx context.Context, dir string) (name string, env []string, destroy func(), err error) {
	names, env, destroy, err := createPools(ctx, dir, []string{""})
	if err != nil {
		return "", nil, nil, err
	}
	return names[0], env, destroy, nil
}

// CreateNodePools creates one file-backed pool per node in dir, for
// Options.ZFSPools: each node gets a disk of its own, as on separate
// machines, so that one node's receive does not hold up another node's
// writes in a shared pool's transaction group.
func CreateNodePools(ctx context.Context, dir string, nodes int) (names []string, env []string, destroy func(), err error) {
	if nodes < 1 || nodes > nodesMax {
		return nil, nil, nil, fmt.Errorf("localcluster: %d nodes (1..%d)", nodes, nodesMax)
	}
	var nodeNames []string
	for i := range nodes {
		nodeNames = append(nodeNames, nodeName(i))
	}
	return createPools(ctx, dir, nodeNames)
}

// createPools creates a pool per suffix ("" for the shared pool), mounted
// at dir/zfs or dir/zfs/<suffix>; a failure destroys those made.
func createPools(ctx context.Context, dir string, suffixes []string) (names []string, env []string, destroy func(), err error) {
	pools := zfsdriver.NewPools(nil)
	if pools.NeedsShim(ctx) {
		shim, err := zfsdriver.ShimDir()
		if err != nil {
			return nil, nil, nil, err
		}
		env = append(env, "HC_ZFS_SHIM_DIR="+shim)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	base := "hcl" + hex.EncodeToString(b[:])
	destroy = func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, name := range names {
			_ = pools.DestroyPool(ctx, name)
		}
	}
	for _, suffix := range suffixes {
		name, file, mnt := base, filepath.Join(dir, "pool.img"), filepath.Join(dir, "zfs")
		if suffix != "" {
			name, file, mnt = base+suffix, filepath.Join(dir, "pool-"+suffix+".img"), filepath.Join(dir, "zfs", suffix)
		}
		if err := createPoolFile(file); err != nil {
			destroy()
			return nil, nil, nil, err
		}
		if err := pools.CreateFilePool(ctx, name, file, mnt); err != nil {
			destroy()
			return nil, nil, nil, err
		}
		names = append(names, name)
	}
	return names, env, destroy, nil
}

func createPoolFile(file string) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if err := f.Truncate(poolBytes); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ZFSLiveDir is where node i's dataset of site is mounted while node i is
// its master, on the pools of CreatePool or CreateNodePools in Options.Dir.
func (c *Cluster) ZFSLiveDir(i int, site string) string {
	n := c.Nodes[i].Name
	if len(c.opt.ZFSPools) > 0 {
		return filepath.Join(c.opt.Dir, "zfs", n, n, "sites", site)
	}
	return filepath.Join(c.opt.Dir, "zfs", n, "sites", site)
}
