package balancer_test

import (
	"maps"
	"slices"
	"testing"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/resolver"
)

// firstServing always picks the first endpoint it may: a policy whose
// every draw lands on the same endpoint, so a retry's re-picks all find
// it tried and the pick's last resort decides.
var firstServing = balancer.NewPickerBuilder("first_serving", func(serving []*balancer.Endpoint) balancer.Picker {
	return firstPicker{serving[0]}
})

type firstPicker struct{ e *balancer.Endpoint }

func (p firstPicker) Pick(balancer.PickInfo) (balancer.PickResult, error) {
	return balancer.PickResult{Endpoint: p.e}, nil
}

// TestRetryPickStaysInPriority holds the pick of a retry (PickInfo.Tried)
// to the priority, and the localities within it, that the balancer's
// load chooses. Envoy's reference:
//
//   - retry_priority: "Specifies an implementation of a RetryPriority
//     which is used to determine the distribution of load across
//     priorities used when determining which priority to route a request
//     to." Without one (Weft applies none), a retry is placed by the same
//     priority load as the first attempt.
//   - retry_host_predicate previous_hosts: "will cause retries to avoid
//     hosts that have already been attempted"; host_selection_retry_max_attempts:
//     "The maximum number of times host selection will be reattempted
//     before giving up, at which point the host that was last selected
//     will be routed to. If unspecified, this will default to retrying
//     once."
//
// So when every endpoint the load can choose has been tried, the retry
// goes back to a tried one, never to a priority the load gives nothing;
// and when health (EDS's, or outlier detection's ejections) takes a whole
// priority out, the load itself moves on, and retries with it.
func TestRetryPickStaysInPriority(t *testing.T) {
	z1 := resolver.Locality{Region: "r1", Zone: "z1"}
	z2 := resolver.Locality{Region: "r1", Zone: "z2"}
	z3 := resolver.Locality{Region: "r2", Zone: "z3"}
	ep := func(addr string, l resolver.Locality, prio uint32, h resolver.Health) resolver.Endpoint {
		return resolver.Endpoint{Addr: addr, Locality: l, Priority: prio, Health: h}
	}
	const picks = 200
	tests := []struct {
		name string
		// build is the policy; nil means firstServing inside grpc-go's
		// priority failover (no overprovisioning), as an xDS cluster has.
		build func() balancer.Builder
		eps   []resolver.Endpoint
		// eject lists endpoints outlier detection ejects before the picks.
		eject []string
		tried triedSet
		// want is the set of endpoints every pick must land in; each must
		// be reached at least once.
		want []string
	}{
		{
			name:  "untried endpoint in the chosen priority",
			eps:   []resolver.Endpoint{ep("a:1", z1, 0, 0), ep("b:1", z1, 0, 0), ep("c:1", z2, 1, 0)},
			tried: triedSet{"a:1": true},
			want:  []string{"b:1"},
		},
		{
			name:  "every endpoint of the chosen priority tried: back to a tried one",
			eps:   []resolver.Endpoint{ep("a:1", z1, 0, 0), ep("b:1", z1, 0, 0), ep("c:1", z2, 1, 0)},
			tried: triedSet{"a:1": true, "b:1": true},
			want:  []string{"a:1"},
		},
		{
			name:  "the istiod case: local locality tried, priorities 1 and 2 untouched",
			eps:   []resolver.Endpoint{ep("a:1", z1, 0, 0), ep("b:1", z2, 1, 0), ep("c:1", z3, 2, 0)},
			tried: triedSet{"a:1": true},
			want:  []string{"a:1"},
		},
		{
			name: "priority 0 unhealthy in EDS: the load moves, retries follow",
			eps: []resolver.Endpoint{ep("a:1", z1, 0, resolver.Unhealthy), ep("b:1", z1, 0, resolver.Unhealthy),
				ep("c:1", z2, 1, 0), ep("d:1", z2, 1, 0), ep("e:1", z3, 2, 0)},
			tried: triedSet{"c:1": true},
			want:  []string{"d:1"},
		},
		{
			name: "priority 0 ejected by outlier detection: the load moves, retries follow",
			build: func() balancer.Builder {
				return balancer.NewOutlierDetectionForTest(
					balancer.NewPriorityLocalityForTest(firstServing, seeded(3), balancer.WithoutOverprovisioning()),
					balancer.OutlierConfig{MaxEjectionPercent: 100}, new(balancer.FakeClock), seeded(4))
			},
			eps:   []resolver.Endpoint{ep("a:1", z1, 0, 0), ep("b:1", z1, 0, 0), ep("c:1", z2, 1, 0), ep("e:1", z3, 2, 0)},
			eject: []string{"a:1", "b:1"},
			tried: triedSet{"c:1": true},
			want:  []string{"c:1"},
		},
		{
			name: "zone-aware: the caller's locality keeps the retry",
			build: func() balancer.Builder {
				return balancer.NewPriorityLocalityForTest(firstServing, seeded(5), balancer.WithoutOverprovisioning(),
					balancer.WithZoneAware(balancer.ZoneAwareConfig{Local: z1, MinClusterSize: 1}))
			},
			eps:   []resolver.Endpoint{ep("a:1", z1, 0, 0), ep("b:1", z1, 0, 0), ep("c:1", z2, 0, 0)},
			tried: triedSet{"a:1": true},
			want:  []string{"b:1"},
		},
		{
			name:  "locality weights: any locality of the priority with weight",
			eps:   []resolver.Endpoint{ep("a:1", z1, 0, 0), ep("b:1", z2, 0, 0), ep("c:1", z2, 0, 0), ep("d:1", z3, 1, 0)},
			tried: triedSet{"a:1": true, "b:1": true},
			want:  []string{"c:1"},
		},
		{
			name:  "a policy without priorities reaches any untried endpoint",
			build: func() balancer.Builder { return firstServing },
			eps:   []resolver.Endpoint{ep("a:1", z1, 0, 0), ep("b:1", z2, 1, 0)},
			tried: triedSet{"a:1": true},
			want:  []string{"b:1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b balancer.Builder
			if tt.build != nil {
				b = tt.build()
			} else {
				b = balancer.NewPriorityLocalityForTest(firstServing, seeded(1), balancer.WithoutOverprovisioning())
			}
			c := newCluster(t, b, "", tt.eps)
			for _, addr := range tt.eject {
				feed(t, c, map[string][]balancer.Outcome{addr: repeat(balancer.ConnectFailure, 5)})
				if !endpoint(t, c, addr).Ejected() {
					t.Fatalf("%s not ejected", addr)
				}
			}
			got := pickCounts(t, c, picks, func(int) balancer.PickInfo { return balancer.PickInfo{Tried: tt.tried} })
			for addr, n := range got {
				if !slices.Contains(tt.want, addr) {
					t.Errorf("%d of %d retries went to %s, want only %v (all: %v)", n, picks, addr, tt.want, got)
				}
			}
			for _, addr := range tt.want {
				if got[addr] == 0 {
					t.Errorf("no retry went to %s: %v", addr, slices.Sorted(maps.Keys(got)))
				}
			}
		})
	}
}
