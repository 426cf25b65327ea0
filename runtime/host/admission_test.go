package host

import (
	"context"
	"testing"
	"time"

	m "github.com/hybridcluster/hybridcluster/messages"
)

// An Admission counts a session's units of work in and out like Admit:
// refused while the gate is closed, waited for by a final snapshot's
// waitIdle while held, counted as activity and load, and without an
// allocation per unit.
func TestAdmissionCountsWithoutAllocating(t *testing.T) {
	h := &Host{gates: newGates()}
	a := h.NewAdmission("a")
	if a.Enter(context.Background()) {
		t.Fatal("unknown site admitted")
	}
	h.gates.setRoute("a", true, &m.Epoch{Term: 1, Node: "n1"})
	h.gates.setStarted("a", true)
	if !a.Enter(context.Background()) || !a.Enter(context.Background()) {
		t.Fatal("open gate refused")
	}
	if n := h.gates.waitIdle(context.Background(), "a", 20*time.Millisecond); n != 1 {
		t.Fatalf("in flight = %d, want 1 (a second Enter holds nothing more)", n)
	}
	go func() { time.Sleep(20 * time.Millisecond); a.Leave() }()
	if n := h.gates.waitIdle(context.Background(), "a", 5*time.Second); n != 0 {
		t.Fatalf("in flight after Leave = %d", n)
	}
	a.Leave() // nothing held: nothing done
	if n := h.gates.waitIdle(context.Background(), "a", time.Millisecond); n != 0 {
		t.Fatalf("in flight after a second Leave = %d", n)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if !a.Enter(context.Background()) {
			t.Fatal("refused")
		}
		a.Leave()
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per Enter and Leave, want 0", allocs)
	}
	if got := h.activity.count("a"); got != 1002 {
		t.Errorf("activity = %d, want 1002", got)
	}
	if got := h.activity.drainLoad()["a"]; got != 1002 {
		t.Errorf("load = %d, want 1002", got)
	}
	// A pause closes the gate: the next unit is refused.
	h.gates.setRoute("a", false, nil)
	if a.Enter(context.Background()) {
		t.Fatal("closed gate admitted")
	}
}
