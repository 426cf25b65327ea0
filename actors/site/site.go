// Package site is the state machine of a site on its master: it serves
// requests, holds them while the site is paused for a move, runs planned
// migrations (pre-copy, pause, final delta, promote), answers where a site
// went after it moved, and counts the FTP leases that keep it from moving.
package site

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

const (
	timerStep = "step"
	timerHold = "hold"
	timerLoad = "load"
)

type held struct {
	req        *m.SiteRequest
	deadlineMs int64
	arrivedMs  int64
}

type migration struct {
	target    string
	reason    string
	syncID    uint64
	startedMs int64
	pausedMs  int64
	final     *m.SnapshotRef
	epoch     *m.Epoch // the target's epoch once asked to activate
	attempts  int
	activate  *m.Activate
}

// Site is the site actor on one node.
type Site struct {
	site, node string
	spec       *m.SiteSpec
	epoch      *m.Epoch
	replicas   []string
	phase      m.SitePhase
	held       []held
	heldBytes  uint64
	leases     map[string]int
	mig        *migration
	// rollingBack: paused while the dataset rolls back or restores a stash
	// (both change the site's history and end the same way).
	rollingBack bool
	nextID      uint64
	// successor is where requests go once this node stopped being master.
	successor      string
	successorEpoch *m.Epoch
	served         uint64
	lastReported   *m.DatasetInfo
	// deleted is the tombstone of the site once it was deleted: requests
	// are answered UNKNOWN_SITE until a create after it activates here.
	deleted *m.Epoch
}

var _ core.Actor = (*Site)(nil)

// New returns the site actor of site on node, not yet active.
func New(node, site string) *Site {
	return &Site{site: site, node: node, leases: map[string]int{}}
}

// Phase is the site's lifecycle phase on this node.
func (s *Site) Phase() m.SitePhase { return s.phase }

// Epoch is the epoch this node serves at (or last served at).
func (s *Site) Epoch() *m.Epoch { return s.epoch }

// Held is the number of requests held.
func (s *Site) Held() int { return len(s.held) }

// State is the admin view of the site.
func (s *Site) State() *m.SiteState {
	st := &m.SiteState{Spec: s.spec, Epoch: s.epoch, Master: s.node, Replicas: slices.Clone(s.replicas),
		Phase: s.phase, HeldRequests: uint32(len(s.held)), FtpLeases: uint32(s.leaseCount())}
	if s.mig != nil {
		st.MigrationTarget = s.mig.target
	}
	if s.phase == m.SitePhase_SITE_PHASE_DEMOTED {
		st.Master = s.successor
	}
	return st
}

func (s *Site) leaseCount() int {
	n := 0
	for _, c := range s.leases {
		n += c
	}
	return n
}

func (s *Site) serving() bool {
	return s.phase == m.SitePhase_SITE_PHASE_ACTIVE || s.phase == m.SitePhase_SITE_PHASE_PRE_COPY
}

func (s *Site) holding() bool {
	switch s.phase {
	case m.SitePhase_SITE_PHASE_PAUSED, m.SitePhase_SITE_PHASE_FINAL_DELTA, m.SitePhase_SITE_PHASE_PROMOTING:
		return true
	}
	return false
}

func (s *Site) log(msg string, attrs ...any) core.Log {
	return core.Info(msg, append([]any{"site", s.site, "node", s.node, "epoch", core.EpochString(s.epoch)}, attrs...)...)
}

