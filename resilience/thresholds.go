package resilience

import (
	"strings"
	"sync/atomic"
)

// Limits are Envoy's per-cluster circuit-breaker thresholds (the
// connection limit belongs to the transport's pool, not here). Zero fields
// mean Envoy's defaults; negative fields mean no limit. Limits is a value,
// read once by NewThresholds.
type Limits struct {
	// MaxPendingRequests bounds requests waiting for a connection; default
	// 1024.
	MaxPendingRequests int64
	// MaxRequests bounds requests in flight; default 1024.
	MaxRequests int64
	// MaxRetries bounds retries in flight; default 3.
	MaxRetries int64
}

func limitOr(v, def int64) int64 {
	switch {
	case v == 0:
		return def
	case v < 0:
		return -1
	}
	return v
}

// Thresholds counts requests, pending requests and retries of one upstream
// cluster against Limits, and refuses with ErrOverflow the moment a limit
// is reached: overflow fails fast instead of queueing.
//
// A Thresholds is safe for concurrent use; share one per cluster among all
// the middleware that sends to it.
type Thresholds struct {
	limits                     Limits
	pending, requests, retries atomic.Int64
	overflows                  atomic.Uint64
}

// NewThresholds returns counters enforcing l.
func NewThresholds(l Limits) *Thresholds {
	return &Thresholds{limits: Limits{
		MaxPendingRequests: limitOr(l.MaxPendingRequests, 1024),
		MaxRequests:        limitOr(l.MaxRequests, 1024),
		MaxRetries:         limitOr(l.MaxRetries, 3),
	}}
}

// Limits returns the limits t enforces, defaults filled in: a negative
// field means no limit.
func (t *Thresholds) Limits() Limits { return t.limits }

// OverflowError is the error of a request or retry a Thresholds refused.
// It wraps ErrOverflow, so errors.Is(err, ErrOverflow) holds, and names
// the threshold reached, so that a caller can tell a request refused
// outright from a retry that was not made.
type OverflowError struct {
	// Threshold is the limit reached, named as in Envoy's
	// CircuitBreakers.Thresholds: ThresholdMaxRequests,
	// ThresholdMaxPendingRequests or ThresholdMaxRetries.
	Threshold string
}

// The thresholds an OverflowError names.
const (
	ThresholdMaxRequests        = "max_requests"
	ThresholdMaxPendingRequests = "max_pending_requests"
	ThresholdMaxRetries         = "max_retries"
)

func (e *OverflowError) Error() string {
	return ErrOverflow.Error() + ": " + strings.ReplaceAll(e.Threshold, "_", " ")
}

// Unwrap returns ErrOverflow.
func (e *OverflowError) Unwrap() error { return ErrOverflow }

// errors wrapping ErrOverflow, made once so that refusing costs nothing.
var (
	errOverflowPending  error = &OverflowError{Threshold: ThresholdMaxPendingRequests}
	errOverflowRequests error = &OverflowError{Threshold: ThresholdMaxRequests}
	errOverflowRetries  error = &OverflowError{Threshold: ThresholdMaxRetries}
)

func (t *Thresholds) acquire(c *atomic.Int64, limit int64, overflow error) error {
	if limit < 0 {
		c.Add(1)
		return nil
	}
	for {
		n := c.Load()
		if n >= limit {
			t.overflows.Add(1)
			return overflow
		}
		if c.CompareAndSwap(n, n+1) {
			return nil
		}
	}
}

// AcquireRequest counts a request in flight, or fails with ErrOverflow.
// ReleaseRequest must follow a nil return.
func (t *Thresholds) AcquireRequest() error {
	return t.acquire(&t.requests, t.limits.MaxRequests, errOverflowRequests)
}

// ReleaseRequest ends a request counted by AcquireRequest.
func (t *Thresholds) ReleaseRequest() { t.requests.Add(-1) }

// AcquirePending counts a request waiting for a connection, or fails with
// ErrOverflow. ReleasePending must follow a nil return.
func (t *Thresholds) AcquirePending() error {
	return t.acquire(&t.pending, t.limits.MaxPendingRequests, errOverflowPending)
}

// ReleasePending ends a wait counted by AcquirePending.
func (t *Thresholds) ReleasePending() { t.pending.Add(-1) }

// AcquireRetry counts a retry in flight, or fails with ErrOverflow.
// ReleaseRetry must follow a nil return.
func (t *Thresholds) AcquireRetry() error {
	return t.acquire(&t.retries, t.limits.MaxRetries, errOverflowRetries)
}

// ReleaseRetry ends a retry counted by AcquireRetry.
func (t *Thresholds) ReleaseRetry() { t.retries.Add(-1) }

// Requests returns the number of requests in flight.
func (t *Thresholds) Requests() int64 { return t.requests.Load() }

// Pending returns the number of requests waiting for a connection.
func (t *Thresholds) Pending() int64 { return t.pending.Load() }

// Retries returns the number of retries in flight.
func (t *Thresholds) Retries() int64 { return t.retries.Load() }

// Overflows returns how many acquisitions have been refused.
func (t *Thresholds) Overflows() uint64 { return t.overflows.Load() }
