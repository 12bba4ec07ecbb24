package mesh_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/resilience"
)

// metricReader collects the mesh's metrics in memory.
type metricReader struct{ r *sdkmetric.ManualReader }

func newMetricReader(t *testing.T) (metricReader, mesh.Option) {
	r := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r))
	t.Cleanup(func() { mp.Shutdown(context.Background()) })
	return metricReader{r}, mesh.WithMeterProvider(mp)
}

// values returns the data points of the named metric keyed by the value of
// attribute attr ("" sums them all).
func (m metricReader) values(t *testing.T, name, attr string) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := m.r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	key := func(set attribute.Set) string {
		if attr == "" {
			return ""
		}
		v, _ := set.Value(attribute.Key(attr))
		return v.String()
	}
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			if mt.Name != name {
				continue
			}
			switch d := mt.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					out[key(dp.Attributes)] += dp.Value
				}
			case metricdata.Gauge[int64]:
				for _, dp := range d.DataPoints {
					out[key(dp.Attributes)] += dp.Value
				}
			}
		}
	}
	return out
}

// slowFast starts two HTTP endpoints: the slow one holds GETs until the
// request is cancelled (counting the cancellations) and answers a POST
// after 150 ms; the fast one answers at once.
type slowFast struct {
	slow, fast                   string
	slowHits, slowCancelled      atomic.Int64
	fastHits, slowPost, fastPost atomic.Int64
}

func startSlowFast(t *testing.T) *slowFast {
	sf := &slowFast{}
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			sf.slowPost.Add(1)
			time.Sleep(150 * time.Millisecond)
			io.WriteString(w, "slow")
			return
		}
		sf.slowHits.Add(1)
		select {
		case <-r.Context().Done():
			sf.slowCancelled.Add(1)
		case <-time.After(10 * time.Second):
			io.WriteString(w, "slow")
		}
	}))
	fast := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			sf.fastPost.Add(1)
		} else {
			sf.fastHits.Add(1)
		}
		io.WriteString(w, "fast")
	}))
	t.Cleanup(slow.Close)
	t.Cleanup(fast.Close)
	sf.slow, sf.fast = slow.Listener.Addr().String(), fast.Listener.Addr().String()
	return sf
}

// routeWith returns "svc:8080"'s listener, route configuration, cluster and
// endpoints, the route's action edited by action and the cluster by
// cluster (either may be nil).
func routeWith(action func(*routev3.RouteAction), cluster func(*clusterv3.Cluster), addrs ...string) []types.Resource {
	rc := xdstest.RouteConfig("svc-routes", "svc:8080", "svc")
	if action != nil {
		action(rc.VirtualHosts[0].Routes[0].GetRoute())
	}
	cl := xdstest.Cluster("svc", "")
	if cluster != nil {
		cluster(cl)
	}
	return []types.Resource{xdstest.Listener("svc:8080", "svc-routes"), rc, cl, xdstest.Endpoints("svc", addrs...)}
}

