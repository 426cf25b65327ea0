package main

// hcbench http: the HTTP front end's figures, side by side in one run.
//
//	hcbench http [-rounds 3] [-duration 5s] [-connections 64] [-move-runs 3] [-skip-move] [-skip-pause]
//
// 1. Throughput and added latency: the same Go backend (1 KiB answers,
//    `hcbench http-backend`) is hit directly, through HAProxy (Debian's
//    haproxy, HTTP mode, keep-alive to the backend) and through our front
//    end (`hcbench http-front`: protocols/http.Front with the master on this
//    node, serving through runtime/sites like hcnode does, the backend
//    being the site's app), each with wrk -t2 -cN, in rounds that alternate
//    the three; then wrk -t1 -c1 for the latency a single request adds.
// 2. Move under load: a 3-node localcluster (real hcnode processes), a site
//    running hcdemoapp, a bounded load of GETs and POSTs through all three
//    nodes while the site is migrated -move-runs times: failed requests,
//    longest hold, p50/p99/max latency during the moves.
// 3. Pause of a planned move with a 256 MiB dataset and 1 MiB changed
//    since the last replication.
//
// The last line is
//
//	front_vs_haproxy=R front_vs_direct=R2 added_p50_ms=A move_hold_p99_ms=M failed=F
//
// M is the worse of the two hold figures: the p99 latency of requests
// during the moves under load, and the p99 over runs of the 256 MiB
// move's pause (unless -skip-pause). F counts both parts' failures.

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	m "github.com/hybridcluster/hybridcluster/messages"
	fronthttp "github.com/hybridcluster/hybridcluster/protocols/http"
	"github.com/hybridcluster/hybridcluster/runtime/host"
	"github.com/hybridcluster/hybridcluster/runtime/sites"
)

// Bounds of `hcbench http`.
const (
	httpRoundsMax      = 20
	httpDurationMax    = time.Minute
	httpConnectionsMax = 1024
	// benchBodyBytes is the backend's answer size.
	benchBodyBytes = 1 << 10
	// benchReadyWait bounds the wait for the front process and its app.
	benchReadyWait = 30 * time.Second
	// wrkSlack bounds a wrk run beyond its duration.
	wrkSlack    = 30 * time.Second
	benchDomain = "bench.example"
	benchSite   = "bench"
)

func httpMain(ctx context.Context, cmd string, args []string) error {
	switch cmd {
	case "http-backend":
		return httpBackend(ctx, args)
	case "http-front":
		return httpFront(ctx, args)
	case "http":
		return httpBench(ctx, args)
	}
	return fmt.Errorf("unknown command %q", cmd)
}

// httpBackend answers every request with 1 KiB, on 127.0.0.1:$PORT (as a
// site's app) or -listen; with $HC_DATA_DIR set it writes its address to
// $HC_DATA_DIR/bench-addr.
func httpBackend(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("hcbench http-backend", flag.ExitOnError)
	listen := fs.String("listen", "", "listen address (default 127.0.0.1:$PORT)")
	_ = fs.Parse(args)
	addr := *listen
	if addr == "" {
		port := os.Getenv("PORT")
		if port == "" {
			return errors.New("http-backend: -listen or $PORT")
		}
		addr = "127.0.0.1:" + port
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	if dir := os.Getenv("HC_DATA_DIR"); dir != "" {
		if err := os.WriteFile(filepath.Join(dir, "bench-addr"), []byte(lis.Addr().String()), 0o600); err != nil {
			return err
		}
	}
	body := []byte(strings.Repeat("x", benchBodyBytes-1) + "\n")
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	})}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// benchCluster is a one-node cluster whose only site is served here.
type benchCluster struct{}

func (benchCluster) Node() string { return "n1" }
func (benchCluster) RouteByDomain(d string) (host.Route, bool) {
	if d != benchDomain {
		return host.Route{}, false
	}
	return host.Route{Site: benchSite, Master: "n1", Phase: m.SitePhase_SITE_PHASE_ACTIVE, Domains: []string{benchDomain}}, true
}
func (benchCluster) Live(string) bool { return true }
func (benchCluster) Request(_ context.Context, req *m.SiteRequest) (*m.SiteResponse, error) {
	return &m.SiteResponse{Site: req.Site, RequestId: req.RequestId, Code: m.Code_CODE_OK, Master: "n1"}, nil
}

