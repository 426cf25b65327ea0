package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/hybridcluster/hybridcluster/actors/core"
	"github.com/hybridcluster/hybridcluster/protocols/ftp"
)

// Config is hcnode's configuration: a YAML file (-config) with flags on
// top. Every field has an embedded default so that `hcnode -node n1` alone
// runs a one-node cluster on 127.0.0.1.
type Config struct {
	// Node is this node's name: lower-case letters, digits, inner '-'.
	Node string `yaml:"node"`
	// DataDir holds the node's state (catalog, incarnation) and, with the
	// portable driver, its datasets.
	DataDir string `yaml:"data_dir"`
	Storage struct {
		// Driver: "auto" (ZFS when zfs_root is set and its pool answers,
		// else portable), "zfs" or "portable".
		Driver  string `yaml:"driver"`
		ZFSRoot string `yaml:"zfs_root"` // e.g. tank/hc
	} `yaml:"storage"`
	Listen struct {
		HTTP     string `yaml:"http"`     // the HTTP front end for every site
		Admin    string `yaml:"admin"`    // the admin endpoint (hcctl)
		Actor    string `yaml:"actor"`    // protoactor remote (node to node)
		Internal string `yaml:"internal"` // snapshot streams and forwarded requests (node to node)
		// Cluster is the protoactor cluster layer's remote (membership,
		// requests by identity); ClusterHealth the automanaged provider's
		// health endpoint, which the other members poll.
		Cluster       string `yaml:"cluster"`
		ClusterHealth string `yaml:"cluster_health"`
		Metrics       string `yaml:"metrics"` // Prometheus /metrics of the front ends; empty: none
		HTTPS         string `yaml:"https"`   // the HTTPS front end (per-site certificates by SNI); empty: none
		MySQL         string `yaml:"mysql"`   // the MySQL front end for every site
	} `yaml:"listen"`
	Cluster struct {
		// Provider: automanaged (default: the members' health endpoints
		// are the seed list, no external service), etcd, consul, or none.
		Provider      string   `yaml:"provider"`
		EtcdEndpoints []string `yaml:"etcd_endpoints"`
		ConsulAddress string   `yaml:"consul_address"`
	} `yaml:"cluster"`
	// HandoffWait bounds how long a node told to stop (SIGTERM, SIGINT)
	// spends handing the sites it masters to their replicas, a planned move
	// each, before it stops (0: none; its sites then fail over once it is
	// gone, losing what was written since their last replicated snapshot).
	// A second signal cuts it short.
	HandoffWait time.Duration `yaml:"handoff_wait"`
	// Members are the cluster's nodes (the seed list): every node lists
	// every member, itself included. Empty: a one-node cluster of this node.
	Members []Member `yaml:"members"`
	Secrets struct {
		// NodeTokenFile holds the secret shared by all nodes (streams,
		// forwarded requests). Env HC_NODE_TOKEN overrides.
		NodeTokenFile string `yaml:"node_token_file"`
		// AdminTokenFile holds the admin endpoint's bearer token. Env
		// HC_ADMIN_TOKEN overrides.
		AdminTokenFile string `yaml:"admin_token_file"`
	} `yaml:"secrets"`
	// FTP is the FTP front end (protocols/ftp): users log in as user@site.
	FTP struct {
		// Listen is the control address; "off" runs no FTP front end.
		Listen string `yaml:"listen"`
		// PassivePorts is the passive data port range "first-last"; empty
		// lets the system pick free ports.
		PassivePorts string `yaml:"passive_ports"`
		// PublicHost is the IP announced in passive replies (behind NAT);
		// empty announces the address the client connected to.
		PublicHost string `yaml:"public_host"`
		// TLSCert and TLSKey (PEM files), both set, offer explicit FTPS.
		TLSCert string `yaml:"tls_cert"`
		TLSKey  string `yaml:"tls_key"`
	} `yaml:"ftp"`
	// Snapshots is what each node keeps of the snapshots of its copies:
	// every one younger than keep_all, then one per minute, hour and day
	// until keep_minutely, keep_hourly and keep_daily (durations: 2m,
	// 15m, 24h, 168h). A snapshot a replica still needs as its base, or that is
	// mounted, is always kept. Below low_free_mib MiB free in the pool
	// (0: never), or below low_free_percent of the pool's size if that is
	// less (0: the MiB alone), the node's copies also drop what keep_all
	// and keep_minutely keep.
	Snapshots struct {
		KeepAll      time.Duration `yaml:"keep_all"`
		KeepMinutely time.Duration `yaml:"keep_minutely"`
		KeepHourly   time.Duration `yaml:"keep_hourly"`
		KeepDaily    time.Duration `yaml:"keep_daily"`
		LowFreeMiB   uint64        `yaml:"low_free_mib"`
		LowFreePct   uint64        `yaml:"low_free_percent"`
	} `yaml:"snapshots"`
	Log struct {
		Level      string `yaml:"level"`  // debug, info, warn, error
		Format     string `yaml:"format"` // text, json
		Protoactor bool   `yaml:"protoactor"`
	} `yaml:"log"`

	nodeToken, adminToken string
}

