package mesh_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
)

// paymentsConfig is a second mesh service, "payments:9090", on one backend.
func paymentsConfig(addr string) []types.Resource {
	return []types.Resource{
		xdstest.Listener("payments:9090", "payments-routes"),
		xdstest.RouteConfig("payments-routes", "payments:9090", "payments"),
		xdstest.Cluster("payments", ""),
		xdstest.Endpoints("payments", addr),
	}
}

// checkReaches makes one call and reports whether backend b served it.
func checkReaches(t *testing.T, hc healthpb.HealthClient, b *dualBackend) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, before := b.counts()
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("gRPC call: %v", err)
	}
	_, after := b.counts()
	return after > before
}

// oneStreamSetup is a mesh service "orders:8080" split between v1 and v2
// and a second service "payments:9090", on one control plane.
type oneStreamSetup struct {
	v1, v2, pay *dualBackend
	cp          *xdstest.Server
	// servers are the addresses of the mesh's own servers, whose inbound
	// listeners the snapshot carries when set; denyAll makes their RBAC
	// deny every request.
	servers []string
	denyAll bool
}

func newOneStreamSetup(t *testing.T) *oneStreamSetup {
	s := &oneStreamSetup{v1: startDualBackend(t, "v1"), v2: startDualBackend(t, "v2"), pay: startDualBackend(t, "pay"), cp: xdstest.NewServer(t)}
	s.set(t, "1", 100, 0)
	return s
}

func (s *oneStreamSetup) set(t *testing.T, version string, w1, w2 uint32) {
	res := append(ordersConfig(s.v1.addr, s.v2.addr, w1, w2), paymentsConfig(s.pay.addr)...)
	prefix := "/nothing-here"
	if s.denyAll {
		prefix = "/"
	}
	for _, addr := range s.servers {
		deny := xdstest.RBACFilter("deny", &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{
			"deny": {Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{
				Path: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: prefix}}}}}}},
				Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}}}}})
		res = append(res, xdstest.ServerListener(inboundName(addr), netip.MustParseAddrPort(addr), nil,
			xdstest.FilterChain("inbound", xdstest.InboundRoutes("inbound"), deny)))
	}
	s.cp.SetSnapshot(t, xdsNode, version, res...)
}

