package balancer_test

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/resolver"
)

// zone is the test's locality named z (region "r").
func zone(z string) resolver.Locality { return resolver.Locality{Region: "r", Zone: z} }

// zoneSpec is one locality of one priority: total endpoints, of which the
// first unhealthy are Unhealthy.
type zoneSpec struct {
	priority         uint32
	zone             string
	total, unhealthy int
}

// zoneEndpoints returns the endpoints of specs; the i-th endpoint of zone
// z in priority p is at 10.p.<z>.i:80, z a letter.
func zoneEndpoints(specs ...zoneSpec) []resolver.Endpoint {
	var eps []resolver.Endpoint
	for _, s := range specs {
		for i := range s.total {
			e := resolver.Endpoint{
				Addr:     fmt.Sprintf("10.%d.%d.%d:80", s.priority, s.zone[0], i),
				Locality: zone(s.zone), Priority: s.priority,
			}
			if i < s.unhealthy {
				e.Health = resolver.Unhealthy
			}
			eps = append(eps, e)
		}
	}
	return eps
}

// zoneOf names the priority and zone of a zoneEndpoints address: "0a".
func zoneOf(addr string) string {
	parts := strings.Split(addr, ".")
	var z int
	fmt.Sscan(parts[2], &z)
	return parts[1] + string(rune(z))
}

// TestZoneAwareShares checks the share of requests each locality gets
// against Envoy's zone-aware formula, in 1/10,000 as Envoy computes it:
//
//	local_i    = 10000 × callers_i / Σ callers   (callers: LocalWeights, or
//	             by default the upstream's endpoints, healthy or not)
//	upstream_i = 10000 × healthy_i / Σ healthy
//	upstream_A ≥ local_A > 0: all to A (the caller's locality);
//	otherwise A keeps upstream_A × 10000 / local_A of 10,000 requests
//	and the rest goes to the others in proportion to upstream_i − local_i
//	where positive.
//
// Shares are measured over loadPicks picks with loadTolerance, as in
// TestPriorityLoad (binomial deviation at most 0.11 points; the tolerance
// is 0.5 points).
func TestZoneAwareShares(t *testing.T) {
	on := balancer.ZoneAwareConfig{Local: zone("a")}
	for _, tc := range []struct {
		name  string
		cfg   balancer.ZoneAwareConfig
		specs []zoneSpec
		want  map[string]float64 // percent by "<priority><zone>"
	}{
		{"all healthy: all local", on,
			[]zoneSpec{{0, "a", 4, 0}, {0, "b", 4, 0}, {0, "c", 4, 0}},
			map[string]float64{"0a": 100}},
		// local 3333 each; upstream a 2727, b c 3636; a keeps
		// 27270000/3333 = 8181; residual b c 303 each: 909.5 each.
		{"local lost one of four", on,
			[]zoneSpec{{0, "a", 4, 1}, {0, "b", 4, 0}, {0, "c", 4, 0}},
			map[string]float64{"0a": 81.81, "0b": 9.095, "0c": 9.095}},
		// upstream a 2500, b 5000, c 2500; a keeps 25000000/3333 = 7500;
		// residual only b (1667): b 2500.
		{"spill only where there is room", on,
			[]zoneSpec{{0, "a", 4, 2}, {0, "b", 4, 0}, {0, "c", 4, 2}},
			map[string]float64{"0a": 75, "0b": 25}},
		// upstream a 0: a keeps nothing; b c residual 1667 each.
		{"local locality all unhealthy", on,
			[]zoneSpec{{0, "a", 4, 4}, {0, "b", 4, 0}, {0, "c", 4, 0}},
			map[string]float64{"0b": 50, "0c": 50}},
		// Envoy's documented example: callers 40/40/20, upstream 25/50/25.
		// a keeps 25000000/4000 = 6250; residual b 1000, c 500.
		{"explicit caller spread", balancer.ZoneAwareConfig{Local: zone("a"),
			LocalWeights: map[resolver.Locality]uint64{zone("a"): 2, zone("b"): 2, zone("c"): 1}},
			[]zoneSpec{{0, "a", 2, 0}, {0, "b", 4, 0}, {0, "c", 2, 0}},
			map[string]float64{"0a": 62.5, "0b": 25, "0c": 12.5}},
		// Half the requests as in "local lost one of four", half by
		// locality weight (1 each: 1.4 × 3/4 ≥ 1): 33.33 each.
		{"routing enabled 50%", balancer.ZoneAwareConfig{Local: zone("a"), RoutingEnabledPercent: 50},
			[]zoneSpec{{0, "a", 4, 1}, {0, "b", 4, 0}, {0, "c", 4, 0}},
			map[string]float64{"0a": 57.57, "0b": 21.21, "0c": 21.21}},
		{"routing enabled 0%", balancer.ZoneAwareConfig{Local: zone("a"), RoutingEnabledPercent: -1},
			[]zoneSpec{{0, "a", 4, 0}, {0, "b", 4, 0}, {0, "c", 4, 0}},
			map[string]float64{"0a": 33.33, "0b": 33.33, "0c": 33.33}},
		// 5 healthy endpoints, under the default minimum of 6: locality
		// weights.
		{"too small", on,
			[]zoneSpec{{0, "a", 2, 0}, {0, "b", 2, 0}, {0, "c", 1, 0}},
			map[string]float64{"0a": 33.33, "0b": 33.33, "0c": 33.33}},
		{"min cluster size 5", balancer.ZoneAwareConfig{Local: zone("a"), MinClusterSize: 5},
			[]zoneSpec{{0, "a", 2, 0}, {0, "b", 2, 0}, {0, "c", 1, 0}},
			map[string]float64{"0a": 100}},
		{"caller's locality not in the upstream", balancer.ZoneAwareConfig{Local: zone("d")},
			[]zoneSpec{{0, "a", 4, 0}, {0, "b", 4, 0}},
			map[string]float64{"0a": 50, "0b": 50}},
		{"one locality", on,
			[]zoneSpec{{0, "a", 8, 0}},
			map[string]float64{"0a": 100}},
		// P0 health 1.4 × 6/12 = 70: P0 70%, P1 30%; each priority keeps
		// its share in the caller's locality.
		{"with priority failover", on,
			[]zoneSpec{{0, "a", 4, 2}, {0, "b", 4, 2}, {0, "c", 4, 2}, {1, "a", 2, 0}, {1, "b", 2, 0}, {1, "c", 2, 0}},
			map[string]float64{"0a": 70, "1a": 30}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := balancer.NewPriorityLocalityForTest(balancer.Get(balancer.RoundRobin), seeded(11), balancer.WithZoneAware(tc.cfg))
			c := newCluster(t, b, "", zoneEndpoints(tc.specs...))
			checkZoneShares(t, c, tc.want)
		})
	}
}

