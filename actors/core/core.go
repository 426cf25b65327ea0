// Package core holds what every deterministic actor shares: addresses, the
// environment a host hands to Step, and the effects Step returns.
//
// An actor is a plain state machine: Step(env, input) returns effects and never
// starts a goroutine, reads a clock, draws a random number or does I/O. Two
// hosts run the same actors: runtime/ on protoactor-go and sim/ on a seeded
// virtual world. Completions of effects come back as inputs.
package core

import (
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hybridcluster/hybridcluster/messages"
)

// Kind says which state machine an address names.
type Kind uint8

const (
	KindNode Kind = iota + 1
	KindSite
	KindDataset
	KindBalancer
	// KindClient names the client side of an entry node: responses to client
	// requests go there (the sim's clients, the runtime's protocol front ends).
	KindClient
)

var kindNames = [...]string{"?", "node", "site", "dataset", "balancer", "client"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", k)
}

// Address names one actor: its kind, the node that hosts it and, for site and
// dataset actors, the site.
type Address struct {
	Kind Kind
	Node string
	Site string
}

func (a Address) String() string {
	if a.Site != "" {
		return a.Kind.String() + "/" + a.Site + "@" + a.Node
	}
	return a.Kind.String() + "@" + a.Node
}

func NodeAddr(node string) Address       { return Address{Kind: KindNode, Node: node} }
func SiteAddr(node, site string) Address { return Address{Kind: KindSite, Node: node, Site: site} }
func DatasetAddr(node, site string) Address {
	return Address{Kind: KindDataset, Node: node, Site: site}
}
func BalancerAddr(node string) Address { return Address{Kind: KindBalancer, Node: node} }
func ClientAddr(node string) Address   { return Address{Kind: KindClient, Node: node} }

// Env is what a host hands to Step: the actor's own address, the time on the
// host's clock (virtual in the simulator) and the cluster configuration.
type Env struct {
	Self   Address
	Now    time.Time
	Config *Config
}

// NowMs is the host time in milliseconds, the unit messages carry.
func (e *Env) NowMs() int64 { return e.Now.UnixMilli() }

// Actor is one deterministic state machine.
type Actor interface {
	Step(env *Env, in proto.Message) []Effect
}

// Effect is something a Step asks its host to do.
type Effect interface{ effect() }

// Send delivers Msg to another actor, possibly on another node. Delivery is
// not guaranteed (the network may drop, delay, duplicate or reorder).
type Send struct {
	To  Address
	Msg proto.Message
}

// Broadcast delivers Msg to the node actor of every cluster member.
type Broadcast struct {
	Msg proto.Message
}

// SetTimer arms (or re-arms) the timer Key of this actor; a messages.Timer
// with that key arrives after the delay unless cancelled.
type SetTimer struct {
	Key   string
	After time.Duration
}

// CancelTimer disarms the timer Key if it is armed.
type CancelTimer struct {
	Key string
}

// Storage asks the node's storage to carry out a request; a
// messages.StorageResult with the same OpId comes back.
type Storage struct {
	Req *messages.StorageRequest
}

// Process starts or stops the site's processes (app, mariadbd) on this node.
type Process struct {
	Req *messages.ProcessRequest
}

// Serve hands a request to the site's backend on this node, the master at
// Epoch. The host answers the entry node (messages.SiteResponse).
type Serve struct {
	Req   *messages.SiteRequest
	Epoch *messages.Epoch
}

// Log is one structured log line (one per state transition), keys site, node,
// epoch, snapshot.
type Log struct {
	Level slog.Level
	Msg   string
	Attrs []any
}

func (Send) effect()        {}
func (Broadcast) effect()   {}
func (SetTimer) effect()    {}
func (CancelTimer) effect() {}
func (Storage) effect()     {}
func (Process) effect()     {}
func (Serve) effect()       {}
func (Log) effect()         {}

// RollbackTarget is the Target of the SyncDone by which a dataset tells its
// site actor that a rollback or a stash restore failed (the site resumes).
const RollbackTarget = "rollback"

// Info is a convenience for a Log effect at Info level.
func Info(msg string, attrs ...any) Log { return Log{Level: slog.LevelInfo, Msg: msg, Attrs: attrs} }

// Warn is a convenience for a Log effect at Warn level.
func Warn(msg string, attrs ...any) Log { return Log{Level: slog.LevelWarn, Msg: msg, Attrs: attrs} }
