package balancer

import (
	"encoding/json"
	"fmt"
	"math"
	"sync"
	"time"
)

// SlowStartConfig configures slow start ([NewSlowStart]), with the meaning
// of Envoy's slow_start_config. It is a plain value: copy it freely.
type SlowStartConfig struct {
	// Window is how long a new endpoint ramps up. Zero or negative turns
	// slow start off.
	Window time.Duration
	// Aggression shapes the ramp: the weight factor is
	// (t / Window)^(1 / Aggression), linear at 1, faster early above 1.
	// Zero means 1; a negative, infinite or NaN value is invalid
	// (Validate).
	Aggression float64
	// MinWeightPercent is the least factor, in percent of the endpoint's
	// weight, so that a new endpoint gets some traffic from the start.
	// Zero means Envoy's default of 10; a negative value means no floor;
	// above 100 is invalid.
	MinWeightPercent float64
}

// Validate reports a setting that has no meaning, naming the field.
func (c SlowStartConfig) Validate() error {
	if a := c.Aggression; a < 0 || math.IsNaN(a) || math.IsInf(a, 0) {
		return fmt.Errorf("aggression %v: must be a finite number above 0", a)
	}
	if p := c.MinWeightPercent; p > 100 || math.IsNaN(p) {
		return fmt.Errorf("min weight percent %v: must be at most 100", p)
	}
	return nil
}

// slowStartSettings is a valid SlowStartConfig with defaults filled in.
type slowStartSettings struct {
	window     time.Duration
	invAggr    float64 // 1 / aggression
	minFactor  float64
	step       time.Duration // how often ramping weights are recomputed
	unitWeight bool          // the child is round_robin: weights are 1
}

func (c SlowStartConfig) settings() slowStartSettings {
	s := slowStartSettings{window: c.Window, invAggr: 1, minFactor: 0.1}
	if c.Aggression > 0 {
		s.invAggr = 1 / c.Aggression
	}
	switch {
	case c.MinWeightPercent < 0:
		s.minFactor = 0
	case c.MinWeightPercent > 0:
		s.minFactor = c.MinWeightPercent / 100
	}
	s.step = max(c.Window/slowStartSteps, minSlowStartStep)
	return s
}

// Ramping weights are recomputed slowStartSteps times over the window, at
// most every minSlowStartStep: a step function that follows the curve
// closely enough (a 60 s linear ramp moves 2.5% of the weight a step)
// while a 10,000-endpoint rotation is rebuilt at most a few dozen times.
const (
	slowStartSteps   = 40
	minSlowStartStep = 50 * time.Millisecond
)

// factor is the share of its weight an endpoint elapsed into its ramp
// gets: max(min, (max(elapsed, 1ms) / window)^(1/aggression)), and 1 once
// the window has passed, as Envoy's applySlowStartFactor computes it.
func (s *slowStartSettings) factor(elapsed time.Duration) float64 {
	if elapsed >= s.window {
		return 1
	}
	t := float64(max(elapsed, time.Millisecond)) / float64(s.window)
	if s.invAggr != 1 {
		t = math.Pow(t, s.invAggr)
	}
	return max(s.minFactor, t)
}

// SupportsSlowStart reports whether NewSlowStart ramps endpoints of the
// named policy: those whose picks follow endpoint weights.
func SupportsSlowStart(policy string) bool {
	switch policy {
	case RoundRobin, WeightedRoundRobin, LeastRequest, Random:
		return true
	}
	return false
}

// NewSlowStart returns child with slow start: an endpoint that joins a
// Cluster after its first endpoint set gets a share of traffic that grows
// over cfg.Window, as with Envoy's slow_start_config. Its weight is
// multiplied by max(MinWeightPercent/100, (t/Window)^(1/Aggression)), t
// being the time since a slow-start balancer first saw the address (at
// least 1 ms), until t reaches Window. The first endpoint set is not
// ramped: every endpoint of it would ramp together, which changes no
// share. An address that leaves and comes back starts again.
//
// Slow start works through weights, so it applies to the policies whose
// picks follow them (SupportsSlowStart): weighted_round_robin, random,
// least_request (its draw, as Envoy's effective weight does), and
// round_robin, which ignores EDS weights and so runs here as
// weighted_round_robin over weights of 1. For any other policy, or a
// zero Window, NewSlowStart returns child itself. p2c_ewma is left out on
// purpose: it already warms an endpoint up, one request at a time, until
// its latency is known.
//
// Weights are recomputed every Window/40 (at least 50 ms) while an
// endpoint ramps, and handed to the child as copies sharing the Load; a
// pick costs what the child's costs. With nothing ramping the child sees
// the endpoints' own weights. The ramp's clock is monotonic.
//
// The Builder is immutable and safe for concurrent use; its Balancer
// follows the Balancer contract, and also updates its child from a timer
// goroutine while endpoints ramp (calls stay serialized). cfg must be
// valid (SlowStartConfig.Validate); invalid fields are read as their
// defaults.
func NewSlowStart(child Builder, cfg SlowStartConfig) Builder {
	return newSlowStart(child, cfg, realClock{})
}

