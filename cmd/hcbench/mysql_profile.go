package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/host"
	"github.com/hybridcluster/hybridcluster/runtime/localcluster"
)

// nodeProfilePath is hcnode's CPU profile endpoint on its internal port
// (cmd/hcnode/profile.go).
const nodeProfilePath = host.InternalPrefix + "debug/pprof/profile"

// nodeProfileBytesMax bounds one fetched profile (a few seconds of a
// node's profile are tens of KiB); a longer answer is an error.
const nodeProfileBytesMax = 64 << 20

// nodeProfile takes CPU profiles of one node while resumed: one profile
// file per resume..pause span (prefix.1.pprof, ...; `go tool pprof` merges
// several files given together).
type nodeProfile struct {
	url, token, prefix string
	seconds            int
	n                  int
	done               chan error
	err                error
	files              []string
}

// startNodeProfile prepares profiles of node i, each for span (whole
// seconds, rounded up).
func startNodeProfile(ctx context.Context, c *localcluster.Cluster, i int, prefix string, span time.Duration) (*nodeProfile, error) {
	if prefix == "" {
		return nil, fmt.Errorf("cpuprofile: empty path")
	}
	return &nodeProfile{url: "http://" + c.Nodes[i].Internal + nodeProfilePath, token: c.NodeToken, prefix: prefix,
		seconds: int((span + time.Second - 1) / time.Second)}, nil
}

// resume starts a profile (nil p: nothing).
func (p *nodeProfile) resume(ctx context.Context) {
	if p == nil || p.done != nil {
		return
	}
	p.n++
	file := fmt.Sprintf("%s.%d.pprof", p.prefix, p.n)
	p.files = append(p.files, file)
	p.done = make(chan error, 1)
	go func() { p.done <- p.fetch(ctx, file) }()
}

func (p *nodeProfile) fetch(ctx context.Context, file string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(p.seconds)*time.Second+30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s?seconds=%d", p.url, p.seconds), nil)
	if err != nil {
		return err
	}
	req.Header.Set(host.HeaderToken, p.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("cpuprofile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("cpuprofile: %s", resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, nodeProfileBytesMax+1))
	if err != nil {
		return fmt.Errorf("cpuprofile: %w", err)
	}
	if len(data) > nodeProfileBytesMax {
		return fmt.Errorf("cpuprofile: more than %d bytes", nodeProfileBytesMax)
	}
	return os.WriteFile(file, data, 0o644)
}

// pause waits for the profile under way (nil p: nothing).
func (p *nodeProfile) pause() {
	if p == nil || p.done == nil {
		return
	}
	if err := <-p.done; err != nil && p.err == nil {
		p.err = err
	}
	p.done = nil
}

// stop ends the profiling and returns the files written.
func (p *nodeProfile) stop() ([]string, error) {
	if p == nil {
		return nil, nil
	}
	p.pause()
	return p.files, p.err
}
