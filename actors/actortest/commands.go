package actortest

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"

	"github.com/hybridcluster/hybridcluster/actors/balancer"
	"github.com/hybridcluster/hybridcluster/actors/core"
	"github.com/hybridcluster/hybridcluster/actors/dataset"
	"github.com/hybridcluster/hybridcluster/actors/node"
	"github.com/hybridcluster/hybridcluster/actors/site"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// Walk runs every transcript under dir, each on a fresh harness. Expected
// output is regenerated with `go test ./actors/... -rewrite`.
func Walk(t *testing.T, dir string) {
	datadriven.Walk(t, dir, func(t *testing.T, path string) {
		h := New()
		datadriven.RunTest(t, path, h.Handle)
	})
}

// args is a datadriven command line as a map: key -> comma-separated values.
type args map[string][]string

func parse(d *datadriven.TestData) args {
	a := args{}
	for _, c := range d.CmdArgs {
		var vals []string
		for _, v := range c.Vals {
			vals = append(vals, strings.Split(v, ",")...)
		}
		a[c.Key] = vals
	}
	return a
}

func (a args) str(k, def string) string {
	if v, ok := a[k]; ok && len(v) > 0 {
		return v[0]
	}
	return def
}

// first is the first bare word (crash n1, tick 10s).
func first(d *datadriven.TestData, i int) string {
	if i < len(d.CmdArgs) {
		return d.CmdArgs[i].Key
	}
	return ""
}

func (a args) num(t *testing.T, k string, def int) int {
	s := a.str(k, "")
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%s=%s: %v", k, s, err)
	}
	return n
}

func parseEpoch(t *testing.T, s string) *m.Epoch {
	term, n, ok := strings.Cut(s, ":")
	v, err := strconv.ParseUint(term, 10, 64)
	if !ok || err != nil {
		t.Fatalf("epoch %q: want term:node", s)
	}
	return &m.Epoch{Term: v, Node: n}
}

// configKeys are the boot arguments that override core.Default().
var configKeys = map[string]func(c *core.Config, v string) error{
	"redundancy":        intSetter(func(c *core.Config, n int) { c.Redundancy = n }),
	"held-max":          intSetter(func(c *core.Config, n int) { c.HeldRequestsMax = n }),
	"held-bytes":        intSetter(func(c *core.Config, n int) { c.HeldBytesMax = uint64(n) }),
	"attempts-max":      intSetter(func(c *core.Config, n int) { c.RequestAttemptsMax = n }),
	"hold-deadline":     durSetter(func(c *core.Config, d time.Duration) { c.HoldDeadline = d }),
	"step-timeout":      durSetter(func(c *core.Config, d time.Duration) { c.StepTimeout = d }),
	"snapshot-interval": durSetter(func(c *core.Config, d time.Duration) { c.SnapshotInterval = d }),
	"stream-timeout":    durSetter(func(c *core.Config, d time.Duration) { c.StreamTimeout = d }),
	"request-timeout":   durSetter(func(c *core.Config, d time.Duration) { c.RequestTimeout = d }),
	"prune-interval":    durSetter(func(c *core.Config, d time.Duration) { c.PruneInterval = d }),
}

func intSetter(f func(*core.Config, int)) func(*core.Config, string) error {
	return func(c *core.Config, v string) error {
		n, err := strconv.Atoi(v)
		f(c, n)
		return err
	}
}

func durSetter(f func(*core.Config, time.Duration)) func(*core.Config, string) error {
	return func(c *core.Config, v string) error {
		d, err := time.ParseDuration(v)
		f(c, d)
		return err
	}
}

