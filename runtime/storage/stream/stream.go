// Package stream moves snapshots between nodes over HTTP: the sending node's
// Client pipes its driver's Send into a POST whose body the receiving node's
// Server feeds to its driver's Receive. Requests carry a shared bearer token
// (compared in constant time). The server bounds concurrent streams and
// answers 503 with Retry-After at the bound. A cut or cancelled stream leaves
// the receiver at its previous snapshot, because Receive is atomic.
//
// Endpoints (under PathPrefix):
//
//	GET  sites/<site>/snapshots          the receiver's epoch and snapshots
//	POST sites/<site>/receive?base=<snap> body: a driver stream; header X-HC-Epoch
package stream

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/storage"
)

const (
	// PathPrefix is where the endpoints live.
	PathPrefix = "/v1/storage/"
	// DefaultStreamsConcurrentMax bounds concurrent receives on one node
	// when the configuration does not say.
	DefaultStreamsConcurrentMax = 4
	// retryAfterSeconds is what a refused (busy) sender is told to wait.
	retryAfterSeconds = 1
	headerEpoch       = "X-HC-Epoch"
	// errorBodyBytesMax bounds how much of an error response is read.
	errorBodyBytesMax = 64 << 10
)

var (
	// ErrTooManyStreams: the receiver is at its concurrent stream bound. It
	// also matches storage.ErrBusy.
	ErrTooManyStreams = errors.New("stream: receiver at its concurrent stream limit")
	// ErrUnauthorized: the shared secret was missing or wrong.
	ErrUnauthorized = errors.New("stream: unauthorized")
)

// Error codes on the wire, both ways.
var errorCodes = []struct {
	code   string
	err    error
	status int
}{
	{"fenced", storage.ErrFenced, http.StatusConflict},
	{"diverged", storage.ErrDiverged, http.StatusConflict},
	{"no_common_snapshot", storage.ErrNoCommonSnapshot, http.StatusConflict},
	{"not_replica", storage.ErrNotReplica, http.StatusConflict},
	{"exists", storage.ErrExists, http.StatusConflict},
	{"out_of_space", storage.ErrOutOfSpace, http.StatusInsufficientStorage},
	{"no_dataset", storage.ErrNoDataset, http.StatusNotFound},
	{"invalid_name", storage.ErrInvalidName, http.StatusBadRequest},
	{"bad_stream", storage.ErrBadStream, http.StatusBadRequest},
	{"too_many_streams", ErrTooManyStreams, http.StatusServiceUnavailable},
	{"busy", storage.ErrBusy, http.StatusServiceUnavailable},
	{"unauthorized", ErrUnauthorized, http.StatusUnauthorized},
}

type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func codeOf(err error) (string, int) {
	for _, c := range errorCodes {
		if errors.Is(err, c.err) {
			return c.code, c.status
		}
	}
	return "internal", http.StatusInternalServerError
}

// RemoteError is an error the receiving node reported.
type RemoteError struct {
	Status  int
	Code    string
	Message string
	kind    error
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("receiver: %s (HTTP %d, %s)", e.Message, e.Status, e.Code)
}

// Unwrap gives the typed error for the code, so errors.Is works across the wire.
func (e *RemoteError) Unwrap() []error {
	if e.kind == nil {
		return nil
	}
	if e.kind == ErrTooManyStreams {
		return []error{ErrTooManyStreams, storage.ErrBusy}
	}
	return []error{e.kind}
}

func remoteError(status int, body errorBody) *RemoteError {
	e := &RemoteError{Status: status, Code: body.Code, Message: body.Message}
	for _, c := range errorCodes {
		if c.code == body.Code {
			e.kind = c.err
		}
	}
	if e.Message == "" {
		e.Message = http.StatusText(status)
	}
	return e
}

func tokenDigest(token string) [sha256.Size]byte { return sha256.Sum256([]byte(token)) }

// tokenMatches compares digests in constant time (digests also hide the length).
func tokenMatches(want [sha256.Size]byte, got string) bool {
	g := tokenDigest(got)
	return subtle.ConstantTimeCompare(want[:], g[:]) == 1
}

// SnapshotJSON is a snapshot on the wire.
type SnapshotJSON struct {
	Name    string    `json:"name"`
	GUID    uint64    `json:"guid"`
	Created time.Time `json:"created"`
}

// State is the receiver's view of a site.
type State struct {
	Exists    bool           `json:"exists"`
	Epoch     string         `json:"epoch"`
	ReadOnly  bool           `json:"readonly"`
	Snapshots []SnapshotJSON `json:"snapshots"`
}

func toJSON(s storage.Snapshot) SnapshotJSON {
	return SnapshotJSON{Name: s.Name.String(), GUID: s.GUID, Created: s.Created}
}

func fromJSON(s SnapshotJSON) (storage.Snapshot, error) {
	name, err := storage.ParseSnapName(s.Name)
	if err != nil {
		return storage.Snapshot{}, err
	}
	return storage.Snapshot{Name: name, GUID: s.GUID, Created: s.Created}, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
