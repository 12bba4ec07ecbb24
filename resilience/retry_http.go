package resilience

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/internal/respbody"
)

// maxDrain bounds how much of a failed attempt's response body is read so
// that its connection can be reused; past it, closing is cheaper.
const maxDrain = 64 << 10

var errPerTryTimeout = errors.New("resilience: per-try timeout")

// retryTransport is safe for concurrent use, as http.RoundTripper requires;
// all per-request state lives on RoundTrip's stack.
type retryTransport struct {
	base        http.RoundTripper
	policy      RetryPolicy
	retryOn     RetryOn
	maxAttempts int
	timeout     time.Duration
	cfg         config
	// et and ct are base as the attempt-aware transports it may be,
	// asserted once rather than per request.
	et EndpointTransport
	ct contextAttemptTransport
}

var _ http.RoundTripper = (*retryTransport)(nil)

// NewRetryTransport returns a RoundTripper that sends each request through
// base and retries it under policy. A nil base means http.DefaultTransport.
//
// Only idempotent requests are retried (GET, HEAD, OPTIONS, TRACE, PUT,
// DELETE, or any request with an Idempotency-Key header) unless
// policy.RetryNonIdempotent is set. A request body is replayed through
// req.GetBody or, failing that, from a buffer (WithBodyBufferLimit); a
// larger body is sent once. The caller's request is never modified: each
// attempt is a shallow copy with its own context and body. A failed
// attempt's response body is drained (bounded) and closed before the
// retry. Request headers cannot change the policy.
//
// The route timeout covers the whole logical request until the returned
// response's body is read to its end or closed. When a retry is possible,
// the attempt's context carries an Attempts tracker (see
// AttemptsFromContext).
//
// When the budget (WithBudget) or the retry threshold (WithThresholds)
// refuses a retry, the last attempt's response is returned as it is, or its
// error wrapped with ErrBudgetExhausted or ErrOverflow.
func NewRetryTransport(base http.RoundTripper, policy RetryPolicy, opts ...Option) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	t := &retryTransport{
		base:        base,
		policy:      policy,
		retryOn:     policy.retryOn(),
		maxAttempts: policy.maxAttempts(),
		timeout:     policy.routeTimeout(),
		cfg:         newConfig(opts),
	}
	t.et, _ = base.(EndpointTransport)
	t.ct, _ = base.(contextAttemptTransport)
	return t
}

// Idempotent reports whether req may be sent twice with the same effect as
// once: its method is idempotent (RFC 9110 section 9.2.2: GET, HEAD,
// OPTIONS, TRACE, PUT, DELETE) or the client vouches for it with an
// Idempotency-Key header. It is the rule this package's retries and hedges
// follow.
func Idempotent(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	_, ok := req.Header["Idempotency-Key"]
	return ok
}

// body kinds of a retried request.
const (
	bodyNone    = iota // no body: every attempt sends none
	bodyGetBody        // attempts after the first call req.GetBody
	bodyBuffer         // the body was read into a buffer that every attempt replays
)

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.maxAttempts < 2 || (!t.policy.RetryNonIdempotent && !Idempotent(req)) {
		return t.once(req, req.Body)
	}
	if req.Body == nil || req.Body == http.NoBody {
		return t.retry(req, bodyNone, nil)
	}
	return t.retryBody(req)
}

// retryBody retries a request with a body: replayed by GetBody, from a
// buffer, or, too large to buffer, sent once. Not inlined, so that a
// request without a body sends from a smaller stack (see retry).
//
//go:noinline
func (t *retryTransport) retryBody(req *http.Request) (*http.Response, error) {
	var buf []byte
	switch {
	case req.GetBody != nil:
		return t.retry(req, bodyGetBody, nil)
	case t.cfg.bodyLimit < 0 || req.ContentLength > t.cfg.bodyLimit:
		return t.once(req, req.Body)
	default:
		var err error
		buf, err = io.ReadAll(io.LimitReader(req.Body, t.cfg.bodyLimit+1))
		if err != nil {
			req.Body.Close()
			return nil, fmt.Errorf("resilience: reading request body: %w", err)
		}
		if int64(len(buf)) > t.cfg.bodyLimit {
			// Too large to replay: send what was read, then the rest.
			return t.once(req, readCloser{io.MultiReader(bytes.NewReader(buf), req.Body), req.Body})
		}
		req.Body.Close()
		return t.retry(req, bodyBuffer, buf)
	}
}

