package resilience

import (
	"context"
	"encoding/json"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// Streams cannot be replayed by an interceptor: their messages come and go
// while the call runs. grpc-go can, with the retry policy of a channel's
// service config (gRFC A6): it buffers what the client sent until the
// server answers, and replays it on a new attempt. The functions here let
// one RetryPolicy drive that for streams while RetryUnaryClientInterceptor
// keeps unary calls.

// GRPCRetryPolicy returns policy as the retryPolicy object of a gRPC
// service config's methodConfig: maxAttempts, the backoff (grpc-go draws
// each wait uniformly below the exponential value, the same full jitter),
// and the retryable codes (policy.GRPCCodes, UNAVAILABLE when nil). ok is
// false when the policy allows no retry, in which case there is nothing
// to put in the service config.
func GRPCRetryPolicy(policy RetryPolicy) (js json.RawMessage, ok bool) {
	n := policy.maxAttempts()
	if n < 2 {
		return nil, false
	}
	base, maxi := policy.intervals()
	cs := policy.GRPCCodes
	if cs == nil {
		cs = []codes.Code{codes.Unavailable}
	}
	// Numbers, which grpc-go accepts as it accepts the names.
	nums := make([]uint32, 0, len(cs))
	for _, c := range cs {
		nums = append(nums, uint32(c))
	}
	js, err := json.Marshal(map[string]any{
		"maxAttempts":          n,
		"initialBackoff":       fmt.Sprintf("%.9fs", base.Seconds()),
		"maxBackoff":           fmt.Sprintf("%.9fs", maxi.Seconds()),
		"backoffMultiplier":    2,
		"retryableStatusCodes": nums,
	})
	if err != nil {
		return nil, false
	}
	return js, true
}

// noChannelRetry makes grpc-go commit a call once its first message is
// sent, so that the channel's retry policy does not apply to it: a retry
// buffer of zero bytes is exceeded at once.
var noChannelRetry = grpc.MaxRetryRPCBufferSize(0)

// RetryStreamClientInterceptor applies the idempotency rules of
// RetryUnaryClientInterceptor to streams on a channel whose service config
// has GRPCRetryPolicy(policy): a stream whose method is not known to be
// safe to send twice is committed on its first message, so grpc-go does
// not retry it (a stream the server never saw, refused before any message
// left, is still retried).
func RetryStreamClientInterceptor(policy RetryPolicy) grpc.StreamClientInterceptor {
	g := &grpcRetry{policy: policy}
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		if !g.idempotent(method) {
			opts = append(opts[:len(opts):len(opts)], noChannelRetry)
		}
		return streamer(ctx, desc, cc, method, opts...)
	}
}

// NoChannelRetryUnaryClientInterceptor keeps grpc-go's service-config
// retries off unary calls, which RetryUnaryClientInterceptor retries with
// budgets, pushback and idempotency rules of its own; without it both
// would retry and attempts would multiply. Put it first in the chain.
func NoChannelRetryUnaryClientInterceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return invoker(ctx, method, req, reply, cc, append(opts[:len(opts):len(opts)], noChannelRetry)...)
	}
}
