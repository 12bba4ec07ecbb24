package tap

import (
	"encoding/json"
	"errors"
	"net/http"
)

// Handler returns the /tap endpoint: it streams the events the query's
// filter admits (see ParseFilter) as newline-delimited JSON, one event a
// line, flushed as each one comes, until the client goes away or the bus
// closes. A bad filter is 400, a full bus 429, each with the reason.
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
		enc := json.NewEncoder(w)
		for {
			select {
			case <-r.Context().Done():
				return
			case <-s.Done():
				return
			case e := <-s.Events():
				line := *e
				line.Dropped = s.TakeDropped()
				if line.Attempts == nil {
					line.Attempts = []Attempt{}
				}
				if enc.Encode(&line) != nil || rc.Flush() != nil {
					return
				}
			}
		}
	})
}
