package balancer_test

import (
	"fmt"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/resolver"
)

// TestSlowStartFactor checks the ramp against Envoy's formula,
// max(min, (max(t, 1ms) / window)^(1/aggression)), and 1 from the window
// on.
func TestSlowStartFactor(t *testing.T) {
	const w = 60 * time.Second
	for _, tc := range []struct {
		cfg     balancer.SlowStartConfig
		elapsed time.Duration
		want    float64
	}{
		{balancer.SlowStartConfig{Window: w}, 0, 0.1},
		{balancer.SlowStartConfig{Window: w}, 3 * time.Second, 0.1},
		{balancer.SlowStartConfig{Window: w}, 15 * time.Second, 0.25},
		{balancer.SlowStartConfig{Window: w}, 30 * time.Second, 0.5},
		{balancer.SlowStartConfig{Window: w}, w, 1},
		{balancer.SlowStartConfig{Window: w}, 2 * w, 1},
		{balancer.SlowStartConfig{Window: w, Aggression: 2}, 15 * time.Second, 0.5},
		{balancer.SlowStartConfig{Window: w, Aggression: 0.5}, 30 * time.Second, 0.25},
		{balancer.SlowStartConfig{Window: w, MinWeightPercent: 30}, 6 * time.Second, 0.3},
		{balancer.SlowStartConfig{Window: w, MinWeightPercent: -1}, 0, 1.0 / 60_000},
		{balancer.SlowStartConfig{Window: w, MinWeightPercent: -1}, 6 * time.Second, 0.1},
	} {
		got := balancer.SlowStartFactor(tc.cfg, tc.elapsed)
		if math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("factor(%+v, %v) = %v, want %v", tc.cfg, tc.elapsed, got, tc.want)
		}
	}
}

func TestSlowStartConfigValidate(t *testing.T) {
	for _, c := range []balancer.SlowStartConfig{
		{Window: time.Second, Aggression: -1},
		{Window: time.Second, Aggression: math.Inf(1)},
		{Window: time.Second, Aggression: math.NaN()},
		{Window: time.Second, MinWeightPercent: 101},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", c)
		}
	}
	if err := (balancer.SlowStartConfig{Window: time.Second, Aggression: 1.5, MinWeightPercent: 100}).Validate(); err != nil {
		t.Errorf("Validate of a good config: %v", err)
	}
}

// slowStartPicks is the number of picks each share is measured over, and
// slowStartTolerance how far, in percentage points, a measured share may
// be from f/(4+f), the share of one endpoint of factor f beside four of
// factor 1. The rotations of round_robin and weighted_round_robin are
// exact over whole periods (41 picks at t = 0); random and least_request
// draw, and at 200,000 picks the binomial standard deviation of a share
// of at most 25% is at most 0.1 points, so the tolerance is 5 deviations.
const (
	slowStartPicks     = 200_000
	slowStartTolerance = 0.5
)

// TestSlowStartShares adds a fifth endpoint to a Cluster of four, under
// each policy slow start supports, and measures its share at the start of
// its ramp, halfway and at the end of the window, against Envoy's
// formula.
func TestSlowStartShares(t *testing.T) {
	const window = 60 * time.Second
	for _, policy := range []string{balancer.RoundRobin, balancer.WeightedRoundRobin, balancer.LeastRequest, balancer.Random} {
		for _, aggression := range []float64{1, 2} {
			t.Run(fmt.Sprintf("%s/aggression=%v", policy, aggression), func(t *testing.T) {
				clk := &balancer.FakeClock{}
				cfg := balancer.SlowStartConfig{Window: window, Aggression: aggression}
				b := balancer.NewSlowStartForTest(balancer.Get(policy), cfg, clk)
				old := equal(4)
				c := newCluster(t, b, "", old)
				// The first endpoint set does not ramp: equal shares.
				counts := pickCounts(t, c, slowStartPicks, nil)
				for _, e := range old {
					if got := 100 * float64(counts[e.Addr]) / slowStartPicks; math.Abs(got-25) > slowStartTolerance {
						t.Fatalf("first set: %s has %.2f%%, want 25%%", e.Addr, got)
					}
				}
				clk.Advance(time.Hour) // long after: only a later address is new
				added := resolver.Endpoint{Addr: "10.9.9.9:80"}
				c.Update(append(old, added))
				var prev time.Duration
				for _, at := range []time.Duration{0, window / 2, window} {
					clk.Advance(at - prev)
					prev = at
					f := balancer.SlowStartFactor(cfg, at)
					want := 100 * f / (4 + f)
					counts := pickCounts(t, c, slowStartPicks, nil)
					got := 100 * float64(counts[added.Addr]) / slowStartPicks
					t.Logf("t=%v: factor %.3f, share %.2f%% (formula %.2f%%)", at, f, got, want)
					if math.Abs(got-want) > slowStartTolerance {
						t.Errorf("t=%v: new endpoint's share %.2f%%, want %.2f%% ± %.1f", at, got, want, slowStartTolerance)
					}
				}
			})
		}
	}
}

// TestSlowStartReturning checks that an address that leaves and comes
// back ramps again, and that round_robin under slow start still ignores
// EDS weights once nothing ramps.
func TestSlowStartReturning(t *testing.T) {
	clk := &balancer.FakeClock{}
	b := balancer.NewSlowStartForTest(balancer.Get(balancer.RoundRobin), balancer.SlowStartConfig{Window: 10 * time.Second}, clk)
	eps := endpoints(5, 1, 1, 1) // round_robin ignores these weights
	c := newCluster(t, b, "", eps)
	share := func(addr string) float64 {
		counts := pickCounts(t, c, 4000, nil)
		return 100 * float64(counts[addr]) / 4000
	}
	if got := share(eps[0].Addr); got != 25 {
		t.Fatalf("weighted endpoint under round_robin: %.2f%%, want 25%%", got)
	}
	c.Update(eps[1:])
	c.Update(eps)
	// Factor 0.1 beside three of 1: 0.1/3.1 = 3.23%.
	if got := share(eps[0].Addr); math.Abs(got-100*0.1/3.1) > 0.1 {
		t.Errorf("returning endpoint at the start of its ramp: %.2f%%, want 3.23%%", got)
	}
	clk.Advance(10 * time.Second)
	if got := share(eps[0].Addr); got != 25 {
		t.Errorf("after the window: %.2f%%, want 25%%", got)
	}
}

// TestSlowStartOff checks that slow start leaves policies that ignore
// weights, and a zero window, alone.
func TestSlowStartOff(t *testing.T) {
	for _, name := range []string{balancer.P2CEWMA, balancer.RingHash, balancer.Maglev} {
		b := balancer.Get(name)
		if got := balancer.NewSlowStart(b, balancer.SlowStartConfig{Window: time.Minute}); reflect.TypeOf(got) != reflect.TypeOf(b) {
			t.Errorf("NewSlowStart(%s) wraps the policy; want it unchanged", name)
		}
	}
	b := balancer.Get(balancer.RoundRobin)
	if got := balancer.NewSlowStart(b, balancer.SlowStartConfig{}); reflect.TypeOf(got) != reflect.TypeOf(b) {
		t.Errorf("NewSlowStart with no window wraps the policy")
	}
}
