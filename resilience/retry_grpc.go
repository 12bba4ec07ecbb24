package resilience

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/weftmesh/weft/balancer"
)

// grpcRetry is safe for concurrent use: its only shared state is the
// idempotency cache, a sync.Map.
type grpcRetry struct {
	policy      RetryPolicy
	maxAttempts int
	timeout     time.Duration
	cfg         config
	safe        sync.Map // full method name -> bool
}

// RetryUnaryClientInterceptor retries unary calls under policy, with gRPC
// status codes: policy.GRPCCodes (default UNAVAILABLE) are retried, with the
// policy's backoff, unless the server's grpc-retry-pushback-ms trailer says
// to wait longer or, when negative, not to retry at all (gRFC A6).
//
// A method is retried only when it is safe to: policy.RetryNonIdempotent
// is set, the method is in policy.IdempotentMethods, or its protobuf
// descriptor (when registered) declares idempotency_level
// NO_SIDE_EFFECTS or IDEMPOTENT.
//
// The route timeout (policy.Timeout) bounds the whole call. A per-try
// timeout that expires is retried when UNAVAILABLE or DEADLINE_EXCEEDED is
// retriable, or when policy.RetryOn names 5xx, gateway-error or reset, the
// conditions under which the HTTP path and Envoy retry it (here a zero
// RetryOn names none of them): a route configured for HTTP retries a
// gRPC attempt that outlives its per-try timeout too. Each attempt's context carries the call's Attempts tracker,
// which gRPC hands to the balancer's picker. When the budget or the retry
// threshold refuses a retry, the last error is returned wrapped with
// ErrBudgetExhausted or ErrOverflow; its status code is unchanged.
//
// Do not combine it with a retry policy in the channel's service config,
// or both will retry.
func RetryUnaryClientInterceptor(policy RetryPolicy, opts ...Option) grpc.UnaryClientInterceptor {
	g := &grpcRetry{
		policy:      policy,
		maxAttempts: policy.maxAttempts(),
		timeout:     policy.routeTimeout(),
		cfg:         newConfig(opts),
	}
	return g.intercept
}

func (g *grpcRetry) routeContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if g.timeout <= 0 {
		return ctx, func() {}
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= g.timeout {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, g.timeout)
}

func (g *grpcRetry) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	ctx, cancel := g.routeContext(ctx)
	defer cancel()
	if g.maxAttempts < 2 || !g.idempotent(method) {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	ctx, att := withAttempts(ctx)
	// A Weft-balanced channel's picker reads the endpoints tried so far
	// from here, records each pick in att, and sends a retry elsewhere,
	// as the HTTP path does.
	ctx = balancer.ContextWithGRPCPick(ctx, &balancer.GRPCPick{Tried: att})
	if b := g.cfg.budget; b != nil {
		b.RequestStarted()
		defer b.RequestDone()
	}
	var (
		bo       backoff.BackOff
		trailer  metadata.MD
		retrying bool
	)
	opts = append(slices.Clip(opts), grpc.Trailer(&trailer))
	for attempt := 1; ; attempt++ {
		att.begin()
		actx, cancelTry := ctx, context.CancelFunc(nil)
		if d := g.policy.PerTryTimeout; d > 0 {
			actx, cancelTry = context.WithTimeout(ctx, d)
		}
		trailer = nil
		err := invoker(actx, method, req, reply, cc, opts...)
		// The server sees the attempt's deadline too and may report it
		// first, before actx is done here.
		perTryFired := err != nil && cancelTry != nil && ctx.Err() == nil &&
			(actx.Err() != nil || status.Code(err) == codes.DeadlineExceeded)
		if cancelTry != nil {
			cancelTry()
		}
		if retrying {
			releaseRetry(g.cfg)
			retrying = false
		}
		// A refusal by a breaker or limit beneath is not retried: it would
		// only be refused again.
		if err == nil || attempt >= g.maxAttempts || ctx.Err() != nil || isLocalRefusal(err) {
			return err
		}
		code := status.Code(err)
		if perTryFired {
			if !g.policy.grpcRetriable(codes.Unavailable) && !g.policy.grpcRetriable(codes.DeadlineExceeded) &&
				g.policy.RetryOn&perTryRetryOn == 0 {
				return err
			}
		} else if !g.policy.grpcRetriable(code) {
			return err
		}
		if bo == nil {
			bo = g.policy.newBackOff(g.cfg.clock)
		}
		wait := bo.NextBackOff()
		if v := trailer.Get(pushbackKey); len(v) > 0 {
			d, ok := parsePushback(v[0])
			if !ok {
				return err
			}
			wait = d
		}
		limit := maxRetryAfterNoRoute
		if dl, ok := ctx.Deadline(); ok {
			limit = time.Until(dl)
		}
		if wait == backoff.Stop || wait >= limit {
			return err
		}
		if refusal := acquireRetry(g.cfg); refusal != nil {
			return fmt.Errorf("%w: %w", refusal, err)
		}
		retrying = true
		if serr := g.cfg.clock.sleep(ctx, wait); serr != nil {
			releaseRetry(g.cfg)
			return status.Errorf(status.FromContextError(serr).Code(), "resilience: waiting to retry: %v (last attempt: %v)", serr, err)
		}
	}
}

// perTryRetryOn are the HTTP conditions that cover a per-try timeout.
const perTryRetryOn = Retry5xx | RetryGatewayError | RetryReset

// idempotent reports whether method may be retried.
func (g *grpcRetry) idempotent(method string) bool {
	if g.policy.RetryNonIdempotent || slices.Contains(g.policy.IdempotentMethods, method) {
		return true
	}
	if v, ok := g.safe.Load(method); ok {
		return v.(bool)
	}
	safe := declaredIdempotent(method)
	g.safe.Store(method, safe)
	return safe
}

// declaredIdempotent looks the method up in the protobuf registry and reads
// its idempotency_level option.
func declaredIdempotent(method string) bool {
	name := protoreflect.FullName(strings.Replace(strings.TrimPrefix(method, "/"), "/", ".", 1))
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(name)
	if err != nil {
		return false
	}
	md, ok := d.(protoreflect.MethodDescriptor)
	if !ok {
		return false
	}
	o, ok := md.Options().(*descriptorpb.MethodOptions)
	return ok && o.GetIdempotencyLevel() != descriptorpb.MethodOptions_IDEMPOTENCY_UNKNOWN
}
