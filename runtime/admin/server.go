package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/storage"
)

// Backend is how the admin endpoint reaches the actors of its node. The
// runtime host implements it; tests use an in-process fake.
type Backend interface {
	// Node is this node's name.
	Node() string
	// Members is every configured member, sorted.
	Members() []string
	// Query sends q (QueryId and ReplyNode are filled in by the backend) to
	// the actor at to and waits for its AdminView (ctx bounds the wait).
	Query(ctx context.Context, to core.Address, q *m.AdminQuery) (*m.AdminView, error)
	// Send delivers msg to the actor at to (no answer, no guarantee).
	Send(to core.Address, msg proto.Message)
	// Subscribe returns a channel of events (route changes, member up/down)
	// and a cancel func; the channel is bounded and drops the oldest (or the
	// subscriber, closing the channel) when full.
	Subscribe() (<-chan Event, func())
}

// ClusterView is implemented by backends that run protoactor's cluster
// layer (membership provider); the node list then shows its topology.
type ClusterView interface {
	// ClusterProvider names the provider ("" when none runs).
	ClusterProvider() string
	// ClusterMemberIDs maps node names to their member ids in the
	// provider's current topology.
	ClusterMemberIDs() map[string]string
}

// Asker is implemented by backends that reach a site's actors by identity
// (protoactor's cluster.Request; the master's dataset actor answers).
type Asker interface {
	// AskSite sends q to the dataset actor on site's master; ErrNoIdentity
	// when the backend runs no cluster layer.
	AskSite(ctx context.Context, site string, q *m.AdminQuery) (*m.AdminView, error)
}

// ErrNoIdentity is returned by Asker.AskSite when requests by identity
// are not available.
var ErrNoIdentity = errors.New("admin: no requests by identity")

const (
	// DefaultQueryTimeout bounds each AdminQuery when ServerConfig leaves it 0.
	DefaultQueryTimeout = 3 * time.Second
	// DefaultMountTimeout bounds a mount or unmount (it waits for the
	// master's storage, behind the site's other storage work) when
	// ServerConfig leaves it 0.
	DefaultMountTimeout = 30 * time.Second
	// MaxBodyBytes bounds a request body (413 beyond).
	MaxBodyBytes = 1 << 20
	// MaxEventStreams bounds concurrent GET /v1/events streams (503 beyond).
	MaxEventStreams = 64
	// EventPingInterval is how often an idle event stream gets a comment.
	EventPingInterval = 15 * time.Second
	// eventWriteTimeout bounds each write to an event stream, so that a
	// client that stops reading does not hold a stream slot forever.
	eventWriteTimeout = 10 * time.Second
)

// ServerConfig configures NewServer.
type ServerConfig struct {
	Backend Backend
	// Token is the bearer token every route but GET /v1/health requires.
	Token string
	// Logger gets one Debug line per request (nil: slog.Default()).
	Logger *slog.Logger
	// QueryTimeout bounds each AdminQuery (0: DefaultQueryTimeout).
	QueryTimeout time.Duration
	// MountTimeout bounds a mount or unmount (0: DefaultMountTimeout).
	MountTimeout time.Duration
}

// Server is the admin endpoint of one node.
type Server struct {
	b        Backend
	tokenSum [sha256.Size]byte
	log      *slog.Logger
	timeout  time.Duration
	mountTO  time.Duration
	mux      *http.ServeMux

	streams    atomic.Int64 // event streams open
	maxStreams int64
	ping       time.Duration
}

