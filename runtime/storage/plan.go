package storage

import "fmt"

// PlanIncremental picks the base for sending the sender's newest history to
// a receiver: the newest snapshot both have with the same GUID. It returns
// the zero SnapName (full send) when the receiver has no snapshots at all,
// ErrNoCommonSnapshot when the receiver has snapshots but none in common, and
// ErrDiverged (with the base, so the caller can stash) when the receiver has
// snapshots after the common base. Both lists are oldest first.
func PlanIncremental(sender, receiver []Snapshot) (SnapName, error) {
	if len(receiver) == 0 {
		return SnapName{}, nil
	}
	senderGUIDs := make(map[uint64]string, len(sender))
	for _, s := range sender {
		senderGUIDs[s.GUID] = s.Name.String()
	}
	for i := len(receiver) - 1; i >= 0; i-- {
		r := receiver[i]
		if name, ok := senderGUIDs[r.GUID]; ok && name == r.Name.String() {
			if i != len(receiver)-1 {
				return r.Name, fmt.Errorf("%w: receiver has %d snapshot(s) after common base %s (newest %s)",
					ErrDiverged, len(receiver)-1-i, r.Name, receiver[len(receiver)-1].Name)
			}
			return r.Name, nil
		}
	}
	return SnapName{}, fmt.Errorf("%w: receiver has %d snapshot(s), none shared with the sender", ErrNoCommonSnapshot, len(receiver))
}
