package sim

import (
	"testing"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// An admin answer for a client address has no simulated client waiting: the
// world drops it without a panic, an event, a random draw or a trace line.
func TestAdminViewToClientIgnored(t *testing.T) {
	w := &World{trace: newTrace()}
	before := w.trace.Sum64()
	w.send("n1", core.ClientAddr("n1"), &m.AdminView{QueryId: 1, Code: m.Code_CODE_MOVED})
	w.send("n1", core.ClientAddr("n2"), &m.AdminView{QueryId: 2})
	if w.events.Len() != 0 || w.seq != 0 || w.trace.Sum64() != before {
		t.Fatalf("an AdminView to a client scheduled %d events or changed the trace", w.events.Len())
	}
}