type readCloser struct {
	io.Reader
	io.Closer
}

// once sends req a single time with body, under the route timeout.
func (t *retryTransport) once(req *http.Request, body io.ReadCloser) (*http.Response, error) {
	ctx, cancel := t.routeContext(req.Context())
	if cancel == nil && body == req.Body {
		return t.base.RoundTrip(req)
	}
	if t.ct != nil && body == req.Body {
		resp, _, err := t.ct.RoundTripAttemptContext(ctx, req, AttemptsFromContext(ctx))
		return finish(resp, err, nil, cancel)
	}
	r := req.WithContext(ctx)
	r.Body = body
	resp, err := t.base.RoundTrip(r)
	return finish(resp, err, nil, cancel)
}

// routeContext applies the route timeout unless ctx already ends sooner.
func (t *retryTransport) routeContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if t.timeout <= 0 {
		return ctx, nil
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= t.timeout {
		return ctx, nil
	}
	return context.WithTimeout(ctx, t.timeout)
}

// EndpointTransport is a RoundTripper that picks an endpoint for each
// request, as the mesh's transport does. The retry middleware calls
// RoundTripAttempt instead of RoundTrip: it hands the request's Attempts
// over directly and learns which endpoint an attempt used, so a request
// that needs no retry carries no tracker and costs no allocation, while a
// retry still avoids the endpoints already tried.
type EndpointTransport interface {
	http.RoundTripper
	// RoundTripAttempt sends one attempt of a request. attempts is nil on
	// a first attempt that no retry has needed yet; otherwise it holds the
	// endpoints earlier attempts used, and the transport should record
	// the one it picks. endpoint is that endpoint's address, "" when none
	// was picked.
	RoundTripAttempt(req *http.Request, attempts *Attempts) (resp *http.Response, endpoint string, err error)
}

// contextAttemptTransport is an EndpointTransport that takes an
// attempt's context beside the request, in place of the request's own.
// Such a transport copies the request for the endpoint it picks anyway,
// so the route timeout reaches it without a copy made only to carry the
// context (the mesh's transport is one).
type contextAttemptTransport interface {
	RoundTripAttemptContext(ctx context.Context, req *http.Request, attempts *Attempts) (resp *http.Response, endpoint string, err error)
}

func (t *retryTransport) retry(req *http.Request, kind int, buf []byte) (*http.Response, error) {
	ctx, cancelRoute := t.routeContext(req.Context())
	if t.ct == nil || t.et == nil || kind == bodyBuffer || t.policy.PerTryTimeout > 0 {
		return t.loop(req, kind, buf, ctx, cancelRoute, nil)
	}
	// The common case, a first attempt that needs no retry, is sent from
	// this small frame rather than from loop's: every byte of the frames
	// below the endpoint's transport is on the stack while the request is
	// in flight, and a request sent from a fresh goroutine pays for them
	// by copying its stack as it grows.
	b := t.cfg.budget
	if b != nil {
		b.RequestStarted()
	}
	resp, endpoint, err := t.ct.RoundTripAttemptContext(ctx, req, nil)
	if t.maxAttempts < 2 || ctx.Err() != nil || !t.retriable(resp, err, false) {
		if b != nil {
			b.RequestDone()
		}
		return finish(resp, err, nil, cancelRoute)
	}
	return t.loop(req, kind, buf, ctx, cancelRoute, &sent{resp: resp, endpoint: endpoint, err: err})
}

// sent is the outcome of a first attempt retry sent itself.
type sent struct {
	resp     *http.Response
	endpoint string
	err      error
}