// Envoy's hedge_policy with hedge_on_per_try_timeout: when the per-try
// timeout fires, another attempt starts while the first keeps running; the
// first response wins and the loser is cancelled. A POST is never hedged.
func TestXDSHedgeOnPerTryTimeout(t *testing.T) {
	sf := startSlowFast(t)
	cp := xdstest.NewServer(t)
	cp.SetSnapshot(t, xdsNode, "1", routeWith(func(a *routev3.RouteAction) {
		a.RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(1),
			PerTryTimeout: durationpb.New(50 * time.Millisecond)}
		a.HedgePolicy = &routev3.HedgePolicy{HedgeOnPerTryTimeout: true}
	}, nil, sf.slow, sf.fast)...)
	metrics, mp := newMetricReader(t)
	m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)), mp)
	c := m.HTTPClient()

	const n = 10
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://svc:8080/item", nil)
		resp, err := c.Do(req)
		if err != nil {
			cancel()
			t.Fatalf("GET %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		if string(body) != "fast" {
			t.Fatalf("GET %d answered %q, want the fast endpoint's answer (the first response wins)", i, body)
		}
	}
	if sf.slowHits.Load() == 0 {
		t.Fatal("no GET went to the slow endpoint first; the test proves nothing")
	}
	// Every attempt that went to the slow endpoint lost and was cancelled.
	deadline := time.Now().Add(5 * time.Second)
	for sf.slowCancelled.Load() < sf.slowHits.Load() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if c, h := sf.slowCancelled.Load(), sf.slowHits.Load(); c != h {
		t.Errorf("%d of %d losing attempts were cancelled, want all", c, h)
	}
	if got := metrics.values(t, "weft.client.hedges", "")[""]; got != sf.slowHits.Load() {
		t.Errorf("weft.client.hedges = %d, want %d (one per slow first attempt)", got, sf.slowHits.Load())
	}
	if got := sf.fastHits.Load(); got != n {
		t.Errorf("the fast endpoint served %d GETs, want %d", got, n)
	}

	for i := 0; i < n; i++ {
		resp, err := c.Post("http://svc:8080/order", "text/plain", strings.NewReader("one"))
		if err != nil {
			t.Fatalf("POST %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if sp, fp := sf.slowPost.Load(), sf.fastPost.Load(); sp+fp != n || sp == 0 {
		t.Errorf("POSTs reached the endpoints %d times (%d slow, %d fast), want exactly %d with some slow: a POST is never hedged", sp+fp, sp, fp, n)
	}
}

// The cluster's retry_budget bounds the extra load a fully failing
// service receives; without it, every request makes all its retries.
func TestXDSRetryBudgetLimitsExtraLoad(t *testing.T) {
	const (
		clients = 30
		retries = 3
	)
	tests := []struct {
		name      string
		threshold *clusterv3.CircuitBreakers_Thresholds
		maxExtra  int64
		minExtra  int64
	}{
		// 20% of 30 active requests: 6 retries in flight in the first
		// wave; later waves have fewer active requests, so fewer retries.
		{"retry budget 20%", &clusterv3.CircuitBreakers_Thresholds{RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
			BudgetPercent: &typev3.Percent{Value: 20}, MinRetryConcurrency: wrapperspb.UInt32(1)}}, 3 * clients * 20 / 100, 1},
		{"no budget, max_retries 1000", &clusterv3.CircuitBreakers_Thresholds{MaxRetries: wrapperspb.UInt32(1000)},
			clients * retries, clients * retries},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// All the first attempts are held until every client has sent
			// one, so the budget sees them all active; then every attempt
			// fails at once.
			var hits atomic.Int64
			gate := make(chan struct{})
			var once sync.Once
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/warm" {
					return
				}
				if hits.Add(1) >= clients {
					once.Do(func() { close(gate) })
				}
				select {
				case <-gate:
				case <-time.After(5 * time.Second):
				}
				http.Error(w, "down", http.StatusServiceUnavailable)
			}))
			defer srv.Close()
			cp := xdstest.NewServer(t)
			cp.SetSnapshot(t, xdsNode, "1", routeWith(func(a *routev3.RouteAction) {
				a.RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(retries),
					RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(time.Millisecond)}}
			}, func(c *clusterv3.Cluster) {
				tt.threshold.Priority = corev3.RoutingPriority_DEFAULT
				c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{tt.threshold}}
			}, srv.Listener.Addr().String())...)
			m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)))
			// One request that does not count, so the cluster's thresholds
			// are in force before the load.
			warm, err := m.HTTPClient().Get("http://svc:8080/warm")
			if err != nil {
				t.Fatal(err)
			}
			warm.Body.Close()
			var wg sync.WaitGroup
			for i := 0; i < clients; i++ {
				wg.Go(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					req, _ := http.NewRequestWithContext(ctx, "GET", "http://svc:8080/", nil)
					if resp, err := m.HTTPClient().Do(req); err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				})
			}
			wg.Wait()
			extra := hits.Load() - clients
			t.Logf("%d requests to a failing service made %d extra attempts", clients, extra)
			if extra > tt.maxExtra || extra < tt.minExtra {
				t.Errorf("extra attempts = %d, want %d..%d", extra, tt.minExtra, tt.maxExtra)
			}
		})
	}
}

