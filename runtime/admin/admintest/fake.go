// Package admintest is an in-process fake of admin.Backend for tests of the
// admin endpoint and of its clients, with helpers to build cluster views.
package admintest

import (
	"context"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/admin"
)

// Sent is one message the endpoint sent.
type Sent struct {
	To  core.Address
	Msg proto.Message
}

// Query is one query the endpoint made.
type Query struct {
	To core.Address
	Q  *m.AdminQuery
}

// Fake is an admin.Backend answering from views set by the test. CLUSTER
// queries sent to the node actor of NodeName get Cluster (nil: no answer
// until the context ends); SITE queries get Sites[site] (absent: CODE_UNKNOWN_SITE).
// MOUNT and UNMOUNT queries act on the snapshots of Sites[site] as its node
// would: mounted at MountPath(site, snapshot).
type Fake struct {
	NodeName   string
	MemberList []string

	mu      sync.Mutex
	cluster *m.AdminView
	sites   map[string]*m.AdminView
	mounts  map[string]bool // site@snapshot mounted
	sent    []Sent
	queries []Query
	nextID  uint64
	subs    map[int]chan admin.Event
	nextSub int
	// OnQuery, if set, answers every query instead (called without the lock).
	OnQuery func(ctx context.Context, to core.Address, q *m.AdminQuery) (*m.AdminView, error)
	// OnSend, if set, is called after a message is recorded (without the lock).
	OnSend func(to core.Address, msg proto.Message)
	// SubBuffer is the size of each subscriber's channel (default 16).
	SubBuffer int
}

// New returns a fake for node self among members (sorted by New).
func New(self string, members ...string) *Fake {
	ms := slices.Clone(members)
	slices.Sort(ms)
	return &Fake{NodeName: self, MemberList: ms, sites: map[string]*m.AdminView{}, subs: map[int]chan admin.Event{}}
}

var _ admin.Backend = (*Fake)(nil)

func (f *Fake) Node() string      { return f.NodeName }
func (f *Fake) Members() []string { return slices.Clone(f.MemberList) }

// SetCluster sets the answer to CLUSTER queries (nil: never answer).
func (f *Fake) SetCluster(v *m.AdminView) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cluster = v
}

// Cluster returns a copy of the current cluster view.
func (f *Fake) Cluster() *m.AdminView {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cluster == nil {
		return nil
	}
	return proto.Clone(f.cluster).(*m.AdminView)
}

// SetSite sets the answer to SITE queries for site.
func (f *Fake) SetSite(site string, v *m.AdminView) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sites[site] = v
}

func (f *Fake) Query(ctx context.Context, to core.Address, q *m.AdminQuery) (*m.AdminView, error) {
	f.mu.Lock()
	f.nextID++
	q = proto.Clone(q).(*m.AdminQuery)
	q.QueryId, q.ReplyNode = f.nextID, f.NodeName
	f.queries = append(f.queries, Query{To: to, Q: q})
	hook := f.OnQuery
	f.mu.Unlock()
	if hook != nil {
		return hook(ctx, to, q)
	}
	f.mu.Lock()
	var v *m.AdminView
	switch q.GetKind() {
	case m.AdminQueryKind_ADMIN_QUERY_CLUSTER, m.AdminQueryKind_ADMIN_QUERY_CLAIMS:
		// CLAIMS gets the whole view: a superset of what the balancer
		// cuts it down to (actors/balancer tests the cut).
		if to == core.NodeAddr(f.NodeName) && f.cluster != nil {
			v = proto.Clone(f.cluster).(*m.AdminView)
		}
	case m.AdminQueryKind_ADMIN_QUERY_SITE:
		if sv, ok := f.sites[q.GetSite()]; ok && to == core.DatasetAddr(sv.GetNode(), q.GetSite()) {
			v = proto.Clone(sv).(*m.AdminView)
			// The dataset actor lists what is mounted.
			for key := range f.mounts {
				if site, snap, _ := strings.Cut(key, "@"); site == q.GetSite() {
					if v.Mounts == nil {
						v.Mounts = map[string]string{}
					}
					v.Mounts[snap] = MountPath(site, snap)
				}
			}
		} else {
			v = &m.AdminView{Code: m.Code_CODE_UNKNOWN_SITE, Node: to.Node}
		}
	case m.AdminQueryKind_ADMIN_QUERY_MOUNT, m.AdminQueryKind_ADMIN_QUERY_UNMOUNT:
		v = f.mountLocked(to, q)
	}
	f.mu.Unlock()
	if v == nil {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	v.QueryId = q.QueryId
	return v, nil
}

// MountPath is where the fake mounts a snapshot.
func MountPath(site, snapshot string) string { return "/views/" + site + "/" + snapshot }

func (f *Fake) mountLocked(to core.Address, q *m.AdminQuery) *m.AdminView {
	sv, ok := f.sites[q.GetSite()]
	if !ok || to != core.DatasetAddr(sv.GetNode(), q.GetSite()) {
		return &m.AdminView{Code: m.Code_CODE_UNKNOWN_SITE, Node: to.Node}
	}
	key := q.GetSite() + "@" + q.GetSnapshot()
	v := &m.AdminView{Code: m.Code_CODE_OK, Node: to.Node}
	switch {
	case q.GetKind() == m.AdminQueryKind_ADMIN_QUERY_UNMOUNT && !f.mounts[key]:
		v.Code, v.Detail = m.Code_CODE_FAILED, "not mounted"
	case q.GetKind() == m.AdminQueryKind_ADMIN_QUERY_UNMOUNT:
		delete(f.mounts, key)
	case !slices.ContainsFunc(sv.GetSnapshots(), func(r *m.SnapshotRef) bool { return r.GetName() == q.GetSnapshot() }):
		v.Code, v.Detail = m.Code_CODE_INVALID, "no snapshot "+q.GetSnapshot()+" on "+to.Node
	default:
		if f.mounts == nil {
			f.mounts = map[string]bool{}
		}
		f.mounts[key] = true
		v.MountPath = MountPath(q.GetSite(), q.GetSnapshot())
	}
	return v
}

func (f *Fake) Send(to core.Address, msg proto.Message) {
	f.mu.Lock()
	f.sent = append(f.sent, Sent{To: to, Msg: proto.Clone(msg)})
	hook := f.OnSend
	f.mu.Unlock()
	if hook != nil {
		hook(to, msg)
	}
}

// Sent returns every message sent so far.
func (f *Fake) Sent() []Sent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.sent)
}