// Step handles one input.
func (s *Site) Step(env *core.Env, in proto.Message) []core.Effect {
	var fx []core.Effect
	switch msg := in.(type) {
	case *m.Activate:
		fx = s.activate(env, msg)
	case *m.SiteRequest:
		fx = s.request(env, msg)
	case *m.Migrate:
		fx = s.migrate(env, msg)
	case *m.SyncDone:
		fx = s.syncDone(env, msg)
	case *m.Activated:
		fx = s.activated(env, msg)
	case *m.Demote:
		fx = s.demote(env, msg)
	case *m.DeleteSite:
		fx = s.deleteSite(env, msg)
	case *m.MemberEvent:
		if !msg.Up && s.mig != nil && s.mig.target == msg.Node {
			fx = s.targetLost(env, "target "+msg.Node+" is down")
		}
		if !msg.Up {
			fx = append(fx, s.dropLeasesOf(msg.Node)...)
		}
	case *m.Timer:
		fx = s.timer(env, msg.Key)
	case *m.LeaseAcquire:
		// One lease per holder (a holder is one session; a client with
		// several sessions holds several): an acquire is idempotent, so a
		// holder renews its lease by sending it again (a lost message, a
		// master that restarted and forgot it).
		s.leases[msg.Holder] = 1
	case *m.LeaseRelease:
		delete(s.leases, msg.Holder)
	case *m.AddReplica:
		if s.serving() && !slices.Contains(s.replicas, msg.Node) && msg.Node != s.node {
			s.replicas = append(s.replicas, msg.Node)
			slices.Sort(s.replicas)
			fx = append(fx, core.Send{To: core.DatasetAddr(s.node, s.site), Msg: msg})
		}
	case *m.DropReplica:
		if i := slices.Index(s.replicas, msg.Node); i >= 0 {
			s.replicas = slices.Delete(s.replicas, i, i+1)
			fx = append(fx, core.Send{To: core.DatasetAddr(s.node, s.site), Msg: msg})
		}
	case *m.AdminSnapshot:
		fx = append(fx, core.Send{To: core.DatasetAddr(s.node, s.site), Msg: msg})
	case *m.AdminRollback:
		fx = s.rollback(env, msg)
	case *m.AdminRestoreStash:
		fx = s.restoreStash(env, msg)
	case *m.AdminQuery:
		// Queries go to node actors, which route them; one that reached a
		// site actor goes there too, without a report (the query may have
		// spawned this actor).
		return []core.Effect{core.Send{To: core.NodeAddr(s.node), Msg: msg}}
	default:
		panic(fmt.Sprintf("site %s: unexpected input %T", s.site, in))
	}
	return append(fx, s.report()...)
}

// dropLeasesOf forgets the leases held from a node seen down: its sessions
// died with it (or cannot reach us), and a lease nobody will release would
// keep the site from being juggled for ever. Holders are
// "<protocol>/<node>/<id>".
func (s *Site) dropLeasesOf(node string) []core.Effect {
	var fx []core.Effect
	for _, h := range sortedHolders(s.leases) {
		if parts := strings.SplitN(h, "/", 3); len(parts) == 3 && parts[1] == node {
			fx = append(fx, s.log("lease dropped: its holder's node is down", "holder", h, "count", s.leases[h]))
			delete(s.leases, h)
		}
	}
	return fx
}

func sortedHolders(leases map[string]int) []string {
	out := make([]string, 0, len(leases))
	for h := range leases {
		out = append(out, h)
	}
	slices.Sort(out)
	return out
}

// report tells the local node what it reports for this site (phase, leases, load).
func (s *Site) report() []core.Effect {
	leases := uint32(s.leaseCount())
	if r := s.lastReported; r != nil && r.Phase == s.phase && r.FtpLeases == leases && r.Epoch == s.epoch {
		return nil
	}
	info := &m.DatasetInfo{Site: s.site, Node: s.node, Phase: s.phase, FtpLeases: leases, Epoch: s.epoch}
	s.lastReported = info
	return []core.Effect{core.Send{To: core.NodeAddr(s.node), Msg: info}}
}

func (s *Site) route() *m.RouteUpdate {
	master := s.node
	epoch := s.epoch
	switch {
	case s.deleted != nil:
		epoch = s.deleted
	case s.phase == m.SitePhase_SITE_PHASE_DEMOTED:
		master, epoch = s.successor, s.successorEpoch
	}
	return &m.RouteUpdate{Site: s.site, Master: master, Epoch: epoch, Phase: s.phase, Domains: s.spec.GetDomains(),
		MysqlUsers: core.MysqlUserNames(s.spec)}
}

