package balancer_test

import (
	"testing"

	"github.com/weftmesh/weft/balancer"
)

// TestLeastRequestPrefersFewerInFlight holds requests in flight on one of
// three equal endpoints: with two choices it is picked only when both
// draws land on it (1/9 of picks); with ten, almost never.
func TestLeastRequestPrefersFewerInFlight(t *testing.T) {
	for _, tc := range []struct {
		config   string
		maxShare float64 // of picks landing on the loaded endpoint
	}{
		{"", 1.0 / 9 * 1.2},
		{`{"choiceCount":10}`, 0.001},
	} {
		t.Run("config="+tc.config, func(t *testing.T) {
			eps := endpoints(1, 1, 1)
			c := newCluster(t, balancer.NewLeastRequestBuilder(seeded(5)), tc.config, eps)
			busy := c.Endpoints()[0]
			balancer.AddInFlight(busy, 5)
			defer balancer.AddInFlight(busy, -5)
			const n = 9000
			counts := pickCounts(t, c, n, nil)
			if share := float64(counts[busy.Addr]) / n; share > tc.maxShare {
				t.Errorf("loaded endpoint got %.3f of picks, want at most %.3f (counts %v)", share, tc.maxShare, counts)
			}
		})
	}
}

// TestLeastRequestBalancesInFlight picks without finishing: the in-flight
// counts must stay level, where a random pick would let them drift apart
// by about the square root of the picks.
func TestLeastRequestBalancesInFlight(t *testing.T) {
	eps := equal(10)
	c := newCluster(t, balancer.NewLeastRequestBuilder(seeded(6)), "", eps)
	var held []balancer.PickResult
	for range 1000 {
		r, err := c.Pick(balancer.PickInfo{})
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, r)
	}
	lo, hi := int64(1<<62), int64(0)
	for _, e := range c.Endpoints() {
		lo, hi = min(lo, e.InFlight()), max(hi, e.InFlight())
	}
	if hi-lo > 4 {
		t.Errorf("in flight ranges from %d to %d over endpoints, want a spread of at most 4", lo, hi)
	}
	for _, r := range held {
		r.Finish(balancer.DoneInfo{})
	}
}

// TestLeastRequestWeighted checks the weighted mode: with nothing in
// flight picks follow the weights (chi-square, p = 0.001); requests in
// flight on the heaviest endpoint cut its share as Envoy's effective
// weight weight/(inFlight+1)^bias says they should, and bias 0 ignores
// them.
func TestLeastRequestWeighted(t *testing.T) {
	eps := endpoints(1, 2, 3, 4)
	const n = 100_000
	t.Run("idle", func(t *testing.T) {
		c := newCluster(t, balancer.NewLeastRequestBuilder(seeded(7)), "", eps)
		checkShares(t, eps, pickCounts(t, c, n, nil), n)
	})
	for _, tc := range []struct {
		config   string
		min, max float64 // share of the loaded heaviest endpoint (idle: 0.4)
	}{
		{"", 0.15, 0.3},
		{`{"activeRequestBias":0}`, 0.39, 0.41},
		{`{"activeRequestBias":4,"choiceCount":4}`, 0, 0.05},
	} {
		t.Run("loaded config="+tc.config, func(t *testing.T) {
			c := newCluster(t, balancer.NewLeastRequestBuilder(seeded(8)), tc.config, eps)
			heavy := c.Endpoints()[3]
			balancer.AddInFlight(heavy, 3)
			defer balancer.AddInFlight(heavy, -3)
			counts := pickCounts(t, c, n, nil)
			if share := float64(counts[heavy.Addr]) / n; share < tc.min || share > tc.max {
				t.Errorf("heaviest endpoint, 3 in flight: share %.3f, want %.2f..%.2f (counts %v)", share, tc.min, tc.max, counts)
			}
		})
	}
}
