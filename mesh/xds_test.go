package mesh_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
)

const xdsNode = "weft-test"

// dualBackend serves HTTP and gRPC on one loopback port (gRPC over h2c),
// so one xDS configuration can feed Weft's HTTP path and grpc-go's own xDS
// client, and it counts what each protocol delivered.
type dualBackend struct {
	addr      string
	mu        sync.Mutex
	http, rpc int
}

func (b *dualBackend) counts() (httpN, rpcN int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.http, b.rpc
}

func startDualBackend(t *testing.T, name string) *dualBackend {
	t.Helper()
	b := &dualBackend{}
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, healthFunc(func() {
		b.mu.Lock()
		b.rpc++
		b.mu.Unlock()
	}))
	srvMesh := newMesh(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- srvMesh.Serve(ctx, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
				gs.ServeHTTP(w, r)
				return
			}
			b.mu.Lock()
			b.http++
			b.mu.Unlock()
			fmt.Fprintf(w, "%s path=%s host=%s x-added=%s", name, r.URL.Path, r.Host, r.Header.Get("x-added"))
		}))
	}()
	t.Cleanup(func() { cancel(); gs.Stop(); <-done })
	return b
}

type healthFunc func()

func (f healthFunc) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	f()
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}
func (f healthFunc) List(context.Context, *healthpb.HealthListRequest) (*healthpb.HealthListResponse, error) {
	return &healthpb.HealthListResponse{}, nil
}
func (f healthFunc) Watch(*healthpb.HealthCheckRequest, grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
	return nil
}

// ordersConfig is the control plane's view of "orders:8080": a header
// route for testers (x-canary: true -> v2) and a weighted split otherwise.
func ordersConfig(v1, v2 string, w1, w2 uint32) []types.Resource {
	route := &routev3.RouteConfiguration{Name: "orders-routes", VirtualHosts: []*routev3.VirtualHost{{
		Name: "orders", Domains: []string{"orders:8080", "orders"},
		Routes: []*routev3.Route{
			{
				Match: &routev3.RouteMatch{
					PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
					Headers: []*routev3.HeaderMatcher{{Name: "x-canary", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
						StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "true"}}}}},
				},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "orders-v2"}}},
			},
			{
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{
					WeightedClusters: &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{
						{Name: "orders-v1", Weight: wrapperspb.UInt32(w1)},
						{Name: "orders-v2", Weight: wrapperspb.UInt32(w2)},
					}}}}},
			},
		},
	}}}
	return []types.Resource{
		xdstest.Listener("orders:8080", "orders-routes"),
		route,
		xdstest.Cluster("orders-v1", ""), xdstest.Cluster("orders-v2", ""),
		xdstest.Endpoints("orders-v1", v1), xdstest.Endpoints("orders-v2", v2),
	}
}

