package balancer_test

import (
	"fmt"
	"math"
	"testing"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/resolver"
)

// prioritySpec is one priority of a test's endpoint set: total endpoints,
// of which the first unhealthy are Unhealthy and the next draining are
// Draining.
type prioritySpec struct{ total, unhealthy, draining int }

// priorityEndpoints returns the endpoints of specs; priority p's i-th
// endpoint is at 10.p.0.i:80.
func priorityEndpoints(specs []prioritySpec) []resolver.Endpoint {
	var eps []resolver.Endpoint
	for p, s := range specs {
		for i := range s.total {
			e := resolver.Endpoint{Addr: fmt.Sprintf("10.%d.0.%d:80", p, i), Priority: uint32(p)}
			switch {
			case i < s.unhealthy:
				e.Health = resolver.Unhealthy
			case i < s.unhealthy+s.draining:
				e.Health = resolver.Draining
			}
			eps = append(eps, e)
		}
	}
	return eps
}

// loadTolerance is how far, in percentage points, a measured share may be
// from the formula's over loadPicks picks: the binomial standard deviation
// is at most 0.11 points there, so this is over 4.5 deviations.
const (
	loadPicks     = 200_000
	loadTolerance = 0.5
)

// TestPriorityLoad checks the share of each priority against Envoy's
// priority-load formula (overprovisioning factor 1.4, panic threshold
// 50%), and that priorities in panic use all their endpoints while the
// others use only healthy ones.
func TestPriorityLoad(t *testing.T) {
	for _, tc := range []struct {
		name      string
		specs     []prioritySpec
		wantLoad  []float64 // percent, by priority
		wantPanic []bool
	}{
		// P0 of 10 with 0, 2, 5, 8, 10 unhealthy; P1 healthy. P0's health
		// is min(100, 140 × healthy / 10): 100, 100 (112), 70, 28, 0.
		{"P0 0/10 unhealthy", []prioritySpec{{10, 0, 0}, {10, 0, 0}}, []float64{100, 0}, []bool{false, false}},
		{"P0 2/10 unhealthy", []prioritySpec{{10, 2, 0}, {10, 0, 0}}, []float64{100, 0}, []bool{false, false}},
		{"P0 5/10 unhealthy", []prioritySpec{{10, 5, 0}, {10, 0, 0}}, []float64{70, 30}, []bool{false, false}},
		{"P0 8/10 unhealthy", []prioritySpec{{10, 8, 0}, {10, 0, 0}}, []float64{28, 72}, []bool{false, false}},
		{"P0 10/10 unhealthy", []prioritySpec{{10, 10, 0}, {10, 0, 0}}, []float64{0, 100}, []bool{false, false}},
		// Health 28 + 42 + 100: P2 takes what is left.
		{"three priorities", []prioritySpec{{10, 8, 0}, {10, 7, 0}, {10, 0, 0}}, []float64{28, 42, 30}, []bool{false, false, false}},
		// Health 70 + 35 ≥ 100: no panic although P1 is 25% healthy.
		{"sum reaches 100", []prioritySpec{{10, 5, 0}, {4, 3, 0}}, []float64{70, 30}, []bool{false, false}},
		// Health 28 + 70 = 98: P0 28×100/98 = 28, P1 7000/98 = 71, the
		// remaining 1 to P0; P0 (20% healthy) in panic, P1 (50%) not.
		{"one priority in panic", []prioritySpec{{10, 8, 0}, {10, 5, 0}}, []float64{29, 71}, []bool{true, false}},
		// Health 28 + 28: both in panic, so shares by endpoint count:
		// 100×10/15 = 66 and 33, the remaining 1 to P0.
		{"total panic", []prioritySpec{{10, 8, 0}, {5, 4, 0}}, []float64{67, 33}, []bool{true, true}},
		{"single priority 6/10 unhealthy", []prioritySpec{{10, 6, 0}}, []float64{100}, []bool{true}},
		{"single priority 5/10 unhealthy", []prioritySpec{{10, 5, 0}}, []float64{100}, []bool{false}},
		{"single priority all unhealthy", []prioritySpec{{4, 4, 0}}, []float64{100}, []bool{true}},
		// Draining endpoints are excluded: P0 is 5 of 5 healthy.
		{"draining excluded", []prioritySpec{{10, 0, 5}, {10, 0, 0}}, []float64{100, 0}, []bool{false, false}},
		// Excluding 4 draining leaves 3 healthy of 6: health 70.
		{"draining and unhealthy", []prioritySpec{{10, 3, 4}, {10, 0, 0}}, []float64{70, 30}, []bool{false, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eps := priorityEndpoints(tc.specs)
			c := newCluster(t, balancer.NewPriorityLocalityForTest(balancer.Get(balancer.RoundRobin), seeded(1)), "", eps)
			counts := pickCounts(t, c, loadPicks, nil)
			byPrio := make([]int, len(tc.specs))
			for _, e := range eps {
				byPrio[e.Priority] += counts[e.Addr]
			}
			for p, want := range tc.wantLoad {
				got := 100 * float64(byPrio[p]) / loadPicks
				t.Logf("P%d: %.2f%% of picks, formula %.0f%%", p, got, want)
				if math.Abs(got-want) > loadTolerance {
					t.Errorf("P%d took %.2f%% of picks, want %.0f%% ± %.1f", p, got, want, loadTolerance)
				}
			}
			for _, e := range eps {
				n := counts[e.Addr]
				switch {
				case e.Health == resolver.Draining && n > 0:
					t.Errorf("draining %s picked %d times", e.Addr, n)
				case e.Health == resolver.Unhealthy && !tc.wantPanic[e.Priority] && n > 0:
					t.Errorf("unhealthy %s of P%d (not in panic) picked %d times", e.Addr, e.Priority, n)
				case e.Health != resolver.Draining && tc.wantPanic[e.Priority] && tc.wantLoad[e.Priority] > 0 && n == 0:
					t.Errorf("%s (%v) of P%d in panic never picked", e.Addr, e.Health, e.Priority)
				}
			}
		})
	}
}

