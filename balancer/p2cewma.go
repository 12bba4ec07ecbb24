package balancer

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// P2CEWMA is the name of the peak-EWMA policy, as in Finagle and Linkerd:
// of two distinct serving endpoints drawn at random, the one with the lower
// cost, latency estimate × (requests in flight + 1). The cost reacts both
// to an endpoint that answers slowly and to one that queues requests, and
// sampling two rather than scanning all keeps clients from herding.
// Weights are not used.
//
// The estimate follows each successful response's latency: a response
// slower than the estimate replaces it (the peak, so a slowdown is felt at
// once), a faster one pulls it toward itself by 1 - e^(-Δ/τ), where Δ is
// the time since the endpoint's previous response and τ the decay window,
// so the estimate forgets at the same rate whatever the request rate.
// Between responses the estimate decays toward zero at the same rate, so
// an endpoint shunned for being slow is tried again after a while. A
// failed or cancelled request can raise the estimate but never lower it:
// an endpoint that fails fast must not look fast (a first request that
// fails counts as at least one second). An endpoint with no response yet
// costs nothing while idle, so it gets a first request at once, and more
// than any measured endpoint while that request is in flight, so it is
// not flooded before its latency is known. The estimate lives on the
// endpoint's Load and so survives picker rebuilds.
//
// Settings, as JSON: {"decayWindow": "10s"}, the time constant τ (Linkerd's
// default); it must be positive.
const P2CEWMA = "p2c_ewma"

const defaultDecayWindow = 10 * time.Second

// unobservedCost is the cost of an endpoint that has requests in flight
// but no latency estimate yet, plus its in-flight count so that such
// endpoints still compare among themselves. It is above any realistic
// measured cost (a minute's latency with 10,000 requests in flight is
// 6e14 ns) and small enough that adding in-flight counts keeps float64
// precision.
const unobservedCost = 1e15

// firstFailureLatency is the estimate of an endpoint whose first request
// fails, when the failure took less: an endpoint that refuses connections
// from the start must not look fast, and from here the estimate decays to
// typical latencies in tens of seconds, so such an endpoint is retried
// now and then rather than at every chance.
const firstFailureLatency = float64(time.Second)

// monoEpoch anchors the default clock: time.Since reads the monotonic
// clock, which wall-clock steps cannot disturb.
var monoEpoch = time.Now()

func monoNow() int64 { return int64(time.Since(monoEpoch)) }

func init() { Register(newP2CEWMABuilder(rand.Uint64, monoNow)) }

type p2cEWMAConfig struct {
	DecayWindow *jsonDuration `json:"decayWindow"`
}

func parseP2CEWMA(js json.RawMessage) (time.Duration, error) {
	var c p2cEWMAConfig
	if err := unmarshalConfig(js, &c); err != nil {
		return defaultDecayWindow, err
	}
	if c.DecayWindow == nil {
		return defaultDecayWindow, nil
	}
	if *c.DecayWindow <= 0 {
		return defaultDecayWindow, errors.New("decayWindow: must be positive")
	}
	return time.Duration(*c.DecayWindow), nil
}

// newP2CEWMABuilder returns the policy drawing endpoints with rng and
// reading time, in nanoseconds from any fixed origin, from now.
// An observation takes DoneInfo.End as its time when the data path set it
// (a reading of monoNow, as now is outside tests); tests that bring their
// own clock finish requests without it.
func newP2CEWMABuilder(rng func() uint64, now func() int64) Builder {
	return configBuilder[time.Duration]{
		name:  P2CEWMA,
		parse: parseP2CEWMA,
		build: func(tau time.Duration, serving []*Endpoint) Picker {
			p := &p2cEWMAPicker{endpoints: serving, rng: rng, now: now, tau: float64(tau)}
			p.lastDone.Store(now())
			// One Done func per endpoint, made here, so a pick allocates
			// nothing.
			p.done = make([]func(DoneInfo), len(serving))
			for i, e := range serving {
				p.done[i] = func(d DoneInfo) { p.observe(e, d) }
			}
			return p
		},
	}
}

// p2cEWMAPicker is immutable but for lastDone; Pick and the Done funcs it
// returns are safe for concurrent use, and Pick is lock-free.
type p2cEWMAPicker struct {
	endpoints []*Endpoint
	done      []func(DoneInfo)
	rng       func() uint64
	now       func() int64
	tau       float64 // decay window in nanoseconds
	// lastDone is when a request last finished (or the picker was built).
	// Pick decays estimates to this time rather than reading the clock:
	// under load it trails the clock by the gap between two responses, or
	// τ/1000, whichever is more, and a clock read can cost more than the
	// rest of a pick.
	// When requests stop finishing no estimate needs to decay, since
	// nothing is learned until one finishes.
	lastDone atomic.Int64
}