// NewServer returns the admin endpoint over cfg.Backend.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Backend == nil {
		return nil, errors.New("admin: no backend")
	}
	if cfg.Token == "" {
		return nil, errors.New("admin: an empty token would let anyone in")
	}
	s := &Server{
		b: cfg.Backend, tokenSum: sha256.Sum256([]byte(cfg.Token)), log: cfg.Logger,
		timeout: cfg.QueryTimeout, mountTO: cfg.MountTimeout, maxStreams: MaxEventStreams, ping: EventPingInterval,
	}
	if s.mountTO <= 0 {
		s.mountTO = DefaultMountTimeout
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.timeout <= 0 {
		s.timeout = DefaultQueryTimeout
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/health", s.health)
	mux.HandleFunc("GET /v1/sites", s.wrap(s.listSites))
	mux.HandleFunc("POST /v1/sites", s.wrap(s.createSite))
	mux.HandleFunc("GET /v1/sites/{site}", s.wrap(s.getSite))
	mux.HandleFunc("DELETE /v1/sites/{site}", s.wrap(s.deleteSite))
	mux.HandleFunc("POST /v1/sites/{site}/migrate", s.wrap(s.migrate))
	mux.HandleFunc("GET /v1/sites/{site}/snapshots", s.wrap(s.snapshots))
	mux.HandleFunc("POST /v1/sites/{site}/snapshots", s.wrap(s.takeSnapshot))
	mux.HandleFunc("POST /v1/sites/{site}/snapshots/{snap}/mount", s.wrap(s.mount))
	mux.HandleFunc("DELETE /v1/sites/{site}/snapshots/{snap}/mount", s.wrap(s.unmount))
	mux.HandleFunc("POST /v1/sites/{site}/rollback", s.wrap(s.rollback))
	mux.HandleFunc("GET /v1/sites/{site}/stash", s.wrap(s.stashes))
	mux.HandleFunc("POST /v1/sites/{site}/stash/{stash}/restore", s.wrap(s.restoreStash))
	mux.HandleFunc("GET /v1/nodes", s.wrap(s.nodes))
	mux.HandleFunc("POST /v1/nodes/{node}/drain", s.wrap(s.drain))
	mux.HandleFunc("POST /v1/nodes/{node}/remove", s.wrap(s.remove))
	mux.HandleFunc("GET /v1/events", s.events)
	mux.HandleFunc("GET /v1/stats", s.wrap(s.stats))
	s.mux = mux
	return s, nil
}

// Handler is the endpoint's HTTP handler.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serve) }

// statusWriter records the status of an answer for the request log.
type statusWriter struct {
	http.ResponseWriter
	status int
	code   string // the error code, if the answer is an error
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush and write deadlines.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// probeWriter captures what ServeMux's own 404/405 handlers would answer.
type probeWriter struct {
	h      http.Header
	status int
}

func (p *probeWriter) Header() http.Header         { return p.h }
func (p *probeWriter) WriteHeader(code int)        { p.status = code }
func (p *probeWriter) Write(b []byte) (int, error) { return len(b), nil }

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		// Never the headers: the Authorization header is the token.
		attrs := []slog.Attr{
			slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.Int("status", sw.status), slog.Duration("duration", time.Since(start)),
		}
		if sw.code != "" {
			attrs = append(attrs, slog.String("error", sw.code))
		}
		s.log.LogAttrs(r.Context(), slog.LevelDebug, "admin request", attrs...)
	}()
	if r.URL.Path != "/v1/health" && !s.authorized(r) {
		sw.Header().Set("WWW-Authenticate", `Bearer realm="hybridcluster"`)
		writeError(sw, &httpError{http.StatusUnauthorized, CodeUnauthorized, "missing or wrong bearer token"})
		return
	}
	if _, pattern := s.mux.Handler(r); pattern == "" {
		// No route: let the mux tell 404 from 405, answer in JSON.
		h, _ := s.mux.Handler(r)
		p := &probeWriter{h: http.Header{}}
		h.ServeHTTP(p, r)
		if p.status == http.StatusMethodNotAllowed {
			allow := p.h.Get("Allow")
			sw.Header().Set("Allow", allow)
			writeError(sw, &httpError{http.StatusMethodNotAllowed, CodeNotAllowed,
				fmt.Sprintf("method %s not allowed on %s (allowed: %s)", r.Method, r.URL.Path, allow)})
			return
		}
		writeError(sw, &httpError{http.StatusNotFound, CodeNotFound, "no such route: " + quote(r.URL.Path)})
		return
	}
	s.mux.ServeHTTP(sw, r)
}

