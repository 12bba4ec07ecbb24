package balancer

import "math/rand/v2"

// Random is the name of the random policy: each request goes to a serving
// endpoint drawn at random, with probability proportional to its weight.
// With no state shared between picks it scales with any number of clients
// and cores, at the price of a less even spread than round_robin over
// short windows.
const Random = "random"

func init() { Register(newRandomBuilder(rand.Uint64)) }

// newRandomBuilder returns the random policy drawing from rng, which must
// be safe for concurrent use.
func newRandomBuilder(rng func() uint64) Builder {
	return NewPickerBuilder(Random, func(serving []*Endpoint) Picker {
		return &randomPicker{endpoints: serving, draw: newWeightedDraw(serving, rng)}
	})
}

// randomPicker is immutable; Pick is safe for concurrent use.
type randomPicker struct {
	endpoints []*Endpoint
	draw      weightedDraw
}

func (p *randomPicker) Pick(PickInfo) (PickResult, error) {
	return PickResult{Endpoint: p.endpoints[p.draw.next()]}, nil
}

// weightedDraw draws endpoint indexes with probability proportional to the
// endpoints' weights, in constant time with Vose's alias method, or
// uniformly when every weight is the same. It is immutable after
// newWeightedDraw and safe for concurrent use when its rng is.
type weightedDraw struct {
	n   uint64
	rng func() uint64
	// Column i of the alias table keeps i with chance keep[i]/2^32 and
	// gives alias[i] otherwise. Both are nil for a uniform draw.
	keep  []uint32
	alias []uint32
}

func newWeightedDraw(eps []*Endpoint, rng func() uint64) weightedDraw {
	d := weightedDraw{n: uint64(len(eps)), rng: rng}
	if !weightsDiffer(eps) {
		return d
	}
	n := len(eps)
	var total float64
	for _, e := range eps {
		total += float64(e.EffectiveWeight())
	}
	// scaled[i] is endpoint i's share of one column's worth of probability:
	// the columns' mean is 1.
	scaled := make([]float64, n)
	small := make([]uint32, 0, n)
	large := make([]uint32, 0, n)
	for i, e := range eps {
		scaled[i] = float64(e.EffectiveWeight()) * float64(n) / total
		if scaled[i] < 1 {
			small = append(small, uint32(i))
		} else {
			large = append(large, uint32(i))
		}
	}
	d.keep = make([]uint32, n)
	d.alias = make([]uint32, n)
	for len(small) > 0 && len(large) > 0 {
		s, l := small[len(small)-1], large[len(large)-1]
		small = small[:len(small)-1]
		d.keep[s] = uint32(max(scaled[s], 0) * (1 << 32)) // rounding can leave a hair below 0
		d.alias[s] = l
		scaled[l] -= 1 - scaled[s]
		if scaled[l] < 1 {
			large = large[:len(large)-1]
			small = append(small, l)
		}
	}
	// What is left is full up to rounding error: such a column always
	// keeps its own index.
	for _, i := range append(small, large...) {
		d.keep[i] = 1<<32 - 1
		d.alias[i] = i
	}
	return d
}

// next returns an index in [0, n). One 64-bit random number gives both the
// column (its high half, reduced by multiplication: the bias is below
// n/2^32) and the coin that chooses between the column and its alias (its
// low half).
func (d *weightedDraw) next() int {
	r := d.rng()
	i := ((r >> 32) * d.n) >> 32
	if d.keep != nil && uint32(r) >= d.keep[i] {
		i = uint64(d.alias[i])
	}
	return int(i)
}

// weightsDiffer reports whether the endpoints' effective weights are not
// all equal.
func weightsDiffer(eps []*Endpoint) bool {
	for _, e := range eps[1:] {
		if e.EffectiveWeight() != eps[0].EffectiveWeight() {
			return true
		}
	}
	return false
}
