// Command hcctl is the admin command line of a hybridcluster: a client of
// the admin endpoint every node serves (runtime/admin). `hcctl -h` lists the
// verbs and where the endpoint and token come from; `hcctl help VERB`
// documents one verb.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/admin"
)

const (
	defaultEndpoint    = "http://127.0.0.1:7080"
	defaultTimeout     = 10 * time.Second
	defaultWaitTimeout = 2 * time.Minute
)

// Overridden by tests: the clock that ages are shown against, and the
// interval of migrate's polls.
var (
	now       = time.Now
	pollEvery = 200 * time.Millisecond
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := runContext(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is hcctl with its arguments (without the program name), environment,
// and output; it returns the exit status: 0 done, 1 failed, 2 usage error.
func run(args []string, env func(string) string, stdout, stderr io.Writer) int {
	return runContext(context.Background(), args, env, stdout, stderr)
}

// usageError is a mistake on the command line (exit status 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// globals are the flags every verb takes.
type globals struct {
	endpoint, token, tokenFile string
	json                       bool
	timeout                    time.Duration
}

// defineGlobals adds the global flags to fs, keeping g's current values
// (so that they can be given again after the verb). Names in skip are left
// out (a verb's own flag of that name wins).
func defineGlobals(fs *flag.FlagSet, g *globals, skip ...string) {
	def := func(name string) bool { return !slices.Contains(skip, name) }
	if def("endpoint") {
		fs.StringVar(&g.endpoint, "endpoint", g.endpoint, "admin endpoint URL (env HC_ENDPOINT; default "+defaultEndpoint+")")
	}
	if def("token") {
		fs.StringVar(&g.token, "token", g.token, "bearer token (env HC_TOKEN); visible to other local users in ps, prefer --token-file")
	}
	if def("token-file") {
		fs.StringVar(&g.tokenFile, "token-file", g.tokenFile, "file holding the bearer token (env HC_TOKEN_FILE)")
	}
	if def("json") {
		fs.BoolVar(&g.json, "json", g.json, "print JSON instead of tables")
	}
	if def("timeout") {
		fs.DurationVar(&g.timeout, "timeout", g.timeout, "bound of each call to the endpoint")
	}
}

// opts are the verbs' own flags.
type opts struct {
	domains     stringList
	app         string
	quota       string
	redundancy  uint
	ftpUsers    stringList
	mysqlUsers  stringList
	tlsCert     string
	tlsKey      string
	wait        bool
	waitTimeout time.Duration
	count       int
	yes         bool
}

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// command is one verb.
type command struct {
	name    string // "site create"
	args    []string
	summary string
	details string
	setup   func(fs *flag.FlagSet, o *opts)
	noAuth  bool
	run     func(c *cli, o *opts, args []string) error
}

var commands []*command

func init() {
	commands = []*command{
		{name: "sites", summary: "list every site", run: (*cli).sites,
			details: "Columns: NAME MASTER PHASE EPOCH REPLICAS LAST-SNAPSHOT (age of the master's newest\n" +
				"snapshot) LAG (the largest replication lag of any replica; \"seeding\" while a replica\n" +
				"holds no snapshot yet) DOMAINS. A site being created shows phase \"placing\"; one\n" +
				"without a master (its node is down) shows \"failing_over\"."},
		{name: "site show", args: []string{"NAME"}, summary: "show one site: spec, master, phase, every copy and its lag", run: (*cli).siteShow},
		{name: "site create", args: []string{"NAME"}, summary: "create a site (placed by the balancer)", run: (*cli).siteCreate,
			setup: func(fs *flag.FlagSet, o *opts) {
				fs.Var(&o.domains, "domain", "a `domain` the site answers (repeatable; at least one)")
				fs.StringVar(&o.app, "app", "", "the site's app command (empty: static files from web/)")
				fs.StringVar(&o.quota, "quota", "", "dataset quota: bytes, or with a unit K, M, G, T (powers of 1024), e.g. 10G")
				fs.UintVar(&o.redundancy, "redundancy", 0, "copies including the master (0: the cluster default)")
				fs.Var(&o.ftpUsers, "ftp-user", "an FTP account `name:password` (repeatable)")
				fs.Var(&o.mysqlUsers, "mysql-user", "a MySQL account `name:password[:db1,db2]` (repeatable; the password may not contain ':')")
				fs.StringVar(&o.tlsCert, "tls-cert", "", "PEM `file` of the site's certificate chain for HTTPS (with --tls-key; it must cover every domain)")
				fs.StringVar(&o.tlsKey, "tls-key", "", "PEM `file` of the certificate's private key")
			},
			details: "Site names are 1..63 lower-case letters, digits and inner '-'; user names 1..32 of\n" +
				"a-z, 0-9, _. Passwords are hashed by the endpoint and never shown again. Passwords\n" +
				"given on the command line are visible to other local users (ps, shell history).\n" +
				"The answer comes before the site is placed: follow it with `hcctl site show NAME`.\n\n" +
				"Example:\n  hcctl site create shop --domain shop.example --domain www.shop.example \\\n" +
				"      --quota 10G --ftp-user alice:s3cret --mysql-user shop:pw:shop_db"},
		{name: "site delete", args: []string{"NAME"}, summary: "delete a site: it stops being served everywhere, every copy is stashed whole", run: (*cli).siteDelete,
			setup: func(fs *flag.FlagSet, o *opts) {
				fs.BoolVar(&o.yes, "yes", false, "confirm the deletion (required)")
			},
			details: "The site stops being served on every node at once (requests for its domains are\n" +
				"answered 404), its processes stop, and every copy of its dataset is stashed whole:\n" +
				"nothing is destroyed, the stashes stay on the nodes. The cluster remembers the\n" +
				"deletion (a node that was down brings no copy back). The name can be created again\n" +
				"afterwards, as a new, empty site; the old data is in the stashes named deleted-...\n" +
				"on the nodes that held it (hcctl stash NAME once it exists again, hcctl restore)."},
		{name: "migrate", args: []string{"SITE", "NODE"}, summary: "move a site to NODE and follow the move", run: (*cli).migrate,
			setup: func(fs *flag.FlagSet, o *opts) {
				fs.BoolVar(&o.wait, "wait", true, "follow the move until the site is active on NODE (--wait=false: return at once)")
				fs.DurationVar(&o.waitTimeout, "timeout", defaultWaitTimeout, "how long to wait for the move (after the verb; before it, --timeout bounds each call)")
			},
			details: "The site's master pre-copies to NODE while live, pauses (requests are held, not\n" +
				"failed), sends the final delta and promotes NODE. With --wait (the default) hcctl\n" +
				"polls the site every 200ms and prints each phase change with the time since the\n" +
				"request and the replication state, and exits 0 once the site is active on NODE,\n" +
				"1 if the move was refused or did not finish in time. With --json the progress goes\n" +
				"to stderr and the final site to stdout."},
		{name: "snapshots", args: []string{"SITE"}, summary: "list the snapshots of the site's master copy", run: (*cli).snapshots},
		{name: "snapshot", args: []string{"SITE"}, summary: "take a snapshot of the site now", run: (*cli).snapshot},
		{name: "mount", args: []string{"SITE", "SNAPSHOT"}, summary: "mount one of the site's snapshots read-only and print its directory", run: (*cli).mount,
			details: "The site's master mounts the snapshot (see hcctl snapshots SITE) read-only to\n" +
				"browse an old version of the site; stdout is the directory on the master's node\n" +
				"(stderr names the node). Retention keeps a mounted snapshot until it is unmounted.\n" +
				"Mounting a snapshot mounted already answers the same directory."},
		{name: "unmount", args: []string{"SITE", "SNAPSHOT"}, summary: "end the read-only mount of one of the site's snapshots", run: (*cli).unmount},
		{name: "rollback", args: []string{"SITE", "SNAPSHOT"}, summary: "roll the site back to SNAPSHOT (later history is stashed, not destroyed)", run: (*cli).rollback},
		{name: "stash", args: []string{"SITE"}, summary: "list the stashes of the site's master copy", run: (*cli).stash},
		{name: "restore", args: []string{"SITE", "STASH"}, summary: "restore one of the site's stashes", run: (*cli).restore},
		{name: "nodes", summary: "list the members: live, draining, load, free space, masters, replicas", run: (*cli).nodes},
		{name: "drain", args: []string{"NODE"}, summary: "move every site off NODE", run: (*cli).drain},
		{name: "remove", args: []string{"NODE"}, summary: "take NODE (down) out of the cluster for good", run: (*cli).remove,
			details: "Only a node that is down can be removed: drain a live node first (its sites move\n" +
				"off), stop it, then remove it. Its copies are replaced on the other nodes and it\n" +
				"is not heard again; to bring the machine back, give it a new name and an empty\n" +
				"data directory."},
		{name: "events", summary: "follow the cluster's events (route changes, members up and down)", run: (*cli).events,
			setup: func(fs *flag.FlagSet, o *opts) {
				fs.IntVar(&o.count, "count", 0, "stop after this many events (0: until interrupted)")
			},
			details: "One line per event; with --json one JSON object per line. The global --timeout\n" +
				"does not apply: the stream is followed until interrupted or --count is reached."},
		{name: "health", summary: "ask the node whether it is up (needs no token)", noAuth: true, run: (*cli).health},
	}
}

func findCommand(args []string) (*command, int) {
	if len(args) == 0 {
		return nil, 0
	}
	for _, c := range commands {
		words := strings.Fields(c.name)
		if len(args) >= len(words) && slices.Equal(args[:len(words)], words) {
			return c, len(words)
		}
	}
	return nil, 0
}

func (c *command) usageLine() string {
	s := "hcctl [global flags] " + c.name
	for _, a := range c.args {
		s += " " + a
	}
	if c.setup != nil {
		s += " [flags]"
	}
	return s
}

func printMainUsage(w io.Writer) {
	fmt.Fprint(w, `hcctl is the admin command line of a hybridcluster.

Usage:
  hcctl [global flags] VERB [args] [flags]
  hcctl help [VERB]

Verbs:
`)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range commands {
		fmt.Fprintf(tw, "  %s %s\t%s\n", c.name, strings.Join(c.args, " "), c.summary)
	}
	tw.Flush()
	fmt.Fprint(w, `
Global flags (before or after the verb):
  --endpoint URL      the admin endpoint of any node; default $HC_ENDPOINT, else `+defaultEndpoint+`
  --token TOKEN       the bearer token (visible to other local users in ps: prefer a file)
  --token-file PATH   a file holding the token (surrounding white space is ignored)
  --json              print JSON instead of tables (every verb)
  --timeout D         bound of each call to the endpoint (default 10s)

The token is the first of: --token, --token-file, $HC_TOKEN, the file named by
$HC_TOKEN_FILE. Every verb but health needs it. The endpoint is --endpoint, else
$HC_ENDPOINT, else `+defaultEndpoint+`; every node's endpoint serves the whole cluster.

Exit status: 0 done, 1 failed (the reason on stderr), 2 usage error.
Run 'hcctl help VERB' for a verb's flags and details.
`)
}

func printCommandUsage(w io.Writer, c *command) {
	fmt.Fprintf(w, "Usage: %s\n\n%s.\n", c.usageLine(), strings.ToUpper(c.summary[:1])+c.summary[1:])
	if c.setup != nil {
		fmt.Fprint(w, "\nFlags:\n")
		fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
		fs.SetOutput(w)
		c.setup(fs, &opts{})
		fs.PrintDefaults()
	}
	if c.details != "" {
		fmt.Fprintf(w, "\n%s\n", c.details)
	}
	fmt.Fprint(w, "\nThe global flags (--endpoint, --token, --token-file, --json, --timeout) may come\nbefore or after the verb; see 'hcctl -h'.\n")
}

// parseInterspersed parses flags anywhere among the positional arguments
// (up to a "--"), returning the positional ones.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if i := len(args) - len(rest); i > 0 && args[i-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// cli is one run of hcctl.
type cli struct {
	ctx    context.Context
	g      globals
	env    func(string) string
	out    io.Writer
	errw   io.Writer
	client *admin.Client
}

func runContext(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) int {
	if env == nil {
		env = func(string) string { return "" }
	}
	c := &cli{ctx: ctx, env: env, out: stdout, errw: stderr, g: globals{timeout: defaultTimeout}}
	fs := flag.NewFlagSet("hcctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	defineGlobals(fs, &c.g)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printMainUsage(stdout)
			return 0
		}
		fmt.Fprintf(stderr, "hcctl: %v\nRun 'hcctl -h' for usage.\n", err)
		return 2
	}
	args = fs.Args()
	if len(args) == 0 {
		printMainUsage(stderr)
		return 2
	}
	if args[0] == "help" {
		if len(args) == 1 {
			printMainUsage(stdout)
			return 0
		}
		cmd, n := findCommand(args[1:])
		if cmd == nil || n != len(args)-1 {
			fmt.Fprintf(stderr, "hcctl: no verb %q\nRun 'hcctl -h' for the verbs.\n", strings.Join(args[1:], " "))
			return 2
		}
		printCommandUsage(stdout, cmd)
		return 0
	}
	cmd, n := findCommand(args)
	if cmd == nil {
		fmt.Fprintf(stderr, "hcctl: no verb %q\nRun 'hcctl -h' for the verbs.\n", strings.Join(args[:min(len(args), 2)], " "))
		return 2
	}
	var o opts
	vfs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	vfs.SetOutput(io.Discard)
	var skip []string
	if cmd.setup != nil {
		cmd.setup(vfs, &o)
		vfs.VisitAll(func(f *flag.Flag) { skip = append(skip, f.Name) })
	}
	defineGlobals(vfs, &c.g, skip...)
	pos, err := parseInterspersed(vfs, args[n:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printCommandUsage(stdout, cmd)
			return 0
		}
		fmt.Fprintf(stderr, "hcctl %s: %v\nRun 'hcctl help %s' for usage.\n", cmd.name, err, cmd.name)
		return 2
	}
	if len(pos) != len(cmd.args) {
		fmt.Fprintf(stderr, "hcctl %s: want %d argument(s) (%s), got %d\nUsage: %s\n",
			cmd.name, len(cmd.args), strings.Join(cmd.args, " "), len(pos), cmd.usageLine())
		return 2
	}
	if err := c.connect(cmd.noAuth); err != nil {
		return c.fail(err)
	}
	if err := cmd.run(c, &o, pos); err != nil {
		return c.fail(err)
	}
	return 0
}

func (c *cli) fail(err error) int {
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(c.errw, "hcctl: %v\nRun 'hcctl -h' for usage.\n", err)
		return 2
	}
	if errors.Is(err, context.Canceled) && c.ctx.Err() != nil {
		fmt.Fprintln(c.errw, "hcctl: interrupted")
		return 1
	}
	fmt.Fprintf(c.errw, "hcctl: %v\n", err)
	return 1
}

