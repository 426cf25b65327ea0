package admin

import "time"

// SetEventLimits changes the event stream bound and ping interval (tests).
func (s *Server) SetEventLimits(maxStreams int, ping time.Duration) {
	s.maxStreams, s.ping = int64(maxStreams), ping
}

// OpenStreams is the number of event streams open now.
func (s *Server) OpenStreams() int64 { return s.streams.Load() }
