package resilience

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/weftmesh/weft/internal/respbody"
)

// Hedging defaults.
const (
	DefaultHedgeAttempts = 2
	DefaultHedgeDelay    = 100 * time.Millisecond
	minHedgeSamples      = 20
	hedgeSamples         = 256
)

// HedgePolicy says when a request is sent again while the first attempt is
// still out, to cut tail latency. The zero value sends at most two
// attempts, the second after the observed 95th percentile latency
// (DefaultHedgeDelay until enough requests have been seen). It is a
// value, read once by NewHedgeTransport.
type HedgePolicy struct {
	// MaxAttempts is the most attempts in flight for one request, the
	// first included; zero means DefaultHedgeAttempts, and it is capped at
	// the package's MaxAttempts.
	MaxAttempts int
	// Delay is the wait before each further attempt. Zero means the 95th
	// percentile of recent response latencies.
	Delay time.Duration
	// InitialAttempts is how many attempts go out at once, before any
	// delay (Envoy's hedge_policy initial_requests); zero means one.
	InitialAttempts int
	// AdditionalChance is the probability, in [0, 1], that one more
	// attempt joins the initial ones (Envoy's additional_request_chance).
	AdditionalChance float64
	// RetryOn, when not zero, makes a response or error this retry
	// condition covers lose the race: the request waits for the attempts
	// still in flight, or starts the next one at once when none is, and
	// returns the last such response only when no attempt is left. Zero
	// means the first response wins whatever its status, as in "The Tail
	// at Scale". RetriableStatusCodes serves RetryRetriableStatusCodes.
	RetryOn              RetryOn
	RetriableStatusCodes []int
}

type hedgeKey struct{}

// IsHedge reports whether ctx is the context of an attempt that a hedging
// middleware (NewHedgeTransport, HedgeUnaryClientInterceptor) started
// while an earlier attempt of the same request was still in flight, so a
// transport beneath can count hedges apart from retries.
func IsHedge(ctx context.Context) bool {
	_, ok := ctx.Value(hedgeKey{}).(struct{})
	return ok
}

// hedgeContext marks an attempt's context as a hedge.
type hedgeContext struct{ context.Context }

func (c hedgeContext) Value(key any) any {
	if key == (hedgeKey{}) {
		return struct{}{}
	}
	return c.Context.Value(key)
}

type retryKey struct{}

// IsRetry reports whether ctx is the context of an attempt that a retry
// middleware started after an earlier attempt of the same request failed,
// so a transport beneath can count retries apart from first attempts and
// hedges, whatever order the attempts picked their endpoints in.
func IsRetry(ctx context.Context) bool {
	_, ok := ctx.Value(retryKey{}).(struct{})
	return ok
}

// retryContext marks an attempt's context as a retry.
type retryContext struct{ context.Context }

func (c retryContext) Value(key any) any {
	if key == (retryKey{}) {
		return struct{}{}
	}
	return c.Context.Value(key)
}

// initial returns how many attempts to start at once, at most max.
func (p HedgePolicy) initial(limit int, draw func(int64) int64) int {
	n := max(p.InitialAttempts, 1)
	if c := p.AdditionalChance; c > 0 && (c >= 1 || float64(draw(1_000_000)) < c*1_000_000) {
		n++
	}
	return min(n, limit)
}

// hedgeTransport is safe for concurrent use: per-request state lives on
// RoundTrip's stack and the latency window has its own lock.
type hedgeTransport struct {
	base   http.RoundTripper
	policy HedgePolicy
	max    int
	cfg    config
	lat    latencyWindow // recent winning latencies
}

// NewHedgeTransport returns a RoundTripper that hedges idempotent requests
// (see NewRetryTransport for which those are) under policy: when no
// response has arrived after the delay, another attempt goes out, up to
// policy.MaxAttempts in flight. The first response, whatever its status,
// wins; the other attempts are cancelled and their responses closed. An
// attempt that fails with an error does not end the request while another
// is in flight; when none is, the next attempt starts at once.
//
// Bodies are replayed as NewRetryTransport replays them; a request whose
// body cannot be replayed is sent once. Extra attempts count against the
// budget and retry threshold given with WithBudget and WithThresholds.
// Attempts run in their own goroutines, so the transport below must be
// safe for concurrent use (http.Transport is). A nil base means
// http.DefaultTransport.
func NewHedgeTransport(base http.RoundTripper, policy HedgePolicy, opts ...Option) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	n := policy.MaxAttempts
	if n <= 0 {
		n = DefaultHedgeAttempts
	}
	return &hedgeTransport{base: base, policy: policy, max: min(n, MaxAttempts), cfg: newConfig(opts), lat: latencyWindow{fixed: policy.Delay}}
}

func (h *hedgeTransport) delay() time.Duration { return h.lat.delay() }

func (h *hedgeTransport) observe(d time.Duration) { h.lat.observe(d) }