// token is the bearer token: --token, --token-file, $HC_TOKEN, $HC_TOKEN_FILE.
func (c *cli) token() (string, error) {
	fromFile := func(path, what string) (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("token file (%s): %w", what, err)
		}
		t := strings.TrimSpace(string(b))
		if t == "" {
			return "", fmt.Errorf("token file %s (%s) is empty", path, what)
		}
		return t, nil
	}
	switch {
	case c.g.token != "":
		return c.g.token, nil
	case c.g.tokenFile != "":
		return fromFile(c.g.tokenFile, "--token-file")
	case c.env("HC_TOKEN") != "":
		return strings.TrimSpace(c.env("HC_TOKEN")), nil
	case c.env("HC_TOKEN_FILE") != "":
		return fromFile(c.env("HC_TOKEN_FILE"), "HC_TOKEN_FILE")
	}
	return "", usagef("no token: give --token or --token-file, or set HC_TOKEN or HC_TOKEN_FILE")
}

func (c *cli) connect(noAuth bool) error {
	endpoint := c.g.endpoint
	if endpoint == "" {
		endpoint = c.env("HC_ENDPOINT")
	}
	if endpoint == "" {
		endpoint = defaultEndpoint
	}
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usagef("endpoint %q: want http://host:port or https://host:port", endpoint)
	}
	if c.g.timeout <= 0 {
		return usagef("--timeout must be positive")
	}
	var tok string
	if !noAuth {
		if tok, err = c.token(); err != nil {
			return err
		}
		if u.Scheme == "http" && !isLoopback(u.Hostname()) {
			fmt.Fprintf(c.errw, "hcctl: warning: the token goes to %s over plain http\n", u.Host)
		}
	}
	// No client-wide timeout: each call has its own (events has none).
	c.client = admin.NewClient(endpoint, tok, &http.Client{})
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// call runs one call bounded by the global --timeout.
func call[T any](c *cli, f func(ctx context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.g.timeout)
	defer cancel()
	v, err := f(ctx)
	if err != nil && errors.Is(err, context.DeadlineExceeded) && c.ctx.Err() == nil {
		return v, fmt.Errorf("no answer from the endpoint within %v", c.g.timeout)
	}
	return v, err
}

