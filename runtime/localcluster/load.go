package localcluster

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/admin"
)

// Bounds of the helpers below.
const (
	// pollInterval is how often WaitSite and WaitServed look again.
	pollInterval = 50 * time.Millisecond
	// requestWaitMax bounds one HTTP request of the load generator.
	requestWaitMax = 10 * time.Second
	// responseBytesMax bounds a response body read by Get.
	responseBytesMax = 16 << 20
)

// WaitSite polls node i's admin endpoint until ok(site) or ctx ends.
func (c *Cluster) WaitSite(ctx context.Context, i int, name string, ok func(admin.Site) bool) (admin.Site, error) {
	cl := c.Client(i)
	var last admin.Site
	var lastErr error
	for {
		s, err := cl.Site(ctx, name)
		if err == nil {
			last = *s
			if ok(last) {
				return last, nil
			}
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return last, fmt.Errorf("site %s: condition not met (last view %+v, last error %v): %w", name, last, lastErr, ctx.Err())
		case <-time.After(pollInterval):
		}
	}
}

var client = &http.Client{Timeout: requestWaitMax, Transport: &http.Transport{MaxIdleConnsPerHost: 16, DisableCompression: true}}

// Get sends a request for domain through node i's front end.
func (c *Cluster) Do(ctx context.Context, i int, method, domain, path string, body io.Reader) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.URL(i)+path, body)
	if err != nil {
		return 0, "", err
	}
	req.Host = domain
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, responseBytesMax))
	return resp.StatusCode, string(b), err
}

// Write is one write of the load generator.
type Write struct {
	ID      int
	Node    int
	Start   time.Time
	Latency time.Duration
	Status  int
	Err     string
	Acked   bool // 200 "ok id=N"
	AckedAt time.Time
}

// Writer posts /write?id=N (hcdemoapp) one after another, cycling through
// the given nodes, until ctx ends or Max writes were sent.
type Writer struct {
	Domain string
	Nodes  []int
	Max    int
	// Pause between writes (0: none).
	Pause time.Duration

	mu     sync.Mutex
	writes []Write
}

// Run sends writes until ctx ends or Max is reached.
func (w *Writer) Run(ctx context.Context, c *Cluster) {
	for id := 1; id <= w.Max && ctx.Err() == nil; id++ {
		node := w.Nodes[id%len(w.Nodes)]
		start := time.Now()
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), requestWaitMax)
		status, body, err := c.Do(rctx, node, "POST", w.Domain, "/write?id="+strconv.Itoa(id), strings.NewReader("x"))
		cancel()
		wr := Write{ID: id, Node: node, Start: start, Latency: time.Since(start), Status: status}
		if err != nil {
			wr.Err = err.Error()
		}
		if status == 200 && strings.TrimSpace(body) == "ok id="+strconv.Itoa(id) {
			wr.Acked, wr.AckedAt = true, time.Now()
		}
		w.mu.Lock()
		w.writes = append(w.writes, wr)
		w.mu.Unlock()
		if w.Pause > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(w.Pause):
			}
		}
	}
}

// Writes returns what was sent so far.
func (w *Writer) Writes() []Write {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.writes)
}

// StoredIDs reads the ids hcdemoapp stored (GET /writes) through node i.
func (c *Cluster) StoredIDs(ctx context.Context, i int, domain string) (map[int]bool, error) {
	status, body, err := c.Do(ctx, i, "GET", domain, "/writes", nil)
	if err != nil || status != 200 {
		return nil, fmt.Errorf("GET /writes through %s: %d %v %s", c.Nodes[i].Name, status, err, body)
	}
	ids := map[int]bool{}
	for _, l := range strings.Fields(body) {
		if n, err := strconv.Atoi(l); err == nil {
			ids[n] = true
		}
	}
	return ids, nil
}

// Percentile returns the p-th percentile (0..100) of ds.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	// Nearest rank: the smallest value with at least p% of the values at
	// or below it (p99 of fewer than 100 runs is their maximum).
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// NodeIndex returns the index of the node named name (-1 if none).
func (c *Cluster) NodeIndex(name string) int {
	for i, n := range c.Nodes {
		if n.Name == name {
			return i
		}
	}
	return -1
}

// failoverWarmup is how long Failover writes before the kill.
const failoverWarmup = 6 * time.Second

// FailoverResult is one measured kill -9 of a site's master.
type FailoverResult struct {
	Victim, NewMaster string
	// Recovery: from the kill to the first successful request.
	Recovery time.Duration
	Acked    int
	Lost     int
	// NewestLostAge and OldestLostAge: how long before the kill the
	// newest and the oldest lost acknowledged write were acknowledged
	// (OldestLostAge is the data-loss window, the RPO of this failover).
	NewestLostAge, OldestLostAge time.Duration
	// LostAfterKill counts writes acknowledged after the kill and lost:
	// never acceptable.
	LostAfterKill int
	// OldEpoch is the killed master's epoch; Writes and Stored are what
	// was sent and what the new master holds, for finer checks.
	OldEpoch string
	Writes   []Write
	Stored   map[int]bool
}

// Failover writes to a site through the nodes `via` (which must not
// include its master), kills the master with SIGKILL, measures until a
// request through via[0] succeeds, writes a second more, and checks which
// acknowledged writes survived.
func Failover(ctx context.Context, c *Cluster, site, domain string, via []int) (FailoverResult, error) {
	var res FailoverResult
	s, err := c.Client(via[0]).Site(ctx, site)
	if err != nil {
		return res, err
	}
	victim := c.NodeIndex(s.Master)
	if victim < 0 || slices.Contains(via, victim) {
		return res, fmt.Errorf("master %q of %s is not a node to kill", s.Master, site)
	}
	res.Victim, res.OldEpoch = s.Master, s.Epoch
	wctx, stop := context.WithTimeout(ctx, 2*time.Minute)
	defer stop()
	w := &Writer{Domain: domain, Nodes: via, Max: 1_000_000}
	done := make(chan struct{})
	go func() { w.Run(wctx, c); close(done) }()
	// Write long enough that several snapshots reach the replicas.
	time.Sleep(failoverWarmup)
	c.Kill(victim)
	killed := time.Now()
	deadline := killed.Add(90 * time.Second)
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		status, _, err := c.Do(rctx, via[0], "GET", domain, "/health", nil)
		cancel()
		if err == nil && status == 200 {
			res.Recovery = time.Since(killed)
			break
		}
		if time.Now().After(deadline) {
			stop()
			<-done
			return res, fmt.Errorf("site %s not served within 90s of the kill of %s (last status %d, %v)", site, res.Victim, status, err)
		}
		time.Sleep(pollInterval)
	}
	time.Sleep(time.Second)
	stop()
	<-done
	stored, err := c.StoredIDs(ctx, via[0], domain)
	if err != nil {
		return res, err
	}
	if after, err := c.Client(via[0]).Site(ctx, site); err == nil {
		res.NewMaster = after.Master
	}
	res.Writes, res.Stored = w.Writes(), stored
	for _, wr := range res.Writes {
		if !wr.Acked {
			continue
		}
		res.Acked++
		if stored[wr.ID] {
			continue
		}
		res.Lost++
		age := killed.Sub(wr.AckedAt)
		if age < 0 {
			res.LostAfterKill++
			continue
		}
		if res.NewestLostAge == 0 || age < res.NewestLostAge {
			res.NewestLostAge = age
		}
		res.OldestLostAge = max(res.OldestLostAge, age)
	}
	if res.LostAfterKill > 0 {
		return res, fmt.Errorf("%d writes acknowledged after the kill were lost", res.LostAfterKill)
	}
	return res, nil
}
