package balancer_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/resolver"
)

// zoned returns n endpoints in three zones of weights 1, 2, 3, all in
// priority 0 but every tenth, which is in priority 1.
func zoned(n int) []resolver.Endpoint {
	eps := equal(n)
	for i := range eps {
		eps[i].Locality = resolver.Locality{Region: "r", Zone: fmt.Sprint(i % 3)}
		eps[i].LocalityWeight = uint32(1 + i%3)
		if i%10 == 9 {
			eps[i].Priority = 1
		}
	}
	return eps
}

// BenchmarkPickWrapped measures a pick from the Cluster and its Finish
// through the wrapping Builders, over round_robin, from all cores at once.
// Finish counts the outcome for outlier detection.
func BenchmarkPickWrapped(b *testing.B) {
	rr := balancer.Get(balancer.RoundRobin)
	for _, w := range []struct {
		name    string
		builder balancer.Builder
	}{
		{"outlier", balancer.NewOutlierDetection(rr, balancer.OutlierConfig{})},
		{"priority_locality", balancer.NewPriorityLocality(rr)},
		{"outlier+priority_locality", balancer.NewOutlierDetection(balancer.NewPriorityLocality(rr), balancer.OutlierConfig{})},
	} {
		for _, n := range benchSizes {
			b.Run(fmt.Sprintf("%s/%d", w.name, n), func(b *testing.B) {
				c := newCluster(b, w.builder, "", zoned(n))
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						r, err := c.Pick(balancer.PickInfo{})
						if err != nil {
							b.Error(err)
							return
						}
						r.Finish(balancer.DoneInfo{Latency: time.Millisecond})
					}
				})
			})
		}
	}
}

// BenchmarkPickRetry measures a retry's pick (PickInfo.Tried) from the
// Cluster and its Finish through priority_locality: over round_robin with
// the endpoint a re-pick avoids tried, and over ring_hash with the
// endpoint the request's hash lands on tried, so that every re-pick finds
// it again and the pick falls back to the untried endpoints of the
// priority the load chose.
func BenchmarkPickRetry(b *testing.B) {
	for _, n := range benchSizes {
		for _, name := range []string{balancer.RoundRobin, balancer.RingHash} {
			b.Run(fmt.Sprintf("%s/%d", name, n), func(b *testing.B) {
				c := newCluster(b, balancer.NewPriorityLocality(balancer.Get(name), balancer.WithoutOverprovisioning()), "", zoned(n))
				info := balancer.PickInfo{Hash: 42, HasHash: true}
				first, err := c.Pick(info)
				if err != nil {
					b.Fatal(err)
				}
				first.Finish(balancer.DoneInfo{})
				info.Tried = triedSet{first.Endpoint.Addr: true}
				b.ReportAllocs()
				for b.Loop() {
					r, err := c.Pick(info)
					if err != nil {
						b.Fatal(err)
					}
					r.Finish(balancer.DoneInfo{Latency: time.Millisecond})
				}
			})
		}
	}
}
