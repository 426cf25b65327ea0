package host

import (
	"log/slog"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// scriptActor answers its first input with fixed effects and reports every
// timer it gets.
type scriptActor struct {
	first  []core.Effect
	fired  chan string
	booted bool
}

func (s *scriptActor) Step(env *core.Env, in proto.Message) []core.Effect {
	if t, ok := in.(*m.Timer); ok {
		s.fired <- t.Key
		return nil
	}
	if s.booted {
		return nil
	}
	s.booted = true
	return s.first
}

// TestAdapterTimers: a re-armed timer fires once, at its new delay; a
// cancelled one never fires.
func TestAdapterTimers(t *testing.T) {
	quiet := slog.New(slog.DiscardHandler)
	h := &Host{node: "n1", cfg: testConfig(), log: quiet,
		system: actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return quiet }))}
	defer h.system.Shutdown()
	sa := &scriptActor{fired: make(chan string, 8), first: []core.Effect{
		core.SetTimer{Key: "a", After: 30 * time.Millisecond},
		core.SetTimer{Key: "b", After: 30 * time.Millisecond},
		core.SetTimer{Key: "a", After: 150 * time.Millisecond},
		core.CancelTimer{Key: "b"},
	}}
	self := core.NodeAddr("n1")
	pid := h.system.Root.Spawn(actor.PropsFromProducer(func() actor.Actor {
		return &adapter{h: h, self: self, actor: sa, timers: map[string]*armedTimer{}}
	}))
	start := time.Now()
	h.system.Root.Send(pid, &delivery{to: self, msg: &m.Heartbeat{Node: "n2"}})
	select {
	case k := <-sa.fired:
		if k != "a" || time.Since(start) < 150*time.Millisecond {
			t.Fatalf("timer %q fired after %v, want a after 150ms", k, time.Since(start))
		}
	case <-time.After(2 * time.Second):
		t.Fatal("re-armed timer never fired")
	}
	select {
	case k := <-sa.fired:
		t.Fatalf("timer %q fired again or after cancel", k)
	case <-time.After(200 * time.Millisecond):
	}
}
