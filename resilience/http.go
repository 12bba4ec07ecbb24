package resilience

// The net/http glue of the breaker, thresholds and rate limits; retries
// and hedging have their own files.

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/internal/respbody"
)

// NewBreakerTransport returns a RoundTripper that asks b before each
// request and reports the request's outcome (HTTPOutcome, at the response
// headers) to it. A refused request fails with ErrCircuitOpen without
// touching the network. A nil base means http.DefaultTransport. It is safe
// for concurrent use when base is.
//
// Placed beneath NewRetryTransport, every attempt counts and an open
// breaker stops the retries too.
func NewBreakerTransport(base http.RoundTripper, b *Breaker) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		done, err := b.Allow()
		if err != nil {
			if req.Body != nil {
				req.Body.Close()
			}
			return nil, err
		}
		resp, err := base.RoundTrip(req)
		done(HTTPOutcome(resp, err))
		return resp, err
	})
}

// NewThresholdsTransport returns a RoundTripper that counts requests
// against t: a request is in flight from RoundTrip until its response body
// is read to its end or closed, and pending until its connection is
// obtained. Over a limit, the request fails at once with ErrOverflow. A nil
// base means http.DefaultTransport. It is safe for concurrent use when base is.
func NewThresholdsTransport(base http.RoundTripper, t *Thresholds) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		if err := t.AcquireRequest(); err != nil {
			if req.Body != nil {
				req.Body.Close()
			}
			return nil, err
		}
		if err := t.AcquirePending(); err != nil {
			t.ReleaseRequest()
			if req.Body != nil {
				req.Body.Close()
			}
			return nil, err
		}
		p := &pendingRelease{t: t}
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(httptrace.GotConnInfo) { p.release() },
		}))
		resp, err := base.RoundTrip(req)
		p.release() // a transport that never reports a connection
		if err != nil || resp.Body == nil {
			t.ReleaseRequest()
			return resp, err
		}
		resp.Body = t.ReleaseRequestOnClose(resp.Body)
		return resp, nil
	})
}

type pendingRelease struct {
	t    *Thresholds
	done atomic.Bool
}

func (p *pendingRelease) release() {
	if p.done.CompareAndSwap(false, true) {
		p.t.ReleasePending()
	}
}

// ReleaseRequestOnClose wraps a response body so that the request slot
// taken with AcquireRequest is released once, when the body is read to its
// end, fails, or is closed, whichever comes first: a request counts
// against max requests until its response has been read, as in Envoy. A
// caller that reads a body to EOF and never closes it, which net/http
// tolerates, must not hold a slot forever.
func (t *Thresholds) ReleaseRequestOnClose(body io.ReadCloser) io.ReadCloser {
	return &respbody.Body{ReadCloser: body, Slot: t}
}

// retryAfterSeconds renders a wait as Retry-After's whole seconds, rounded
// up so that a client that obeys it finds a token.
func retryAfterSeconds(d time.Duration) string {
	return strconv.FormatInt(max(1, int64(math.Ceil(d.Seconds()))), 10)
}

// NewRateLimitHandler returns a handler that serves through h the requests
// l allows and answers the rest with 429 Too Many Requests, a Retry-After
// header and ReasonHeader "rate-limited". The handler is safe for
// concurrent use when h is.
func NewRateLimitHandler(h http.Handler, l Limiter) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, ok := l.Take()
		if !ok {
			w.Header().Set("Retry-After", retryAfterSeconds(d))
			w.Header().Set(ReasonHeader, ReasonRateLimited)
			http.Error(w, "rate limited", http.StatusTooManyRequests)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// NewRateLimitTransport returns a RoundTripper that sends through base
// (nil: http.DefaultTransport) the requests l allows and fails the rest at
// once with an error wrapping ErrRateLimited, without touching the
// network. It is safe for concurrent use when base is.
func NewRateLimitTransport(base http.RoundTripper, l Limiter) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		if d, ok := l.Take(); !ok {
			if req.Body != nil {
				req.Body.Close()
			}
			return nil, fmt.Errorf("%w, retry in %v", ErrRateLimited, d)
		}
		return base.RoundTrip(req)
	})
}

// roundTripper adapts a function to http.RoundTripper.
type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