// activate: the local dataset became master (or bumped its epoch).
func (s *Site) activate(env *core.Env, a *m.Activate) []core.Effect {
	if s.deleted != nil && !core.CreatedAfter(a.Spec, s.deleted) {
		// A decision made without knowing of the deletion (a resume, a
		// late activation) made the local copy master: it holds history
		// from before the deletion. It does not serve; its dataset is
		// told again.
		return []core.Effect{core.Warn("activation of a deleted site ignored", "site", s.site, "node", s.node,
			"epoch", core.EpochString(a.Epoch), "tombstone", core.EpochString(s.deleted), "reason", a.Reason),
			core.Send{To: core.DatasetAddr(s.node, s.site), Msg: &m.DeleteSite{Site: s.site, Epoch: s.deleted}}}
	}
	if s.epoch != nil && !core.EpochLess(s.epoch, a.Epoch) {
		if core.CompareEpoch(s.epoch, a.Epoch) == 0 && a.FromNode != "" {
			// Re-sent activation: the old master missed our answer.
			return []core.Effect{core.Send{To: core.SiteAddr(a.FromNode, s.site), Msg: &m.Activated{
				Site: s.site, Node: s.node, Epoch: s.epoch, Code: m.Code_CODE_OK}}}
		}
		return nil
	}
	wasServing := s.serving() || s.holding()
	s.spec = a.Spec
	s.epoch = a.Epoch
	s.replicas = nil
	for _, r := range a.Replicas {
		if r != s.node && !slices.Contains(s.replicas, r) {
			s.replicas = append(s.replicas, r)
		}
	}
	slices.Sort(s.replicas)
	s.successor, s.successorEpoch = "", nil
	s.deleted = nil // created again after its deletion
	fx := []core.Effect{s.log("site active", "reason", a.Reason, "replicas", fmt.Sprint(s.replicas))}
	if s.mig != nil || s.rollingBack {
		// Resumed after a migration gave up on its target, or rolled back.
		fx = append(fx, core.CancelTimer{Key: timerStep})
		s.mig, s.rollingBack = nil, false
	}
	s.phase = m.SitePhase_SITE_PHASE_ACTIVE
	fx = append(fx, core.Broadcast{Msg: s.route()})
	if !wasServing {
		fx = append(fx, core.Process{Req: &m.ProcessRequest{Site: s.site, Start: true, Spec: s.spec}})
	}
	// The dataset takes the activation's first snapshot when told, so that
	// storage starts the processes first (it carries out a site's requests
	// in order) and clients do not wait for a snapshot.
	fx = append(fx, core.Send{To: core.DatasetAddr(s.node, s.site), Msg: &m.Activated{
		Site: s.site, Node: s.node, Epoch: s.epoch, Code: m.Code_CODE_OK}})
	if a.FromNode != "" {
		fx = append(fx, core.Send{To: core.SiteAddr(a.FromNode, s.site), Msg: &m.Activated{
			Site: s.site, Node: s.node, Epoch: s.epoch, Code: m.Code_CODE_OK}})
	}
	return append(fx, s.release(env)...)
}

func (s *Site) respond(req *m.SiteRequest, code m.Code, detail string, env *core.Env) core.Effect {
	resp := &m.SiteResponse{Site: s.site, RequestId: req.RequestId, Code: code, Detail: detail, WriteId: req.WriteId}
	switch code {
	case m.Code_CODE_MOVED:
		resp.Master, resp.Epoch = s.successor, s.successorEpoch
	case m.Code_CODE_OVERLOADED, m.Code_CODE_TIMEOUT:
		resp.RetryAfterS = uint32(max(1, env.Config.RetryAfter/time.Second))
	}
	return core.Send{To: core.NodeAddr(req.EntryNode), Msg: resp}
}

func (s *Site) request(env *core.Env, req *m.SiteRequest) []core.Effect {
	switch {
	case s.deleted != nil:
		return []core.Effect{s.respond(req, m.Code_CODE_UNKNOWN_SITE, "site deleted", env)}
	case s.serving():
		return append(s.count(env), core.Serve{Req: req, Epoch: s.epoch})
	case s.holding():
		return s.hold(env, req)
	default:
		return []core.Effect{s.respond(req, m.Code_CODE_MOVED, "not master here", env)}
	}
}

// hold keeps a request until the site is active again, within the bounds.
func (s *Site) hold(env *core.Env, req *m.SiteRequest) []core.Effect {
	c := env.Config
	if len(s.held) >= c.HeldRequestsMax {
		return []core.Effect{s.respond(req, m.Code_CODE_OVERLOADED, "held requests bound reached", env)}
	}
	if s.heldBytes+req.BodyBytes > c.HeldBytesMax {
		return []core.Effect{s.respond(req, m.Code_CODE_OVERLOADED, "held bytes bound reached", env)}
	}
	h := held{req: req, arrivedMs: env.NowMs(), deadlineMs: env.NowMs() + c.HoldDeadline.Milliseconds()}
	s.held = append(s.held, h)
	s.heldBytes += req.BodyBytes
	if len(s.held) == 1 {
		return []core.Effect{core.SetTimer{Key: timerHold, After: c.HoldDeadline}}
	}
	return nil
}

