package resilience

import (
	"context"
	"slices"
	"sync"
)

// Attempts tracks the attempts of one logical request, so that the layer
// that picks endpoints can send a retry somewhere it has not tried yet.
//
// The retry middleware installs one per logical request (only when the
// request may be retried) and counts the attempts; the transport below
// records the endpoint each attempt went to. All methods are safe for
// concurrent use (hedged attempts run in parallel) and do nothing on a nil
// *Attempts, which is what AttemptsFromContext returns when no tracker is
// installed.
type Attempts struct {
	mu        sync.Mutex
	count     int
	endpoints []string
	// inline holds the first endpoints, so recording them allocates
	// nothing: a request seldom makes more attempts than this.
	inline [MaxAttempts]string
}

type attemptsKey struct{}

// attemptsCtx carries an Attempts in the same allocation as the context
// node that holds it. Value delegates to the parent for every other key, so
// context.WithCancel beneath it still finds the parent's cancelCtx and
// starts no goroutine.
type attemptsCtx struct {
	context.Context
	a Attempts
}

func (c *attemptsCtx) Value(key any) any {
	if key == (attemptsKey{}) {
		return &c.a
	}
	return c.Context.Value(key)
}

func withAttempts(ctx context.Context) (context.Context, *Attempts) {
	c := &attemptsCtx{Context: ctx}
	c.a.endpoints = c.a.inline[:0]
	return c, &c.a
}

// AttemptsFromContext returns the tracker of the request ctx belongs to, or
// nil when the request will not be retried.
func AttemptsFromContext(ctx context.Context) *Attempts {
	a, _ := ctx.Value(attemptsKey{}).(*Attempts)
	return a
}

// ContextWithAttempts returns a context carrying a fresh tracker, for
// callers that drive attempts themselves.
func ContextWithAttempts(ctx context.Context) (context.Context, *Attempts) {
	return withAttempts(ctx)
}

// Record notes that the current attempt went to endpoint.
func (a *Attempts) Record(endpoint string) {
	if a == nil {
		return
	}
	a.mu.Lock()
	if !slices.Contains(a.endpoints, endpoint) {
		a.endpoints = append(a.endpoints, endpoint)
	}
	a.mu.Unlock()
}

// Tried reports whether an attempt of this request has gone to endpoint.
func (a *Attempts) Tried(endpoint string) bool {
	if a == nil {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Contains(a.endpoints, endpoint)
}

// Count returns the number of attempts started, the current one included:
// 1 during the first attempt, 2 during the first retry.
func (a *Attempts) Count() int {
	if a == nil {
		return 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.count
}

// Endpoints returns the distinct endpoints recorded so far, in order.
func (a *Attempts) Endpoints() []string {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.endpoints)
}

// begin counts a new attempt; nil counts nothing.
func (a *Attempts) begin() {
	if a == nil {
		return
	}
	a.mu.Lock()
	a.count++
	a.mu.Unlock()
}
