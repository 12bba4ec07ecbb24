package resilience_test

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/weftmesh/weft/resilience"
)

// What a response body keeps alive (a max-requests slot, the attempt's
// context) is released when the body is read to EOF, even if the caller
// never closes it, as net/http lets a caller do.
func TestResponseStateReleasedAtEOF(t *testing.T) {
	b := newBackend(t, func(_ int64, w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello") })
	tr := newTransport(t)
	var attemptCtx context.Context
	spy := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		attemptCtx = r.Context()
		return tr.RoundTrip(r)
	})
	th := resilience.NewThresholds(resilience.Limits{MaxRequests: 1})
	tests := []struct {
		name string
		rt   http.RoundTripper
		// released reports whether the request's state is released.
		released func() bool
	}{
		{"thresholds", resilience.NewThresholdsTransport(tr, th), func() bool { return th.Requests() == 0 }},
		{"retry per-try timeout", resilience.NewRetryTransport(spy, resilience.RetryPolicy{NumRetries: 1, PerTryTimeout: time.Minute, Timeout: -1}),
			func() bool { return attemptCtx.Err() != nil }},
		{"retry route timeout", resilience.NewRetryTransport(spy, resilience.RetryPolicy{NumRetries: 1, Timeout: time.Minute}),
			func() bool { return attemptCtx.Err() != nil }},
		{"hedge", resilience.NewHedgeTransport(spy, resilience.HedgePolicy{Delay: time.Minute}),
			func() bool { return attemptCtx.Err() != nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A caller's context that lives on: what it holds must not.
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", b.URL, nil)
			resp, err := tt.rt.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			if tt.released() {
				t.Fatal("released before the body was read")
			}
			if got, err := io.ReadAll(resp.Body); err != nil || string(got) != "hello" {
				t.Fatalf("body %q, %v; want hello", got, err)
			}
			if !tt.released() {
				t.Error("the body was read to EOF and the request's state is still held; want it released at EOF")
			}
			resp.Body.Close() // and a later Close releases nothing twice
			if th.Requests() < 0 {
				t.Errorf("requests in flight = %d after Close, want 0", th.Requests())
			}
		})
	}
}
