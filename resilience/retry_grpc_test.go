package resilience_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/resilience"
)

// failFirstGRPC fails the first n calls with code, pushing back by
// pushback (when not empty).
func failFirstGRPC(n int64, code codes.Code, pushback string) func(context.Context, int64) error {
	return func(ctx context.Context, i int64) error {
		if i > n {
			return nil
		}
		if pushback != "" {
			grpc.SetTrailer(ctx, metadata.Pairs("grpc-retry-pushback-ms", pushback))
		}
		return status.Error(code, "failing on purpose")
	}
}

func TestRetryUnaryClientInterceptor(t *testing.T) {
	idem := []string{checkMethod}
	tests := []struct {
		name      string
		check     func(context.Context, int64) error
		policy    resilience.RetryPolicy
		wantCode  codes.Code
		wantHits  int64
		wantWaits []time.Duration // nil: do not check
	}{
		{"unavailable retried", failFirstGRPC(1, codes.Unavailable, ""), resilience.RetryPolicy{IdempotentMethods: idem}, codes.OK, 2, nil},
		{"not idempotent", failFirstGRPC(1, codes.Unavailable, ""), resilience.RetryPolicy{}, codes.Unavailable, 1, nil},
		{"RetryNonIdempotent", failFirstGRPC(1, codes.Unavailable, ""), resilience.RetryPolicy{RetryNonIdempotent: true}, codes.OK, 2, nil},
		{"internal not retried by default", failFirstGRPC(1, codes.Internal, ""), resilience.RetryPolicy{IdempotentMethods: idem}, codes.Internal, 1, nil},
		{"configured codes", failFirstGRPC(2, codes.Internal, ""), resilience.RetryPolicy{IdempotentMethods: idem, NumRetries: 2, GRPCCodes: []codes.Code{codes.Internal}}, codes.OK, 3, nil},
		{"NumRetries bound", failFirstGRPC(10, codes.Unavailable, ""), resilience.RetryPolicy{IdempotentMethods: idem, NumRetries: 2}, codes.Unavailable, 3, nil},
		{"pushback honoured", failFirstGRPC(1, codes.Unavailable, "1500"), resilience.RetryPolicy{IdempotentMethods: idem}, codes.OK, 2, []time.Duration{1500 * time.Millisecond}},
		{"negative pushback stops", failFirstGRPC(1, codes.Unavailable, "-1"), resilience.RetryPolicy{IdempotentMethods: idem}, codes.Unavailable, 1, []time.Duration{}},
		{"malformed pushback stops", failFirstGRPC(1, codes.Unavailable, "soon"), resilience.RetryPolicy{IdempotentMethods: idem}, codes.Unavailable, 1, []time.Duration{}},
		{"pushback past the route timeout", failFirstGRPC(1, codes.Unavailable, "60000"), resilience.RetryPolicy{IdempotentMethods: idem}, codes.Unavailable, 1, []time.Duration{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s sleeps
			be, client := newHealthBackend(t, tt.check, nil, grpc.WithUnaryInterceptor(
				resilience.RetryUnaryClientInterceptor(tt.policy, resilience.WithTestClock(nil, s.sleep, nil))))
			_, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{})
			if got := status.Code(err); got != tt.wantCode {
				t.Errorf("code: got %v (%v), want %v", got, err, tt.wantCode)
			}
			if got := be.hits.Load(); got != tt.wantHits {
				t.Errorf("server calls: got %d, want %d", got, tt.wantHits)
			}
			if tt.wantWaits != nil && !slices.Equal(s.waits(), tt.wantWaits) {
				t.Errorf("waits: got %v, want %v", s.waits(), tt.wantWaits)
			}
		})
	}
}

func TestRetryUnaryClientInterceptorPerTryTimeout(t *testing.T) {
	var s sleeps
	be, client := newHealthBackend(t, func(ctx context.Context, n int64) error {
		if n == 1 {
			select { // hang until the attempt is abandoned (bounded)
			case <-ctx.Done():
				return status.FromContextError(ctx.Err()).Err()
			case <-time.After(10 * time.Second):
			}
		}
		return nil
	}, nil, grpc.WithUnaryInterceptor(resilience.RetryUnaryClientInterceptor(
		resilience.RetryPolicy{IdempotentMethods: []string{checkMethod}, PerTryTimeout: 100 * time.Millisecond, NumRetries: 4},
		resilience.WithTestClock(nil, s.sleep, nil))))
	if _, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if got := be.hits.Load(); got < 2 {
		t.Errorf("server calls: got %d, want at least 2", got)
	}
}