func call0(c *cli, f func(ctx context.Context) error) error {
	_, err := call(c, func(ctx context.Context) (struct{}, error) { return struct{}{}, f(ctx) })
	return err
}

func (c *cli) printJSON(v any) error {
	enc := json.NewEncoder(c.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (c *cli) table() *tabwriter.Writer { return tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0) }

// ---------------------------------------------------------------- formatting

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func joinOrDash(l []string) string { return orDash(strings.Join(l, ",")) }

// age is how long ago t was, in one unit: "12s ago", "5m ago", "3h ago", "2d ago".
func age(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := max(0, now().Sub(t))
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd ago", int(d/(24*time.Hour)))
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05") + " (" + age(t) + ")"
}

// fmtBytes is n in powers of 1024 with one decimal: "512B", "1.5K", "10.0G".
func fmtBytes(n uint64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%dB", n)
	}
	v, i := float64(n)/1024, 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmt.Sprintf("%.1f%c", v, units[i])
}

func fmtLag(s float64) string { return strconv.FormatFloat(s, 'f', 1, 64) + "s" }

// siteLag is the LAG column: the largest replica lag, "seeding" while a
// replica holds nothing the master has, "-" without replicas or master.
func siteLag(s *admin.Site) string {
	if s.Master == "" || len(s.Replicas) == 0 {
		return "-"
	}
	for _, cp := range s.Copies {
		if cp.Role != "master" && cp.Latest == nil && s.LastSnapshot != nil {
			return "seeding"
		}
	}
	return fmtLag(s.LagS)
}

