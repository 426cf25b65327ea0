package host

import (
	"context"
	"errors"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// queriesMax bounds admin queries waiting for an answer; past it Query
// fails with ErrTooManyQueries at once.
const queriesMax = 1024

// ErrTooManyQueries is returned by Query at the queriesMax bound.
var ErrTooManyQueries = errors.New("host: too many admin queries in flight")

// Query sends an admin query to the actor at `to` and waits (ctx bounds the
// wait) for its AdminView. QueryId and ReplyNode are set here. A CLUSTER
// query answered MOVED (it reached a balancer that is not, or no longer,
// the active one) is retried through this node's actor a bounded number of
// times, a leadership change being under way.
func (h *Host) Query(ctx context.Context, to core.Address, q *m.AdminQuery) (*m.AdminView, error) {
	const movedRetriesMax = 3
	for attempt := 0; ; attempt++ {
		v, err := h.query(ctx, to, q)
		if err != nil || v.Code != m.Code_CODE_MOVED || (q.Kind != m.AdminQueryKind_ADMIN_QUERY_CLUSTER && q.Kind != m.AdminQueryKind_ADMIN_QUERY_CLAIMS) || attempt >= movedRetriesMax {
			return v, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(h.cfg.HeartbeatInterval):
		}
	}
}

func (h *Host) query(ctx context.Context, to core.Address, q *m.AdminQuery) (*m.AdminView, error) {
	q = proto.Clone(q).(*m.AdminQuery)
	q.QueryId = h.nextRequest.Add(1)
	q.ReplyNode = h.node
	ch := make(chan *m.AdminView, 1)
	h.mu.Lock()
	if len(h.queries) >= queriesMax {
		h.mu.Unlock()
		return nil, ErrTooManyQueries
	}
	h.queries[q.QueryId] = ch
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.queries, q.QueryId)
		h.mu.Unlock()
	}()
	h.send(to, q)
	select {
	case v := <-ch:
		return v, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (h *Host) adminView(v *m.AdminView) {
	if h.endAsk(v) {
		return
	}
	h.mu.Lock()
	ch := h.queries[v.QueryId]
	h.mu.Unlock()
	if ch == nil {
		return
	}
	select {
	case ch <- v:
	default:
	}
}

// Members lists every configured member not removed, sorted.
func (h *Host) Members() []string {
	return slices.DeleteFunc(slices.Clone(h.names), h.isRemoved)
}
