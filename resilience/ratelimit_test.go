package resilience_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/resilience"
)

func TestTokenBucket(t *testing.T) {
	clk := newFakeTime()
	b := resilience.NewTokenBucket(2, 3) // 2/s, burst 3
	resilience.SetTokenBucketNow(b, clk.now)
	steps := []struct {
		advance   time.Duration
		wantOK    bool
		wantAfter time.Duration
	}{
		{0, true, 0},
		{0, true, 0},
		{0, true, 0},
		{0, false, 500 * time.Millisecond},
		{250 * time.Millisecond, false, 250 * time.Millisecond},
		{250 * time.Millisecond, true, 0},
		{10 * time.Second, true, 0}, // refills to the burst, no further
		{0, true, 0},
		{0, true, 0},
		{0, false, 500 * time.Millisecond},
	}
	for i, s := range steps {
		clk.advance(s.advance)
		after, ok := b.Take()
		if ok != s.wantOK || after != s.wantAfter {
			t.Errorf("step %d: got %v, %v; want %v, %v", i, after, ok, s.wantAfter, s.wantOK)
		}
	}
}

func TestRateLimitHandler(t *testing.T) {
	clk := newFakeTime()
	b := resilience.NewTokenBucket(0.5, 1)
	resilience.SetTokenBucketNow(b, clk.now)
	srv := httptest.NewServer(resilience.NewRateLimitHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "served")
	}), b))
	defer srv.Close()
	client := &http.Client{Transport: newTransport(t)}
	tests := []struct {
		wantCode       int
		wantRetryAfter string
		wantReason     string
	}{
		{200, "", ""},
		{429, "2", "rate-limited"},
	}
	for i, tt := range tests {
		resp, err := client.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.wantCode || resp.Header.Get("Retry-After") != tt.wantRetryAfter || resp.Header.Get(resilience.ReasonHeader) != tt.wantReason {
			t.Errorf("request %d: got %d Retry-After %q reason %q; want %d %q %q", i+1, resp.StatusCode,
				resp.Header.Get("Retry-After"), resp.Header.Get(resilience.ReasonHeader), tt.wantCode, tt.wantRetryAfter, tt.wantReason)
		}
	}
}

func TestRateLimitUnaryServerInterceptor(t *testing.T) {
	clk := newFakeTime()
	b := resilience.NewTokenBucket(4, 1)
	resilience.SetTokenBucketNow(b, clk.now)
	be, client := newHealthBackend(t, func(context.Context, int64) error { return nil },
		[]grpc.ServerOption{grpc.UnaryInterceptor(resilience.RateLimitUnaryServerInterceptor(b))})
	if _, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("first call: %v", err)
	}
	var trailer metadata.MD
	_, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{}, grpc.Trailer(&trailer))
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("second call: got %v, want RESOURCE_EXHAUSTED", err)
	}
	if got := trailer.Get("grpc-retry-pushback-ms"); len(got) != 1 || got[0] != "250" {
		t.Errorf("pushback trailer: got %v, want [250]", got)
	}
	if be.hits.Load() != 1 {
		t.Errorf("handler calls: got %d, want 1", be.hits.Load())
	}
}

func TestRateLimitTransport(t *testing.T) {
	be := newBackend(t, answer(200))
	b := resilience.NewTokenBucket(1, 1)
	resilience.SetTokenBucketNow(b, newFakeTime().now)
	rt := resilience.NewRateLimitTransport(newTransport(t), b)
	for i, want := range []error{nil, resilience.ErrRateLimited} {
		req, _ := http.NewRequest("GET", be.URL, nil)
		resp, err := rt.RoundTrip(req)
		if !errors.Is(err, want) || (want == nil && err != nil) {
			t.Errorf("request %d: got %v, want %v", i+1, err, want)
		}
		if err == nil {
			resp.Body.Close()
		}
	}
	if be.hits.Load() != 1 {
		t.Errorf("backend hits: got %d, want 1", be.hits.Load())
	}
}

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		err        error
		wantHTTP   int
		wantReason string
		wantCode   codes.Code
	}{
		{resilience.ErrCircuitOpen, 503, "circuit-open", codes.Unavailable},
		{resilience.ErrOverflow, 503, "overflow", codes.Unavailable},
		{resilience.ErrBudgetExhausted, 503, "retry-budget-exhausted", codes.Unavailable},
		{resilience.ErrRateLimited, 429, "rate-limited", codes.ResourceExhausted},
		{errors.Join(resilience.ErrBudgetExhausted, status.Error(codes.Internal, "boom")), 503, "retry-budget-exhausted", codes.Internal},
		{errors.New("other"), 0, "", codes.Unknown},
	}
	for _, tt := range tests {
		code, reason, _ := resilience.HTTPStatus(tt.err)
		if code != tt.wantHTTP || reason != tt.wantReason {
			t.Errorf("HTTPStatus(%v): got %d %q, want %d %q", tt.err, code, reason, tt.wantHTTP, tt.wantReason)
		}
		if got := resilience.GRPCCode(tt.err); got != tt.wantCode {
			t.Errorf("GRPCCode(%v): got %v, want %v", tt.err, got, tt.wantCode)
		}
		gerr := resilience.GRPCError(tt.err)
		if got := status.Code(gerr); got != tt.wantCode {
			t.Errorf("status.Code(GRPCError(%v)): got %v, want %v", tt.err, got, tt.wantCode)
		}
		if !errors.Is(gerr, tt.err) {
			t.Errorf("GRPCError(%v) no longer wraps it", tt.err)
		}
	}
}