// sendHTTP sends n GETs to http://orders:8080/ through the mesh and returns
// how many reached v2.
func sendHTTP(t *testing.T, c *http.Client, n int, canary bool) (toV2 int) {
	t.Helper()
	for i := 0; i < n; i++ {
		req, _ := http.NewRequest("GET", "http://orders:8080/items", nil)
		if canary {
			req.Header.Set("x-canary", "true")
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
		if strings.HasPrefix(string(body), "v2 ") {
			toV2++
		}
	}
	return toV2
}

func TestXDSRoutingMatchesGRPCGo(t *testing.T) {
	v1, v2 := startDualBackend(t, "v1"), startDualBackend(t, "v2")
	cp := xdstest.NewServer(t)
	cp.SetSnapshot(t, xdsNode, "1", ordersConfig(v1.addr, v2.addr, 80, 20)...)
	m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)))
	// The oracle: grpc-go's own xDS client on the same resources.
	oracle := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)), mesh.WithGRPCGoXDS(grpcGoOracle{}))

	dial := func(m *mesh.Mesh, target string) healthpb.HealthClient {
		cc, err := m.DialGRPC(target)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return healthpb.NewHealthClient(cc)
	}
	weft, weftPlain, grpcGo := dial(m, "xds:///orders:8080"), dial(m, "orders:8080"), dial(oracle, "xds:///orders:8080")
	sendGRPC := func(hc healthpb.HealthClient, n int, canary bool) (toV2 int) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if canary {
			ctx = metadata.AppendToOutgoingContext(ctx, "x-canary", "true")
		}
		_, before := v2.counts()
		for i := 0; i < n; i++ {
			if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
				t.Fatalf("gRPC call %d: %v", i, err)
			}
		}
		_, after := v2.counts()
		return after - before
	}

	const n = 1000
	tests := []struct {
		name         string
		canary       bool
		wantV2       float64 // share of requests
		tolerancePts float64
	}{
		{"weighted split 80/20", false, 0.20, 5},
		{"header route x-canary: true", true, 1.00, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gotHTTP := float64(sendHTTP(t, m.HTTPClient(), n, tt.canary)) / n
			gotWeft := float64(sendGRPC(weft, n, tt.canary)) / n
			gotPlain := float64(sendGRPC(weftPlain, n, tt.canary)) / n
			gotGRPC := float64(sendGRPC(grpcGo, n, tt.canary)) / n
			for _, r := range []struct {
				client string
				got    float64
			}{{"weft HTTP", gotHTTP}, {"weft gRPC xds:///", gotWeft}, {"weft gRPC plain name", gotPlain}, {"grpc-go xDS", gotGRPC}} {
				if diff := 100 * (r.got - tt.wantV2); diff > tt.tolerancePts || diff < -tt.tolerancePts {
					t.Errorf("%s: %.1f%% to v2, want %.0f%% ± %.0f points", r.client, 100*r.got, 100*tt.wantV2, tt.tolerancePts)
				}
			}
			t.Logf("share to v2: weft HTTP %.1f%%, weft gRPC %.1f%% (plain name %.1f%%), grpc-go %.1f%%", 100*gotHTTP, 100*gotWeft, 100*gotPlain, 100*gotGRPC)
		})
	}
}

func TestXDSConfigChangePropagates(t *testing.T) {
	v1, v2 := startDualBackend(t, "v1"), startDualBackend(t, "v2")
	cp := xdstest.NewServer(t)
	cp.SetSnapshot(t, xdsNode, "1", ordersConfig(v1.addr, v2.addr, 100, 0)...)
	m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)))
	c := m.HTTPClient()
	if got := sendHTTP(t, c, 20, false); got != 0 {
		t.Fatalf("%d of 20 requests reached v2 with weights 100/0", got)
	}
	t.Logf("propagation: SetSnapshot to the first request routed by the new config: %v", moveToV2(t, cp, c, v1, v2))
}

// moveToV2 sends the control plane ordersConfig with all weight on v2 and
// waits, up to 10 s, until traffic follows it, returning how long that
// took; then all of 50 requests must reach v2.
func moveToV2(t *testing.T, cp *xdstest.Server, c *http.Client, v1, v2 *dualBackend) time.Duration {
	t.Helper()
	start := time.Now()
	cp.SetSnapshot(t, xdsNode, "2", ordersConfig(v1.addr, v2.addr, 0, 100)...)
	deadline := start.Add(10 * time.Second)
	for sendHTTP(t, c, 1, false) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("traffic did not move to v2 within 10s of the new snapshot")
		}
		time.Sleep(time.Millisecond)
	}
	took := time.Since(start)
	if got := sendHTTP(t, c, 50, false); got != 50 {
		t.Errorf("after the change %d of 50 requests reached v2, want all", got)
	}
	return took
}

// TestXDSDeltaConfigChangePropagates is TestXDSConfigChangePropagates over
// incremental xDS, turned on by WEFT_XDS_DELTA.
func TestXDSDeltaConfigChangePropagates(t *testing.T) {
	t.Setenv("WEFT_XDS_DELTA", "true")
	v1, v2 := startDualBackend(t, "v1"), startDualBackend(t, "v2")
	cp := xdstest.NewServer(t)
	cp.SetSnapshot(t, xdsNode, "1", ordersConfig(v1.addr, v2.addr, 100, 0)...)
	m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)))
	c := m.HTTPClient()
	if got := sendHTTP(t, c, 20, false); got != 0 {
		t.Fatalf("%d of 20 requests reached v2 with weights 100/0", got)
	}
	if len(cp.DeltaRequests()) == 0 || len(cp.Requests()) != 0 {
		t.Fatalf("the control plane got %d delta and %d state-of-the-world requests, want delta only",
			len(cp.DeltaRequests()), len(cp.Requests()))
	}
	mark := len(cp.DeltaResponses())
	t.Logf("propagation over delta xDS: SetSnapshot to the first request routed by the new config: %v", moveToV2(t, cp, c, v1, v2))
	// The route configuration changed and was sent again; the resources
	// the mesh held that did not change were not (orders-v2's cluster
	// and endpoints are new subscriptions: weight 0 needed neither).
	var sent []string
	for _, r := range cp.DeltaResponses()[mark:] {
		for _, res := range r.GetResources() {
			sent = append(sent, res.GetName())
		}
	}
	if !slices.Contains(sent, "orders-routes") || slices.Contains(sent, "orders:8080") || slices.Contains(sent, "orders-v1") {
		t.Errorf("resources sent for the change: %v, want orders-routes and none of the unchanged orders:8080 and orders-v1", sent)
	}
}

