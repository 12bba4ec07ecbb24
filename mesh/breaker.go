package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/resilience"
)

// The classic circuit breaker, inbound rate limits and hedging for
// services without xDS, from options and the environment. Envoy has no
// classic breaker (outlier detection ejects endpoints instead), so the
// breaker is never driven by xDS; Envoy's local_ratelimit filter lives on
// an HTTP server's inbound listener, which the mesh's HTTP servers do not
// receive from xDS, and grpc-go's xDS-managed server does not implement
// it, so inbound rate limits come from options and the environment only.

// Environment variables of the resilience features not driven by xDS.
const (
	EnvHedgeDelay = "WEFT_HEDGE_DELAY"
	EnvHedgeMax   = "WEFT_HEDGE_MAX"
	EnvBreaker    = "WEFT_BREAKER"
	EnvRateLimit  = "WEFT_RATE_LIMIT"
)

// rateLimit is an inbound token bucket's configuration.
type rateLimit struct {
	rate  float64
	burst int
}

// WithHedging hedges idempotent requests to services not configured by
// xDS: when no response has arrived after p.Delay (zero: the observed 95th
// percentile latency), another attempt goes to another endpoint, up to
// p.MaxAttempts in flight; the first good response wins and the others are
// cancelled. Failures covered by the retry policy lose the race. It
// overrides WEFT_HEDGE_DELAY and WEFT_HEDGE_MAX; gRPC channels from
// DialGRPC hedge unary calls the same way.
func WithHedging(p resilience.HedgePolicy) Option {
	return optionFunc(func(c *config) error {
		if p.MaxAttempts < 0 || p.MaxAttempts > resilience.MaxAttempts || p.Delay < 0 {
			return fmt.Errorf("mesh: WithHedging: want 0..%d attempts and a delay >= 0", resilience.MaxAttempts)
		}
		if p.Delay != 0 {
			if err := checkDuration(p.Delay, minDuration); err != nil {
				return fmt.Errorf("mesh: WithHedging: delay %w", err)
			}
		}
		c.hedge = &p
		return nil
	})
}

// WithBreaker puts a classic circuit breaker (closed, open, half-open; see
// resilience.BreakerSettings, whose zero value opens after 5 consecutive
// failures for 30 s) in front of each service not configured by xDS: while
// it is open, requests fail at once with resilience.ErrCircuitOpen and
// none reaches the service. It is not WithCircuitBreaker, which sets
// Envoy's thresholds. It overrides WEFT_BREAKER.
func WithBreaker(s resilience.BreakerSettings) Option {
	return optionFunc(func(c *config) error {
		if err := checkBreaker(s); err != nil {
			return fmt.Errorf("mesh: WithBreaker: %w", err)
		}
		c.breaker = &s
		return nil
	})
}

// WithRateLimit bounds the requests each of the mesh's servers (every
// Handler, ListenAndServe and NewGRPCServer) accepts to perSecond, with
// bursts of burst (0: perSecond rounded up); requests over it are refused
// with 429 and Retry-After, or RESOURCE_EXHAUSTED for gRPC. It overrides
// WEFT_RATE_LIMIT.
func WithRateLimit(perSecond float64, burst int) Option {
	return optionFunc(func(c *config) error {
		if err := checkRate(perSecond); err != nil {
			return fmt.Errorf("mesh: WithRateLimit(%v, %d): %w", perSecond, burst, err)
		}
		if burst < 0 || burst > maxBurst {
			return fmt.Errorf("mesh: WithRateLimit(%v, %d): want a burst from 0 to %d", perSecond, burst, maxBurst)
		}
		c.rateLimit = &rateLimit{rate: perSecond, burst: burst}
		return nil
	})
}

// checkBreaker refuses settings whose numbers cannot be meant: a failure
// rate that is not 0 (off) or a share in (0, 1], NaN included, which
// silently turned the rule off; durations other than 0 (the default)
// below minDuration.
func checkBreaker(s resilience.BreakerSettings) error {
	if s.FailureRate != 0 {
		if err := checkShare(s.FailureRate); err != nil {
			return fmt.Errorf("FailureRate %w", err)
		}
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{{"Window", s.Window}, {"OpenTimeout", s.OpenTimeout}} {
		if d.d != 0 {
			if err := checkDuration(d.d, minDuration); err != nil {
				return fmt.Errorf("%s: %w", d.name, err)
			}
		}
	}
	return nil
}

// resilienceFromEnv reads WEFT_HEDGE_*, WEFT_BREAKER and WEFT_RATE_LIMIT.
func resilienceFromEnv(getenv func(string) string, c *config) error {
	bad := func(name string, err error) error { return &EnvError{Var: name, Value: getenv(name), Err: err} }
	if v := getenv(EnvHedgeDelay); v != "" {
		p := resilience.HedgePolicy{}
		if v != "p95" {
			d, err := parseDuration(v, minDuration, "50ms, or p95")
			if err != nil {
				return bad(EnvHedgeDelay, err)
			}
			p.Delay = d
		}
		c.hedge = &p
	}
	if v := getenv(EnvHedgeMax); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 2 || n > resilience.MaxAttempts {
			return bad(EnvHedgeMax, fmt.Errorf("want 2..%d attempts in flight", resilience.MaxAttempts))
		}
		if c.hedge == nil {
			return bad(EnvHedgeMax, fmt.Errorf("set %s too, to say when to hedge", EnvHedgeDelay))
		}
		c.hedge.MaxAttempts = n
	}
	if v := getenv(EnvBreaker); v != "" {
		s, err := parseBreaker(v)
		if err != nil {
			return bad(EnvBreaker, err)
		}
		c.breaker = &s
	}
	if v := getenv(EnvRateLimit); v != "" {
		rl, err := parseRateLimit(v)
		if err != nil {
			return bad(EnvRateLimit, err)
		}
		c.rateLimit = &rl
	}
	return nil
}

