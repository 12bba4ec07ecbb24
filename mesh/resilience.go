package mesh

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/weftmesh/weft/resilience"
)

// defaultRetryPolicy is what mesh services get without xDS: Istio's
// default of two retries on connection failures, resets and gateway errors,
// for idempotent requests only, and no route timeout (a long download must
// not be cut by a mesh default nobody asked for).
func defaultRetryPolicy() resilience.RetryPolicy {
	return resilience.RetryPolicy{NumRetries: 2, Timeout: -1}
}

// WithRetryPolicy sets the retry policy of mesh services not configured by
// xDS; it overrides the WEFT_RETRY_* variables and WEFT_TIMEOUT.
func WithRetryPolicy(p resilience.RetryPolicy) Option {
	return optionFunc(func(c *config) error {
		for _, d := range []struct {
			name string
			d    time.Duration
		}{{"PerTryTimeout", p.PerTryTimeout}, {"Timeout", p.Timeout}, {"BaseInterval", p.BaseInterval}, {"MaxInterval", p.MaxInterval}} {
			if d.d > 0 {
				if err := checkDuration(d.d, minDuration); err != nil {
					return fmt.Errorf("mesh: WithRetryPolicy: %s: %w", d.name, err)
				}
			}
		}
		c.retry = p
		return nil
	})
}

// WithCircuitBreaker sets Envoy-style per-service thresholds (max requests,
// pending requests and retries in flight; zero fields are Envoy's
// defaults) for services not configured by xDS. A request over a
// threshold is answered at once, as Envoy answers it (503 with
// x-envoy-overloaded: true; see LocalReplyError for the error, which
// wraps resilience.ErrOverflow), instead of queueing; a gRPC call fails
// with UNAVAILABLE.
func WithCircuitBreaker(l resilience.Limits) Option {
	return optionFunc(func(c *config) error {
		c.limits = l
		return nil
	})
}

// retryFromEnv reads WEFT_RETRY_ON, WEFT_RETRIES, WEFT_PER_TRY_TIMEOUT and
// WEFT_TIMEOUT over the default policy.
func retryFromEnv(getenv func(string) string, p *resilience.RetryPolicy) error {
	if v := getenv(EnvRetryOn); v != "" {
		on, err := resilience.ParseRetryOn(v)
		if err != nil {
			return &EnvError{Var: EnvRetryOn, Value: v, Err: err}
		}
		p.RetryOn = on
	}
	if v := getenv(EnvRetries); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n >= resilience.MaxAttempts {
			return &EnvError{Var: EnvRetries, Value: v, Err: fmt.Errorf("want 0..%d", resilience.MaxAttempts-1)}
		}
		p.NumRetries = n
		if n == 0 {
			p.NumRetries = -1 // the policy's "none"
		}
	}
	for _, d := range []struct {
		name string
		dst  *time.Duration
	}{{EnvPerTryTimeout, &p.PerTryTimeout}, {EnvTimeout, &p.Timeout}} {
		if v := getenv(d.name); v != "" {
			t, err := parseDuration(v, minDuration, "2s")
			if err != nil {
				return &EnvError{Var: d.name, Value: v, Err: err}
			}
			*d.dst = t
		}
	}
	return nil
}

// serviceResilience is a service's shared resilience state: one retry
// budget and one set of thresholds per service, as Envoy keeps per cluster.
type serviceResilience struct {
	budget     resilience.Budget // nil: no retry budget
	thresholds *resilience.Thresholds
	breaker    *tracedBreaker // nil: no classic breaker
}

// newServiceResilience is the state of a service not configured by xDS.
// Its retries are bounded by Linkerd's rate budget (20% of requests plus
// 10 a second), not by Envoy's max_retries of 3 in flight: when an
// endpoint dies under concurrent load, every request that was sent to it
// needs its retry at once, and a cap of 3 failed the rest although healthy
// endpoints remained. Istio's default max_retries is unlimited for the
// same reason. WithCircuitBreaker's MaxRetries still applies when set.
func (m *Mesh) newServiceResilience() serviceResilience {
	return serviceResilience{
		budget:     resilience.NewRateBudget(0, 0, 0),
		thresholds: resilience.NewThresholds(m.serviceLimits()),
	}
}

// serviceLimits are the thresholds of services not configured by xDS.
func (m *Mesh) serviceLimits() resilience.Limits {
	l := m.cfg.limits
	if l.MaxRetries == 0 {
		l.MaxRetries = -1 // the rate budget bounds retries
	}
	return l
}

// serviceRoundTripper returns the round tripper for s through this
// transport: retries outside, so each attempt picks an endpoint again.
func (t *transport) serviceRoundTripper(s *service) http.RoundTripper {
	if rt, ok := t.rts.Load(s); ok {
		return rt.(http.RoundTripper)
	}
	res := s.res.Load()
	rt := stack(breakerBase(&pickTransport{t: t, svc: s}, res), t.m.cfg.retry, t.m.cfg.hedge, res)
	actual, _ := t.rts.LoadOrStore(s, rt)
	return actual.(http.RoundTripper)
}
