package mesh_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/resolver"
)

// Balancing of gRPC channels to mesh services: the tests of the HTTP path
// (TestZoneAwareStatic, TestRetriesAvoidAFailingEndpoint) over DialGRPC,
// with real grpc-go servers on loopback.

// dialHealth returns a health client on a channel of m to target, closed
// when the test ends.
func dialHealth(t *testing.T, m *mesh.Mesh, target string) healthpb.HealthClient {
	t.Helper()
	cc, err := m.DialGRPC(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return healthpb.NewHealthClient(cc)
}

// checks makes n Check calls, failing the test on any error, and returns
// the calls each counter served meanwhile.
func checks(t *testing.T, c healthpb.HealthClient, n int, counters []*countingHealth) []int {
	t.Helper()
	before := snapshot(counters)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range n {
		if _, err := c.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("call %d of %d: %v", i, n, err)
		}
	}
	return delta(before, snapshot(counters))
}

func delta(before, after []int) []int {
	out := make([]int, len(after))
	for i := range after {
		out[i] = after[i] - before[i]
	}
	return out
}

// warm calls until every counter has served a call, so that every
// endpoint is connected and known to the policy.
func warm(t *testing.T, c healthpb.HealthClient, counters []*countingHealth) {
	t.Helper()
	for i := 0; !allServed(counters); i++ {
		if i == 5000 {
			t.Fatalf("after 5000 calls some endpoints never served one: %v", snapshot(counters))
		}
		checks(t, c, 1, counters)
	}
}

// TestDialGRPCZoneAware is TestZoneAwareStatic over gRPC: a caller in
// zone a calls a service of six endpoints, two in each of zones a, b and
// c (WEFT_ENDPOINTS, host:port@region/zone). Every call stays in zone a,
// as every HTTP request does, and round_robin within the zone splits them
// evenly: each endpoint of a gets 40-60% of them.
func TestDialGRPCZoneAware(t *testing.T) {
	addrs, counters := grpcBackends(t, newMesh(t), 6)
	var spec []string
	for i, a := range addrs {
		spec = append(spec, a+"@r/"+string(rune('a'+i/2)))
	}
	t.Setenv("WEFT_ENDPOINTS", "orders="+strings.Join(spec, ","))
	t.Setenv("WEFT_LOCALITY", "r/a")
	c := dialHealth(t, newMesh(t), "orders")
	const n = 600
	got := checks(t, c, n, counters)
	t.Logf("%d calls per endpoint, zones a a b b c c: %v", n, got)
	if out := n - got[0] - got[1]; out != 0 {
		t.Errorf("%d of %d calls left the caller's zone: %v", out, n, got)
	}
	for i := range 2 {
		if got[i] < n*4/10 || got[i] > n*6/10 {
			t.Errorf("endpoint %d of zone a served %d of %d calls, want 40-60%%", i, got[i], n)
		}
	}
}

// TestDialGRPCZoneAwareSpill loses one of zone a's three endpoints (nothing
// listens there; zones b and c have three each): the channel counts its
// failed connection as an unhealthy endpoint, and Envoy's zone-aware
// formula gives, in 1/10,000: local_a = 3333 (3 of 9 endpoints), upstream_a
// = 2500 (2 of 8 healthy), so zone a keeps 2500 × 10000 / 3333 = 7500; b
// and c each hold 3750 − 3333 = 417 of residual capacity and share the
// other 25% equally. The test wants 75% ± 5 and 12.5% ± 4 per zone over
// 2,000 calls (binomial deviations are about 1 point).
func TestDialGRPCZoneAwareSpill(t *testing.T) {
	addrs, counters := grpcBackends(t, newMesh(t), 8)
	dead := freeAddr(t)
	zones := []string{"a", "a", "b", "b", "b", "c", "c", "c"}
	spec := []string{dead + "@r/a"}
	for i, a := range addrs {
		spec = append(spec, a+"@r/"+zones[i])
	}
	m := newMesh(t, mesh.WithEndpoints("orders", spec...),
		mesh.WithZoneAware(balancer.ZoneAwareConfig{Local: resolver.Locality{Region: "r", Zone: "a"}}))
	c := dialHealth(t, m, "orders")
	// Until the dead endpoint's connection has failed, zone a holds its
	// share of healthy endpoints and keeps every call.
	warm(t, c, counters)
	const n = 2000
	got := checks(t, c, n, counters)
	share := map[string]float64{}
	for i, z := range zones {
		share[z] += float64(got[i]) / n
	}
	t.Logf("%d calls: zone shares %.3f a, %.3f b, %.3f c; per endpoint %v", n, share["a"], share["b"], share["c"], got)
	for z, want := range map[string]float64{"a": 0.75, "b": 0.125, "c": 0.125} {
		tol := 0.04
		if z == "a" {
			tol = 0.05
		}
		if d := share[z] - want; d < -tol || d > tol {
			t.Errorf("zone %s got %.3f of calls, want %.3f ± %.2f", z, share[z], want, tol)
		}
	}
}