// TestWithXDSDeltaOverridesTheEnvironment: the option wins over
// WEFT_XDS_DELTA.
func TestWithXDSDeltaOverridesTheEnvironment(t *testing.T) {
	t.Setenv("WEFT_XDS_DELTA", "false")
	v1 := startDualBackend(t, "v1")
	cp := xdstest.NewServer(t)
	cp.SetSnapshot(t, xdsNode, "1", ordersConfig(v1.addr, v1.addr, 100, 0)...)
	m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)), mesh.WithXDSDelta(true))
	sendHTTP(t, m.HTTPClient(), 1, false)
	if len(cp.DeltaRequests()) == 0 || len(cp.Requests()) != 0 {
		t.Errorf("the control plane got %d delta and %d state-of-the-world requests, want delta only",
			len(cp.DeltaRequests()), len(cp.Requests()))
	}
}

func TestXDSKeepsServingWhileTheControlPlaneIsAway(t *testing.T) {
	v1, v2 := startDualBackend(t, "v1"), startDualBackend(t, "v2")
	cp := xdstest.NewServer(t)
	cp.SetSnapshot(t, xdsNode, "1", ordersConfig(v1.addr, v2.addr, 100, 0)...)
	m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)))
	c := m.HTTPClient()
	sendHTTP(t, c, 10, false)
	cp.Stop()
	if got := sendHTTP(t, c, 200, false); got != 0 {
		t.Errorf("while the control plane was away %d requests went to v2", got)
	} // sendHTTP fails the test on any failed request
	cp.Restart(t)
	cp.SetSnapshot(t, xdsNode, "2", ordersConfig(v1.addr, v2.addr, 0, 100)...)
	deadline := time.Now().Add(20 * time.Second)
	for sendHTTP(t, c, 1, false) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the restarted control plane's config was not picked up within 20s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestXDSBadUpdateIsNACKedAndTheLastGoodConfigServes(t *testing.T) {
	// Each case breaks one resource of the good config in a way grpc-go
	// also rejects; the NACK must name it and traffic must keep flowing to
	// v1 as the last good config says.
	tests := []struct {
		name    string
		w1, w2  uint32 // the weights of the broken snapshot
		break_  func(res []types.Resource)
		culprit string
	}{
		// A rejected route configuration would have moved traffic to v2.
		{"bad RE2 regex in a header route", 0, 100, func(res []types.Resource) {
			for _, r := range res {
				if rc, ok := r.(*routev3.RouteConfiguration); ok {
					rc.VirtualHosts[0].Routes[0].Match.Headers[0].HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{
						StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{
							SafeRegex: &matcherv3.RegexMatcher{Regex: "(unclosed"}}}}
				}
			}
		}, "orders-routes"},
		{"weighted clusters summing to 0", 0, 100, func(res []types.Resource) {
			for _, r := range res {
				if rc, ok := r.(*routev3.RouteConfiguration); ok {
					wc := rc.VirtualHosts[0].Routes[1].GetRoute().GetWeightedClusters()
					for _, c := range wc.Clusters {
						c.Weight = wrapperspb.UInt32(0)
					}
				}
			}
		}, "orders-routes"},
		// A rejected cluster keeps its last good version: v1 still serves.
		{"unknown cluster type", 100, 0, func(res []types.Resource) {
			for _, r := range res {
				if cl, ok := r.(*clusterv3.Cluster); ok && cl.Name == "orders-v1" {
					cl.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}
					cl.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
				}
			}
		}, "orders-v1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v1, v2 := startDualBackend(t, "v1"), startDualBackend(t, "v2")
			cp := xdstest.NewServer(t)
			cp.SetSnapshot(t, xdsNode, "1", ordersConfig(v1.addr, v2.addr, 100, 0)...)
			admin := freeAddr(t)
			m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)), mesh.WithAdminAddr(admin))
			c := m.HTTPClient()
			sendHTTP(t, c, 5, false)

			bad := ordersConfig(v1.addr, v2.addr, tt.w1, tt.w2)
			tt.break_(bad)
			cp.SetSnapshot(t, xdsNode, "2", bad...)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			nack, err := cp.WaitRequest(ctx, func(r *discoveryv3.DiscoveryRequest) bool { return r.GetErrorDetail() != nil })
			if err != nil {
				t.Fatalf("no NACK reached the control plane: %v", err)
			}
			if msg := nack.GetErrorDetail().GetMessage(); !strings.Contains(msg, tt.culprit) {
				t.Errorf("NACK message %q does not name %s", msg, tt.culprit)
			}
			if got := sendHTTP(t, c, 50, false); got != 0 {
				t.Errorf("%d requests went to v2 after a rejected update", got)
			}
			// Weft's view, and Envoy's ConfigDump: the rejected version
			// as received is its error_state, beside the version in use.
			weft := get(t, http.DefaultClient, "http://"+admin+"/config_dump?format=weft")
			envoy := get(t, http.DefaultClient, "http://"+admin+"/config_dump")
			http.DefaultClient.CloseIdleConnections()
			for _, want := range []string{`"last_nack"`, tt.culprit, `"NACKED"`} {
				if !strings.Contains(weft, want) {
					t.Errorf("/config_dump?format=weft lacks %s:\n%.2000s", want, weft)
				}
			}
			for _, want := range []string{`"error_state"`, `"failed_configuration"`, `"last_update_attempt"`, `"client_status": "NACKED"`, `"version_info": "2"`, `"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump"`} {
				if !strings.Contains(envoy, want) {
					t.Errorf("/config_dump lacks %s:\n%.3000s", want, envoy)
				}
			}
		})
	}
}