// authorized checks the bearer token in constant time (hashes of equal
// length are compared, so not even the token's length leaks).
func (s *Server) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(sum[:], s.tokenSum[:]) == 1
}

// httpError is an answer with an error body.
type httpError struct {
	status        int
	code, message string
}

func (e *httpError) Error() string { return e.code + ": " + e.message }

func errBadRequest(format string, args ...any) error {
	return &httpError{http.StatusBadRequest, CodeBadRequest, fmt.Sprintf(format, args...)}
}
func errNotFound(format string, args ...any) error {
	return &httpError{http.StatusNotFound, CodeNotFound, fmt.Sprintf(format, args...)}
}
func errConflict(format string, args ...any) error {
	return &httpError{http.StatusConflict, CodeConflict, fmt.Sprintf(format, args...)}
}
func errUnavailable(format string, args ...any) error {
	return &httpError{http.StatusServiceUnavailable, CodeUnavailable, fmt.Sprintf(format, args...)}
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	b, err := json.Marshal(body)
	if err != nil {
		writeError(w, &httpError{http.StatusInternalServerError, CodeInternal, "encoding the answer failed"})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, e *httpError) {
	if sw, ok := w.(*statusWriter); ok {
		sw.code = e.code
	}
	var body ErrorBody
	body.Error.Code, body.Error.Message = e.code, e.message
	writeJSON(w, e.status, body)
}

// handler is a route: an answer's status and body, or an error.
type handler func(r *http.Request) (int, any, error)

func (s *Server) wrap(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
		status, body, err := h(r)
		if err != nil {
			var he *httpError
			if !errors.As(err, &he) {
				s.log.Warn("admin request failed", "method", r.Method, "path", r.URL.Path, "err", err)
				he = &httpError{http.StatusInternalServerError, CodeInternal, "internal error"}
			}
			writeError(w, he)
			return
		}
		writeJSON(w, status, body)
	}
}

// decode reads a JSON body (wrap bounds it to MaxBodyBytes) into v: unknown fields
// and trailing data are errors.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, err2 := dec.Token(); err2 != io.EOF {
			err = errors.New("data after the JSON value")
			var mbe *http.MaxBytesError
			if errors.As(err2, &mbe) {
				err = err2
			}
		}
	}
	var mbe *http.MaxBytesError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &mbe):
		return &httpError{http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Sprintf("body over %d bytes", MaxBodyBytes)}
	case err == io.EOF:
		return errBadRequest("empty body")
	default:
		return errBadRequest("body: %v", err)
	}
}

// ---------------------------------------------------------------- queries

// clusterView asks the active balancer (through this node's node actor) for
// its view of the cluster.
func (s *Server) clusterView(ctx context.Context) (*m.AdminView, error) {
	return s.balancerView(ctx, &m.AdminQuery{Kind: m.AdminQueryKind_ADMIN_QUERY_CLUSTER})
}

// claimsView is the cluster view cut down to the copies and pending
// creates that claim spec's name or one of its domains.
func (s *Server) claimsView(ctx context.Context, spec *m.SiteSpec) (*m.AdminView, error) {
	return s.balancerView(ctx, &m.AdminQuery{Kind: m.AdminQueryKind_ADMIN_QUERY_CLAIMS, Site: spec.Name, Domains: spec.Domains})
}

func (s *Server) balancerView(ctx context.Context, q *m.AdminQuery) (*m.AdminView, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	v, err := s.b.Query(ctx, core.NodeAddr(s.b.Node()), q)
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return nil, errUnavailable("the balancer did not answer within %v (no quorum of reports yet, or a balancer change)", s.timeout)
	case err != nil:
		return nil, errUnavailable("cluster view: %v", err)
	case v.GetCode() == m.Code_CODE_MOVED:
		return nil, errUnavailable("no active balancer answered (%s names %s as balancer); retry shortly", orDash(v.GetNode()), orDash(v.GetBalancer()))
	case v.GetCode() != m.Code_CODE_OK:
		return nil, errUnavailable("cluster view: %s %s", v.GetCode(), v.GetDetail())
	}
	return v, nil
}

