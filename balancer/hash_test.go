package balancer_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/resolver"
)

// hashPolicies are the consistent-hashing policies, with builders whose
// random hashes (for requests without one) are seeded.
var hashPolicies = []struct {
	name  string
	build func(rng func() uint64) balancer.Builder
}{
	{balancer.RingHash, balancer.NewRingHashBuilder},
	{balancer.Maglev, balancer.NewMaglevBuilder},
}

// keys are request hashes spread over the whole uint64 range.
func keys(n int) []uint64 {
	rng := rand.New(rand.NewPCG(14, 14))
	k := make([]uint64, n)
	for i := range k {
		k[i] = rng.Uint64()
	}
	return k
}

// assign maps each key to the address c picks for it.
func assign(t *testing.T, c *balancer.Cluster, ks []uint64) []string {
	t.Helper()
	out := make([]string, len(ks))
	for i, k := range ks {
		r, err := c.Pick(balancer.PickInfo{Hash: k, HasHash: true})
		if err != nil {
			t.Fatal(err)
		}
		out[i] = r.Endpoint.Addr
		r.Finish(balancer.DoneInfo{})
	}
	return out
}

// TestHashStability removes one of ten endpoints and counts the keys that
// stay where they were. Only the removed endpoint's keys have to move;
// ring_hash also moves some others because the ring is resized for nine
// endpoints (each gets ceil(1024/9) = 114 entries instead of 103, the 11
// new ones taking over their arcs), as grpc-go's and Envoy's rings do.
func TestHashStability(t *testing.T) {
	ks := keys(100_000)
	for _, p := range hashPolicies {
		t.Run(p.name, func(t *testing.T) {
			eps := equal(10)
			c := newCluster(t, p.build(seeded(15)), "", eps)
			before := assign(t, c, ks)
			removed := eps[3].Addr
			c.Update(slices.Delete(slices.Clone(eps), 3, 4))
			after := assign(t, c, ks)
			var onRemoved, stayed int
			for i := range ks {
				switch {
				case before[i] == removed:
					onRemoved++
				case after[i] == before[i]:
					stayed++
				}
			}
			others := len(ks) - onRemoved
			overall := float64(stayed) / float64(len(ks))
			ofOthers := float64(stayed) / float64(others)
			t.Logf("%s: %.1f%% of all keys stay; %.1f%% of the keys not on the removed endpoint (which held %.1f%%)",
				p.name, 100*overall, 100*ofOthers, 100*float64(onRemoved)/float64(len(ks)))
			if ofOthers < 0.9 {
				t.Errorf("only %.1f%% of the keys not on the removed endpoint stay, want at least 90%%", 100*ofOthers)
			}
			// Adding it back restores the original assignment exactly.
			c.Update(eps)
			if again := assign(t, c, ks); !slices.Equal(again, before) {
				t.Error("assignment after re-adding the endpoint differs from the original")
			}
		})
	}
}

// TestHashSameKeySameEndpoint checks that a key's endpoint depends on the
// key and the endpoint set only: not on the order of the endpoints, nor on
// other keys picked in between.
func TestHashSameKeySameEndpoint(t *testing.T) {
	ks := keys(1000)
	for _, p := range hashPolicies {
		t.Run(p.name, func(t *testing.T) {
			eps := endpoints(1, 2, 3, 4, 5)
			a := assign(t, newCluster(t, p.build(seeded(16)), "", eps), ks)
			rev := slices.Clone(eps)
			slices.Reverse(rev)
			b := assign(t, newCluster(t, p.build(seeded(17)), "", rev), ks)
			if !slices.Equal(a, b) {
				t.Error("the order of the endpoints changed keys' endpoints")
			}
			c := newCluster(t, p.build(seeded(18)), "", eps)
			for i, k := range ks {
				r, err := c.Pick(balancer.PickInfo{Hash: k, HasHash: true})
				if err != nil {
					t.Fatal(err)
				}
				if r.Endpoint.Addr != a[i] {
					t.Fatalf("key %d: %s, then %s", k, a[i], r.Endpoint.Addr)
				}
				r.Finish(balancer.DoneInfo{})
			}
		})
	}
}

