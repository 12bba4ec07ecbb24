package mesh

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// limitEvery bounds how often one line is written again: the same
// message at the same level with the same attributes (a flapping
// endpoint's ejection, a breaker opening and closing, the same caller
// denied on the same path) is written at most once per interval, and the
// next line written for it carries "suppressed", the count not written
// since.
const limitEvery = 10 * time.Second

// Bounds on the keys a limitedHandler remembers: past limitSweepAt,
// keys older than the interval are forgotten; past limitMaxKeys (a flood
// of distinct lines), new keys are written without being remembered, so
// that memory stays bounded and no line is lost for want of room.
const (
	limitSweepAt = 1024
	limitMaxKeys = 4096
)

// limitedHandler is a slog.Handler rate-limiting repeated lines by key
// (level, message, attributes; the trace and span IDs, added beneath it,
// are not part of the key). It is safe for concurrent use; handlers
// derived by WithAttrs and WithGroup share their parent's memory of keys.
type limitedHandler struct {
	next   slog.Handler
	prefix string // the attributes and groups of WithAttrs and WithGroup
	st     *limitState
}

type limitState struct {
	every time.Duration
	now   func() time.Time

	mu   sync.Mutex
	seen map[string]*limitEntry
}

type limitEntry struct {
	last       time.Time
	suppressed int
}

func newLimitedHandler(next slog.Handler, every time.Duration, now func() time.Time) *limitedHandler {
	if now == nil {
		now = time.Now
	}
	return &limitedHandler{next: next, st: &limitState{every: every, now: now, seen: map[string]*limitEntry{}}}
}

func (h *limitedHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h *limitedHandler) Handle(ctx context.Context, r slog.Record) error {
	n, ok := h.st.admit(h.key(r))
	if !ok {
		return nil
	}
	if n > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed", n))
	}
	return h.next.Handle(ctx, r)
}

// admit reports whether a line with key may be written now, and how many
// were suppressed since the last one written.
func (s *limitState) admit(key string) (suppressed int, ok bool) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.seen[key]
	switch {
	case e != nil && now.Sub(e.last) < s.every:
		e.suppressed++
		return 0, false
	case e != nil:
		n := e.suppressed
		e.last, e.suppressed = now, 0
		return n, true
	}
	if len(s.seen) >= limitSweepAt {
		for k, e := range s.seen {
			if now.Sub(e.last) >= s.every {
				delete(s.seen, k)
			}
		}
	}
	if len(s.seen) < limitMaxKeys {
		s.seen[key] = &limitEntry{last: now}
	}
	return 0, true
}

func (h *limitedHandler) key(r slog.Record) string {
	var b strings.Builder
	b.WriteString(r.Level.String())
	b.WriteByte(0)
	b.WriteString(r.Message)
	b.WriteByte(0)
	b.WriteString(h.prefix)
	r.Attrs(func(a slog.Attr) bool {
		writeAttr(&b, a)
		return true
	})
	return b.String()
}

func writeAttr(b *strings.Builder, a slog.Attr) {
	b.WriteString(a.Key)
	b.WriteByte('=')
	b.WriteString(a.Value.Resolve().String())
	b.WriteByte(0)
}

func (h *limitedHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.prefix)
	for _, a := range attrs {
		writeAttr(&b, a)
	}
	return &limitedHandler{next: h.next.WithAttrs(attrs), prefix: b.String(), st: h.st}
}

func (h *limitedHandler) WithGroup(name string) slog.Handler {
	return &limitedHandler{next: h.next.WithGroup(name), prefix: h.prefix + name + ".", st: h.st}
}
