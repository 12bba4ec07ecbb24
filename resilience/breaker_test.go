package resilience_test

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/resilience"
)

// fakeTime is a settable clock.
type fakeTime struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeTime() *fakeTime { return &fakeTime{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (f *fakeTime) now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.t }

func (f *fakeTime) advance(d time.Duration) { f.mu.Lock(); f.t = f.t.Add(d); f.mu.Unlock() }

func TestBreakerTransportLifecycle(t *testing.T) {
	var healthy bool
	be := newBackend(t, func(_ int64, w http.ResponseWriter, _ *http.Request) {
		if !healthy {
			w.WriteHeader(500)
		}
	})
	clk := newFakeTime()
	var transitions []string
	br := resilience.NewBreaker(resilience.WithBreakerNow(resilience.BreakerSettings{
		ConsecutiveFailures: 3,
		OpenTimeout:         time.Minute,
		HalfOpenProbes:      2,
		OnStateChange:       func(from, to resilience.State) { transitions = append(transitions, from.String()+">"+to.String()) },
	}, clk.now))
	rt := resilience.NewBreakerTransport(newTransport(t), br)
	get := func() (int, error) {
		req, _ := http.NewRequest("GET", be.URL, nil)
		resp, err := rt.RoundTrip(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}

	for i := range 3 {
		if code, err := get(); code != 500 || err != nil {
			t.Fatalf("request %d: got %d, %v; want 500", i+1, code, err)
		}
	}
	if _, err := get(); !errors.Is(err, resilience.ErrCircuitOpen) {
		t.Fatalf("after 3 failures: got %v, want ErrCircuitOpen", err)
	}
	if be.hits.Load() != 3 {
		t.Errorf("backend hits: got %d, want 3 (an open breaker sends nothing)", be.hits.Load())
	}

	clk.advance(time.Minute)
	if got := br.State(); got != resilience.StateHalfOpen {
		t.Fatalf("after the cool-down: got %v, want half-open", got)
	}
	// A failed probe opens the breaker again.
	if code, _ := get(); code != 500 {
		t.Fatalf("probe: got %d, want 500", code)
	}
	if got := br.State(); got != resilience.StateOpen {
		t.Fatalf("after a failed probe: got %v, want open", got)
	}

	clk.advance(time.Minute)
	healthy = true
	for i := range 2 {
		if code, err := get(); code != 200 || err != nil {
			t.Fatalf("probe %d: got %d, %v; want 200", i+1, code, err)
		}
	}
	if got := br.State(); got != resilience.StateClosed {
		t.Errorf("after 2 good probes: got %v, want closed", got)
	}
	want := []string{"closed>open", "open>half-open", "half-open>open", "open>half-open", "half-open>closed"}
	if len(transitions) != len(want) {
		t.Fatalf("transitions: got %v, want %v", transitions, want)
	}
	for i := range want {
		if transitions[i] != want[i] {
			t.Errorf("transition %d: got %s, want %s", i, transitions[i], want[i])
		}
	}
}

func TestBreakerProbeQuotaAndGenerations(t *testing.T) {
	clk := newFakeTime()
	br := resilience.NewBreaker(resilience.WithBreakerNow(resilience.BreakerSettings{ConsecutiveFailures: 1, OpenTimeout: time.Second}, clk.now))

	stale, err := br.Allow() // admitted while closed, reports late
	if err != nil {
		t.Fatal(err)
	}
	done, _ := br.Allow()
	done(balancer.GatewayError) // opens
	clk.advance(time.Second)

	probe, err := br.Allow()
	if err != nil {
		t.Fatalf("first probe: %v", err)
	}
	if _, err := br.Allow(); !errors.Is(err, resilience.ErrCircuitOpen) {
		t.Errorf("second probe over a quota of 1: got %v, want ErrCircuitOpen", err)
	}
	stale(balancer.Reset) // from an earlier generation: ignored
	if got := br.State(); got != resilience.StateHalfOpen {
		t.Fatalf("after a stale failure: got %v, want half-open", got)
	}
	probe(balancer.Canceled) // says nothing: frees the probe slot
	probe2, err := br.Allow()
	if err != nil {
		t.Fatalf("probe after a canceled one: %v", err)
	}
	probe2(balancer.Success)
	if got := br.State(); got != resilience.StateClosed {
		t.Errorf("after a good probe: got %v, want closed", got)
	}
}

func TestBreakerFailureRate(t *testing.T) {
	clk := newFakeTime()
	br := resilience.NewBreaker(resilience.WithBreakerNow(resilience.BreakerSettings{
		ConsecutiveFailures: -1, FailureRate: 0.5, MinRequests: 10, Window: 10 * time.Second,
	}, clk.now))
	report := func(o balancer.Outcome) {
		done, err := br.Allow()
		if err != nil {
			t.Fatalf("Allow: %v", err)
		}
		done(o)
	}
	// Old failures leave the window.
	for range 9 {
		report(balancer.ServerError)
	}
	clk.advance(11 * time.Second)
	for i := range 9 { // 40% failures: below the rate
		if i%5 < 2 {
			report(balancer.ServerError)
		} else {
			report(balancer.Success)
		}
		clk.advance(100 * time.Millisecond)
	}
	report(balancer.Success)
	if got := br.State(); got != resilience.StateClosed {
		t.Fatalf("10 requests, 4 failures in the window: got %v, want closed", got)
	}
	report(balancer.ServerError)
	if got := br.State(); got != resilience.StateClosed {
		t.Fatalf("11 requests, 5 failures in the window: got %v, want closed", got)
	}
	report(balancer.ServerError) // 12 requests, 6 failures: 50%
	if got := br.State(); got != resilience.StateOpen {
		t.Errorf("over the failure rate: got %v, want open", got)
	}
}

func TestBreakerUnaryClientInterceptor(t *testing.T) {
	clk := newFakeTime()
	br := resilience.NewBreaker(resilience.WithBreakerNow(resilience.BreakerSettings{ConsecutiveFailures: 2}, clk.now))
	be, client := newHealthBackend(t, func(context.Context, int64) error {
		return status.Error(codes.Unavailable, "draining")
	}, nil, grpc.WithUnaryInterceptor(resilience.BreakerUnaryClientInterceptor(br)))
	for range 2 {
		if _, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unavailable {
			t.Fatalf("Check: got %v, want UNAVAILABLE from the server", err)
		}
	}
	_, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{})
	if !errors.Is(err, resilience.ErrCircuitOpen) || status.Code(err) != codes.Unavailable {
		t.Errorf("Check on an open breaker: got %v (code %v), want ErrCircuitOpen as UNAVAILABLE", err, status.Code(err))
	}
	if be.hits.Load() != 2 {
		t.Errorf("server calls: got %d, want 2", be.hits.Load())
	}
}

func TestThresholdsOverflowFailsFast(t *testing.T) {
	tests := []struct {
		name   string
		limits resilience.Limits
		conns  int // the base transport's MaxConnsPerHost
	}{
		{"max requests", resilience.Limits{MaxRequests: 2}, 0},
		{"max pending", resilience.Limits{MaxPendingRequests: 1}, 1}, // one in flight, one waiting for the connection
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A backend of its own per case, whose handlers return when
			// released or when their request is cancelled, so no case's
			// parked requests or hit count leak into the next.
			release := make(chan struct{})
			defer close(release)
			be := newBackend(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
				select {
				case <-release:
				case <-r.Context().Done():
				case <-time.After(10 * time.Second):
				}
			})
			th := resilience.NewThresholds(tt.limits)
			base := newTransport(t)
			base.MaxConnsPerHost = tt.conns
			rt := resilience.NewThresholdsTransport(base, th)
			var wg sync.WaitGroup
			ctx, cancel := context.WithCancel(context.Background())
			defer func() { cancel(); wg.Wait() }()
			for i := range 2 {
				wg.Go(func() {
					req, _ := http.NewRequestWithContext(ctx, "GET", be.URL, nil)
					if resp, err := rt.RoundTrip(req); err == nil {
						resp.Body.Close()
					}
				})
				// The first request holds the connection before the second
				// starts waiting for it (bounded wait).
				for j := 0; j < 1000 && (th.Requests() < int64(i+1) || be.hits.Load() < 1); j++ {
					time.Sleep(5 * time.Millisecond)
				}
			}
			// Wait (bounded) until both requests occupy their slots.
			full := func() bool {
				if tt.limits.MaxRequests > 0 {
					return th.Requests() == tt.limits.MaxRequests
				}
				return th.Pending() == tt.limits.MaxPendingRequests && be.hits.Load() >= 1
			}
			for i := 0; i < 1000 && !full(); i++ {
				time.Sleep(5 * time.Millisecond)
			}
			if !full() {
				t.Fatalf("slots never filled: %d requests, %d pending", th.Requests(), th.Pending())
			}
			req, _ := http.NewRequest("GET", be.URL, nil)
			start := time.Now()
			_, err := rt.RoundTrip(req)
			took := time.Since(start)
			if !errors.Is(err, resilience.ErrOverflow) {
				t.Fatalf("third request: got %v, want ErrOverflow", err)
			}
			if took > 10*time.Millisecond {
				t.Errorf("overflow took %v, want under 10ms (fail fast, no queueing)", took)
			}
			if code, reason, _ := resilience.HTTPStatus(err); code != 503 || reason != "overflow" {
				t.Errorf("HTTPStatus: got %d %q, want 503 \"overflow\"", code, reason)
			}
		})
	}
}

