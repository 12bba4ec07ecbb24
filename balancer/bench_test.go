package balancer_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/resolver"
)

var benchSizes = []int{3, 100, 10_000}

// weighted returns n endpoints with weights 1 to 4.
func weighted(n int) []resolver.Endpoint {
	eps := equal(n)
	for i := range eps {
		eps[i].Weight = uint32(1 + i%4)
	}
	return eps
}

// BenchmarkPick measures what a request costs the balancer: a pick from
// the Cluster and its Finish (with feedback, for p2c_ewma), over endpoints
// of equal weight, from all cores at once. The finish time is handed over
// as the data paths do (DoneInfo.End, from the reading that also times the
// request), so the figure is the balancer's work without a clock read.
func BenchmarkPick(b *testing.B) { benchmarkPick(b, equal) }

// BenchmarkPickWeighted is BenchmarkPick over unequal weights, which takes
// the weighted paths of random and least_request.
func BenchmarkPickWeighted(b *testing.B) { benchmarkPick(b, weighted) }

func benchmarkPick(b *testing.B, mk func(int) []resolver.Endpoint) {
	for _, name := range allPolicies {
		for _, n := range benchSizes {
			b.Run(fmt.Sprintf("%s/%d", name, n), func(b *testing.B) {
				c := newCluster(b, balancer.Get(name), "", mk(n))
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					var h uint64
					end := balancer.Now()
					for pb.Next() {
						h += 0x9e3779b97f4a7c15
						r, err := c.Pick(balancer.PickInfo{Hash: h, HasHash: true})
						if err != nil {
							b.Error(err)
							return
						}
						end += int64(10 * time.Microsecond)
						r.Finish(balancer.DoneInfo{Latency: time.Millisecond, End: end})
					}
				})
			})
		}
	}
}

// BenchmarkPicker measures a policy's Picker.Pick alone, without the
// Cluster's in-flight count and without Finish, over endpoints of equal
// weight, from all cores at once.
func BenchmarkPicker(b *testing.B) {
	for _, name := range allPolicies {
		for _, n := range benchSizes {
			b.Run(fmt.Sprintf("%s/%d", name, n), func(b *testing.B) {
				var eps []*balancer.Endpoint
				for _, e := range equal(n) {
					eps = append(eps, balancer.NewEndpoint(e))
				}
				var picker balancer.Picker
				bal := balancer.Get(name).Build(balancer.BuildOptions{UpdatePicker: func(p balancer.Picker) { picker = p }})
				defer bal.Close()
				bal.UpdateEndpoints(eps)
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					var h uint64
					for pb.Next() {
						h += 0x9e3779b97f4a7c15
						if _, err := picker.Pick(balancer.PickInfo{Hash: h, HasHash: true}); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}

// BenchmarkBuild measures building a picker for a new endpoint set, for
// the policies that precompute a table.
func BenchmarkBuild(b *testing.B) {
	for _, name := range []string{balancer.WeightedRoundRobin, balancer.RingHash, balancer.Maglev} {
		for _, n := range benchSizes {
			b.Run(fmt.Sprintf("%s/%d", name, n), func(b *testing.B) {
				var eps []*balancer.Endpoint
				for _, e := range weighted(n) {
					eps = append(eps, balancer.NewEndpoint(e))
				}
				var picker balancer.Picker
				bal := balancer.Get(name).Build(balancer.BuildOptions{UpdatePicker: func(p balancer.Picker) { picker = p }})
				defer bal.Close()
				b.ReportAllocs()
				for b.Loop() {
					bal.UpdateEndpoints(eps)
				}
				_ = picker
			})
		}
	}
}

// BenchmarkPickRequestHashHeader measures ring_hash and maglev placing
// requests that carry no hash by their requestHashHeader (gRFC A76): from
// an HTTP request's header, and from a gRPC call's outgoing metadata,
// which grpc-go copies on every read.
func BenchmarkPickRequestHashHeader(b *testing.B) {
	for _, name := range []string{balancer.RingHash, balancer.Maglev} {
		for _, proto := range []string{"http", "grpc"} {
			b.Run(name+"/"+proto, func(b *testing.B) {
				c := newCluster(b, balancer.Get(name), `{"requestHashHeader":"x-user"}`, equal(100))
				info := balancer.PickInfo{Ctx: context.Background(), Header: http.Header{"X-User": {"alice"}}}
				if proto == "grpc" {
					info = balancer.PickInfo{Ctx: metadata.AppendToOutgoingContext(context.Background(), "x-user", "alice")}
				}
				b.ReportAllocs()
				for b.Loop() {
					r, err := c.Pick(info)
					if err != nil {
						b.Fatal(err)
					}
					r.Finish(balancer.DoneInfo{})
				}
			})
		}
	}
}