// loop sends the attempts of a request that may be retried, from the
// first, or from the second when first1 holds the first's outcome (and
// retry has counted the request in the budget).
//
//go:noinline
func (t *retryTransport) loop(req *http.Request, kind int, buf []byte, ctx context.Context, cancelRoute context.CancelFunc, first1 *sent) (*http.Response, error) {
	var att *Attempts
	if t.et == nil {
		ctx, att = tracked(ctx)
	}
	if b := t.cfg.budget; b != nil {
		if first1 == nil {
			b.RequestStarted()
		}
		defer b.RequestDone()
	}
	var (
		bo       backoff.BackOff
		body     = req.Body
		retrying bool   // this attempt holds a retry slot
		first    string // the endpoint of the first attempt, while att is nil
	)
	if kind == bodyBuffer {
		body = replay(buf)
	}
	for attempt := 1; ; attempt++ {
		var (
			resp        *http.Response
			err         error
			perTryFired bool
			cancelTry   context.CancelCauseFunc
		)
		if attempt == 1 && first1 != nil {
			// Sent by retry: the attempts tracker starts at the retry.
			resp, first, err = first1.resp, first1.endpoint, first1.err
		} else {
			if att == nil && attempt > 1 {
				// The first retry: from here on the attempts are tracked.
				ctx, att = trackFrom(ctx, first)
			}
			var endpoint string
			resp, endpoint, perTryFired, cancelTry, err = t.send(ctx, req, att, attempt, body, kind, buf)
			if att == nil {
				first = endpoint
			}
		}
		if retrying {
			releaseRetry(t.cfg)
			retrying = false
		}
		if attempt >= t.maxAttempts || ctx.Err() != nil || !t.retriable(resp, err, perTryFired) {
			return finish(resp, err, cancelTry, cancelRoute)
		}
		next, stop, err := t.again(ctx, req, kind, buf, resp, err, &bo, cancelTry)
		switch stop {
		case againFinish:
			return finish(resp, err, cancelTry, cancelRoute)
		case againFail:
			if cancelRoute != nil {
				cancelRoute()
			}
			return nil, err
		}
		retrying = true
		body = next
	}
}

// send sends attempt n of req with body (see loop): under its per-try
// timeout, if any, with the attempt's own context beside the request to
// a transport that takes one, else on a copy carrying it.
func (t *retryTransport) send(ctx context.Context, req *http.Request, att *Attempts, n int, body io.ReadCloser, kind int, buf []byte) (
	resp *http.Response, endpoint string, perTryFired bool, cancelTry context.CancelCauseFunc, err error) {
	att.begin()
	actx := ctx
	if n > 1 {
		actx = retryContext{ctx}
	}
	var timer *time.Timer
	if d := t.policy.PerTryTimeout; d > 0 {
		actx, cancelTry, timer = perTryContext(actx, d)
	}
	// An attempt that sends the caller's body (or none) hands a
	// context-taking transport its context beside the request.
	withCtx := t.et != nil && t.ct != nil && body == req.Body && kind != bodyBuffer
	r := req
	if !withCtx && (actx != req.Context() || body != req.Body || kind == bodyBuffer) {
		r = attemptRequest(req, actx, body, kind, buf)
	}
	switch {
	case withCtx:
		resp, endpoint, err = t.ct.RoundTripAttemptContext(actx, req, att)
	case t.et != nil:
		resp, endpoint, err = t.et.RoundTripAttempt(r, att)
	default:
		resp, err = t.base.RoundTrip(r)
	}
	if timer != nil {
		perTryFired, err = t.endPerTry(timer, actx, err)
	}
	return resp, endpoint, perTryFired, cancelTry, err
}

// tracked gives ctx an Attempts tracker. Not inlined: see retry.
//
//go:noinline
func tracked(ctx context.Context) (context.Context, *Attempts) { return withAttempts(ctx) }

// replay is a body that reads buf. Not inlined: see retry.
//
//go:noinline
func replay(buf []byte) io.ReadCloser { return io.NopCloser(bytes.NewReader(buf)) }