// percentile95 returns the 95th percentile of samples, or DefaultHedgeDelay
// while there are too few of them.
func percentile95(samples []time.Duration) time.Duration {
	if len(samples) < minHedgeSamples {
		return DefaultHedgeDelay
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	return s[len(s)*95/100]
}

type hedgeResult struct {
	n       int // which attempt
	resp    *http.Response
	err     error
	cancel  context.CancelFunc
	latency time.Duration
}

// loses reports whether an attempt's result should not end the request
// while another attempt may still do better.
func (h *hedgeTransport) loses(res hedgeResult) bool {
	if res.err != nil {
		return true
	}
	if h.policy.RetryOn == 0 {
		return false
	}
	return retriableResult(h.policy.RetryOn, h.policy.RetriableStatusCodes, res.resp, nil, false)
}

func (h *hedgeTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if h.max < 2 || !Idempotent(req) {
		return h.base.RoundTrip(req)
	}
	var buf []byte
	switch {
	case req.Body == nil || req.Body == http.NoBody || req.GetBody != nil:
	case h.cfg.bodyLimit < 0 || req.ContentLength > h.cfg.bodyLimit:
		return h.base.RoundTrip(req)
	default:
		var err error
		buf, err = io.ReadAll(io.LimitReader(req.Body, h.cfg.bodyLimit+1))
		if err != nil {
			req.Body.Close()
			return nil, fmt.Errorf("resilience: reading request body: %w", err)
		}
		if int64(len(buf)) > h.cfg.bodyLimit {
			r := req.WithContext(req.Context())
			r.Body = readCloser{io.MultiReader(bytes.NewReader(buf), req.Body), req.Body}
			return h.base.RoundTrip(r)
		}
		req.Body.Close()
	}

	ctx, att := withAttempts(req.Context())
	if b := h.cfg.budget; b != nil {
		b.RequestStarted()
		defer b.RequestDone()
	}
	results := make(chan hedgeResult, h.max)
	cancels := make([]context.CancelFunc, 0, h.max)
	launch := func(n int, hedge bool) error {
		var body io.ReadCloser
		switch {
		case buf != nil:
			body = io.NopCloser(bytes.NewReader(buf))
		case n == 0 || req.GetBody == nil:
			body = req.Body
		default:
			var err error
			if body, err = req.GetBody(); err != nil {
				return fmt.Errorf("resilience: replaying request body: %w", err)
			}
		}
		var actx context.Context = ctx
		if hedge {
			actx = hedgeContext{ctx}
		}
		actx, cancel := context.WithCancel(actx)
		cancels = append(cancels, cancel)
		r := req.WithContext(actx)
		r.Body = body
		if buf != nil {
			r.ContentLength = int64(len(buf))
			r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
		}
		att.begin()
		go func() {
			start := time.Now()
			resp, err := h.base.RoundTrip(r)
			if n > 0 {
				releaseRetry(h.cfg)
			}
			results <- hedgeResult{n: n, resp: resp, err: err, cancel: cancel, latency: time.Since(start)}
		}()
		return nil
	}
	// more starts one more attempt when the limits allow it.
	launched, inFlight := 0, 0
	more := func(hedge bool) (bool, error) {
		if launched >= h.max || ctx.Err() != nil {
			return false, nil
		}
		if launched > 0 {
			if acquireRetry(h.cfg) != nil {
				return false, nil
			}
		}
		if err := launch(launched, hedge); err != nil {
			if launched > 0 {
				releaseRetry(h.cfg)
			}
			return false, err
		}
		launched++
		inFlight++
		return true, nil
	}

	if _, err := more(false); err != nil {
		return nil, err
	}
	for range h.policy.initial(h.max, h.cfg.clock.jitter) - 1 {
		if ok, _ := more(true); !ok {
			break
		}
	}
	timer := time.NewTimer(h.delay())
	defer timer.Stop()
	var last *hedgeResult // the latest losing result, kept as the answer of last resort
	keep := func(res hedgeResult) {
		if last != nil {
			if last.resp != nil {
				drain(last.resp)
			}
			last.cancel()
		}
		last = &res
	}
	for {
		select {
		case res := <-results:
			inFlight--
			if !h.loses(res) {
				h.observe(res.latency)
				if last != nil && last.resp != nil {
					drain(last.resp)
					last.cancel()
				}
				return h.win(res, cancels, results, inFlight)
			}
			keep(res)
			if inFlight > 0 {
				continue
			}
			if ok, err := more(false); ok {
				continue
			} else if err != nil {
				last.cancel()
				return nil, err
			}
			return h.win(*last, cancels, results, 0)
		case <-timer.C:
			if ok, _ := more(true); ok {
				timer.Reset(h.delay())
			}
		}
	}
}

// win returns res as the request's answer: the other attempts are
// cancelled and whatever they still return is closed; res's context lives
// until its body is read to its end or closed.
func (h *hedgeTransport) win(res hedgeResult, cancels []context.CancelFunc, results <-chan hedgeResult, inFlight int) (*http.Response, error) {
	for i, c := range cancels {
		if i != res.n {
			c()
		}
	}
	if inFlight > 0 {
		go reap(results, inFlight)
	}
	if res.err != nil || res.resp.Body == nil {
		res.cancel()
		return res.resp, res.err
	}
	res.resp.Body = &respbody.Body{ReadCloser: res.resp.Body, Done: res.cancel}
	return res.resp, nil
}

// reap closes the responses of n cancelled attempts as they come back.
func reap(results <-chan hedgeResult, n int) {
	for range n {
		r := <-results
		if r.resp != nil {
			drain(r.resp)
		}
		r.cancel()
	}
}
