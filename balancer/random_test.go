package balancer_test

import (
	"testing"

	"github.com/weftmesh/weft/balancer"
)

func TestRandomShares(t *testing.T) {
	for _, tc := range []struct {
		name    string
		weights []uint32
	}{
		{"equal", []uint32{0, 0, 0, 0}},
		{"weighted", []uint32{1, 2, 3, 4}},
		{"skewed", []uint32{1, 100, 0, 7, 30}},
		{"single", []uint32{5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eps := endpoints(tc.weights...)
			c := newCluster(t, balancer.NewRandomBuilder(seeded(1)), "", eps)
			const n = 100_000
			counts := pickCounts(t, c, n, nil)
			if len(eps) > 1 {
				checkShares(t, eps, counts, n)
			} else if counts[eps[0].Addr] != n {
				t.Errorf("counts = %v, want all %d on %s", counts, n, eps[0].Addr)
			}
		})
	}
}