// A per-try timeout is retried under the gRPC codes UNAVAILABLE and
// DEADLINE_EXCEEDED and under the HTTP conditions that cover it on the HTTP
// path (5xx, gateway-error, reset), not under others; an empty GRPCCodes
// retries no status.
func TestRetryUnaryClientInterceptorPerTryTimeoutConditions(t *testing.T) {
	tests := []struct {
		name     string
		codes    []codes.Code
		on       resilience.RetryOn
		wantCode codes.Code
		wantHits int64
	}{
		{"5xx", []codes.Code{}, resilience.Retry5xx, codes.OK, 2},
		{"gateway-error", []codes.Code{}, resilience.RetryGatewayError, codes.OK, 2},
		{"reset", []codes.Code{}, resilience.RetryReset, codes.OK, 2},
		{"deadline-exceeded", []codes.Code{codes.DeadlineExceeded}, 0, codes.OK, 2},
		{"connect-failure only", []codes.Code{}, resilience.RetryConnectFailure, codes.DeadlineExceeded, 1},
		{"cancelled only", []codes.Code{codes.Canceled}, 0, codes.DeadlineExceeded, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s sleeps
			be, client := newHealthBackend(t, func(ctx context.Context, n int64) error {
				if n == 1 {
					select { // hang until the attempt is abandoned (bounded)
					case <-ctx.Done():
						return status.FromContextError(ctx.Err()).Err()
					case <-time.After(10 * time.Second):
					}
				}
				return nil
			}, nil, grpc.WithUnaryInterceptor(resilience.RetryUnaryClientInterceptor(
				resilience.RetryPolicy{RetryNonIdempotent: true, GRPCCodes: tt.codes, RetryOn: tt.on,
					PerTryTimeout: 100 * time.Millisecond, NumRetries: 2},
				resilience.WithTestClock(nil, s.sleep, nil))))
			_, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{})
			if got := status.Code(err); got != tt.wantCode {
				t.Errorf("code: got %v (%v), want %v", got, err, tt.wantCode)
			}
			if got := be.hits.Load(); got != tt.wantHits {
				t.Errorf("server calls: got %d, want %d", got, tt.wantHits)
			}
		})
	}
}

func TestRetryUnaryClientInterceptorBudget(t *testing.T) {
	const calls = 20
	var s sleeps
	budget := resilience.NewRateBudget(0.2, -1, 0)
	be, client := newHealthBackend(t, failFirstGRPC(1<<30, codes.Unavailable, ""), nil, grpc.WithUnaryInterceptor(
		resilience.RetryUnaryClientInterceptor(resilience.RetryPolicy{IdempotentMethods: []string{checkMethod}, NumRetries: 3},
			resilience.WithBudget(budget), resilience.WithTestClock(nil, s.sleep, nil))))
	var exhausted int
	for range calls {
		_, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("code: got %v, want UNAVAILABLE", err)
		}
		if errors.Is(err, resilience.ErrBudgetExhausted) {
			exhausted++
		}
	}
	if extra := be.hits.Load() - calls; extra > calls/5 || extra <= 0 {
		t.Errorf("retries sent: got %d, want between 1 and %d", extra, calls/5)
	}
	if exhausted == 0 {
		t.Error("no call reported ErrBudgetExhausted")
	}
}

func TestRetryUnaryClientInterceptorAttempts(t *testing.T) {
	var s sleeps
	var counts []int
	record := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		a := resilience.AttemptsFromContext(ctx)
		a.Record("127.0.0.1")
		counts = append(counts, a.Count())
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	_, client := newHealthBackend(t, failFirstGRPC(2, codes.Unavailable, ""), nil, grpc.WithChainUnaryInterceptor(
		resilience.RetryUnaryClientInterceptor(resilience.RetryPolicy{IdempotentMethods: []string{checkMethod}, NumRetries: 2},
			resilience.WithTestClock(nil, s.sleep, nil)), record))
	if _, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	if want := []int{1, 2, 3}; !slices.Equal(counts, want) {
		t.Errorf("attempt counts: got %v, want %v", counts, want)
	}
}

func TestRetryUnaryClientInterceptorStopsAtOpenBreaker(t *testing.T) {
	var s sleeps
	br := resilience.NewBreaker(resilience.BreakerSettings{ConsecutiveFailures: 1})
	be, client := newHealthBackend(t, failFirstGRPC(1<<30, codes.Unavailable, ""), nil, grpc.WithChainUnaryInterceptor(
		resilience.RetryUnaryClientInterceptor(resilience.RetryPolicy{IdempotentMethods: []string{checkMethod}, NumRetries: 4},
			resilience.WithTestClock(nil, s.sleep, nil)),
		resilience.BreakerUnaryClientInterceptor(br)))
	_, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{})
	if !errors.Is(err, resilience.ErrCircuitOpen) || status.Code(err) != codes.Unavailable {
		t.Errorf("error: got %v, want ErrCircuitOpen as UNAVAILABLE", err)
	}
	if be.hits.Load() != 1 || len(s.waits()) != 1 {
		t.Errorf("got %d server calls and %d waits, want 1 and 1", be.hits.Load(), len(s.waits()))
	}
}
