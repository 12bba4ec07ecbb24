package balancer

import (
	"encoding/json"

	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ClientSideWeightedRoundRobin is the name of gRFC A58's weighted round
// robin: each endpoint's weight comes from the load its backend reports
// (ORCA, gRFC A51), qps / (utilization + eps/qps × error_utilization_penalty),
// where utilization is application_utilization when reported and
// cpu_utilization otherwise. Reports arrive with responses (a gRPC
// trailer, an HTTP endpoint-load-metrics header) and, on gRPC channels
// when EnableOOBLoadReport is set, on an OpenRcaService stream per
// endpoint.
//
// A weight is used only after reports have come for BlackoutPeriod, and
// stops being used when none has come for WeightExpirationPeriod; an
// endpoint without a usable weight counts at the mean of the others. With
// fewer than two usable weights the policy is plain round robin. Weights
// are recomputed every WeightUpdatePeriod, and picks follow grpc-go's
// static-stride earliest-deadline-first scheduler, lock-free.
//
// This is not weighted_round_robin, which follows the weights discovery
// gives the endpoints. Its xDS form is Envoy's
// envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3.ClientSideWeightedRoundRobin.
const ClientSideWeightedRoundRobin = "client_side_weighted_round_robin"

// CSWRRConfig is the configuration of client_side_weighted_round_robin.
// Zero fields take gRFC A58's defaults.
type CSWRRConfig struct {
	// EnableOOBLoadReport asks each endpoint's backend for out-of-band
	// reports (the OpenRcaService stream); gRPC channels only. When false,
	// reports come with responses.
	EnableOOBLoadReport bool
	// OOBReportingPeriod is the interval asked of out-of-band reports;
	// default 10s.
	OOBReportingPeriod time.Duration
	// BlackoutPeriod is how long an endpoint must have reported before
	// its weight is used; default 10s. Negative means none.
	BlackoutPeriod time.Duration
	// WeightExpirationPeriod is how long a weight lasts without a new
	// report; default 3 minutes.
	WeightExpirationPeriod time.Duration
	// WeightUpdatePeriod is how often weights are recomputed; default 1s,
	// at least 100ms.
	WeightUpdatePeriod time.Duration
	// ErrorUtilizationPenalty scales the error rate added to utilization;
	// default 1. Negative is invalid.
	ErrorUtilizationPenalty float64
	// penaltySet distinguishes an explicit 0 from the default.
	penaltySet bool
}

// Defaults of gRFC A58.
const (
	cswrrDefaultOOBPeriod  = 10 * time.Second
	cswrrDefaultBlackout   = 10 * time.Second
	cswrrDefaultExpiration = 3 * time.Minute
	cswrrDefaultUpdate     = time.Second
	cswrrMinUpdate         = 100 * time.Millisecond
)

// withDefaults fills the zero fields.
func (c CSWRRConfig) withDefaults() CSWRRConfig {
	if c.OOBReportingPeriod <= 0 {
		c.OOBReportingPeriod = cswrrDefaultOOBPeriod
	}
	switch {
	case c.BlackoutPeriod == 0:
		c.BlackoutPeriod = cswrrDefaultBlackout
	case c.BlackoutPeriod < 0:
		c.BlackoutPeriod = 0
	}
	if c.WeightExpirationPeriod <= 0 {
		c.WeightExpirationPeriod = cswrrDefaultExpiration
	}
	if c.WeightUpdatePeriod <= 0 {
		c.WeightUpdatePeriod = cswrrDefaultUpdate
	}
	c.WeightUpdatePeriod = max(c.WeightUpdatePeriod, cswrrMinUpdate)
	if c.ErrorUtilizationPenalty == 0 && !c.penaltySet {
		c.ErrorUtilizationPenalty = 1
	}
	return c
}

// WithErrorUtilizationPenalty returns c with the penalty set, 0 included
// (a zero field otherwise means the default, 1).
func (c CSWRRConfig) WithErrorUtilizationPenalty(p float64) CSWRRConfig {
	c.ErrorUtilizationPenalty, c.penaltySet = p, true
	return c
}

// oobInterval reports whether the policy asks for out-of-band reports,
// and how often; the gRPC adapter reads it from the parsed config.
func (c CSWRRConfig) oobInterval() (time.Duration, bool) {
	c = c.withDefaults()
	return c.OOBReportingPeriod, c.EnableOOBLoadReport
}

// cswrrJSON is the policy's JSON configuration, in grpc-go's shape for
// weighted_round_robin.
type cswrrJSON struct {
	EnableOOBLoadReport     bool          `json:"enableOobLoadReport"`
	OOBReportingPeriod      *jsonDuration `json:"oobReportingPeriod"`
	BlackoutPeriod          *jsonDuration `json:"blackoutPeriod"`
	WeightExpirationPeriod  *jsonDuration `json:"weightExpirationPeriod"`
	WeightUpdatePeriod      *jsonDuration `json:"weightUpdatePeriod"`
	ErrorUtilizationPenalty *float64      `json:"errorUtilizationPenalty"`
}

func parseCSWRR(js json.RawMessage) (CSWRRConfig, error) {
	var j cswrrJSON
	if err := unmarshalConfig(js, &j); err != nil {
		return CSWRRConfig{}, err
	}
	c := CSWRRConfig{EnableOOBLoadReport: j.EnableOOBLoadReport}
	for _, d := range []struct {
		name string
		v    *jsonDuration
		to   *time.Duration
	}{
		{"oobReportingPeriod", j.OOBReportingPeriod, &c.OOBReportingPeriod},
		{"blackoutPeriod", j.BlackoutPeriod, &c.BlackoutPeriod},
		{"weightExpirationPeriod", j.WeightExpirationPeriod, &c.WeightExpirationPeriod},
		{"weightUpdatePeriod", j.WeightUpdatePeriod, &c.WeightUpdatePeriod},
	} {
		if d.v == nil {
			continue
		}
		if *d.v < 0 {
			return CSWRRConfig{}, fmt.Errorf("%s %v is negative", d.name, time.Duration(*d.v))
		}
		*d.to = time.Duration(*d.v)
		if d.name == "blackoutPeriod" && *d.v == 0 {
			c.BlackoutPeriod = -1 // an explicit 0: no blackout
		}
	}
	if p := j.ErrorUtilizationPenalty; p != nil {
		if *p < 0 || math.IsNaN(*p) || math.IsInf(*p, 0) {
			return CSWRRConfig{}, fmt.Errorf("errorUtilizationPenalty %v is not a finite non-negative number", *p)
		}
		c = c.WithErrorUtilizationPenalty(*p)
	}
	return c, nil
}

// ValidateCSWRRConfig reports what is wrong with c, naming the field.
func ValidateCSWRRConfig(c CSWRRConfig) error {
	if p := c.ErrorUtilizationPenalty; p < 0 || math.IsNaN(p) || math.IsInf(p, 0) {
		return fmt.Errorf("balancer: %s: ErrorUtilizationPenalty %v is not a finite non-negative number", ClientSideWeightedRoundRobin, p)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"OOBReportingPeriod", c.OOBReportingPeriod},
		{"WeightExpirationPeriod", c.WeightExpirationPeriod},
		{"WeightUpdatePeriod", c.WeightUpdatePeriod},
	} {
		if d.v < 0 {
			return fmt.Errorf("balancer: %s: %s %v is negative", ClientSideWeightedRoundRobin, d.name, d.v)
		}
	}
	return nil
}

