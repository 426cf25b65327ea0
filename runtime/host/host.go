// Package host runs the deterministic actors of actors/ for one node on
// protoactor-go and carries out their effects for real: messages between
// nodes over protoactor remote, timers on the real clock, storage through a
// storage.Driver, and snapshot streams through runtime/storage/stream.
//
// It is the production counterpart of sim/world.go: the same Step functions,
// the same effects, a real world. One protoactor actor hosts each
// deterministic actor; a router actor per node spawns them on first use and
// is the only actor other nodes address (a hostpb.Envelope names the target).
package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/host/hostpb"
	"github.com/hybridcluster/hybridcluster/runtime/storage"
	"github.com/hybridcluster/hybridcluster/runtime/storage/stream"
)

// Bounds. What happens at each is stated where it is enforced.
const (
	// mailboxMessagesMax bounds each actor's mailbox (router included). At
	// the bound the oldest message is dropped: the actors are built for a
	// network that drops messages, and an actor this far behind is better
	// served by fresh input than by stale.
	mailboxMessagesMax = 8192
	// siteMailboxMessagesMax bounds the mailbox of each site and dataset
	// actor, with the same behaviour at the bound. protoactor allocates a
	// bounded mailbox's whole ring up front (about 32 bytes a slot): at
	// 8192 slots two actors per site cost 0.5 MB (measured: 250-350 KB of heap per site with 1,000 sites), which 10,000 sites
	// cannot afford. A site actor reads its mailbox in microseconds; what
	// it holds (paused requests) lives in its state, bounded by
	// Config.HeldRequestsMax, not in the mailbox.
	siteMailboxMessagesMax = 256
	// remoteQueueMessagesMax bounds protoactor's outgoing queues per remote
	// endpoint (its default is a million).
	remoteQueueMessagesMax = 16384
	// remoteDialWaitMax bounds one dial of another member's actor port
	// (remoteDialOptions).
	remoteDialWaitMax = 2 * time.Second
	// actorsMax bounds the actors one node hosts; past it a message to a
	// new actor is dropped with an error log.
	actorsMax = 100_000
	// timersPerActorMax bounds armed timers per actor; past it SetTimer is
	// refused with an error log (the node actor arms one per pending
	// request, itself bounded by Config.FrontPendingMax).
	timersPerActorMax = 1 << 16
	// shutdownWaitMax bounds how long Stop waits for storage work and the
	// stream server.
	shutdownWaitMax = 10 * time.Second
	// streamHeaderWait bounds how long the stream server waits for a
	// request's headers.
	streamHeaderWait = 10 * time.Second
	routerName       = "router"
)

// ErrTooManyRequests is returned by Request when the host already waits on
// Config.FrontPendingMax client requests.
var ErrTooManyRequests = errors.New("host: too many client requests in flight")

// Member is one node of the static cluster list.
type Member struct {
	Name string
	// ActorAddr is host:port of the node's protoactor remote.
	ActorAddr string
	// StreamURL is the base URL of the node's snapshot stream endpoint
	// (runtime/storage/stream), e.g. "http://127.0.0.2:7947".
	StreamURL string
}

// Options configure a Host. Required: Node, Members (Node among them),
// Driver, StateDir, StreamToken.
type Options struct {
	// Node is this node's name: lower-case letters, digits and inner '-'
	// (it becomes part of snapshot names).
	Node    string
	Members []Member
	// Config holds the actors' bounds and intervals; nil means core.Default().
	// The host never modifies it.
	Config *core.Config
	// Driver holds this node's datasets.
	Driver storage.Driver
	// StateDir keeps what the driver cannot: each dataset's role and site
	// spec, and the incarnation counter.
	StateDir string
	// StreamToken is the shared secret of node-to-node streams.
	StreamToken string
	// StreamListener serves the stream endpoint; nil means listen on the
	// host:port of this node's StreamURL. The host closes it on Stop.
	StreamListener net.Listener
	// Logger receives the actors' Log effects and the host's own lines;
	// nil discards.
	Logger *slog.Logger
	// ProtoactorLogger receives protoactor's own logs; nil discards them
	// (the library's default is chatty).
	ProtoactorLogger *slog.Logger
	// Cluster configures protoactor's cluster layer (membership provider,
	// requests by identity); the zero value runs none.
	Cluster ClusterOptions
	// Sites runs the sites' processes on this node while it is their
	// master (runtime/sites); nil runs none and the internal serve
	// endpoint answers 503.
	Sites SiteRunner
}