// TestPriorityPanicSpread checks that a priority in panic spreads its
// share evenly over all its endpoints, healthy or not.
func TestPriorityPanicSpread(t *testing.T) {
	eps := priorityEndpoints([]prioritySpec{{10, 6, 0}})
	c := newCluster(t, balancer.NewPriorityLocalityForTest(balancer.Get(balancer.RoundRobin), seeded(2)), "", eps)
	const n = 10_000
	counts := pickCounts(t, c, n, nil)
	checkShares(t, eps, counts, n)
}

func TestPriorityNoEndpoints(t *testing.T) {
	b := balancer.NewPriorityLocality(balancer.Get(balancer.RoundRobin))
	eps := priorityEndpoints([]prioritySpec{{3, 0, 3}})
	for _, set := range [][]resolver.Endpoint{nil, eps} {
		c := newCluster(t, b, "", set)
		if _, err := c.Pick(balancer.PickInfo{}); err != balancer.ErrNoHealthyEndpoint {
			t.Errorf("%d endpoints, all draining: Pick error %v, want ErrNoHealthyEndpoint", len(set), err)
		}
	}
}

// TestPriorityUpdate checks that shares follow endpoint updates.
func TestPriorityUpdate(t *testing.T) {
	c := newCluster(t, balancer.NewPriorityLocalityForTest(balancer.Get(balancer.RoundRobin), seeded(3)), "",
		priorityEndpoints([]prioritySpec{{4, 4, 0}, {4, 0, 0}}))
	share0 := func() float64 {
		counts := pickCounts(t, c, 10_000, nil)
		n := 0
		for addr, k := range counts {
			if addr[:5] == "10.0." {
				n += k
			}
		}
		return 100 * float64(n) / 10_000
	}
	if got := share0(); got != 0 {
		t.Errorf("P0 all unhealthy: P0 share %.1f%%, want 0", got)
	}
	c.Update(priorityEndpoints([]prioritySpec{{4, 0, 0}, {4, 0, 0}}))
	if got := share0(); got != 100 {
		t.Errorf("P0 healthy again: P0 share %.1f%%, want 100", got)
	}
	c.Update(priorityEndpoints([]prioritySpec{{4, 2, 0}, {4, 0, 0}})) // health 70
	if got := share0(); math.Abs(got-70) > 2 {
		t.Errorf("P0 half healthy: P0 share %.1f%%, want 70 ± 2", got)
	}
}

