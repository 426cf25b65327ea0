package host

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/cluster/clusterproviders/automanaged"
	"github.com/asynkron/protoactor-go/cluster/clusterproviders/consul"
	"github.com/asynkron/protoactor-go/cluster/clusterproviders/etcd"
	"github.com/asynkron/protoactor-go/remote"
	consulapi "github.com/hashicorp/consul/api"
	"github.com/labstack/echo"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// The protoactor cluster layer.
//
// Membership and requests by identity run on protoactor's cluster package
// with a pluggable provider (automanaged with a seed list by default, etcd
// or consul for larger deployments). Two decisions shape it:
//
//   - Placement is ours. A site's master must be the node with the newest
//     copy of its dataset, chosen by the balancer and fenced by epochs;
//     protoactor's hash placement would re-activate the actor empty on
//     whichever member the hash picks, seconds late. So the cluster's
//     IdentityLookup (placementLookup) answers from this node's route
//     mirror: identity "<site>" of kind "site" or "dataset" is the actor on
//     the site's current master. Callers keep cluster.Request by identity;
//     the route mirror's changes evict protoactor's PID cache.
//
//   - The cluster runs on its own actor system and port, apart from the
//     actor system that carries the actors' traffic. protoactor blocks a
//     member that left the topology for good (its remote refuses that
//     member's connections until it restarts with a new id, see
//     cluster.MemberList.getTopologyChanges). A partition that heals must
//     let the actors talk again, so their traffic never goes through a
//     remote that the provider can block. Liveness for failover is the
//     node actors' own heartbeats (faster than the provider's health checks,
//     and they recover after a partition); the provider's topology is
//     reported beside them (Host.ClusterMembers).

// Cluster kinds: the site actor and the dataset actor of a site's master.
const (
	ClusterKindSite    = "site"
	ClusterKindDataset = "dataset"
	// clusterName is the protoactor cluster name (members of another
	// cluster name are ignored by the providers).
	clusterName = "hybridcluster"
	// automanagedRefresh is how often the automanaged provider polls the
	// seeds' health endpoints; a member that fails one poll leaves the
	// topology.
	automanagedRefresh = time.Second
	// clusterRequestTimeout bounds one cluster.Request when the caller's
	// context has no earlier deadline.
	clusterRequestTimeout = 5 * time.Second
	// clusterRequestRetriesMax bounds protoactor's retries of one request
	// (a PID lookup that finds no master yet, a timed-out attempt).
	clusterRequestRetriesMax = 3
	// asksMax bounds requests by identity waiting at this node's actors for
	// their answer; past it a request is answered at once with
	// CODE_OVERLOADED.
	asksMax = 1024
)

// ClusterOptions configure the cluster layer. The zero value (Provider "")
// runs none: the host still works, with membership from its static member
// list and heartbeats only.
type ClusterOptions struct {
	// Provider: "automanaged", "etcd", "consul" or "" (none).
	Provider string
	// Addr is host:port of the cluster actor system's remote.
	Addr string
	// AutomanagedAddr is host:port of this node's automanaged health
	// endpoint (bound on that host, not on every interface as the library
	// would).
	AutomanagedAddr string
	// Seeds are the automanaged health endpoints (host:port) of the
	// members, this node's included.
	Seeds []string
	// EtcdEndpoints are etcd's client URLs or host:port.
	EtcdEndpoints []string
	// ConsulAddress is the consul agent's host:port.
	ConsulAddress string
}

// ClusterMember is one member of the provider's topology.
type ClusterMember struct {
	Node        string // node name (the part of the member id before '@')
	ID          string // protoactor member id: node@incarnation
	Addr        string // its cluster actor system's host:port
	Kinds       []string
	Incarnation uint64
}

type clusterLayer struct {
	system   *actor.ActorSystem
	cluster  *cluster.Cluster
	provider string
	echo     *echo.Echo

	mu      sync.Mutex
	members []ClusterMember
	blocked []string
}

// MemberID is the protoactor member id of a node's incarnation. It changes
// with every start, so a member that the provider blocked (which is for
// good) joins again when it restarts.
func MemberID(node string, incarnation uint64) string {
	return node + "@" + strconv.FormatUint(incarnation, 10)
}

func parseMemberID(id string) (node string, inc uint64, ok bool) {
	node, incText, ok := strings.Cut(id, "@")
	if !ok {
		return "", 0, false
	}
	inc, err := strconv.ParseUint(incText, 10, 64)
	return node, inc, err == nil
}