// httpFront runs the front end with the master on this node: requests go
// through runtime/sites to the site's app (this binary's http-backend), as
// in hcnode. It prints "ready FRONT BACKEND" once the app answers.
func httpFront(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("hcbench http-front", flag.ExitOnError)
	dir := fs.String("dir", "", "the site's directory (required)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile here until stopped")
	netHTTP := fs.Bool("net-http", false, "serve with net/http.Server instead of the front's connection loop (for comparison)")
	_ = fs.Parse(args)
	if *dir == "" {
		return errors.New("http-front: -dir is required")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	sup := sites.New(sites.Config{Logger: slog.New(slog.DiscardHandler), AppProxy: fronthttp.AppProxyFor, IdleStopAfter: sites.IdleStopNever})
	defer sup.Close()
	if err := sup.Start(benchSite, &m.SiteSpec{Name: benchSite, Domains: []string{benchDomain}, AppCommand: self + " http-backend"}, *dir); err != nil {
		return err
	}
	front, err := fronthttp.New(fronthttp.Config{Cluster: benchCluster{}, Token: "bench-token-not-used-here",
		Internal: func(string) (string, bool) { return "", false },
		Local: func(w http.ResponseWriter, r *http.Request, site string, _ bool) bool {
			sup.Serve(site, w, r)
			return true
		}})
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	if *netHTTP {
		srv := &http.Server{Handler: front, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(lis) }()
		defer srv.Close()
	} else {
		srv := &fronthttp.Server{Front: front}
		go func() { _ = srv.Serve(lis) }()
		defer srv.Close()
	}
	// The app starts on the first request.
	url := "http://" + lis.Addr().String() + "/"
	deadline := time.Now().Add(benchReadyWait)
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		req.Host = benchDomain
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("http-front: the app did not answer: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	backend, err := os.ReadFile(filepath.Join(*dir, "bench-addr"))
	if err != nil {
		return err
	}
	fmt.Printf("ready %s %s\n", lis.Addr(), backend)
	<-ctx.Done()
	return nil
}

// wrkResult is one wrk run.
type wrkResult struct {
	rps    float64
	p50    time.Duration
	errors int
}

var (
	wrkRPS     = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkP50     = regexp.MustCompile(`\n\s+50%\s+([0-9.]+)(us|ms|s)\b`)
	wrkErrors  = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkNon2xx  = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	wrkThreads = 2
)

func runWrk(ctx context.Context, url string, threads, conns int, d time.Duration) (wrkResult, error) {
	ctx, cancel := context.WithTimeout(ctx, d+wrkSlack)
	defer cancel()
	out, err := exec.CommandContext(ctx, "wrk", "-t"+strconv.Itoa(threads), "-c"+strconv.Itoa(conns),
		"-d"+strconv.Itoa(int(d.Seconds()))+"s", "--latency", "-H", "Host: "+benchDomain, url).CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %w\n%s", url, err, out)
	}
	s := string(out)
	var r wrkResult
	mt := wrkRPS.FindStringSubmatch(s)
	if mt == nil {
		return r, fmt.Errorf("wrk: no Requests/sec in\n%s", s)
	}
	r.rps, _ = strconv.ParseFloat(mt[1], 64)
	if mt = wrkP50.FindStringSubmatch(s); mt != nil {
		v, _ := strconv.ParseFloat(mt[1], 64)
		unit := map[string]float64{"us": 1e3, "ms": 1e6, "s": 1e9}[mt[2]]
		r.p50 = time.Duration(v * unit)
	}
	if mt = wrkErrors.FindStringSubmatch(s); mt != nil {
		for _, x := range mt[1:] {
			n, _ := strconv.Atoi(x)
			r.errors += n
		}
	}
	if mt = wrkNon2xx.FindStringSubmatch(s); mt != nil {
		n, _ := strconv.Atoi(mt[1])
		r.errors += n
	}
	return r, nil
}

// haproxyConfig forwards listen to backend in HTTP mode with keep-alive to
// the backend and X-Forwarded-For, as our front end does.
func haproxyConfig(listen, backend string) string {
	return `global
    maxconn 8192
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
    option forwardfor
    http-reuse always
frontend front
    bind ` + listen + `
    default_backend app
backend app
    server app ` + backend + `
`
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// needTools checks for haproxy and wrk (make bench-http installs them).
func needTools() error {
	for _, t := range []string{"haproxy", "wrk"} {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("%s is needed: apt-get install haproxy wrk (make bench-http does)", t)
		}
	}
	return nil
}

type throughput struct {
	direct, haproxy, front float64
	frontNetHTTP           float64
	// CPU time of the proxy process per request (µs), median of rounds:
	// unlike throughput, hardly moved by other load on the machine.
	haCPUus, frontCPUus, frontNetHTTPCPUus float64
	directP50, frontP50, haP50             time.Duration
	errors                                 int
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func medianDuration(xs []time.Duration) time.Duration {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// measureThroughput runs the comparison; dir holds the front's site.
func measureThroughput(ctx context.Context, dir string, rounds, conns int, d time.Duration, cpuProfile string, compareNetHTTP bool) (throughput, error) {
	var res throughput
	self, err := os.Executable()
	if err != nil {
		return res, err
	}
	siteDir := filepath.Join(dir, "site")
	if err := os.MkdirAll(siteDir, 0o700); err != nil {
		return res, err
	}
	frontAddr, backendAddr, frontPid, stopFront, err := startFront(ctx, self, siteDir, cpuProfile, false)
	if err != nil {
		return res, err
	}
	defer stopFront()
	netHTTPAddr, netHTTPPid := "", 0
	if compareNetHTTP {
		dir2 := filepath.Join(dir, "site-net-http")
		if err := os.MkdirAll(dir2, 0o700); err != nil {
			return res, err
		}
		addr, _, pid2, stop2, err := startFront(ctx, self, dir2, "", true)
		if err != nil {
			return res, err
		}
		defer stop2()
		netHTTPAddr, netHTTPPid = addr, pid2
	}
	haAddr, err := freeAddr()
	if err != nil {
		return res, err
	}
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgPath, []byte(haproxyConfig(haAddr, backendAddr)), 0o600); err != nil {
		return res, err
	}
	ha := exec.CommandContext(ctx, "haproxy", "-db", "-f", cfgPath)
	ha.Stderr = os.Stderr
	if err := ha.Start(); err != nil {
		return res, err
	}
	defer func() {
		_ = ha.Process.Kill()
		_ = ha.Wait()
	}()
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", haAddr)
		if err == nil {
			c.Close()
			break
		}
		if i > 100 {
			return res, errors.New("haproxy did not listen")
		}
		time.Sleep(50 * time.Millisecond)
	}
	type target struct {
		name, url string
		pid       int // the proxy's process (its CPU per request), 0: none
	}
	targets := []target{{"direct", "http://" + backendAddr + "/", 0}, {"haproxy", "http://" + haAddr + "/", ha.Process.Pid},
		{"front", "http://" + frontAddr + "/", frontPid}}
	if netHTTPAddr != "" {
		targets = append(targets, target{"front-net-http", "http://" + netHTTPAddr + "/", netHTTPPid})
	}
	cpuPerRequest := map[string][]float64{}
	rps := map[string][]float64{}
	for round := 1; round <= rounds; round++ {
		for _, t := range targets {
			cpu0 := processCPU(t.pid)
			r, err := runWrk(ctx, t.url, wrkThreads, conns, d)
			if err != nil {
				return res, err
			}
			cpuUs := 0.0
			if t.pid != 0 && r.rps > 0 {
				cpuUs = (processCPU(t.pid) - cpu0).Seconds() * 1e6 / (r.rps * d.Seconds())
				cpuPerRequest[t.name] = append(cpuPerRequest[t.name], cpuUs)
			}
			res.errors += r.errors
			rps[t.name] = append(rps[t.name], r.rps)
			fmt.Printf("throughput round=%d target=%s rps=%.0f p50_ms=%.3f proxy_cpu_us_per_request=%.1f errors=%d\n", round, t.name, r.rps, ms(r.p50), cpuUs, r.errors)
		}
	}
	p50 := map[string][]time.Duration{}
	for round := 1; round <= rounds; round++ {
		for _, t := range targets {
			r, err := runWrk(ctx, t.url, 1, 1, d/2+time.Second)
			if err != nil {
				return res, err
			}
			res.errors += r.errors
			p50[t.name] = append(p50[t.name], r.p50)
			fmt.Printf("latency round=%d target=%s connections=1 rps=%.0f p50_ms=%.3f\n", round, t.name, r.rps, ms(r.p50))
		}
	}
	res.direct, res.haproxy, res.front = median(rps["direct"]), median(rps["haproxy"]), median(rps["front"])
	if len(cpuPerRequest["haproxy"]) > 0 && len(cpuPerRequest["front"]) > 0 {
		res.haCPUus, res.frontCPUus = median(cpuPerRequest["haproxy"]), median(cpuPerRequest["front"])
	}
	if len(cpuPerRequest["front-net-http"]) > 0 {
		res.frontNetHTTPCPUus = median(cpuPerRequest["front-net-http"])
	}
	if netHTTPAddr != "" {
		res.frontNetHTTP = median(rps["front-net-http"])
	}
	res.directP50, res.haP50, res.frontP50 = medianDuration(p50["direct"]), medianDuration(p50["haproxy"]), medianDuration(p50["front"])
	return res, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func httpBench(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("hcbench http", flag.ExitOnError)
	rounds := fs.Int("rounds", 3, "rounds of the throughput comparison (1.."+strconv.Itoa(httpRoundsMax)+")")
	dur := fs.Duration("duration", 5*time.Second, "each wrk run of the throughput comparison")
	conns := fs.Int("connections", 64, "wrk connections (1.."+strconv.Itoa(httpConnectionsMax)+")")
	moveRuns := fs.Int("move-runs", 3, "migrations under load (1..20)")
	pauseRuns := fs.Int("pause-runs", 5, "planned moves of the 256 MiB site (1..20)")
	skipMove := fs.Bool("skip-move", false, "only the throughput comparison")
	skipPause := fs.Bool("skip-pause", false, "skip the 256 MiB pause measurement")
	cpuProfile := fs.String("cpuprofile", "", "CPU profile of the front process during the comparison")
	compareNetHTTP := fs.Bool("compare-net-http", false, "also measure the front served by net/http.Server instead of its connection loop")
	_ = fs.Parse(args)
	if *rounds < 1 || *rounds > httpRoundsMax || *dur < time.Second || *dur > httpDurationMax || *conns < 1 || *conns > httpConnectionsMax ||
		*moveRuns < 1 || *moveRuns > 20 || *pauseRuns < 1 || *pauseRuns > 20 {
		return fmt.Errorf("-rounds 1..%d, -duration 1s..%v, -connections 1..%d, -move-runs 1..20, -pause-runs 1..20", httpRoundsMax, httpDurationMax, httpConnectionsMax)
	}
	if err := needTools(); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "hcbench-http-")
	if err != nil {
		return err
	}
	if os.Getenv("HCBENCH_KEEP") != "" {
		fmt.Println("directory", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	tp, err := measureThroughput(ctx, dir, *rounds, *conns, *dur, *cpuProfile, *compareNetHTTP)
	if err != nil {
		return err
	}
	added := tp.frontP50 - tp.directP50
	fmt.Printf("throughput_rps direct=%.0f haproxy=%.0f front=%.0f (median of %d rounds, wrk -t%d -c%d -d%v) errors=%d\n",
		tp.direct, tp.haproxy, tp.front, *rounds, wrkThreads, *conns, *dur, tp.errors)
	if tp.frontNetHTTP > 0 {
		fmt.Printf("throughput_rps front_net_http=%.0f proxy_cpu_us_per_request=%.1f (the same front end served by net/http.Server)\n", tp.frontNetHTTP, tp.frontNetHTTPCPUus)
	}
	if tp.frontCPUus > 0 {
		fmt.Printf("proxy_cpu_us_per_request haproxy=%.1f front=%.1f front_cpu_efficiency_vs_haproxy=%.2f (haproxy's CPU per request / ours; the backend's CPU not counted)\n",
			tp.haCPUus, tp.frontCPUus, tp.haCPUus/tp.frontCPUus)
	}
	fmt.Printf("latency_p50_ms direct=%.3f haproxy=%.3f front=%.3f (wrk -t1 -c1)\n", ms(tp.directP50), ms(tp.haP50), ms(tp.frontP50))
	mv := moveResult{}
	if !*skipMove {
		if mv, err = moveUnderLoad(ctx, dir, *moveRuns, *pauseRuns, *skipPause); err != nil {
			return err
		}
	}
	fmt.Printf("front_vs_haproxy=%.2f front_vs_direct=%.2f added_p50_ms=%.3f move_hold_p99_ms=%.0f failed=%d\n",
		tp.front/tp.haproxy, tp.front/tp.direct, ms(added), ms(mv.holdP99), mv.failed+tp.errors)
	return nil
}

// startFront starts `hcbench http-front` and waits for its "ready" line.
func startFront(ctx context.Context, self, siteDir, cpuProfile string, netHTTP bool) (frontAddr, backendAddr string, pid int, stop func(), err error) {
	fctx, cancel := context.WithCancel(ctx)
	args := []string{"http-front", "-dir", siteDir}
	if cpuProfile != "" {
		args = append(args, "-cpuprofile", cpuProfile)
	}
	if netHTTP {
		args = append(args, "-net-http")
	}
	front := exec.CommandContext(fctx, self, args...)
	front.Cancel = func() error { return front.Process.Signal(os.Interrupt) }
	front.WaitDelay = 10 * time.Second
	front.Stderr = os.Stderr
	out, err := front.StdoutPipe()
	if err != nil {
		cancel()
		return "", "", 0, nil, err
	}
	if err := front.Start(); err != nil {
		cancel()
		return "", "", 0, nil, err
	}
	stop = func() {
		cancel()
		_ = front.Wait()
	}
	ready := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "ready" {
				ready <- f[1:]
			}
		}
	}()
	select {
	case f := <-ready:
		return f[0], f[1], front.Process.Pid, stop, nil
	case <-time.After(benchReadyWait):
		stop()
		return "", "", 0, nil, errors.New("the front process did not get ready")
	}
}

// processCPU is the user+system CPU time pid has used (0 for pid 0 or
// when /proc cannot be read).
func processCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The fields after the command (in parentheses, which may hold spaces).
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const ticksPerSecond = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticksPerSecond
}