// TestLocalityWeights checks that localities share a priority's traffic by
// LocalityWeight × min(1, 1.4 × healthy fraction), not by endpoint count,
// and that the child spreads each locality's share over its endpoints.
func TestLocalityWeights(t *testing.T) {
	type loc struct {
		zone             string
		weight           uint32
		total, unhealthy int
		want             float64 // effective weight
	}
	locs := []loc{
		{"a", 1, 4, 0, 1},
		{"b", 2, 3, 0, 2},
		{"c", 1, 4, 2, 0.7}, // 1.4 × 2/4
		{"d", 3, 2, 2, 0},   // nothing healthy
	}
	var eps []resolver.Endpoint
	for li, l := range locs {
		for i := range l.total {
			e := resolver.Endpoint{
				Addr:           fmt.Sprintf("10.1.%d.%d:80", li, i),
				Locality:       resolver.Locality{Region: "r", Zone: l.zone},
				LocalityWeight: l.weight,
			}
			if i < l.unhealthy {
				e.Health = resolver.Unhealthy
			}
			eps = append(eps, e)
		}
	}
	// 9 of 13 healthy: health 96, 69% healthy, so no panic and P0 takes
	// all the traffic.
	c := newCluster(t, balancer.NewPriorityLocalityForTest(balancer.Get(balancer.RoundRobin), seeded(4)), "", eps)
	const n = 100_000
	counts := pickCounts(t, c, n, nil)
	byZone := map[string]int{}
	for _, e := range eps {
		byZone[e.Locality.Zone] += counts[e.Addr]
		if !e.Health.Serving() && counts[e.Addr] > 0 {
			t.Errorf("unhealthy %s picked %d times", e.Addr, counts[e.Addr])
		}
	}
	var total, stat float64
	for _, l := range locs {
		total += l.want
	}
	df := -1
	for _, l := range locs {
		want := n * l.want / total
		t.Logf("zone %s: %d picks (%.2f%%), formula %.2f%%", l.zone, byZone[l.zone], 100*float64(byZone[l.zone])/n, 100*l.want/total)
		if want == 0 {
			if byZone[l.zone] != 0 {
				t.Errorf("zone %s with no healthy endpoint picked %d times", l.zone, byZone[l.zone])
			}
			continue
		}
		d := float64(byZone[l.zone]) - want
		stat += d * d / want
		df++
	}
	if limit := chiSquareCritical[df]; stat > limit {
		t.Errorf("chi-square %.2f > %.2f (df %d): zone counts %v do not fit effective weights", stat, limit, df, byZone)
	}
	// Within zone a, round robin spreads evenly.
	for i := range 4 {
		addr := fmt.Sprintf("10.1.0.%d:80", i)
		if d := counts[addr] - byZone["a"]/4; d < -1 || d > 1 {
			t.Errorf("%s: %d picks of zone a's %d, want a quarter", addr, counts[addr], byZone["a"])
		}
	}
}

