package resilience_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/resilience"
)

func mustParseRetryOn(t *testing.T, s string) resilience.RetryOn {
	t.Helper()
	r, err := resilience.ParseRetryOn(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRetryTransportStatusAndResets(t *testing.T) {
	tests := []struct {
		name     string
		handler  func(int64, http.ResponseWriter, *http.Request)
		policy   resilience.RetryPolicy
		method   string
		header   http.Header
		wantHits int64
		wantCode int // 0: an error is expected
	}{
		{"503 default retries once", answer(503), resilience.RetryPolicy{}, "GET", nil, 2, 503},
		{"500 is not a gateway error", answer(500), resilience.RetryPolicy{}, "GET", nil, 1, 500},
		{"5xx three retries", answer(500), resilience.RetryPolicy{RetryOn: resilience.Retry5xx, NumRetries: 3}, "GET", nil, 4, 500},
		{"attempts capped at five", answer(502), resilience.RetryPolicy{NumRetries: 10}, "GET", nil, 5, 502},
		{"negative NumRetries disables", answer(503), resilience.RetryPolicy{NumRetries: -1}, "GET", nil, 1, 503},
		{"404 is not retried", answer(404), resilience.RetryPolicy{RetryOn: resilience.Retry5xx}, "GET", nil, 1, 404},
		{"retriable-4xx is 409", answer(409), resilience.RetryPolicy{RetryOn: resilience.RetryRetriable4xx}, "GET", nil, 2, 409},
		{"retriable status codes", answer(429), resilience.RetryPolicy{RetryOn: resilience.RetryRetriableStatusCodes, RetriableStatusCodes: []int{429}}, "GET", nil, 2, 429},
		{"recovers after a failure", failFirst(2, 503), resilience.RetryPolicy{NumRetries: 2}, "GET", nil, 3, 200},
		{"POST not retried", answer(503), resilience.RetryPolicy{}, "POST", nil, 1, 503},
		{"POST with Idempotency-Key", answer(503), resilience.RetryPolicy{}, "POST", http.Header{"Idempotency-Key": {"k1"}}, 2, 503},
		{"POST with RetryNonIdempotent", answer(503), resilience.RetryPolicy{RetryNonIdempotent: true}, "POST", nil, 2, 503},
		{"PUT and DELETE are idempotent", answer(503), resilience.RetryPolicy{}, "DELETE", nil, 2, 503},
		{"caller header cannot widen policy", answer(500), resilience.RetryPolicy{}, "GET", http.Header{"X-Envoy-Retry-On": {"5xx"}, "X-Envoy-Max-Retries": {"4"}}, 1, 500},
		{"reset retried", reset, resilience.RetryPolicy{RetryOn: resilience.RetryReset, NumRetries: 2}, "GET", nil, 3, 0},
		{"reset not retried on gateway-error", reset, resilience.RetryPolicy{RetryOn: resilience.RetryGatewayError}, "GET", nil, 1, 0},
		{"5xx covers resets", reset, resilience.RetryPolicy{RetryOn: resilience.Retry5xx}, "GET", nil, 2, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := newBackend(t, tt.handler)
			var s sleeps
			rt := resilience.NewRetryTransport(newTransport(t), tt.policy, resilience.WithTestClock(nil, s.sleep, nil))
			req, _ := http.NewRequest(tt.method, be.URL, nil)
			for k, v := range tt.header {
				req.Header[k] = v
			}
			resp, err := rt.RoundTrip(req)
			if tt.wantCode == 0 {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("RoundTrip: got status %d, want an error", resp.StatusCode)
				}
			} else {
				if err != nil {
					t.Fatalf("RoundTrip: got error %v, want status %d", err, tt.wantCode)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tt.wantCode {
					t.Errorf("status: got %d, want %d", resp.StatusCode, tt.wantCode)
				}
			}
			if got := be.hits.Load(); got != tt.wantHits {
				t.Errorf("backend hits: got %d, want %d", got, tt.wantHits)
			}
			if got, want := len(s.waits()), int(tt.wantHits-1); got != want {
				t.Errorf("backoff waits: got %d, want %d", got, want)
			}
		})
	}
}

func TestRetryTransportConnectFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: every dial is refused

	var dials int
	base := newTransport(t)
	inner := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		dials++
		return base.RoundTrip(r)
	})
	var s sleeps
	rt := resilience.NewRetryTransport(inner, resilience.RetryPolicy{RetryOn: resilience.RetryConnectFailure, NumRetries: 2},
		resilience.WithTestClock(nil, s.sleep, nil))
	req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
	_, err = rt.RoundTrip(req)
	if err == nil {
		t.Fatal("RoundTrip: got nil error, want a connect failure")
	}
	if got := resilience.HTTPOutcome(nil, err).String(); got != "connect_failure" {
		t.Errorf("HTTPOutcome: got %s, want connect_failure (err %v)", got, err)
	}
	if dials != 3 {
		t.Errorf("attempts: got %d, want 3", dials)
	}
}

