// Package resilience keeps a client or server working when the other side
// does not: retries with backoff and retry budgets, hedging, timeouts,
// circuit breakers and rate limits, as composable middleware.
//
// Every piece works without the rest of Weft. HTTP clients wrap an
// [http.RoundTripper] ([NewRetryTransport], [NewHedgeTransport],
// [NewBreakerTransport], [NewThresholdsTransport], [NewRateLimitTransport]);
// HTTP servers wrap an [http.Handler] ([NewRateLimitHandler]); gRPC clients
// and servers add interceptors ([RetryUnaryClientInterceptor],
// [HedgeUnaryClientInterceptor], [BreakerUnaryClientInterceptor],
// [ThresholdsUnaryClientInterceptor], [RateLimitUnaryServerInterceptor]);
// streams are retried by grpc-go itself under [GRPCRetryPolicy], with
// [RetryStreamClientInterceptor] keeping unsafe methods out.
//
// The semantics follow Envoy's, because that is what xDS route and cluster
// configuration means: [RetryPolicy] takes Envoy's retry_on names and
// defaults (one retry, 25 ms base backoff with full jitter capped at
// 250 ms, a 15 s route timeout), [ConcurrencyBudget] is Envoy's retry
// budget, [Thresholds] are Envoy's per-cluster circuit-breaker thresholds.
// [RateBudget] is Linkerd's retry budget, and [Breaker] is the classic
// closed/open/half-open breaker in the shape of sony/gobreaker.
//
// Outcomes are classified with [balancer.Outcome], the same classes the
// balancer and outlier detection use, so one failed request means the same
// thing to every layer.
//
// A retry should go to a different endpoint when one exists. The retry
// middleware puts an [Attempts] tracker in each logical request's context;
// the transport beneath it (the mesh's balancer) records which endpoint
// each attempt used and avoids those on the next.
//
// Callers branch on four sentinel errors with [errors.Is]:
// [ErrCircuitOpen], [ErrOverflow], [ErrBudgetExhausted] and
// [ErrRateLimited]. [GRPCError], [GRPCCode] and [HTTPStatus] map them to
// the status a server or proxy should report.
//
// Suggested order, outermost first, for an HTTP client:
//
//	NewRetryTransport(              // one logical request, several attempts
//	    NewBreakerTransport(        // each attempt counts against the breaker
//	        NewThresholdsTransport(base, thresholds), breaker), policy,
//	    WithBudget(budget), WithThresholds(thresholds))
package resilience