// trackFrom gives ctx an Attempts tracker at the first retry, holding the
// first attempt's endpoint. Not inlined: see retry.
//
//go:noinline
func trackFrom(ctx context.Context, first string) (context.Context, *Attempts) {
	ctx, att := withAttempts(ctx)
	att.begin()
	if first != "" {
		att.Record(first)
	}
	return ctx, att
}

// perTryContext bounds one attempt by the per-try timeout.
//
//go:noinline
func perTryContext(ctx context.Context, d time.Duration) (context.Context, context.CancelCauseFunc, *time.Timer) {
	actx, cancelTry := context.WithCancelCause(ctx)
	return actx, cancelTry, time.AfterFunc(d, func() { cancelTry(errPerTryTimeout) })
}

// endPerTry stops the attempt's per-try timer, which bounds the wait for
// response headers only, and says whether it fired, with the attempt's
// error saying so when it did.
//
//go:noinline
func (t *retryTransport) endPerTry(timer *time.Timer, actx context.Context, err error) (bool, error) {
	timer.Stop()
	if err == nil || context.Cause(actx) != errPerTryTimeout {
		return false, err
	}
	return true, fmt.Errorf("%w after %v (%v): %w", errPerTryTimeout, t.policy.PerTryTimeout, err, context.DeadlineExceeded)
}

// attemptRequest is the copy of req an attempt sends when it needs its
// own context or body.
//
//go:noinline
func attemptRequest(req *http.Request, ctx context.Context, body io.ReadCloser, kind int, buf []byte) *http.Request {
	r := req.WithContext(ctx)
	r.Body = body
	if kind == bodyBuffer {
		r.ContentLength = int64(len(buf))
		r.GetBody = func() (io.ReadCloser, error) { return replay(buf), nil }
	}
	return r
}

// What again decided.
const (
	againRetry  = iota // send the next attempt with the body returned
	againFinish        // the last attempt's outcome (with the error returned) is the answer
	againFail          // the request fails with the error returned
)

// again prepares the retry of an attempt the policy retries: the backoff
// (or the server's Retry-After), the next body, a retry slot from the
// thresholds or budget; then it drains the failed response and waits. It
// holds the slot when it returns againRetry. Not inlined: see retry.
//
//go:noinline
func (t *retryTransport) again(ctx context.Context, req *http.Request, kind int, buf []byte,
	resp *http.Response, err error, bo *backoff.BackOff, cancelTry context.CancelCauseFunc) (io.ReadCloser, int, error) {
	if *bo == nil {
		*bo = t.policy.newBackOff(t.cfg.clock)
	}
	wait, ok := t.wait(ctx, resp, *bo)
	if !ok {
		return nil, againFinish, err
	}
	var next io.ReadCloser
	switch kind {
	case bodyGetBody:
		var gerr error
		if next, gerr = req.GetBody(); gerr != nil {
			// Without a body to send there is no retry; the last
			// attempt's result is still the answer.
			return nil, againFinish, err
		}
	case bodyBuffer:
		next = replay(buf)
	}
	if refusal := acquireRetry(t.cfg); refusal != nil {
		if next != nil {
			next.Close()
		}
		if err != nil {
			err = fmt.Errorf("%w: %w", refusal, err)
		}
		return nil, againFinish, err
	}
	drain(resp)
	if cancelTry != nil {
		cancelTry(nil)
	}
	if err := t.cfg.clock.sleep(ctx, wait); err != nil {
		releaseRetry(t.cfg)
		if next != nil {
			next.Close()
		}
		return nil, againFail, fmt.Errorf("resilience: waiting to retry: %w", err)
	}
	return next, againRetry, nil
}

// retriable reports whether the policy retries this attempt's result.
func (t *retryTransport) retriable(resp *http.Response, err error, perTryFired bool) bool {
	return retriableResult(t.retryOn, t.policy.RetriableStatusCodes, resp, err, perTryFired)
}

