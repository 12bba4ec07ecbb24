package mesh_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	exprpb "google.golang.org/genproto/googleapis/api/expr/v1alpha1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
)

const inboundTemplate = "weft/inbound/%s"

// inboundRBAC is what istiod sends for "ALLOW caller to GET anything but
// /admin": a DENY filter for /admin, then an ALLOW filter for the caller's
// SPIFFE ID and method, on the server listener name.
func inboundRBAC(name, caller string) *listenerv3.Listener {
	path := func(p string) *rbacv3.Permission {
		return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{
			Path: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: p}}}}}}
	}
	method := &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: ":method",
		HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "GET"}}}}}}
	anyone := &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
	principal := &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{
		PrincipalName: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: caller}}}}}
	deny := xdstest.RBACFilter("deny", &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{
		"deny-admin": {Permissions: []*rbacv3.Permission{path("/admin")}, Principals: []*rbacv3.Principal{anyone}}}})
	allow := xdstest.RBACFilter("allow", &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
		"allow-caller": {Permissions: []*rbacv3.Permission{method}, Principals: []*rbacv3.Principal{principal}}}})
	fc := xdstest.FilterChain("inbound", xdstest.InboundRoutes("inbound"), deny, allow)
	// PeerAuthentication STRICT: the chain requires mTLS.
	fc.TransportSocket = xdstest.TLSSocket(xdstest.IstioMTLS())
	return xdstest.ServerListener(name, netip.AddrPort{}, nil, fc)
}