// An open breaker beneath the retries stops them: the refused attempt is
// not a retriable failure, and it never reaches the backend.
func TestBreakerBeneathRetries(t *testing.T) {
	be := newBackend(t, answer(503))
	br := resilience.NewBreaker(resilience.WithBreakerNow(resilience.BreakerSettings{ConsecutiveFailures: 2}, newFakeTime().now))
	var s sleeps
	rt := resilience.NewRetryTransport(resilience.NewBreakerTransport(newTransport(t), br),
		resilience.RetryPolicy{NumRetries: 4}, resilience.WithTestClock(nil, s.sleep, nil))
	req, _ := http.NewRequest("GET", be.URL, nil)
	_, err := rt.RoundTrip(req)
	if !errors.Is(err, resilience.ErrCircuitOpen) {
		t.Errorf("error: got %v, want ErrCircuitOpen", err)
	}
	if got := be.hits.Load(); got != 2 {
		t.Errorf("backend hits: got %d, want 2", got)
	}
	if got := len(s.waits()); got != 2 {
		t.Errorf("backoff waits: got %d, want 2 (no retry after the refusal)", got)
	}
}

func TestThresholdsUnaryClientInterceptor(t *testing.T) {
	th := resilience.NewThresholds(resilience.Limits{MaxRequests: 1})
	release := make(chan struct{})
	be, client := newHealthBackend(t, func(ctx context.Context, n int64) error {
		if n == 1 {
			select {
			case <-release:
			case <-ctx.Done():
			case <-time.After(10 * time.Second):
			}
		}
		return nil
	}, nil, grpc.WithUnaryInterceptor(resilience.ThresholdsUnaryClientInterceptor(th)))
	errc := make(chan error, 1)
	go func() {
		_, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{})
		errc <- err
	}()
	for i := 0; i < 1000 && be.hits.Load() < 1; i++ { // bounded wait for the first call to hold the slot
		time.Sleep(5 * time.Millisecond)
	}
	_, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{})
	if !errors.Is(err, resilience.ErrOverflow) || status.Code(err) != codes.Unavailable {
		t.Errorf("second call: got %v (code %v), want ErrOverflow as UNAVAILABLE", err, status.Code(err))
	}
	close(release)
	if err := <-errc; err != nil {
		t.Errorf("first call: %v", err)
	}
}
