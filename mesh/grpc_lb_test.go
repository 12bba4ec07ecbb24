package mesh_test

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/resilience"
	"github.com/weftmesh/weft/resolver"
)

// Balancing of gRPC channels to mesh services: the tests of the HTTP path
// (TestZoneAwareStatic, TestRetriesAvoidAFailingEndpoint, the session
// affinity tests) over DialGRPC, with real grpc-go servers on loopback.

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

// sessionHealth counts the Check calls and the Watch streams it serves;
// while down is set, Check fails with UNAVAILABLE, uncounted.
type sessionHealth struct {
	countingHealth
	watches atomic.Int64
	down    atomic.Bool
	refused atomic.Int64
}

func (h *sessionHealth) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if h.down.Load() {
		h.refused.Add(1)
		return nil, status.Error(codes.Unavailable, "down")
	}
	return h.countingHealth.Check(ctx, req)
}

func (h *sessionHealth) Watch(_ *healthpb.HealthCheckRequest, s grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
	h.watches.Add(1)
	return s.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING})
}

// grpcJar keeps the session cookie gRPC responses set and sends it back,
// as a cookie jar does for HTTP.
type grpcJar struct {
	name   string
	cookie string // "name=value", "" before the first set-cookie
	sets   int
}

func (j *grpcJar) context(ctx context.Context) context.Context {
	if j.cookie == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "cookie", j.cookie)
}

func (j *grpcJar) keep(t *testing.T, md metadata.MD) {
	t.Helper()
	for _, v := range md.Get("set-cookie") {
		ck, err := http.ParseSetCookie(v)
		if err != nil {
			t.Fatalf("set-cookie %q: %v", v, err)
		}
		if ck.Name == j.name {
			j.cookie, j.sets = ck.Name+"="+ck.Value, j.sets+1
		}
	}
}

// addr returns the address the jar's cookie names.
func (j *grpcJar) addr(t *testing.T) string {
	t.Helper()
	_, v, _ := strings.Cut(j.cookie, "=")
	return decodeCookie(t, v)
}

// sessionCalls makes n Check calls with j's cookie, keeping what they set,
// and returns the calls each endpoint served, by address.
func sessionCalls(t *testing.T, c healthpb.HealthClient, j *grpcJar, n int, addrs []string, counters []*countingHealth) map[string]int {
	t.Helper()
	before := snapshot(counters)
	for i := range n {
		ctx, cancel := context.WithTimeout(j.context(context.Background()), 10*time.Second)
		var md metadata.MD
		_, err := c.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&md))
		cancel()
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		j.keep(t, md)
	}
	seen := map[string]int{}
	for i, d := range delta(before, snapshot(counters)) {
		if d > 0 {
			seen[addrs[i]] = d
		}
	}
	return seen
}

func sessionBackends(t *testing.T, n int) ([]string, []*sessionHealth, []*countingHealth) {
	t.Helper()
	srv := newMesh(t)
	var addrs []string
	var hs []*sessionHealth
	var counters []*countingHealth
	for range n {
		h := &sessionHealth{}
		addrs = append(addrs, serveHealth(t, srv, h))
		hs = append(hs, h)
		counters = append(counters, &h.countingHealth)
	}
	return addrs, hs, counters
}

// TestDialGRPCSessionAffinity is TestSessionAffinityXDS over gRPC, with
// WithSessionAffinity: 100 unary calls that carry back the cookie the
// first response set all reach one endpoint, under that one cookie; calls
// without it spread. A stream with the cookie goes to that endpoint and
// its header sets nothing; one without it gets a cookie naming where it
// went. When the endpoint leaves the endpoint set, the session moves, with
// a new cookie, to one other endpoint, where the next 100 calls stay.
func TestDialGRPCSessionAffinity(t *testing.T) {
	addrs, hs, counters := sessionBackends(t, 3)
	m := newMesh(t, mesh.WithEndpoints("orders", addrs...), mesh.WithSessionAffinity("sticky", time.Hour))
	c := dialHealth(t, m, "orders")
	jar := &grpcJar{name: "sticky"}

	first := only(t, sessionCalls(t, c, jar, 100, addrs, counters))
	if jar.sets != 1 || jar.addr(t) != first {
		t.Fatalf("100 calls to %s set %d cookies, the last naming %s; want one, naming it", first, jar.sets, jar.addr(t))
	}
	t.Logf("100 calls: all to %s, one set-cookie %s", first, jar.cookie)

	if plain := sessionCalls(t, c, &grpcJar{name: "other"}, 9, addrs, counters); len(plain) < 2 {
		t.Errorf("calls without the cookie all reached one endpoint: %v", plain)
	}

	watch := func(j *grpcJar) (metadata.MD, []int64) {
		t.Helper()
		before := make([]int64, len(hs))
		for i, h := range hs {
			before[i] = h.watches.Load()
		}
		ctx, cancel := context.WithTimeout(j.context(context.Background()), 10*time.Second)
		defer cancel()
		s, err := c.Watch(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); err != nil {
			t.Fatal(err)
		}
		md, err := s.Header()
		if err != nil {
			t.Fatal(err)
		}
		out := make([]int64, len(hs))
		for i, h := range hs {
			out[i] = h.watches.Load() - before[i]
		}
		return md, out
	}
	for range 5 {
		md, got := watch(jar)
		for i, n := range got {
			if (addrs[i] == first) != (n == 1) {
				t.Fatalf("a stream with the cookie for %s: streams per endpoint %v (%v)", first, got, addrs)
			}
		}
		if v := md.Get("set-cookie"); len(v) != 0 {
			t.Errorf("a stream that went where its cookie said set %q", v)
		}
	}
	fresh := &grpcJar{name: "sticky"}
	md, got := watch(fresh)
	fresh.keep(t, md)
	for i, n := range got {
		if n == 1 && fresh.addr(t) != addrs[i] {
			t.Errorf("a stream without a cookie went to %s and set one naming %s", addrs[i], fresh.addr(t))
		}
	}

	var rest []string
	for _, a := range addrs {
		if a != first {
			rest = append(rest, a)
		}
	}
	if err := m.SetStaticEndpoints("orders", rest...); err != nil {
		t.Fatal(err)
	}
	old := jar.cookie
	deadline := time.Now().Add(10 * time.Second)
	for sessionCalls(t, c, jar, 1, addrs, counters)[first] != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("calls still reach %s 10 s after it left the endpoint set", first)
		}
		time.Sleep(10 * time.Millisecond)
	}
	sets := jar.sets
	second := only(t, sessionCalls(t, c, jar, 100, addrs, counters))
	if second == first || jar.cookie == old || jar.addr(t) != second || jar.sets != sets {
		t.Fatalf("after removal: calls to %s, cookie %q naming %s (%d set-cookies); before: %s, %q", second, jar.cookie, jar.addr(t), jar.sets, first, old)
	}
	t.Logf("after %s left: 100 calls all to %s, cookie %s", first, second, jar.cookie)
}