// A classic breaker opens after N consecutive failures, fails fast while
// open (no request reaches the backend), lets probes through half-open and
// closes when they succeed; its state and refusals are in the metrics.
func TestBreakerOpensFailsFastProbesAndCloses(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if failing.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	var mu sync.Mutex
	var transitions []string
	metrics, mp := newMetricReader(t)
	m := newMesh(t, mp, mesh.WithEndpoints("orders", srv.Listener.Addr().String()),
		mesh.WithRetryPolicy(resilience.RetryPolicy{NumRetries: -1, Timeout: -1}),
		mesh.WithOutlierDetection(balancer.OutlierConfig{ConsecutiveErrors: -1}),
		mesh.WithBreaker(resilience.BreakerSettings{ConsecutiveFailures: 3, OpenTimeout: 100 * time.Millisecond, HalfOpenProbes: 2,
			OnStateChange: func(from, to resilience.State) {
				mu.Lock()
				transitions = append(transitions, from.String()+">"+to.String())
				mu.Unlock()
			}}))
	c := m.HTTPClient()
	do := func() (int, error) {
		resp, err := c.Get("http://orders/")
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	for i := 0; i < 3; i++ {
		if code, err := do(); err != nil || code != 500 {
			t.Fatalf("failure %d: %d %v", i, code, err)
		}
	}
	for i := 0; i < 10; i++ {
		start := time.Now()
		_, err := do()
		if !errors.Is(err, resilience.ErrCircuitOpen) {
			t.Fatalf("request %d after 3 failures: err = %v, want resilience.ErrCircuitOpen", i, err)
		}
		if took := time.Since(start); took > 50*time.Millisecond {
			t.Errorf("a refused request took %v, want a fast failure", took)
		}
	}
	if got := hits.Load(); got != 3 {
		t.Errorf("the backend received %d requests, want 3: none while the breaker is open", got)
	}
	if got := metrics.values(t, "weft.circuit_breaker.state", "weft.circuit_breaker.state"); got["open"] != 1 {
		t.Errorf("weft.circuit_breaker.state = %v, want open at 1", got)
	}
	if got := metrics.values(t, "weft.circuit_breaker.overflows", "weft.circuit_breaker.reason")["open"]; got != 10 {
		t.Errorf("weft.circuit_breaker.overflows{reason=open} = %d, want 10", got)
	}

	failing.Store(false)
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, err := do()
		if err == nil && code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the breaker never let a probe through: %d %v", code, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code, err := do(); err != nil || code != 200 { // the second probe
		t.Fatalf("second probe: %d %v", code, err)
	}
	for i := 0; i < 5; i++ {
		if code, err := do(); err != nil || code != 200 {
			t.Fatalf("after closing: %d %v", code, err)
		}
	}
	mu.Lock()
	got := strings.Join(transitions, " ")
	mu.Unlock()
	if want := "closed>open open>half-open half-open>closed"; got != want {
		t.Errorf("transitions %q, want %q", got, want)
	}
	if got := metrics.values(t, "weft.circuit_breaker.state", "weft.circuit_breaker.state"); got["closed"] != 1 || got["open"] != 0 || got["half-open"] != 0 {
		t.Errorf("weft.circuit_breaker.state = %v, want closed at 1, the others at 0", got)
	}
}