func init() { Register(cswrrBuilder{rng: rand.Uint64}) }

// NewClientSideWRR returns client_side_weighted_round_robin with cfg's
// settings whatever configuration it is built with: how a data path
// without xDS runs the policy with settings other than the defaults.
// EnableOOBLoadReport takes effect only through a parsed configuration
// (xDS), which the gRPC adapter reads.
func NewClientSideWRR(cfg CSWRRConfig) (Builder, error) {
	if err := ValidateCSWRRConfig(cfg); err != nil {
		return nil, err
	}
	return cswrrBuilder{rng: rand.Uint64, fixed: &cfg}, nil
}

type cswrrBuilder struct {
	rng   func() uint64
	fixed *CSWRRConfig // set: the settings, whatever BuildOptions.Config says
}

func (cswrrBuilder) Name() string { return ClientSideWeightedRoundRobin }

// ParseConfig implements ConfigParser: JSON in grpc-go's shape for
// weighted_round_robin, durations as strings such as "10s".
func (cswrrBuilder) ParseConfig(js json.RawMessage) (any, error) {
	c, err := parseCSWRR(js)
	if err != nil {
		return nil, fmt.Errorf("balancer: %s: %w", ClientSideWeightedRoundRobin, err)
	}
	return c, nil
}

func (b cswrrBuilder) Build(opts BuildOptions) Balancer {
	cfg, _ := opts.Config.(CSWRRConfig)
	if b.fixed != nil {
		cfg = *b.fixed
	}
	cfg = cfg.withDefaults()
	return &cswrrBalancer{cfg: cfg, update: opts.UpdatePicker, rng: b.rng}
}

