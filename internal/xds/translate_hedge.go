package xds

import (
	"fmt"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// The resilience parts of routes and clusters that grpc-go leaves out:
// hedging, the virtual host's retry and hedge policies, the retry policy's
// rate-limited back-off, request-header condition and host predicate, and
// the cluster's retry budget.

// HedgePolicy is a route's hedge_policy, its own or its virtual host's.
type HedgePolicy struct {
	// InitialRequests is how many attempts go out at once (>= 1).
	InitialRequests uint32
	// AdditionalRequestChance is the probability, in [0, 1], of one more
	// initial attempt.
	AdditionalRequestChance float64
	// HedgeOnPerTryTimeout: when the retry policy's per-try timeout fires,
	// another attempt starts while the first keeps running, and the first
	// good response wins.
	HedgeOnPerTryTimeout bool
}

// ResetHeader is a response header that says when a rate limit resets
// (rate_limited_retry_back_off.reset_headers).
type ResetHeader struct {
	Name string
	// UnixTimestamp: the value is a Unix time in seconds; otherwise it is
	// a number of seconds to wait.
	UnixTimestamp bool
}

// Envoy's default cap on a rate-limited back-off taken from reset headers.
const defaultMaxResetInterval = 300 * time.Second

func translateHedge(hp *routev3.HedgePolicy) (*HedgePolicy, error) {
	out := &HedgePolicy{InitialRequests: 1, HedgeOnPerTryTimeout: hp.GetHedgeOnPerTryTimeout()}
	if n := hp.GetInitialRequests(); n != nil {
		if n.GetValue() < 1 {
			return nil, ferr("initial_requests", "must be at least 1")
		}
		out.InitialRequests = n.GetValue()
	}
	if c := hp.GetAdditionalRequestChance(); c != nil {
		var den float64
		switch c.GetDenominator() {
		case typev3.FractionalPercent_HUNDRED:
			den = 100
		case typev3.FractionalPercent_TEN_THOUSAND:
			den = 10_000
		case typev3.FractionalPercent_MILLION:
			den = 1_000_000
		default:
			return nil, ferr("additional_request_chance.denominator", "unknown %v", c.GetDenominator())
		}
		out.AdditionalRequestChance = min(float64(c.GetNumerator())/den, 1)
	}
	return out, nil
}

// translateRouteResilience reads what a route action carries beyond
// grpc-go's fields: its hedge policy.
func translateRouteResilience(a *routev3.RouteAction, out *RouteAction) error {
	if hp := a.GetHedgePolicy(); hp != nil {
		h, err := translateHedge(hp)
		if err != nil {
			return prefixed("route.hedge_policy", err)
		}
		out.HedgePolicy = h
	}
	return nil
}

// inheritVirtualHostPolicies gives the routes of a virtual host its retry
// and hedge policies where they set none, as Envoy does.
func inheritVirtualHostPolicies(vh *routev3.VirtualHost, v *VirtualHost) error {
	var rp *RetryPolicy
	if p := vh.GetRetryPolicy(); p != nil {
		var err error
		if rp, err = translateRetry(p); err != nil {
			return prefixed("retry_policy", err)
		}
	}
	var hp *HedgePolicy
	if p := vh.GetHedgePolicy(); p != nil {
		var err error
		if hp, err = translateHedge(p); err != nil {
			return prefixed("hedge_policy", err)
		}
	}
	for _, r := range v.Routes {
		if r.Action.Kind != ActionForward {
			continue
		}
		if r.Action.RetryPolicy == nil {
			r.Action.RetryPolicy = rp
		}
		if r.Action.HedgePolicy == nil {
			r.Action.HedgePolicy = hp
		}
	}
	return nil
}

// translateRetryExtras reads the retry policy fields beyond grpc-go's.
func translateRetryExtras(rp *routev3.RetryPolicy, p *RetryPolicy) error {
	if rl := rp.GetRateLimitedRetryBackOff(); rl != nil {
		p.MaxResetInterval = defaultMaxResetInterval
		if m := rl.GetMaxInterval(); m != nil {
			d, err := duration(m)
			if err != nil {
				return prefixed("rate_limited_retry_back_off.max_interval", err)
			}
			if d <= 0 {
				return ferr("rate_limited_retry_back_off.max_interval", "must be positive")
			}
			p.MaxResetInterval = d
		}
		for i, h := range rl.GetResetHeaders() {
			if h.GetName() == "" {
				return ferr(fmt.Sprintf("rate_limited_retry_back_off.reset_headers[%d].name", i), "empty")
			}
			p.ResetHeaders = append(p.ResetHeaders, ResetHeader{Name: h.GetName(),
				UnixTimestamp: h.GetFormat() == routev3.RetryPolicy_UNIX_TIMESTAMP})
		}
	}
	for i, h := range rp.GetRetriableRequestHeaders() {
		hm, err := translateHeaderMatcher(h)
		if err != nil {
			return prefixed(fmt.Sprintf("retriable_request_headers[%d]", i), err)
		}
		p.RetriableRequestHeaders = append(p.RetriableRequestHeaders, hm)
	}
	for _, pr := range rp.GetRetryHostPredicate() {
		if pr.GetName() == "envoy.retry_host_predicates.previous_hosts" ||
			pr.GetTypedConfig().GetTypeUrl() == "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate" {
			p.PreviousHosts = true
		}
	}
	return nil
}

// RetryableRequest reports whether a request may be retried under p's
// retriable_request_headers: with none configured, every request may; with
// some, a request must match one of them.
func (p *RetryPolicy) RetryableRequest(host string, r *Request) bool {
	if len(p.RetriableRequestHeaders) == 0 {
		return true
	}
	in := headerInput(host, r)
	for i := range p.RetriableRequestHeaders {
		if p.RetriableRequestHeaders[i].Match(&in) {
			return true
		}
	}
	return false
}

// RetryBudget is a cluster's circuit_breakers retry_budget: retries in
// flight may not exceed max(MinRetryConcurrency, BudgetPercent% of active
// requests). When set, it replaces the max_retries threshold, as in Envoy.
type RetryBudget struct {
	// BudgetPercent is in (0, 100]; Envoy's default is 20.
	BudgetPercent float64
	// MinRetryConcurrency is the floor; Envoy's default is 3.
	MinRetryConcurrency uint32
}

func translateRetryBudget(t *clusterv3.CircuitBreakers_Thresholds, out *CircuitBreaker) error {
	rb := t.GetRetryBudget()
	if rb == nil {
		return nil
	}
	b := RetryBudget{BudgetPercent: 20, MinRetryConcurrency: 3}
	if p := rb.GetBudgetPercent(); p != nil {
		if p.GetValue() <= 0 || p.GetValue() > 100 {
			return ferr("retry_budget.budget_percent", "%v is not in (0, 100]", p.GetValue())
		}
		b.BudgetPercent = p.GetValue()
	}
	if m := rb.GetMinRetryConcurrency(); m != nil {
		b.MinRetryConcurrency = m.GetValue()
	}
	out.RetryBudget = b
	out.HasRetryBudget = true
	return nil
}