func TestXDSUnknownHostPassesThrough(t *testing.T) {
	addrs, hits := backends(t, 1)
	cp := xdstest.NewServer(t)
	cp.SetSnapshot(t, xdsNode, "1", xdstest.Listener("other:1", "r"))
	m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)))
	get(t, m.HTTPClient(), "http://"+addrs[0]+"/")
	if hits()[addrs[0]] != 1 {
		t.Errorf("a host the control plane does not know did not pass through")
	}
}

func TestXDSUnusedSubscriptionsAreClosed(t *testing.T) {
	v1, v2 := startDualBackend(t, "v1"), startDualBackend(t, "v2")
	cp := xdstest.NewServer(t)
	cp.SetSnapshot(t, xdsNode, "1", ordersConfig(v1.addr, v2.addr, 100, 0)...)
	m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)), mesh.WithXDSIdleTimeout(100*time.Millisecond))
	c := m.HTTPClient()
	sendHTTP(t, c, 1, false)
	// The idle sweep drops the watch; the server hears of it with the
	// next subscription, here a host it does not know.
	time.Sleep(400 * time.Millisecond)
	other := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer other.Close()
	getCtx, stopGet := context.WithCancel(context.Background())
	getDone := make(chan struct{})
	go func() {
		defer close(getDone)
		if req, err := http.NewRequestWithContext(getCtx, http.MethodGet, other.URL, nil); err == nil {
			if resp, err := c.Do(req); err == nil {
				resp.Body.Close()
			}
		}
	}()
	defer func() { stopGet(); <-getDone }()

	names := func(r *discoveryv3.DiscoveryRequest, typ string) ([]string, bool) {
		return r.GetResourceNames(), strings.HasSuffix(r.GetTypeUrl(), typ)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	subscribed := false
	_, err := cp.WaitRequest(ctx, func(r *discoveryv3.DiscoveryRequest) bool {
		ns, ok := names(r, "Listener")
		if !ok {
			return false
		}
		has := slices.Contains(ns, "orders:8080")
		if has {
			subscribed = true
		}
		return subscribed && !has
	})
	if err != nil {
		t.Fatalf("the idle listener was never unsubscribed: %v", err)
	}
	if got := sendHTTP(t, c, 5, false); got != 0 {
		t.Errorf("after resubscribing, %d requests went to v2", got)
	}
}

