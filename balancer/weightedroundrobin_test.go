package balancer_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/resolver"
)

// TestWeightedRoundRobinPeriod checks that every period of the rotation
// gives each endpoint exactly its weight's share, wherever it starts.
func TestWeightedRoundRobinPeriod(t *testing.T) {
	for _, tc := range []struct {
		name    string
		weights []uint32
		period  int
	}{
		{"equal", []uint32{0, 1, 1}, 3},
		{"weighted", []uint32{1, 2, 3, 4}, 10},
		{"common divisor", []uint32{10, 20, 30}, 6},
		{"single", []uint32{7}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eps := endpoints(tc.weights...)
			c := newCluster(t, balancer.NewWRRBuilder(seeded(2)), "", eps)
			const periods = 50
			counts := pickCounts(t, c, tc.period*periods, nil)
			var total uint32
			for _, e := range eps {
				total += e.EffectiveWeight()
			}
			for _, e := range eps {
				want := periods * tc.period * int(e.EffectiveWeight()) / int(total)
				if got := counts[e.Addr]; got != want {
					t.Errorf("%s: %d picks, want %d (counts %v)", e.Addr, got, want, counts)
				}
			}
		})
	}
}

// TestWeightedRoundRobinSmooth checks that turns are spread out: in every
// prefix of the rotation, each endpoint's count stays within two turns of
// its ideal share (prefix length × weight / total), so no endpoint gets a
// burst of turns. A rotation that gave each endpoint its turns in a row
// would be off by nearly the weight. (Sainte-Laguë order is within one
// turn for two endpoints and a little more for many: the worst seen over
// these cases is logged.)
func TestWeightedRoundRobinSmooth(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	cases := [][]uint32{{5, 1, 1}, {2, 2, 1}, {100, 1}, {3, 5, 7, 11, 13}}
	for range 2000 {
		w := make([]uint32, 2+rng.IntN(8))
		for i := range w {
			w[i] = 1 + rng.Uint32N(50)
		}
		cases = append(cases, w)
	}
	worstOfAll := 0.0
	for _, weights := range cases {
		eps := make([]*balancer.Endpoint, len(weights))
		var total float64
		for i, e := range endpoints(weights...) {
			eps[i] = balancer.NewEndpoint(e)
			total += float64(e.EffectiveWeight())
		}
		sched := balancer.ScheduleForTest(eps, 1<<16)
		if g := gcd(weights); len(sched) != int(total)/g {
			t.Errorf("weights %v: period %d, want %d", weights, len(sched), int(total)/g)
			continue
		}
		total = float64(len(sched))
		count := make([]int, len(eps))
		worst := 0.0
		for l, i := range sched {
			count[i]++
			for j, w := range weights {
				ideal := float64(l+1) * float64(w) / float64(gcd(weights)) / total
				worst = max(worst, math.Abs(float64(count[j])-ideal))
			}
		}
		worstOfAll = max(worstOfAll, worst)
		if worst >= 2 || len(weights) == 2 && worst > 1 {
			t.Errorf("weights %v: a prefix is off its ideal share by %.2f turns (rotation %v)", weights, worst, sched)
		}
	}
	t.Logf("largest deviation from the ideal share: %.2f turns", worstOfAll)
}

// TestWeightedRoundRobinBoundedSchedule checks that weights whose reduced
// sum is huge give a bounded rotation in which every endpoint keeps a turn
// and shares are off by at most one slot.
func TestWeightedRoundRobinBoundedSchedule(t *testing.T) {
	weights := []uint32{4_000_000_000, 1, 3_000_000_007, 123_456_789}
	eps := make([]*balancer.Endpoint, len(weights))
	var total float64
	for i, e := range endpoints(weights...) {
		eps[i] = balancer.NewEndpoint(e)
		total += float64(e.EffectiveWeight())
	}
	const limit = 1 << 16
	sched := balancer.ScheduleForTest(eps, limit)
	if len(sched) > limit+len(eps) {
		t.Fatalf("rotation of %d slots, want at most %d", len(sched), limit+len(eps))
	}
	count := make([]int, len(eps))
	for _, i := range sched {
		count[i]++
	}
	for i, w := range weights {
		if count[i] == 0 {
			t.Errorf("endpoint %d (weight %d) has no turn", i, w)
		}
		got, want := float64(count[i])/float64(len(sched)), float64(w)/total
		if math.Abs(got-want) > 1.0/float64(len(sched)) {
			t.Errorf("endpoint %d: share %.7f, want %.7f ± 1 slot", i, got, want)
		}
	}
}

func TestWeightedRoundRobinManyEndpoints(t *testing.T) {
	eps := make([]resolver.Endpoint, 10_000)
	for i, e := range equal(len(eps)) {
		e.Weight = uint32(1 + i%7)
		eps[i] = e
	}
	c := newCluster(t, balancer.NewWRRBuilder(seeded(4)), "", eps)
	var total int
	for _, e := range eps {
		total += int(e.Weight)
	}
	counts := pickCounts(t, c, total, nil) // exactly one period
	for _, e := range eps {
		if got := counts[e.Addr]; got != int(e.Weight) {
			t.Fatalf("%s: %d picks in one period, want %d", e.Addr, got, e.Weight)
		}
	}
}

func gcd(w []uint32) int {
	g := 0
	for _, x := range w {
		a := int(max(x, 1))
		for a != 0 {
			g, a = a, g%a
		}
	}
	return g
}
