package resilience

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/balancer"
)

// grpcHedge is safe for concurrent use: per-call state lives on the
// interceptor's stack; the latency window and idempotency cache have their
// own locks.
type grpcHedge struct {
	policy HedgePolicy
	max    int
	cfg    config
	lat    latencyWindow
	retry  grpcRetry // for its idempotency rules only
}

// HedgeUnaryClientInterceptor is NewHedgeTransport for gRPC unary calls:
// when no answer has arrived after the policy's delay, another attempt of
// the call goes out, up to policy.MaxAttempts in flight; the first attempt
// that does not fail with a code in retry.GRPCCodes (UNAVAILABLE when nil)
// wins and the others are cancelled. Only methods the retry policy deems
// safe to send twice are hedged (see RetryUnaryClientInterceptor); others
// go out once. Extra attempts count against WithBudget and WithThresholds.
//
// Each attempt decodes into its own copy of the reply, and the winner's is
// merged into reply, so replies must be protobuf messages (others are sent
// once). grpc.Header, grpc.Trailer and grpc.Peer call options receive the
// winner's values. Attempts' contexts answer true to IsHedge after the
// first.
func HedgeUnaryClientInterceptor(policy HedgePolicy, retry RetryPolicy, opts ...Option) grpc.UnaryClientInterceptor {
	n := policy.MaxAttempts
	if n <= 0 {
		n = DefaultHedgeAttempts
	}
	h := &grpcHedge{policy: policy, max: min(n, MaxAttempts), cfg: newConfig(opts), retry: grpcRetry{policy: retry}}
	h.lat.fixed = policy.Delay
	return h.intercept
}

type grpcHedgeResult struct {
	n       int
	reply   proto.Message
	err     error
	latency time.Duration
	header  metadata.MD
	trailer metadata.MD
	peer    peer.Peer
}

func (h *grpcHedge) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	out, isProto := reply.(proto.Message)
	if h.max < 2 || !isProto || !h.retry.idempotent(method) {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	// The caller's Header, Trailer and Peer options must not be written by
	// several attempts at once: each attempt gets its own, and the
	// winner's values are copied out.
	var header, trailer *metadata.MD
	var pr *peer.Peer
	base := make([]grpc.CallOption, 0, len(opts)+3)
	for _, o := range opts {
		switch o := o.(type) {
		case grpc.HeaderCallOption:
			header = o.HeaderAddr
		case grpc.TrailerCallOption:
			trailer = o.TrailerAddr
		case grpc.PeerCallOption:
			pr = o.PeerAddr
		default:
			base = append(base, o)
		}
	}

	ctx, att := withAttempts(ctx)
	if b := h.cfg.budget; b != nil {
		b.RequestStarted()
		defer b.RequestDone()
	}
	var wg sync.WaitGroup
	defer wg.Wait() // after cancelAll: losers end promptly
	ctx, cancelAll := context.WithCancel(ctx)
	defer cancelAll()
	results := make(chan grpcHedgeResult, h.max)
	launched, inFlight := 0, 0
	more := func() bool {
		if launched >= h.max || ctx.Err() != nil {
			return false
		}
		if launched > 0 && acquireRetry(h.cfg) != nil {
			return false
		}
		n := launched
		actx := ctx
		if n > 0 {
			actx = hedgeContext{ctx}
		}
		// Each attempt's pick is recorded in att as it is made, so a hedge
		// avoids the endpoints of the attempts still in flight.
		actx = balancer.ContextWithGRPCPick(actx, &balancer.GRPCPick{Tried: att})
		att.begin()
		launched++
		inFlight++
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := grpcHedgeResult{n: n, reply: out.ProtoReflect().New().Interface()}
			start := time.Now()
			o := append(base[:len(base):len(base)], grpc.Header(&r.header), grpc.Trailer(&r.trailer), grpc.Peer(&r.peer))
			r.err = invoker(actx, method, req, r.reply, cc, o...)
			r.latency = time.Since(start)
			if n > 0 {
				releaseRetry(h.cfg)
			}
			results <- r
		}()
		return true
	}

	more()
	for range h.policy.initial(h.max, h.cfg.clock.jitter) - 1 {
		if !more() {
			break
		}
	}
	timer := time.NewTimer(h.lat.delay())
	defer timer.Stop()
	for {
		select {
		case r := <-results:
			inFlight--
			if r.err == nil {
				h.lat.observe(r.latency)
			}
			loses := r.err != nil && !isLocalRefusal(r.err) && h.retry.policy.grpcRetriable(GRPCCode(r.err))
			if loses && (inFlight > 0 || more()) {
				continue // another attempt may still answer
			}
			cancelAll()
			if r.err == nil {
				proto.Reset(out)
				proto.Merge(out, r.reply)
			}
			if header != nil {
				*header = r.header
			}
			if trailer != nil {
				*trailer = r.trailer
			}
			if pr != nil {
				*pr = r.peer
			}
			return r.err
		case <-timer.C:
			if more() {
				timer.Reset(h.lat.delay())
			}
		}
	}
}

// latencyWindow yields the hedging delay: a fixed one, or the 95th
// percentile of recent latencies. It is safe for concurrent use.
type latencyWindow struct {
	fixed   time.Duration
	mu      sync.Mutex
	samples []time.Duration
	next    int
}

func (w *latencyWindow) delay() time.Duration {
	if w.fixed > 0 {
		return w.fixed
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return percentile95(w.samples)
}

func (w *latencyWindow) observe(d time.Duration) {
	if w.fixed > 0 {
		return
	}
	w.mu.Lock()
	if len(w.samples) < hedgeSamples {
		w.samples = append(w.samples, d)
	} else {
		w.samples[w.next] = d
		w.next = (w.next + 1) % hedgeSamples
	}
	w.mu.Unlock()
}
