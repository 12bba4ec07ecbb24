package tap

import (
	"errors"
	"net/http"
	"time"
)

// coalesce is how long a follower gathers events after writing some: the
// longest a line waits, while the process is busy, before it is sent.
const coalesce = 10 * time.Millisecond

// Handler returns the /tap endpoint: it streams the events the query's
// filter admits (see ParseFilter) as newline-delimited JSON, one event a
// line (Event.AppendJSON), until the client goes away or the bus closes.
// Lines are flushed as they come; while the process is busy, those that
// come within 10ms of a write go out together. A bad filter is 400, a full bus 429, each with the reason.
//
// The response headers go out at once, before any event: a client that
// has them is subscribed.
func Handler(b *Bus) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := ParseFilter(r.URL.Query())
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
			case <-t.C:
			}
		}
	})
}
