// Command hcnode runs one node of a hybridcluster. See `hcnode -h`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/protocols/ftp"
	fronthttp "github.com/hybridcluster/hybridcluster/protocols/http"
	"github.com/hybridcluster/hybridcluster/runtime/admin"
	"github.com/hybridcluster/hybridcluster/runtime/host"
	"github.com/hybridcluster/hybridcluster/runtime/sites"
	"github.com/hybridcluster/hybridcluster/runtime/storage"
	"github.com/hybridcluster/hybridcluster/runtime/storage/portable"
	"github.com/hybridcluster/hybridcluster/runtime/storage/zfsdriver"
)

// Bounds of the node's listeners.
const (
	// shutdownWait bounds the graceful stop of each listener on SIGINT or
	// SIGTERM; connections still open then are closed.
	shutdownWait = 5 * time.Second
	// headerWait bounds how long the front end and the admin endpoint wait
	// for a request's headers (slowloris).
	headerWait = 10 * time.Second
	// headerBytesMax bounds a request's headers.
	headerBytesMax = 64 << 10
)

func main() {
	cfg, err := loadConfig(os.Args[1:], os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "hcnode:", err)
		os.Exit(2)
	}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "hcnode:", err)
		os.Exit(1)
	}
}

func newLogger(c *Config) *slog.Logger { return newLoggerTo(os.Stderr, c) }

func newLoggerTo(w io.Writer, c *Config) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Log.Level)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if c.Log.Format == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	// The host and the actors name the node on their lines too: once.
	return slog.New(newOnceHandler(h)).With("node", c.Node)
}

// openStorage picks the driver: ZFS when asked (or on auto when a root is
// configured and its pool answers), else the portable driver under
// data_dir/datasets.
func openStorage(ctx context.Context, c *Config, log *slog.Logger) (storage.Driver, error) {
	useZFS := c.Storage.Driver == "zfs"
	if c.Storage.Driver == "auto" && c.Storage.ZFSRoot != "" {
		pools := zfsdriver.NewPools(log)
		if ok, why := pools.Available(ctx); ok {
			useZFS = true
		} else {
			log.Warn("ZFS not available: using the portable driver", "why", why)
		}
	}
	if useZFS {
		pools := zfsdriver.NewPools(log)
		if _, err := pools.UseShimIfNeeded(ctx); err != nil {
			return nil, err
		}
		d, err := zfsdriver.New(ctx, zfsdriver.Config{Root: c.Storage.ZFSRoot, Logger: log})
		if err != nil {
			return nil, err
		}
		log.Info("storage: zfs", "root", c.Storage.ZFSRoot)
		return d, nil
	}
	dir := filepath.Join(c.DataDir, "datasets")
	d, err := portable.New(dir, log)
	if err != nil {
		return nil, err
	}
	log.Info("storage: portable", "dir", dir)
	return d, nil
}

