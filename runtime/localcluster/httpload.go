package localcluster

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Bounds of HTTPLoad.
const (
	// httpLoadWorkersMax bounds HTTPLoad.Workers.
	httpLoadWorkersMax = 64
	// httpLoadRequestMax bounds one request of HTTPLoad: longer than the
	// actors' hold deadline (15 s), so a held request is measured, not cut.
	httpLoadRequestMax = 30 * time.Second
)

// HTTPLoad is a bounded HTTP load through the front ends: Workers
// goroutines share Rate requests per second, up to Max requests in all,
// until ctx ends. Every WriteEvery-th request is a POST /write?id=N
// (hcdemoapp), the others GET Path.
type HTTPLoad struct {
	Domain     string
	Nodes      []int // front ends to go through, in turn
	Workers    int
	Rate       int // requests per second, all workers together
	Max        int
	WriteEvery int    // 0: only GETs
	Path       string // default /health

	mu      sync.Mutex
	results []HTTPResult
}

// HTTPResult is one request of an HTTPLoad.
type HTTPResult struct {
	Node    int
	Method  string
	ID      int
	Start   time.Time
	Latency time.Duration
	Status  int
	Err     string
}

// OK reports whether the request got a 2xx answer.
func (r HTTPResult) OK() bool { return r.Status >= 200 && r.Status < 300 }

// Run sends the load until ctx ends or Max requests were sent.
func (l *HTTPLoad) Run(ctx context.Context, c *Cluster) error {
	if l.Workers < 1 || l.Workers > httpLoadWorkersMax || l.Rate < 1 || l.Max < 1 || len(l.Nodes) == 0 {
		return fmt.Errorf("http load: want 1..%d workers, a positive rate and max, and nodes", httpLoadWorkersMax)
	}
	path := l.Path
	if path == "" {
		path = "/health"
	}
	cl := &http.Client{Timeout: httpLoadRequestMax, Transport: &http.Transport{MaxIdleConnsPerHost: l.Workers, DisableCompression: true}}
	defer cl.CloseIdleConnections()
	interval := time.Duration(float64(time.Second) * float64(l.Workers) / float64(l.Rate))
	var next sync.Mutex
	seq := 0
	var wg sync.WaitGroup
	for w := range l.Workers {
		wg.Go(func() {
			t := time.NewTicker(interval)
			defer t.Stop()
			for {
				next.Lock()
				seq++
				n := seq
				next.Unlock()
				if n > l.Max || ctx.Err() != nil {
					return
				}
				node := l.Nodes[(n+w)%len(l.Nodes)]
				method, p := "GET", path
				if l.WriteEvery > 0 && n%l.WriteEvery == 0 {
					method, p = "POST", "/write?id="+strconv.Itoa(n)
				}
				r := l.one(ctx, cl, c, node, method, p)
				r.ID = n
				if ctx.Err() != nil && r.Err != "" {
					return // cut by the end of the load, not by the cluster
				}
				l.mu.Lock()
				l.results = append(l.results, r)
				l.mu.Unlock()
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		})
	}
	wg.Wait()
	return nil
}

func (l *HTTPLoad) one(ctx context.Context, cl *http.Client, c *Cluster, node int, method, path string) HTTPResult {
	r := HTTPResult{Node: node, Method: method, Start: time.Now()}
	var body io.Reader
	if method == "POST" {
		body = strings.NewReader("load")
	}
	req, err := http.NewRequestWithContext(ctx, method, c.URL(node)+path, body)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	req.Host = l.Domain
	resp, err := cl.Do(req)
	if err == nil {
		var b []byte
		b, err = io.ReadAll(io.LimitReader(resp.Body, responseBytesMax))
		resp.Body.Close()
		r.Status = resp.StatusCode
		if err == nil && (r.Status < 200 || r.Status >= 300) {
			// Why, for the report (the front ends explain their 5xx).
			r.Err = strings.TrimSpace(string(b[:min(len(b), 200)]))
		}
	}
	r.Latency = time.Since(r.Start)
	if err != nil {
		r.Err = err.Error()
	}
	return r
}

// Results returns the requests sent so far.
func (l *HTTPLoad) Results() []HTTPResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]HTTPResult(nil), l.results...)
}

// Window is a span of time (a move, a failover).
type Window struct{ Start, End time.Time }

// Overlaps reports whether a request was in flight during w.
func (w Window) Overlaps(r HTTPResult) bool {
	return r.Start.Before(w.End) && r.Start.Add(r.Latency).After(w.Start)
}

// HTTPSummary sums up results: failed requests (by method) and the
// latencies of those in flight during any of the windows.
type HTTPSummary struct {
	Requests, Failed, FailedGets, FailedWrites int
	During                                     []time.Duration
	P50, P99, Max                              time.Duration
	FirstFailures                              []string
}

// Summarize sums up rs against windows.
func Summarize(rs []HTTPResult, windows []Window) HTTPSummary {
	var s HTTPSummary
	for _, r := range rs {
		s.Requests++
		if !r.OK() {
			s.Failed++
			if r.Method == "GET" || r.Method == "HEAD" {
				s.FailedGets++
			} else {
				s.FailedWrites++
			}
			if len(s.FirstFailures) < 10 {
				s.FirstFailures = append(s.FirstFailures, fmt.Sprintf("%s id=%d via n%d at %s: status %d %s",
					r.Method, r.ID, r.Node+1, r.Start.Format("15:04:05.000"), r.Status, r.Err))
			}
		}
		for _, w := range windows {
			if w.Overlaps(r) {
				s.During = append(s.During, r.Latency)
				break
			}
		}
	}
	s.P50, s.P99, s.Max = Percentile(s.During, 50), Percentile(s.During, 99), Percentile(s.During, 100)
	return s
}

// ServedThrough waits until every node in nodes answers 200 for GET path
// of domain (a new site's route reaches each node a moment after the admin
// view shows it active; until then a front end answers 404), or ctx ends.
func (c *Cluster) ServedThrough(ctx context.Context, domain, path string, nodes []int) error {
	for _, i := range nodes {
		for {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			status, _, err := c.Do(rctx, i, "GET", domain, path, nil)
			cancel()
			if err == nil && status == 200 {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s not served through %s: last %d %v: %w", domain, c.Nodes[i].Name, status, err, ctx.Err())
			case <-time.After(pollInterval):
			}
		}
	}
	return nil
}
