package mesh_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// retryLocality is one EDS locality of a retry row: zone (region "r"),
// priority, endpoints, and whether EDS calls them UNHEALTHY.
type retryLocality struct {
	zone      string
	priority  uint32
	addrs     []string
	unhealthy bool
}

func retryEDS(cluster string, ls ...retryLocality) *endpointv3.ClusterLoadAssignment {
	out := parityEDS(cluster)
	for _, l := range ls {
		e := parityEDS(cluster, locality{zone: l.zone, priority: l.priority, addrs: l.addrs}).Endpoints[0]
		if l.unhealthy {
			for _, lb := range e.LbEndpoints {
				lb.HealthStatus = corev3.HealthStatus_UNHEALTHY
			}
		}
		out.Endpoints = append(out.Endpoints, e)
	}
	return out
}

// retryRoute retries connect failures and UNAVAILABLE (gRPC) or 503
// (HTTP) up to three times, with previous_hosts and a short back-off so
// that 200 calls with retries take little time, hashing by x-user when
// hash is set.
func retryRoute(hash bool) *routev3.Route {
	return parityRoute("svc", nil, func(a *routev3.RouteAction) {
		p := retryPolicy("connect-failure,unavailable,5xx", 3, 0)
		p.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(time.Millisecond), MaxInterval: durationpb.New(5 * time.Millisecond)}
		pred, _ := anypb.New(&previoushostsv3.PreviousHostsPredicate{})
		p.RetryHostPredicate = []*routev3.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.previous_hosts",
			ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: pred}}}
		p.HostSelectionRetryMaxAttempts = 3
		a.RetryPolicy = p
		if hash {
			a.HashPolicy = []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
				Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: "x-user"}}}}
		}
	})
}

// p0Live stands, in a row's want, for the backend the row's resources
// name as priority 0's live one (b0 unless they say otherwise).
const p0Live = "p0 live"

// retryTally is what one client's calls of a row saw.
type retryTally struct {
	on     map[string]int // successful calls by backend name
	failed int
	// lateOn counts, by backend, the successful calls of the second half,
	// after outlier detection has had the first to act.
	lateOn map[string]int
}

