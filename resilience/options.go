package resilience

// Option configures the middleware constructors of this package. Options
// that do not apply to a constructor are ignored by it; nil arguments are
// ignored, leaving the default. Options are immutable and may be shared
// between constructors and goroutines.
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	budget     Budget
	thresholds *Thresholds
	bodyLimit  int64
	clock      clock
}

func newConfig(opts []Option) config {
	c := config{bodyLimit: DefaultBodyBuffer, clock: systemClock()}
	for _, o := range opts {
		if o != nil {
			o.apply(&c)
		}
	}
	return c
}

// WithBudget bounds retries with b, normally shared by every client of
// one upstream cluster. Without it only NumRetries bounds retries.
func WithBudget(b Budget) Option {
	return optionFunc(func(c *config) {
		if b != nil {
			c.budget = b
		}
	})
}

// WithThresholds counts retries against t's MaxRetries (Envoy's
// max_retries threshold); a retry over the limit is not sent.
func WithThresholds(t *Thresholds) Option {
	return optionFunc(func(c *config) {
		if t != nil {
			c.thresholds = t
		}
	})
}

// WithBodyBufferLimit sets how many bytes of a request body without
// GetBody are buffered so the request can be retried; default
// DefaultBodyBuffer. A larger body is sent once and never retried.
// n < 0 disables buffering; 0 keeps the default.
func WithBodyBufferLimit(n int64) Option {
	return optionFunc(func(c *config) {
		if n != 0 {
			c.bodyLimit = max(n, -1)
		}
	})
}
