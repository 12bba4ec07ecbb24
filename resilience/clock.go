package resilience

import (
	"context"
	"math/rand/v2"
	"time"
)

// clock is the time source of every timer-driven decision in this package,
// so tests can move time and skip backoff waits instead of sleeping.
type clock struct {
	now func() time.Time
	// sleep waits d or until ctx is done, returning ctx's error then.
	sleep func(ctx context.Context, d time.Duration) error
	// jitter returns a uniform value in [0, n); n > 0.
	jitter func(n int64) int64
}

func systemClock() clock {
	return clock{now: time.Now, sleep: sleepContext, jitter: rand.Int64N}
}

func sleepContext(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