// statusOf sends method to url and returns the status code.
func statusOf(t *testing.T, c *http.Client, method, url string) int {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestXDSInboundRBACOnHTTP: an HTTP server of a mesh whose bootstrap names
// a server listener template enforces the control plane's RBAC, over real
// mTLS with SPIFFE IDs, keeps its last good policy when a bad one is
// NACKed, and follows a change.
func TestXDSInboundRBACOnHTTP(t *testing.T) {
	ca := newCA(t, shop)
	cp := xdstest.NewServer(t)
	var bs map[string]any
	if err := json.Unmarshal(cp.Bootstrap(xdsNode), &bs); err != nil {
		t.Fatal(err)
	}
	bs["server_listener_resource_name_template"] = inboundTemplate
	bootstrap, _ := json.Marshal(bs)

	t.Setenv("SPIFFE_ENDPOINT_SOCKET", workloadAPI(t, ca, ordersID).Addr())
	var logs syncBuffer
	srv := newMesh(t, mesh.WithBootstrap(bootstrap), mesh.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	addr := serveWhoami(t, srv)
	name := strings.ReplaceAll(inboundTemplate, "%s", addr)
	cp.SetSnapshot(t, xdsNode, "1", inboundRBAC(name, frontendID.String()))

	t.Setenv("SPIFFE_ENDPOINT_SOCKET", workloadAPI(t, ca, frontendID).Addr())
	frontend := newMesh(t, mesh.WithEndpoints("orders", addr)).HTTPClient()
	otherID := spiffeid.RequireFromPath(shop, "/ns/shop/sa/other")
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", workloadAPI(t, ca, otherID).Addr())
	other := newMesh(t, mesh.WithEndpoints("orders", addr)).HTTPClient()

	check := func(t *testing.T) {
		t.Helper()
		for _, c := range []struct {
			name   string
			c      *http.Client
			method string
			path   string
			want   int
		}{
			{"allowed caller", frontend, "GET", "/items", 200},
			{"ALLOW: another identity", other, "GET", "/items", 403},
			{"ALLOW: another method", frontend, "POST", "/items", 403},
			{"DENY before ALLOW", frontend, "GET", "/admin/users", 403},
			{"DENY on the normalized path", frontend, "GET", "/x/%2e%2e/admin/users", 403},
			{"an encoded slash is refused", frontend, "GET", "/%2Fadmin/users", 400},
			{"DENY on the normalized path (dot segments)", frontend, "GET", "/x/../admin", 403},
		} {
			if got := statusOf(t, c.c, c.method, "http://orders"+c.path); got != c.want {
				t.Errorf("%s: %s %s = %d, want %d", c.name, c.method, c.path, got, c.want)
			}
		}
	}
	check(t)
	// A denial names, in the server's log, the listener and the policy
	// that decided it; the caller only learns it was denied.
	if got := logs.String(); !strings.Contains(got, "request denied by xDS RBAC") || !strings.Contains(got, "listener="+name) {
		t.Errorf("no denial naming listener %s in the log:\n%s", name, got)
	}

	// A listener with a CEL condition cannot be evaluated: it is NACKed
	// and the last good policy keeps applying.
	bad := inboundRBAC(name, otherID.String())
	bad.FilterChains[0] = xdstest.FilterChain("inbound", xdstest.InboundRoutes("inbound"),
		xdstest.RBACFilter("cel", &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
			"p": {Condition: &exprpb.Expr{}}}}))
	bad.FilterChains[0].TransportSocket = xdstest.TLSSocket(xdstest.IstioMTLS())
	cp.SetSnapshot(t, xdsNode, "2", bad)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nack, err := cp.WaitRequest(ctx, func(r *discoveryv3.DiscoveryRequest) bool { return r.GetErrorDetail() != nil })
	if err != nil {
		t.Fatalf("no NACK reached the control plane: %v", err)
	}
	if msg := nack.GetErrorDetail().GetMessage(); !strings.Contains(msg, "condition") || !strings.Contains(msg, name) {
		t.Errorf("NACK %q does not name the listener and the field", msg)
	}
	check(t)

	// A good change takes effect.
	cp.SetSnapshot(t, xdsNode, "3", inboundRBAC(name, otherID.String()))
	deadline := time.Now().Add(10 * time.Second)
	for statusOf(t, other, "GET", "http://orders/items") != 200 {
		if time.Now().After(deadline) {
			t.Fatal("the new policy did not take effect within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := statusOf(t, frontend, "GET", "http://orders/items"); got != 403 {
		t.Errorf("after the change, frontend got %d, want 403", got)
	}
}

// TestXDSInboundAbsentListenerServesLocally: when the control plane has no
// inbound listener for the server, requests are served under the local
// policy alone, as soon as the control plane says so.
func TestXDSInboundAbsentListenerServesLocally(t *testing.T) {
	cp := xdstest.NewServer(t)
	var bs map[string]any
	if err := json.Unmarshal(cp.Bootstrap(xdsNode), &bs); err != nil {
		t.Fatal(err)
	}
	bs["server_listener_resource_name_template"] = inboundTemplate
	bootstrap, _ := json.Marshal(bs)
	cp.SetSnapshot(t, xdsNode, "1", xdstest.Listener("someone-else:80", "rc"))
	srv := newMesh(t, mesh.WithBootstrap(bootstrap))
	addr := serveWhoami(t, srv)
	start := time.Now()
	if got := get(t, http.DefaultClient, "http://"+addr+"/"); got != "anonymous" {
		t.Errorf("got %q", got)
	}
	http.DefaultClient.CloseIdleConnections()
	t.Logf("first request answered after %v", time.Since(start))
}

// TestXDSInboundRBACOnGRPC: the same RBAC reaches a gRPC server made by
// the mesh, which follows the inbound listener through the mesh's own xDS
// client.
func TestXDSInboundRBACOnGRPC(t *testing.T) {
	cp := xdstest.NewServer(t)
	var bs map[string]any
	if err := json.Unmarshal(cp.Bootstrap(xdsNode), &bs); err != nil {
		t.Fatal(err)
	}
	bs["server_listener_resource_name_template"] = inboundTemplate
	bootstrap, _ := json.Marshal(bs)
	srv := newMesh(t, mesh.WithBootstrap(bootstrap))
	gs, err := srv.NewGRPCServer()
	if err != nil {
		t.Fatal(err)
	}
	healthpb.RegisterHealthServer(gs, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	denyWatch := &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{
		Path: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "/grpc.health.v1.Health/List"}}}}}}
	l := xdstest.ServerListener(strings.ReplaceAll(inboundTemplate, "%s", addr), netip.MustParseAddrPort(addr), nil,
		xdstest.FilterChain("inbound", xdstest.InboundRoutes("inbound"),
			xdstest.RBACFilter("deny", &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{
				"deny-list": {Permissions: []*rbacv3.Permission{denyWatch}, Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}}}}})))
	cp.SetSnapshot(t, xdsNode, "1", l)
	go gs.Serve(ln)
	defer gs.Stop()

	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The server serves once its listener arrived; wait for it.
	for {
		_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the xDS-managed server never served: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := hc.List(ctx, &healthpb.HealthListRequest{}); grpcstatus.Code(err) != codes.PermissionDenied {
		t.Errorf("List = %v, want PermissionDenied from the RBAC filter", err)
	}
}