// TestOneADSStreamForEveryClient: one mesh sending HTTP to one service and
// gRPC to two (each dialled twice, once by its plain name) and serving an
// HTTP server and a gRPC server on inbound listeners holds exactly one ADS
// stream, and one configuration change reaches every client and server.
func TestOneADSStreamForEveryClient(t *testing.T) {
	s := newOneStreamSetup(t)
	m := newMesh(t, mesh.WithBootstrap(serverBootstrap(t, s.cp, nil)))
	httpSrv, grpcSrv := serveWhoami(t, m), serveHealth(t, m, health.NewServer())
	s.servers = []string{httpSrv, grpcSrv}
	s.set(t, "1", 100, 0)
	plain := peerClient{"plaintext", nil}
	waitFor(t, "HTTP server serves", func() error { return plain.http(httpSrv) })
	waitFor(t, "gRPC server serves", func() error { return plain.grpc(grpcSrv) })
	orders := []healthpb.HealthClient{dialHealth(t, m, "xds:///orders:8080"), dialHealth(t, m, "orders:8080")}
	payments := []healthpb.HealthClient{dialHealth(t, m, "xds:///payments:9090"), dialHealth(t, m, "payments:9090")}

	if got := sendHTTP(t, m.HTTPClient(), 10, false); got != 0 {
		t.Fatalf("HTTP: %d of 10 requests reached v2 with weights 100/0", got)
	}
	for i, hc := range orders {
		if !checkReaches(t, hc, s.v1) {
			t.Errorf("orders channel %d: the call did not reach v1", i)
		}
	}
	for i, hc := range payments {
		if !checkReaches(t, hc, s.pay) {
			t.Errorf("payments channel %d: the call did not reach payments", i)
		}
	}
	if opened, open := s.cp.Streams(); opened != 1 || open != 1 {
		t.Fatalf("ADS streams: %d opened, %d open; want exactly 1 for the whole mesh", opened, open)
	}

	s.denyAll = true
	s.set(t, "2", 0, 100)
	waitFor(t, "HTTP server denies", func() error {
		if err := plain.http(httpSrv); err == nil || !strings.Contains(err.Error(), "403") {
			return fmt.Errorf("got %v, want 403", err)
		}
		return nil
	})
	waitFor(t, "gRPC server denies", func() error {
		if err := plain.grpc(grpcSrv); grpcstatus.Code(err) != codes.PermissionDenied {
			return fmt.Errorf("got %v, want PermissionDenied", err)
		}
		return nil
	})
	deadline := time.Now().Add(15 * time.Second)
	for moved := false; !moved; {
		if time.Now().After(deadline) {
			t.Fatal("the change to v2 did not reach every client within 15 s")
		}
		moved = sendHTTP(t, m.HTTPClient(), 1, false) == 1
		for _, hc := range orders {
			moved = checkReaches(t, hc, s.v2) && moved
		}
		if !moved {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if opened, _ := s.cp.Streams(); opened != 1 {
		t.Errorf("ADS streams after the change: %d opened, want 1", opened)
	}
}

// TestBehindIstioAgent runs a mesh behind an ADS proxy that keeps one
// stream per workload and closes the previous one when another opens, as
// istio-agent does: HTTP and gRPC follow several configuration changes
// without a failed call, and the agent never closes one of the mesh's
// streams. grpc-go's xDS client (one stream per channel) is shown failing
// the same way users saw, as the control.
func TestBehindIstioAgent(t *testing.T) {
	s := newOneStreamSetup(t)
	agent := xdstest.NewAgent(t, s.cp.Addr)
	m := newMesh(t, mesh.WithBootstrap(agent.Bootstrap(xdsNode)))
	orders := []healthpb.HealthClient{dialHealth(t, m, "xds:///orders:8080"), dialHealth(t, m, "orders:8080")}
	payments := dialHealth(t, m, "xds:///payments:9090")

	weights := [][2]uint32{{100, 0}, {0, 100}, {100, 0}, {0, 100}}
	for i, w := range weights {
		if i > 0 {
			s.set(t, string(rune('1'+i)), w[0], w[1])
		}
		want := s.v1
		if w[1] == 100 {
			want = s.v2
		}
		// Every call succeeds (sendHTTP and checkReaches fail the test on
		// any error) while the change propagates, then all follow it.
		deadline := time.Now().Add(15 * time.Second)
		for {
			toV2 := sendHTTP(t, m.HTTPClient(), 1, false)
			followed := (toV2 == 1) == (want == s.v2)
			for _, hc := range orders {
				followed = checkReaches(t, hc, want) && followed
			}
			if !checkReaches(t, payments, s.pay) {
				t.Fatal("a payments call did not reach payments")
			}
			if followed {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("change %d did not reach every client within 15 s", i)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if opened, overlaps := agent.Streams(); opened != 1 || overlaps != 0 {
		t.Errorf("agent: %d streams opened, %d closed as overlapping; want 1 and 0", opened, overlaps)
	}

	// The control: the same workload with grpc-go's own xDS client opens a
	// stream per channel beside the mesh's, and the agent closes the
	// previous one each time.
	ctl := newMesh(t, mesh.WithBootstrap(agent.Bootstrap(xdsNode)), mesh.WithGRPCGoXDS(grpcGoOracle{}))
	_ = sendHTTP(t, ctl.HTTPClient(), 1, false)
	cc := dialHealth(t, ctl, "xds:///payments:9090")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := cc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Logf("grpc-go xDS behind the agent: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, overlaps := agent.Streams()
		if overlaps > 0 {
			t.Logf("control: with grpc-go's xDS client the agent closed %d overlapping stream(s)", overlaps)
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("control: grpc-go's xDS client beside the mesh's opened no second stream for the agent to close")
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
}
