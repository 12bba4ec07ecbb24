package balancer

import (
	"slices"
	"sync"
	"time"
)

// Constructors with injected randomness and time, for deterministic tests.
var (
	NewRandomBuilder       = newRandomBuilder
	NewWRRBuilder          = newWRRBuilder
	NewLeastRequestBuilder = newLeastRequestBuilder
	NewRingHashBuilder     = newRingHashBuilder
	NewMaglevBuilder       = newMaglevBuilder
)

// NewP2CEWMABuilder returns the p2c_ewma policy reading time from now.
func NewP2CEWMABuilder(rng func() uint64, now func() time.Duration) Builder {
	return newP2CEWMABuilder(rng, func() int64 { return int64(now()) })
}

// LatencyEstimate returns e's stored peak-EWMA estimate, as of its last
// observation, and whether there has been one.
func LatencyEstimate(e *Endpoint) (time.Duration, bool) {
	est, _, ok := e.load.ewma.read()
	return time.Duration(est), ok
}

// ScheduleForTest returns the weighted round-robin rotation for eps.
func ScheduleForTest(eps []*Endpoint, limit int) []uint32 {
	return edfSchedule(scheduleWeights(eps, limit))
}

// AddInFlight changes e's in-flight count by n, as n picks (or, negative,
// finishes) would.
func AddInFlight(e *Endpoint, n int64) { e.load.inFlight.Add(n) }

// RingSize returns the number of entries of a ring_hash picker's ring.
func RingSize(p Picker) int { return len(p.(*ringHashPicker).hashes) }

// MaglevTable returns a maglev picker's table as endpoint addresses.
func MaglevTable(p Picker) []string {
	m := p.(*maglevPicker)
	out := make([]string, len(m.table))
	for i, t := range m.table {
		out[i] = m.endpoints[t].Addr
	}
	return out
}

// FakeClock is a manual clock for outlier detection. Advance runs the
// timers that fall due, in order, on the caller's goroutine. It is safe for
// concurrent use.
type FakeClock struct {
	mu     sync.Mutex
	t      time.Duration
	timers []*fakeTimer
}

type fakeTimer struct {
	at      time.Duration
	f       func()
	stopped bool
}

func (c *FakeClock) now() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *FakeClock) afterFunc(d time.Duration, f func()) func() {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.t + d, f: f}
	c.timers = append(c.timers, t)
	return func() {
		c.mu.Lock()
		t.stopped = true
		c.mu.Unlock()
	}
}

// Now returns the time since the clock's origin.
func (c *FakeClock) Now() time.Duration { return c.now() }

// Advance moves the clock d forward, running each timer as its time comes.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.t + d
	c.mu.Unlock()
	for range 1 << 20 {
		c.mu.Lock()
		next := -1
		for i, t := range c.timers {
			if !t.stopped && t.at <= end && (next < 0 || t.at < c.timers[next].at) {
				next = i
			}
		}
		if next < 0 {
			c.t = end
			c.timers = slices.DeleteFunc(c.timers, func(t *fakeTimer) bool { return t.stopped })
			c.mu.Unlock()
			return
		}
		t := c.timers[next]
		c.timers = slices.Delete(c.timers, next, next+1)
		c.t = t.at
		c.mu.Unlock()
		t.f()
	}
	panic("FakeClock: timers keep falling due; does one re-arm with no delay?")
}

// NewOutlierDetectionForTest is NewOutlierDetection with the clock c and
// enforcement draws from rng.
func NewOutlierDetectionForTest(child Builder, cfg OutlierConfig, c *FakeClock, rng func() uint64) Builder {
	return newOutlierDetection(child, cfg, c, rng)
}

// NewPriorityLocalityForTest is NewPriorityLocality drawing from rng.
var NewPriorityLocalityForTest = newPriorityLocality

// NewSlowStartForTest is NewSlowStart reading time from c.
func NewSlowStartForTest(child Builder, cfg SlowStartConfig, c *FakeClock) Builder {
	return newSlowStart(child, cfg, c)
}

// SlowStartFactor is the factor of an endpoint elapsed into its ramp.
func SlowStartFactor(cfg SlowStartConfig, elapsed time.Duration) float64 {
	s := cfg.settings()
	return s.factor(elapsed)
}

// RecordLoadAt records r for e's address as a report that came at now.
func RecordLoadAt(e *Endpoint, r *LoadReport, now int64) { e.load.orca.record(r, now) }

// CSWRRWeight returns e's gRFC A58 weight at now under cfg's settings.
func CSWRRWeight(e *Endpoint, cfg CSWRRConfig, now int64) float64 {
	cfg = cfg.withDefaults()
	return e.load.orca.weight(now, int64(cfg.BlackoutPeriod), int64(cfg.WeightExpirationPeriod), cfg.ErrorUtilizationPenalty)
}

// CSWRRScaledWeights returns the scheduler weights of eps at now, nil for
// round robin.
func CSWRRScaledWeights(eps []*Endpoint, cfg CSWRRConfig, now int64) []uint16 {
	return cswrrWeights(eps, cfg.withDefaults(), now)
}

// NewCSWRRPicker returns the policy's picker over eps with the scaled
// weights w (nil: round robin).
func NewCSWRRPicker(eps []*Endpoint, w []uint16) Picker {
	return &cswrrPicker{endpoints: eps, weights: w}
}
