package resilience_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// backend is a loopback HTTP server whose handler sees the 1-based number
// of the request it serves.
type backend struct {
	*httptest.Server
	hits atomic.Int64
}

func newBackend(t testing.TB, h func(n int64, w http.ResponseWriter, r *http.Request)) *backend {
	t.Helper()
	b := &backend{}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h(b.hits.Add(1), w, r)
	}))
	t.Cleanup(b.Close)
	return b
}

// answer answers every request with code.
func answer(code int) func(int64, http.ResponseWriter, *http.Request) {
	return func(_ int64, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }
}

// failFirst answers the first n requests with code and the rest with 200.
func failFirst(n int64, code int) func(int64, http.ResponseWriter, *http.Request) {
	return func(i int64, w http.ResponseWriter, _ *http.Request) {
		if i <= n {
			w.WriteHeader(code)
			return
		}
		io.WriteString(w, "ok")
	}
}

// reset closes the connection without answering.
func reset(_ int64, w http.ResponseWriter, _ *http.Request) {
	c, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0) // an RST rather than a FIN
	}
	c.Close()
}

// newTransport returns a transport without keep-alives, so that net/http's
// own retry of requests on reused connections never adds attempts the
// tests do not count.
func newTransport(t testing.TB) *http.Transport {
	tr := &http.Transport{DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// sleeps records backoff waits instead of sleeping.
type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *sleeps) waits() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.d...)
}

// roundTripFunc adapts a function to http.RoundTripper.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
