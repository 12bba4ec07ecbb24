package resilience

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"google.golang.org/grpc/codes"
)

// RetryOn is a set of conditions under which an attempt is retried, named
// as Envoy's retry_on names them. It is a value, safe to share.
type RetryOn uint16

// Retry conditions. The names in comments are what ParseRetryOn accepts.
const (
	// "5xx": any 5xx response, or no response at all (connect failure,
	// reset, refused stream, per-try timeout).
	Retry5xx RetryOn = 1 << iota
	// "gateway-error": 502, 503 or 504, or a per-try timeout.
	RetryGatewayError
	// "reset": the connection broke or timed out before a response
	// arrived.
	RetryReset
	// "connect-failure": no connection could be made.
	RetryConnectFailure
	// "refused-stream": the server refused an HTTP/2 stream (REFUSED_STREAM),
	// so it cannot have processed the request.
	RetryRefusedStream
	// "retriable-status-codes": the response status is in
	// RetryPolicy.RetriableStatusCodes.
	RetryRetriableStatusCodes
	// "retriable-4xx": 409 Conflict, as in Envoy.
	RetryRetriable4xx
)

var retryOnNames = [...]string{"5xx", "gateway-error", "reset", "connect-failure", "refused-stream", "retriable-status-codes", "retriable-4xx"}

// DefaultRetryOn is what a RetryPolicy with a zero RetryOn retries: failures
// where the upstream most likely did not act on the request, plus gateway
// errors, which in a mesh usually mean an endpoint going away.
const DefaultRetryOn = RetryConnectFailure | RetryRefusedStream | RetryReset | RetryGatewayError

// ParseRetryOn parses Envoy's comma-separated retry_on value, such as
// "5xx,reset". Names this package does not implement are an error.
func ParseRetryOn(s string) (RetryOn, error) {
	var r RetryOn
	for name := range strings.SplitSeq(s, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		i := slices.Index(retryOnNames[:], name)
		if i < 0 {
			return 0, fmt.Errorf("resilience: unknown retry_on condition %q", name)
		}
		r |= 1 << i
	}
	return r, nil
}

// String returns the set in ParseRetryOn's format.
func (r RetryOn) String() string {
	var names []string
	for i, n := range retryOnNames {
		if r&(1<<i) != 0 {
			names = append(names, n)
		}
	}
	return strings.Join(names, ",")
}

// Defaults of RetryPolicy, from Envoy's route configuration.
const (
	DefaultNumRetries    = 1
	MaxAttempts          = 5 // total attempts, first included, whatever the policy says
	DefaultBaseInterval  = 25 * time.Millisecond
	DefaultRouteTimeout  = 15 * time.Second
	DefaultBodyBuffer    = 64 << 10
	maxRetryAfterNoRoute = 5 * time.Minute
)

// RetryPolicy says when and how a request is retried. The zero value is
// Envoy's behaviour for a route that has a retry policy: one retry on
// DefaultRetryOn, 25 ms base backoff, a 15 s route timeout.
//
// A RetryPolicy is a value; copy it freely. It is read-only once handed to
// a constructor.
type RetryPolicy struct {
	// RetryOn is the set of HTTP conditions that are retried; zero means
	// DefaultRetryOn.
	RetryOn RetryOn
	// RetriableStatusCodes are the statuses retried under
	// RetryRetriableStatusCodes.
	RetriableStatusCodes []int
	// GRPCCodes are the gRPC status codes the gRPC interceptor retries;
	// nil means UNAVAILABLE only, an empty non-nil slice none (a policy
	// that retries only per-try timeouts, under RetryOn).
	GRPCCodes []codes.Code
	// NumRetries is the number of retries after the first attempt: 0 means
	// DefaultNumRetries (Envoy's route default), negative means none. The
	// total number of attempts never exceeds MaxAttempts.
	NumRetries int
	// PerTryTimeout bounds each attempt until its response headers arrive;
	// zero means no per-try bound (the route timeout still applies). A
	// per-try timeout counts as Reset for RetryReset and as a gateway error
	// for Retry5xx and RetryGatewayError.
	PerTryTimeout time.Duration
	// Timeout is the route timeout: the whole logical request, all attempts
	// and backoff waits included, until the response body is closed. Zero
	// means DefaultRouteTimeout, negative means none. A caller's earlier
	// context deadline wins.
	Timeout time.Duration
	// BaseInterval is the backoff base; zero means DefaultBaseInterval.
	// The wait before retry n is uniform in [0, min(MaxInterval,
	// BaseInterval*2^(n-1))] (full jitter).
	BaseInterval time.Duration
	// MaxInterval caps the backoff; zero means 10 * BaseInterval, as in
	// Envoy.
	MaxInterval time.Duration
	// RetryNonIdempotent allows retrying requests that are not idempotent:
	// HTTP methods other than GET, HEAD, OPTIONS, TRACE, PUT and DELETE
	// without an Idempotency-Key header, and gRPC methods not known to be
	// idempotent.
	RetryNonIdempotent bool
	// IdempotentMethods lists gRPC full method names ("/pkg.Service/Method")
	// that are safe to retry, in addition to methods whose protobuf
	// descriptor declares an idempotency level.
	IdempotentMethods []string
	// ResetHeaders are response headers that say when a rate limit resets
	// (Envoy's rate_limited_retry_back_off): the first one present whose
	// wait is at most MaxResetInterval replaces the backoff and
	// Retry-After. Nil means Retry-After alone.
	ResetHeaders []ResetHeader
	// MaxResetInterval bounds the waits ResetHeaders may ask for; zero
	// means 300 s, Envoy's default.
	MaxResetInterval time.Duration
}

