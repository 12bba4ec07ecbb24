package balancer

import (
	"math/rand/v2"
	"sync/atomic"
)

// RoundRobin is the name of the round-robin policy: each serving endpoint
// in turn, ignoring weights (weighted_round_robin honours them).
const RoundRobin = "round_robin"

func init() { Register(NewPickerBuilder(RoundRobin, newRoundRobinPicker)) }

type roundRobinPicker struct {
	endpoints []*Endpoint
	next      atomic.Uint64
}

func newRoundRobinPicker(serving []*Endpoint) Picker {
	p := &roundRobinPicker{endpoints: serving}
	// Start at a random place so that many clients built at the same
	// moment do not all send their first request to the same endpoint.
	p.next.Store(rand.Uint64N(uint64(len(serving))))
	return p
}

func (p *roundRobinPicker) Pick(PickInfo) (PickResult, error) {
	n := p.next.Add(1) - 1
	return PickResult{Endpoint: p.endpoints[n%uint64(len(p.endpoints))]}, nil
}