// parseBreaker parses WEFT_BREAKER: comma-separated key=value pairs,
// "consecutive=5,open=30s,halfopen=3" or "rate=0.5,window=10s,min=20".
// Keys: consecutive (failures in a row; 0 turns the rule off), rate
// (failed share in the window, 0 < rate <= 1, or a percentage such as
// 50%), window, min (requests in the window before rate applies), open
// (time open before probing), halfopen (probes). "on" alone means the
// defaults.
func parseBreaker(v string) (resilience.BreakerSettings, error) {
	var s resilience.BreakerSettings
	if strings.TrimSpace(v) == "on" {
		return s, nil
	}
	pairs, err := keyValues(v, ",", "key=value")
	if err != nil {
		return s, err
	}
	for _, p := range pairs {
		k, val := p[0], p[1]
		if val == "" {
			return s, fmt.Errorf("%q: want key=value", k+"=")
		}
		count := func() (int, error) {
			n, err := strconv.Atoi(val)
			if err != nil || n < 0 {
				return 0, fmt.Errorf("%s=%q: want a count", k, val)
			}
			return n, nil
		}
		dur := func() (time.Duration, error) {
			d, err := parseDuration(val, minDuration, "10s")
			if err != nil {
				return 0, fmt.Errorf("%s=%q: %w", k, val, err)
			}
			return d, nil
		}
		var err error
		switch k {
		case "consecutive":
			var n int
			if n, err = count(); err == nil {
				s.ConsecutiveFailures = n
				if n == 0 {
					s.ConsecutiveFailures = -1 // the settings' "off"
				}
			}
		case "rate":
			r, perr := strconv.ParseFloat(strings.TrimSuffix(val, "%"), 64)
			if strings.HasSuffix(val, "%") {
				r /= 100
			}
			if perr != nil || checkShare(r) != nil {
				return s, fmt.Errorf("rate=%q: want a share in (0, 1] or a percentage", val)
			}
			s.FailureRate = r
		case "window":
			s.Window, err = dur()
		case "min":
			var n int
			if n, err = count(); err == nil && n == 0 {
				err = fmt.Errorf("min=%q: want at least 1", val)
			}
			s.MinRequests = n
		case "open":
			s.OpenTimeout, err = dur()
		case "halfopen":
			var n int
			if n, err = count(); err == nil && n == 0 {
				err = fmt.Errorf("halfopen=%q: want at least 1 probe", val)
			}
			s.HalfOpenProbes = n
		default:
			return s, fmt.Errorf("unknown key %q (want consecutive, rate, window, min, open, halfopen)", k)
		}
		if err != nil {
			return s, err
		}
	}
	return s, nil
}

// parseRateLimit parses WEFT_RATE_LIMIT: "100" (per second) or
// "100,burst=200".
func parseRateLimit(v string) (rateLimit, error) {
	rateS, rest, _ := strings.Cut(v, ",")
	r, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rateS), "/s"), 64)
	if err != nil {
		return rateLimit{}, errors.New("want requests per second, such as 100 or 100,burst=200")
	}
	if err := checkRate(r); err != nil {
		return rateLimit{}, err
	}
	rl := rateLimit{rate: r}
	if rest = strings.TrimSpace(rest); rest != "" {
		b, ok := strings.CutPrefix(rest, "burst=")
		n, err := strconv.Atoi(b)
		if !ok || err != nil || n < 1 || n > maxBurst {
			return rateLimit{}, fmt.Errorf("%q: want burst=N with N from 1 to %d", rest, maxBurst)
		}
		rl.burst = n
	}
	return rl, nil
}

// addBreaker gives a service not configured by xDS its classic breaker,
// when one is configured, reporting its state in
// weft.circuit_breaker.state.
func (m *Mesh) addBreaker(s *service) {
	if m.cfg.breaker == nil {
		return
	}
	s.res.Store(&serviceResilience{
		budget:     s.res.Load().budget,
		thresholds: s.res.Load().thresholds,
		breaker:    m.newBreaker(s.name),
	})
}