// Queries returns every query made so far.
func (f *Fake) Queries() []Query {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.queries)
}

func (f *Fake) Subscribe() (<-chan admin.Event, func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.SubBuffer
	if n <= 0 {
		n = 16
	}
	ch := make(chan admin.Event, n)
	id := f.nextSub
	f.nextSub++
	f.subs[id] = ch
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			f.mu.Lock()
			defer f.mu.Unlock()
			if c, ok := f.subs[id]; ok {
				delete(f.subs, id)
				close(c)
			}
		})
	}
}

// Subscribers is the number of subscriptions not cancelled.
func (f *Fake) Subscribers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

// Publish delivers ev to every subscriber, dropping it for a full one.
func (f *Fake) Publish(ev admin.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ch := range f.subs {
		select {
		case ch <- ev:
		default:
		}
	}
}

// DropSubscribers closes every subscription (as a backend does with slow ones).
func (f *Fake) DropSubscribers() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, ch := range f.subs {
		delete(f.subs, id)
		close(ch)
	}
}

// ---------------------------------------------------------------- view builders

// Epoch is an epoch.
func Epoch(term uint64, node string) *m.Epoch { return &m.Epoch{Term: term, Node: node} }

// Snap is a snapshot of epoch e, number seq, taken at ms.
func Snap(e *m.Epoch, seq uint64, ms int64) *m.SnapshotRef {
	return &m.SnapshotRef{Name: core.SnapshotName(e, seq), Epoch: e, Seq: seq, TakenMs: ms}
}

// Spec is a site spec with domains.
func Spec(site string, domains ...string) *m.SiteSpec {
	return &m.SiteSpec{Name: site, Domains: domains}
}

// Master is a master's DatasetInfo.
func Master(spec *m.SiteSpec, node string, phase m.SitePhase, e *m.Epoch, latest *m.SnapshotRef, replicas ...string) *m.DatasetInfo {
	return &m.DatasetInfo{Site: spec.GetName(), Node: node, Role: m.Role_ROLE_MASTER, Phase: phase, Epoch: e,
		Latest: latest, Spec: spec, Replicas: replicas, Snapshots: uint32(latest.GetSeq())}
}

// Replica is a replica's DatasetInfo.
func Replica(spec *m.SiteSpec, node string, e *m.Epoch, latest *m.SnapshotRef) *m.DatasetInfo {
	return &m.DatasetInfo{Site: spec.GetName(), Node: node, Role: m.Role_ROLE_REPLICA, Phase: m.SitePhase_SITE_PHASE_STOPPED,
		Epoch: e, Latest: latest, Spec: spec, Snapshots: uint32(latest.GetSeq())}
}

// Report is a node's report with its datasets.
func Report(node string, atMs int64, datasets ...*m.DatasetInfo) *m.NodeReport {
	return &m.NodeReport{Node: node, AtMs: atMs, FreeBytes: 100 << 30, SizeBytes: 400 << 30, Datasets: datasets}
}

// View is a cluster view answered by balancer at atMs; every reporting node is live.
func View(balancer string, atMs int64, reports ...*m.NodeReport) *m.AdminView {
	v := &m.AdminView{Code: m.Code_CODE_OK, Node: balancer, Balancer: balancer, AtMs: atMs, Reports: reports}
	for _, r := range reports {
		v.Live = append(v.Live, r.GetNode())
	}
	return v
}