func run(c *Config) error {
	log := newLogger(c)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return err
	}
	driver, err := openStorage(ctx, c, log)
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	runner := sites.New(sites.Config{Logger: log.With("component", "sites"), RunDir: filepath.Join(c.DataDir, "run"),
		AppProxy: fronthttp.AppProxyFor})
	defer runner.Close()

	internalLis, err := net.Listen("tcp", c.Listen.Internal)
	if err != nil {
		return fmt.Errorf("internal port: %w", err)
	}
	var members []host.Member
	internal := map[string]string{}
	clusterOpt := host.ClusterOptions{Provider: c.Cluster.Provider, Addr: c.Listen.Cluster, AutomanagedAddr: c.Listen.ClusterHealth,
		EtcdEndpoints: c.Cluster.EtcdEndpoints, ConsulAddress: c.Cluster.ConsulAddress}
	if clusterOpt.Provider == "none" {
		clusterOpt.Provider = ""
	}
	for _, mb := range c.Members {
		members = append(members, host.Member{Name: mb.Name, ActorAddr: mb.Actor, StreamURL: mb.Internal})
		internal[mb.Name] = strings.TrimSuffix(mb.Internal, "/")
		clusterOpt.Seeds = append(clusterOpt.Seeds, mb.Seed)
	}
	var plog *slog.Logger
	if c.Log.Protoactor {
		plog = log.With("component", "protoactor")
	}
	h, err := host.Start(host.Options{Node: c.Node, Members: members, Driver: driver,
		StateDir: filepath.Join(c.DataDir, "state"), StreamToken: c.nodeToken, StreamListener: internalLis,
		Logger: log, ProtoactorLogger: plog, Sites: runner, Cluster: clusterOpt, Config: c.actorConfig()})
	if err != nil {
		return err
	}
	defer h.Stop()
	serveProfile(h)

	front, err := fronthttp.New(fronthttp.Config{Cluster: h, Token: c.nodeToken, Logger: log.With("component", "http"),
		Internal: func(n string) (string, bool) { u, ok := internal[n]; return u, ok }, Local: h.ServeLocal,
		SiteSpec: func(ctx context.Context, site, node string) (*m.SiteSpec, error) {
			return fronthttp.SpecFromView(h.Query(ctx, core.NodeAddr(node), &m.AdminQuery{Kind: m.AdminQueryKind_ADMIN_QUERY_SITE, Site: site}))
		}})
	if err != nil {
		return err
	}
	adm, err := admin.NewServer(admin.ServerConfig{Backend: backend{h}, Token: c.adminToken, Logger: log.With("component", "admin")})
	if err != nil {
		return err
	}
	stopMySQL, err := startMySQL(c, h, runner, internal, log)
	if err != nil {
		return err
	}
	defer stopMySQL()
	servers := []*http.Server{
		{Addr: c.Listen.Admin, Handler: adm.Handler(), ReadHeaderTimeout: headerWait, MaxHeaderBytes: headerBytesMax},
	}
	// The front end runs on its own connection loop (protocols/http.Server).
	fronts := map[string]*fronthttp.Server{c.Listen.HTTP: {Front: front, Log: log.With("component", "http")}}
	if c.Listen.Metrics != "" {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", front.Metrics())
		servers = append(servers, &http.Server{Addr: c.Listen.Metrics, Handler: mux, ReadHeaderTimeout: headerWait, MaxHeaderBytes: headerBytesMax})
	}
	if c.Listen.HTTPS != "" {
		tlsConfig, err := front.TLSConfig()
		if err != nil {
			return err
		}
		fronts[c.Listen.HTTPS] = &fronthttp.Server{Front: front, TLS: tlsConfig, Log: log.With("component", "https")}
	}
	// Every port is bound before any is served: the admin endpoint
	// answering health means the node listens everywhere (a port taken by
	// another process fails the start, rather than a node that looked up).
	frontLis := map[string]net.Listener{}
	serverLis := make([]net.Listener, len(servers))
	closeAll := func() {
		for _, l := range frontLis {
			_ = l.Close()
		}
		for _, l := range serverLis {
			if l != nil {
				_ = l.Close()
			}
		}
	}
	for addr := range fronts {
		lis, err := net.Listen("tcp", addr)
		if err != nil {
			closeAll()
			return fmt.Errorf("listen %s: %w", addr, err)
		}
		frontLis[addr] = lis
	}
	for i, s := range servers {
		lis, err := net.Listen("tcp", s.Addr)
		if err != nil {
			closeAll()
			return fmt.Errorf("listen %s: %w", s.Addr, err)
		}
		serverLis[i] = lis
	}
	var ftpFront *ftp.Server
	if c.FTP.Listen != "off" {
		ftpFront, err = ftp.New(ftp.Config{Cluster: h, Storage: driver, Token: c.nodeToken, Listen: c.FTP.Listen,
			PassivePorts: c.FTP.PassivePorts, PublicHost: c.FTP.PublicHost, TLSCertFile: c.FTP.TLSCert,
			TLSKeyFile: c.FTP.TLSKey, Logger: log.With("component", "ftp")})
		if err != nil {
			closeAll()
			return err
		}
		defer ftpFront.Close()
	}
	errc := make(chan error, len(servers)+len(fronts)+1)
	for addr, s := range fronts {
		go func() {
			if err := s.Serve(frontLis[addr]); err != nil && !errors.Is(err, fronthttp.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	for i, s := range servers {
		go func() {
			if err := s.Serve(serverLis[i]); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	if ftpFront != nil {
		go func() {
			if err := ftpFront.Serve(); err != nil {
				errc <- fmt.Errorf("ftp: %w", err)
			}
		}()
	}
	log.Info("node ready", "http", c.Listen.HTTP, "admin", c.Listen.Admin, "actor", c.Listen.Actor,
		"internal", c.Listen.Internal, "ftp", c.FTP.Listen, "members", len(members), "storage", driver.Kind())
	var removed error
	select {
	case <-ctx.Done():
		log.Info("stopping")
	case err := <-errc:
		log.Error("listener failed", "err", err)
	case <-h.Removed():
		removed = fmt.Errorf("node %s was removed from the cluster (hcctl remove); it stops and will not start under this name", c.Node)
	}
	if removed == nil && ctx.Err() != nil && c.HandoffWait > 0 {
		handOff(h, c.HandoffWait, stop, log)
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownWait)
	defer cancel()
	for _, s := range fronts {
		_ = s.Shutdown(sctx)
	}
	for _, s := range servers {
		_ = s.Shutdown(sctx)
	}
	return removed
}

// handOff moves the sites this node masters to their replicas (bounded by
// wait) while the front ends still serve: their requests are paused, then
// go to the new masters. A second SIGTERM or SIGINT cuts it short.
func handOff(h *host.Host, wait time.Duration, stopSignals func(), log *slog.Logger) {
	stopSignals() // the first signal's context is done; catch the next one here
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	again := make(chan os.Signal, 1)
	signal.Notify(again, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(again)
	go func() {
		select {
		case <-again:
			log.Warn("second signal: hand-off cut short")
			cancel()
		case <-ctx.Done():
		}
	}()
	begun := time.Now()
	log.Info("handing sites off before stopping", "bound", wait)
	moved, left := h.HandOff(ctx)
	log.Info("hand-off done", "moved", moved, "left", left, "took", time.Since(begun).Round(time.Millisecond))
}

// backend is the admin endpoint's view of the host.
type backend struct{ h *host.Host }

func (b backend) Node() string      { return b.h.Node() }
func (b backend) Members() []string { return b.h.Members() }
func (b backend) Query(ctx context.Context, to core.Address, q *m.AdminQuery) (*m.AdminView, error) {
	return b.h.Query(ctx, to, q)
}
func (b backend) Send(to core.Address, msg proto.Message) { b.h.Send(to, msg) }
func (b backend) AskSite(ctx context.Context, site string, q *m.AdminQuery) (*m.AdminView, error) {
	v, err := b.h.Ask(ctx, site, host.ClusterKindDataset, q)
	if errors.Is(err, host.ErrNoCluster) {
		return nil, admin.ErrNoIdentity
	}
	return v, err
}
func (b backend) ClusterProvider() string { return b.h.ClusterProvider() }
func (b backend) ClusterMemberIDs() map[string]string {
	members, _ := b.h.ClusterMembers()
	ids := map[string]string{}
	for _, mb := range members {
		ids[mb.Node] = mb.ID
	}
	return ids
}

// Subscribe converts the host's events into the admin API's.
func (b backend) Subscribe() (<-chan admin.Event, func()) {
	in, cancel := b.h.Subscribe()
	out := make(chan admin.Event, 64)
	go func() {
		defer close(out)
		for e := range in {
			ev := admin.Event{Type: e.Type, At: e.At, Site: e.Site, Node: e.Node, Master: e.Master,
				Epoch: core.EpochString(e.Epoch), Phase: phaseName(e.Phase)}
			if e.Type == "member" {
				up := e.Up
				ev.Up = &up
			}
			select {
			case out <- ev:
			default: // a slow reader loses events rather than stall the node
			}
		}
	}()
	return out, cancel
}

func phaseName(p m.SitePhase) string {
	if p == m.SitePhase_SITE_PHASE_UNSPECIFIED {
		return ""
	}
	return strings.ToLower(strings.TrimPrefix(p.String(), "SITE_PHASE_"))
}
