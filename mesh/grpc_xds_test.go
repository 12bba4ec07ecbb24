package mesh_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
)

// An xds:/// channel checks each cluster's SAN matchers as the HTTP path
// does: the server identities the cluster allows, not any member of the
// trust domain.
func TestGRPCXDSClusterSANMatchers(t *testing.T) {
	ca := newCA(t, shop)
	server := workloadAPI(t, ca, ordersID)
	client := workloadAPI(t, ca, frontendID)
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", server.Addr())
	addr := serveHealth(t, newMesh(t), &countingHealth{})

	cp := xdstest.NewServer(t)
	snapshot := func(version, san string) {
		cp.SetSnapshot(t, xdsNode, version,
			xdstest.Listener("orders:8080", "orders-routes"),
			xdstest.RouteConfig("orders-routes", "*", "orders"),
			tlsCluster(t, "orders", san),
			xdstest.Endpoints("orders", addr))
	}
	snapshot("1", ordersID.String())
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", client.Addr())
	m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)))
	hc := dialHealth(t, m, "xds:///orders:8080")
	call := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	if err := call(); err != nil {
		t.Fatalf("call to the allowed identity: %v", err)
	}

	snapshot("2", "spiffe://shop.example/ns/shop/sa/payments")
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := call()
		if err != nil {
			if !strings.Contains(err.Error(), "is not an allowed identity") {
				t.Errorf("refused with %v, want the SAN refusal", err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("calls still reach a server whose identity the cluster's SAN matchers no longer allow")
		}
		time.Sleep(5 * time.Millisecond)
	}

	t.Run("a TLS cluster needs an identity", func(t *testing.T) {
		t.Setenv("SPIFFE_ENDPOINT_SOCKET", "")
		snapshot("3", ordersID.String())
		plain := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := dialHealth(t, plain, "xds:///orders:8080").Check(ctx, &healthpb.HealthCheckRequest{})
		// The status message quotes the cluster's name with escapes.
		if err == nil || !strings.Contains(err.Error(), `orders\" requires TLS`) {
			t.Errorf("err = %v, want the error naming the TLS cluster", err)
		}
	})
}

// With a bootstrap, a plain gRPC target the control plane has no listener
// for goes to the name's addresses, as an HTTP request to the same host
// passes through; an xds:/// target without a listener fails.
func TestGRPCXDSUnknownPlainNamePassesThrough(t *testing.T) {
	addrs, counters := grpcBackends(t, newMesh(t), 1)
	cp := xdstest.NewServer(t)
	cp.SetSnapshot(t, xdsNode, "1", xdstest.Listener("other:1", "r"))
	m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)))
	// Beyond the 15 s does-not-exist timer: go-control-plane answers a
	// subscription to a name it lacks only with a new version, and when
	// the name joins a stream already answered at this version, the timer
	// decides (see the README's delta xDS row).
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	if _, err := dialHealth(t, m, addrs[0]).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("plain name without a listener: %v", err)
	}
	counters[0].mu.Lock()
	n := counters[0].n
	counters[0].mu.Unlock()
	if n != 1 {
		t.Errorf("the backend served %d calls, want 1", n)
	}
	_, err := dialHealth(t, m, "xds:///"+addrs[0]).Check(ctx, &healthpb.HealthCheckRequest{})
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("xds:/// without a listener: err = %v, want the listener named as missing", err)
	}
}

// watchingHealth answers Watch with SERVING once, then holds the stream
// open until the caller ends it.
type watchingHealth struct {
	healthpb.UnimplementedHealthServer
}

func (watchingHealth) Watch(_ *healthpb.HealthCheckRequest, s healthpb.Health_WatchServer) error {
	if err := s.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}); err != nil {
		return err
	}
	<-s.Context().Done()
	return s.Context().Err()
}

// A route's timeout bounds a stream on an xds:/// channel, as it bounds a
// unary call, also on a listener whose stateful session filter (which
// istiod sends for a service labelled istio.io/persistent-session) gives
// the route a session cookie.
func TestGRPCXDSStreamRouteTimeout(t *testing.T) {
	addr := serveHealth(t, newMesh(t), watchingHealth{})
	for _, tc := range []struct {
		name    string
		session bool
	}{
		{"plain listener", false},
		{"stateful session", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hcm := xdstest.HCM("orders-routes", nil)
			if tc.session {
				hcm = xdstest.WithStatefulSession(hcm, xdstest.StatefulSession("sticky", "", time.Hour))
			}
			rc := xdstest.RouteConfig("orders-routes", "orders:8080", "orders")
			rc.VirtualHosts[0].Routes[0].GetRoute().Timeout = durationpb.New(200 * time.Millisecond)
			cp := xdstest.NewServer(t)
			cp.SetSnapshot(t, xdsNode, "1", xdstest.APIListener("orders:8080", hcm), rc,
				xdstest.Cluster("orders", ""), xdstest.Endpoints("orders", addr))
			m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)))

			// The test's own bound cancels rather than expires: only the
			// route's timeout ends the stream with DEADLINE_EXCEEDED.
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			stop := time.AfterFunc(20*time.Second, cancel)
			defer stop.Stop()
			w, err := dialHealth(t, m, "xds:///orders:8080").Watch(ctx, &healthpb.HealthCheckRequest{})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			for err == nil {
				_, err = w.Recv()
			}
			if got := status.Code(err); got != codes.DeadlineExceeded {
				t.Errorf("the stream ended after %v with %v, want DeadlineExceeded from the route's 200ms timeout", time.Since(start).Round(time.Millisecond), err)
			}
		})
	}
}

// A route's runtime_fraction sends its share of calls, on gRPC as on HTTP:
// each call draws its own sample.
func TestGRPCXDSRuntimeFraction(t *testing.T) {
	v1, v2 := startDualBackend(t, "v1"), startDualBackend(t, "v2")
	route := &routev3.RouteConfiguration{Name: "orders-routes", VirtualHosts: []*routev3.VirtualHost{{
		Name: "orders", Domains: []string{"orders:8080"},
		Routes: []*routev3.Route{
			{
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
					RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{
						Numerator: 30, Denominator: typev3.FractionalPercent_HUNDRED}}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "orders-v2"}}},
			},
			{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "orders-v1"}}},
			},
		},
	}}}
	cp := xdstest.NewServer(t)
	cp.SetSnapshot(t, xdsNode, "1", xdstest.Listener("orders:8080", "orders-routes"), route,
		xdstest.Cluster("orders-v1", ""), xdstest.Cluster("orders-v2", ""),
		xdstest.Endpoints("orders-v1", v1.addr), xdstest.Endpoints("orders-v2", v2.addr))
	m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)))
	hc := dialHealth(t, m, "xds:///orders:8080")
	const n = 400
	toV2 := 0
	for range n {
		if checkReaches(t, hc, v2) {
			toV2++
		}
	}
	if share := float64(toV2) / n; share < 0.22 || share > 0.38 {
		t.Errorf("%d of %d calls took the 30%% route, want 30%% ± 8 points", toV2, n)
	}
}
