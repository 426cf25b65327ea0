package storage

import (
	"fmt"
	"strconv"
	"strings"
)

// Epoch is a master epoch: a term number and the node that became master in
// it, ordered by (Term, Node). Datasets remember the highest epoch they have
// seen and refuse streams from lower ones (fencing).
type Epoch struct {
	Term uint64
	Node string
}

// Compare returns -1, 0 or +1 as e is lower than, equal to or higher than o.
func (e Epoch) Compare(o Epoch) int {
	switch {
	case e.Term < o.Term:
		return -1
	case e.Term > o.Term:
		return 1
	}
	return strings.Compare(e.Node, o.Node)
}

// Less reports e < o.
func (e Epoch) Less(o Epoch) bool { return e.Compare(o) < 0 }

// IsZero reports whether the epoch is the zero epoch (nothing seen yet).
func (e Epoch) IsZero() bool { return e.Term == 0 && e.Node == "" }

// String is the persisted form "%020d:%s"; zero-padding makes the string
// order match the epoch order for equal-length node names.
func (e Epoch) String() string { return fmt.Sprintf("%020d:%s", e.Term, e.Node) }

// ParseEpoch parses the persisted form. The empty string and "-" (an unset
// ZFS user property) give the zero epoch.
func ParseEpoch(s string) (Epoch, error) {
	if s == "" || s == "-" {
		return Epoch{}, nil
	}
	termText, node, ok := strings.Cut(s, ":")
	if !ok {
		return Epoch{}, fmt.Errorf("parse epoch %q: missing ':'", s)
	}
	term, err := strconv.ParseUint(termText, 10, 64)
	if err != nil {
		return Epoch{}, fmt.Errorf("parse epoch %q: %w", s, err)
	}
	if strings.ContainsAny(node, " \t\r\n\x00") {
		return Epoch{}, fmt.Errorf("parse epoch %q: node contains white space", s)
	}
	return Epoch{Term: term, Node: node}, nil
}

// CheckFence returns ErrFenced when a stream of epoch stream may not be
// applied to a dataset that has seen epoch seen.
func CheckFence(seen, stream Epoch) error {
	if stream.Less(seen) {
		return fmt.Errorf("%w: stream epoch %s < dataset epoch %s", ErrFenced, stream, seen)
	}
	return nil
}