func checkZoneShares(t *testing.T, c *balancer.Cluster, want map[string]float64) {
	t.Helper()
	got := map[string]float64{}
	for addr, n := range pickCounts(t, c, loadPicks, nil) {
		got[zoneOf(addr)] += 100 * float64(n) / loadPicks
	}
	for z := range got {
		if _, ok := want[z]; !ok {
			want[z] = 0
		}
	}
	for z, w := range want {
		if math.Abs(got[z]-w) > loadTolerance {
			t.Errorf("locality %s: %.2f%% of picks, want %.2f%%", z, got[z], w)
		}
	}
	t.Logf("shares %v", got)
}

// TestZoneAwareWithOutlierDetection ejects one of the caller's locality's
// endpoints and checks that the shares follow, as for an unhealthy one.
func TestZoneAwareWithOutlierDetection(t *testing.T) {
	clk := &balancer.FakeClock{}
	pl := balancer.NewPriorityLocalityForTest(balancer.Get(balancer.RoundRobin), seeded(12), balancer.WithZoneAware(balancer.ZoneAwareConfig{Local: zone("a")}))
	b := balancer.NewOutlierDetectionForTest(pl, balancer.OutlierConfig{SuccessRate: balancer.SuccessRateEjection{Disabled: true}}, clk, seeded(13))
	eps := zoneEndpoints(zoneSpec{0, "a", 4, 0}, zoneSpec{0, "b", 4, 0}, zoneSpec{0, "c", 4, 0})
	c := newCluster(t, b, "", eps)
	checkZoneShares(t, c, map[string]float64{"0a": 100})
	for range 5 {
		r, err := c.Pick(balancer.PickInfo{Override: eps[0].Addr})
		if err != nil {
			t.Fatal(err)
		}
		r.Finish(balancer.DoneInfo{Outcome: balancer.ServerError})
	}
	checkZoneShares(t, c, map[string]float64{"0a": 81.81, "0b": 9.095, "0c": 9.095})
}

// TestFailTrafficOnPanic checks that a priority in panic fails its share
// instead of using unhealthy endpoints.
func TestFailTrafficOnPanic(t *testing.T) {
	eps := zoneEndpoints(zoneSpec{0, "a", 10, 6})
	for _, fail := range []bool{false, true} {
		b := balancer.NewPriorityLocality(balancer.Get(balancer.RoundRobin), balancer.WithZoneAware(balancer.ZoneAwareConfig{FailTrafficOnPanic: fail}))
		c := newCluster(t, b, "", eps)
		_, err := c.Pick(balancer.PickInfo{})
		if fail && !errors.Is(err, balancer.ErrNoHealthyEndpoint) {
			t.Errorf("fail_traffic_on_panic: pick error %v, want ErrNoHealthyEndpoint", err)
		}
		if !fail && err != nil {
			t.Errorf("panic without fail_traffic_on_panic: pick error %v, want a pick from all endpoints", err)
		}
	}
}

// TestSessionOverride checks PickInfo.Override: the named endpoint while
// it may serve, the policy's pick once it is unhealthy, gone or tried.
func TestSessionOverride(t *testing.T) {
	eps := equal(4)
	c := newCluster(t, balancer.Get(balancer.RoundRobin), "", eps)
	want := eps[2].Addr
	for range 10 {
		r, err := c.Pick(balancer.PickInfo{Override: want})
		if err != nil || r.Endpoint.Addr != want {
			t.Fatalf("Pick with override = %v, %v; want %s", r.Endpoint, err, want)
		}
		r.Finish(balancer.DoneInfo{})
	}
	counts := pickCounts(t, c, 400, func(int) balancer.PickInfo {
		return balancer.PickInfo{Override: want, Tried: triedSet{want: true}}
	})
	if counts[want] != 0 {
		t.Errorf("a retry after the override's endpoint went there again %d times", counts[want])
	}
	unhealthy := append([]resolver.Endpoint(nil), eps...)
	unhealthy[2].Health = resolver.Unhealthy
	for _, set := range [][]resolver.Endpoint{unhealthy, eps[:2]} {
		c.Update(set)
		counts := pickCounts(t, c, 400, func(int) balancer.PickInfo { return balancer.PickInfo{Override: want} })
		if counts[want] != 0 || len(counts) != 2 && len(counts) != 3 {
			t.Errorf("override of an endpoint that may not serve: counts %v", counts)
		}
	}
}

type triedSet map[string]bool

func (s triedSet) Tried(addr string) bool { return s[addr] }