// siteView asks the master's dataset actor for its snapshots and stashes.
func (s *Server) siteView(ctx context.Context, master, site string) (*m.AdminView, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	q := &m.AdminQuery{Kind: m.AdminQueryKind_ADMIN_QUERY_SITE, Site: site}
	var v *m.AdminView
	var err error
	if a, ok := s.b.(Asker); ok {
		// By identity, through protoactor's cluster: whichever node the
		// route mirror names as master answers. A copy that is not (or
		// no longer) master, or no cluster layer, falls back to asking
		// the master the balancer named.
		v, err = a.AskSite(ctx, site, q)
		if err == nil && v.GetInfo().GetRole() != m.Role_ROLE_MASTER {
			v, err = nil, ErrNoIdentity
		}
	}
	if v == nil || errors.Is(err, ErrNoIdentity) {
		v, err = s.b.Query(ctx, core.DatasetAddr(master, site), q)
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return nil, errUnavailable("the copy of %s on %s did not answer within %v", site, master, s.timeout)
	case err != nil:
		return nil, errUnavailable("site view from %s: %v", master, err)
	case v.GetCode() == m.Code_CODE_UNKNOWN_SITE:
		return nil, errNotFound("no such site")
	case v.GetCode() != m.Code_CODE_OK:
		return nil, errUnavailable("site view from %s: %s %s", master, v.GetCode(), v.GetDetail())
	}
	return v, nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// site is the site named in the path, from the cluster view.
func (s *Server) site(r *http.Request) (Site, *m.AdminView, error) {
	name := r.PathValue("site")
	if !ValidSiteName(name) {
		return Site{}, nil, errBadRequest("site name %s: want 1..%d of a-z, 0-9 and inner '-'", quote(name), MaxSiteName)
	}
	v, err := s.clusterView(r.Context())
	if err != nil {
		return Site{}, nil, err
	}
	site, ok := findSite(v, name)
	if !ok {
		return Site{}, nil, errNotFound("no such site")
	}
	return site, v, nil
}

// master is the site named in the path and its master, or 503.
func (s *Server) master(r *http.Request) (Site, error) {
	site, _, err := s.site(r)
	if err != nil {
		return Site{}, err
	}
	if site.Master == "" {
		return Site{}, errUnavailable("site %s has no master now (phase %s); retry shortly", site.Name, site.Phase)
	}
	return site, nil
}

// masterView is the site of the request's path and its master dataset
// actor's view (snapshots, stashes).
func (s *Server) masterView(r *http.Request) (Site, *m.AdminView, error) {
	site, err := s.master(r)
	if err != nil {
		return Site{}, nil, err
	}
	v, err := s.siteView(r.Context(), site.Master, site.Name)
	if err != nil {
		return Site{}, nil, err
	}
	return site, v, nil
}

// ---------------------------------------------------------------- routes

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, Health{Node: s.b.Node(), OK: true})
}

func (s *Server) stats(r *http.Request) (int, any, error) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return http.StatusOK, Stats{Node: s.b.Node(), Goroutines: runtime.NumGoroutine(), HeapBytes: ms.HeapAlloc, SysBytes: ms.Sys}, nil
}

func (s *Server) listSites(r *http.Request) (int, any, error) {
	v, err := s.clusterView(r.Context())
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, SiteList{Sites: buildSites(v)}, nil
}

func (s *Server) getSite(r *http.Request) (int, any, error) {
	site, _, err := s.site(r)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, site, nil
}