// replicationState is one line on the replicas: "n2 1.2s behind, n3 seeding".
func replicationState(s *admin.Site) string {
	if len(s.Copies) == 0 {
		return "no copies reported"
	}
	var parts []string
	for _, cp := range s.Copies {
		if cp.Node == s.Master {
			continue
		}
		switch {
		case s.Master == "":
			parts = append(parts, cp.Node+" (no master)")
		case cp.Latest == nil && s.LastSnapshot != nil:
			parts = append(parts, cp.Node+" seeding")
		default:
			parts = append(parts, cp.Node+" "+fmtLag(cp.LagS)+" behind")
		}
	}
	if len(parts) == 0 {
		return "no replicas"
	}
	return "replicas: " + strings.Join(parts, ", ")
}

// parseBytes reads "1024", "10G", "512MiB", "1.5T" (powers of 1024).
func parseBytes(s string) (uint64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(t, "B")
	t = strings.TrimSuffix(t, "I")
	mult := uint64(1)
	if n := len(t); n > 0 {
		if i := strings.IndexByte("KMGTPE", t[n-1]); i >= 0 {
			mult = 1 << (10 * (i + 1))
			t = t[:n-1]
		}
	}
	if t == "" {
		return 0, fmt.Errorf("quota %q: want bytes or a number with K, M, G or T", s)
	}
	if n, err := strconv.ParseUint(t, 10, 64); err == nil {
		if n > ^uint64(0)/mult {
			return 0, fmt.Errorf("quota %q is too large", s)
		}
		return n * mult, nil
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("quota %q: want bytes or a number with K, M, G or T", s)
	}
	if f*float64(mult) >= 1<<64 {
		return 0, fmt.Errorf("quota %q is too large", s)
	}
	return uint64(f * float64(mult)), nil
}