// Host is one node's runtime.
type Host struct {
	node    string
	cfg     *core.Config
	log     *slog.Logger
	members map[string]Member
	names   []string // sorted member names
	driver  storage.Driver
	catalog *catalog
	store   *storageExec
	clients map[string]*stream.Client // other members' stream endpoints
	// stopping: HandOff began; receives are refused from then on.
	stopping atomic.Bool
	// handoffs are the hand-off moves waiting for their end, by site
	// (under mu).
	handoffs map[string]chan *m.MigrateResult
	// notStarted: sites whose start here failed before their processes
	// could be asked for (reported with their health).
	notStarted startFailures

	system *actor.ActorSystem
	remote *remote.Remote
	router *actor.PID
	// cluster is protoactor's cluster layer on its own actor system (nil
	// when no provider is configured); see cluster.go.
	cluster *clusterLayer

	streamSrv     *http.Server
	streamLis     net.Listener
	internalMux   *http.ServeMux
	internalToken string

	incarnation uint64
	ctx         context.Context
	cancel      context.CancelFunc
	stopOnce    sync.Once
	stopped     atomic.Bool

	mu      sync.Mutex
	waiters map[uint64]chan *m.SiteResponse
	queries map[uint64]chan *m.AdminView
	asks    map[uint64]ask
	// removed holds the members removed for good (remove.go): a map
	// replaced whole on the rare removal, read on every send without a lock.
	removed     atomic.Pointer[map[string]bool]
	toldRemoved map[string]time.Time
	removedCh   chan struct{}
	removedOnce sync.Once
	routes      *routeTable
	gates       *gates
	sites       SiteRunner
	activity    activity
	trees       treeMarks // what the newest snapshots hold, for treeChanged
	nextRequest atomic.Uint64

	panics atomic.Int64
	drops  atomic.Int64

	figuresDone sync.WaitGroup
}

// Start brings up one node: the stream endpoint, the actor system with
// remote on this node's ActorAddr, the router, and boots the node actor with
// what the driver holds.
func Start(opt Options) (_ *Host, err error) {
	h, err := newHost(opt)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			h.Stop()
		}
	}()
	if err := h.startStreams(opt); err != nil {
		return nil, err
	}
	if err := h.startActors(opt); err != nil {
		return nil, err
	}
	if err := h.startCluster(opt.Cluster, h.protoactorLogger(opt)); err != nil {
		return nil, err
	}
	datasets, err := h.bootDatasets(h.ctx)
	if err != nil {
		return nil, fmt.Errorf("host %s: boot: %w", h.node, err)
	}
	h.log.Info("host started", "node", h.node, "incarnation", h.incarnation, "datasets", len(datasets),
		"actor_addr", h.members[h.node].ActorAddr, "stream_addr", h.streamLis.Addr().String())
	h.deliverLocal(core.NodeAddr(h.node), &m.NodeBoot{Node: h.node, Members: slices.Clone(h.names),
		Datasets: datasets, Incarnation: h.incarnation})
	h.figuresDone.Add(1)
	go h.reportFigures()
	return h, nil
}