// WEFT_RATE_LIMIT: past the bucket, a server answers 429 with Retry-After
// (HTTP) or RESOURCE_EXHAUSTED (gRPC), and counts the rejections.
func TestInboundRateLimit(t *testing.T) {
	t.Setenv("WEFT_RATE_LIMIT", "1,burst=5")
	metrics, mp := newMetricReader(t)
	srvMesh := newMesh(t, mp)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srvMesh.Serve(ctx, ln, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})) }()
	defer func() { cancel(); <-done }()

	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	ok, limited := 0, 0
	for i := 0; i < 10; i++ {
		resp, err := c.Get("http://" + ln.Addr().String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		switch resp.StatusCode {
		case 200:
			ok++
		case 429:
			limited++
			if resp.Header.Get("Retry-After") == "" || resp.Header.Get(resilience.ReasonHeader) != resilience.ReasonRateLimited {
				t.Errorf("a 429 without Retry-After or reason: %v", resp.Header)
			}
		default:
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	// A burst of 5 and one token a second: the sixth may find a refill.
	if ok < 5 || ok > 6 {
		t.Errorf("%d of 10 requests passed, want the burst of 5 (6 with a refill)", ok)
	}

	gs, err := srvMesh.NewGRPCServer()
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	healthpb.RegisterHealthServer(gs, healthFunc(func() { calls.Add(1) }))
	gln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(gln)
	defer gs.Stop()
	cc, err := newMesh(t).DialGRPC("passthrough:///" + gln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	exhausted := 0
	for i := 0; i < 10; i++ {
		_, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{})
		switch status.Code(err) {
		case codes.OK:
		case codes.ResourceExhausted:
			exhausted++
		default:
			t.Fatalf("gRPC call %d: %v", i, err)
		}
	}
	if exhausted < 4 || calls.Load() > 6 {
		t.Errorf("gRPC: %d calls refused, %d served; want the burst of 5 (6 with a refill) served", exhausted, calls.Load())
	}
	if got := metrics.values(t, "weft.rate_limit.rejections", "weft.rate_limit.scope")["inbound"]; got != int64(limited+exhausted) {
		t.Errorf("weft.rate_limit.rejections{scope=inbound} = %d, want %d", got, limited+exhausted)
	}
}

// streamOnce is a health server whose Watch fails its first stream with
// UNAVAILABLE and whose Check always does.
type streamOnce struct {
	healthpb.UnimplementedHealthServer
	watches, checks atomic.Int64
}

func (s *streamOnce) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	s.checks.Add(1)
	return nil, status.Error(codes.Unavailable, "down")
}

func (s *streamOnce) Watch(_ *healthpb.HealthCheckRequest, w grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
	if s.watches.Add(1) == 1 {
		return status.Error(codes.Unavailable, "first stream refused")
	}
	return w.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING})
}

// Streams are retried by grpc-go under the mesh's policy; unary calls by
// Weft's interceptor alone, so attempts do not multiply.
func TestGRPCStreamRetriesAndNoDoubleUnaryRetries(t *testing.T) {
	hs := &streamOnce{}
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(ln)
	defer gs.Stop()
	m := newMesh(t, mesh.WithEndpoints("health", ln.Addr().String()),
		mesh.WithRetryPolicy(resilience.RetryPolicy{NumRetries: 2, Timeout: -1,
			IdempotentMethods: []string{"/grpc.health.v1.Health/Watch", "/grpc.health.v1.Health/Check"}}))
	cc, err := m.DialGRPC("health")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("the stream was not retried: %v", err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING || hs.watches.Load() != 2 {
		t.Errorf("got %v after %d streams, want SERVING on the second", resp.GetStatus(), hs.watches.Load())
	}
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Check: %v, want UNAVAILABLE", err)
	}
	if got := hs.checks.Load(); got != 3 {
		t.Errorf("a failing unary call reached the server %d times, want 3 (two retries, not grpc-go's on top)", got)
	}
}

// slowHealth answers Check after the context ends (slow) or at once.
type slowHealth struct {
	healthpb.UnimplementedHealthServer
	slow             atomic.Bool
	calls, cancelled atomic.Int64
}

func (s *slowHealth) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	s.calls.Add(1)
	if s.slow.Load() {
		select {
		case <-ctx.Done():
			s.cancelled.Add(1)
			return nil, ctx.Err()
		case <-time.After(10 * time.Second):
		}
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

// WEFT_HEDGE_DELAY on gRPC: a unary call to a slow endpoint is hedged to
// the fast one after the delay; the slow attempt is cancelled. With random
// picks the hedge must still avoid the endpoint its first attempt is
// waiting on: one that did not would wait on the slow one half the time.
func TestGRPCHedging(t *testing.T) {
	for _, policy := range []string{balancer.RoundRobin, balancer.Random} {
		t.Run(policy, func(t *testing.T) { testGRPCHedging(t, policy) })
	}
}

func testGRPCHedging(t *testing.T, policy string) {
	var addrs []string
	servers := []*slowHealth{{}, {}}
	for _, hs := range servers {
		gs := grpc.NewServer()
		healthpb.RegisterHealthServer(gs, hs)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go gs.Serve(ln)
		t.Cleanup(gs.Stop)
		addrs = append(addrs, ln.Addr().String())
	}
	t.Setenv("WEFT_HEDGE_DELAY", "20ms")
	t.Setenv("WEFT_HEDGE_MAX", "2")
	m := newMesh(t, mesh.WithEndpoints("health", addrs...), mesh.WithLBPolicy(policy),
		mesh.WithRetryPolicy(resilience.RetryPolicy{NumRetries: 1, Timeout: -1, IdempotentMethods: []string{"/grpc.health.v1.Health/Check"}}))
	cc, err := m.DialGRPC("health")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	// Until both endpoints have answered, the channel may know only one.
	for i := 0; servers[0].calls.Load() == 0 || servers[1].calls.Load() == 0; i++ {
		if i == 500 {
			t.Fatal("the channel never used both endpoints")
		}
		if _, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	servers[0].calls.Store(0)
	servers[0].slow.Store(true)
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("call %d: %v %v", i, resp, err)
		}
	}
	slow := servers[0]
	if slow.calls.Load() == 0 {
		t.Fatal("no call went to the slow endpoint; the test proves nothing")
	}
	deadline := time.Now().Add(5 * time.Second)
	for slow.cancelled.Load() < slow.calls.Load() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if c, n := slow.cancelled.Load(), slow.calls.Load(); c != n {
		t.Errorf("%d of %d slow attempts were cancelled, want all", c, n)
	}
}