// ---------------------------------------------------------------- verbs

func (c *cli) sites(o *opts, args []string) error {
	sites, err := call(c, c.client.Sites)
	if err != nil {
		return fmt.Errorf("sites: %w", err)
	}
	if c.g.json {
		return c.printJSON(admin.SiteList{Sites: sites})
	}
	tw := c.table()
	fmt.Fprintln(tw, "NAME\tMASTER\tPHASE\tEPOCH\tREPLICAS\tLAST-SNAPSHOT\tLAG\tDOMAINS")
	for i := range sites {
		s := &sites[i]
		last := "-"
		if s.LastSnapshot != nil {
			last = age(s.LastSnapshot.TakenAt)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, orDash(s.Master), s.Phase, orDash(s.Epoch),
			joinOrDash(s.Replicas), last, siteLag(s), joinOrDash(s.Domains))
	}
	return tw.Flush()
}

func (c *cli) siteShow(o *opts, args []string) error {
	name := args[0]
	s, err := call(c, func(ctx context.Context) (*admin.Site, error) { return c.client.Site(ctx, name) })
	if err != nil {
		return fmt.Errorf("site %q: %w", name, err)
	}
	if c.g.json {
		return c.printJSON(s)
	}
	c.printSite(s)
	return nil
}

func (c *cli) printSite(s *admin.Site) {
	tw := c.table()
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("name", s.Name)
	row("domains", strings.Join(s.Domains, ", "))
	row("master", orDash(s.Master))
	row("phase", s.Phase)
	for _, cp := range s.Copies {
		if cp.ActivationError != "" {
			row("takeover", cp.Node+" could not take over: "+cp.ActivationError)
		}
	}
	if s.ProcessError != "" {
		row("processes", "FAILING: "+s.ProcessError)
	}
	for _, cp := range s.Copies {
		if cp.ReplicationError != "" {
			row("replication", cp.Node+" is not getting the master's snapshots: "+cp.ReplicationError)
		}
	}
	row("epoch", orDash(s.Epoch))
	row("replicas", joinOrDash(s.Replicas))
	if s.LastSnapshot != nil {
		row("last snapshot", s.LastSnapshot.Name+" at "+fmtTime(s.LastSnapshot.TakenAt))
	} else {
		row("last snapshot", "-")
	}
	row("replication lag", siteLag(s))
	row("app", orDash(s.AppCommand))
	if s.TLS {
		row("https", "certificate stored")
	}
	if s.QuotaBytes > 0 {
		row("quota", fmtBytes(s.QuotaBytes))
	} else {
		row("quota", "-")
	}
	row("ftp users", joinOrDash(s.FTPUsers))
	row("mysql users", joinOrDash(s.MySQLUsers))
	row("ftp leases", strconv.FormatUint(uint64(s.FTPLeases), 10))
	row("reported", fmtTime(s.ReportedAt))
	tw.Flush()
	if len(s.Copies) == 0 {
		return
	}
	fmt.Fprintln(c.out)
	tw = c.table()
	fmt.Fprintln(tw, "NODE\tROLE\tPHASE\tEPOCH\tLATEST\tTAKEN\tLAG\tSNAPSHOTS\tSTASHES\tBYTES")
	for _, cp := range s.Copies {
		latest, taken, lag := "-", "-", "-"
		if cp.Latest != nil {
			latest, taken = cp.Latest.Name, age(cp.Latest.TakenAt)
		}
		if cp.Role != "master" && s.Master != "" {
			lag = fmtLag(cp.LagS)
			if cp.Latest == nil && s.LastSnapshot != nil {
				lag = "seeding"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", cp.Node, cp.Role, cp.Phase, cp.Epoch,
			latest, taken, lag, cp.Snapshots, cp.Stashes, fmtBytes(cp.Bytes))
	}
	tw.Flush()
}

func splitUser(kind, v string, parts int) ([]string, error) {
	p := strings.SplitN(v, ":", parts)
	if len(p) < 2 || p[0] == "" || p[1] == "" {
		if parts == 2 {
			return nil, usagef("--%s-user %q: want name:password", kind, p[0])
		}
		return nil, usagef("--%s-user %q: want name:password[:db1,db2]", kind, p[0])
	}
	return p, nil
}

func (c *cli) siteCreate(o *opts, args []string) error {
	req := admin.CreateSite{Name: args[0], Domains: o.domains, AppCommand: o.app, Redundancy: uint32(o.redundancy)}
	if len(o.domains) == 0 {
		return usagef("site create %s: give at least one --domain", args[0])
	}
	if o.redundancy > admin.MaxRedundancy {
		return usagef("--redundancy %d: want 0..%d", o.redundancy, admin.MaxRedundancy)
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return usagef("site create %s: give --tls-cert and --tls-key together", args[0])
	}
	if o.tlsCert != "" {
		for _, f := range []struct {
			path string
			dst  *string
		}{{o.tlsCert, &req.TLSCert}, {o.tlsKey, &req.TLSKey}} {
			st, err := os.Stat(f.path)
			if err != nil {
				return err
			}
			if st.Size() > admin.MaxTLSPEMBytes {
				return usagef("%s: %d bytes, at most %d", f.path, st.Size(), admin.MaxTLSPEMBytes)
			}
			b, err := os.ReadFile(f.path)
			if err != nil {
				return err
			}
			*f.dst = string(b)
		}
	}
	if o.quota != "" {
		q, err := parseBytes(o.quota)
		if err != nil {
			return usagef("%v", err)
		}
		req.QuotaBytes = q
	}
	for _, v := range o.ftpUsers {
		p, err := splitUser("ftp", v, 2)
		if err != nil {
			return err
		}
		req.FTPUsers = append(req.FTPUsers, admin.User{Name: p[0], Password: p[1]})
	}
	for _, v := range o.mysqlUsers {
		p, err := splitUser("mysql", v, 3)
		if err != nil {
			return err
		}
		u := admin.User{Name: p[0], Password: p[1]}
		if len(p) == 3 && p[2] != "" {
			u.Databases = strings.Split(p[2], ",")
		}
		req.MySQLUsers = append(req.MySQLUsers, u)
	}
	s, err := call(c, func(ctx context.Context) (*admin.Site, error) { return c.client.CreateSite(ctx, req) })
	if err != nil {
		return fmt.Errorf("site %q: %w", args[0], err)
	}
	if c.g.json {
		return c.printJSON(s)
	}
	fmt.Fprintf(c.out, "site %s: asked for (%s); domains %s\nFollow it with: hcctl site show %s\n",
		s.Name, s.Phase, strings.Join(s.Domains, ", "), s.Name)
	return nil
}

func (c *cli) migrate(o *opts, args []string) error {
	site, node := args[0], args[1]
	if o.wait && o.waitTimeout <= 0 {
		return usagef("migrate: --timeout must be positive")
	}
	start := time.Now()
	before, err := call(c, func(ctx context.Context) (*admin.Site, error) { return c.client.Migrate(ctx, site, node) })
	if err != nil {
		return fmt.Errorf("site %q: migrate to %q: %w", site, node, err)
	}
	if !o.wait {
		if c.g.json {
			return c.printJSON(before)
		}
		fmt.Fprintf(c.out, "site %s: move from %s to %s asked for\n", site, before.Master, node)
		return nil
	}
	progress := c.out
	if c.g.json {
		progress = c.errw
	}
	fmt.Fprintf(progress, "moving %s from %s to %s\n", site, before.Master, node)
	s, err := c.follow(progress, site, node, before.Master, before.Epoch, start, o.waitTimeout)
	if err != nil {
		return fmt.Errorf("site %q: migrate to %q: %w", site, node, err)
	}
	if c.g.json {
		return c.printJSON(s)
	}
	return nil
}

// follow polls the site until it is active on node, printing each change
// of phase or master with the time since start and the replication state.
// The move was abandoned when the site is active on from again after a
// phase of the move was seen, or at another epoch than fromEpoch (a target
// that refused its promotion: the source resumes at a new epoch, often
// between two polls).
func (c *cli) follow(w io.Writer, site, node, from, fromEpoch string, start time.Time, timeout time.Duration) (*admin.Site, error) {
	deadline := start.Add(timeout)
	var last, lastErr string
	moving := false
	elapsed := func() string { return fmt.Sprintf("%6.1fs", time.Since(start).Seconds()) }
	for {
		s, err := call(c, func(ctx context.Context) (*admin.Site, error) { return c.client.Site(ctx, site) })
		switch {
		case err != nil && c.ctx.Err() != nil:
			return nil, c.ctx.Err()
		case err != nil:
			var ae *admin.APIError
			if errors.As(err, &ae) && ae.Status != http.StatusServiceUnavailable {
				return nil, err
			}
			// No view for now (a balancer change, a slow node): keep polling.
			if msg := err.Error(); msg != lastErr {
				fmt.Fprintf(w, "%s  (no view: %v)\n", elapsed(), err)
				lastErr = msg
			}
		default:
			lastErr = ""
			state := s.Phase
			if s.Master != "" && (s.Phase == "active" || s.Master != from) {
				state += " on " + s.Master
			}
			if state != last {
				fmt.Fprintf(w, "%s  %-18s %s\n", elapsed(), state, replicationState(s))
				last = state
			}
			if s.Master == node && s.Phase == "active" {
				fmt.Fprintf(w, "%s  done: %s is active on %s at epoch %s\n", elapsed(), site, node, s.Epoch)
				return s, nil
			}
			if s.Phase != "active" {
				moving = true
			} else if s.Master == from && (moving || fromEpoch != "" && s.Epoch != fromEpoch) {
				return nil, fmt.Errorf("the move was abandoned: %s is active on %s again (see the node logs of %s)", site, from, from)
			}
		}
		if !time.Now().Before(deadline) {
			return nil, fmt.Errorf("not active on %s after %v (last seen: %s)", node, timeout, orDash(last))
		}
		select {
		case <-c.ctx.Done():
			return nil, c.ctx.Err()
		case <-time.After(min(pollEvery, max(time.Millisecond, time.Until(deadline)))):
		}
	}
}

func (c *cli) snapshots(o *opts, args []string) error {
	site := args[0]
	l, err := call(c, func(ctx context.Context) (*admin.SnapshotList, error) { return c.client.Snapshots(ctx, site) })
	if err != nil {
		return fmt.Errorf("site %q: %w", site, err)
	}
	if c.g.json {
		return c.printJSON(l)
	}
	if len(l.Snapshots) == 0 {
		fmt.Fprintf(c.out, "no snapshots of %s on %s\n", site, l.Node)
		return nil
	}
	tw := c.table()
	fmt.Fprintln(tw, "NAME\tEPOCH\tSEQ\tTAKEN\tMOUNTED AT")
	for _, s := range l.Snapshots {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", s.Name, s.Epoch, s.Seq, fmtTime(s.TakenAt), cmp.Or(s.MountPath, "-"))
	}
	return tw.Flush()
}

func (c *cli) done(format string, args ...any) error {
	if c.g.json {
		return c.printJSON(map[string]bool{"accepted": true})
	}
	fmt.Fprintf(c.out, format+"\n", args...)
	return nil
}

func (c *cli) siteDelete(o *opts, args []string) error {
	name := args[0]
	if !o.yes {
		return usagef("deleting site %s stops it everywhere and stashes every copy of it: give --yes to confirm", name)
	}
	s, err := call(c, func(ctx context.Context) (*admin.Site, error) { return c.client.DeleteSite(ctx, name) })
	if err != nil {
		return fmt.Errorf("site %q: delete: %w", name, err)
	}
	if c.g.json {
		return c.printJSON(admin.SiteBody{Site: *s})
	}
	fmt.Fprintf(c.out, "site %s: delete asked for; it stops being served everywhere and every copy is stashed whole (stashes deleted-...)\n", name)
	return nil
}

func (c *cli) snapshot(o *opts, args []string) error {
	site := args[0]
	if err := call0(c, func(ctx context.Context) error { return c.client.TakeSnapshot(ctx, site) }); err != nil {
		return fmt.Errorf("site %q: %w", site, err)
	}
	return c.done("site %s: snapshot asked for (see hcctl snapshots %s)", site, site)
}

func (c *cli) mount(o *opts, args []string) error {
	site, snap := args[0], args[1]
	mt, err := call(c, func(ctx context.Context) (*admin.Mount, error) { return c.client.Mount(ctx, site, snap) })
	if err != nil {
		return fmt.Errorf("site %q: mount %q: %w", site, snap, err)
	}
	if c.g.json {
		return c.printJSON(mt)
	}
	fmt.Fprintf(c.errw, "hcctl: %s of %s is mounted read-only on node %s (hcctl unmount %s %s ends it)\n", snap, site, mt.Node, site, snap)
	fmt.Fprintln(c.out, mt.Path)
	return nil
}

func (c *cli) unmount(o *opts, args []string) error {
	site, snap := args[0], args[1]
	if err := call0(c, func(ctx context.Context) error { return c.client.Unmount(ctx, site, snap) }); err != nil {
		return fmt.Errorf("site %q: unmount %q: %w", site, snap, err)
	}
	if c.g.json {
		return c.printJSON(map[string]bool{"unmounted": true})
	}
	fmt.Fprintf(c.out, "site %s: snapshot %s unmounted\n", site, snap)
	return nil
}

func (c *cli) rollback(o *opts, args []string) error {
	site, snap := args[0], args[1]
	if err := call0(c, func(ctx context.Context) error { return c.client.Rollback(ctx, site, snap) }); err != nil {
		return fmt.Errorf("site %q: rollback to %q: %w", site, snap, err)
	}
	return c.done("site %s: rollback to %s asked for; later snapshots and the live data are stashed (hcctl stash %s)", site, snap, site)
}

func (c *cli) stash(o *opts, args []string) error {
	site := args[0]
	l, err := call(c, func(ctx context.Context) (*admin.StashList, error) { return c.client.Stash(ctx, site) })
	if err != nil {
		return fmt.Errorf("site %q: %w", site, err)
	}
	if c.g.json {
		return c.printJSON(l)
	}
	if len(l.Stashes) == 0 {
		fmt.Fprintf(c.out, "no stashes of %s on %s\n", site, l.Node)
		return nil
	}
	fmt.Fprintf(c.out, "stashes of %s on %s:\n", site, l.Node)
	for _, s := range l.Stashes {
		fmt.Fprintf(c.out, "  %s\n", s)
	}
	return nil
}

func (c *cli) restore(o *opts, args []string) error {
	site, stash := args[0], args[1]
	if err := call0(c, func(ctx context.Context) error { return c.client.RestoreStash(ctx, site, stash) }); err != nil {
		return fmt.Errorf("site %q: restore %q: %w", site, stash, err)
	}
	return c.done("site %s: restore of stash %s asked for", site, stash)
}

func (c *cli) nodes(o *opts, args []string) error {
	nodes, err := call(c, c.client.Nodes)
	if err != nil {
		return fmt.Errorf("nodes: %w", err)
	}
	if c.g.json {
		return c.printJSON(admin.NodeList{Nodes: nodes})
	}
	yes := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	tw := c.table()
	fmt.Fprintln(tw, "NAME\tLIVE\tDRAINING\tLOAD\tFREE/SIZE\tMASTERS\tREPLICAS\tBALANCER\tREPORTED\tCLUSTER MEMBER")
	for _, n := range nodes {
		free, reported := "-", "-"
		if !n.ReportedAt.IsZero() {
			size := "-"
			if n.SizeBytes > 0 {
				size = fmtBytes(n.SizeBytes)
			}
			free, reported = fmtBytes(n.FreeBytes)+"/"+size, age(n.ReportedAt)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d\t%d\t%s\t%s\t%s\n", n.Name, yes(n.Live), yes(n.Draining), n.Load,
			free, n.Masters, n.Replicas, yes(n.Balancer), reported, orDash(n.ClusterMember))
	}
	return tw.Flush()
}

func (c *cli) drain(o *opts, args []string) error {
	node := args[0]
	if err := call0(c, func(ctx context.Context) error { return c.client.Drain(ctx, node) }); err != nil {
		return fmt.Errorf("node %q: drain: %w", node, err)
	}
	return c.done("node %s: drain asked for; its sites move to other nodes (hcctl sites)", node)
}

func (c *cli) remove(o *opts, args []string) error {
	node := args[0]
	if err := call0(c, func(ctx context.Context) error { return c.client.Remove(ctx, node) }); err != nil {
		return fmt.Errorf("node %q: remove: %w", node, err)
	}
	return c.done("node %s: removed from the cluster; its copies are replaced on the other nodes (hcctl sites)", node)
}

func (c *cli) events(o *opts, args []string) error {
	if o.count < 0 {
		return usagef("events: --count must not be negative")
	}
	seen := 0
	errEnough := errors.New("enough")
	err := c.client.Events(c.ctx, func(ev admin.Event) error {
		if c.g.json {
			b, err := json.Marshal(ev)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.out, "%s\n", b)
		} else {
			fmt.Fprintln(c.out, eventLine(ev))
		}
		if seen++; o.count > 0 && seen >= o.count {
			return errEnough
		}
		return nil
	})
	switch {
	case errors.Is(err, errEnough):
		return nil
	case err == nil:
		return errors.New("events: the endpoint ended the stream (this client was too slow, or the node stops)")
	case c.ctx.Err() != nil:
		return nil // interrupted: the normal end of following
	}
	return fmt.Errorf("events: %w", err)
}