// Member is one node of the cluster.
type Member struct {
	Name     string `yaml:"name"`
	Actor    string `yaml:"actor"`    // host:port of its protoactor remote
	Internal string `yaml:"internal"` // http://host:port of its internal port
	// Seed is host:port of its automanaged health endpoint; default: the
	// host of its actor address and this node's listen.cluster_health port.
	Seed string `yaml:"seed"`
}

// defaultHandoffWait is a stopping node's default hand-off bound: under
// systemd's default stop timeout (90 s).
const defaultHandoffWait = 60 * time.Second

func defaults() *Config {
	c := &Config{}
	c.Storage.Driver = "auto"
	c.Listen.HTTP = "127.0.0.1:8080"
	c.Listen.Admin = "127.0.0.1:7080"
	c.Listen.Actor = "127.0.0.1:7946"
	c.Listen.Internal = "127.0.0.1:7947"
	c.Listen.Cluster = "127.0.0.1:7948"
	c.Listen.ClusterHealth = "127.0.0.1:7949"
	c.Cluster.Provider = "automanaged"
	c.FTP.Listen = "127.0.0.1:2121"
	c.Listen.MySQL = "127.0.0.1:3306"
	c.Log.Level = "info"
	c.Log.Format = "text"
	c.HandoffWait = defaultHandoffWait
	def := core.Default()
	r := def.Retention
	c.Snapshots.KeepAll, c.Snapshots.KeepMinutely, c.Snapshots.KeepHourly, c.Snapshots.KeepDaily = r.KeepAll, r.KeepMinutely, r.KeepHourly, r.KeepDaily
	c.Snapshots.LowFreeMiB, c.Snapshots.LowFreePct = def.StorageLowBytes>>20, def.StorageLowPercent
	return c
}

// actorConfig is the actors' configuration: the embedded defaults with
// this file's retention.
func (c *Config) actorConfig() *core.Config {
	cfg := core.Default()
	cfg.Retention = core.Retention{KeepAll: c.Snapshots.KeepAll, KeepMinutely: c.Snapshots.KeepMinutely,
		KeepHourly: c.Snapshots.KeepHourly, KeepDaily: c.Snapshots.KeepDaily}
	cfg.StorageLowBytes, cfg.StorageLowPercent = c.Snapshots.LowFreeMiB<<20, c.Snapshots.LowFreePct
	return cfg
}

// memberFlags collects repeated -member name=actor,internal[,seed] flags.
type memberFlags []Member

func (f *memberFlags) String() string { return fmt.Sprint(len(*f), " members") }
func (f *memberFlags) Set(v string) error {
	name, rest, ok := strings.Cut(v, "=")
	actor, internal, ok2 := strings.Cut(rest, ",")
	if !ok || !ok2 {
		return fmt.Errorf("want name=actorhost:port,http://internalhost:port[,seedhost:port], got %q", v)
	}
	internal, seed, _ := strings.Cut(internal, ",")
	*f = append(*f, Member{Name: name, Actor: actor, Internal: internal, Seed: seed})
	return nil
}

