package resilience

// The gRPC glue of the breaker, thresholds and rate limits; retries have
// their own file.

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/weftmesh/weft/balancer"
)

// BreakerUnaryClientInterceptor is NewBreakerTransport for gRPC unary
// calls: outcomes are classified with balancer.GRPCOutcome, and a refused
// call fails with UNAVAILABLE wrapping ErrCircuitOpen.
func BreakerUnaryClientInterceptor(b *Breaker) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		done, err := b.Allow()
		if err != nil {
			return GRPCError(err)
		}
		err = invoker(ctx, method, req, reply, cc, opts...)
		done(grpcOutcome(err))
		return err
	}
}

// ThresholdsUnaryClientInterceptor counts each unary call against t's
// MaxRequests and fails it with UNAVAILABLE wrapping ErrOverflow when the
// limit is reached. (gRPC's own channel queues calls waiting for a
// connection, so pending requests are not counted here.)
func ThresholdsUnaryClientInterceptor(t *Thresholds) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if err := t.AcquireRequest(); err != nil {
			return GRPCError(err)
		}
		defer t.ReleaseRequest()
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// ThresholdsStreamClientInterceptor is ThresholdsUnaryClientInterceptor
// for streams, as grpc-go counts every call against max_requests: a
// stream holds its slot from its opening until it ends, that is until
// RecvMsg or Header fails (io.EOF included), SendMsg fails with another
// error than io.EOF, or its context ends, the ways grpc-go's documentation
// gives for a stream to end.
func ThresholdsStreamClientInterceptor(t *Thresholds) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		if err := t.AcquireRequest(); err != nil {
			return nil, GRPCError(err)
		}
		s, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			t.ReleaseRequest()
			return nil, err
		}
		cs := &countedStream{ClientStream: s, t: t}
		cs.stop = context.AfterFunc(ctx, cs.release)
		return cs, nil
	}
}

// countedStream releases its max_requests slot once, when it ends.
type countedStream struct {
	grpc.ClientStream
	t    *Thresholds
	once sync.Once
	stop func() bool
}

func (s *countedStream) release() { s.once.Do(s.t.ReleaseRequest) }

func (s *countedStream) end() {
	s.stop()
	s.release()
}

func (s *countedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil {
		s.end()
	}
	return err
}

func (s *countedStream) SendMsg(m any) error {
	err := s.ClientStream.SendMsg(m)
	if err != nil && err != io.EOF {
		s.end()
	}
	return err
}

func (s *countedStream) Header() (metadata.MD, error) {
	md, err := s.ClientStream.Header()
	if err != nil {
		s.end()
	}
	return md, err
}

// RateLimitUnaryServerInterceptor refuses the calls l does not allow with
// RESOURCE_EXHAUSTED and a grpc-retry-pushback-ms trailer saying when to
// come back. The returned error also wraps ErrRateLimited.
func RateLimitUnaryServerInterceptor(l Limiter) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := takeGRPC(ctx, l); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// RateLimitStreamServerInterceptor is RateLimitUnaryServerInterceptor for
// streams: a stream is one unit of allowance, however many messages it
// carries.
func RateLimitStreamServerInterceptor(l Limiter) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := takeGRPC(ss.Context(), l); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}

func takeGRPC(ctx context.Context, l Limiter) error {
	d, ok := l.Take()
	if ok {
		return nil
	}
	grpc.SetTrailer(ctx, metadata.Pairs(pushbackKey, strconv.FormatInt(max(1, d.Milliseconds()), 10)))
	return GRPCError(fmt.Errorf("%w, retry in %v", ErrRateLimited, d))
}

// pushbackKey is gRPC's retry pushback trailer (gRFC A6).
const pushbackKey = "grpc-retry-pushback-ms"

// GRPCOutcome is the outcome of a unary call that ended with err, for a
// breaker's done: balancer.GRPCOutcome, except that a refusal by this
// package's breakers and limits beneath says nothing about the endpoint.
func GRPCOutcome(err error) balancer.Outcome { return grpcOutcome(err) }

func grpcOutcome(err error) balancer.Outcome {
	if isLocalRefusal(err) {
		return balancer.Canceled
	}
	return balancer.GRPCOutcome(err)
}