func TestXDSUnappliedFieldsAreLogged(t *testing.T) {
	v1, v2 := startDualBackend(t, "v1"), startDualBackend(t, "v2")
	cp := xdstest.NewServer(t)
	res := ordersConfig(v1.addr, v2.addr, 100, 0)
	for _, r := range res {
		if rc, ok := r.(*routev3.RouteConfiguration); ok {
			rc.VirtualHosts[0].IncludeRequestAttemptCount = true
		}
	}
	cp.SetSnapshot(t, xdsNode, "1", res...)
	var logs syncBuffer
	m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)), mesh.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	sendHTTP(t, m.HTTPClient(), 1, false)
	out := logs.String()
	if !strings.Contains(out, "fields Weft does not apply") || !strings.Contains(out, "include_request_attempt_count") || !strings.Contains(out, "orders-routes") {
		t.Errorf("no log line naming the unapplied field of orders-routes:\n%s", out)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestNewGRPCServerKinds: with a server listener template the gRPC server
// is the mesh's own (on the mesh's xDS client), grpc-go's xDS server only
// when asked for with WithGRPCGoXDS, and a plain grpc.Server without xDS.
func TestNewGRPCServerKinds(t *testing.T) {
	cp := xdstest.NewServer(t)
	var bs map[string]any
	if err := json.Unmarshal(cp.Bootstrap(xdsNode), &bs); err != nil {
		t.Fatal(err)
	}
	bs["server_listener_resource_name_template"] = "grpc/server?xds.resource.listening_address=%s"
	b, _ := json.Marshal(bs)
	for _, c := range []struct {
		name string
		opts []mesh.Option
		want string
	}{
		{"server template", []mesh.Option{mesh.WithBootstrap(b)}, "*mesh.xdsGRPCServer"},
		{"server template, WithGRPCGoXDS", []mesh.Option{mesh.WithBootstrap(b), mesh.WithGRPCGoXDS(grpcGoOracle{})}, "*xds.GRPCServer"},
		{"no xDS", nil, "*grpc.Server"},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv, err := newMesh(t, c.opts...).NewGRPCServer()
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Stop()
			if got := fmt.Sprintf("%T", srv); got != c.want {
				t.Errorf("NewGRPCServer made a %s, want %s", got, c.want)
			}
		})
	}
}

// TestXDSListenerTimeoutChangeKeepsRoutes: a listener update that changes
// only max_stream_duration, naming the same route configuration, takes
// effect, although RDS sends nothing new.
func TestXDSListenerTimeoutChangeKeepsRoutes(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(300 * time.Millisecond):
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	addr := strings.TrimPrefix(slow.URL, "http://")
	snapshot := func(timeout time.Duration) []types.Resource {
		hcm := xdstest.HCM("orders-routes", nil)
		hcm.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{MaxStreamDuration: durationpb.New(timeout)}
		return []types.Resource{
			xdstest.APIListener("orders:8080", hcm),
			xdstest.RouteConfig("orders-routes", "orders:8080", "orders"),
			xdstest.Cluster("orders", ""), xdstest.Endpoints("orders", addr),
		}
	}
	// get returns the status, or 504 when the mesh's timeout ended the
	// request with an error.
	get := func(c *http.Client) int {
		resp, err := c.Get("http://orders:8080/")
		if errors.Is(err, context.DeadlineExceeded) {
			return http.StatusGatewayTimeout
		}
		if err != nil {
			t.Fatalf("GET: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	cp := xdstest.NewServer(t)
	cp.SetSnapshot(t, xdsNode, "1", snapshot(5*time.Second)...)
	c := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode))).HTTPClient()
	if got := get(c); got != http.StatusOK {
		t.Fatalf("with a 5s max_stream_duration: status %d, want 200", got)
	}
	cp.SetSnapshot(t, xdsNode, "2", snapshot(50*time.Millisecond)...)
	deadline := time.Now().Add(10 * time.Second)
	for get(c) != http.StatusGatewayTimeout {
		if time.Now().After(deadline) {
			t.Fatal("a 50ms max_stream_duration did not cut a 300ms request within 10s of the listener update")
		}
	}
}
