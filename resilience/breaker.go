package resilience

import (
	"fmt"
	"sync"
	"time"

	"github.com/weftmesh/weft/balancer"
)

// State is a Breaker's state, a plain value.
type State uint8

// Breaker states.
const (
	// StateClosed: requests flow; failures are counted.
	StateClosed State = iota
	// StateOpen: requests fail fast with ErrCircuitOpen until the cool-down
	// ends.
	StateOpen
	// StateHalfOpen: a limited number of probe requests test whether the
	// upstream has recovered.
	StateHalfOpen
)

func (s State) String() string {
	switch s {
	case StateClosed:
		return "closed"
	case StateOpen:
		return "open"
	case StateHalfOpen:
		return "half-open"
	}
	return fmt.Sprintf("state(%d)", s)
}

// Breaker defaults.
const (
	DefaultConsecutiveFailures = 5
	DefaultBreakerWindow       = 10 * time.Second
	DefaultMinRequests         = 20
	DefaultOpenTimeout         = 30 * time.Second
	DefaultHalfOpenProbes      = 1
)

// BreakerSettings configure a Breaker. The zero value opens after
// DefaultConsecutiveFailures consecutive failures, stays open
// DefaultOpenTimeout, and then lets DefaultHalfOpenProbes probe through.
// It is a value, copied by NewBreaker; its funcs may be called from any
// goroutine.
type BreakerSettings struct {
	// ConsecutiveFailures opens the breaker after this many failures in a
	// row; zero means the default, negative disables the rule.
	ConsecutiveFailures int
	// FailureRate opens the breaker when the failed share of the requests
	// in the last Window reaches it (0 < FailureRate <= 1) and at least
	// MinRequests were seen; zero disables the rule.
	FailureRate float64
	// Window is the sliding window of FailureRate; zero means
	// DefaultBreakerWindow.
	Window time.Duration
	// MinRequests is the fewest requests in Window for FailureRate to
	// apply; zero means DefaultMinRequests.
	MinRequests int
	// OpenTimeout is how long the breaker stays open before probing; zero
	// means DefaultOpenTimeout.
	OpenTimeout time.Duration
	// HalfOpenProbes is how many requests may probe in the half-open state;
	// that many successes close the breaker, one failure opens it again.
	// Zero means DefaultHalfOpenProbes.
	HalfOpenProbes int
	// IsFailure says which outcomes count against the upstream; nil means
	// balancer.Outcome.IsFailure. Canceled outcomes never count either
	// way.
	IsFailure func(balancer.Outcome) bool
	// OnStateChange, when not nil, is called on every transition, with the
	// breaker's lock held: it must not call the breaker.
	OnStateChange func(from, to State)
	// now is the time source; nil means time.Now.
	now func() time.Time
}

const breakerBuckets = 10

// Breaker is a classic circuit breaker: closed, open after too many
// failures, half-open after a cool-down with a quota of probes.
//
// Each change of state starts a new generation; results of requests
// admitted in an earlier generation are discarded, so a slow failure from
// before the breaker closed cannot reopen it.
//
// A Breaker is safe for concurrent use.
type Breaker struct {
	s BreakerSettings

	mu          sync.Mutex
	state       State
	gen         *generation
	consecutive int
	openUntil   time.Time
	admitted    int // half-open probes admitted
	successes   int // half-open probes that succeeded
	buckets     [breakerBuckets]breakerBucket
	bucketDur   time.Duration
}

type breakerBucket struct {
	epoch           int64
	total, failures int
}

// generation identifies one stretch of a breaker's state; its done method
// value is made once so that Allow does not allocate.
type generation struct {
	b    *Breaker
	done func(balancer.Outcome)
}

