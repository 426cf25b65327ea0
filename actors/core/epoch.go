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

// NextEpoch is the epoch a node takes when it becomes master after seen, at
// the host time of the decision. The term is at least the time in
// milliseconds (a hybrid logical clock), so that of two decisions made apart
// (a minority's failover, a later migration elsewhere) the later one has the
// higher epoch even when neither knew of the other; it is also at least
// seen+1, so epochs only grow along any chain of decisions.
func NextEpoch(seen *messages.Epoch, node string, env *Env) *messages.Epoch {
	term := seen.GetTerm() + 1
	if now := env.NowMs(); now > 0 && uint64(now) > term {
		term = uint64(now)
	}
	return &messages.Epoch{Term: term, Node: node}
}

// TombstoneMark ends the node part of a tombstone epoch (the epoch of a
// site's deletion). Node names never contain '~', so no copy takes a
// tombstone for an epoch minted for itself, and any copy that meets one as
// a fence knows the site was deleted.
const TombstoneMark = "~deleted"

// TombstoneEpoch is the epoch of a site's deletion decided on node after
// seen: ordered like NextEpoch, marked as a tombstone.
func TombstoneEpoch(seen *messages.Epoch, node string, env *Env) *messages.Epoch {
	e := NextEpoch(seen, node, env)
	e.Node += TombstoneMark
	return e
}

// IsTombstone reports whether e is the epoch of a site's deletion.
func IsTombstone(e *messages.Epoch) bool { return strings.HasSuffix(e.GetNode(), TombstoneMark) }

// CreatedAfter reports whether a copy with this spec belongs to a history
// created after the tombstone (a site re-created after its deletion).
func CreatedAfter(spec *messages.SiteSpec, tombstone *messages.Epoch) bool {
	return EpochLess(tombstone, spec.GetCreated())
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