func (m *Mesh) newBreaker(name string) *tracedBreaker {
	settings := *m.cfg.breaker
	stats := m.metrics.Cluster(name)
	user := settings.OnStateChange
	t := &tracedBreaker{ctx: context.Background()}
	settings.OnStateChange = func(from, to resilience.State) {
		// Called with t.mu held, inside the call that caused the change:
		// t.ctx is that request's.
		stats.BreakerState(t.ctx, from.String(), to.String())
		level := slog.LevelInfo
		if to == resilience.StateOpen {
			level = slog.LevelWarn // requests now fail fast
		}
		m.limited.Log(t.ctx, level, "weft: circuit breaker", "service", name, "from", from.String(), "to", to.String())
		if user != nil {
			user(from, to)
		}
	}
	stats.BreakerState(context.Background(), "", resilience.StateClosed.String())
	t.b = resilience.NewBreaker(settings)
	return t
}

// tracedBreaker is a service's breaker, entered only with the context of
// the request it judges, so that the transition a request causes (the
// failure that opens it, the probe that closes it) is logged with that
// request's trace and span IDs. Its lock is held around the breaker's own
// short critical sections only, never across a request.
type tracedBreaker struct {
	b   *resilience.Breaker
	mu  sync.Mutex
	ctx context.Context // the request in allow or report; Background otherwise
}

// allow is Breaker.Allow for the request of ctx.
func (t *tracedBreaker) allow(ctx context.Context) (func(balancer.Outcome), error) {
	t.mu.Lock()
	t.ctx = ctx
	done, err := t.b.Allow()
	t.ctx = context.Background()
	t.mu.Unlock()
	return done, err
}

// report hands done, from allow, the outcome of the request of ctx.
func (t *tracedBreaker) report(ctx context.Context, done func(balancer.Outcome), o balancer.Outcome) {
	t.mu.Lock()
	t.ctx = ctx
	done(o)
	t.ctx = context.Background()
	t.mu.Unlock()
}

// unary is resilience.BreakerUnaryClientInterceptor on t.
func (t *tracedBreaker) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	done, err := t.allow(ctx)
	if err != nil {
		return resilience.GRPCError(err)
	}
	err = invoker(ctx, method, req, reply, cc, opts...)
	t.report(ctx, done, resilience.GRPCOutcome(err))
	return err
}

// breakerTransport asks a service's breaker before each attempt and
// reports the attempt's outcome; beneath the retry layer, so every
// attempt counts and an open breaker stops retries too.
type breakerTransport struct {
	next    resilience.EndpointTransport
	breaker *tracedBreaker
	svc     *service
}

func (b *breakerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, _, err := b.RoundTripAttempt(req, resilience.AttemptsFromContext(req.Context()))
	return resp, err
}

func (b *breakerTransport) RoundTripAttempt(req *http.Request, a *resilience.Attempts) (*http.Response, string, error) {
	done, err := b.breaker.allow(req.Context())
	if err != nil {
		closeBody(req)
		b.svc.stats.Overflow(req.Context(), "open")
		return nil, "", fmt.Errorf("weft: service %q: %w", b.svc.name, err)
	}
	resp, endpoint, err := b.next.RoundTripAttempt(req, a)
	b.breaker.report(req.Context(), done, resilience.HTTPOutcome(resp, err))
	return resp, endpoint, err
}

// inboundRateLimit is the inbound middleware of WithRateLimit and
// WEFT_RATE_LIMIT: one token bucket per server.
func (m *Mesh) inboundRateLimit(next http.Handler) http.Handler {
	l := m.newInboundLimiter()
	if l == nil {
		return next
	}
	return resilience.NewRateLimitHandler(next, l)
}

// newInboundLimiter returns a server's token bucket, counting rejections
// in weft.rate_limit.rejections; nil without a rate limit.
func (m *Mesh) newInboundLimiter() resilience.Limiter {
	rl := m.cfg.rateLimit
	if rl == nil {
		return nil
	}
	return &countingLimiter{l: resilience.NewTokenBucket(rl.rate, rl.burst), m: m}
}

type countingLimiter struct {
	l resilience.Limiter
	m *Mesh
}

func (c *countingLimiter) Take() (time.Duration, bool) {
	d, ok := c.l.Take()
	if !ok {
		c.m.metrics.RateLimited(context.Background(), "inbound")
	}
	return d, ok
}

// grpcServerResilience is the rate limit of a gRPC server.
func (m *Mesh) grpcServerResilience() []grpc.ServerOption {
	l := m.newInboundLimiter()
	if l == nil {
		return nil
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(resilience.RateLimitUnaryServerInterceptor(l)),
		grpc.ChainStreamInterceptor(resilience.RateLimitStreamServerInterceptor(l)),
	}
}
