// Command hcftpbench measures FTP throughput through a node that is not the
// site's master (files reached over the node-to-node channel) against the
// same transfer straight to the master, on a local cluster of real hcnode
// processes, with the real curl as the FTP client. Runs alternate between
// the two paths so that a busy machine weighs on both alike; each path's
// best run counts.
//
// Last line: upload_ratio=R download_ratio=R2 (through the non-master
// relative to the master directly).
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/admin"
	"github.com/hybridcluster/hybridcluster/runtime/localcluster"
)

// Bounds.
const (
	// sizeMiBMax bounds -size.
	sizeMiBMax = 4096
	// runsMax bounds -runs.
	runsMax = 20
	// transferWaitMax bounds one curl transfer.
	transferWaitMax = 10 * time.Minute
	// siteWaitMax bounds the wait for the site to be active with a replica.
	siteWaitMax = 2 * time.Minute
)

func main() {
	fs := flag.NewFlagSet("hcftpbench", flag.ExitOnError)
	size := fs.Int("size", 100, "file size in MiB (1.."+fmt.Sprint(sizeMiBMax)+")")
	runs := fs.Int("runs", 3, "runs per path and direction (1.."+fmt.Sprint(runsMax)+"); the best counts")
	_ = fs.Parse(os.Args[1:])
	if *size < 1 || *size > sizeMiBMax || *runs < 1 || *runs > runsMax {
		fmt.Fprintln(os.Stderr, "hcftpbench: -size 1..4096, -runs 1..20")
		os.Exit(2)
	}
	if err := run(context.Background(), int64(*size)<<20, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "hcftpbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, size int64, runs int) error {
	if _, err := exec.LookPath("curl"); err != nil {
		return errors.New("curl is needed (make deps installs it)")
	}
	dir, err := os.MkdirTemp("", "hcftpbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin, err := localcluster.Build(ctx, dir)
	if err != nil {
		return err
	}
	c, err := localcluster.Start(ctx, localcluster.Options{Nodes: 2, Dir: dir, Bin: bin})
	if err != nil {
		return err
	}
	defer c.Close()
	cl := c.Client(0)
	for attempt := 0; ; attempt++ {
		_, err := cl.CreateSite(ctx, admin.CreateSite{Name: "bench", Domains: []string{"bench.example"},
			FTPUsers: []admin.User{{Name: "bench", Password: "bench-password"}}})
		if err == nil {
			break
		}
		if attempt >= 60 {
			return fmt.Errorf("create site: %w", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	wctx, cancel := context.WithTimeout(ctx, siteWaitMax)
	s, err := c.WaitSite(wctx, 0, "bench", func(s admin.Site) bool { return s.Master != "" && s.Phase == "active" })
	cancel()
	if err != nil {
		return err
	}
	master := c.NodeIndex(s.Master)
	via := 1 - master
	src := filepath.Join(dir, "src.bin")
	if err := randomFile(src, size); err != nil {
		return err
	}
	fmt.Printf("file_mib=%d master=%s via=%s runs=%d\n", size>>20, c.Nodes[master].Name, c.Nodes[via].Name, runs)
	best := map[string]float64{}
	for r := 0; r < runs; r++ {
		for _, path := range []struct {
			name string
			node int
		}{{"master", master}, {"via", via}} {
			file := fmt.Sprintf("f-%s-%d.bin", path.name, r)
			up, err := curl(ctx, "-T", src, ftpURL(c, path.node, file))
			if err != nil {
				return fmt.Errorf("upload via %s: %w", c.Nodes[path.node].Name, err)
			}
			down, err := curl(ctx, "-o", "/dev/null", ftpURL(c, path.node, file))
			if err != nil {
				return fmt.Errorf("download via %s: %w", c.Nodes[path.node].Name, err)
			}
			upMBps, downMBps := float64(size)/1e6/up.Seconds(), float64(size)/1e6/down.Seconds()
			fmt.Printf("run=%d path=%s upload_s=%.3f upload_MBps=%.1f download_s=%.3f download_MBps=%.1f\n",
				r+1, path.name, up.Seconds(), upMBps, down.Seconds(), downMBps)
			best["up-"+path.name] = max(best["up-"+path.name], upMBps)
			best["down-"+path.name] = max(best["down-"+path.name], downMBps)
		}
	}
	fmt.Printf("best upload_MBps master=%.1f via=%.1f; best download_MBps master=%.1f via=%.1f\n",
		best["up-master"], best["up-via"], best["down-master"], best["down-via"])
	fmt.Printf("upload_ratio=%.2f download_ratio=%.2f\n", best["up-via"]/best["up-master"], best["down-via"]/best["down-master"])
	return nil
}

func ftpURL(c *localcluster.Cluster, i int, file string) string {
	return "ftp://" + c.Nodes[i].FTP + "/" + file
}

// curl runs one transfer with the real curl and returns its duration.
func curl(ctx context.Context, args ...string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, transferWaitMax)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, "curl", append([]string{"-sS", "--fail", "-u", "bench@bench:bench-password"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("curl: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return time.Since(start), nil
}

func randomFile(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
