package resilience

import (
	"context"
	"time"
)

// WithTestClock replaces the clock of a constructor: now for decisions,
// sleep for backoff waits, jitter for full-jitter draws (nil keeps the
// default).
func WithTestClock(now func() time.Time, sleep func(context.Context, time.Duration) error, jitter func(int64) int64) Option {
	return optionFunc(func(c *config) {
		if now != nil {
			c.clock.now = now
		}
		if sleep != nil {
			c.clock.sleep = sleep
		}
		if jitter != nil {
			c.clock.jitter = jitter
		}
	})
}

// SetRateBudgetNow sets a RateBudget's time source.
func SetRateBudgetNow(b *RateBudget, now func() time.Time) { b.now = now }

// WithBreakerNow sets a Breaker's time source.
func WithBreakerNow(s BreakerSettings, now func() time.Time) BreakerSettings {
	s.now = now
	return s
}

// SetTokenBucketNow sets a TokenBucket's time source.
func SetTokenBucketNow(b *TokenBucket, now func() time.Time) { b.now = now }
