package resilience

import (
	"sync"
	"sync/atomic"
	"time"
)

// Budget bounds retries relative to the traffic they ride on, so that a
// failing upstream sees a bounded amount of extra load instead of
// NumRetries times its normal load.
//
// The retry middleware calls RequestStarted and RequestDone around each
// logical request, TryRetry before each retry and RetryDone after a retry
// that TryRetry allowed. Implementations must be safe for concurrent use
// and should not block or allocate.
type Budget interface {
	RequestStarted()
	RequestDone()
	// TryRetry reports whether one more retry may be sent now.
	TryRetry() bool
	RetryDone()
}

// Budget defaults, from Envoy (concurrency) and Linkerd (rate).
const (
	DefaultBudgetRatio         = 0.2
	DefaultMinRetryConcurrency = 3
	DefaultMinRetriesPerSecond = 10
	DefaultBudgetWindow        = 10 * time.Second
)

// ConcurrencyBudget is Envoy's retry budget: retries in flight may not
// exceed max(MinRetryConcurrency, Ratio × active requests).
//
// A ConcurrencyBudget is safe for concurrent use; share one per upstream
// cluster among all the middleware that sends to it.
type ConcurrencyBudget struct {
	ratio     float64
	min       int64
	active    atomic.Int64
	retries   atomic.Int64
	exhausted atomic.Uint64
}

// NewConcurrencyBudget returns an Envoy-style budget. ratio <= 0 means
// DefaultBudgetRatio (Envoy's budget_percent 20); minConcurrency <= 0 means
// DefaultMinRetryConcurrency.
func NewConcurrencyBudget(ratio float64, minConcurrency int) *ConcurrencyBudget {
	if ratio <= 0 {
		ratio = DefaultBudgetRatio
	}
	if minConcurrency <= 0 {
		minConcurrency = DefaultMinRetryConcurrency
	}
	return &ConcurrencyBudget{ratio: ratio, min: int64(minConcurrency)}
}

// RequestStarted counts a logical request as active.
func (b *ConcurrencyBudget) RequestStarted() { b.active.Add(1) }

// RequestDone ends a logical request.
func (b *ConcurrencyBudget) RequestDone() { b.active.Add(-1) }

// TryRetry reserves a retry slot when one is free.
func (b *ConcurrencyBudget) TryRetry() bool {
	limit := max(b.min, int64(b.ratio*float64(b.active.Load())))
	for {
		r := b.retries.Load()
		if r >= limit {
			b.exhausted.Add(1)
			return false
		}
		if b.retries.CompareAndSwap(r, r+1) {
			return true
		}
	}
}

// RetryDone frees the slot of a retry that TryRetry allowed.
func (b *ConcurrencyBudget) RetryDone() { b.retries.Add(-1) }

// Exhausted returns how many retries the budget has refused.
func (b *ConcurrencyBudget) Exhausted() uint64 { return b.exhausted.Load() }

// RateBudget is Linkerd's (and Finagle's) retry budget: over a sliding
// window, retries may not exceed Ratio × requests plus a floor of
// MinPerSecond × window, so that low-traffic clients can still retry.
//
// A RateBudget is safe for concurrent use; share one per upstream cluster.
type RateBudget struct {
	ratio     float64
	floor     float64
	bucketDur time.Duration
	now       func() time.Time
	exhausted atomic.Uint64

	// mu serializes TryRetry and the clearing of a bucket for a new slot;
	// RequestStarted, on every request, only adds to its bucket's count.
	mu      sync.Mutex
	buckets [rateBuckets]rateBucket
}

const rateBuckets = 10

type rateBucket struct {
	epoch    atomic.Int64 // index of the bucketDur-long slot this bucket holds
	requests atomic.Int64
	retries  int64 // under mu
}

// NewRateBudget returns a Linkerd-style budget. ratio <= 0 means
// DefaultBudgetRatio; minPerSecond < 0 means no floor and 0 means
// DefaultMinRetriesPerSecond; window <= 0 means DefaultBudgetWindow.
func NewRateBudget(ratio, minPerSecond float64, window time.Duration) *RateBudget {
	if ratio <= 0 {
		ratio = DefaultBudgetRatio
	}
	switch {
	case minPerSecond == 0:
		minPerSecond = DefaultMinRetriesPerSecond
	case minPerSecond < 0:
		minPerSecond = 0
	}
	if window <= 0 {
		window = DefaultBudgetWindow
	}
	return &RateBudget{
		ratio:     ratio,
		floor:     minPerSecond * window.Seconds(),
		bucketDur: max(window/rateBuckets, time.Nanosecond),
		now:       time.Now,
	}
}

// bucket returns the bucket of the current slot and the slot's index,
// clearing the bucket first when it holds an older slot.
func (b *RateBudget) bucket() (*rateBucket, int64) {
	epoch := b.now().UnixNano() / int64(b.bucketDur)
	bk := &b.buckets[epoch%rateBuckets]
	if bk.epoch.Load() != epoch {
		b.mu.Lock()
		b.clear(bk, epoch)
		b.mu.Unlock()
	}
	return bk, epoch
}

// clear makes bk hold slot epoch, empty, unless it already holds it or a
// later one (the clock went back). Callers hold mu. The epoch is written
// last, so a request that sees it counts in the new slot; one that read
// the old epoch a whole window ago may land in the new slot instead,
// which moves one request, never a retry.
func (b *RateBudget) clear(bk *rateBucket, epoch int64) {
	if bk.epoch.Load() >= epoch {
		return
	}
	bk.requests.Store(0)
	bk.retries = 0
	bk.epoch.Store(epoch)
}

// RequestStarted deposits one request into the window. It takes no lock
// unless the request is the first of a new slot: a budget is shared by
// every request to its cluster.
func (b *RateBudget) RequestStarted() {
	bk, _ := b.bucket()
	bk.requests.Add(1)
}

// RequestDone does nothing: the rate budget counts requests when they
// start.
func (b *RateBudget) RequestDone() {}

// TryRetry withdraws a retry when the window allows one.
func (b *RateBudget) TryRetry() bool {
	cur, epoch := b.bucket()
	b.mu.Lock()
	defer b.mu.Unlock()
	var req, ret int64
	for i := range b.buckets {
		if bk := &b.buckets[i]; epoch-bk.epoch.Load() < rateBuckets {
			req += bk.requests.Load()
			ret += bk.retries
		}
	}
	if float64(ret+1) > b.ratio*float64(req)+b.floor {
		b.exhausted.Add(1)
		return false
	}
	cur.retries++
	return true
}

// RetryDone does nothing: a retry stays counted until it leaves the
// window.
func (b *RateBudget) RetryDone() {}

// Exhausted returns how many retries the budget has refused.
func (b *RateBudget) Exhausted() uint64 { return b.exhausted.Load() }

var (
	_ Budget = (*ConcurrencyBudget)(nil)
	_ Budget = (*RateBudget)(nil)
)
