package balancer

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/resolver"
)

// OutlierConfig configures outlier detection ([NewOutlierDetection]), with
// the meaning of Envoy's cluster.outlier_detection and gRFC A50. Every zero
// value stands for Envoy's default, given with each field. It is a plain
// value: copy it freely.
type OutlierConfig struct {
	// Interval is how often rate-based ejection runs and ejected endpoints
	// are considered for return. Zero or negative means 10s.
	Interval time.Duration
	// BaseEjectionTime is how long an endpoint stays out the first time;
	// each ejection multiplies it by the number of times the endpoint has
	// been ejected recently (see NewOutlierDetection). Zero or negative
	// means 30s.
	BaseEjectionTime time.Duration
	// MaxEjectionTime caps the ejection time; below BaseEjectionTime it
	// is read as BaseEjectionTime. Zero means 300s.
	MaxEjectionTime time.Duration
	// MaxEjectionPercent bounds the share of endpoints ejected at once.
	// Zero means 10; above 100 means 100.
	MaxEjectionPercent uint32
	// ConsecutiveErrors ejects an endpoint once this many requests in a
	// row have failed (any Outcome for which IsFailure is true: server
	// and gateway errors, connect failures, resets and timeouts, as
	// Envoy's consecutive_5xx counts local-origin failures when they are
	// not split out). Zero means 5; negative disables it.
	ConsecutiveErrors int
	// ConsecutiveGatewayErrors ejects an endpoint once this many requests
	// in a row have ended in a gateway error: GatewayError, and the
	// local-origin failures Envoy maps to 503 and 504 (ConnectFailure,
	// Reset, Timeout). Zero or negative disables it, as Envoy's default
	// enforcement of 0% does.
	ConsecutiveGatewayErrors int
	// SuccessRate is statistical ejection by success rate, on by default.
	SuccessRate SuccessRateEjection
	// FailurePercentage is ejection by a fixed failure percentage, off by
	// default.
	FailurePercentage FailurePercentageEjection
}

// SuccessRateEjection configures success-rate ejection: at each interval,
// among the endpoints that saw at least RequestVolume requests in it, when
// there are at least MinimumHosts of them, each endpoint whose success rate
// is below mean − StdevFactor/1000 × standard deviation is ejected, with
// probability EnforcementPercentage%. Zero values mean Envoy's defaults. It
// is a plain value.
type SuccessRateEjection struct {
	// Disabled turns success-rate ejection off.
	Disabled bool
	// StdevFactor is in thousandths. Zero means 1900 (1.9 deviations).
	StdevFactor uint32
	// MinimumHosts zero means 5.
	MinimumHosts uint32
	// RequestVolume zero means 100.
	RequestVolume uint32
	// EnforcementPercentage zero means 100; above 100 means 100.
	EnforcementPercentage uint32
}

// FailurePercentageEjection configures failure-percentage ejection: at each
// interval, among the endpoints that saw at least RequestVolume requests in
// it, when there are at least MinimumHosts of them, each endpoint whose
// failures were at least Threshold percent of its requests is ejected,
// with probability EnforcementPercentage%. Zero values mean Envoy's
// defaults. It is a plain value.
type FailurePercentageEjection struct {
	// Enabled turns failure-percentage ejection on.
	Enabled bool
	// Threshold, in percent. Zero means 85; above 100 means 100.
	Threshold uint32
	// MinimumHosts zero means 5.
	MinimumHosts uint32
	// RequestVolume zero means 50.
	RequestVolume uint32
	// EnforcementPercentage zero means 100; above 100 means 100.
	EnforcementPercentage uint32
}

