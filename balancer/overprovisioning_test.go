package balancer_test

import (
	"fmt"
	"math"
	"testing"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/resolver"
)

// TestWithoutOverprovisioning: with WithoutOverprovisioning, as in grpc-go
// (which advertises "envoy.lb.does_not_support_overprovisioning": "the
// client does not support the overprovisioning factor ... the management
// server must handle failover itself"), a priority keeps all its traffic
// while any endpoint is healthy and a locality keeps its full weight
// while any endpoint is. The rows are TestPriorityLoad's where Envoy's 1.4
// spills traffic; without the factor nothing spills.
func TestWithoutOverprovisioning(t *testing.T) {
	for _, tc := range []struct {
		name     string
		specs    []prioritySpec
		wantLoad []float64 // percent, by priority
	}{
		{"P0 5/10 unhealthy", []prioritySpec{{10, 5, 0}, {10, 0, 0}}, []float64{100, 0}},
		{"P0 9/10 unhealthy", []prioritySpec{{10, 9, 0}, {10, 0, 0}}, []float64{100, 0}},
		{"P0 10/10 unhealthy", []prioritySpec{{10, 10, 0}, {10, 0, 0}}, []float64{0, 100}},
		{"P0 and P1 all unhealthy", []prioritySpec{{10, 10, 0}, {4, 4, 0}, {3, 2, 0}}, []float64{0, 0, 100}},
		{"draining and unhealthy", []prioritySpec{{10, 3, 4}, {10, 0, 0}}, []float64{100, 0}},
		// Nothing healthy anywhere: total panic, shares by endpoint count,
		// as with the factor.
		{"total panic", []prioritySpec{{10, 10, 0}, {5, 5, 0}}, []float64{67, 33}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eps := priorityEndpoints(tc.specs)
			c := newCluster(t, balancer.NewPriorityLocalityForTest(balancer.Get(balancer.RoundRobin), seeded(1), balancer.WithoutOverprovisioning()), "", eps)
			counts := pickCounts(t, c, loadPicks, nil)
			byPrio := make([]int, len(tc.specs))
			for _, e := range eps {
				byPrio[e.Priority] += counts[e.Addr]
			}
			for p, want := range tc.wantLoad {
				if got := 100 * float64(byPrio[p]) / loadPicks; math.Abs(got-want) > loadTolerance {
					t.Errorf("P%d took %.2f%% of picks, want %.0f%% ± %.1f", p, got, want, loadTolerance)
				}
			}
			if tc.wantLoad[0] == 100 {
				for _, e := range eps {
					if !e.Health.Serving() && counts[e.Addr] > 0 {
						t.Errorf("unhealthy %s picked %d times", e.Addr, counts[e.Addr])
					}
				}
			}
		})
	}

	// Localities keep their weight while any endpoint is healthy: a, b and
	// c (2 of 4 healthy, 0.7 with the factor) take 1:2:1; d none.
	type loc struct {
		zone             string
		weight           uint32
		total, unhealthy int
		want             float64
	}
	locs := []loc{{"a", 1, 4, 0, 1}, {"b", 2, 3, 0, 2}, {"c", 1, 4, 2, 1}, {"d", 3, 2, 2, 0}}
	var eps []resolver.Endpoint
	for li, l := range locs {
		for i := range l.total {
			e := resolver.Endpoint{Addr: fmt.Sprintf("10.1.%d.%d:80", li, i), Locality: resolver.Locality{Region: "r", Zone: l.zone}, LocalityWeight: l.weight}
			if i < l.unhealthy {
				e.Health = resolver.Unhealthy
			}
			eps = append(eps, e)
		}
	}
	c := newCluster(t, balancer.NewPriorityLocalityForTest(balancer.Get(balancer.RoundRobin), seeded(4), balancer.WithoutOverprovisioning()), "", eps)
	counts := pickCounts(t, c, loadPicks, nil)
	byZone := map[string]int{}
	for _, e := range eps {
		byZone[e.Locality.Zone] += counts[e.Addr]
	}
	for _, l := range locs {
		want := 100 * l.want / 4
		if got := 100 * float64(byZone[l.zone]) / loadPicks; math.Abs(got-want) > loadTolerance {
			t.Errorf("locality %s took %.2f%% of picks, want %.1f%% ± %.1f", l.zone, got, want, loadTolerance)
		}
	}
}
