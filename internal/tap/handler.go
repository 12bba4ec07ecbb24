package tap

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// maxDuration bounds duration=: a follow meant to end does so within the
// hour; to follow for longer, leave duration out.
const maxDuration = time.Hour

// coalesce is how long a follower gathers events after writing some: the
// longest a line waits, while the process is busy, before it is sent.
const coalesce = 10 * time.Millisecond

// Handler returns the /tap endpoint: it streams the events the query's
// filter admits (see ParseFilter) as newline-delimited JSON, one event a
// line (Event.AppendJSON), until the client goes away or the bus closes,
// or, with duration=30s in the query (a Go duration, at most an hour),
// once that long has passed: a client that cannot leave on its own, such
// as a headless browser rendering the admin page, follows for a while and
// gets a complete response. Lines are flushed as they come; while the
// process is busy, those that come within 10ms of a write go out
// together. A bad filter or duration is 400, a full bus 429, each with
// the reason.
//
// The response headers go out at once, before any event: a client that
// has them is subscribed.
func Handler(b *Bus) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		d, err := parseDuration(q)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		delete(q, "duration") // the stream's, not the filter's
		f, err := ParseFilter(q)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rc := http.NewResponseController(w)
		s, err := b.Subscribe(f)
		switch {
		case errors.Is(err, ErrTooManySubscribers):
			w.Header().Set("Retry-After", "5")
			http.Error(w, err.Error(), http.StatusTooManyRequests)
			return
		case err != nil:
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		defer s.Close()
		h := w.Header()
		h.Set("Content-Type", "application/x-ndjson")
		h.Set("Cache-Control", "no-store")
		// Proxies in front of the admin port must not hold lines back.
		h.Set("X-Accel-Buffering", "no")
		w.WriteHeader(http.StatusOK)
		if err := rc.Flush(); err != nil {
			return
		}
		// end fires once the duration asked for has passed; nil (never)
		// without one.
		var end <-chan time.Time
		if d > 0 {
			et := time.NewTimer(d)
			defer et.Stop()
			end = et.C
		}
		var buf []byte
		t := time.NewTimer(0)
		defer t.Stop()
		for {
			// Wait for an event; then write every event waiting, one
			// line each, and flush them together.
			var e *Event
			select {
			case <-r.Context().Done():
				return
			case <-s.Done():
				return
			case <-end:
				return
			case e = <-s.Events():
			}
			buf = buf[:0]
			for n := len(s.Events()); ; n-- {
				line := *e
				line.Dropped = s.TakeDropped()
				buf = append(line.AppendJSON(buf), '\n')
				if n <= 0 {
					break
				}
				e = <-s.Events()
			}
			if _, err := w.Write(buf); err != nil || rc.Flush() != nil {
				return
			}
			// Under load, gather the next events for a moment rather
			// than waking for each: a follower then costs a busy
			// process a few wake-ups a second, not one a request. The
			// buffer holds what comes meanwhile.
			t.Reset(coalesce)
			select {
			case <-r.Context().Done():
				return
			case <-s.Done():
				return
			case <-end:
				return
			case <-t.C:
			}
		}
	})
}

// parseDuration reads duration= from a /tap query: 0 when absent, else a
// Go duration in (0, maxDuration].
func parseDuration(q url.Values) (time.Duration, error) {
	vs, ok := q["duration"]
	if !ok {
		return 0, nil
	}
	if len(vs) != 1 {
		return 0, fmt.Errorf("tap: duration given %d times: give it once", len(vs))
	}
	d, err := time.ParseDuration(strings.TrimSpace(vs[0]))
	if err != nil || d <= 0 || d > maxDuration {
		return 0, fmt.Errorf("tap: duration=%q: want a Go duration above 0 and at most 1h, such as 30s or 5m; leave it out to follow until the client leaves", vs[0])
	}
	return d, nil
}