// count adds a served request to the load this node reports, arming the
// report timer on the first one.
func (s *Site) count(env *core.Env) []core.Effect {
	s.served++
	if s.served == 1 {
		return []core.Effect{core.SetTimer{Key: timerLoad, After: env.Config.ReportInterval}}
	}
	return nil
}

// release serves held requests in arrival order (we are master again).
func (s *Site) release(env *core.Env) []core.Effect {
	if len(s.held) == 0 {
		return nil
	}
	fx := []core.Effect{core.CancelTimer{Key: timerHold}}
	for _, h := range s.held {
		fx = append(fx, s.count(env)...)
		fx = append(fx, core.Serve{Req: h.req, Epoch: s.epoch})
	}
	s.held, s.heldBytes = nil, 0
	return fx
}

// forward sends held requests, in arrival order, to the new master.
func (s *Site) forward(env *core.Env) []core.Effect {
	if len(s.held) == 0 {
		return nil
	}
	fx := []core.Effect{core.CancelTimer{Key: timerHold}}
	for _, h := range s.held {
		fx = append(fx, core.Send{To: core.SiteAddr(s.successor, s.site), Msg: h.req})
	}
	s.held, s.heldBytes = nil, 0
	return fx
}

func (s *Site) timer(env *core.Env, key string) []core.Effect {
	switch key {
	case timerHold:
		now := env.NowMs()
		var fx []core.Effect
		i := 0
		for ; i < len(s.held) && s.held[i].deadlineMs <= now; i++ {
			s.heldBytes -= s.held[i].req.BodyBytes
			fx = append(fx, s.respond(s.held[i].req, m.Code_CODE_TIMEOUT, "held past the deadline", env))
		}
		s.held = s.held[i:]
		if len(s.held) > 0 {
			fx = append(fx, core.SetTimer{Key: timerHold, After: time.Duration(s.held[0].deadlineMs-now) * time.Millisecond})
		}
		return fx
	case timerLoad:
		// Armed by the first request served after the previous report, so an
		// idle site costs no timer.
		if s.served == 0 {
			return nil
		}
		info := &m.DatasetInfo{Site: s.site, Node: s.node, Phase: s.phase, FtpLeases: uint32(s.leaseCount()),
			Epoch: s.epoch, Requests: s.served}
		s.served = 0
		return []core.Effect{core.Send{To: core.NodeAddr(s.node), Msg: info}}
	case timerStep:
		if s.rollingBack {
			// Storage has not answered: the dataset may be rolled back or
			// not, so neither resume nor give up; held requests meet their
			// deadline meanwhile.
			return []core.Effect{core.Warn("rollback or restore is slow: still waiting for storage", "site", s.site, "node", s.node),
				core.SetTimer{Key: timerStep, After: env.Config.StepTimeout}}
		}
		if s.mig == nil {
			return nil
		}
		if s.phase == m.SitePhase_SITE_PHASE_PROMOTING {
			if s.mig.attempts < env.Config.ActivateAttemptsMax {
				s.mig.attempts++
				return []core.Effect{
					s.log("activation unanswered: asking again", "target", s.mig.target, "attempt", s.mig.attempts),
					core.Send{To: core.DatasetAddr(s.mig.target, s.site), Msg: s.mig.activate},
					core.SetTimer{Key: timerStep, After: env.Config.StepTimeout},
				}
			}
			return s.targetLost(env, "target never answered the activation")
		}
		return s.abort(env, "migration step timed out in "+s.phase.String())
	}
	return nil
}

// rollback pauses the site (requests are held) while its dataset returns to
// an older snapshot; the dataset answers with an Activate at the new epoch.
func (s *Site) rollback(env *core.Env, r *m.AdminRollback) []core.Effect {
	if s.phase != m.SitePhase_SITE_PHASE_ACTIVE {
		return []core.Effect{s.log("rollback refused: site is not active here", "phase", s.phase.String())}
	}
	s.rollingBack = true
	s.phase = m.SitePhase_SITE_PHASE_PAUSED
	return []core.Effect{
		s.log("rollback: paused", "snapshot", r.Snapshot),
		core.Broadcast{Msg: s.route()},
		core.Send{To: core.DatasetAddr(s.node, s.site), Msg: r},
		core.SetTimer{Key: timerStep, After: env.Config.StepTimeout},
	}
}

