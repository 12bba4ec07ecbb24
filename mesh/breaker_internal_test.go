package mesh

import (
	"context"
	"testing"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/resilience"
)

// BenchmarkBreaker compares a request's admission and report through the
// breaker alone and through tracedBreaker, which holds the request's
// context for the transition it may cause.
func BenchmarkBreaker(b *testing.B) {
	ctx := context.Background()
	b.Run("resilience.Breaker", func(b *testing.B) {
		br := resilience.NewBreaker(resilience.BreakerSettings{})
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				done, err := br.Allow()
				if err == nil {
					done(balancer.Success)
				}
			}
		})
	})
	b.Run("tracedBreaker", func(b *testing.B) {
		t := &tracedBreaker{ctx: ctx, b: resilience.NewBreaker(resilience.BreakerSettings{})}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				done, err := t.allow(ctx)
				if err == nil {
					t.report(ctx, done, balancer.Success)
				}
			}
		})
	})
}
