package host

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/host/hostpb"
)

// Removed members: a member taken out of the cluster for good
// (m.RemoveNode, from the admin endpoint). The node actor stops hearing
// it; the host persists the name in its state directory, drops messages
// from and to it, and leaves it out of the member list at the next start.

// removedFile lists removed members, one per line, in the state dir.
const removedFile = "removed-members"

func (c *catalog) removed() ([]string, error) {
	data, err := os.ReadFile(filepath.Join(c.dir, removedFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("removed members: %w", err)
	}
	return strings.Fields(string(data)), nil
}

func (c *catalog) addRemoved(node string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	names, err := c.removed()
	if err != nil {
		return err
	}
	if slices.Contains(names, node) {
		return nil
	}
	names = append(names, node)
	slices.Sort(names)
	return writeAtomic(filepath.Join(c.dir, removedFile), []byte(strings.Join(names, "\n")+"\n"))
}

// isRemoved reports whether member was removed from the cluster.
func (h *Host) isRemoved(member string) bool {
	return (*h.removed.Load())[member]
}

// noteRemoved records a removal the node actor took in. A removal of
// this node itself (a member told it, see tellRemoved) is persisted, so
// that it refuses to start again under its name, and ends the node: a
// removed node must not go on serving what it holds.
func (h *Host) noteRemoved(member string) {
	if member == h.node {
		if err := h.catalog.addRemoved(member); err != nil {
			h.log.Error("this node's removal not persisted", "err", err)
		}
		h.log.Error("this node was removed from the cluster: stopping; give it a new name and an empty state directory to join again")
		h.removedOnce.Do(func() { close(h.removedCh) })
		return
	}
	h.mu.Lock() // one writer at a time; readers never wait
	old := *h.removed.Load()
	if old[member] {
		h.mu.Unlock()
		return
	}
	next := maps.Clone(old)
	next[member] = true
	h.removed.Store(&next)
	h.mu.Unlock()
	if err := h.catalog.addRemoved(member); err != nil {
		h.log.Error("removed member not persisted: it rejoins if this node restarts", "member", member, "err", err)
	}
	h.log.Info("member removed from the cluster", "member", member)
}

// tellRemovedEvery bounds how often a removed member that still talks is
// told that it was removed (once per interval per member; its messages
// are dropped either way).
const tellRemovedEvery = time.Second

// tellRemoved answers a message from a removed member with its removal,
// at most once per tellRemovedEvery: a node that was down when it was
// removed learns it when it comes back, and stops.
func (h *Host) tellRemoved(member string) {
	mb, ok := h.members[member]
	if !ok {
		return
	}
	h.mu.Lock()
	last := h.toldRemoved[member]
	now := time.Now()
	if now.Sub(last) < tellRemovedEvery {
		h.mu.Unlock()
		return
	}
	h.toldRemoved[member] = now
	h.mu.Unlock()
	payload, err := anypb.New(&m.RemoveNode{Node: member})
	if err != nil {
		return
	}
	h.system.Root.Send(actor.NewPID(mb.ActorAddr, routerName), &hostpb.Envelope{Kind: uint32(core.KindNode), Node: member,
		FromNode: h.node, Msg: payload, Token: h.internalToken})
}

// Removed is closed when this node learns that it was removed from the
// cluster (hcnode exits then).
func (h *Host) Removed() <-chan struct{} { return h.removedCh }
