package storage

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"time"
)

// Every driver's stream starts with this envelope so a receiver can check,
// before applying anything, that the stream is of its kind and that its base
// is the snapshot the receiver has (same name and GUID).

const (
	streamMagic          = "HCSTREAM1\n"
	streamHeaderBytesMax = 64 << 10
)

// StreamSnap names one end of a stream.
type StreamSnap struct {
	Name    string    `json:"name"`
	GUID    uint64    `json:"guid"`
	Created time.Time `json:"created"`
}

// StreamHeader is the envelope at the start of every stream.
type StreamHeader struct {
	Kind string      `json:"kind"`
	From *StreamSnap `json:"from,omitempty"`
	To   StreamSnap  `json:"to"`
}

// WriteStreamHeader writes the envelope.
func WriteStreamHeader(w io.Writer, h StreamHeader) error {
	body, err := json.Marshal(h)
	if err != nil {
		return err
	}
	buf := make([]byte, 0, len(streamMagic)+4+len(body))
	buf = append(buf, streamMagic...)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(body)))
	buf = append(buf, body...)
	_, err = w.Write(buf)
	return err
}

// ReadStreamHeader reads and checks the envelope; the reader is left at the
// driver's payload.
func ReadStreamHeader(r *bufio.Reader, kind string) (StreamHeader, error) {
	var h StreamHeader
	magic := make([]byte, len(streamMagic)+4)
	if _, err := io.ReadFull(r, magic); err != nil {
		return h, fmt.Errorf("%w: reading header: %v", ErrBadStream, err)
	}
	if string(magic[:len(streamMagic)]) != streamMagic {
		return h, fmt.Errorf("%w: not a hybridcluster stream", ErrBadStream)
	}
	n := binary.BigEndian.Uint32(magic[len(streamMagic):])
	if n > streamHeaderBytesMax {
		return h, fmt.Errorf("%w: header of %d bytes exceeds %d", ErrBadStream, n, streamHeaderBytesMax)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return h, fmt.Errorf("%w: reading header: %v", ErrBadStream, err)
	}
	if err := json.Unmarshal(body, &h); err != nil {
		return h, fmt.Errorf("%w: header: %v", ErrBadStream, err)
	}
	if h.Kind != kind {
		return h, fmt.Errorf("%w: stream of a %q driver, this is %q", ErrBadStream, h.Kind, kind)
	}
	if _, err := ParseSnapName(h.To.Name); err != nil {
		return h, fmt.Errorf("%w: %v", ErrBadStream, err)
	}
	if h.From != nil {
		if _, err := ParseSnapName(h.From.Name); err != nil {
			return h, fmt.Errorf("%w: %v", ErrBadStream, err)
		}
	}
	return h, nil
}

// CheckStreamBase verifies a header against the base the caller expects and
// the receiver's snapshots (oldest first). It gives ErrNoCommonSnapshot for a
// missing or different base, ErrDiverged for snapshots after the base. A full
// stream is refused onto an existing dataset that has snapshots; onto one
// without (left by a Stash of everything) it passes here, and the driver
// must still check that the dataset's live tree is empty.
func CheckStreamBase(h StreamHeader, base SnapName, have []Snapshot, exists bool) error {
	if h.From == nil {
		if !base.IsZero() {
			return fmt.Errorf("%w: full stream but base %s expected", ErrBadStream, base)
		}
		if exists && len(have) > 0 {
			return fmt.Errorf("%w: full stream for a dataset that exists (%d snapshots); stash or destroy it first", ErrNoCommonSnapshot, len(have))
		}
		return nil
	}
	if base.IsZero() || base.String() != h.From.Name {
		return fmt.Errorf("%w: stream base is %s, caller expected %q", ErrBadStream, h.From.Name, base)
	}
	if !exists {
		return fmt.Errorf("%w: incremental stream from %s but the dataset does not exist", ErrNoCommonSnapshot, base)
	}
	for i, s := range have {
		if s.Name == base {
			if s.GUID != h.From.GUID {
				return fmt.Errorf("%w: %s here is a different snapshot (guid %d, stream base guid %d)", ErrNoCommonSnapshot, base, s.GUID, h.From.GUID)
			}
			if i != len(have)-1 {
				return fmt.Errorf("%w: %d snapshot(s) after base %s (newest %s)", ErrDiverged, len(have)-1-i, base, have[len(have)-1].Name)
			}
			return nil
		}
	}
	return fmt.Errorf("%w: base %s not found", ErrNoCommonSnapshot, base)
}

// CheckSafetyAfterBase refuses (ErrDiverged) an incremental stream onto a
// dataset that has a rollback's safety snapshot after the stream's base.
// names is every snapshot of the dataset, oldest first, safety snapshots
// included; CheckStreamBase sees only the listed ones. A safety snapshot
// after the base (a restored rollback stash brings one back) holds the live
// state of a rollback: receiving over it would roll it away (`zfs receive
// -F` destroys it), so the caller must stash it first like any divergence.
func CheckSafetyAfterBase(h StreamHeader, names []string) error {
	if h.From == nil {
		return nil
	}
	i := slices.Index(names, h.From.Name)
	if i < 0 {
		return nil // not this check's business: CheckStreamBase reports it
	}
	for _, name := range names[i+1:] {
		if IsSafetySnapshot(name) {
			return fmt.Errorf("%w: rollback safety snapshot %s after base %s", ErrDiverged, name, h.From.Name)
		}
	}
	return nil
}