func TestResilienceEnvironmentErrors(t *testing.T) {
	tests := []struct{ variable, value string }{
		{"WEFT_HEDGE_DELAY", "soon"},
		{"WEFT_HEDGE_DELAY", "-5ms"},
		{"WEFT_HEDGE_MAX", "1"},
		{"WEFT_HEDGE_MAX", "9"},
		{"WEFT_BREAKER", "consecutive=x"},
		{"WEFT_BREAKER", "rate=2"},
		{"WEFT_BREAKER", "open=-1s"},
		{"WEFT_BREAKER", "halfopen=0"},
		{"WEFT_BREAKER", "colour=red"},
		{"WEFT_BREAKER", "consecutive"},
		{"WEFT_RATE_LIMIT", "lots"},
		{"WEFT_RATE_LIMIT", "0"},
		{"WEFT_RATE_LIMIT", "10,burst=0"},
		{"WEFT_RATE_LIMIT", "10,bucket=5"},
	}
	for _, tt := range tests {
		t.Run(tt.variable+"="+tt.value, func(t *testing.T) {
			if tt.variable == "WEFT_HEDGE_MAX" {
				t.Setenv("WEFT_HEDGE_DELAY", "p95")
			}
			t.Setenv(tt.variable, tt.value)
			m, err := mesh.New(context.Background())
			if err == nil {
				m.Close()
				t.Fatal("New succeeded, want an error")
			}
			var envErr *mesh.EnvError
			if !errors.As(err, &envErr) || envErr.Var != tt.variable {
				t.Errorf("error %v is not an *EnvError for %s", err, tt.variable)
			}
		})
	}
	t.Run("good values", func(t *testing.T) {
		for k, v := range map[string]string{"WEFT_HEDGE_DELAY": "p95", "WEFT_HEDGE_MAX": "3",
			"WEFT_BREAKER": "rate=50%,window=5s,min=10,open=10s,halfopen=2", "WEFT_RATE_LIMIT": "100/s,burst=200"} {
			t.Setenv(k, v)
		}
		m, err := mesh.New(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		m.Close()
	})
}

// A service not configured by xDS that fails every request gets at most
// the rate budget's extra load, not two retries for every request: 20% of
// the requests plus the reserve of 10 a second over the 10 s window, as
// Linkerd's budget allows.
func TestRetryBudgetBoundsAFailingStaticService(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	m := newMesh(t, mesh.WithEndpoints("svc", srv.Listener.Addr().String()),
		mesh.WithRetryPolicy(resilience.RetryPolicy{RetryOn: resilience.Retry5xx, NumRetries: 2, BaseInterval: time.Millisecond}),
		mesh.WithOutlierDetection(balancer.OutlierConfig{ConsecutiveErrors: -1}))
	const requests = 200
	for i := 0; i < requests; i++ {
		if resp, err := m.HTTPClient().Get("http://svc/"); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	extra := hits.Load() - requests
	// Without a budget, 2 retries each would be 400 extra attempts.
	limit := int64(requests*resilience.DefaultBudgetRatio + resilience.DefaultMinRetriesPerSecond*resilience.DefaultBudgetWindow.Seconds())
	t.Logf("%d requests to a failing service made %d extra attempts (budget allows %d)", requests, extra, limit)
	if extra > limit || extra == 0 {
		t.Errorf("extra attempts = %d, want 1..%d", extra, limit)
	}
}