func newHost(opt Options) (*Host, error) {
	cfg := opt.Config
	if cfg == nil {
		cfg = core.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("host: config: %w", err)
	}
	switch {
	case opt.Driver == nil:
		return nil, errors.New("host: no storage driver")
	case opt.StateDir == "":
		return nil, errors.New("host: no state directory")
	case opt.StreamToken == "":
		return nil, errors.New("host: empty stream token; node-to-node streams must be authenticated")
	}
	if _, err := storage.ParseSnapName(core.SnapshotName(&m.Epoch{Term: 1, Node: opt.Node}, 1)); err != nil || opt.Node == "" {
		return nil, fmt.Errorf("host: node name %q cannot be part of a snapshot name", opt.Node)
	}
	members := map[string]Member{}
	var names []string
	for _, mb := range opt.Members {
		if _, dup := members[mb.Name]; dup || mb.Name == "" {
			return nil, fmt.Errorf("host: member %q empty or listed twice", mb.Name)
		}
		if _, _, err := net.SplitHostPort(mb.ActorAddr); err != nil {
			return nil, fmt.Errorf("host: member %s: actor address %q: %w", mb.Name, mb.ActorAddr, err)
		}
		members[mb.Name] = mb
		names = append(names, mb.Name)
	}
	if _, ok := members[opt.Node]; !ok {
		return nil, fmt.Errorf("host: node %s is not in the member list", opt.Node)
	}
	slices.Sort(names)
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cat, err := openCatalog(opt.StateDir)
	if err != nil {
		return nil, err
	}
	removedNames, err := cat.removed()
	if err != nil {
		return nil, err
	}
	removed := map[string]bool{}
	for _, n := range removedNames {
		if n == opt.Node {
			return nil, fmt.Errorf("host: node %s was removed from the cluster; give it a new name and an empty state directory to join again", n)
		}
		removed[n] = true
		// Kept in members (its address), out of names: it gets no
		// message but its removal (tellRemoved).
		names = slices.DeleteFunc(names, func(s string) bool { return s == n })
	}
	inc, err := cat.nextIncarnation()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &Host{node: opt.Node, cfg: cfg, log: log, members: members, names: names, driver: opt.Driver,
		catalog: cat, incarnation: inc, ctx: ctx, cancel: cancel, waiters: map[uint64]chan *m.SiteResponse{},
		queries: map[uint64]chan *m.AdminView{}, handoffs: map[string]chan *m.MigrateResult{}, asks: map[uint64]ask{}, toldRemoved: map[string]time.Time{},
		removedCh: make(chan struct{}), internalToken: opt.StreamToken, routes: newRouteTable(), gates: newGates(), sites: opt.Sites,
		clients: map[string]*stream.Client{}}
	h.removed.Store(&removed)
	// Request ids are unique per entry node; starting from the clock keeps
	// them unique across restarts too.
	h.nextRequest.Store(uint64(time.Now().UnixMicro()))
	h.store = newStorageExec(h)
	return h, nil
}

func (h *Host) startStreams(opt Options) error {
	srv, err := stream.NewServer(stream.ServerConfig{Driver: &receivingDriver{Driver: h.driver, catalog: h.catalog, stopping: &h.stopping},
		Token: opt.StreamToken, Logger: h.log})
	if err != nil {
		return err
	}
	lis := opt.StreamListener
	if lis == nil {
		u, err := url.Parse(h.members[h.node].StreamURL)
		if err != nil || u.Host == "" {
			return fmt.Errorf("host: stream URL %q of %s: want http://host:port", h.members[h.node].StreamURL, h.node)
		}
		if lis, err = net.Listen("tcp", u.Host); err != nil {
			return fmt.Errorf("host: stream endpoint: %w", err)
		}
	}
	h.streamLis = lis
	mux := http.NewServeMux()
	mux.Handle(stream.PathPrefix, srv)
	h.internalMux = mux
	// The same listener is the node's internal port: requests that other
	// nodes' front ends forward to this node as a site's master.
	internal := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(HeaderSite) != "" {
			h.serveInternal(w, r, opt.StreamToken)
			return
		}
		mux.ServeHTTP(w, r)
	})
	h.streamSrv = &http.Server{Handler: internal, ReadHeaderTimeout: streamHeaderWait}
	go func() { _ = h.streamSrv.Serve(lis) }()
	for _, name := range h.names {
		if name == h.node {
			continue
		}
		c, err := stream.NewClient(stream.ClientConfig{BaseURL: h.members[name].StreamURL, Token: opt.StreamToken,
			Driver: h.driver, Logger: h.log})
		if err != nil {
			return fmt.Errorf("host: member %s: %w", name, err)
		}
		h.clients[name] = c
	}
	return nil
}

