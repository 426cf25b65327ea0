package host

import (
	"context"
	"crypto/subtle"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/hybridcluster/hybridcluster/actors/balancer"
	"github.com/hybridcluster/hybridcluster/actors/core"
	"github.com/hybridcluster/hybridcluster/actors/dataset"
	"github.com/hybridcluster/hybridcluster/actors/node"
	"github.com/hybridcluster/hybridcluster/actors/site"
	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/host/hostpb"
)

// delivery is one input for the actor at to, inside this node (never
// serialized: local messages travel as pointers, as in the simulator).
type delivery struct {
	to  core.Address
	msg proto.Message
}

// timerFired is a timer's expiry; it counts only if gen is still the
// timer's generation (a re-arm or a cancel makes it stale).
type timerFired struct {
	key string
	gen uint64
}

// actorName is the protoactor name of the actor at a, under the router.
func actorName(a core.Address) string {
	switch a.Kind {
	case core.KindSite, core.KindDataset:
		return a.Kind.String() + "/" + a.Site
	}
	return a.Kind.String()
}

// router is the one actor of a node that other nodes address: it spawns
// each deterministic actor on its first input and forwards to it.
type router struct {
	h        *Host
	children map[core.Address]*actor.PID
}

func newRouter(h *Host) actor.Actor {
	return &router{h: h, children: map[core.Address]*actor.PID{}}
}

func (r *router) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *delivery:
		r.forward(ctx, msg)
	case *hostpb.Envelope:
		if subtle.ConstantTimeCompare([]byte(msg.Token), []byte(r.h.internalToken)) != 1 {
			r.h.drops.Add(1)
			r.h.log.Warn("envelope without the node token dropped", "from", msg.FromNode)
			return
		}
		if r.h.isRemoved(msg.FromNode) {
			r.h.drops.Add(1)
			r.h.tellRemoved(msg.FromNode) // not heard; told, so that it stops
			return
		}
		d, err := r.unwrap(msg)
		if err != nil {
			r.h.drops.Add(1)
			r.h.log.Warn("bad envelope dropped", "node", r.h.node, "from", msg.FromNode, "err", err)
			return
		}
		if d.to.Kind == core.KindClient {
			// An answer for this node's client side (an admin query's
			// view, sent by a balancer or dataset elsewhere).
			r.h.clientResponse(d.msg)
			return
		}
		r.forward(ctx, d)
	case *actor.Terminated:
		for a, pid := range r.children {
			if pid.Equal(msg.Who) {
				delete(r.children, a)
			}
		}
	}
}

func (r *router) unwrap(e *hostpb.Envelope) (*delivery, error) {
	if e.Node != r.h.node {
		return nil, fmt.Errorf("envelope for node %q reached %q", e.Node, r.h.node)
	}
	kind := core.Kind(e.Kind)
	switch kind {
	case core.KindNode, core.KindBalancer, core.KindClient:
	case core.KindSite, core.KindDataset:
		if e.Site == "" {
			return nil, fmt.Errorf("envelope for a %s without a site", kind)
		}
	default:
		return nil, fmt.Errorf("envelope for kind %d", e.Kind)
	}
	msg, err := e.Msg.UnmarshalNew()
	if err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	return &delivery{to: core.Address{Kind: kind, Node: e.Node, Site: e.Site}, msg: msg}, nil
}

func (r *router) forward(ctx actor.Context, d *delivery) {
	pid := r.children[d.to]
	if pid == nil {
		if len(r.children) >= actorsMax {
			r.h.drops.Add(1)
			r.h.log.Error("actor bound reached: message dropped", "node", r.h.node, "to", d.to.String(), "bound", actorsMax)
			return
		}
		a, err := newActor(r.h.node, d.to)
		if err != nil {
			r.h.drops.Add(1)
			r.h.log.Warn("message for no actor kind dropped", "node", r.h.node, "err", err)
			return
		}
		props := actor.PropsFromProducer(func() actor.Actor { return &adapter{h: r.h, self: d.to, actor: a, timers: map[string]*armedTimer{}} },
			actor.WithMailbox(actor.BoundedDropping(mailboxSize(d.to))))
		pid, err = ctx.SpawnNamed(props, actorName(d.to))
		if err != nil {
			r.h.drops.Add(1)
			r.h.log.Error("spawn failed", "node", r.h.node, "to", d.to.String(), "err", err)
			return
		}
		r.children[d.to] = pid
	}
	ctx.Send(pid, d)
}

// mailboxSize is the mailbox bound of the actor at a.
func mailboxSize(a core.Address) int {
	if a.Kind == core.KindSite || a.Kind == core.KindDataset {
		return siteMailboxMessagesMax
	}
	return mailboxMessagesMax
}

