package resilience_test

import (
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/resilience"
)

func TestRateBudgetBoundsExtraLoad(t *testing.T) {
	const requests = 100
	tests := []struct {
		name      string
		floor     float64
		wantExtra int64 // the most retries the budget allows
	}{
		{"ratio only", -1, requests / 5},
		{"with Linkerd's floor", 1, requests/5 + 10}, // 1/s over a 10 s window
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := newBackend(t, answer(503))
			now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			budget := resilience.NewRateBudget(0.2, tt.floor, 10*time.Second)
			resilience.SetRateBudgetNow(budget, func() time.Time { return now })
			var s sleeps
			rt := resilience.NewRetryTransport(newTransport(t), resilience.RetryPolicy{NumRetries: 4},
				resilience.WithBudget(budget), resilience.WithTestClock(nil, s.sleep, nil))
			for range requests {
				req, _ := http.NewRequest("GET", be.URL, nil)
				resp, err := rt.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode != 503 {
					t.Fatalf("status: got %d, want the last attempt's 503", resp.StatusCode)
				}
				resp.Body.Close()
			}
			extra := be.hits.Load() - requests
			if extra > tt.wantExtra || extra <= 0 {
				t.Errorf("retries sent: got %d, want between 1 and %d", extra, tt.wantExtra)
			}
			if budget.Exhausted() == 0 {
				t.Error("Exhausted: got 0, want refusals counted")
			}
		})
	}
}

func TestRateBudgetWindowSlides(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b := resilience.NewRateBudget(0.5, -1, 10*time.Second)
	resilience.SetRateBudgetNow(b, func() time.Time { return now })
	for range 4 {
		b.RequestStarted()
	}
	first := b.TryRetry()
	second := b.TryRetry()
	if !first || !second {
		t.Fatal("TryRetry: got false, want two retries for four requests at ratio 0.5")
	}
	if b.TryRetry() {
		t.Fatal("third TryRetry: got true, want false")
	}
	now = now.Add(11 * time.Second) // everything has left the window
	b.RequestStarted()
	b.RequestStarted()
	if !b.TryRetry() {
		t.Error("TryRetry after the window moved: got false, want true")
	}
}

func TestRetryBudgetExhaustedError(t *testing.T) {
	be := newBackend(t, reset)
	budget := resilience.NewRateBudget(0.01, -1, 0)
	var s sleeps
	rt := resilience.NewRetryTransport(newTransport(t), resilience.RetryPolicy{RetryOn: resilience.RetryReset},
		resilience.WithBudget(budget), resilience.WithTestClock(nil, s.sleep, nil))
	req, _ := http.NewRequest("GET", be.URL, nil)
	_, err := rt.RoundTrip(req)
	if !errors.Is(err, resilience.ErrBudgetExhausted) {
		t.Errorf("error: got %v, want ErrBudgetExhausted", err)
	}
	if got := resilience.HTTPOutcome(nil, err).String(); got != "reset" {
		t.Errorf("HTTPOutcome of the error: got %s, want reset (the last attempt's error is wrapped)", got)
	}
	if be.hits.Load() != 1 {
		t.Errorf("backend hits: got %d, want 1", be.hits.Load())
	}
}

// TestConcurrencyBudget holds retries at the backend and checks that no
// more than Envoy's limit are ever in flight while the rest are refused.
func TestConcurrencyBudget(t *testing.T) {
	const clients = 20 // active requests; 20% of them is 4 retries
	var (
		arrived    sync.WaitGroup
		releaseRet = make(chan struct{})
		inFlight   atomic.Int64
		maxFlight  atomic.Int64
	)
	arrived.Add(clients)
	firstDone := make(chan struct{})
	go func() { arrived.Wait(); close(firstDone) }()
	be := newBackend(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		if n <= clients {
			arrived.Done()
			select { // every first attempt is in flight at once
			case <-firstDone:
			case <-time.After(10 * time.Second):
			}
		} else {
			select { // retries stay in flight until the test has looked
			case <-releaseRet:
			case <-time.After(10 * time.Second):
			}
		}
		w.WriteHeader(503)
	})
	budget := resilience.NewConcurrencyBudget(0.2, 3)
	base := newTransport(t)
	// Count retries in flight as the transport beneath the retries sees them.
	inner := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		retry := resilience.AttemptsFromContext(r.Context()).Count() > 1
		if retry {
			n := inFlight.Add(1)
			for m := maxFlight.Load(); n > m && !maxFlight.CompareAndSwap(m, n); m = maxFlight.Load() {
			}
			defer inFlight.Add(-1)
		}
		return base.RoundTrip(r)
	})
	var s sleeps
	rt := resilience.NewRetryTransport(inner, resilience.RetryPolicy{NumRetries: 2},
		resilience.WithBudget(budget), resilience.WithTestClock(nil, s.sleep, nil))

	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			req, _ := http.NewRequest("GET", be.URL, nil)
			resp, err := rt.RoundTrip(req)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
	}
	// Wait (bounded) until the requests that found no retry slot gave up.
	for i := 0; i < 500 && budget.Exhausted() < clients-4; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	exhausted := budget.Exhausted()
	close(releaseRet)
	wg.Wait()
	if got := maxFlight.Load(); got > 4 {
		t.Errorf("retries in flight: got at most %d, want at most 4", got)
	}
	if exhausted < clients-4 {
		t.Errorf("refused retries while 4 were in flight: got %d, want at least %d", exhausted, clients-4)
	}
}

func TestThresholdsMaxRetries(t *testing.T) {
	th := resilience.NewThresholds(resilience.Limits{MaxRetries: 1})
	if err := th.AcquireRetry(); err != nil { // another request's retry
		t.Fatal(err)
	}
	defer th.ReleaseRetry()
	be := newBackend(t, answer(503))
	var s sleeps
	rt := resilience.NewRetryTransport(newTransport(t), resilience.RetryPolicy{}, resilience.WithThresholds(th),
		resilience.WithTestClock(nil, s.sleep, nil))
	req, _ := http.NewRequest("GET", be.URL, nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if be.hits.Load() != 1 || th.Overflows() != 1 {
		t.Errorf("got %d hits and %d overflows, want 1 and 1", be.hits.Load(), th.Overflows())
	}
}

// TestRateBudgetConcurrent starts requests and asks for retries from many
// goroutines at once, across slot boundaries: the budget never grants more
// retries than its ratio of the requests counted, whatever the
// interleaving, and loses no request within a slot.
func TestRateBudgetConcurrent(t *testing.T) {
	var clock atomic.Int64
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b := resilience.NewRateBudget(0.25, -1, 10*time.Second)
	resilience.SetRateBudgetNow(b, func() time.Time { return start.Add(time.Duration(clock.Load())) })
	const workers, perWorker = 8, 2000
	var granted atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				b.RequestStarted()
				if i%2 == 0 && b.TryRetry() {
					granted.Add(1)
				}
				if w == 0 && i%500 == 0 {
					clock.Add(int64(300 * time.Millisecond)) // a new 1 s slot now and then, all within the window
				}
			}
		})
	}
	wg.Wait()
	requests := int64(workers * perWorker)
	if g := granted.Load(); g > requests/4 || g == 0 {
		t.Errorf("retries granted: %d of %d requests, want between 1 and %d", g, requests, requests/4)
	}
	// The window still holds every request: with all of them counted, a
	// quarter of them in retries is the most it allows.
	extra := int64(0)
	for b.TryRetry() {
		extra++
	}
	if total := granted.Load() + extra; total != requests/4 {
		t.Errorf("retries the window allowed in all: %d, want %d (a request was lost or counted twice)", total, requests/4)
	}
}