// TestDialGRPCSlowStart adds a third endpoint to a two-endpoint service
// with a 3 s slow-start window: during its first 600 ms the new endpoint's
// weight is max(10%, t/3s) ≤ 20% of the others', so it gets about 6% of
// the calls (under 15% wanted, a third without slow start); once the
// window has passed it gets its third (25-42% wanted).
func TestDialGRPCSlowStart(t *testing.T) {
	const window = 3 * time.Second
	addrs, counters := grpcBackends(t, newMesh(t), 3)
	m := newMesh(t, mesh.WithEndpoints("orders", addrs[:2]...), mesh.WithSlowStart(balancer.SlowStartConfig{Window: window}))
	c := dialHealth(t, m, "orders")
	warm(t, c, counters[:2])
	// The first endpoint set does not ramp.
	if got := checks(t, c, 200, counters); got[0] < 80 || got[1] < 80 {
		t.Errorf("the first two endpoints served %v of 200 calls, want about 100 each", got)
	}

	if err := m.SetStaticEndpoints("orders", addrs...); err != nil {
		t.Fatal(err)
	}
	added := time.Now()
	before := snapshot(counters)
	calls := 0
	for time.Since(added) < window/5 {
		checks(t, c, 1, counters)
		calls++
	}
	early := delta(before, snapshot(counters))
	frac := float64(early[2]) / float64(calls)
	t.Logf("first %v of the window: the new endpoint served %d of %d calls (%.1f%%): %v", window/5, early[2], calls, 100*frac, early)
	if frac > 0.15 {
		t.Errorf("the new endpoint served %.1f%% of calls early in its window, want under 15%%", 100*frac)
	}

	time.Sleep(time.Until(added.Add(window + 100*time.Millisecond)))
	const n = 600
	late := checks(t, c, n, counters)
	t.Logf("after the window: %v of %d calls", late, n)
	if late[2] < n/4 || late[2] > n*42/100 {
		t.Errorf("after its window the new endpoint served %d of %d calls, want 25-42%%", late[2], n)
	}
}

// failingHealth answers every Check with an error of code.
type failingHealth struct {
	healthpb.UnimplementedHealthServer
	code  codes.Code
	calls atomic.Int64
}

func (f *failingHealth) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	f.calls.Add(1)
	return nil, status.Error(f.code, "failing on purpose")
}

// TestDialGRPCOutlierDetection is TestRetriesAvoidAFailingEndpoint over
// gRPC: of three endpoints, one fails every call with UNAVAILABLE (a
// gateway error) or INTERNAL (a server error). Outlier detection ejects it
// when its fifth call in a row fails (Envoy's default, consecutive
// errors), for 30 s: it serves exactly five of 300 calls, and none after.
// Health checks are not idempotent, so no call is retried.
func TestDialGRPCOutlierDetection(t *testing.T) {
	for _, code := range []codes.Code{codes.Unavailable, codes.Internal} {
		t.Run(code.String(), func(t *testing.T) {
			srv := newMesh(t)
			addrs, counters := grpcBackends(t, srv, 2)
			bad := &failingHealth{code: code}
			addrs = append(addrs, serveHealth(t, srv, bad))
			c := dialHealth(t, newMesh(t, mesh.WithEndpoints("orders", addrs...)), "orders")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			failed := 0
			var afterEjection int64
			for i := range 300 {
				if i == 100 {
					afterEjection = bad.calls.Load()
				}
				_, err := c.Check(ctx, &healthpb.HealthCheckRequest{})
				switch status.Code(err) {
				case codes.OK:
				case code:
					failed++
				default:
					t.Fatalf("call %d: %v", i, err)
				}
			}
			got := snapshot(counters)
			t.Logf("300 calls: failing endpoint %d (%d by call 100), healthy %v, %d failed", bad.calls.Load(), afterEjection, got, failed)
			if n := bad.calls.Load(); n != 5 || afterEjection != 5 || failed != 5 {
				t.Errorf("the failing endpoint served %d calls (%d by call 100; %d failed), want 5, all before call 100", n, afterEjection, failed)
			}
			if got[0]+got[1] != 295 || got[0] < 100 || got[1] < 100 {
				t.Errorf("healthy endpoints served %v, want 295 in all, spread", got)
			}
		})
	}
}