// restoreStash pauses the site, as a rollback does, while its dataset makes
// a stash the site's history again; the dataset answers with an Activate at
// the new epoch, or a SyncDone to core.RollbackTarget if it refused.
func (s *Site) restoreStash(env *core.Env, r *m.AdminRestoreStash) []core.Effect {
	if s.phase != m.SitePhase_SITE_PHASE_ACTIVE {
		return []core.Effect{s.log("stash restore refused: site is not active here", "stash", r.Stash, "phase", s.phase.String())}
	}
	s.rollingBack = true
	s.phase = m.SitePhase_SITE_PHASE_PAUSED
	return []core.Effect{
		s.log("stash restore: paused", "stash", r.Stash),
		core.Broadcast{Msg: s.route()},
		core.Send{To: core.DatasetAddr(s.node, s.site), Msg: r},
		core.SetTimer{Key: timerStep, After: env.Config.StepTimeout},
	}
}

// migrate starts a planned move: pre-copy while the site stays live.
func (s *Site) migrate(env *core.Env, mg *m.Migrate) []core.Effect {
	switch {
	case s.phase != m.SitePhase_SITE_PHASE_ACTIVE:
		return append([]core.Effect{s.log("migration refused: site is not active here", "target", mg.Target, "phase", s.phase.String())},
			s.migrateResult(&migration{target: mg.Target, reason: mg.Reason}, m.Code_CODE_FAILED, "site is not active here: "+s.phase.String(), 0)...)
	case mg.Target == s.node:
		return nil
	case s.leaseCount() > 0 && mg.Reason == "load":
		return []core.Effect{s.log("migration refused: FTP session open", "target", mg.Target, "leases", s.leaseCount())}
	}
	s.nextID++
	s.mig = &migration{target: mg.Target, reason: mg.Reason, syncID: s.nextID, startedMs: env.NowMs()}
	s.phase = m.SitePhase_SITE_PHASE_PRE_COPY
	return []core.Effect{
		s.log("migration: pre-copy", "target", mg.Target, "reason", mg.Reason),
		core.Send{To: core.DatasetAddr(s.node, s.site), Msg: &m.Sync{Site: s.site, Target: mg.Target, SyncId: s.mig.syncID}},
		core.SetTimer{Key: timerStep, After: env.Config.StepTimeout},
	}
}

func (s *Site) syncDone(env *core.Env, d *m.SyncDone) []core.Effect {
	if d.Target == core.RollbackTarget {
		if !s.rollingBack {
			return nil
		}
		s.rollingBack = false
		fx := []core.Effect{core.CancelTimer{Key: timerStep}, core.Warn("history change failed: resuming", "site", s.site, "node", s.node, "detail", d.Detail)}
		s.phase = m.SitePhase_SITE_PHASE_ACTIVE
		return append(append(fx, core.Broadcast{Msg: s.route()}), s.release(env)...)
	}
	if s.mig == nil || d.SyncId != s.mig.syncID {
		return nil
	}
	if d.Code != m.Code_CODE_OK {
		return s.abort(env, "sync failed: "+d.Detail)
	}
	switch s.phase {
	case m.SitePhase_SITE_PHASE_PRE_COPY:
		// Pause: from here requests are held, and the final delta captures
		// every write acknowledged so far.
		s.phase = m.SitePhase_SITE_PHASE_PAUSED
		s.mig.pausedMs = env.NowMs()
		fx := []core.Effect{s.log("migration: paused", "target", s.mig.target, "precopy", d.Snapshot.GetName()),
			core.Broadcast{Msg: s.route()}}
		if env.Config.Mutations.SkipFinalDelta {
			return append(fx, s.promote(env, d.Snapshot)...)
		}
		s.nextID++
		s.mig.syncID = s.nextID
		s.phase = m.SitePhase_SITE_PHASE_FINAL_DELTA
		return append(fx,
			core.Send{To: core.DatasetAddr(s.node, s.site), Msg: &m.Sync{Site: s.site, Target: s.mig.target, Final: true, SyncId: s.mig.syncID}},
			core.SetTimer{Key: timerStep, After: env.Config.StepTimeout})
	case m.SitePhase_SITE_PHASE_FINAL_DELTA:
		return s.promote(env, d.Snapshot)
	}
	return nil
}

