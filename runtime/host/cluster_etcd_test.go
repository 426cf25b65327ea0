package host

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	m "github.com/hybridcluster/hybridcluster/messages"
)

// startEtcd runs a real etcd on loopback for the test (Debian's
// etcd-server; CI installs it, scripts/test-deps.sh) and returns its client
// URL.
func startEtcd(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("etcd is required here (CI): scripts/test-deps.sh installs etcd-server")
		}
		t.Skip("no etcd binary (apt-get install etcd-server)")
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	peer := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	dir := t.TempDir()
	cmd := exec.Command(bin, "--name", "test", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "test="+peer, "--log-level", "error")
	logf, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			out, _ := os.ReadFile(logf.Name())
			t.Logf("etcd log:\n%s", out)
		}
	})
	eventually(t, "etcd healthy", func() error {
		resp, err := http.Get(client + "/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("etcd /health: %d", resp.StatusCode)
		}
		return nil
	})
	return client
}

// TestClusterLayerEtcdProvider: with the etcd provider (for deployments
// larger than a seed list), the members find each other through a real
// etcd, a request by identity reaches the site's master, and a stopped
// member leaves the topology.
func TestClusterLayerEtcdProvider(t *testing.T) {
	endpoint := startEtcd(t)
	addrs := map[string]string{}
	for _, n := range []string{"n1", "n2", "n3"} {
		addrs[n] = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	}
	c := startClusterWith(t, 3, func(name string, opt *Options) {
		opt.Cluster = ClusterOptions{Provider: "etcd", Addr: addrs[name], EtcdEndpoints: []string{endpoint}}
	})
	eventually(t, "3 members through etcd", func() error {
		for _, name := range c.names {
			if ms, _ := c.nodes[name].host.ClusterMembers(); len(ms) != 3 {
				return fmt.Errorf("%s sees %v", name, ms)
			}
		}
		return nil
	})
	const site = "etcdsite"
	master, _ := c.placeSite(site)
	from := c.other(master)
	eventually(t, "ask by identity", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		v, err := c.nodes[from].host.Ask(ctx, site, ClusterKindSite, &m.AdminQuery{Kind: m.AdminQueryKind_ADMIN_QUERY_SITE})
		if err != nil {
			return err
		}
		if v.Node != master {
			return fmt.Errorf("answered by %s, want master %s", v.Node, master)
		}
		return nil
	})
	stopped := c.other(master, from)
	c.stop(stopped)
	eventually(t, stopped+" leaves", func() error {
		ms, _ := c.nodes[from].host.ClusterMembers()
		for _, mb := range ms {
			if mb.Node == stopped {
				return fmt.Errorf("%s still a member", stopped)
			}
		}
		return nil
	})
}
