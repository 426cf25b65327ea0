package stream

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/storage"
)

// ServerConfig configures a Server.
type ServerConfig struct {
	// Driver receives the streams. Required.
	Driver storage.Driver
	// Token is the shared secret senders must present. Required.
	Token string
	// StreamsConcurrentMax bounds concurrent receives; 0 means
	// DefaultStreamsConcurrentMax. At the bound a sender gets 503.
	StreamsConcurrentMax int
	// Logger; nil discards. Each stream is logged at Debug; refusals and
	// failures at Warn.
	Logger *slog.Logger
}

// Server is the receiving end, an http.Handler for PathPrefix.
type Server struct {
	driver  storage.Driver
	token   [32]byte
	streams chan struct{}
	log     *slog.Logger
}

var _ http.Handler = (*Server)(nil)

// NewServer checks the configuration and makes a Server.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Driver == nil {
		return nil, errors.New("stream server: no driver")
	}
	if cfg.Token == "" {
		return nil, errors.New("stream server: empty token; node-to-node streams must be authenticated")
	}
	if cfg.StreamsConcurrentMax < 0 {
		return nil, errors.New("stream server: negative StreamsConcurrentMax")
	}
	n := cfg.StreamsConcurrentMax
	if n == 0 {
		n = DefaultStreamsConcurrentMax
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{driver: cfg.Driver, token: tokenDigest(cfg.Token), streams: make(chan struct{}, n), log: log}, nil
}

func (s *Server) fail(w http.ResponseWriter, err error) {
	code, status := codeOf(err)
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
	}
	writeJSON(w, status, errorBody{Code: code, Message: err.Error()})
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	auth, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || !tokenMatches(s.token, auth) {
		s.log.Warn("stream refused: bad credentials", "remote", r.RemoteAddr)
		s.fail(w, ErrUnauthorized)
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, PathPrefix+"sites/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	rawSite, action, ok := strings.Cut(rest, "/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	site, err := storage.ParseSite(rawSite)
	if err != nil {
		s.fail(w, err)
		return
	}
	switch {
	case action == "snapshots" && r.Method == http.MethodGet:
		s.state(w, r, site)
	case action == "receive" && r.Method == http.MethodPost:
		s.receive(w, r, site)
	default:
		http.Error(w, "not found", http.StatusNotFound)
	}
}

func (s *Server) state(w http.ResponseWriter, r *http.Request, site storage.Site) {
	ctx := r.Context()
	st := State{Snapshots: []SnapshotJSON{}}
	exists, err := s.driver.Exists(ctx, site)
	if err != nil {
		s.fail(w, err)
		return
	}
	if exists {
		st.Exists = true
		snaps, err := s.driver.ListSnapshots(ctx, site)
		if err != nil {
			s.fail(w, err)
			return
		}
		for _, sn := range snaps {
			st.Snapshots = append(st.Snapshots, toJSON(sn))
		}
		e, err := s.driver.Epoch(ctx, site)
		if err != nil {
			s.fail(w, err)
			return
		}
		st.Epoch = e.String()
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) receive(w http.ResponseWriter, r *http.Request, site storage.Site) {
	base, err := storage.ParseSnapNameOrEmpty(r.URL.Query().Get("base"))
	if err != nil {
		s.fail(w, err)
		return
	}
	epoch, err := storage.ParseEpoch(r.Header.Get(headerEpoch))
	if err != nil {
		s.fail(w, fmt.Errorf("%w: %v", storage.ErrBadStream, err))
		return
	}
	select {
	case s.streams <- struct{}{}:
		defer func() { <-s.streams }()
	default:
		s.log.Warn("stream refused: at concurrent stream bound", "site", site.String(), "bound", cap(s.streams))
		s.fail(w, fmt.Errorf("%w (%d streams)", ErrTooManyStreams, cap(s.streams)))
		return
	}
	started := time.Now()
	counted := &countingReader{r: r.Body}
	snap, err := s.driver.Receive(r.Context(), site, epoch, base, counted)
	if err != nil {
		s.log.Warn("stream failed", "site", site.String(), "base", base.String(), "epoch", epoch.String(), "bytes", counted.n, "err", err)
		s.fail(w, err)
		return
	}
	s.log.Debug("stream received", "site", site.String(), "snapshot", snap.Name.String(), "base", base.String(),
		"epoch", epoch.String(), "bytes", counted.n, "duration", time.Since(started))
	writeJSON(w, http.StatusOK, toJSON(snap))
}

type countingReader struct {
	r interface{ Read([]byte) (int, error) }
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