// loadConfig reads the file named by -config (if any), then applies flags
// that were given, then the environment's secrets, and validates.
func loadConfig(args []string, getenv func(string) string) (*Config, error) {
	fs := flag.NewFlagSet("hcnode", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `hcnode runs one node of a hybridcluster: the site, dataset, node and balancer
actors on protoactor-go, the HTTP and MySQL front ends, the admin endpoint and
the internal port for snapshot streams and forwarded requests.

Usage: hcnode [-config FILE] [flags]

Configuration comes from the YAML file, then the flags below override it.
Secrets: HC_NODE_TOKEN and HC_ADMIN_TOKEN (environment) override the token
files. Example file:

  node: n1
  data_dir: /var/lib/hybridcluster
  storage: {driver: auto, zfs_root: tank/hc}
  listen: {http: 0.0.0.0:80, admin: 10.0.0.1:7080, actor: 10.0.0.1:7946, internal: 10.0.0.1:7947,
           cluster: 10.0.0.1:7948, cluster_health: 10.0.0.1:7949,
           mysql: 0.0.0.0:3306}
  cluster: {provider: automanaged}   # or etcd (etcd_endpoints: [...]), consul (consul_address: ...), none
  members:
    - {name: n1, actor: 10.0.0.1:7946, internal: http://10.0.0.1:7947}
    - {name: n2, actor: 10.0.0.2:7946, internal: http://10.0.0.2:7947}
  secrets: {node_token_file: /etc/hybridcluster/node.token, admin_token_file: /etc/hybridcluster/admin.token}
  ftp: {listen: 0.0.0.0:21, passive_ports: 30000-30099, tls_cert: /etc/hybridcluster/ftp.pem, tls_key: /etc/hybridcluster/ftp.key}
  snapshots: {keep_all: 2m, keep_minutely: 15m, keep_hourly: 24h, keep_daily: 168h, low_free_mib: 1024, low_free_percent: 10}   # the defaults
  log: {level: info, format: text}
  handoff_wait: 60s   # on SIGTERM/SIGINT: move this node's sites to their replicas first (0: no)

Flags:
`)
		fs.PrintDefaults()
	}
	d := defaults()
	configFile := fs.String("config", "", "YAML configuration file")
	node := fs.String("node", "", "this node's name (default from the file)")
	dataDir := fs.String("data-dir", "", "state and portable datasets directory (default ./hc-data/<node>)")
	driver := fs.String("storage", "", "storage driver: auto, zfs or portable (default auto)")
	zfsRoot := fs.String("zfs-root", "", "ZFS dataset under which site datasets live, e.g. tank/hc")
	httpAddr := fs.String("http", "", "HTTP front end listen address (default "+d.Listen.HTTP+")")
	adminAddr := fs.String("admin", "", "admin endpoint listen address (default "+d.Listen.Admin+")")
	actorAddr := fs.String("actor", "", "protoactor remote listen address (default "+d.Listen.Actor+")")
	internalAddr := fs.String("internal", "", "internal port listen address (default "+d.Listen.Internal+")")
	clusterAddr := fs.String("cluster", "", "protoactor cluster layer listen address (default "+d.Listen.Cluster+")")
	clusterHealth := fs.String("cluster-health", "", "automanaged provider's health endpoint (default "+d.Listen.ClusterHealth+")")
	provider := fs.String("cluster-provider", "", "membership provider: automanaged, etcd, consul or none (default automanaged)")
	ftpAddr := fs.String("ftp", "", "FTP front end control address, or off (default "+d.FTP.Listen+")")
	ftpPassive := fs.String("ftp-passive-ports", "", "FTP passive data port range first-last (default: any free port)")
	ftpPublic := fs.String("ftp-public-host", "", "IP address announced in FTP passive replies (default: the one the client reached)")
	ftpCert := fs.String("ftp-tls-cert", "", "PEM certificate for explicit FTPS (with -ftp-tls-key)")
	ftpKey := fs.String("ftp-tls-key", "", "PEM key for explicit FTPS (with -ftp-tls-cert)")
	httpsAddr := fs.String("https", "", "HTTPS front end listen address, certificates of the sites by SNI (default none)")
	metricsAddr := fs.String("metrics", "", "Prometheus /metrics listen address (default none)")
	mysqlAddr := fs.String("mysql", "", "MySQL front end listen address (default "+d.Listen.MySQL+")")
	var members memberFlags
	fs.Var(&members, "member", "a cluster member as name=actorhost:port,http://internalhost:port[,seedhost:port] (repeat for each; replaces the file's list; seed: its automanaged health endpoint)")
	nodeTokenFile := fs.String("node-token-file", "", "file holding the secret shared by all nodes")
	adminTokenFile := fs.String("admin-token-file", "", "file holding the admin endpoint's bearer token")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (default info)")
	logFormat := fs.String("log-format", "", "text or json (default text)")
	handoffWait := fs.String("handoff-wait", "", "on SIGTERM or SIGINT, how long to spend moving this node's sites to their replicas before stopping; 0: none (default "+defaultHandoffWait.String()+")")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (see -h)", fs.Arg(0))
	}
	c := d
	if *configFile != "" {
		data, err := os.ReadFile(*configFile)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(c); err != nil {
			return nil, fmt.Errorf("config %s: %w", *configFile, err)
		}
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&c.Node, *node)
	set(&c.DataDir, *dataDir)
	set(&c.Storage.Driver, *driver)
	set(&c.Storage.ZFSRoot, *zfsRoot)
	set(&c.Listen.HTTP, *httpAddr)
	set(&c.Listen.Admin, *adminAddr)
	set(&c.Listen.Actor, *actorAddr)
	set(&c.Listen.Internal, *internalAddr)
	set(&c.Listen.Cluster, *clusterAddr)
	set(&c.Listen.ClusterHealth, *clusterHealth)
	set(&c.Cluster.Provider, *provider)
	set(&c.Listen.Metrics, *metricsAddr)
	set(&c.Listen.HTTPS, *httpsAddr)
	set(&c.Listen.MySQL, *mysqlAddr)
	set(&c.Secrets.NodeTokenFile, *nodeTokenFile)
	set(&c.Secrets.AdminTokenFile, *adminTokenFile)
	set(&c.FTP.Listen, *ftpAddr)
	set(&c.FTP.PassivePorts, *ftpPassive)
	set(&c.FTP.PublicHost, *ftpPublic)
	set(&c.FTP.TLSCert, *ftpCert)
	set(&c.FTP.TLSKey, *ftpKey)
	set(&c.Log.Level, *logLevel)
	set(&c.Log.Format, *logFormat)
	if len(members) > 0 {
		c.Members = members
	}
	var flagErr error
	if *handoffWait != "" {
		if c.HandoffWait, flagErr = time.ParseDuration(*handoffWait); flagErr != nil {
			flagErr = fmt.Errorf("-handoff-wait %q: want a duration such as 60s or 0", *handoffWait)
		}
	}
	if c.DataDir == "" && c.Node != "" {
		c.DataDir = filepath.Join("hc-data", c.Node)
	}
	if len(c.Members) == 0 && c.Node != "" {
		c.Members = []Member{{Name: c.Node, Actor: c.Listen.Actor, Internal: "http://" + c.Listen.Internal}}
	}
	for i := range c.Members {
		if c.Members[i].Seed == "" {
			c.Members[i].Seed = defaultSeed(c.Members[i].Actor, c.Listen.ClusterHealth)
		}
	}
	// Every problem at once, so that an operator mends them in one go.
	var errs []error
	if flagErr != nil {
		errs = append(errs, flagErr)
	}
	var err error
	if c.nodeToken, err = secret(getenv("HC_NODE_TOKEN"), c.Secrets.NodeTokenFile, "node token"); err != nil {
		errs = append(errs, err)
	}
	if c.adminToken, err = secret(getenv("HC_ADMIN_TOKEN"), c.Secrets.AdminTokenFile, "admin token"); err != nil {
		errs = append(errs, err)
	}
	if err := c.validate(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// secret reads a token from the environment or a file; never logged.
func secret(env, file, what string) (string, error) {
	if env != "" {
		return strings.TrimSpace(env), nil
	}
	if file == "" {
		return "", fmt.Errorf("no %s: set its file in the config (secrets) or flags, or the environment", what)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	tok := strings.TrimSpace(string(data))
	if len(tok) < 16 {
		return "", fmt.Errorf("%s in %s is shorter than 16 characters", what, file)
	}
	return tok, nil
}

func (c *Config) validate() error {
	var errs []error
	for what, d := range map[string]time.Duration{"keep_all": c.Snapshots.KeepAll, "keep_minutely": c.Snapshots.KeepMinutely,
		"keep_hourly": c.Snapshots.KeepHourly, "keep_daily": c.Snapshots.KeepDaily} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("snapshots %s %v: want a duration of zero or more", what, d))
		}
	}
	if c.HandoffWait < 0 {
		errs = append(errs, fmt.Errorf("handoff_wait %v: want a duration of zero or more", c.HandoffWait))
	}
	if c.Snapshots.LowFreePct > 100 {
		errs = append(errs, fmt.Errorf("snapshots low_free_percent %d: want 0..100", c.Snapshots.LowFreePct))
	}
	if c.Node == "" {
		errs = append(errs, errors.New("no node name (-node or node:)"))
	} else if !validName(c.Node) {
		errs = append(errs, fmt.Errorf("node name %q: use lower-case letters, digits and inner '-' (at most 32)", c.Node))
	}
	switch c.Storage.Driver {
	case "auto", "portable":
	case "zfs":
		if c.Storage.ZFSRoot == "" {
			errs = append(errs, errors.New("storage driver zfs needs zfs_root"))
		}
	default:
		errs = append(errs, fmt.Errorf("storage driver %q: want auto, zfs or portable", c.Storage.Driver))
	}
	switch c.Cluster.Provider {
	case "automanaged", "none":
	case "etcd":
		if len(c.Cluster.EtcdEndpoints) == 0 {
			errs = append(errs, errors.New("cluster provider etcd needs etcd_endpoints"))
		}
	case "consul":
	default:
		errs = append(errs, fmt.Errorf("cluster provider %q: want automanaged, etcd, consul or none", c.Cluster.Provider))
	}
	listens := map[string]string{"http": c.Listen.HTTP, "admin": c.Listen.Admin, "actor": c.Listen.Actor,
		"internal": c.Listen.Internal, "cluster": c.Listen.Cluster, "cluster_health": c.Listen.ClusterHealth}
	if c.Listen.Metrics != "" {
		listens["metrics"] = c.Listen.Metrics
	}
	if c.Listen.HTTPS != "" {
		listens["https"] = c.Listen.HTTPS
	}
	listens["mysql"] = c.Listen.MySQL
	for what, addr := range listens {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("listen %s address %q: %v", what, addr, err))
		}
	}
	if c.FTP.Listen != "off" {
		if _, _, err := net.SplitHostPort(c.FTP.Listen); err != nil {
			errs = append(errs, fmt.Errorf("ftp listen address %q: %v (or off)", c.FTP.Listen, err))
		}
		if _, _, err := ftp.ParsePortRange(c.FTP.PassivePorts); err != nil {
			errs = append(errs, err)
		}
		if c.FTP.PublicHost != "" && net.ParseIP(c.FTP.PublicHost) == nil {
			errs = append(errs, fmt.Errorf("ftp public host %q: want an IP address", c.FTP.PublicHost))
		}
		if (c.FTP.TLSCert == "") != (c.FTP.TLSKey == "") {
			errs = append(errs, errors.New("ftp TLS needs both tls_cert and tls_key"))
		}
	}
	seen := map[string]bool{}
	self := false
	for _, mb := range c.Members {
		if !validName(mb.Name) || seen[mb.Name] {
			errs = append(errs, fmt.Errorf("member %q: bad or repeated name", mb.Name))
		}
		seen[mb.Name] = true
		if _, _, err := net.SplitHostPort(mb.Actor); err != nil {
			errs = append(errs, fmt.Errorf("member %s: actor address %q: %v", mb.Name, mb.Actor, err))
		}
		if u, err := url.Parse(mb.Internal); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("member %s: internal URL %q: want http://host:port", mb.Name, mb.Internal))
		}
		if _, _, err := net.SplitHostPort(mb.Seed); err != nil {
			errs = append(errs, fmt.Errorf("member %s: seed %q: %v", mb.Name, mb.Seed, err))
		}
		if mb.Name == c.Node {
			self = true
			if mb.Actor != c.Listen.Actor {
				errs = append(errs, fmt.Errorf("member %s: actor address %s differs from listen.actor %s", mb.Name, mb.Actor, c.Listen.Actor))
			}
		}
	}
	if c.Node != "" && !self {
		errs = append(errs, fmt.Errorf("node %s is not in the member list", c.Node))
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		errs = append(errs, fmt.Errorf("log format %q: want text or json", c.Log.Format))
	}
	return errors.Join(errs...)
}

// defaultSeed is a member's health endpoint when the config names none:
// its actor host, this node's health port (members alike in production).
func defaultSeed(actorAddr, health string) string {
	h, _, err := net.SplitHostPort(actorAddr)
	_, p, err2 := net.SplitHostPort(health)
	if err != nil || err2 != nil {
		return ""
	}
	return net.JoinHostPort(h, p)
}

func validName(s string) bool {
	if s == "" || len(s) > 32 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}