// eventLine is one readable line for an event.
func eventLine(ev admin.Event) string {
	t := "-"
	if !ev.At.IsZero() {
		t = ev.At.Local().Format("15:04:05.000")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %-6s", t, ev.Type)
	switch ev.Type {
	case "member":
		state := "?"
		if ev.Up != nil {
			state = map[bool]string{true: "up", false: "down"}[*ev.Up]
		}
		fmt.Fprintf(&b, "  %s %s", ev.Node, state)
	default:
		if ev.Site != "" {
			fmt.Fprintf(&b, "  %s", ev.Site)
		}
		for _, kv := range [][2]string{{"master", ev.Master}, {"epoch", ev.Epoch}, {"phase", ev.Phase}, {"node", ev.Node}} {
			if kv[1] != "" {
				fmt.Fprintf(&b, " %s=%s", kv[0], kv[1])
			}
		}
	}
	if ev.Msg != "" {
		fmt.Fprintf(&b, "  %s", ev.Msg)
	}
	return b.String()
}

func (c *cli) health(o *opts, args []string) error {
	h, err := call(c, c.client.Health)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	if c.g.json {
		return c.printJSON(h)
	}
	state := "ok"
	if !h.OK {
		state = "not ok"
	}
	fmt.Fprintf(c.out, "%s: %s\n", h.Node, state)
	if !h.OK {
		return errors.New("health: the node is not ok")
	}
	return nil
}
