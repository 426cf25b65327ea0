package host

import (
	"context"
	"slices"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	"github.com/hybridcluster/hybridcluster/actors/site"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// Bounds of a stopping node's hand-off.
const (
	// handoffMovesMax bounds the moves a stopping node runs at once (each
	// stops a site's processes and streams its final delta).
	handoffMovesMax = 4
	// handoffMoveWaitMax bounds the wait for one move's end; past it the
	// site counts as left here.
	handoffMoveWaitMax = 30 * time.Second
	// handoffRoundsMax bounds the passes over the sites this node masters
	// (a move to this node that ended after the first pass makes one more
	// master to hand off).
	handoffRoundsMax = 3
)

// HandOff moves every site this node masters to one of its live replicas
// before the node stops: a planned move each (requests paused, not
// failed; the final delta holds every acknowledged write), where a stop
// without it would leave the other nodes to fail the sites over after the
// node is gone, losing what was written since each site's last replicated
// snapshot. From the call on, this node takes no copy (a receive is
// refused), so two nodes stopping together do not hand sites to each
// other. It returns when every site was tried, or at ctx's end: moved
// sites, and those left here (no live replica, a move that failed or did
// not end in time), which fail over once the node is gone.
func (h *Host) HandOff(ctx context.Context) (moved, left int) {
	h.stopping.Store(true)
	tried := map[string]bool{}
	assigned := map[string]int{} // moves asked per target
	for range handoffRoundsMax {
		var todo []string
		for _, s := range h.catalog.sites() {
			if !tried[s] && h.catalog.get(s).role == m.Role_ROLE_MASTER {
				todo = append(todo, s)
			}
		}
		if len(todo) == 0 {
			break
		}
		if ctx.Err() != nil {
			left += len(todo) // the bound passed before they were tried
			break
		}
		type outcome struct {
			site string
			ok   bool
		}
		results := make(chan outcome, len(todo))
		slots := make(chan struct{}, handoffMovesMax)
		started := 0
		for _, s := range todo {
			tried[s] = true
			if ctx.Err() != nil {
				left++ // no move begins once the bound has passed
				continue
			}
			target, master := h.handoffTarget(ctx, s, assigned)
			if !master {
				// Its dataset actor does not serve it as master (no
				// dataset here, a move or a deletion under way).
				h.log.Debug("hand-off: not a master here", "site", s, "node", h.node)
				continue
			}
			if target == "" {
				h.log.Warn("hand-off: no live replica; the site fails over once this node is gone", "site", s, "node", h.node)
				left++
				continue
			}
			assigned[target]++
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				left++
				continue
			}
			if ctx.Err() != nil {
				<-slots
				left++
				continue
			}
			started++
			go func() {
				defer func() { <-slots }()
				results <- outcome{s, h.handOffSite(ctx, s, target)}
			}()
		}
		for range started {
			if r := <-results; r.ok {
				moved++
			} else {
				left++
			}
		}
	}
	return moved, left
}

// handoffTarget picks the live replica of site with the fewest moves
// asked so far ("" when there is none); master: the site's dataset actor
// says it is master here.
func (h *Host) handoffTarget(ctx context.Context, s string, assigned map[string]int) (target string, master bool) {
	qctx, cancel := context.WithTimeout(ctx, h.cfg.StepTimeout)
	defer cancel()
	v, err := h.Query(qctx, core.DatasetAddr(h.node, s), &m.AdminQuery{Kind: m.AdminQueryKind_ADMIN_QUERY_SITE, Site: s})
	if err != nil || v.GetInfo().GetRole() != m.Role_ROLE_MASTER {
		return "", false
	}
	replicas := slices.Clone(v.GetInfo().GetReplicas())
	slices.Sort(replicas)
	best := ""
	for _, r := range replicas {
		if r == h.node || !h.Live(r) || h.isRemoved(r) {
			continue
		}
		if best == "" || assigned[r] < assigned[best] {
			best = r
		}
	}
	return best, true
}

// handOffSite asks the site's actor for a move to target and waits for its
// end (bounded): true when the site moved.
func (h *Host) handOffSite(ctx context.Context, s, target string) bool {
	ch := make(chan *m.MigrateResult, 1)
	h.mu.Lock()
	h.handoffs[s] = ch
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.handoffs, s)
		h.mu.Unlock()
	}()
	begun := time.Now()
	h.deliverLocal(core.SiteAddr(h.node, s), &m.Migrate{Site: s, Target: target, Reason: site.ReasonStop})
	wait := time.NewTimer(handoffMoveWaitMax)
	defer wait.Stop()
	select {
	case r := <-ch:
		if r.GetCode() != m.Code_CODE_OK {
			h.log.Warn("hand-off failed; the site fails over once this node is gone", "site", s, "node", h.node, "target", target, "why", r.GetDetail())
			return false
		}
		h.log.Info("handed off", "site", s, "node", h.node, "target", target, "paused_ms", r.GetPausedMs(), "took", time.Since(begun).Round(time.Millisecond))
		return true
	case <-wait.C:
		h.log.Warn("hand-off did not end in time; the site fails over once this node is gone", "site", s, "node", h.node, "target", target, "bound", handoffMoveWaitMax)
	case <-ctx.Done():
		h.log.Warn("hand-off cut short; the site fails over once this node is gone", "site", s, "node", h.node, "target", target)
	}
	return false
}

// handoffResult passes a move's end to the hand-off waiting for it.
func (h *Host) handoffResult(r *m.MigrateResult) {
	h.mu.Lock()
	ch := h.handoffs[r.GetSite()]
	h.mu.Unlock()
	if ch == nil {
		return
	}
	select {
	case ch <- r:
	default:
	}
}
