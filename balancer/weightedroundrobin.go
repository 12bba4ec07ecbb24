package balancer

import (
	"math/bits"
	"math/rand/v2"
	"sync/atomic"
)

// WeightedRoundRobin is the name of the weighted round-robin policy: each
// serving endpoint in turn, as often as its weight says, spread out rather
// than in bursts (weights 2, 2, 1 give a b c a b, not a a b b c).
//
// The picker precomputes one period of the rotation when it is built, so a
// pick is an atomic increment and a table read. The period is the sum of
// the weights divided by their greatest common divisor; when that exceeds
// max(65536, 4 × endpoints) slots, each weight is rounded to the nearest
// slot of a rotation that size (every endpoint keeping at least one), so an
// endpoint's share may be off by up to one slot: 1/65536 of the traffic at
// the default size. This keeps a picker's memory bounded for any weights
// while picks stay exact for the weights seen in practice.
//
// The rotation is earliest-deadline-first: the k-th turn (from 0) of an
// endpoint of weight w falls due at (k + 1/2) / w, and turns are taken in
// order of due time, ties by position in the endpoint list. This is the
// order of the Sainte-Laguë apportionment: at every point of the rotation
// each endpoint has had within one turn of its ideal share when there are
// two endpoints, and within 1.4 turns over the thousands of weight sets
// the tests try with more. It is built in
// O(period × log endpoints) with a heap, where nginx's smooth weighted
// round robin, as even in practice, takes O(period × endpoints).
const WeightedRoundRobin = "weighted_round_robin"

// wrrMinScheduleSize is the rotation length that weights may need before
// they are rounded; 4 × endpoints is used instead when larger.
const wrrMinScheduleSize = 1 << 16

func init() { Register(newWRRBuilder(rand.Uint64)) }

// newWRRBuilder returns the policy starting each picker's rotation at a
// place drawn from rng.
func newWRRBuilder(rng func() uint64) Builder {
	return NewPickerBuilder(WeightedRoundRobin, func(serving []*Endpoint) Picker {
		return newWRRPicker(serving, rng)
	})
}

// wrrPicker is immutable but for its cursor; Pick is safe for concurrent
// use and lock-free.
type wrrPicker struct {
	endpoints []*Endpoint
	schedule  []uint32 // indexes into endpoints; one period of the rotation
	next      atomic.Uint64
}

func newWRRPicker(serving []*Endpoint, rng func() uint64) *wrrPicker {
	weights := scheduleWeights(serving, max(wrrMinScheduleSize, 4*len(serving)))
	p := &wrrPicker{endpoints: serving, schedule: edfSchedule(weights)}
	// Start at a random place, as round_robin does, so that clients built
	// at the same moment do not move in lockstep.
	p.next.Store(rng() % uint64(len(p.schedule)))
	return p
}

func (p *wrrPicker) Pick(PickInfo) (PickResult, error) {
	n := p.next.Add(1) - 1
	return PickResult{Endpoint: p.endpoints[p.schedule[n%uint64(len(p.schedule))]]}, nil
}

// scheduleWeights returns the endpoints' weights reduced by their greatest
// common divisor and, when they still add up to more than limit, rounded
// to the nearest limit-th of their sum, at least 1.
func scheduleWeights(eps []*Endpoint, limit int) []uint64 {
	w := make([]uint64, len(eps))
	for i, e := range eps {
		w[i] = uint64(e.EffectiveWeight())
	}
	sum := reduceWeights(w)
	if sum <= uint64(limit) {
		return w
	}
	for i := range w {
		// w[i] * limit / sum, rounded to nearest, without overflow; the
		// quotient is at most limit, so Div64 cannot panic.
		hi, lo := bits.Mul64(w[i], uint64(limit))
		q, r := bits.Div64(hi, lo, sum)
		if r >= sum-r {
			q++
		}
		w[i] = max(q, 1)
	}
	reduceWeights(w)
	return w
}

// reduceWeights divides w by the greatest common divisor of its elements
// and returns their sum.
func reduceWeights(w []uint64) uint64 {
	var g uint64
	for _, x := range w {
		for x != 0 {
			g, x = x, g%x
		}
	}
	var sum uint64
	for i := range w {
		w[i] /= g
		sum += w[i]
	}
	return sum
}

// edfSchedule returns one period of the earliest-deadline-first rotation
// over weights: sum(weights) slots. It runs in O(sum × log n) with a binary
// heap of endpoints keyed by their next turn's due time.
func edfSchedule(weights []uint64) []uint32 {
	var total uint64
	for _, w := range weights {
		total += w
	}
	turn := make([]uint64, len(weights)) // turns taken so far, per endpoint
	// Endpoint i's next turn k is due at (2k+1)/(2w[i]); due times compare
	// exactly as (2k_i+1)·w[j] against (2k_j+1)·w[i].
	before := func(i, j uint32) bool {
		a := (2*turn[i] + 1) * weights[j]
		b := (2*turn[j] + 1) * weights[i]
		return a < b || a == b && i < j
	}
	heap := make([]uint32, len(weights))
	for i := range heap {
		heap[i] = uint32(i)
	}
	down := func(at int) {
		for {
			least := at
			for _, c := range [2]int{2*at + 1, 2*at + 2} {
				if c < len(heap) && before(heap[c], heap[least]) {
					least = c
				}
			}
			if least == at {
				return
			}
			heap[at], heap[least] = heap[least], heap[at]
			at = least
		}
	}
	for i := len(heap)/2 - 1; i >= 0; i-- {
		down(i)
	}
	schedule := make([]uint32, total)
	for s := range schedule {
		i := heap[0]
		schedule[s] = i
		turn[i]++
		down(0)
	}
	return schedule
}
