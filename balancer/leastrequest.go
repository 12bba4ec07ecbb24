package balancer

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
)

// LeastRequest is the name of the least-request policy: of a few serving
// endpoints drawn at random, the one with the fewest requests in flight
// (power of two choices, as grpc-go's least_request and Envoy's
// LEAST_REQUEST). Sampling a few rather than scanning all keeps a pick
// constant-time and avoids every client herding onto the single least
// loaded endpoint.
//
// Settings, as JSON: {"choiceCount": 2, "activeRequestBias": 1.0}.
// choiceCount is how many endpoints are drawn (with replacement); it must
// be at least 2 and is capped at 10, as gRFC A48 says. activeRequestBias
// applies only when weights differ and must be at least 0.
//
// When every weight is equal the endpoint with the fewest requests in
// flight among those drawn wins. When weights differ, Envoy's effective
// weight weight/(inFlight+1)^bias decides, without Envoy's shared
// scheduler: candidates are drawn with probability proportional to weight,
// and one of them is chosen with probability proportional to
// 1/(inFlight+1)^bias, so that each factor of the effective weight counts
// once. With nothing in flight, or bias 0, this is weighted random; as bias
// grows it tends to the least in flight among the candidates.
const LeastRequest = "least_request"

const (
	defaultChoiceCount = 2
	maxChoiceCount     = 10
	defaultRequestBias = 1.0
)

func init() { Register(newLeastRequestBuilder(rand.Uint64)) }

type leastRequestConfig struct {
	ChoiceCount       *uint32  `json:"choiceCount"`
	ActiveRequestBias *float64 `json:"activeRequestBias"`
}

// leastRequestSettings are the parsed, defaulted settings.
type leastRequestSettings struct {
	choices int
	bias    float64
}

func parseLeastRequest(js json.RawMessage) (leastRequestSettings, error) {
	s := leastRequestSettings{choices: defaultChoiceCount, bias: defaultRequestBias}
	var c leastRequestConfig
	if err := unmarshalConfig(js, &c); err != nil {
		return s, err
	}
	if c.ChoiceCount != nil {
		if *c.ChoiceCount < 2 {
			return s, fmt.Errorf("choiceCount %d: must be at least 2", *c.ChoiceCount)
		}
		s.choices = int(min(*c.ChoiceCount, maxChoiceCount))
	}
	if c.ActiveRequestBias != nil {
		b := *c.ActiveRequestBias
		if b < 0 || math.IsNaN(b) || math.IsInf(b, 0) {
			return s, errors.New("activeRequestBias: must be a finite number at least 0")
		}
		s.bias = b
	}
	return s, nil
}

// newLeastRequestBuilder returns the policy drawing candidates with rng.
func newLeastRequestBuilder(rng func() uint64) Builder {
	return configBuilder[leastRequestSettings]{
		name:  LeastRequest,
		parse: parseLeastRequest,
		build: func(s leastRequestSettings, serving []*Endpoint) Picker {
			return &leastRequestPicker{
				endpoints: serving,
				draw:      newWeightedDraw(serving, rng),
				rng:       rng,
				choices:   s.choices,
				bias:      s.bias,
				weighted:  weightsDiffer(serving),
			}
		},
	}
}

// leastRequestPicker is immutable; Pick is safe for concurrent use and
// lock-free.
type leastRequestPicker struct {
	endpoints []*Endpoint
	draw      weightedDraw
	rng       func() uint64
	choices   int
	bias      float64
	weighted  bool
}

func (p *leastRequestPicker) Pick(PickInfo) (PickResult, error) {
	if len(p.endpoints) == 1 {
		return PickResult{Endpoint: p.endpoints[0]}, nil
	}
	if !p.weighted {
		best := p.endpoints[p.draw.next()]
		bestLoad := best.InFlight()
		for range p.choices - 1 {
			e := p.endpoints[p.draw.next()]
			if l := e.InFlight(); l < bestLoad {
				best, bestLoad = e, l
			}
		}
		return PickResult{Endpoint: best}, nil
	}
	var (
		cand  [maxChoiceCount]*Endpoint
		score [maxChoiceCount]float64
		total float64
	)
	for i := range p.choices {
		e := p.endpoints[p.draw.next()]
		cand[i] = e
		score[i] = p.loadFactor(e.InFlight())
		total += score[i]
	}
	x := float64(p.rng()>>11) * 0x1p-53 * total
	for i := range p.choices - 1 {
		if x < score[i] {
			return PickResult{Endpoint: cand[i]}, nil
		}
		x -= score[i]
	}
	return PickResult{Endpoint: cand[p.choices-1]}, nil
}

// loadFactor is Envoy's effective weight divided by the weight:
// 1/(inFlight+1)^bias.
func (p *leastRequestPicker) loadFactor(inFlight int64) float64 {
	a := float64(max(inFlight, 0)) + 1
	switch p.bias {
	case 0:
		return 1
	case 1:
		return 1 / a
	default:
		return math.Pow(a, -p.bias)
	}
}
