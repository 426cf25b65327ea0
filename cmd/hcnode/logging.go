package main

import (
	"context"
	"log/slog"
)

// onceHandler keeps each attribute once per line. hcnode's logger carries
// node= for every component; the host and the actors add node= to their
// own lines too (they also run under loggers that do not carry it, in
// tests and the simulator), so without this every such line said node=
// twice (and a JSON line had a duplicate key). An attribute is dropped
// only when the same key with an equal value is already on the line; a
// different value under the same key is information and stays.
type onceHandler struct {
	inner slog.Handler
	// fixed are the top-level attributes added with WithAttrs.
	fixed map[string]slog.Value
	// grouped: WithGroup was called, so later keys are nested and cannot
	// repeat the fixed ones; records pass through.
	grouped bool
}

func newOnceHandler(inner slog.Handler) *onceHandler {
	return &onceHandler{inner: inner, fixed: map[string]slog.Value{}}
}

func (h *onceHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.inner.Enabled(ctx, level)
}

func (h *onceHandler) Handle(ctx context.Context, r slog.Record) error {
	if h.grouped || !h.repeats(r) {
		return h.inner.Handle(ctx, r)
	}
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	seen := map[string]slog.Value{}
	r.Attrs(func(a slog.Attr) bool {
		if h.seen(seen, a) {
			return true
		}
		seen[a.Key] = a.Value
		out.AddAttrs(a)
		return true
	})
	return h.inner.Handle(ctx, out)
}

// repeats reports whether the record holds an attribute seen before it on
// the line (the common case, none, costs no allocation).
func (h *onceHandler) repeats(r slog.Record) bool {
	found := false
	var keys []string
	r.Attrs(func(a slog.Attr) bool {
		if v, ok := h.fixed[a.Key]; ok && v.Equal(a.Value) {
			found = true
			return false
		}
		for _, k := range keys {
			if k == a.Key {
				found = true
				return false
			}
		}
		keys = append(keys, a.Key)
		return true
	})
	return found
}

func (h *onceHandler) seen(inRecord map[string]slog.Value, a slog.Attr) bool {
	if v, ok := h.fixed[a.Key]; ok && v.Equal(a.Value) {
		return true
	}
	v, ok := inRecord[a.Key]
	return ok && v.Equal(a.Value)
}

func (h *onceHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	next := &onceHandler{inner: h.inner.WithAttrs(attrs), fixed: h.fixed, grouped: h.grouped}
	if !h.grouped {
		next.fixed = make(map[string]slog.Value, len(h.fixed)+len(attrs))
		for k, v := range h.fixed {
			next.fixed[k] = v
		}
		for _, a := range attrs {
			next.fixed[a.Key] = a.Value
		}
	}
	return next
}

func (h *onceHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &onceHandler{inner: h.inner.WithGroup(name), fixed: h.fixed, grouped: true}
}