func (s *Server) createSite(r *http.Request) (int, any, error) {
	var c CreateSite
	if err := decode(r, &c); err != nil {
		return 0, nil, err
	}
	spec, err := ValidateCreate(&c)
	if err != nil {
		return 0, nil, errBadRequest("%v", err)
	}
	v, err := s.claimsView(r.Context(), spec)
	if err != nil {
		return 0, nil, err
	}
	sites := buildSites(v)
	for _, other := range sites {
		if other.Name == spec.Name {
			if other.Phase == PhasePlacing {
				return 0, nil, errConflict("site %s is being created already", spec.Name)
			}
			return 0, nil, errConflict("site %s exists already", spec.Name)
		}
		for _, d := range spec.Domains {
			if slices.Contains(other.Domains, d) {
				return 0, nil, errConflict("domain %s belongs to site %s", d, other.Name)
			}
		}
	}
	s.b.Send(core.NodeAddr(s.b.Node()), &m.CreateSite{Spec: spec})
	return http.StatusAccepted, SiteBody{Site: pendingSite(spec, v.GetAtMs())}, nil
}

// deleteSite asks the active balancer to delete the site: it stops being
// served everywhere and every copy is stashed whole (nothing is destroyed;
// the stashes stay on the nodes). The answer is the site as it was.
func (s *Server) deleteSite(r *http.Request) (int, any, error) {
	site, v, err := s.site(r)
	if err != nil {
		return 0, nil, err
	}
	if v.GetBalancer() == "" {
		return 0, nil, errUnavailable("no active balancer to delete %s; retry shortly", site.Name)
	}
	s.b.Send(core.BalancerAddr(v.GetBalancer()), &m.AdminDeleteSite{Site: site.Name})
	return http.StatusAccepted, SiteBody{Site: site}, nil
}

func (s *Server) migrate(r *http.Request) (int, any, error) {
	var req MigrateRequest
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	if req.To == "" {
		return 0, nil, errBadRequest(`"to" names no node`)
	}
	site, v, err := s.site(r)
	if err != nil {
		return 0, nil, err
	}
	if !slices.Contains(s.b.Members(), req.To) {
		return 0, nil, errNotFound("no such node %s", quote(req.To))
	}
	if !slices.Contains(v.GetLive(), req.To) {
		return 0, nil, errConflict("node %s is not live", req.To)
	}
	if site.Master == "" {
		return 0, nil, errUnavailable("site %s has no master now (phase %s); retry shortly", site.Name, site.Phase)
	}
	if site.Master == req.To {
		return 0, nil, errConflict("%s is already the master of %s", req.To, site.Name)
	}
	s.b.Send(core.SiteAddr(site.Master, site.Name), &m.Migrate{Site: site.Name, Target: req.To, Reason: "admin"})
	return http.StatusAccepted, SiteBody{Site: site}, nil
}

func (s *Server) snapshots(r *http.Request) (int, any, error) {
	site, v, err := s.masterView(r)
	if err != nil {
		return 0, nil, err
	}
	out := SnapshotList{Snapshots: make([]Snapshot, 0, len(v.GetSnapshots())), Node: cmpOr(v.GetNode(), site.Master)}
	for _, ref := range v.GetSnapshots() {
		snap := *snapshotOf(ref)
		snap.MountPath = v.GetMounts()[ref.GetName()]
		out.Snapshots = append(out.Snapshots, snap)
	}
	return http.StatusOK, out, nil
}

func (s *Server) takeSnapshot(r *http.Request) (int, any, error) {
	site, err := s.master(r)
	if err != nil {
		return 0, nil, err
	}
	s.b.Send(core.SiteAddr(site.Master, site.Name), &m.AdminSnapshot{Site: site.Name})
	return http.StatusAccepted, struct{}{}, nil
}

func (s *Server) mount(r *http.Request) (int, any, error) {
	return s.mountQuery(r, m.AdminQueryKind_ADMIN_QUERY_MOUNT)
}

func (s *Server) unmount(r *http.Request) (int, any, error) {
	return s.mountQuery(r, m.AdminQueryKind_ADMIN_QUERY_UNMOUNT)
}