// NewBreaker returns a closed Breaker.
func NewBreaker(s BreakerSettings) *Breaker {
	if s.ConsecutiveFailures == 0 {
		s.ConsecutiveFailures = DefaultConsecutiveFailures
	}
	if s.Window <= 0 {
		s.Window = DefaultBreakerWindow
	}
	if s.MinRequests <= 0 {
		s.MinRequests = DefaultMinRequests
	}
	if s.OpenTimeout <= 0 {
		s.OpenTimeout = DefaultOpenTimeout
	}
	if s.HalfOpenProbes <= 0 {
		s.HalfOpenProbes = DefaultHalfOpenProbes
	}
	if s.IsFailure == nil {
		s.IsFailure = balancer.Outcome.IsFailure
	}
	if s.now == nil {
		s.now = time.Now
	}
	b := &Breaker{s: s, bucketDur: max(s.Window/breakerBuckets, time.Nanosecond)}
	b.newGeneration()
	return b
}

func (b *Breaker) newGeneration() {
	g := &generation{b: b}
	g.done = g.report
	b.gen = g
	b.consecutive, b.admitted, b.successes = 0, 0, 0
	b.buckets = [breakerBuckets]breakerBucket{}
}

// State returns the current state, moving from open to half-open when the
// cool-down has passed.
func (b *Breaker) State() State {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tick(b.s.now())
	return b.state
}

func (b *Breaker) setState(to State, now time.Time) {
	from := b.state
	if from == to {
		return
	}
	b.state = to
	b.newGeneration()
	if to == StateOpen {
		b.openUntil = now.Add(b.s.OpenTimeout)
	}
	if b.s.OnStateChange != nil {
		b.s.OnStateChange(from, to)
	}
}

func (b *Breaker) tick(now time.Time) {
	if b.state == StateOpen && !now.Before(b.openUntil) {
		b.setState(StateHalfOpen, now)
	}
}

// Allow asks to send one request. On success the caller must call done
// exactly once with the request's outcome; done does not block. When the
// breaker is open, or half-open with its probes taken, Allow returns
// ErrCircuitOpen.
func (b *Breaker) Allow() (done func(balancer.Outcome), err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == StateOpen { // the clock is read only when it matters
		b.tick(b.s.now())
	}
	switch b.state {
	case StateOpen:
		return nil, ErrCircuitOpen
	case StateHalfOpen:
		if b.admitted >= b.s.HalfOpenProbes {
			return nil, ErrCircuitOpen
		}
		b.admitted++
	}
	return b.gen.done, nil
}

func (g *generation) report(o balancer.Outcome) {
	b := g.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.gen != g {
		return // admitted before the last change of state
	}
	if o == balancer.Canceled {
		if b.state == StateHalfOpen {
			b.admitted-- // the probe told nothing; let another try
		}
		return
	}
	failed := b.s.IsFailure(o)
	switch b.state {
	case StateHalfOpen:
		if failed {
			b.setState(StateOpen, b.s.now())
			return
		}
		b.successes++
		if b.successes >= b.s.HalfOpenProbes {
			b.setState(StateClosed, b.s.now())
		}
	case StateClosed:
		// Only the failure-rate window needs the time of a result.
		var now time.Time
		if b.s.FailureRate > 0 {
			now = b.s.now()
			bk := b.bucket(now)
			bk.total++
			if failed {
				bk.failures++
			}
		}
		if !failed {
			b.consecutive = 0
			return
		}
		b.consecutive++
		if b.s.ConsecutiveFailures > 0 && b.consecutive >= b.s.ConsecutiveFailures {
			b.setState(StateOpen, b.s.now())
			return
		}
		if b.s.FailureRate > 0 {
			total, failures := b.windowCounts(now)
			if total >= b.s.MinRequests && float64(failures) >= b.s.FailureRate*float64(total) {
				b.setState(StateOpen, now)
			}
		}
	}
}

func (b *Breaker) bucket(now time.Time) *breakerBucket {
	epoch := now.UnixNano() / int64(b.bucketDur)
	bk := &b.buckets[epoch%breakerBuckets]
	if bk.epoch != epoch {
		*bk = breakerBucket{epoch: epoch}
	}
	return bk
}

func (b *Breaker) windowCounts(now time.Time) (total, failures int) {
	epoch := now.UnixNano() / int64(b.bucketDur)
	for i := range b.buckets {
		if bk := &b.buckets[i]; epoch-bk.epoch < breakerBuckets {
			total += bk.total
			failures += bk.failures
		}
	}
	return total, failures
}