// TestHashWeights checks that keys spread in proportion to weight. A ring
// is coarse (arcs vary in length), so ring_hash is held to ±25% of each
// endpoint's share; a Maglev table is populated to within one entry of
// weight, so maglev is held to ±2%. Requests without a hash get random
// ones and spread the same way.
func TestHashWeights(t *testing.T) {
	eps := endpoints(1, 2, 3, 4)
	for _, p := range hashPolicies {
		tol := map[string]float64{balancer.RingHash: 0.25, balancer.Maglev: 0.02}[p.name]
		for _, hashed := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/hashed=%v", p.name, hashed), func(t *testing.T) {
				c := newCluster(t, p.build(seeded(19)), "", eps)
				ks := keys(200_000)
				counts := pickCounts(t, c, len(ks), func(i int) balancer.PickInfo {
					return balancer.PickInfo{Hash: ks[i], HasHash: hashed}
				})
				for _, e := range eps {
					want := float64(e.Weight) / 10
					got := float64(counts[e.Addr]) / float64(len(ks))
					if got < want*(1-tol) || got > want*(1+tol) {
						t.Errorf("%s (weight %d): share %.3f, want %.3f ± %.0f%%", e.Addr, e.Weight, got, want, 100*tol)
					}
				}
			})
		}
	}
}

func TestRingHashRingSize(t *testing.T) {
	for _, tc := range []struct {
		config  string
		weights []uint32
		want    int
	}{
		{"", []uint32{1, 1, 1}, 1026},                                           // ceil(1024/3)·3
		{"", []uint32{3, 3, 4}, 1027},                                           // min share 0.3: ceil(ceil(307.2)/0.3)
		{`{"minRingSize":10,"maxRingSize":100}`, []uint32{1, 1, 1}, 12},         // ceil(10/3)·3
		{`{"minRingSize":10,"maxRingSize":100}`, []uint32{1, 1000}, 100},        // capped by max
		{`{"minRingSize":8000,"maxRingSize":9000}`, []uint32{1, 1, 1}, 4096},    // both capped at 4096
		{`{"minRingSize":1,"maxRingSize":1}`, []uint32{1, 1, 1, 1, 1, 1, 1}, 1}, // too small for all
	} {
		t.Run(tc.config, func(t *testing.T) {
			b := balancer.NewRingHashBuilder(seeded(20))
			var picker balancer.Picker
			bal := b.Build(balancer.BuildOptions{UpdatePicker: func(p balancer.Picker) { picker = p }, Config: parse(t, b, tc.config)})
			defer bal.Close()
			var eps []*balancer.Endpoint
			for _, e := range endpoints(tc.weights...) {
				eps = append(eps, balancer.NewEndpoint(e))
			}
			bal.UpdateEndpoints(eps)
			if got := balancer.RingSize(picker); got != tc.want {
				t.Errorf("weights %v: ring of %d entries, want %d", tc.weights, got, tc.want)
			}
		})
	}
}

// TestMaglevTableShares checks that a table's entries follow the weights
// to within one entry per endpoint per round, and that every endpoint of
// 10,000 still gets entries in the default table.
func TestMaglevTableShares(t *testing.T) {
	b := balancer.NewMaglevBuilder(seeded(21))
	build := func(eps []resolver.Endpoint) []string {
		var picker balancer.Picker
		bal := b.Build(balancer.BuildOptions{UpdatePicker: func(p balancer.Picker) { picker = p }})
		defer bal.Close()
		var es []*balancer.Endpoint
		for _, e := range eps {
			es = append(es, balancer.NewEndpoint(e))
		}
		bal.UpdateEndpoints(es)
		return balancer.MaglevTable(picker)
	}
	eps := endpoints(1, 2, 3, 4)
	count := map[string]int{}
	table := build(eps)
	for _, a := range table {
		count[a]++
	}
	for _, e := range eps {
		want := float64(len(table)) * float64(e.Weight) / 10
		if d := float64(count[e.Addr]) - want; d < -4 || d > 4 {
			t.Errorf("%s (weight %d): %d entries, want %.0f", e.Addr, e.Weight, count[e.Addr], want)
		}
	}
	many := equal(10_000)
	count = map[string]int{}
	for _, a := range build(many) {
		count[a]++
	}
	if len(count) != len(many) {
		t.Errorf("%d of %d endpoints have table entries", len(count), len(many))
	}
}