// opaqueReader hides its type so that http.NewRequest sets no GetBody.
type opaqueReader struct{ r io.Reader }

func (o *opaqueReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func TestRetryTransportReplaysBody(t *testing.T) {
	small := strings.Repeat("weft ", 1000) // 5000 bytes
	tests := []struct {
		name     string
		body     func() io.Reader
		limit    int64
		wantHits int64
	}{
		{"GetBody", func() io.Reader { return strings.NewReader(small) }, 0, 3},
		{"buffered", func() io.Reader { return &opaqueReader{strings.NewReader(small)} }, 0, 3},
		{"larger than buffer sent once", func() io.Reader { return &opaqueReader{strings.NewReader(small)} }, 1024, 1},
		{"buffering disabled", func() io.Reader { return &opaqueReader{strings.NewReader(small)} }, -1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var bad []string
			be := newBackend(t, func(n int64, w http.ResponseWriter, r *http.Request) {
				got, err := io.ReadAll(r.Body)
				if err != nil || string(got) != small {
					bad = append(bad, r.Method)
				}
				failFirst(2, 503)(n, w, r)
			})
			var s sleeps
			rt := resilience.NewRetryTransport(newTransport(t), resilience.RetryPolicy{NumRetries: 2},
				resilience.WithTestClock(nil, s.sleep, nil), resilience.WithBodyBufferLimit(tt.limit))
			req, _ := http.NewRequest("PUT", be.URL, tt.body())
			resp, err := rt.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := be.hits.Load(); got != tt.wantHits {
				t.Errorf("backend hits: got %d, want %d", got, tt.wantHits)
			}
			if len(bad) != 0 {
				t.Errorf("attempts with a damaged body: got %d, want 0", len(bad))
			}
		})
	}
}

// trackedBody records whether it was read to the end and closed.
type trackedBody struct {
	io.Reader
	closed bool
	eof    bool
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.Reader.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *trackedBody) Close() error { b.closed = true; return nil }

func TestRetryTransportDrainsAndDoesNotMutate(t *testing.T) {
	var bodies []*trackedBody
	inner := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		for i, b := range bodies {
			if !b.closed || !b.eof {
				t.Errorf("before attempt %d: body %d closed=%v drained=%v, want both", len(bodies)+1, i+1, b.closed, b.eof)
			}
		}
		b := &trackedBody{Reader: strings.NewReader("failure detail")}
		bodies = append(bodies, b)
		return &http.Response{StatusCode: 503, Body: b, Header: http.Header{}, Request: r}, nil
	})
	var s sleeps
	rt := resilience.NewRetryTransport(inner, resilience.RetryPolicy{NumRetries: 2}, resilience.WithTestClock(nil, s.sleep, nil))

	type callerKey struct{}
	ctx := context.WithValue(context.Background(), callerKey{}, "caller")
	req, _ := http.NewRequestWithContext(ctx, "PUT", "http://orders/", &opaqueReader{strings.NewReader("payload")})
	before := *req
	beforeHeader := req.Header.Clone()
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(bodies) != 3 {
		t.Fatalf("attempts: got %d, want 3", len(bodies))
	}
	if req.Context() != ctx || req.Body != before.Body || req.GetBody != nil || req.ContentLength != before.ContentLength || req.URL != before.URL {
		t.Error("the caller's request was modified")
	}
	if !slices.Equal(req.Header.Values("x"), beforeHeader.Values("x")) || len(req.Header) != len(beforeHeader) {
		t.Errorf("headers: got %v, want %v", req.Header, beforeHeader)
	}
}