// mountQuery asks the dataset actor of the site's master to mount (or
// unmount) one of its snapshots read-only, and waits for storage to be done.
func (s *Server) mountQuery(r *http.Request, kind m.AdminQueryKind) (int, any, error) {
	snap := r.PathValue("snap")
	if _, err := storage.ParseSnapName(snap); err != nil {
		return 0, nil, errBadRequest("%v", err)
	}
	site, err := s.master(r)
	if err != nil {
		return 0, nil, err
	}
	verb := "mount"
	if kind == m.AdminQueryKind_ADMIN_QUERY_UNMOUNT {
		verb = "unmount"
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.mountTO)
	defer cancel()
	v, err := s.b.Query(ctx, core.DatasetAddr(site.Master, site.Name), &m.AdminQuery{Kind: kind, Site: site.Name, Snapshot: snap})
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return 0, nil, errUnavailable("the master %s did not %s %s within %v; it may still do so (check, and unmount it if it did)",
			site.Master, verb, snap, s.mountTO)
	case err != nil:
		return 0, nil, errUnavailable("%s on %s: %v", verb, site.Master, err)
	}
	switch v.GetCode() {
	case m.Code_CODE_OK:
		return http.StatusOK, Mount{Site: site.Name, Snapshot: snap, Node: cmpOr(v.GetNode(), site.Master), Path: v.GetMountPath()}, nil
	case m.Code_CODE_UNKNOWN_SITE:
		return 0, nil, errNotFound("no such site")
	case m.Code_CODE_INVALID:
		return 0, nil, errNotFound("%s of site %s on %s: %s", verb, site.Name, site.Master, v.GetDetail())
	case m.Code_CODE_MOVED, m.Code_CODE_BUSY:
		return 0, nil, errUnavailable("%s of site %s on %s: %s; retry shortly", verb, site.Name, site.Master, v.GetDetail())
	case m.Code_CODE_FAILED:
		return 0, nil, errConflict("%s of %s of site %s on %s: %s", verb, snap, site.Name, site.Master, v.GetDetail())
	}
	return 0, nil, errUnavailable("%s of site %s on %s: %s %s", verb, site.Name, site.Master, v.GetCode(), v.GetDetail())
}

func (s *Server) rollback(r *http.Request) (int, any, error) {
	var req RollbackRequest
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	if req.Snapshot == "" {
		return 0, nil, errBadRequest(`"snapshot" names no snapshot`)
	}
	site, v, err := s.masterView(r)
	if err != nil {
		return 0, nil, err
	}
	if !slices.ContainsFunc(v.GetSnapshots(), func(ref *m.SnapshotRef) bool { return ref.GetName() == req.Snapshot }) {
		return 0, nil, errNotFound("no snapshot %s of site %s on %s", quote(req.Snapshot), site.Name, site.Master)
	}
	s.b.Send(core.SiteAddr(site.Master, site.Name), &m.AdminRollback{Site: site.Name, Snapshot: req.Snapshot})
	return http.StatusAccepted, struct{}{}, nil
}

func (s *Server) stashes(r *http.Request) (int, any, error) {
	site, v, err := s.masterView(r)
	if err != nil {
		return 0, nil, err
	}
	out := StashList{Stashes: append([]string{}, v.GetStashes()...), Node: cmpOr(v.GetNode(), site.Master)}
	return http.StatusOK, out, nil
}

func (s *Server) restoreStash(r *http.Request) (int, any, error) {
	stash := r.PathValue("stash")
	site, v, err := s.masterView(r)
	if err != nil {
		return 0, nil, err
	}
	if !slices.Contains(v.GetStashes(), stash) {
		return 0, nil, errNotFound("no stash %s of site %s on %s", quote(stash), site.Name, site.Master)
	}
	// The master's site actor pauses the site like a rollback, its dataset
	// restores the stash at a new epoch (what the site had is stashed in
	// turn) and the site resumes; a refusal is logged there.
	s.b.Send(core.SiteAddr(site.Master, site.Name), &m.AdminRestoreStash{Site: site.Name, Stash: stash})
	return http.StatusAccepted, struct{}{}, nil
}