// TestRetryStaysInPriority holds retries to the priority the balancer's
// load chooses, on Weft's HTTP path and on Weft's gRPC path, with
// grpc-go's xDS client as the oracle (its retries pick again through the
// same priority balancer, which knows only connection states), against
// real backends and closed ports on loopback.
//
// Envoy's documentation is the reference:
//
//   - RetryPolicy.retry_priority: "Specifies an implementation of a
//     RetryPriority which is used to determine the distribution of load
//     across priorities used when determining which priority to route a
//     request to." Without one (istiod sets none, and Weft applies
//     none), a retry is placed by the same priority load as the first
//     attempt.
//   - retry_host_predicate previous_hosts: "will cause retries to avoid
//     hosts that have already been attempted";
//     host_selection_retry_max_attempts: "The maximum number of times
//     host selection will be reattempted before giving up, at which point
//     the host that was last selected will be routed to."
//   - Priority levels: "If the hosts in a priority are unhealthy,
//     traffic spills to the next priority", health coming from EDS's
//     health_status and from outlier detection's ejections.
//
// So a retry never lands in a priority the load gives nothing: it finds
// an untried endpoint of the same priority, or goes back to a tried one;
// and when a whole priority is unhealthy or ejected, the load itself
// moves to the next priority, and every attempt with it.
func TestRetryStaysInPriority(t *testing.T) {
	const n = 200
	type want struct {
		// only: the backends successful calls may reach; every call must
		// succeed unless mayFail.
		only    []string
		mayFail bool
		// allFail: every call fails (no attempt reaches a live backend).
		allFail bool
		// lateOnly: the backends the second half of the calls must all
		// succeed on (outlier detection has ejected by then).
		lateOnly []string
	}
	rows := []struct {
		name     string
		backends int
		hash     bool
		// settle: before the counted calls, call (paced, bounded) until one
		// succeeds, so that outlier detection's interval has run: unpaced,
		// the counted calls can all end before it does on a fast machine.
		settle    bool
		resources func(e *parityEnv, dead2 string, target *string) []types.Resource
		want      map[string]want // by client
	}{
		{
			// Calls whose hash lands on the closed port find it again on
			// every re-pick; the fallback is p0's live endpoint.
			name: "p0: one live, one refusing connections; p1 live", backends: 2, hash: true,
			resources: func(e *parityEnv, _ string, _ *string) []types.Resource {
				return []types.Resource{parityListener(), parityRoutes(retryRoute(true)),
					parityCluster("svc", func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_RING_HASH }),
					retryEDS("svc", retryLocality{zone: "z1", priority: 0, addrs: []string{e.b[0].addr, e.dead}},
						retryLocality{zone: "z2", priority: 1, addrs: []string{e.b[1].addr}})}
			},
			want: map[string]want{weftHTTP: {only: []string{"b0"}}, weftGRPC: {only: []string{"b0"}}, grpcGo: {only: []string{"b0"}}},
		},
		{
			// b2 answers 503 / UNAVAILABLE over a live connection, so the
			// gRPC paths see it READY and retry there too. grpc-go does not
			// avoid tried hosts: a call hashed to b2 fails on every attempt,
			// but never leaves priority 0.
			name: "p0: one live, one failing every call; p1 live", backends: 3, hash: true,
			resources: func(e *parityEnv, _ string, target *string) []types.Resource {
				e.b[2].fail.Store(true)
				// The live backend of p0 is b0; p1's address sorts before
				// it, so that a fallback taking the first READY untried
				// address, whatever its priority, would show.
				p0, p1 := e.b[0], e.b[1]
				if p1.addr > p0.addr {
					p0, p1 = p1, p0
				}
				*target = p0.name
				return []types.Resource{parityListener(), parityRoutes(retryRoute(true)),
					parityCluster("svc", func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_RING_HASH }),
					retryEDS("svc", retryLocality{zone: "z1", priority: 0, addrs: []string{p0.addr, e.b[2].addr}},
						retryLocality{zone: "z2", priority: 1, addrs: []string{p1.addr}})}
			},
			want: map[string]want{weftHTTP: {only: []string{p0Live}}, weftGRPC: {only: []string{p0Live}}, grpcGo: {only: []string{p0Live}, mayFail: true}},
		},
		{
			// The istiod case, without outlier detection: EDS keeps the
			// closed port healthy, so HTTP's load stays on priority 0 and
			// every attempt fails there, as Envoy's. A gRPC channel sees
			// the connection fail and fails over, as grpc-go does, to
			// priority 1, never 2.
			name: "p0: its only endpoint refusing connections; p1, p2 live", backends: 2,
			resources: func(e *parityEnv, _ string, _ *string) []types.Resource {
				return []types.Resource{parityListener(), parityRoutes(retryRoute(false)), parityCluster("svc", nil),
					retryEDS("svc", retryLocality{zone: "z1", priority: 0, addrs: []string{e.dead}},
						retryLocality{zone: "z2", priority: 1, addrs: []string{e.b[0].addr}},
						retryLocality{zone: "z3", priority: 2, addrs: []string{e.b[1].addr}})}
			},
			want: map[string]want{weftHTTP: {allFail: true}, weftGRPC: {only: []string{"b0"}}, grpcGo: {only: []string{"b0"}}},
		},
		{
			name: "p0 UNHEALTHY in EDS: p1", backends: 3,
			resources: func(e *parityEnv, _ string, _ *string) []types.Resource {
				return []types.Resource{parityListener(), parityRoutes(retryRoute(false)), parityCluster("svc", nil),
					retryEDS("svc", retryLocality{zone: "z1", priority: 0, addrs: []string{e.b[2].addr, e.dead}, unhealthy: true},
						retryLocality{zone: "z2", priority: 1, addrs: []string{e.b[0].addr}},
						retryLocality{zone: "z3", priority: 2, addrs: []string{e.b[1].addr}})}
			},
			want: map[string]want{weftHTTP: {only: []string{"b0"}}, weftGRPC: {only: []string{"b0"}}, grpcGo: {only: []string{"b0"}}},
		},
		{
			// Both endpoints of p0 refuse connections; consecutive_5xx
			// (which counts connect failures) ejects them, and the load
			// moves to p1, never p2.
			name: "p0 refusing connections, ejected by outlier detection: p1", backends: 2, settle: true,
			resources: func(e *parityEnv, dead2 string, _ *string) []types.Resource {
				return []types.Resource{parityListener(), parityRoutes(retryRoute(false)),
					parityCluster("svc", func(c *clusterv3.Cluster) {
						c.OutlierDetection = &clusterv3.OutlierDetection{
							Consecutive_5Xx:    wrapperspb.UInt32(2),
							Interval:           durationpb.New(time.Second),
							BaseEjectionTime:   durationpb.New(time.Minute),
							MaxEjectionPercent: wrapperspb.UInt32(100),
						}
					}),
					retryEDS("svc", retryLocality{zone: "z1", priority: 0, addrs: []string{e.dead, dead2}},
						retryLocality{zone: "z2", priority: 1, addrs: []string{e.b[0].addr}},
						retryLocality{zone: "z3", priority: 2, addrs: []string{e.b[1].addr}})}
			},
			want: map[string]want{weftHTTP: {only: []string{"b0"}, mayFail: true, lateOnly: []string{"b0"}},
				weftGRPC: {only: []string{"b0"}, mayFail: true, lateOnly: []string{"b0"}},
				grpcGo:   {only: []string{"b0"}, mayFail: true, lateOnly: []string{"b0"}}},
		},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			dead2, target := freeAddr(t), "b0"
			e := newParityEnv(t, parityRow{backends: row.backends, resources: func(e *parityEnv) []types.Resource {
				return row.resources(e, dead2, &target)
			}})
			resolve := func(names []string) []string {
				out := slices.Clone(names)
				for i, n := range out {
					if n == p0Live {
						out[i] = target
					}
				}
				return out
			}
			for _, c := range e.clients {
				w := row.want[c.name]
				w.only, w.lateOnly = resolve(w.only), resolve(w.lateOnly)
				tally := retryTally{on: map[string]int{}, lateOn: map[string]int{}}
				for deadline := time.Now().Add(15 * time.Second); row.settle && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
					if o := c.call(callLimit); o.err == nil {
						// Settling calls are held to the same priorities.
						tally.on[o.backend]++
						break
					}
				}
				for i := range n {
					var hdr []string
					if row.hash {
						hdr = []string{"x-user", fmt.Sprintf("user-%d", i)}
					}
					o := c.call(callLimit, hdr...)
					if o.err != nil {
						tally.failed++
						continue
					}
					tally.on[o.backend]++
					if i >= n/2 {
						tally.lateOn[o.backend]++
					}
				}
				t.Logf("%s: %d calls: by backend %s, %d failed", c.name, n, sortedCounts(tally.on), tally.failed)
				switch {
				case w.allFail:
					if len(tally.on) != 0 {
						t.Errorf("%s: calls reached %s, want every call to fail in priority 0", c.name, sortedCounts(tally.on))
					}
					continue
				case !w.mayFail && tally.failed > 0:
					t.Errorf("%s: %d of %d calls failed, want none", c.name, tally.failed, n)
				}
				for b, k := range tally.on {
					if !slices.Contains(w.only, b) {
						t.Errorf("%s: %d of %d calls reached %s, outside the priority the load chooses (want only %v)", c.name, k, n, b, w.only)
					}
				}
				if w.lateOnly != nil {
					late := 0
					for _, b := range w.lateOnly {
						late += tally.lateOn[b]
					}
					if late != n-n/2 {
						t.Errorf("%s: %d of the last %d calls succeeded on %v (%s), want all", c.name, late, n-n/2, w.lateOnly, sortedCounts(tally.lateOn))
					}
				}
			}
		})
	}
}