func TestRetryTransportBackoff(t *testing.T) {
	tests := []struct {
		name   string
		policy resilience.RetryPolicy
		jitter func(int64) int64
		want   []time.Duration
	}{
		{"upper bound doubles to Envoy's cap", resilience.RetryPolicy{NumRetries: 4}, func(n int64) int64 { return n - 1 },
			[]time.Duration{25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond}},
		{"custom intervals", resilience.RetryPolicy{NumRetries: 4, BaseInterval: 100 * time.Millisecond, MaxInterval: 300 * time.Millisecond}, func(n int64) int64 { return n - 1 },
			[]time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond, 300 * time.Millisecond}},
		{"full jitter reaches zero", resilience.RetryPolicy{NumRetries: 2}, func(int64) int64 { return 0 },
			[]time.Duration{0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := newBackend(t, answer(503))
			var s sleeps
			rt := resilience.NewRetryTransport(newTransport(t), tt.policy, resilience.WithTestClock(nil, s.sleep, tt.jitter))
			req, _ := http.NewRequest("GET", be.URL, nil)
			resp, err := rt.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := s.waits(); !slices.Equal(got, tt.want) {
				t.Errorf("waits: got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestFullJitterBounds(t *testing.T) {
	be := newBackend(t, answer(503))
	var s sleeps
	rt := resilience.NewRetryTransport(newTransport(t), resilience.RetryPolicy{NumRetries: 4}, resilience.WithTestClock(nil, s.sleep, nil))
	for range 20 {
		req, _ := http.NewRequest("GET", be.URL, nil)
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	caps := []time.Duration{25, 50, 100, 200}
	for i, d := range s.waits() {
		if c := caps[i%4] * time.Millisecond; d < 0 || d > c {
			t.Errorf("wait %d: got %v, want within [0, %v]", i, d, c)
		}
	}
}

func TestRetryTransportRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name       string
		retryAfter string
		timeout    time.Duration
		wantHits   int64
		wantWaits  []time.Duration
	}{
		{"seconds", "2", 0, 2, []time.Duration{2 * time.Second}},
		{"HTTP date", now.Add(3 * time.Second).Format(http.TimeFormat), 0, 2, []time.Duration{3 * time.Second}},
		{"past date is no wait", now.Add(-time.Hour).Format(http.TimeFormat), 0, 2, []time.Duration{0}},
		{"longer than the route timeout", "30", 0, 1, nil},
		{"within a longer route timeout", "30", time.Minute, 2, []time.Duration{30 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := newBackend(t, func(n int64, w http.ResponseWriter, r *http.Request) {
				if n == 1 {
					w.Header().Set("Retry-After", tt.retryAfter)
				}
				failFirst(1, 503)(n, w, r)
			})
			var s sleeps
			rt := resilience.NewRetryTransport(newTransport(t), resilience.RetryPolicy{Timeout: tt.timeout},
				resilience.WithTestClock(func() time.Time { return now }, s.sleep, nil))
			req, _ := http.NewRequest("GET", be.URL, nil)
			resp, err := rt.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := be.hits.Load(); got != tt.wantHits {
				t.Errorf("backend hits: got %d, want %d", got, tt.wantHits)
			}
			if got := s.waits(); !slices.Equal(got, tt.wantWaits) {
				t.Errorf("waits: got %v, want %v", got, tt.wantWaits)
			}
		})
	}
}

func TestRetryTransportPerTryTimeout(t *testing.T) {
	be := newBackend(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			// Hang until the client gives up on this attempt (bounded).
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
			return
		}
		io.WriteString(w, "ok")
	})
	var s sleeps
	// Generous retries so that a loaded machine that misses one per-try
	// deadline on the fast path still gets an answer.
	rt := resilience.NewRetryTransport(newTransport(t), resilience.RetryPolicy{PerTryTimeout: 100 * time.Millisecond, NumRetries: 4},
		resilience.WithTestClock(nil, s.sleep, nil))
	req, _ := http.NewRequest("GET", be.URL, nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "ok" || be.hits.Load() < 2 {
		t.Errorf("got body %q after %d hits, want \"ok\" after at least 2", body, be.hits.Load())
	}
}

func TestRetryTransportPerTryTimeoutExhausted(t *testing.T) {
	be := newBackend(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	var s sleeps
	base := newTransport(t)
	var tries atomic.Int64
	inner := roundTripFunc(func(r *http.Request) (*http.Response, error) { tries.Add(1); return base.RoundTrip(r) })
	rt := resilience.NewRetryTransport(inner, resilience.RetryPolicy{PerTryTimeout: 20 * time.Millisecond},
		resilience.WithTestClock(nil, s.sleep, nil))
	req, _ := http.NewRequest("GET", be.URL, nil)
	_, err := rt.RoundTrip(req)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error: got %v, want one wrapping context.DeadlineExceeded", err)
	}
	if got := tries.Load(); got != 2 {
		t.Errorf("attempts: got %d, want 2", got)
	}
}

func TestRetryTransportRouteTimeout(t *testing.T) {
	be := newBackend(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	rt := resilience.NewRetryTransport(newTransport(t), resilience.RetryPolicy{Timeout: 50 * time.Millisecond, RetryOn: resilience.Retry5xx})
	req, _ := http.NewRequest("GET", be.URL, nil)
	_, err := rt.RoundTrip(req)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error: got %v, want context.DeadlineExceeded", err)
	}
	if got := be.hits.Load(); got != 1 {
		t.Errorf("backend hits: got %d, want 1 (the route timeout ends the request)", got)
	}
}

func TestRetryTransportRouteTimeoutCoversBody(t *testing.T) {
	be := newBackend(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first part ")
		http.NewResponseController(w).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	rt := resilience.NewRetryTransport(newTransport(t), resilience.RetryPolicy{Timeout: 100 * time.Millisecond})
	req, _ := http.NewRequest("GET", be.URL, nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.ReadAll(resp.Body); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("reading body: got %v, want context.DeadlineExceeded", err)
	}
}

func TestRetryTransportCallerCancelStopsBackoff(t *testing.T) {
	be := newBackend(t, answer(503))
	ctx, cancel := context.WithCancel(context.Background())
	sleep := func(ctx context.Context, d time.Duration) error {
		cancel()
		<-ctx.Done()
		return ctx.Err()
	}
	rt := resilience.NewRetryTransport(newTransport(t), resilience.RetryPolicy{NumRetries: 3}, resilience.WithTestClock(nil, sleep, nil))
	req, _ := http.NewRequestWithContext(ctx, "GET", be.URL, nil)
	_, err := rt.RoundTrip(req)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error: got %v, want context.Canceled", err)
	}
	if got := be.hits.Load(); got != 1 {
		t.Errorf("backend hits: got %d, want 1", got)
	}
}

func TestAttemptsAvoidTriedEndpoints(t *testing.T) {
	endpoints := []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"}
	var used []string
	var counts []int
	// A stand-in for the mesh's balancer: it picks the first endpoint the
	// request has not tried and records it.
	inner := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		a := resilience.AttemptsFromContext(r.Context())
		ep := endpoints[0]
		for _, e := range endpoints {
			if !a.Tried(e) {
				ep = e
				break
			}
		}
		a.Record(ep)
		used = append(used, ep)
		counts = append(counts, a.Count())
		return &http.Response{StatusCode: 503, Body: http.NoBody, Header: http.Header{}}, nil
	})
	var s sleeps
	rt := resilience.NewRetryTransport(inner, resilience.RetryPolicy{NumRetries: 3}, resilience.WithTestClock(nil, s.sleep, nil))

	req, _ := http.NewRequest("GET", "http://orders/", nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.1:80"}; !slices.Equal(used, want) {
		t.Errorf("endpoints: got %v, want %v", used, want)
	}
	if want := []int{1, 2, 3, 4}; !slices.Equal(counts, want) {
		t.Errorf("attempt counts: got %v, want %v", counts, want)
	}

	// A request that cannot be retried gets no tracker.
	used = nil
	req, _ = http.NewRequest("POST", "http://orders/", bytes.NewReader([]byte("x")))
	resp, err = rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resilience.AttemptsFromContext(req.Context()); got != nil {
		t.Errorf("caller context: got tracker %v, want none", got)
	}
	if want := []int{1, 2, 3, 4, 0}; !slices.Equal(counts, want) {
		t.Errorf("attempt counts: got %v, want %v", counts, want)
	}
}

