package main

import (
	"bytes"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/host"
	"github.com/hybridcluster/hybridcluster/runtime/storage/portable"
)

// lockedBuffer is a bytes.Buffer the host's goroutines may write to.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// bootWaitMax bounds the wait for the host's first actor log line.
const bootWaitMax = 10 * time.Second

// TestLogLinesNameTheNodeOnce: hcnode's logger names the node, and so do
// the actors' and the host's lines; each line must say node= once. A real
// one-node host logs its boot through this logger.
func TestLogLinesNameTheNodeOnce(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			var c Config
			c.Node, c.Log.Level, c.Log.Format = "n1", "info", format
			out := &lockedBuffer{}
			log := newLoggerTo(out, &c)
			drv, err := portable.New(filepath.Join(t.TempDir(), "store"), nil)
			if err != nil {
				t.Fatal(err)
			}
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			actorLis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			actorAddr := actorLis.Addr().String()
			actorLis.Close()
			h, err := host.Start(host.Options{Node: "n1", Driver: drv, StateDir: filepath.Join(t.TempDir(), "state"),
				Members:     []host.Member{{Name: "n1", ActorAddr: actorAddr, StreamURL: "http://" + lis.Addr().String()}},
				StreamToken: "test-token", StreamListener: lis, Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			defer h.Stop()
			key := "node=n1"
			if format == "json" {
				key = `"node":"n1"`
			}
			deadline := time.Now().Add(bootWaitMax)
			var line string
			for line == "" && time.Now().Before(deadline) {
				for _, l := range strings.Split(out.String(), "\n") {
					if strings.Contains(l, "node booted") {
						line = l
					}
				}
				time.Sleep(20 * time.Millisecond)
			}
			if line == "" {
				t.Fatalf("no boot line within %v:\n%s", bootWaitMax, out.String())
			}
			if n := strings.Count(line, key); n != 1 {
				t.Fatalf("%s appears %d times in %s", key, n, line)
			}
			// Every other line of ours says it once too.
			for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
				if n := strings.Count(l, key); n != 1 {
					t.Errorf("%s appears %d times in %s", key, n, l)
				}
			}
			// A different value under the same key is kept.
			log.Info("about another node", "node", "n2")
			last := strings.Split(strings.TrimSpace(out.String()), "\n")
			if l := last[len(last)-1]; !strings.Contains(l, fmt.Sprint("n2")) || strings.Count(l, key) != 1 {
				t.Errorf("line about n2: %s", l)
			}
		})
	}
}