func (h *Host) startCluster(opt ClusterOptions, plog actor.ConfigOption) (err error) {
	if opt.Provider == "" {
		return nil
	}
	hostName, portText, err := net.SplitHostPort(opt.Addr)
	if err != nil {
		return fmt.Errorf("host: cluster address %q: %w", opt.Addr, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return fmt.Errorf("host: cluster port %q: %w", portText, err)
	}
	cl := &clusterLayer{provider: opt.Provider}
	provider, err := cl.newProvider(opt)
	if err != nil {
		return err
	}
	cl.system = actor.NewActorSystem(plog)
	cl.system.ID = MemberID(h.node, h.incarnation)
	// Never spawned: placementLookup hands out the actors the router
	// already hosts. Registered so that members advertise the kinds.
	never := actor.PropsFromFunc(func(actor.Context) {})
	cfg := cluster.Configure(clusterName, provider, &placementLookup{h: h},
		remote.Configure(hostName, port, remote.WithDialOptions(remoteDialOptions()...)),
		cluster.WithKinds(cluster.NewKind(ClusterKindSite, never), cluster.NewKind(ClusterKindDataset, never)),
		cluster.WithRequestTimeout(clusterRequestTimeout))
	cl.cluster = cluster.New(cl.system, cfg)
	cl.system.EventStream.Subscribe(func(evt any) {
		if t, ok := evt.(*cluster.ClusterTopology); ok {
			cl.topology(h, t)
		}
	})
	defer func() {
		// StartMember panics when its remote cannot listen.
		if r := recover(); r != nil {
			err = fmt.Errorf("host: start cluster member on %s: %v", opt.Addr, r)
		}
	}()
	cl.cluster.StartMember()
	h.cluster = cl
	return nil
}

func (cl *clusterLayer) newProvider(opt ClusterOptions) (cluster.ClusterProvider, error) {
	switch opt.Provider {
	case "automanaged":
		host, portText, err := net.SplitHostPort(opt.AutomanagedAddr)
		if err != nil {
			return nil, fmt.Errorf("host: automanaged address %q: %w", opt.AutomanagedAddr, err)
		}
		port, err := strconv.Atoi(portText)
		if err != nil {
			return nil, fmt.Errorf("host: automanaged port %q: %w", portText, err)
		}
		if len(opt.Seeds) == 0 {
			return nil, errors.New("host: the automanaged provider needs seeds")
		}
		lis, err := net.Listen("tcp", net.JoinHostPort(host, portText))
		if err != nil {
			return nil, fmt.Errorf("host: automanaged endpoint: %w", err)
		}
		// The library binds 0.0.0.0 unless handed a server of its own
		// (its testing hook); this one listens where configured and
		// answers as the library's would.
		e := echo.New()
		e.HideBanner, e.HidePort = true, true
		e.Listener = lis
		cl.echo = e
		p := automanaged.NewWithTesting(automanagedRefresh, port, e, opt.Seeds...)
		e.GET("/_health", func(c echo.Context) error {
			sys := cl.system
			h, p, _ := sys.GetHostPort()
			return c.JSON(http.StatusOK, automanaged.NewNode(clusterName, sys.ID, h, p, port,
				[]string{ClusterKindSite, ClusterKindDataset}))
		})
		return p, nil
	case "etcd":
		if len(opt.EtcdEndpoints) == 0 {
			return nil, errors.New("host: the etcd provider needs endpoints")
		}
		return etcd.NewWithConfig("/hybridcluster", clientv3.Config{Endpoints: opt.EtcdEndpoints, DialTimeout: 5 * time.Second})
	case "consul":
		cfg := consulapi.DefaultConfig()
		if opt.ConsulAddress != "" {
			cfg.Address = opt.ConsulAddress
		}
		return consul.NewWithConfig(cfg)
	}
	return nil, fmt.Errorf("host: cluster provider %q: want automanaged, etcd, consul or none", opt.Provider)
}

func (cl *clusterLayer) topology(h *Host, t *cluster.ClusterTopology) {
	var members []ClusterMember
	for _, mb := range t.Members {
		node, inc, _ := parseMemberID(mb.Id)
		members = append(members, ClusterMember{Node: node, ID: mb.Id, Addr: mb.Address(), Kinds: slices.Clone(mb.Kinds), Incarnation: inc})
	}
	slices.SortFunc(members, func(a, b ClusterMember) int { return strings.Compare(a.ID, b.ID) })
	cl.mu.Lock()
	cl.members = members
	cl.blocked = slices.Sorted(slices.Values(t.Blocked))
	cl.mu.Unlock()
	for _, mb := range t.Joined {
		h.log.Info("cluster member joined", "member", mb.Id, "addr", mb.Address())
	}
	for _, mb := range t.Left {
		h.log.Info("cluster member left", "member", mb.Id, "addr", mb.Address())
	}
}

// stop leaves the cluster. Not protoactor's graceful shutdown: it sleeps
// 2 s for hash-placed activations to move, and we place none. The
// provider is stopped here instead (the non-graceful path leaves it
// polling).
func (cl *clusterLayer) stop() {
	_ = cl.cluster.Config.ClusterProvider.Shutdown(true)
	cl.cluster.Gossip.Shutdown()
	cl.cluster.Shutdown(false) // stops the actor system and the remote
	if cl.echo != nil {
		_ = cl.echo.Close()
	}
}

// ClusterProvider names the running provider ("" when none runs).
func (h *Host) ClusterProvider() string {
	if h.cluster == nil {
		return ""
	}
	return h.cluster.provider
}

// ClusterMembers is the provider's current topology, sorted by member id,
// and the member ids it blocked (left members; a node rejoins with a new id
// when it restarts).
func (h *Host) ClusterMembers() (members []ClusterMember, blocked []string) {
	if h.cluster == nil {
		return nil, nil
	}
	h.cluster.mu.Lock()
	defer h.cluster.mu.Unlock()
	return slices.Clone(h.cluster.members), slices.Clone(h.cluster.blocked)
}

// ErrNoCluster is returned by Ask when no cluster provider runs.
var ErrNoCluster = errors.New("host: no cluster layer (cluster provider none)")

// Ask sends an admin query to the site's actor of kind (ClusterKindSite or
// ClusterKindDataset) on the site's current master, by identity through
// protoactor's cluster (cluster.Request), and returns its answer. Where
// the master is comes from placementLookup; protoactor retries a bounded
// number of times while none is known.
func (h *Host) Ask(ctx context.Context, site, kind string, q *m.AdminQuery) (*m.AdminView, error) {
	if h.cluster == nil {
		return nil, ErrNoCluster
	}
	if q == nil {
		return nil, errors.New("host: ask without a query")
	}
	timeout := clusterRequestTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	if timeout <= 0 {
		return nil, context.DeadlineExceeded
	}
	q = proto.Clone(q).(*m.AdminQuery)
	q.Site = site
	resp, err := h.cluster.cluster.Request(site, kind, q,
		cluster.WithTimeout(timeout), cluster.WithRetryCount(clusterRequestRetriesMax))
	if err != nil {
		return nil, fmt.Errorf("host: ask %s %s: %w", kind, site, err)
	}
	v, ok := resp.(*m.AdminView)
	if !ok {
		return nil, fmt.Errorf("host: ask %s %s: answer of type %T", kind, site, resp)
	}
	return v, nil
}

// placementLookup is protoactor's IdentityLookup for our kinds: the actor
// of identity "<site>" is the one on the site's master, as this node's
// route mirror knows it. It never spawns: the master's router hosts the
// actor already, or starts it on its first message.
type placementLookup struct {
	h *Host
}

var _ cluster.IdentityLookup = (*placementLookup)(nil)

func (l *placementLookup) Get(ci *cluster.ClusterIdentity) *actor.PID {
	var kind core.Kind
	switch ci.Kind {
	case ClusterKindSite:
		kind = core.KindSite
	case ClusterKindDataset:
		kind = core.KindDataset
	default:
		return nil
	}
	r, ok := l.h.Route(ci.Identity)
	if !ok || r.Master == "" {
		return nil
	}
	mb, ok := l.h.members[r.Master]
	if !ok {
		return nil
	}
	return actor.NewPID(mb.ActorAddr, routerName+"/"+actorName(core.Address{Kind: kind, Node: r.Master, Site: ci.Identity}))
}

func (l *placementLookup) RemovePid(*cluster.ClusterIdentity, *actor.PID) {}

func (l *placementLookup) Setup(*cluster.Cluster, []string, bool) {}

func (l *placementLookup) Shutdown() {}

// evictPlacement drops protoactor's cached PIDs of a site whose master
// changed (the route mirror calls it).
func (h *Host) evictPlacement(site string) {
	if h.cluster == nil {
		return
	}
	h.cluster.cluster.PidCache.Remove(site, ClusterKindSite)
	h.cluster.cluster.PidCache.Remove(site, ClusterKindDataset)
}

// ask is one request by identity waiting at this node's actor for its
// answer: the actor answers an AdminQuery with an AdminView to the client
// address under the query id, which the host passes to the requester.
type ask struct {
	sender *actor.PID
}

// beginAsk turns a request by identity (an AdminQuery that arrived with a
// sender) into an ordinary input of the actor: a fresh query id, answers
// to this node. It returns nil when asksMax requests wait already (the
// sender got CODE_OVERLOADED).
func (h *Host) beginAsk(ctx actor.Context, q *m.AdminQuery) *m.AdminQuery {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.asks) >= asksMax {
		ctx.Respond(&m.AdminView{Node: h.node, Code: m.Code_CODE_OVERLOADED, Detail: "too many requests by identity in flight"})
		return nil
	}
	q = proto.Clone(q).(*m.AdminQuery)
	q.QueryId = h.nextRequest.Add(1)
	q.ReplyNode = h.node
	h.asks[q.QueryId] = ask{sender: ctx.Sender()}
	// The requester gives up after its timeout; so does the entry.
	time.AfterFunc(clusterRequestTimeout, func() {
		h.mu.Lock()
		delete(h.asks, q.QueryId)
		h.mu.Unlock()
	})
	return q
}

// endAsk passes an answer to the requester by identity waiting on its
// query id, and reports whether there was one.
func (h *Host) endAsk(v *m.AdminView) bool {
	h.mu.Lock()
	a, ok := h.asks[v.QueryId]
	delete(h.asks, v.QueryId)
	h.mu.Unlock()
	if ok {
		h.system.Root.Send(a.sender, v)
	}
	return ok
}