// retriableResult reports whether the conditions on cover an attempt's
// result.
func retriableResult(on RetryOn, statusCodes []int, resp *http.Response, err error, perTryFired bool) bool {
	if perTryFired {
		return on&(Retry5xx|RetryGatewayError|RetryReset) != 0
	}
	if err != nil {
		if isRefusedStream(err) {
			return on&(RetryRefusedStream|Retry5xx|RetryReset) != 0
		}
		switch errorOutcome(err) {
		case balancer.ConnectFailure:
			return on&(RetryConnectFailure|RetryReset|Retry5xx) != 0
		case balancer.Reset, balancer.Timeout:
			return on&(RetryReset|Retry5xx) != 0
		}
		return false
	}
	code := resp.StatusCode
	switch {
	case on&Retry5xx != 0 && code >= 500 && code <= 599:
		return true
	case on&RetryGatewayError != 0 && statusOutcome(code) == balancer.GatewayError:
		return true
	case on&RetryRetriable4xx != 0 && code == http.StatusConflict:
		return true
	case on&RetryRetriableStatusCodes != 0 && slices.Contains(statusCodes, code):
		return true
	}
	return false
}

// wait returns how long to wait before the next attempt: the server's
// Retry-After when it sent one, the backoff otherwise. ok is false when
// the wait would not end before the route deadline.
func (t *retryTransport) wait(ctx context.Context, resp *http.Response, bo backoff.BackOff) (time.Duration, bool) {
	d := bo.NextBackOff()
	limit := maxRetryAfterNoRoute
	if dl, ok := ctx.Deadline(); ok {
		limit = time.Until(dl)
	}
	if resp != nil {
		if rd, ok := t.policy.resetWait(resp.Header, t.cfg.clock.now()); ok {
			d = rd
		} else if v := resp.Header.Get("Retry-After"); v != "" {
			if ra, ok := ParseRetryAfter(v, t.cfg.clock.now()); ok {
				d = ra
			}
		}
	}
	if d == backoff.Stop {
		return 0, false
	}
	return d, d < limit
}

// acquireRetry reserves a retry with the thresholds and the budget, or
// returns the error that refused it.
func acquireRetry(c config) error {
	if th := c.thresholds; th != nil {
		if err := th.AcquireRetry(); err != nil {
			return err
		}
	}
	if b := c.budget; b != nil && !b.TryRetry() {
		if th := c.thresholds; th != nil {
			th.ReleaseRetry()
		}
		return ErrBudgetExhausted
	}
	return nil
}

func releaseRetry(c config) {
	if th := c.thresholds; th != nil {
		th.ReleaseRetry()
	}
	if b := c.budget; b != nil {
		b.RetryDone()
	}
}

// drain reads what is left of a discarded response, up to maxDrain, so the
// connection can carry the retry, and closes it.
func drain(resp *http.Response) {
	if resp == nil || resp.Body == nil {
		return
	}
	io.CopyN(io.Discard, resp.Body, maxDrain)
	resp.Body.Close()
}

// finish hands the final attempt's result to the caller. Its contexts stay
// alive until the response body is read to its end or closed, because
// cancelling them earlier would cut the body off.
func finish(resp *http.Response, err error, cancelTry context.CancelCauseFunc, cancelRoute context.CancelFunc) (*http.Response, error) {
	if cancelTry == nil && cancelRoute == nil {
		return resp, err
	}
	if err != nil || resp == nil || resp.Body == nil {
		cancelBoth(cancelTry, cancelRoute)
		return resp, err
	}
	if b, ok := resp.Body.(*respbody.Body); ok && b.CancelTry == nil && b.CancelRoute == nil && !b.Released() {
		// The body is already wrapped below (the thresholds' slot) and
		// nobody has it yet: the contexts ride on the same wrapper.
		b.CancelTry, b.CancelRoute = cancelTry, cancelRoute
		return resp, nil
	}
	resp.Body = &respbody.Body{ReadCloser: resp.Body, CancelTry: cancelTry, CancelRoute: cancelRoute}
	return resp, nil
}

func cancelBoth(cancelTry context.CancelCauseFunc, cancelRoute context.CancelFunc) {
	if cancelTry != nil {
		cancelTry(nil)
	}
	if cancelRoute != nil {
		cancelRoute()
	}
}
