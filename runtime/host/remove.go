package host

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
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
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.removed[member]
}

// noteRemoved records a removal the node actor took in.
func (h *Host) noteRemoved(member string) {
	if member == h.node {
		return
	}
	h.mu.Lock()
	already := h.removed[member]
	h.removed[member] = true
	h.mu.Unlock()
	if already {
		return
	}
	if err := h.catalog.addRemoved(member); err != nil {
		h.log.Error("removed member not persisted: it rejoins if this node restarts", "member", member, "err", err)
	}
	h.log.Info("member removed from the cluster", "member", member)
}