// TestDialGRPCSessionRetry is TestSessionAffinityStatic over gRPC, with the
// endpoint answering UNAVAILABLE rather than going away: the call that
// finds its session's endpoint failing is retried (Check is declared
// idempotent here) on another endpoint, not on the one its cookie names,
// and succeeds with a new cookie, under which the next 50 calls stay.
func TestDialGRPCSessionRetry(t *testing.T) {
	addrs, hs, counters := sessionBackends(t, 3)
	m := newMesh(t, mesh.WithEndpoints("orders", addrs...), mesh.WithSessionAffinity("sticky", 0),
		mesh.WithRetryPolicy(resilience.RetryPolicy{NumRetries: 2, IdempotentMethods: []string{"/grpc.health.v1.Health/Check"}}))
	c := dialHealth(t, m, "orders")
	jar := &grpcJar{name: "sticky"}
	first := only(t, sessionCalls(t, c, jar, 50, addrs, counters))
	for i, a := range addrs {
		if a == first {
			hs[i].down.Store(true)
		}
	}
	moved := only(t, sessionCalls(t, c, jar, 1, addrs, counters))
	second := only(t, sessionCalls(t, c, jar, 50, addrs, counters))
	var refused int64
	for _, h := range hs {
		refused += h.refused.Load()
	}
	t.Logf("50 calls to %s; it failed %d attempt(s); then the session moved to %s, cookie %s", first, refused, second, jar.cookie)
	if moved == first || second != moved || jar.addr(t) != second || jar.sets != 2 || refused != 1 {
		t.Errorf("after %s failed: the retried call went to %s, then 50 to %s; cookie names %s after %d set-cookies; %d attempts refused (want 1)",
			first, moved, second, jar.addr(t), jar.sets, refused)
	}
}

// TestDialGRPCRetryGoesElsewhere: without session affinity too, a unary
// call's retry avoids the endpoint its failed attempt went to, as an HTTP
// retry does. With random picks over five endpoints, one refusing every
// call, a fifth of the calls are retried (within the retry budget's 20%);
// a retry blind to the refusal fails a fifth of the time, some 16 calls in
// 400, while one that avoids it never does: when the policy's draws keep
// landing on the refusing endpoint, the picker takes one not tried.
// Ejection is off so that it cannot hide the difference.
func TestDialGRPCRetryGoesElsewhere(t *testing.T) {
	addrs, hs, _ := sessionBackends(t, 5)
	hs[0].down.Store(true)
	m := newMesh(t, mesh.WithEndpoints("orders", addrs...), mesh.WithLBPolicy(balancer.Random),
		mesh.WithOutlierDetection(balancer.OutlierConfig{ConsecutiveErrors: -1}),
		mesh.WithRetryPolicy(resilience.RetryPolicy{NumRetries: 1, IdempotentMethods: []string{"/grpc.health.v1.Health/Check"}}))
	c := dialHealth(t, m, "orders")
	const calls = 400
	failed := 0
	for range calls {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if _, err := c.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			failed++
		}
		cancel()
	}
	t.Logf("%d calls: %d failed, after %d attempts to the refusing endpoint", calls, failed, hs[0].refused.Load())
	if failed > 0 {
		t.Errorf("%d of %d calls failed: retries went back to the endpoint that had just refused them", failed, calls)
	}
}