func newSlowStart(child Builder, cfg SlowStartConfig, clk clock) Builder {
	if cfg.Window <= 0 || !SupportsSlowStart(child.Name()) {
		return child
	}
	if cfg.Validate() != nil {
		cfg.Aggression, cfg.MinWeightPercent = 0, 0
	}
	s := cfg.settings()
	leaf := child
	if child.Name() == RoundRobin {
		s.unitWeight = true
		leaf = Get(WeightedRoundRobin)
	}
	return &slowStartBuilder{name: child.Name(), child: child, leaf: leaf, cfg: s, clock: clk}
}

// slowStartBuilder is immutable.
type slowStartBuilder struct {
	name  string
	child Builder // for settings
	leaf  Builder // what runs: child, or weighted_round_robin for round_robin
	cfg   slowStartSettings
	clock clock
}

// Name is the child's: slow start is a setting of the policy, as in
// Envoy's configuration.
func (b *slowStartBuilder) Name() string { return b.name }

// ParseConfig implements ConfigParser for the child's settings.
func (b *slowStartBuilder) ParseConfig(js json.RawMessage) (any, error) {
	return parseChildConfig(b.child, js)
}

func (b *slowStartBuilder) Build(opts BuildOptions) Balancer {
	return &slowStartBalancer{
		cfg:   b.cfg,
		clock: b.clock,
		child: b.leaf.Build(BuildOptions{UpdatePicker: opts.UpdatePicker, Config: opts.Config, OnEjection: opts.OnEjection}),
	}
}

// slowStartBalancer serializes its child's updates with mu, since its
// timer updates the child too.
type slowStartBalancer struct {
	cfg   slowStartSettings
	clock clock
	child Balancer

	mu     sync.Mutex
	eps    []*Endpoint
	stop   func() // the pending recomputation, nil when none
	closed bool
}

func (b *slowStartBalancer) UpdateEndpoints(eps []*Endpoint) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	now := b.clock.now()
	for _, e := range eps {
		// The first slow-start balancer to see a new address starts its
		// ramp; a Load is shared by every copy of the address.
		e.load.rampStart.CompareAndSwap(rampPending, int64(now)+1)
	}
	b.eps = eps
	b.publishLocked(now)
}

// publishLocked hands the child the endpoints with their current weights
// and, while any ramps, arranges the next recomputation.
func (b *slowStartBalancer) publishLocked(now time.Duration) {
	factors := make([]float64, len(b.eps))
	ramping := false
	var maxWeight uint64 = 1
	for i, e := range b.eps {
		factors[i] = 1
		if st := e.load.rampStart.Load(); st > 0 {
			if f := b.cfg.factor(now - time.Duration(st-1)); f < 1 {
				factors[i] = f
				ramping = true
			}
		}
		if !b.cfg.unitWeight {
			maxWeight = max(maxWeight, uint64(e.EffectiveWeight()))
		}
	}
	// While an endpoint ramps, weights are scaled up so that a factor
	// keeps three digits; a scale that would overflow a weight is cut.
	scale := uint64(1)
	if ramping {
		scale = min(slowStartScale, math.MaxUint32/maxWeight)
	}
	view := b.eps
	if ramping || b.cfg.unitWeight {
		view = make([]*Endpoint, len(b.eps))
		for i, e := range b.eps {
			base := uint64(e.EffectiveWeight())
			if b.cfg.unitWeight {
				base = 1
			}
			w := uint32(base * scale)
			if factors[i] < 1 {
				w = uint32(max(1, math.Round(float64(base*scale)*factors[i])))
			}
			if w == e.EffectiveWeight() {
				view[i] = e
				continue
			}
			c := *e
			c.Weight = w
			view[i] = &c
		}
	}
	b.child.UpdateEndpoints(view)
	if ramping && b.stop == nil {
		b.stop = b.clock.afterFunc(b.cfg.step, b.onStep)
	}
}

// slowStartScale is the weight scale while endpoints ramp.
const slowStartScale = 1000

func (b *slowStartBalancer) onStep() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stop = nil
	if b.closed {
		return
	}
	b.publishLocked(b.clock.now())
}

func (b *slowStartBalancer) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.closed = true
	if b.stop != nil {
		b.stop()
		b.stop = nil
	}
	b.child.Close()
}