// Handle runs one transcript command and returns its output.
func (h *Harness) Handle(t *testing.T, d *datadriven.TestData) string {
	h.out.Reset()
	h.printedAt = -1
	a := parse(d)
	switch d.Cmd {
	case "boot":
		for k, v := range a {
			if set := configKeys[k]; set != nil {
				if err := set(h.Config, v[0]); err != nil {
					t.Fatalf("%s: %v", k, err)
				}
			}
		}
		if err := h.Config.Validate(); err != nil {
			return "error: " + err.Error()
		}
		h.balancer = a.str("balancer", "on") != "off"
		h.Boot(a["nodes"])
		h.Stabilize("", 0)
	case "create":
		s := a.str("site", "")
		spec := &m.SiteSpec{Name: s, Domains: []string{s + ".example"}, Redundancy: uint32(a.num(t, "redundancy", 0))}
		if on := a.str("on", ""); on != "" {
			h.enqueue("", core.DatasetAddr(on, s), &m.Activate{Spec: spec, Epoch: &m.Epoch{Term: 1, Node: on},
				Replicas: a["replicas"], Create: true, Reason: "create"})
		} else {
			h.enqueue("", core.NodeAddr(a.str("via", h.nodes[0])), &m.CreateSite{Spec: spec})
		}
	case "request":
		for range a.num(t, "count", 1) {
			h.requestID++
			_, write := a["write"]
			_, idem := a["idempotent"]
			h.enqueue("", core.NodeAddr(a.str("via", h.nodes[0])), &m.SiteRequest{Site: a.str("site", ""),
				RequestId: h.requestID, Write: write, Idempotent: idem, BodyBytes: uint64(a.num(t, "bytes", 0)),
				WriteId: map[bool]uint64{true: h.requestID}[write]})
		}
	case "migrate":
		s := a.str("site", "")
		from := a.str("from", h.master(s))
		h.enqueue("", core.SiteAddr(from, s), &m.Migrate{Site: s, Target: a.str("to", ""), Reason: a.str("reason", "admin")})
	case "lease", "release":
		s := a.str("site", "")
		on := a.str("on", h.master(s))
		if d.Cmd == "lease" {
			h.enqueue("", core.SiteAddr(on, s), &m.LeaseAcquire{Site: s, Holder: a.str("holder", "ftp")})
		} else {
			h.enqueue("", core.SiteAddr(on, s), &m.LeaseRelease{Site: s, Holder: a.str("holder", "ftp")})
		}
	case "activate":
		s := a.str("site", "")
		_, create := a["create"]
		h.enqueue("", core.DatasetAddr(a.str("on", ""), s), &m.Activate{Spec: &m.SiteSpec{Name: s},
			Epoch: parseEpoch(t, a.str("epoch", "")), Replicas: a["replicas"], Create: create,
			Reason: a.str("reason", "admin"), ExpectSnapshot: a.str("expect", ""), FromNode: a.str("from", "")})
	case "offer":
		s := a.str("site", "")
		e := parseEpoch(t, a.str("epoch", ""))
		target := &m.SnapshotRef{Name: a.str("target", ""), Epoch: e, Seq: uint64(a.num(t, "seq", 1)), TakenMs: h.Now().UnixMilli()}
		h.enqueue(a.str("from", ""), core.DatasetAddr(a.str("to", ""), s), &m.StreamOffer{Site: s, FromNode: a.str("from", ""),
			Epoch: e, Base: a.str("base", ""), Target: target, StreamId: uint64(a.num(t, "stream", 99)),
			Spec: &m.SiteSpec{Name: s}, History: a["history"]})
	case "demote":
		s := a.str("site", "")
		_, clean := a["clean"]
		h.enqueue("", core.SiteAddr(a.str("on", ""), s), &m.Demote{Site: s, Winner: a.str("winner", ""),
			Epoch: parseEpoch(t, a.str("epoch", "")), Clean: clean})
	case "snapshot":
		s := a.str("site", "")
		h.enqueue("", core.SiteAddr(a.str("on", h.master(s)), s), &m.AdminSnapshot{Site: s})
	case "rollback":
		s := a.str("site", "")
		h.enqueue("", core.SiteAddr(a.str("on", h.master(s)), s), &m.AdminRollback{Site: s, Snapshot: a.str("to", "")})
	case "delete":
		// delete site=s [via=node]: the admin's delete, to the balancer of via
		h.enqueue("", core.BalancerAddr(a.str("via", h.nodes[0])), &m.AdminDeleteSite{Site: a.str("site", "")})
	case "restore":
		s := a.str("site", "")
		h.enqueue("", core.SiteAddr(a.str("on", h.master(s)), s), &m.AdminRestoreStash{Site: s, Stash: a.str("stash", "")})
	case "query":
		// query kind=cluster|site|mount|unmount [site=s] [snapshot=name] (via=node | balancer=node | dataset=node) [reply=node]
		kinds := map[string]m.AdminQueryKind{"cluster": m.AdminQueryKind_ADMIN_QUERY_CLUSTER,
			"site": m.AdminQueryKind_ADMIN_QUERY_SITE, "unspecified": m.AdminQueryKind_ADMIN_QUERY_UNSPECIFIED,
			"mount": m.AdminQueryKind_ADMIN_QUERY_MOUNT, "unmount": m.AdminQueryKind_ADMIN_QUERY_UNMOUNT}
		kind, ok := kinds[a.str("kind", "")]
		if !ok {
			t.Fatalf("%s: query kind=%q: want cluster, site, mount, unmount or unspecified", d.Pos, a.str("kind", ""))
		}
		s := a.str("site", "")
		to := core.NodeAddr(a.str("via", h.nodes[0]))
		if n := a.str("balancer", ""); n != "" {
			to = core.BalancerAddr(n)
		} else if n := a.str("dataset", ""); n != "" {
			to = core.DatasetAddr(n, s)
		}
		h.queryID++
		h.enqueue("", to, &m.AdminQuery{QueryId: h.queryID, ReplyNode: a.str("reply", to.Node), Kind: kind, Site: s,
			Snapshot: a.str("snapshot", "")})
	case "drain":
		n := first(d, 0)
		h.enqueue("", core.NodeAddr(n), &m.DrainNode{Node: n})
	case "load":
		h.load[a.str("site", "")] = uint64(a.num(t, "rate", 0))
	case "drop":
		h.drops[a.str("type", "")] += a.num(t, "count", 1)
	case "crash":
		h.Crash(first(d, 0))
	case "restart":
		h.Restart(first(d, 0))
	case "partition":
		h.Partition(first(d, 0), first(d, 1))
	case "heal":
		h.Heal()
	case "deliver":
		for range a.num(t, "n", len(h.queue)) {
			h.DeliverOne()
		}
	case "stabilize":
		h.Stabilize(a.str("until", ""), a.num(t, "count", 1))
	case "tick":
		dur, err := time.ParseDuration(first(d, 0))
		if err != nil {
			t.Fatal(err)
		}
		h.Tick(dur)
	case "trace":
		for _, k := range a["show"] {
			delete(h.hidden, k)
		}
		for _, k := range a["hide"] {
			h.hidden[k] = true
		}
	case "queue":
		for _, e := range h.queue {
			fmt.Fprintf(h.out, "%s -> %s %s\n", e.from, e.to, Format(e.msg))
		}
	case "state":
		h.state(a)
	default:
		t.Fatalf("%s: unknown command %q", d.Pos, d.Cmd)
	}
	if h.out.Len() == 0 {
		return "ok\n"
	}
	return h.out.String()
}

