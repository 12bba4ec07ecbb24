package balancer_test

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"go.uber.org/goleak"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/resolver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// allPolicies are the policies defined in this package, round_robin
// included.
var allPolicies = []string{
	balancer.RoundRobin,
	balancer.Random,
	balancer.WeightedRoundRobin,
	balancer.LeastRequest,
	balancer.P2CEWMA,
	balancer.RingHash,
	balancer.Maglev,
	balancer.ClientSideWeightedRoundRobin,
}

// seeded returns a deterministic random source. It is not safe for
// concurrent use: tests that use it pick from one goroutine.
func seeded(seed uint64) func() uint64 {
	return rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)).Uint64
}

// endpoints returns one endpoint a weight, at 10.0.0.<i+1>:80.
func endpoints(weights ...uint32) []resolver.Endpoint {
	eps := make([]resolver.Endpoint, len(weights))
	for i, w := range weights {
		eps[i] = resolver.Endpoint{Addr: fmt.Sprintf("10.0.0.%d:80", i+1), Weight: w}
	}
	return eps
}

// equal returns n endpoints of weight 1.
func equal(n int) []resolver.Endpoint {
	eps := make([]resolver.Endpoint, n)
	for i := range eps {
		eps[i] = resolver.Endpoint{Addr: fmt.Sprintf("10.%d.%d.%d:80", i>>16&255, i>>8&255, i&255)}
	}
	return eps
}

// parse returns b's parsed configuration for js, or nil for no settings.
func parse(t testing.TB, b balancer.Builder, js string) any {
	t.Helper()
	if js == "" {
		return nil
	}
	p, ok := b.(balancer.ConfigParser)
	if !ok {
		t.Fatalf("%s takes no settings", b.Name())
	}
	cfg, err := p.ParseConfig(json.RawMessage(js))
	if err != nil {
		t.Fatalf("ParseConfig(%s) = %v", js, err)
	}
	return cfg
}

// newCluster returns a Cluster of policy b (settings js, "" for none) over
// eps, closed when the test ends.
func newCluster(t testing.TB, b balancer.Builder, js string, eps []resolver.Endpoint) *balancer.Cluster {
	t.Helper()
	c := balancer.NewCluster(b, parse(t, b, js))
	t.Cleanup(c.Close)
	c.Update(eps)
	return c
}

// pickCounts picks n times from c, finishing each pick at once, and
// counts the picks by address.
func pickCounts(t testing.TB, c *balancer.Cluster, n int, info func(i int) balancer.PickInfo) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for i := range n {
		var pi balancer.PickInfo
		if info != nil {
			pi = info(i)
		}
		r, err := c.Pick(pi)
		if err != nil {
			t.Fatalf("Pick: %v", err)
		}
		counts[r.Endpoint.Addr]++
		r.Finish(balancer.DoneInfo{})
	}
	return counts
}

// chiSquareCritical holds the chi-square distribution's 0.999 quantile by
// degrees of freedom: a fair draw exceeds it one time in a thousand.
var chiSquareCritical = []float64{0, 10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12, 27.88, 29.59}

// checkShares fails t unless counts, over n picks, fit eps's weights by a
// chi-square test at p = 0.001.
func checkShares(t *testing.T, eps []resolver.Endpoint, counts map[string]int, n int) {
	t.Helper()
	var total float64
	for _, e := range eps {
		total += float64(e.EffectiveWeight())
	}
	var stat float64
	for _, e := range eps {
		want := float64(n) * float64(e.EffectiveWeight()) / total
		d := float64(counts[e.Addr]) - want
		stat += d * d / want
	}
	df := len(eps) - 1
	if limit := chiSquareCritical[df]; stat > limit || math.IsNaN(stat) {
		t.Errorf("chi-square %.2f > %.2f (df %d): counts %v do not fit weights", stat, limit, df, counts)
	}
}
