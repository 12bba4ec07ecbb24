package resilience

import (
	"errors"
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinel errors callers branch on with errors.Is. Errors returned by this
// package wrap them, so the message may carry more detail.
var (
	// ErrCircuitOpen: a circuit breaker refused the request without
	// sending it.
	ErrCircuitOpen = errors.New("resilience: circuit open")
	// ErrOverflow: a circuit-breaker threshold (max requests, pending
	// requests or retries) is reached; the request failed fast instead of
	// queueing.
	ErrOverflow = errors.New("resilience: overflow")
	// ErrBudgetExhausted: a retry was wanted but the retry budget did not
	// allow it. It wraps the last attempt's error.
	ErrBudgetExhausted = errors.New("resilience: retry budget exhausted")
	// ErrRateLimited: a rate limiter refused the request.
	ErrRateLimited = errors.New("resilience: rate limited")
)

// ReasonHeader is the HTTP response header that names why this package
// refused a request, with the reasons HTTPStatus returns.
const ReasonHeader = "x-weft-reason"

// Reasons carried in ReasonHeader.
const (
	ReasonCircuitOpen     = "circuit-open"
	ReasonOverflow        = "overflow"
	ReasonBudgetExhausted = "retry-budget-exhausted"
	ReasonRateLimited     = "rate-limited"
)

// HTTPStatus maps an error from this package to the status a server or
// proxy should answer with and the value for ReasonHeader. ok is false when
// err wraps none of the sentinels.
//
// Refusals that protect an upstream are 503, as Envoy answers on overflow;
// a rate limit is 429.
func HTTPStatus(err error) (code int, reason string, ok bool) {
	switch {
	case errors.Is(err, ErrRateLimited):
		return http.StatusTooManyRequests, ReasonRateLimited, true
	case errors.Is(err, ErrCircuitOpen):
		return http.StatusServiceUnavailable, ReasonCircuitOpen, true
	case errors.Is(err, ErrOverflow):
		return http.StatusServiceUnavailable, ReasonOverflow, true
	case errors.Is(err, ErrBudgetExhausted):
		return http.StatusServiceUnavailable, ReasonBudgetExhausted, true
	}
	return 0, "", false
}

// GRPCCode maps an error to a gRPC status code: RESOURCE_EXHAUSTED for a
// rate limit, UNAVAILABLE for the other sentinels (a client may try again
// elsewhere or later), and status.Code(err) for anything else.
func GRPCCode(err error) codes.Code {
	switch {
	case errors.Is(err, ErrRateLimited):
		return codes.ResourceExhausted
	case errors.Is(err, ErrCircuitOpen), errors.Is(err, ErrOverflow):
		return codes.Unavailable
	case errors.Is(err, ErrBudgetExhausted):
		// The budget wraps the last attempt's error; its code says more.
		if c := status.Code(err); c != codes.Unknown {
			return c
		}
		return codes.Unavailable
	}
	return status.Code(err)
}

// GRPCError returns err as an error carrying a gRPC status (see GRPCCode)
// that still unwraps to err, so both status.Code and errors.Is work on it.
// It returns nil for nil and err itself when err already has a status.
func GRPCError(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return &statusError{err: err, code: GRPCCode(err)}
}

// statusError lets an interceptor return a sentinel that gRPC reports with
// the right code while callers in the same process can still use errors.Is.
type statusError struct {
	err  error
	code codes.Code
}

func (e *statusError) Error() string              { return e.err.Error() }
func (e *statusError) Unwrap() error              { return e.err }
func (e *statusError) GRPCStatus() *status.Status { return status.New(e.code, e.err.Error()) }