// promote asks the target to become master at the next epoch.
func (s *Site) promote(env *core.Env, final *m.SnapshotRef) []core.Effect {
	s.phase = m.SitePhase_SITE_PHASE_PROMOTING
	s.mig.final = final
	s.mig.epoch = core.NextEpoch(s.epoch, s.mig.target, env)
	replicas := []string{s.node}
	for _, r := range s.replicas {
		if r != s.mig.target {
			replicas = append(replicas, r)
		}
	}
	s.mig.activate = &m.Activate{Spec: s.spec, Epoch: s.mig.epoch, Replicas: replicas, Reason: "migrate",
		ExpectSnapshot: final.GetName(), FromNode: s.node}
	s.mig.attempts = 1
	return []core.Effect{
		s.log("migration: promoting target", "target", s.mig.target, "snapshot", final.GetName(), "new_epoch", core.EpochString(s.mig.epoch)),
		core.Send{To: core.DatasetAddr(s.mig.target, s.site), Msg: s.mig.activate},
		core.SetTimer{Key: timerStep, After: env.Config.StepTimeout},
	}
}

func (s *Site) activated(env *core.Env, a *m.Activated) []core.Effect {
	if s.mig == nil || s.phase != m.SitePhase_SITE_PHASE_PROMOTING || core.CompareEpoch(a.Epoch, s.mig.epoch) != 0 {
		return nil
	}
	if a.Code != m.Code_CODE_OK {
		if core.IsTombstone(a.Fence) {
			// The target knows the site was deleted (this node missed
			// it): resuming here would bring it back.
			return s.deleteSite(env, &m.DeleteSite{Site: s.site, Epoch: a.Fence})
		}
		// A copy of our Activate may still be on the wire: resume above its
		// epoch (the target also fences it), so it can never win later.
		return s.targetLost(env, "target refused: "+a.Detail)
	}
	mg := s.mig
	s.mig = nil
	s.phase = m.SitePhase_SITE_PHASE_DEMOTED
	s.successor, s.successorEpoch = mg.target, mg.epoch
	fx := []core.Effect{
		core.CancelTimer{Key: timerStep},
		s.log("migration done", "target", mg.target, "paused_ms", env.NowMs()-mg.pausedMs, "took_ms", env.NowMs()-mg.startedMs),
	}
	fx = append(fx, s.migrateResult(mg, m.Code_CODE_OK, "", env.NowMs()-mg.pausedMs)...)
	fx = append(fx, s.forward(env)...)
	// Processes stop before the dataset is told: its role change (a rename
	// on ZFS) must not race a running app.
	return append(fx,
		core.Process{Req: &m.ProcessRequest{Site: s.site, Start: false, Spec: s.spec}},
		core.Send{To: core.DatasetAddr(s.node, s.site), Msg: &m.Demote{Site: s.site, Winner: mg.target, Epoch: mg.epoch, Clean: true}})
}

// abort ends a migration that has not asked the target to activate: the site
// serves here again, held requests first.
func (s *Site) abort(env *core.Env, why string) []core.Effect {
	mg := s.mig
	s.mig = nil
	s.phase = m.SitePhase_SITE_PHASE_ACTIVE
	fx := []core.Effect{core.CancelTimer{Key: timerStep}, core.Warn("migration aborted", "site", s.site, "node", s.node, "target", mg.target, "why", why),
		core.Broadcast{Msg: s.route()}}
	fx = append(fx, s.migrateResult(mg, m.Code_CODE_FAILED, why, 0)...)
	return append(fx, s.release(env)...)
}

// ReasonStop is the reason of the moves a stopping node asks for (its
// host hands its sites off before it exits): their end, either way, is
// told to the host (MigrateResult to the node's client address).
const ReasonStop = "stop"

// migrateResult tells the host how a move it asked for ended.
func (s *Site) migrateResult(mg *migration, code m.Code, detail string, pausedMs int64) []core.Effect {
	if mg.reason != ReasonStop {
		return nil
	}
	return []core.Effect{core.Send{To: core.ClientAddr(s.node), Msg: &m.MigrateResult{
		Site: s.site, Target: mg.target, Code: code, Detail: detail, PausedMs: uint64(max(pausedMs, 0))}}}
}