func TestParseRetryOn(t *testing.T) {
	tests := []struct {
		in      string
		want    resilience.RetryOn
		wantErr bool
	}{
		{"5xx", resilience.Retry5xx, false},
		{"reset, connect-failure", resilience.RetryReset | resilience.RetryConnectFailure, false},
		{"gateway-error,refused-stream,retriable-status-codes,retriable-4xx", resilience.RetryGatewayError | resilience.RetryRefusedStream | resilience.RetryRetriableStatusCodes | resilience.RetryRetriable4xx, false},
		{"", 0, false},
		{"5xx,envoy-ratelimited", 0, true},
	}
	for _, tt := range tests {
		got, err := resilience.ParseRetryOn(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseRetryOn(%q): got %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err == nil {
			if back, _ := resilience.ParseRetryOn(got.String()); back != got {
				t.Errorf("round trip of %q: got %v", got.String(), back)
			}
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in     string
		want   time.Duration
		wantOK bool
	}{
		{"0", 0, true},
		{"120", 2 * time.Minute, true},
		{" 7 ", 7 * time.Second, true},
		{"99999999999999999999999", 24 * time.Hour, true},
		{"-1", 0, false},
		{"1.5", 0, false},
		{"", 0, false},
		{"soon", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{"Fri, 02 Jan 2026 03:04:04 GMT", 0, true},
	}
	for _, tt := range tests {
		got, ok := resilience.ParseRetryAfter(tt.in, now)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("ParseRetryAfter(%q): got %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestRetryTransportErrorClasses(t *testing.T) {
	refused := errors.New("http2: stream closed with error code REFUSED_STREAM")
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	tests := []struct {
		name      string
		err       error
		on        string
		wantTries int
	}{
		{"refused stream", refused, "refused-stream", 2},
		{"refused stream under connect-failure", refused, "connect-failure", 1},
		{"dial error", dial, "connect-failure", 2},
		{"dial error under gateway-error", dial, "gateway-error", 1},
		{"EOF is a reset", io.ErrUnexpectedEOF, "reset", 2},
		{"EOF under connect-failure", io.ErrUnexpectedEOF, "connect-failure", 1},
		{"caller cancellation", context.Canceled, "5xx,reset,connect-failure", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tries := 0
			inner := roundTripFunc(func(*http.Request) (*http.Response, error) { tries++; return nil, tt.err })
			var s sleeps
			rt := resilience.NewRetryTransport(inner, resilience.RetryPolicy{RetryOn: mustParseRetryOn(t, tt.on)}, resilience.WithTestClock(nil, s.sleep, nil))
			req, _ := http.NewRequest("GET", "http://orders/", nil)
			if _, err := rt.RoundTrip(req); !errors.Is(err, tt.err) {
				t.Errorf("error: got %v, want %v", err, tt.err)
			}
			if tries != tt.wantTries {
				t.Errorf("attempts: got %d, want %d", tries, tt.wantTries)
			}
		})
	}
}

// pickTwo is an endpoint-picking transport over real backends: it sends
// each attempt to the first backend the request has not tried, as the
// mesh's balancer does.
type pickTwo struct {
	base  http.RoundTripper
	addrs []string
	seen  []*resilience.Attempts // the tracker each attempt got
}

func (p *pickTwo) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, _, err := p.RoundTripAttempt(req, resilience.AttemptsFromContext(req.Context()))
	return resp, err
}

func (p *pickTwo) RoundTripAttempt(req *http.Request, a *resilience.Attempts) (*http.Response, string, error) {
	p.seen = append(p.seen, a)
	addr := p.addrs[0]
	for _, x := range p.addrs {
		if !a.Tried(x) {
			addr = x
			break
		}
	}
	a.Record(addr)
	r := req.Clone(req.Context())
	r.URL.Host = addr
	resp, err := p.base.RoundTrip(r)
	return resp, addr, err
}

func TestRetryThroughAnEndpointTransportAvoidsTheFirstEndpoint(t *testing.T) {
	failing := newBackend(t, answer(http.StatusServiceUnavailable))
	healthy := newBackend(t, answer(http.StatusOK))
	p := &pickTwo{base: newTransport(t), addrs: []string{failing.Listener.Addr().String(), healthy.Listener.Addr().String()}}
	rt := resilience.NewRetryTransport(p, resilience.RetryPolicy{NumRetries: 2, Timeout: -1},
		resilience.WithTestClock(nil, (&sleeps{}).sleep, nil))
	req, _ := http.NewRequest("GET", "http://orders/", nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status %d, want 200 from the second endpoint", resp.StatusCode)
	}
	if f, h := failing.hits.Load(), healthy.hits.Load(); f != 1 || h != 1 {
		t.Errorf("hits: failing %d, healthy %d; want 1 and 1 (the retry avoids the endpoint tried)", f, h)
	}
	if len(p.seen) != 2 || p.seen[0] != nil || p.seen[1] == nil || p.seen[1].Count() != 2 {
		t.Errorf("trackers handed over: %v; want none on the first attempt, one counting 2 attempts on the retry", p.seen)
	}
}

// Envoy's rate_limited_retry_back_off: a reset header replaces the
// backoff, in seconds or as a Unix time, unless it asks for more than the
// cap.
func TestRetryWaitsForTheRateLimitReset(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name   string
		header string
		want   time.Duration
	}{
		{"seconds", "X-RateLimit-Reset: 3", 3 * time.Second},
		{"unix time", "X-RateLimit-Reset-At: 1700000002", 2 * time.Second},
		{"over the cap: backoff", "X-RateLimit-Reset: 999", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, value, _ := strings.Cut(tt.header, ": ")
			be := newBackend(t, func(n int64, w http.ResponseWriter, r *http.Request) {
				if n == 1 {
					w.Header().Set(name, value)
					w.WriteHeader(http.StatusTooManyRequests)
				}
			})
			var s sleeps
			rt := resilience.NewRetryTransport(newTransport(t), resilience.RetryPolicy{
				RetryOn: resilience.RetryRetriableStatusCodes, RetriableStatusCodes: []int{429}, Timeout: -1,
				ResetHeaders:     []resilience.ResetHeader{{Name: "X-RateLimit-Reset"}, {Name: "X-RateLimit-Reset-At", UnixTimestamp: true}},
				MaxResetInterval: time.Minute,
			}, resilience.WithTestClock(func() time.Time { return now }, s.sleep, func(int64) int64 { return 0 }))
			req, _ := http.NewRequest("GET", be.URL, nil)
			resp, err := rt.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if w := s.waits(); len(w) != 1 || w[0] != tt.want {
				t.Errorf("waits %v, want [%v]", w, tt.want)
			}
		})
	}
}