func (h *Host) startActors(opt Options) (err error) {
	h.system = actor.NewActorSystem(h.protoactorLogger(opt))
	hostName, portText, _ := net.SplitHostPort(h.members[h.node].ActorAddr)
	var port int
	if _, err := fmt.Sscanf(portText, "%d", &port); err != nil {
		return fmt.Errorf("host: actor port %q: %w", portText, err)
	}
	h.remote = remote.NewRemote(h.system, remote.Configure(hostName, port,
		remote.WithDialOptions(remoteDialOptions()...),
		remote.WithEndpointWriterQueueSize(remoteQueueMessagesMax),
		remote.WithEndpointManagerQueueSize(remoteQueueMessagesMax)))
	defer func() {
		// remote.Start panics when it cannot listen.
		if r := recover(); r != nil {
			h.remote = nil
			err = fmt.Errorf("host: start remote on %s: %v", h.members[h.node].ActorAddr, r)
		}
	}()
	h.remote.Start()
	props := actor.PropsFromProducer(func() actor.Actor { return newRouter(h) },
		actor.WithMailbox(actor.BoundedDropping(mailboxMessagesMax)))
	h.router, err = h.system.Root.SpawnNamed(props, routerName)
	if err != nil {
		return fmt.Errorf("host: spawn router: %w", err)
	}
	return nil
}

// remoteDialOptions are how protoactor dials the other members. Its
// endpoint writer dials again (a few times, then again on the next message)
// while a member is down, and keeps only the last connection: a dial that
// returned at once (gRPC's default) left each failed connection open,
// reconnecting in the background for good, so the live members leaked
// goroutines and memory for as long as one was down. A blocking dial that
// fails closes its connection; a refused connection fails it at once, an
// unanswered one after remoteDialWaitMax.
func remoteDialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithBlock(),
		grpc.WithTimeout(remoteDialWaitMax), //nolint:staticcheck // the endpoint writer calls grpc.Dial, which has no context
		grpc.FailOnNonTempDialError(true),
		grpc.WithReturnConnectionError(),
	}
}

// protoactorLogger is the actor systems' logger option: protoactor's own
// logs go to opt.ProtoactorLogger, or nowhere (the library's default is
// chatty).
func (h *Host) protoactorLogger(opt Options) actor.ConfigOption {
	plog := opt.ProtoactorLogger
	if plog == nil {
		plog = slog.New(slog.DiscardHandler)
	}
	return actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return plog })
}

// Node is this host's node name.
func (h *Host) Node() string { return h.node }

// Incarnation counts the starts of this node (persisted in StateDir).
func (h *Host) Incarnation() uint64 { return h.incarnation }

// Panics counts Steps that panicked (a bug in an actor: logged at Error,
// the input is dropped and the actor keeps its state).
func (h *Host) Panics() int64 { return h.panics.Load() }

// Drops counts messages the host dropped at a bound or for want of a route.
func (h *Host) Drops() int64 { return h.drops.Load() }

// Send delivers msg to an actor anywhere in the cluster, as an actor's Send
// effect would (admin injection: CreateSite to a node, Migrate to a site's
// master). The host does not modify msg; the caller must not either.
func (h *Host) Send(to core.Address, msg proto.Message) { h.send(to, msg) }

