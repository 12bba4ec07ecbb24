package mesh

import (
	"encoding/json"
	"net/http"

	"google.golang.org/grpc"

	"github.com/weftmesh/weft/internal/xds"
	"github.com/weftmesh/weft/resilience"
)

// How the retry, hedging and breaker middleware are stacked on a
// service's requests, for xDS routes and for services without xDS.

// options returns the retry middleware's options for the service's shared
// state: its thresholds and, when it has one, its retry budget.
func (r *serviceResilience) options() []resilience.Option {
	opts := []resilience.Option{resilience.WithThresholds(r.thresholds)}
	if r.budget != nil {
		opts = append(opts, resilience.WithBudget(r.budget))
	}
	return opts
}

// clusterResilience is an xDS cluster's shared state. As in Envoy, a
// retry_budget replaces the max_retries threshold, and without one only
// max_retries (default 3) bounds retries.
func clusterResilience(cb xds.CircuitBreaker) serviceResilience {
	limits := limitsFrom(cb)
	var budget resilience.Budget // an untyped nil: no budget
	if cb.HasRetryBudget {
		budget = resilience.NewConcurrencyBudget(cb.RetryBudget.BudgetPercent/100, int(cb.RetryBudget.MinRetryConcurrency))
		limits.MaxRetries = -1
	}
	return serviceResilience{budget: budget, thresholds: resilience.NewThresholds(limits)}
}

// stack builds the round tripper of one service: hedging for idempotent
// requests when hedge is set, retries under policy otherwise, both above
// base, which picks the endpoint of each attempt.
func stack(base resilience.EndpointTransport, policy resilience.RetryPolicy, hedge *resilience.HedgePolicy, res *serviceResilience) http.RoundTripper {
	opts := res.options()
	retry := resilience.NewRetryTransport(base, policy, opts...)
	if hedge == nil {
		return retry
	}
	h := *hedge
	if h.RetryOn == 0 {
		h.RetryOn, h.RetriableStatusCodes = policy.RetryOn, policy.RetriableStatusCodes
		if h.RetryOn == 0 {
			h.RetryOn = resilience.DefaultRetryOn
		}
	}
	// The route timeout bounds the hedged request as a whole.
	hedged := resilience.NewRetryTransport(resilience.NewHedgeTransport(base, h, opts...),
		resilience.RetryPolicy{NumRetries: -1, Timeout: policy.Timeout})
	return hedgeGate{hedge: hedged, retry: retry}
}

// hedgeGate sends idempotent requests through the hedging stack and the
// others through the retry stack, which retries them only when its
// policy allows.
type hedgeGate struct{ hedge, retry http.RoundTripper }

func (g hedgeGate) RoundTrip(req *http.Request) (*http.Response, error) {
	if resilience.Idempotent(req) {
		return g.hedge.RoundTrip(req)
	}
	return g.retry.RoundTrip(req)
}

// xdsRoundTripper builds a route's round tripper to one cluster: the
// route's retries or hedging, and retries only for requests matching the
// policy's retriable_request_headers when it lists some.
func (p *routePlan) xdsRoundTripper(base resilience.EndpointTransport, res *serviceResilience) http.RoundTripper {
	policy := p.HTTP
	if hp := p.HTTPHedge; hp != nil {
		// While hedging, a per-try timeout starts the next attempt rather
		// than cutting the current one.
		policy.PerTryTimeout = 0
		return stack(base, policy, hp, res)
	}
	rt := stack(base, policy, nil, res)
	rp := p.Route.Action.RetryPolicy
	if rp == nil || len(rp.RetriableRequestHeaders) == 0 || policy.NumRetries < 0 {
		return rt
	}
	once := policy
	once.NumRetries = -1
	return retryGate{rp: rp, retry: rt, once: stack(base, once, nil, res)}
}

// retryGate retries only requests that match the retry policy's
// retriable_request_headers.
type retryGate struct {
	rp          *xds.RetryPolicy
	retry, once http.RoundTripper
}

func (g retryGate) RoundTrip(req *http.Request) (*http.Response, error) {
	mreq := xds.RequestFromHTTP(req)
	if g.rp.RetryableRequest(req.URL.Host, &mreq) {
		return g.retry.RoundTrip(req)
	}
	return g.once.RoundTrip(req)
}

// breakerBase is the endpoint transport beneath a service's retries: the
// picker, behind the service's breaker when it has one.
func breakerBase(p *pickTransport, res *serviceResilience) resilience.EndpointTransport {
	if res.breaker == nil {
		return p
	}
	return &breakerTransport{next: p, breaker: res.breaker, svc: p.svc}
}

// grpcServiceConfig is the default service config of a channel to a mesh
// service: the balancer HTTP requests to mesh services use (policy,
// composed by servicePolicy) and, for streams, grpc-go's retries under the
// mesh's policy (unary calls are retried by Weft's interceptor).
func (m *Mesh) grpcServiceConfig() string {
	sc := m.grpcLB
	rp, ok := resilience.GRPCRetryPolicy(m.cfg.retry)
	if !ok {
		return sc
	}
	var obj map[string]any
	if err := json.Unmarshal([]byte(sc), &obj); err != nil {
		return sc
	}
	obj["methodConfig"] = []any{map[string]any{"name": []any{map[string]any{}}, "retryPolicy": rp}}
	b, err := json.Marshal(obj)
	if err != nil {
		return sc
	}
	return string(b)
}

// grpcClientResilience are the interceptors of a channel to a mesh
// service, outermost first: grpc-go's own retries kept off unary calls;
// hedging (when configured) or retries; the classic breaker (when
// configured); the thresholds. Streams get grpc-go's retries, for methods
// safe to retry.
func (m *Mesh) grpcClientResilience(target string) []grpc.DialOption {
	th := resilience.NewThresholds(m.serviceLimits())
	opts := []resilience.Option{resilience.WithBudget(resilience.NewRateBudget(0, 0, 0)), resilience.WithThresholds(th)}
	unary := []grpc.UnaryClientInterceptor{resilience.NoChannelRetryUnaryClientInterceptor()}
	if h := m.cfg.hedge; h != nil {
		unary = append(unary, resilience.HedgeUnaryClientInterceptor(*h, m.cfg.retry, opts...))
	} else {
		unary = append(unary, resilience.RetryUnaryClientInterceptor(m.cfg.retry, opts...))
	}
	if m.cfg.breaker != nil {
		unary = append(unary, m.newBreaker(m.grpcServiceName(target)).unary)
	}
	unary = append(unary, resilience.ThresholdsUnaryClientInterceptor(th))
	// The tap's hooks wrap the outermost (the call) and the innermost (each
	// attempt) rather than adding interceptors: grpc-go allocates per call
	// for each one in a chain, and an idle tap must cost nothing.
	unary[0] = m.tapCallUnary(m.grpcServiceName(target), target, unary[0])
	unary[len(unary)-1] = tapAttemptUnary(m.tap, unary[len(unary)-1])
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(unary...),
		grpc.WithChainStreamInterceptor(resilience.RetryStreamClientInterceptor(m.cfg.retry)),
	}
}
