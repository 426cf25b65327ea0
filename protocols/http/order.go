package http

import (
	"sync"
	"time"
)

// orderWaitMax bounds how long a request released by the actors waits for
// the one that arrived before it (at this node, for the same site) to be on
// its way to the master; at the bound it goes anyway. Requests released
// together go out within microseconds of each other, so the bound is only
// reached when the earlier one is stuck (a slow dial).
const orderWaitMax = 100 * time.Millisecond

// orderQueues keep requests that waited in the actors in their arrival
// order when a site serves again: the site actor releases them in order,
// and each one here waits for its predecessor's head to leave before it
// sends its own.
type orderQueues struct {
	mu   sync.Mutex
	tail map[string]*orderTicket
}

type orderTicket struct {
	q    *orderQueues
	site string
	prev *orderTicket
	done chan struct{}
	once sync.Once
}

// enter takes a place at the tail of site's queue.
func (q *orderQueues) enter(site string) *orderTicket {
	t := &orderTicket{q: q, site: site, done: make(chan struct{})}
	q.mu.Lock()
	t.prev = q.tail[site]
	q.tail[site] = t
	q.mu.Unlock()
	return t
}

// wait returns once the predecessor is on its way (or finished), bounded.
func (t *orderTicket) wait() {
	if t == nil || t.prev == nil {
		return
	}
	select {
	case <-t.prev.done:
	default:
		timer := time.NewTimer(orderWaitMax)
		select {
		case <-t.prev.done:
		case <-timer.C:
		}
		timer.Stop()
	}
	t.prev = nil
}

// dispatched marks the request as on its way (or finished); successors may
// go. Safe on nil and more than once.
func (t *orderTicket) dispatched() {
	if t == nil {
		return
	}
	t.once.Do(func() {
		close(t.done)
		t.q.mu.Lock()
		if t.q.tail[t.site] == t {
			delete(t.q.tail, t.site)
		}
		t.q.mu.Unlock()
	})
}
