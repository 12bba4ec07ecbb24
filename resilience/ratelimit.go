package resilience

import (
	"math"
	"sync"
	"time"
)

// Limiter decides whether one more request may go now. Implementations
// must be safe for concurrent use and must not block.
type Limiter interface {
	// Take consumes one unit of allowance. When none is left it returns
	// ok false and how long until one will be.
	Take() (retryAfter time.Duration, ok bool)
}

// TokenBucket is a Limiter that refills at a steady rate up to a burst.
//
// A TokenBucket is safe for concurrent use.
type TokenBucket struct {
	rate  float64 // tokens a second
	burst float64
	now   func() time.Time

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

// NewTokenBucket returns a full bucket refilled with rate tokens a second
// and holding at most burst (burst <= 0 means max(1, rate)). A rate <= 0
// never refills: once the burst is spent, every Take fails.
func NewTokenBucket(rate float64, burst int) *TokenBucket {
	b := float64(burst)
	if burst <= 0 {
		b = max(1, math.Ceil(rate))
	}
	return &TokenBucket{rate: rate, burst: b, tokens: b, now: time.Now}
}

// Take consumes a token when one is available.
func (b *TokenBucket) Take() (time.Duration, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	if !b.last.IsZero() && b.rate > 0 {
		if el := now.Sub(b.last).Seconds(); el > 0 {
			b.tokens = min(b.burst, b.tokens+el*b.rate)
		}
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return 0, true
	}
	if b.rate <= 0 {
		return time.Second, false
	}
	return time.Duration(math.Ceil((1 - b.tokens) / b.rate * float64(time.Second))), false
}

var _ Limiter = (*TokenBucket)(nil)
