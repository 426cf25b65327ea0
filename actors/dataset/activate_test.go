package dataset

import (
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

func findEffect[T core.Effect](fx []core.Effect) (T, bool) {
	for _, e := range fx {
		if t, ok := e.(T); ok {
			return t, true
		}
	}
	var zero T
	return zero, false
}

// A failover's promotion that storage finds busy is tried again on a short
// timer, ActivateAttemptsMax times, then left to the balancer; a busy
// migration target answers its source instead, and success resets the
// count.
func TestFailoverActivationRetriesBusyStorage(t *testing.T) {
	env := &core.Env{Self: core.DatasetAddr("n1", "a"), Now: time.Unix(1000, 0), Config: core.Default()}
	d := bootedCopy(env, 2, 0)
	a := &m.Activate{Spec: d.spec, Epoch: &m.Epoch{Term: 5, Node: "n1"}, Reason: "failover"}
	fx := d.Step(env, a)
	st, ok := findEffect[core.Storage](fx)
	if !ok || st.Req.Op != m.StorageOp_STORAGE_OP_SET_ROLE {
		t.Fatalf("activation effects %v", fx)
	}
	for attempt := 1; ; attempt++ {
		fx = d.Step(env, &m.StorageResult{Op: st.Req.Op, Site: "a", OpId: st.Req.OpId, Code: m.Code_CODE_BUSY, Detail: "dataset is busy"})
		timer, armed := findEffect[core.SetTimer](fx)
		if attempt > env.Config.ActivateAttemptsMax {
			if armed {
				t.Fatalf("attempt %d: retried past the bound", attempt)
			}
			break
		}
		if !armed || timer.Key != timerActivate || timer.After > time.Second {
			t.Fatalf("attempt %d: effects %v, want a short retry timer", attempt, fx)
		}
		fx = d.Step(env, &m.Timer{Key: timerActivate})
		if st, ok = findEffect[core.Storage](fx); !ok || st.Req.Op != m.StorageOp_STORAGE_OP_SET_ROLE || st.Req.Epoch.Term != 5 {
			t.Fatalf("attempt %d: retry effects %v", attempt, fx)
		}
	}
	// The balancer's next probe activates at a newer epoch; success resets.
	a2 := &m.Activate{Spec: d.spec, Epoch: &m.Epoch{Term: 6, Node: "n1"}, Reason: "failover"}
	fx = d.Step(env, a2)
	st, _ = findEffect[core.Storage](fx)
	d.Step(env, &m.StorageResult{Op: st.Req.Op, Site: "a", OpId: st.Req.OpId, Code: m.Code_CODE_OK})
	if !d.active || d.activateRetries != 0 || d.retryActivate != nil {
		t.Fatalf("after success: active=%v retries=%d pending=%v", d.active, d.activateRetries, d.retryActivate)
	}
	// A stale retry timer does nothing once active.
	if fx := d.Step(env, &m.Timer{Key: timerActivate}); len(fx) != 0 {
		t.Fatalf("stale retry timer: %v", fx)
	}
}

func TestMigrationTargetBusyAnswersItsSource(t *testing.T) {
	env := &core.Env{Self: core.DatasetAddr("n1", "a"), Now: time.Unix(1000, 0), Config: core.Default()}
	d := bootedCopy(env, 2, 0)
	a := &m.Activate{Spec: d.spec, Epoch: &m.Epoch{Term: 5, Node: "n1"}, Reason: "migrate", FromNode: "n2"}
	st, _ := findEffect[core.Storage](d.Step(env, a))
	fx := d.Step(env, &m.StorageResult{Op: st.Req.Op, Site: "a", OpId: st.Req.OpId, Code: m.Code_CODE_BUSY})
	if _, armed := findEffect[core.SetTimer](fx); armed {
		t.Fatalf("a migration target retried on its own: %v", fx)
	}
	s, ok := findEffect[core.Send](fx)
	if act, isAct := s.Msg.(*m.Activated); !ok || !isAct || act.Code != m.Code_CODE_BUSY || s.To != core.SiteAddr("n2", "a") {
		t.Fatalf("effects %v, want Activated BUSY to the source", fx)
	}
}