// outlierSettings is an OutlierConfig with the defaults filled in.
type outlierSettings struct {
	interval, base, max  time.Duration
	maxPercent           uint64
	consecutive, gateway int64 // 0: off
	sr                   bool
	srFactor             float64
	srMinHosts, srVolume uint64
	srEnforce            uint64
	fp                   bool
	fpThreshold          float64
	fpMinHosts, fpVolume uint64
	fpEnforce            uint64
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func positiveOr(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func (c OutlierConfig) settings() outlierSettings {
	s := outlierSettings{
		interval:    positiveOr(c.Interval, 10*time.Second),
		base:        positiveOr(c.BaseEjectionTime, 30*time.Second),
		maxPercent:  uint64(min(orDefault(c.MaxEjectionPercent, 10), 100)),
		sr:          !c.SuccessRate.Disabled,
		srFactor:    float64(orDefault(c.SuccessRate.StdevFactor, 1900)) / 1000,
		srMinHosts:  uint64(orDefault(c.SuccessRate.MinimumHosts, 5)),
		srVolume:    uint64(orDefault(c.SuccessRate.RequestVolume, 100)),
		srEnforce:   uint64(min(orDefault(c.SuccessRate.EnforcementPercentage, 100), 100)),
		fp:          c.FailurePercentage.Enabled,
		fpThreshold: float64(min(orDefault(c.FailurePercentage.Threshold, 85), 100)),
		fpMinHosts:  uint64(orDefault(c.FailurePercentage.MinimumHosts, 5)),
		fpVolume:    uint64(orDefault(c.FailurePercentage.RequestVolume, 50)),
		fpEnforce:   uint64(min(orDefault(c.FailurePercentage.EnforcementPercentage, 100), 100)),
	}
	s.max = max(orDefault(c.MaxEjectionTime, 300*time.Second), s.base)
	switch {
	case c.ConsecutiveErrors == 0:
		s.consecutive = 5
	case c.ConsecutiveErrors > 0:
		s.consecutive = int64(c.ConsecutiveErrors)
	}
	if c.ConsecutiveGatewayErrors > 0 {
		s.gateway = int64(c.ConsecutiveGatewayErrors)
	}
	return s
}

// clock is the time source of outlier detection: now is monotonic time
// since an arbitrary origin; afterFunc runs f once, d from now, on some
// goroutine, unless stop is called first.
type clock interface {
	now() time.Duration
	afterFunc(d time.Duration, f func()) (stop func())
}

type realClock struct{}

func (realClock) now() time.Duration { return time.Duration(monoNow()) }

func (realClock) afterFunc(d time.Duration, f func()) func() {
	t := time.AfterFunc(d, f)
	return func() { t.Stop() }
}

// NewOutlierDetection returns a Builder that runs child behind outlier
// detection configured by cfg, with Envoy's semantics (gRFC A50 where
// Envoy leaves a choice open). Its name is "outlier_detection:" followed
// by the child's; settings given as JSON are the child's and go to it.
//
// Outcomes are counted from PickResult.Finish into the endpoint's Load,
// with atomics and no per-pick closure. An endpoint is ejected:
//   - at once, by the Finish that brings its run of consecutive failures
//     (or gateway failures) to the threshold. As in Envoy, the run then
//     starts again from zero whether or not MaxEjectionPercent allowed the
//     ejection, so a refused endpoint is tried again after as many more
//     failures;
//   - at each Interval, by success rate or failure percentage over the
//     requests that finished during the interval just ended.
//
// Ejected endpoints are handed to the child as Unhealthy copies (sharing
// the Load), so the child's picker never chooses them; a priority and
// locality child (NewPriorityLocality) counts them as unhealthy, and may
// still use them in panic mode, as Envoy does.
//
// Ejection lasts min(BaseEjectionTime × k, MaxEjectionTime), where k
// counts the endpoint's recent ejections: it grows by one at each
// ejection (stopping one step past MaxEjectionTime, so that decay brings
// it down in bounded time) and shrinks by one at each Interval tick that
// finds the endpoint in service (the tick that returns it does not
// count). An endpoint returns at the first Interval tick at which its
// ejection time has passed, with its consecutive failure counts reset.
//
// MaxEjectionPercent is counted as Envoy's ejectHost and gRFC A50 count
// it: an endpoint may be ejected only while fewer than MaxEjectionPercent
// percent of the endpoints are, so one endpoint can always be ejected,
// even among fewer than 100/MaxEjectionPercent endpoints.
//
// The Builder is immutable and safe for concurrent use. Its Balancer
// follows the Balancer contract; in addition, the Finish that triggers a
// consecutive-failure ejection rebuilds the child's picker on its own
// goroutine, under the balancer's lock, and the interval runs on a timer
// goroutine, so a child must tolerate UpdateEndpoints from any goroutine
// (calls stay serialized). One detector should watch an address's Load:
// a second detector over the same Endpoints takes the counting over.
func NewOutlierDetection(child Builder, cfg OutlierConfig) Builder {
	return newOutlierDetection(child, cfg, realClock{}, rand.Uint64)
}

func newOutlierDetection(child Builder, cfg OutlierConfig, clk clock, rng func() uint64) Builder {
	return &outlierBuilder{child: child, cfg: cfg.settings(), clock: clk, rng: rng}
}

// outlierBuilder is immutable.
type outlierBuilder struct {
	child Builder
	cfg   outlierSettings
	clock clock
	rng   func() uint64
}

func (b *outlierBuilder) Name() string { return "outlier_detection:" + b.child.Name() }

// ParseConfig implements ConfigParser for the child's settings.
func (b *outlierBuilder) ParseConfig(js json.RawMessage) (any, error) {
	return parseChildConfig(b.child, js)
}

// parseChildConfig parses js as child's settings; a child that takes none
// accepts only empty settings.
func parseChildConfig(child Builder, js json.RawMessage) (any, error) {
	if p, ok := child.(ConfigParser); ok {
		return p.ParseConfig(js)
	}
	if isEmptyJSON(js) {
		return nil, nil
	}
	return nil, fmt.Errorf("balancer: %s: takes no settings", child.Name())
}

func (b *outlierBuilder) Build(opts BuildOptions) Balancer {
	d := &outlierBalancer{
		cfg:     b.cfg,
		clock:   b.clock,
		rng:     b.rng,
		hosts:   map[*Load]*outlierHost{},
		onEject: opts.OnEjection,
	}
	d.child = b.child.Build(BuildOptions{UpdatePicker: opts.UpdatePicker, Config: opts.Config, OnEjection: opts.OnEjection})
	d.mu.Lock()
	d.stop = d.clock.afterFunc(d.cfg.interval, d.onInterval)
	d.mu.Unlock()
	return d
}

// outlierBalancer is a Balancer. Its state is guarded by mu, which also
// serializes every call into the child.
type outlierBalancer struct {
	cfg   outlierSettings
	clock clock
	rng   func() uint64

	mu      sync.Mutex
	child   Balancer
	eps     []*Endpoint            // the latest set, as given
	hosts   map[*Load]*outlierHost // by address, through its Load
	order   []*outlierHost         // hosts in endpoint order
	ejected int                    // hosts with ejected set
	stop    func()                 // stops the pending interval timer
	onEject func(ctx context.Context, addr string, ejected bool)
	closed  bool
	scratch []rated
}

// outlierHost is the detector's record of one address. The counters are
// written by the data path; the rest is guarded by det.mu, except ejected,
// which readers outside the lock (Endpoint.Ejected) load atomically.
type outlierHost struct {
	det  *outlierBalancer
	load *Load
	addr string

	successes, failures        atomic.Uint64 // in the current interval
	consecutive, consecGateway atomic.Int64

	ejected      atomic.Bool
	ejectedAt    time.Duration
	multiplier   int64
	lastSuccess  uint64 // counts of the interval that ended last
	lastFailures uint64
}

// record counts one outcome; it is the data path's only cost of outlier
// detection. ctx is the request's, nil when the data path has none.
func (h *outlierHost) record(o Outcome, ctx context.Context) {
	switch {
	case o == Canceled:
		return // the caller gave up: nothing learned about the endpoint
	case !o.IsFailure():
		h.successes.Add(1)
		// Load before storing keeps a run of successes from writing the
		// shared cache line.
		if h.consecutive.Load() != 0 {
			h.consecutive.Store(0)
		}
		if h.consecGateway.Load() != 0 {
			h.consecGateway.Store(0)
		}
		return
	}
	h.failures.Add(1)
	d := h.det
	gateway := false
	if isGatewayFailure(o) {
		gateway = h.consecGateway.Add(1) == d.cfg.gateway
	} else if h.consecGateway.Load() != 0 {
		h.consecGateway.Store(0)
	}
	// Equality, not at-least: only the request that reaches the threshold
	// triggers, so concurrent failures past it do not each take the lock.
	consecutive := h.consecutive.Add(1) == d.cfg.consecutive
	if gateway || consecutive {
		d.ejectNow(ctx, h, consecutive, gateway)
	}
}

// isGatewayFailure reports whether o is an HTTP 502-504 in Envoy's terms:
// a gateway error, or a local-origin failure that Envoy maps to 503
// (connect failure, reset) or 504 (timeout).
func isGatewayFailure(o Outcome) bool {
	switch o {
	case GatewayError, ConnectFailure, Reset, Timeout:
		return true
	}
	return false
}

// ejectNow ejects h for a run of consecutive failures, or of gateway
// failures, that reached its threshold.
func (d *outlierBalancer) ejectNow(ctx context.Context, h *outlierHost, consecutive, gateway bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || d.hosts[h.load] != h || h.ejected.Load() {
		return
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ejected := d.eject(ctx, h, d.clock.now(), 100)
	// As Envoy does, the run that triggered starts again, ejected or not:
	// an endpoint that MaxEjectionPercent kept in gets another chance
	// after as many failures more.
	if consecutive {
		h.consecutive.Store(0)
	}
	if gateway {
		h.consecGateway.Store(0)
	}
	if ejected {
		d.publish()
	}
}

// eject ejects h unless MaxEjectionPercent forbids it or the enforcement
// draw (percent out of 100) says no; it reports whether it did.
func (d *outlierBalancer) eject(ctx context.Context, h *outlierHost, now time.Duration, enforce uint64) bool {
	if h.ejected.Load() || uint64(d.ejected)*100 >= d.cfg.maxPercent*uint64(len(d.order)) {
		return false
	}
	if enforce < 100 && d.rng()%100 >= enforce {
		return false
	}
	h.ejected.Store(true)
	d.ejected++
	h.ejectedAt = now
	if d.onEject != nil {
		d.onEject(ctx, h.addr, true)
	}
	// Envoy stops growing the multiplier once the ejection time it gives
	// passes the maximum, so that it decays back in bounded time.
	if time.Duration(h.multiplier)*d.cfg.base < d.cfg.max+d.cfg.base {
		h.multiplier++
	}
	return true
}

// ejectionTime is how long h stays out for its current multiplier.
func (d *outlierBalancer) ejectionTime(h *outlierHost) time.Duration {
	// The multiplier stops growing past max/base + 1, so the product
	// cannot overflow.
	return min(time.Duration(h.multiplier)*d.cfg.base, d.cfg.max)
}

// onInterval returns endpoints whose time is up, decays multipliers, and
// runs the rate-based ejections over the interval that just ended.
func (d *outlierBalancer) onInterval() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	now := d.clock.now()
	changed := false
	for _, h := range d.order {
		switch {
		case h.ejected.Load():
			if now-h.ejectedAt >= d.ejectionTime(h) {
				h.ejected.Store(false)
				d.ejected--
				if d.onEject != nil {
					d.onEject(context.Background(), h.addr, false)
				}
				// A run that was close to the threshold before the
				// ejection must not eject the endpoint again at once.
				h.consecutive.Store(0)
				h.consecGateway.Store(0)
				changed = true
			}
		case h.multiplier > 0:
			// Envoy's decay: each interval that finds the endpoint in
			// service, from the one after its return, takes one off.
			h.multiplier--
		}
		h.lastSuccess, h.lastFailures = h.successes.Swap(0), h.failures.Swap(0)
	}
	if d.cfg.sr && d.successRateEjections(now) {
		changed = true
	}
	if d.cfg.fp && d.failurePercentageEjections(now) {
		changed = true
	}
	if changed {
		d.publish()
	}
	d.stop = d.clock.afterFunc(d.cfg.interval, d.onInterval)
}

// rated is an endpoint's success rate, in percent, over the last interval.
type rated struct {
	h    *outlierHost
	rate float64
}

// candidates returns the hosts not ejected that saw at least volume
// requests in the last interval, with their success rates.
func (d *outlierBalancer) candidates(volume uint64) []rated {
	out := d.scratch[:0]
	for _, h := range d.order {
		n := h.lastSuccess + h.lastFailures
		if h.ejected.Load() || n == 0 || n < volume {
			continue
		}
		out = append(out, rated{h, 100 * float64(h.lastSuccess) / float64(n)})
	}
	d.scratch = out
	return out
}

func (d *outlierBalancer) successRateEjections(now time.Duration) bool {
	if uint64(len(d.order)) < d.cfg.srMinHosts {
		return false
	}
	c := d.candidates(d.cfg.srVolume)
	if len(c) == 0 || uint64(len(c)) < d.cfg.srMinHosts {
		return false
	}
	var sum float64
	for _, r := range c {
		sum += r.rate
	}
	mean := sum / float64(len(c))
	var variance float64
	for _, r := range c {
		variance += (r.rate - mean) * (r.rate - mean)
	}
	stdev := math.Sqrt(variance / float64(len(c)))
	threshold := mean - d.cfg.srFactor*stdev
	changed := false
	for _, r := range c {
		if r.rate < threshold && d.eject(context.Background(), r.h, now, d.cfg.srEnforce) {
			changed = true
		}
	}
	return changed
}

func (d *outlierBalancer) failurePercentageEjections(now time.Duration) bool {
	if uint64(len(d.order)) < d.cfg.fpMinHosts {
		return false
	}
	c := d.candidates(d.cfg.fpVolume)
	if len(c) == 0 || uint64(len(c)) < d.cfg.fpMinHosts {
		return false
	}
	changed := false
	for _, r := range c {
		if 100-r.rate >= d.cfg.fpThreshold && d.eject(context.Background(), r.h, now, d.cfg.fpEnforce) {
			changed = true
		}
	}
	return changed
}

// publish hands the child the current set with ejected endpoints marked
// Unhealthy. Copies share the Load, so counts and in-flight figures stay
// with the address.
func (d *outlierBalancer) publish() {
	view := make([]*Endpoint, len(d.eps))
	for i, e := range d.eps {
		view[i] = e
		if h := d.hosts[e.load]; h != nil && h.ejected.Load() && e.Health.Serving() {
			c := *e
			c.Health = resolver.Unhealthy
			view[i] = &c
		}
	}
	d.child.UpdateEndpoints(view)
}

func (d *outlierBalancer) UpdateEndpoints(eps []*Endpoint) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	hosts := make(map[*Load]*outlierHost, len(eps))
	order := make([]*outlierHost, 0, len(eps))
	ejected := 0
	for _, e := range eps {
		if _, dup := hosts[e.load]; dup {
			continue
		}
		h := d.hosts[e.load]
		if h == nil {
			h = &outlierHost{det: d, load: e.load, addr: e.Addr}
			e.load.outlier.Store(h)
		}
		hosts[e.load] = h
		order = append(order, h)
		if h.ejected.Load() {
			ejected++
		}
	}
	for l, h := range d.hosts {
		if hosts[l] == nil {
			l.outlier.CompareAndSwap(h, nil)
		}
	}
	d.hosts, d.order, d.ejected = hosts, order, ejected
	d.eps = slices.Clone(eps)
	d.publish()
}

func (d *outlierBalancer) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	d.closed = true
	if d.stop != nil {
		d.stop()
	}
	for l, h := range d.hosts {
		l.outlier.CompareAndSwap(h, nil)
	}
	d.child.Close()
}