func (s *Server) nodes(r *http.Request) (int, any, error) {
	v, err := s.clusterView(r.Context())
	if err != nil {
		return 0, nil, err
	}
	list := NodeList{Nodes: buildNodes(s.b.Members(), v)}
	if cv, ok := s.b.(ClusterView); ok {
		list.ClusterProvider = cv.ClusterProvider()
		ids := cv.ClusterMemberIDs()
		for i := range list.Nodes {
			list.Nodes[i].ClusterMember = ids[list.Nodes[i].Name]
		}
	}
	return http.StatusOK, list, nil
}

func (s *Server) drain(r *http.Request) (int, any, error) {
	node := r.PathValue("node")
	if !slices.Contains(s.b.Members(), node) {
		return 0, nil, errNotFound("no such node %s", quote(node))
	}
	s.b.Send(core.NodeAddr(node), &m.DrainNode{Node: node})
	return http.StatusAccepted, struct{}{}, nil
}

// remove takes a member out of the cluster for good. Only a member that
// is down: a live one would keep serving what it masters, so the operator
// drains it (its sites move off) and stops it first. Every other member's
// node actor is told; its copies are replaced on the others, and it is not
// heard again (nor after restarts: the hosts persist the removal).
func (s *Server) remove(r *http.Request) (int, any, error) {
	node := r.PathValue("node")
	members := s.b.Members()
	if !slices.Contains(members, node) {
		return 0, nil, errNotFound("no such node %s", quote(node))
	}
	if node == s.b.Node() {
		return 0, nil, errConflict("node %s answers this request: ask another node to remove it", node)
	}
	v, err := s.clusterView(r.Context())
	if err != nil {
		return 0, nil, err
	}
	if slices.Contains(v.Live, node) {
		return 0, nil, errConflict("node %s is live: drain it (hcctl drain %s), stop it, then remove it", node, node)
	}
	for _, n := range members {
		if n != node {
			s.b.Send(core.NodeAddr(n), &m.RemoveNode{Node: node})
		}
	}
	return http.StatusAccepted, struct{}{}, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// ---------------------------------------------------------------- events

// events streams the backend's events as server-sent events until the
// client goes away or the backend drops the subscription.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	if n := s.streams.Add(1); n > s.maxStreams {
		s.streams.Add(-1)
		writeError(w, errUnavailable("%d event streams are open already", s.maxStreams).(*httpError))
		return
	}
	defer s.streams.Add(-1)
	rc := http.NewResponseController(w)
	ch, cancel := s.b.Subscribe()
	defer cancel()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead || rc.Flush() != nil {
		return
	}
	// A deadline set for an event must not outlive the stream on a
	// connection that is kept alive.
	defer rc.SetWriteDeadline(time.Time{})
	ping := time.NewTicker(s.ping)
	defer ping.Stop()
	write := func(b []byte) bool {
		// Unsupported deadlines (e.g. a recorder) are fine: the write
		// then waits for the client or the server's own timeouts.
		_ = rc.SetWriteDeadline(time.Now().Add(eventWriteTimeout))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-ping.C:
			if !write([]byte(": ping\n\n")) {
				return
			}
		case ev, ok := <-ch:
			if !ok {
				return // the backend dropped this subscriber
			}
			data, err := json.Marshal(ev)
			if err != nil {
				continue
			}
			if !write(fmt.Appendf(nil, "event: %s\ndata: %s\n\n", eventType(ev.Type), data)) {
				return
			}
		}
	}
}

// eventType keeps an SSE event name to one safe word (no line breaks).
func eventType(t string) string {
	ok := t != ""
	for i := 0; i < len(t) && ok; i++ {
		c := t[i]
		ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.'
	}
	if !ok {
		return "message"
	}
	return t
}