// ResetHeader names a response header carrying a rate limit's reset: a
// number of seconds to wait, or a Unix time in seconds when UnixTimestamp
// is set (X-RateLimit-Reset takes either form, depending on the server).
type ResetHeader struct {
	Name          string
	UnixTimestamp bool
}

// resetWait returns the wait a response's reset headers ask for.
func (p RetryPolicy) resetWait(h http.Header, now time.Time) (time.Duration, bool) {
	limit := p.MaxResetInterval
	if limit <= 0 {
		limit = 300 * time.Second
	}
	for _, rh := range p.ResetHeaders {
		v := strings.TrimSpace(h.Get(rh.Name))
		if v == "" {
			continue
		}
		n, err := strconv.ParseFloat(v, 64)
		if err != nil || n < 0 || n > 1e12 {
			continue
		}
		d := time.Duration(n * float64(time.Second))
		if rh.UnixTimestamp {
			d = max(time.Unix(0, 0).Add(d).Sub(now), 0)
		}
		if d <= limit {
			return d, true
		}
	}
	return 0, false
}

func (p RetryPolicy) retryOn() RetryOn {
	if p.RetryOn == 0 {
		return DefaultRetryOn
	}
	return p.RetryOn
}

// maxAttempts is the total attempts allowed, the first included.
func (p RetryPolicy) maxAttempts() int {
	n := p.NumRetries
	switch {
	case n < 0:
		return 1
	case n == 0:
		n = DefaultNumRetries
	}
	return min(n+1, MaxAttempts)
}

func (p RetryPolicy) routeTimeout() time.Duration {
	if p.Timeout == 0 {
		return DefaultRouteTimeout
	}
	return p.Timeout
}

func (p RetryPolicy) intervals() (base, maxi time.Duration) {
	base = p.BaseInterval
	if base <= 0 {
		base = DefaultBaseInterval
	}
	maxi = p.MaxInterval
	if maxi <= 0 {
		maxi = 10 * base
	}
	return base, max(base, maxi)
}

func (p RetryPolicy) grpcRetriable(c codes.Code) bool {
	if p.GRPCCodes == nil {
		return c == codes.Unavailable
	}
	return slices.Contains(p.GRPCCodes, c)
}

// newBackOff returns the policy's backoff: cenkalti's exponential growth
// without its own randomization, wrapped in full jitter.
func (p RetryPolicy) newBackOff(c clock) backoff.BackOff {
	base, maxi := p.intervals()
	exp := &backoff.ExponentialBackOff{
		InitialInterval:     base,
		RandomizationFactor: 0,
		Multiplier:          2,
		MaxInterval:         maxi,
		MaxElapsedTime:      0, // the route timeout bounds the whole request
		Stop:                backoff.Stop,
		Clock:               backoff.SystemClock,
	}
	exp.Reset()
	return &FullJitter{BackOff: exp, jitter: c.jitter}
}

// FullJitter wraps a BackOff so that each wait is uniform in [0, d] where d
// is the wrapped BackOff's value: the "full jitter" of AWS's analysis and
// Envoy's retry backoff. backoff.ExponentialBackOff's RandomizationFactor
// only spreads waits around d, which keeps clients that failed together
// retrying together; full jitter spreads them over the whole interval.
//
// Like the BackOffs it wraps, a FullJitter is not safe for concurrent use.
type FullJitter struct {
	BackOff backoff.BackOff
	jitter  func(int64) int64
}

// NextBackOff returns a uniform wait in [0, d], or backoff.Stop when the
// wrapped BackOff stops.
func (f *FullJitter) NextBackOff() time.Duration {
	d := f.BackOff.NextBackOff()
	if d == backoff.Stop || d <= 0 {
		return d
	}
	j := f.jitter
	if j == nil {
		j = systemClock().jitter
	}
	return time.Duration(j(int64(d) + 1))
}

// NewFullJitter returns b with full jitter, drawing from math/rand/v2.
func NewFullJitter(b backoff.BackOff) *FullJitter { return &FullJitter{BackOff: b} }

// Reset resets the wrapped BackOff.
func (f *FullJitter) Reset() { f.BackOff.Reset() }

// ParseRetryAfter parses an HTTP Retry-After value: delay-seconds or an
// HTTP date, which is taken relative to now. A date in the past is a zero
// wait. ok is false for anything else, including negative numbers.
func ParseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if v[0] >= '0' && v[0] <= '9' {
		// Anything over a day is as good as "not soon"; cap it so that the
		// multiplication cannot overflow.
		const maxSecs = 24 * 60 * 60
		n, err := strconv.ParseUint(v, 10, 63)
		if errors.Is(err, strconv.ErrRange) {
			n, err = maxSecs, nil
		}
		if err != nil {
			return 0, false
		}
		return time.Duration(min(n, maxSecs)) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

// parsePushback parses gRPC's grpc-retry-pushback-ms trailer. retry is
// false when the server says not to retry: a negative or malformed value
// (gRFC A6).
func parsePushback(v string) (d time.Duration, retry bool) {
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	const maxMS = 24 * 60 * 60 * 1000
	return time.Duration(min(n, maxMS)) * time.Millisecond, true
}