func newActor(nodeName string, a core.Address) (core.Actor, error) {
	switch a.Kind {
	case core.KindNode:
		return node.New(nodeName), nil
	case core.KindBalancer:
		return balancer.New(nodeName), nil
	case core.KindSite:
		return site.New(nodeName, a.Site), nil
	case core.KindDataset:
		return dataset.New(nodeName, a.Site), nil
	}
	return nil, fmt.Errorf("no actor kind for %s", a)
}

type armedTimer struct {
	gen   uint64
	timer *time.Timer
}

// adapter is the one generic bridge from protoactor's Receive to Step: it
// hands each input to the deterministic actor with the real clock and
// carries out the effects.
type adapter struct {
	h      *Host
	self   core.Address
	actor  core.Actor
	pid    *actor.PID
	timers map[string]*armedTimer
	gen    uint64
}

func (a *adapter) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		a.pid = ctx.Self()
	case *delivery:
		a.step(msg.msg)
	case *m.AdminQuery:
		// A request by identity (Host.Ask through protoactor's cluster):
		// the answer goes back to its sender. It carries no token (the
		// cluster layer sends it as it is), so only the read-only site
		// view is taken this way; mounts and the rest go through
		// authenticated envelopes.
		if ctx.Sender() == nil {
			return
		}
		if msg.Kind != m.AdminQueryKind_ADMIN_QUERY_SITE {
			ctx.Respond(&m.AdminView{Node: a.h.node, Code: m.Code_CODE_INVALID, Detail: "only site views are answered by identity"})
			return
		}
		if q := a.h.beginAsk(ctx, msg); q != nil {
			a.step(q)
		}
	case *timerFired:
		t := a.timers[msg.key]
		if t == nil || t.gen != msg.gen {
			return // cancelled or re-armed since
		}
		delete(a.timers, msg.key)
		a.step(&m.Timer{Key: msg.key})
	case *actor.Stopping:
		for _, t := range a.timers {
			t.timer.Stop()
		}
		clear(a.timers)
	}
}

func (a *adapter) step(in proto.Message) {
	if a.self.Kind == core.KindDataset {
		a.h.noteDatasetInput(a.self.Site, in)
	}
	env := &core.Env{Self: a.self, Now: time.Now(), Config: a.h.cfg}
	var fx []core.Effect
	func() {
		defer func() {
			if r := recover(); r != nil {
				a.h.panics.Add(1)
				a.h.log.Error("actor panicked: input dropped", "node", a.h.node, "actor", a.self.String(),
					"input", string(proto.MessageName(in)), "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				fx = nil
			}
		}()
		fx = a.actor.Step(env, in)
	}()
	a.h.observe(a.self, a.actor, in)
	for _, e := range fx {
		a.execute(e)
	}
}

func (a *adapter) execute(e core.Effect) {
	h := a.h
	switch e := e.(type) {
	case core.Send:
		h.send(e.To, e.Msg)
	case core.Broadcast:
		if ru, ok := e.Msg.(*m.RouteUpdate); ok && a.self.Kind == core.KindSite {
			// The gate follows the local site actor at once, before its
			// next effect (a pause's Sync) is carried out.
			h.gates.setRoute(ru.Site, ru.Master == h.node && (Route{Master: ru.Master, Phase: ru.Phase}).Serving(), ru.Epoch)
		}
		for _, n := range h.names {
			h.send(core.NodeAddr(n), e.Msg)
		}
	case core.SetTimer:
		if t := a.timers[e.Key]; t != nil {
			t.timer.Stop()
		} else if len(a.timers) >= timersPerActorMax {
			h.drops.Add(1)
			h.log.Error("timer bound reached: timer not armed", "node", h.node, "actor", a.self.String(), "key", e.Key, "bound", timersPerActorMax)
			return
		}
		a.gen++
		fired := &timerFired{key: e.Key, gen: a.gen}
		pid := a.pid
		a.timers[e.Key] = &armedTimer{gen: a.gen, timer: time.AfterFunc(e.After, func() {
			if !h.stopped.Load() {
				h.system.Root.Send(pid, fired)
			}
		})}
	case core.CancelTimer:
		if t := a.timers[e.Key]; t != nil {
			t.timer.Stop()
			delete(a.timers, e.Key)
		}
	case core.Storage:
		h.store.submit(a.self, e.Req)
	case core.Process:
		if !e.Req.Start {
			h.gates.setStarted(e.Req.Site, false)
		}
		h.store.submitProcess(e.Req)
	case core.Serve:
		// No backend yet: every request the master serves is answered OK.
		h.send(core.NodeAddr(e.Req.EntryNode), &m.SiteResponse{Site: e.Req.Site, RequestId: e.Req.RequestId,
			Code: m.Code_CODE_OK, Master: h.node, Epoch: e.Epoch, WriteId: e.Req.WriteId})
	case core.Log:
		h.log.Log(context.Background(), e.Level, e.Msg, append([]any{"actor", a.self.String()}, e.Attrs...)...)
	default:
		panic(fmt.Sprintf("host %s: unknown effect %T from %s", h.node, e, a.self))
	}
}