// Request enters a client request at this node (as a protocol front end
// would) and waits for its answer. A zero RequestId is assigned. The answer
// may be an error code (CODE_TIMEOUT after Config.RequestTimeout, ...);
// err is set only when ctx ends first or at the pending bound.
func (h *Host) Request(ctx context.Context, req *m.SiteRequest) (*m.SiteResponse, error) {
	req = proto.Clone(req).(*m.SiteRequest)
	if req.RequestId == 0 {
		req.RequestId = h.nextRequest.Add(1)
	}
	ch := make(chan *m.SiteResponse, 1)
	h.mu.Lock()
	if len(h.waiters) >= h.cfg.FrontPendingMax {
		h.mu.Unlock()
		return nil, ErrTooManyRequests
	}
	h.waiters[req.RequestId] = ch
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.waiters, req.RequestId)
		h.mu.Unlock()
	}()
	h.deliverLocal(core.NodeAddr(h.node), req)
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (h *Host) clientResponse(msg proto.Message) {
	if v, ok := msg.(*m.AdminView); ok {
		h.adminView(v)
		return
	}
	if r, ok := msg.(*m.MigrateResult); ok {
		h.handoffResult(r)
		return
	}
	resp, ok := msg.(*m.SiteResponse)
	if !ok {
		h.log.Error("client address got a non-response", "node", h.node, "type", string(proto.MessageName(msg)))
		return
	}
	h.mu.Lock()
	ch := h.waiters[resp.RequestId]
	h.mu.Unlock()
	if ch == nil {
		return // the caller gave up
	}
	select {
	case ch <- resp:
	default: // answered already (a duplicate)
	}
}

// send carries a message to its target: the local router, a remote
// member's router, or the client side of this node.
func (h *Host) send(to core.Address, msg proto.Message) {
	if h.stopped.Load() {
		return
	}
	switch {
	case to.Kind == core.KindClient && to.Node == h.node:
		h.clientResponse(msg)
		return
	case to.Node == "":
		return // no master known: the actors decided to send nowhere
	case to.Node == h.node:
		h.deliverLocal(to, msg)
		return
	}
	mb, ok := h.members[to.Node]
	if !ok || h.isRemoved(to.Node) {
		h.drops.Add(1)
		h.log.Warn("message to a node not in the member list dropped", "node", h.node, "to", to.String())
		return
	}
	payload, err := anypb.New(msg)
	if err != nil {
		panic(fmt.Sprintf("host %s: message for %s does not marshal: %v", h.node, to, err))
	}
	env := &hostpb.Envelope{Kind: uint32(to.Kind), Node: to.Node, Site: to.Site, FromNode: h.node, Msg: payload, Token: h.internalToken}
	h.system.Root.Send(actor.NewPID(mb.ActorAddr, routerName), env)
}

func (h *Host) deliverLocal(to core.Address, msg proto.Message) {
	if h.stopped.Load() || h.router == nil {
		return
	}
	h.system.Root.Send(h.router, &delivery{to: to, msg: msg})
}

// Stop shuts the node down: no new input, storage work cancelled and
// waited for (bounded), actors stopped, listeners closed. A stopped host's
// disk is what a restart boots from.
func (h *Host) Stop() {
	h.stopOnce.Do(func() {
		h.stopped.Store(true)
		h.cancel()
		h.figuresDone.Wait()
		h.store.close(shutdownWaitMax)
		if h.cluster != nil {
			h.cluster.stop()
		}
		if h.router != nil {
			_ = h.system.Root.StopFuture(h.router).Wait()
		}
		if h.remote != nil {
			h.closePeerEndpoints()
			h.remote.Shutdown(false)
		}
		if h.system != nil {
			h.system.Shutdown()
		}
		if h.streamSrv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), shutdownWaitMax)
			_ = h.streamSrv.Shutdown(ctx)
			cancel()
		} else if h.streamLis != nil {
			_ = h.streamLis.Close()
		}
		h.log.Info("host stopped", "node", h.node, "incarnation", h.incarnation)
	})
}
