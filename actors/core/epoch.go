package core

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/hybridcluster/hybridcluster/messages"
)

// CompareEpoch orders epochs by term, then node; nil is the smallest.
func CompareEpoch(a, b *messages.Epoch) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return -1
	case b == nil:
		return 1
	case a.Term != b.Term:
		if a.Term < b.Term {
			return -1
		}
		return 1
	default:
		return strings.Compare(a.Node, b.Node)
	}
}

// EpochLess reports a < b.
func EpochLess(a, b *messages.Epoch) bool { return CompareEpoch(a, b) < 0 }

// NextEpoch is the epoch a node takes when it becomes master after seen.
func NextEpoch(seen *messages.Epoch, node string) *messages.Epoch {
	return &messages.Epoch{Term: seen.GetTerm() + 1, Node: node}
}

// MaxEpoch returns the larger of a and b.
func MaxEpoch(a, b *messages.Epoch) *messages.Epoch {
	if EpochLess(a, b) {
		return b
	}
	return a
}

// EpochString formats an epoch for logs and transcripts.
func EpochString(e *messages.Epoch) string {
	if e == nil {
		return "-"
	}
	return fmt.Sprintf("%d:%s", e.Term, e.Node)
}

// SnapshotName builds the name of a snapshot: unique across histories because
// the epoch names the only writer.
func SnapshotName(e *messages.Epoch, seq uint64) string {
	b := make([]byte, 0, 24+len(e.GetNode()))
	b = append(b, 'e')
	b = strconv.AppendUint(b, e.GetTerm(), 10)
	b = append(b, '-')
	b = append(b, e.GetNode()...)
	b = append(b, "-s"...)
	b = strconv.AppendUint(b, seq, 10)
	return string(b)
}

// Newer reports whether snapshot a is newer history than b: taken later, ties
// broken by epoch then sequence.
func Newer(a, b *messages.SnapshotRef) bool {
	if b == nil {
		return a != nil
	}
	if a == nil {
		return false
	}
	if a.TakenMs != b.TakenMs {
		return a.TakenMs > b.TakenMs
	}
	if c := CompareEpoch(a.Epoch, b.Epoch); c != 0 {
		return c > 0
	}
	return a.Seq > b.Seq
}