// master is the node whose site actor serves s (or is migrating it away).
func (h *Harness) master(s string) string {
	for _, n := range h.nodes {
		if st, ok := h.actors[core.SiteAddr(n, s)].(*site.Site); ok {
			switch st.Phase() {
			case m.SitePhase_SITE_PHASE_ACTIVE, m.SitePhase_SITE_PHASE_PRE_COPY, m.SitePhase_SITE_PHASE_PAUSED,
				m.SitePhase_SITE_PHASE_FINAL_DELTA, m.SitePhase_SITE_PHASE_PROMOTING:
				return n
			}
		}
	}
	return h.nodes[0]
}

// state prints what the actors and the fake disks hold.
func (h *Harness) state(a args) {
	w := func(format string, args ...any) { fmt.Fprintf(h.out, format+"\n", args...) }
	if s := a.str("site", ""); s != "" {
		for _, n := range h.nodes {
			if !h.up[n] {
				w("%s: down", n)
			}
			if st, ok := h.actors[core.SiteAddr(n, s)].(*site.Site); ok {
				w("%s: site %s", n, Format(st.State()))
			}
			if ds, ok := h.actors[core.DatasetAddr(n, s)].(*dataset.Dataset); ok {
				info := ds.Info()
				info.Latest, info.Spec = nil, nil
				w("%s: dataset %s names=%s", n, Format(info), names(ds.Snapshots()))
			}
			if dk := h.disk[n][s]; dk != nil && (dk.exists || dk.role == m.Role_ROLE_DELETED) {
				w("%s: disk role=%s fence=%s snaps=%s stashes=[%s]", n, strings.TrimPrefix(dk.role.String(), "ROLE_"),
					core.EpochString(dk.fence), names(dk.snaps), strings.Join(dk.stashes, ","))
			}
		}
	}
	if n := a.str("node", ""); n != "" {
		nd, ok := h.actors[core.NodeAddr(n)].(*node.Node)
		if !ok {
			w("%s: no node actor", n)
			return
		}
		w("%s: live=[%s] leader=%s pending=%d", n, strings.Join(nd.Live(), ","), nd.Leader(), nd.Pending())
		for _, s := range a["routes"] {
			if r := nd.Route(s); r != nil {
				w("%s: route %s", n, Format(r))
			} else {
				w("%s: route site=%s unknown", n, s)
			}
		}
	}
	if _, ok := a["balancer"]; ok {
		var active []string
		for _, n := range h.nodes {
			if b, ok := h.actors[core.BalancerAddr(n)].(*balancer.Balancer); ok && b.Active() {
				active = append(active, n)
			}
		}
		w("active balancers: [%s]", strings.Join(active, ","))
	}
}

func names(snaps []*m.SnapshotRef) string {
	var out []string
	for _, s := range snaps {
		out = append(out, s.GetName())
	}
	return "[" + strings.Join(out, ",") + "]"
}