func (p *p2cEWMAPicker) Pick(PickInfo) (PickResult, error) {
	n := uint64(len(p.endpoints))
	if n == 1 {
		return PickResult{Endpoint: p.endpoints[0], Done: p.done[0]}, nil
	}
	// Two distinct indexes from one random number: i from the high half,
	// j from the low half over the n-1 others.
	r := p.rng()
	i := ((r >> 32) * n) >> 32
	j := (uint64(uint32(r)) * (n - 1)) >> 32
	if j >= i {
		j++
	}
	now := p.lastDone.Load()
	if p.cost(p.endpoints[j], now) < p.cost(p.endpoints[i], now) {
		i = j
	}
	return PickResult{Endpoint: p.endpoints[i], Done: p.done[i]}, nil
}

// cost is the endpoint's latency estimate, decayed to now, times its
// requests in flight plus one.
func (p *p2cEWMAPicker) cost(e *Endpoint, now int64) float64 {
	inFlight := max(e.InFlight(), 0)
	est, stamp, ok := e.load.ewma.read()
	if !ok {
		if inFlight == 0 {
			return 0
		}
		return unobservedCost + float64(inFlight)
	}
	return est * decay(now-stamp, p.tau) * float64(inFlight+1)
}

func (p *p2cEWMAPicker) observe(e *Endpoint, d DoneInfo) {
	now := d.End
	if now == 0 {
		now = p.now()
	}
	// Storing only when lastDone is a thousandth of τ old keeps cores from
	// trading its cache line on every response, at a cost of at most 0.1%
	// of decay. Concurrent Done calls may store out of order; a slightly
	// older time is as good, and decay treats a step back as none.
	if float64(now-p.lastDone.Load()) >= p.tau/1000 {
		p.lastDone.Store(now)
	}
	e.load.ewma.observe(now, float64(max(d.Latency, 0)), p.tau, d.Outcome)
}

// decay is the weight e^(-elapsed/tau) that an estimate keeps after
// elapsed nanoseconds; a clock that seems to run backwards decays nothing.
func decay(elapsed int64, tau float64) float64 {
	if elapsed <= 0 {
		return 1
	}
	x := float64(elapsed) / tau
	if x < 1e-3 {
		// A busy endpoint is observed microseconds apart, far below τ:
		// there the series 1 - x + x²/2 is within x³/6 < 2e-10 of the
		// exponential, at a fraction of math.Exp's cost on the hot path.
		return 1 - x + x*x/2
	}
	return math.Exp(-x)
}

// ewmaState is one address's peak-EWMA latency estimate. Observations are
// serialized by mu; reads take no lock: seq is odd while an observation is
// being written (a seqlock), so a reader sees estimate and stamp from the
// same observation.
type ewmaState struct {
	mu       sync.Mutex
	seq      atomic.Uint64 // 0 until the first observation
	estimate atomic.Uint64 // float64 bits: latency in nanoseconds as of stamp
	stamp    atomic.Int64  // clock reading of the last observation
}

// read returns the estimate and when it was made; ok is false before the
// first observation.
func (s *ewmaState) read() (estimate float64, stamp int64, ok bool) {
	for range 4 {
		seq := s.seq.Load()
		if seq == 0 {
			return 0, 0, false
		}
		if seq&1 == 0 {
			est, at := s.estimate.Load(), s.stamp.Load()
			if s.seq.Load() == seq {
				return math.Float64frombits(est), at, true
			}
		}
	}
	// Writers kept overtaking us. Rather than spin, use what is there: a
	// pair from two neighbouring observations skews one pick's cost, no
	// more.
	return math.Float64frombits(s.estimate.Load()), s.stamp.Load(), true
}

// observe folds in the latency rtt (nanoseconds) of a request that ended
// at now with outcome o.
func (s *ewmaState) observe(now int64, rtt, tau float64, o Outcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	seq := s.seq.Load()
	var est float64
	switch {
	case seq == 0 && o == Success:
		est = rtt
	case seq == 0 && o == Canceled:
		return // the caller gave up: nothing learned about the endpoint
	case seq == 0:
		est = max(rtt, firstFailureLatency)
	default:
		old := math.Float64frombits(s.estimate.Load())
		switch {
		case rtt > old:
			est = rtt // the peak
		case o == Success:
			w := decay(now-s.stamp.Load(), tau)
			est = old*w + rtt*(1-w)
		default:
			est = old // a failure or cancel never lowers the estimate
		}
	}
	s.seq.Store(seq + 1)
	s.estimate.Store(math.Float64bits(est))
	s.stamp.Store(now)
	s.seq.Store(seq + 2)
}
