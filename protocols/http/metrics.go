package http

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Metrics of the front end, per site, in the Prometheus text format
// (Front.Metrics serves them). Counting is a few atomic adds per request;
// status codes take a per-site lock.

// Bounds of the metrics.
const (
	// metricSitesMax bounds the sites with their own series; requests for
	// further sites are counted under the site label "_other" (a front end
	// with more sites than this keeps its scrape bounded).
	metricSitesMax = 20_000
	// otherSite is the label of sites past metricSitesMax.
	otherSite = "_other"
)

// holdBuckets are the upper bounds (seconds) of the hold time histogram.
var holdBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30}

type siteMetrics struct {
	requests   atomic.Uint64
	heldNow    atomic.Int64
	heldTotal  atomic.Uint64
	holdCounts []atomic.Uint64 // per holdBuckets, then +Inf
	holdSumUs  atomic.Uint64
	mu         sync.Mutex
	codes      map[int]uint64
}

type metrics struct {
	mu          sync.RWMutex
	sites       map[string]*siteMetrics
	unknownHost atomic.Uint64
}

func newMetrics() *metrics { return &metrics{sites: map[string]*siteMetrics{}} }

func (ms *metrics) site(name string) *siteMetrics {
	ms.mu.RLock()
	s := ms.sites[name]
	ms.mu.RUnlock()
	if s != nil {
		return s
	}
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if s = ms.sites[name]; s != nil {
		return s
	}
	if len(ms.sites) >= metricSitesMax {
		name = otherSite
		if s = ms.sites[name]; s != nil {
			return s
		}
	}
	s = &siteMetrics{holdCounts: make([]atomic.Uint64, len(holdBuckets)+1), codes: map[int]uint64{}}
	ms.sites[name] = s
	return s
}

func (s *siteMetrics) status(code int) {
	s.mu.Lock()
	s.codes[code]++
	s.mu.Unlock()
}

// hold counts a request that waited in the actors for d.
func (s *siteMetrics) hold(d time.Duration) {
	s.heldTotal.Add(1)
	s.holdSumUs.Add(uint64(d.Microseconds()))
	sec := d.Seconds()
	i := 0
	for i < len(holdBuckets) && sec > holdBuckets[i] {
		i++
	}
	s.holdCounts[i].Add(1)
}

// ServeHTTP writes the metrics in the Prometheus text format.
func (ms *metrics) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	ms.mu.RLock()
	names := make([]string, 0, len(ms.sites))
	for n := range ms.sites {
		names = append(names, n)
	}
	ms.mu.RUnlock()
	slices.Sort(names)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	bw := bufio.NewWriter(w)
	defer bw.Flush()
	fmt.Fprintln(bw, "# HELP hc_http_requests_total Requests the HTTP front end answered, per site.")
	fmt.Fprintln(bw, "# TYPE hc_http_requests_total counter")
	for _, n := range names {
		fmt.Fprintf(bw, "hc_http_requests_total{site=%q} %d\n", n, ms.site(n).requests.Load())
	}
	fmt.Fprintln(bw, "# HELP hc_http_responses_total Responses per site and status code.")
	fmt.Fprintln(bw, "# TYPE hc_http_responses_total counter")
	for _, n := range names {
		s := ms.site(n)
		s.mu.Lock()
		codes := make([]int, 0, len(s.codes))
		for c := range s.codes {
			codes = append(codes, c)
		}
		slices.Sort(codes)
		for _, c := range codes {
			fmt.Fprintf(bw, "hc_http_responses_total{site=%q,code=\"%d\"} %d\n", n, c, s.codes[c])
		}
		s.mu.Unlock()
	}
	fmt.Fprintln(bw, "# HELP hc_http_held_requests Requests held now (waiting while the site moves or recovers).")
	fmt.Fprintln(bw, "# TYPE hc_http_held_requests gauge")
	for _, n := range names {
		fmt.Fprintf(bw, "hc_http_held_requests{site=%q} %d\n", n, ms.site(n).heldNow.Load())
	}
	fmt.Fprintln(bw, "# HELP hc_http_held_requests_total Requests that were held.")
	fmt.Fprintln(bw, "# TYPE hc_http_held_requests_total counter")
	for _, n := range names {
		fmt.Fprintf(bw, "hc_http_held_requests_total{site=%q} %d\n", n, ms.site(n).heldTotal.Load())
	}
	fmt.Fprintln(bw, "# HELP hc_http_hold_seconds How long held requests waited.")
	fmt.Fprintln(bw, "# TYPE hc_http_hold_seconds histogram")
	for _, n := range names {
		s := ms.site(n)
		var cum uint64
		for i, b := range holdBuckets {
			cum += s.holdCounts[i].Load()
			fmt.Fprintf(bw, "hc_http_hold_seconds_bucket{site=%q,le=\"%s\"} %d\n", n, strconv.FormatFloat(b, 'g', -1, 64), cum)
		}
		cum += s.holdCounts[len(holdBuckets)].Load()
		fmt.Fprintf(bw, "hc_http_hold_seconds_bucket{site=%q,le=\"+Inf\"} %d\n", n, cum)
		fmt.Fprintf(bw, "hc_http_hold_seconds_sum{site=%q} %g\n", n, float64(s.holdSumUs.Load())/1e6)
		fmt.Fprintf(bw, "hc_http_hold_seconds_count{site=%q} %d\n", n, cum)
	}
	fmt.Fprintln(bw, "# HELP hc_http_unknown_host_total Requests for a host no site has (404).")
	fmt.Fprintln(bw, "# TYPE hc_http_unknown_host_total counter")
	fmt.Fprintf(bw, "hc_http_unknown_host_total %d\n", ms.unknownHost.Load())
}

// statusWriter records the status a handler answered with. It passes
// Flush and Hijack on (ResponseController finds them through Unwrap).
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (sw *statusWriter) WriteHeader(code int) {
	if sw.code == 0 && code >= 200 {
		sw.code = code
	}
	sw.ResponseWriter.WriteHeader(code)
}

func (sw *statusWriter) Write(p []byte) (int, error) {
	if sw.code == 0 {
		sw.code = http.StatusOK
	}
	return sw.ResponseWriter.Write(p)
}

func (sw *statusWriter) Flush() {
	if f, ok := sw.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (sw *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if sw.code == 0 {
		sw.code = http.StatusSwitchingProtocols
	}
	return http.NewResponseController(sw.ResponseWriter).Hijack()
}

// startRawHead passes the fast path on (rawHeadWriter), recording the
// status.
func (sw *statusWriter) startRawHead(code int, contentLength int64) (*bufio.Writer, bool) {
	rw, ok := sw.ResponseWriter.(rawHeadWriter)
	if !ok {
		return nil, false
	}
	bw, ok := rw.startRawHead(code, contentLength)
	if ok && sw.code == 0 {
		sw.code = code
	}
	return bw, ok
}

func (sw *statusWriter) endRawHead(hasDate bool) {
	sw.ResponseWriter.(rawHeadWriter).endRawHead(hasDate)
}

func (sw *statusWriter) Unwrap() http.ResponseWriter { return sw.ResponseWriter }

var statusWriters = sync.Pool{New: func() any { return new(statusWriter) }}