// TestPriorityLocalityHash checks that a request hash reaches the same
// endpoint every time through the wrapper and a hashing child.
func TestPriorityLocalityHash(t *testing.T) {
	var eps []resolver.Endpoint
	for i := range 12 {
		eps = append(eps, resolver.Endpoint{
			Addr:     fmt.Sprintf("10.2.0.%d:80", i),
			Locality: resolver.Locality{Zone: fmt.Sprint(i % 3)},
		})
	}
	c := newCluster(t, balancer.NewPriorityLocality(balancer.Get(balancer.RingHash)), "", eps)
	for _, h := range keys(200) {
		var first string
		for range 3 {
			r, err := c.Pick(balancer.PickInfo{Hash: h, HasHash: true})
			if err != nil {
				t.Fatal(err)
			}
			r.Finish(balancer.DoneInfo{})
			if first == "" {
				first = r.Endpoint.Addr
			} else if r.Endpoint.Addr != first {
				t.Fatalf("hash %#x went to %s, then %s", h, first, r.Endpoint.Addr)
			}
		}
	}
}

// TestPriorityLocalityConfig checks that settings reach the child.
func TestPriorityLocalityConfig(t *testing.T) {
	b := balancer.NewPriorityLocality(balancer.Get(balancer.LeastRequest))
	if got, want := b.Name(), "priority_locality:least_request"; got != want {
		t.Errorf("Name() = %q, want %q", got, want)
	}
	p := b.(balancer.ConfigParser)
	if _, err := p.ParseConfig([]byte(`{"choiceCount":1}`)); err == nil {
		t.Error("ParseConfig accepted the child's invalid settings")
	}
	c := newCluster(t, b, `{"choiceCount":3}`, endpoints(1, 1))
	pickCounts(t, c, 10, nil)

	rr := balancer.NewPriorityLocality(balancer.Get(balancer.RoundRobin)).(balancer.ConfigParser)
	if _, err := rr.ParseConfig([]byte(`{"x":1}`)); err == nil || err.Error() != "balancer: round_robin: takes no settings" {
		t.Errorf("ParseConfig of settings for round_robin: %v", err)
	}
}

// countingBuilder counts the live Balancers of its policy.
type countingBuilder struct {
	balancer.Builder
	live *int
}

type countingBalancer struct {
	balancer.Balancer
	live *int
}

func (b countingBuilder) Build(opts balancer.BuildOptions) balancer.Balancer {
	*b.live++
	return countingBalancer{b.Builder.Build(opts), b.live}
}

func (b countingBalancer) Close() {
	*b.live--
	b.Balancer.Close()
}

// TestPriorityLocalityInstances checks that child instances follow the
// localities and panic states of the endpoint set and all close with the
// balancer.
func TestPriorityLocalityInstances(t *testing.T) {
	live := 0
	b := balancer.NewPriorityLocalityForTest(countingBuilder{balancer.Get(balancer.RoundRobin), &live}, seeded(5))
	c := balancer.NewCluster(b, nil)
	zone := func(z string, n, unhealthy int) []resolver.Endpoint {
		var eps []resolver.Endpoint
		for i := range n {
			e := resolver.Endpoint{Addr: fmt.Sprintf("10.3.%s.%d:80", z, i), Locality: resolver.Locality{Zone: z}}
			if i < unhealthy {
				e.Health = resolver.Unhealthy
			}
			eps = append(eps, e)
		}
		return eps
	}
	for _, step := range []struct {
		name      string
		eps       []resolver.Endpoint
		wantLive  int
		unhealthy bool // whether unhealthy endpoints get traffic
	}{
		{"two zones", append(zone("1", 4, 0), zone("2", 4, 0)...), 2, false},
		{"one zone", zone("1", 4, 0), 1, false},
		{"panic", zone("1", 4, 3), 2, true}, // the zone's and the panic instance
		{"recovered", zone("1", 4, 1), 1, false},
	} {
		c.Update(step.eps)
		if live != step.wantLive {
			t.Errorf("%s: %d child instances, want %d", step.name, live, step.wantLive)
		}
		counts := pickCounts(t, c, 400, nil)
		for _, e := range step.eps {
			if got := counts[e.Addr] > 0; !e.Health.Serving() && got != step.unhealthy {
				t.Errorf("%s: unhealthy %s picked %d times", step.name, e.Addr, counts[e.Addr])
			}
		}
	}
	c.Close()
	if live != 0 {
		t.Errorf("%d child instances left open after Close", live)
	}
}