// targetLost handles a target that is gone while it may or may not have
// activated: before activation this is a plain abort; after it, this node
// resumes at an epoch above the one the target was given, so the two
// histories stay distinct and a heal picks the newest.
func (s *Site) targetLost(env *core.Env, why string) []core.Effect {
	if s.phase != m.SitePhase_SITE_PHASE_PROMOTING {
		return s.abort(env, why)
	}
	epoch := core.NextEpoch(s.mig.epoch, s.node, env)
	fx := []core.Effect{core.Warn("migration target lost after activation was asked: resuming here", "site", s.site,
		"node", s.node, "target", s.mig.target, "why", why, "new_epoch", core.EpochString(epoch))}
	fx = append(fx, s.migrateResult(s.mig, m.Code_CODE_FAILED, why, 0)...)
	// The dataset bumps its epoch and comes back through activate().
	return append(fx, core.Send{To: core.DatasetAddr(s.node, s.site), Msg: &m.Activate{
		Spec: s.spec, Epoch: epoch, Replicas: s.replicas, Reason: "resume"}})
}

// demote: a newer master exists (fencing, or a heal chose another history).
func (s *Site) demote(env *core.Env, d *m.Demote) []core.Effect {
	if s.epoch != nil && !core.EpochLess(s.epoch, d.Epoch) || s.deleted != nil {
		// Older news, or the site was deleted here (this node serves no
		// later incarnation of it).
		return nil
	}
	if s.phase == m.SitePhase_SITE_PHASE_DEMOTED && !core.EpochLess(s.successorEpoch, d.Epoch) {
		return nil
	}
	was := s.phase
	s.phase = m.SitePhase_SITE_PHASE_DEMOTED
	s.successor, s.successorEpoch = d.Winner, d.Epoch
	fx := []core.Effect{s.log("site demoted", "winner", d.Winner, "winner_epoch", core.EpochString(d.Epoch)),
		core.CancelTimer{Key: timerStep}}
	s.mig, s.rollingBack = nil, false
	fx = append(fx, s.forward(env)...)
	if was != m.SitePhase_SITE_PHASE_DEMOTED {
		fx = append(fx, core.Process{Req: &m.ProcessRequest{Site: s.site, Start: false, Spec: s.spec}})
	}
	// The dataset snapshots the last writes and becomes a replica (it ignores
	// this if it already did).
	return append(fx, core.Send{To: core.DatasetAddr(s.node, s.site), Msg: d})
}

// deleteSite: the site was deleted at d.Epoch (its tombstone). It stops
// being served here at once: held requests and later ones are answered
// UNKNOWN_SITE, its processes stop, and the route names this node at the
// tombstone so that every entry node asks here and gets that answer. Then
// the dataset stashes the copy whole and records the tombstone (unless it
// is the one that told us). A site created again after the tombstone
// ignores it.
func (s *Site) deleteSite(env *core.Env, d *m.DeleteSite) []core.Effect {
	if s.deleted == nil && s.spec != nil && core.CreatedAfter(s.spec, d.Epoch) {
		return []core.Effect{s.log("delete ignored: the site was created again after it", "tombstone", core.EpochString(d.Epoch))}
	}
	var fx []core.Effect
	if s.deleted == nil || core.EpochLess(s.deleted, d.Epoch) {
		wasServing := s.serving() || s.holding()
		s.deleted = d.Epoch
		s.mig, s.rollingBack = nil, false
		s.successor, s.successorEpoch = "", nil
		s.phase = m.SitePhase_SITE_PHASE_STOPPED
		fx = append(fx, s.log("site deleted: not served any more", "tombstone", core.EpochString(d.Epoch), "held", len(s.held)),
			core.CancelTimer{Key: timerStep})
		if len(s.held) > 0 {
			fx = append(fx, core.CancelTimer{Key: timerHold})
			for _, h := range s.held {
				fx = append(fx, s.respond(h.req, m.Code_CODE_UNKNOWN_SITE, "site deleted", env))
			}
			s.held, s.heldBytes = nil, 0
		}
		if wasServing {
			// Processes stop before the dataset is told: the stash must
			// not race a running app.
			fx = append(fx, core.Broadcast{Msg: s.route()},
				core.Process{Req: &m.ProcessRequest{Site: s.site, Start: false, Spec: s.spec}})
		}
	}
	if !d.Recorded {
		fx = append(fx, core.Send{To: core.DatasetAddr(s.node, s.site), Msg: &m.DeleteSite{Site: s.site, Epoch: d.Epoch}})
	}
	return fx
}