// SampleAtMs is the time of the Sample view.
const SampleAtMs int64 = 1_700_000_100_000

// SampleReplicationError is why shop's master could not stream to n2 (see
// Sample).
const SampleReplicationError = "stream failed: receive shop: zfs receive -F pool/replicas/shop: out of space (HTTP 507, out_of_space)"

// SampleTakeoverError is why wiki's copy on n3 could not take over (see
// Sample).
const SampleTakeoverError = "promote wiki: zfs mount pool/sites/wiki: cannot mount '/mnt/sites/wiki': directory is not empty"

// Sample is a fake for node n1 of members n1..n4 (n4 down) with n1 the
// balancer and these sites:
//
//   - shop: master n1 (active, epoch 100:n1, newest snapshot at SampleAtMs-10s),
//     replicas n2 (2.5 s behind) and n3 (up to date); an FTP and a MySQL user.
//     Its SITE view (from n1) has three snapshots and one stash.
//   - blog: after a partition, n1 active at 50:n1 and n2 active at 60:n2 (the
//     master: higher epoch); n3 demoted at 70:n3 (a higher epoch, but not a
//     serving phase).
//   - mig: moving from n1 (paused at 100:n1) to n2 (promoting at 101:n2).
//   - wiki: only a replica on n3 (its master n4 is down), whose last try to
//     take over failed (SampleTakeoverError).
//   - fresh: asked for, not placed yet.
//
// shop's replica on n3 reports an old failed takeover too, which its
// master hides; shop's master reports that its last stream to n2 failed
// (SampleReplicationError).
func Sample() *Fake {
	f := New("n1", "n1", "n2", "n3", "n4")
	at := SampleAtMs
	shop := Spec("shop", "shop.example", "www.shop.example")
	shop.AppCommand, shop.QuotaBytes = "php-fpm", 10<<30
	shop.FtpUsers = []*m.FtpUser{{Name: "alice", PasswordHash: "$pbkdf2-sha256$i=1$c2FsdA$SECRETHASH"}}
	shop.MysqlUsers = []*m.MysqlUser{{Name: "shopdb", PasswordHash: "*SECRETHASH", Databases: []string{"shop"}}}
	e100 := Epoch(100, "n1")
	blog, mig, wiki := Spec("blog", "blog.example"), Spec("mig", "mig.example"), Spec("wiki", "wiki.example")
	e50, e60, e70 := Epoch(50, "n1"), Epoch(60, "n2"), Epoch(70, "n3")
	e101 := Epoch(101, "n2")
	demoted := Master(blog, "n3", m.SitePhase_SITE_PHASE_DEMOTED, e70, Snap(e70, 1, at-5_000))

	n1 := Report("n1", at-400,
		Master(shop, "n1", m.SitePhase_SITE_PHASE_ACTIVE, e100, Snap(e100, 3, at-10_000), "n2", "n3"),
		Master(blog, "n1", m.SitePhase_SITE_PHASE_ACTIVE, e50, Snap(e50, 4, at-20_000)),
		Master(mig, "n1", m.SitePhase_SITE_PHASE_PAUSED, e100, Snap(e100, 9, at-1_000), "n2"),
	)
	n1.Load = 42
	n2 := Report("n2", at-300,
		Replica(shop, "n2", e100, Snap(e100, 2, at-12_500)),
		Master(blog, "n2", m.SitePhase_SITE_PHASE_ACTIVE, e60, Snap(e60, 2, at-3_000)),
		Master(mig, "n2", m.SitePhase_SITE_PHASE_PROMOTING, e101, Snap(e100, 9, at-1_000)),
	)
	n2.Load = 7
	n3 := Report("n3", at-200,
		Replica(shop, "n3", e100, Snap(e100, 3, at-10_000)),
		demoted,
		Replica(wiki, "n3", Epoch(90, "n4"), Snap(Epoch(90, "n4"), 5, at-60_000)),
	)
	n3.Datasets[0].ActivationError = "an old failure"
	n1.Datasets[0].ReplicaErrors = map[string]string{"n2": SampleReplicationError}
	n3.Datasets[2].ActivationError = SampleTakeoverError
	v := View("n1", at, n1, n2, n3)
	v.Draining = []string{"n3"}
	v.PendingCreates = []*m.SiteSpec{Spec("fresh", "fresh.example"), Spec("shop", "shop.example")}
	f.SetCluster(v)
	f.SetSite("shop", &m.AdminView{Code: m.Code_CODE_OK, Node: "n1", AtMs: at,
		Info:      n1.Datasets[0],
		Snapshots: []*m.SnapshotRef{Snap(e100, 1, at-30_000), Snap(e100, 2, at-20_000), Snap(e100, 3, at-10_000)},
		Stashes:   []string{"stash-e90-n4-1"},
	})
	return f
}