// cswrrBalancer recomputes weights on a ticker of its own while it has
// endpoints. mu serializes its picker updates; the ticker's goroutine ends
// before Close returns.
type cswrrBalancer struct {
	cfg    CSWRRConfig
	update func(Picker)
	rng    func() uint64

	mu      sync.Mutex
	serving []*Endpoint
	cur     *cswrrPicker // the last picker published; nil when none serves
	closed  bool
	stop    chan struct{}
	done    chan struct{}
}

func (b *cswrrBalancer) UpdateEndpoints(eps []*Endpoint) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.serving = Serving(eps)
	b.cur = nil // a new endpoint set always gets a new picker
	b.publishLocked(monoNow())
	if b.stop == nil {
		b.stop, b.done = make(chan struct{}), make(chan struct{})
		go b.run(b.stop, b.done)
	}
}

func (b *cswrrBalancer) run(stop, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(b.cfg.WeightUpdatePeriod)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			b.mu.Lock()
			if !b.closed {
				b.publishLocked(monoNow())
			}
			b.mu.Unlock()
		}
	}
}

// publishLocked publishes a picker with the weights as of now, unless
// they are those of the picker in force: a channel then is not told of a
// new picker every update period while the load holds steady.
func (b *cswrrBalancer) publishLocked(now int64) {
	if len(b.serving) == 0 {
		b.update(ErrPicker(ErrNoHealthyEndpoint))
		return
	}
	w := cswrrWeights(b.serving, b.cfg, now)
	if b.cur != nil && slices.Equal(w, b.cur.weights) {
		return
	}
	p := &cswrrPicker{endpoints: b.serving, weights: w}
	p.next.Store(b.rng())
	b.cur = p
	b.update(p)
}

func (b *cswrrBalancer) Close() {
	b.mu.Lock()
	b.closed = true
	stop, done := b.stop, b.done
	b.stop = nil
	b.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}

// cswrrMaxWeight is the largest scaled weight, as in grpc-go's
// static-stride scheduler.
const cswrrMaxWeight = math.MaxUint16

// cswrrWeights returns the scaled weights of eps at now, or nil for round
// robin: when fewer than two have a usable weight, or all come out equal.
// Endpoints without a usable weight count at the mean of those with one.
func cswrrWeights(eps []*Endpoint, cfg CSWRRConfig, now int64) []uint16 {
	if len(eps) < 2 {
		return nil
	}
	raw := make([]float64, len(eps))
	var sum, top float64
	nonZero := 0
	for i, e := range eps {
		w := e.load.orca.weight(now, int64(cfg.BlackoutPeriod), int64(cfg.WeightExpirationPeriod), cfg.ErrorUtilizationPenalty)
		if math.IsNaN(w) || math.IsInf(w, 0) || w < 0 {
			w = 0
		}
		raw[i] = w
		if w > 0 {
			sum += w
			nonZero++
			top = max(top, w)
		}
	}
	if nonZero < 2 {
		return nil
	}
	scale := cswrrMaxWeight / top
	mean := max(uint16(math.Round(scale*sum/float64(nonZero))), 1)
	weights := make([]uint16, len(eps))
	equal := true
	for i, w := range raw {
		if w == 0 {
			weights[i] = mean
			continue
		}
		weights[i] = max(uint16(math.Round(scale*w)), 1)
		if weights[i] != mean {
			equal = false
		}
	}
	if equal {
		return nil
	}
	return weights
}

// cswrrPicker is immutable but for its cursor; Pick is lock-free.
type cswrrPicker struct {
	endpoints []*Endpoint
	weights   []uint16 // nil: round robin
	next      atomic.Uint64
}

// Pick follows grpc-go's static-stride scheduler: the cursor's value
// names an endpoint (its remainder by the endpoint count) and a
// generation (its quotient), and the endpoint takes the turn in weight
// generations out of every cswrrMaxWeight, spread evenly by the multiply
// and offset. The heaviest endpoint takes every turn it is offered, so a
// pick looks at fewer slots than there are endpoints.
func (p *cswrrPicker) Pick(PickInfo) (PickResult, error) {
	n := uint64(len(p.endpoints))
	if p.weights == nil {
		return PickResult{Endpoint: p.endpoints[(p.next.Add(1)-1)%n]}, nil
	}
	const offset = cswrrMaxWeight / 2
	for {
		idx := p.next.Add(1) - 1
		i, gen := idx%n, idx/n
		w := uint64(p.weights[i])
		if (w*gen+i*offset)%cswrrMaxWeight >= cswrrMaxWeight-w {
			return PickResult{Endpoint: p.endpoints[i]}, nil
		}
	}
}
