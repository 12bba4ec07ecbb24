package mesh_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
)

// shopConfig is "shop:8080" with redirect and direct-response routes in
// front of a catch-all route to the shop cluster, and "orders:8080", a
// plain route to the orders cluster, for redirects to follow.
func shopConfig(shop, orders string) []types.Resource {
	prefix := func(p string) *routev3.RouteMatch {
		return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p}}
	}
	redirect := func(p string, a *routev3.RedirectAction) *routev3.Route {
		return &routev3.Route{Match: prefix(p), Action: &routev3.Route_Redirect{Redirect: a}}
	}
	direct := func(p string, status uint32, body string) *routev3.Route {
		return &routev3.Route{Match: prefix(p), Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
			Status: status, Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: body}}}}}
	}
	rc := &routev3.RouteConfiguration{Name: "shop-routes", VirtualHosts: []*routev3.VirtualHost{{
		Name: "shop", Domains: []string{"shop:8080", "shop"},
		Routes: []*routev3.Route{
			redirect("/host/", &routev3.RedirectAction{HostRedirect: "elsewhere"}),
			redirect("/follow/", &routev3.RedirectAction{HostRedirect: "orders:8080", ResponseCode: routev3.RedirectAction_FOUND}),
			redirect("/path", &routev3.RedirectAction{ResponseCode: routev3.RedirectAction_FOUND,
				PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/new"}}),
			redirect("/qpath", &routev3.RedirectAction{StripQuery: true,
				PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/new?x=1"}}),
			redirect("/prefix/", &routev3.RedirectAction{ResponseCode: routev3.RedirectAction_SEE_OTHER,
				PathRewriteSpecifier: &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: "/v2/"}}),
			redirect("/regex/", &routev3.RedirectAction{ResponseCode: routev3.RedirectAction_TEMPORARY_REDIRECT,
				PathRewriteSpecifier: &routev3.RedirectAction_RegexRewrite{RegexRewrite: &matcherv3.RegexMatchAndSubstitute{
					Pattern: &matcherv3.RegexMatcher{Regex: "^/regex/(v[0-9]+)/(.*)$"}, Substitution: `/\2/\1`}}}),
			redirect("/port", &routev3.RedirectAction{PortRedirect: 9090, ResponseCode: routev3.RedirectAction_PERMANENT_REDIRECT}),
			redirect("/strip", &routev3.RedirectAction{StripQuery: true}),
			redirect("/scheme", &routev3.RedirectAction{SchemeRewriteSpecifier: &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true}}),
			withResponseHeader(direct("/down", 503, "maintenance"), "x-down", "yes"),
			withResponseHeader(redirect("/header", &routev3.RedirectAction{HostRedirect: "h"}), "x-moved", "yes"),
			direct("/ok", 200, "fine"),
			direct("/grpc.health.v1.Health/", 200, "not for gRPC"),
			{Match: prefix("/"), Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "shop"}}}},
		},
	}}}
	return []types.Resource{
		xdstest.Listener("shop:8080", "shop-routes"), rc,
		xdstest.Listener("orders:8080", "orders-routes"), xdstest.RouteConfig("orders-routes", "orders:8080", "orders"),
		xdstest.Cluster("shop", ""), xdstest.Endpoints("shop", shop),
		xdstest.Cluster("orders", ""), xdstest.Endpoints("orders", orders),
	}
}

func withResponseHeader(r *routev3.Route, name, value string) *routev3.Route {
	r.ResponseHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: name, Value: value}}}
	return r
}

// TestXDSRedirectAndDirectResponseAnswerLocally holds Weft's HTTP client to
// Envoy's router: a redirect route answers with its status and a Location
// built from the request URL (RedirectAction in route.v3: host_redirect
// replaces host and port, path_redirect the path, prefix_rewrite the
// matched prefix, regex_rewrite the path, port_redirect the port,
// strip_query drops the query, response_code defaults to 301), a
// direct_response route with its status and body, and neither reaches
// an upstream.
func TestXDSRedirectAndDirectResponseAnswerLocally(t *testing.T) {
	addrs, hits := backends(t, 2)
	shop, orders := addrs[0], addrs[1]
	cp := xdstest.NewServer(t)
	cp.SetSnapshot(t, xdsNode, "1", shopConfig(shop, orders)...)
	m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)))
	c := *m.HTTPClient() // a copy: the mesh's client keeps the default policy
	// See the 3xx itself rather than follow it.
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	tests := []struct {
		path     string
		wantCode int
		wantLoc  string
		wantBody string
	}{
		{"/host/a?q=1", 301, "http://elsewhere/host/a?q=1", ""},
		{"/path/a?q=1", 302, "http://shop:8080/new?q=1", ""},
		{"/qpath?q=1", 301, "http://shop:8080/new?x=1", ""},
		{"/prefix/a/b?q=1", 303, "http://shop:8080/v2/a/b?q=1", ""},
		{"/regex/v1/items?q=1", 307, "http://shop:8080/items/v1?q=1", ""},
		{"/port?q=1", 308, "http://shop:9090/port?q=1", ""},
		{"/strip?q=1&r=2", 301, "http://shop:8080/strip", ""},
		{"/scheme?q=1", 301, "https://shop:8080/scheme?q=1", ""},
		{"/down", 503, "", "maintenance"},
		{"/ok", 200, "", "fine"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			req, _ := http.NewRequest("POST", "http://shop:8080"+tt.path, strings.NewReader("payload"))
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("POST %s: %v", tt.path, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantCode {
				t.Errorf("status = %d; want %d", resp.StatusCode, tt.wantCode)
			}
			if got := resp.Header.Get("Location"); got != tt.wantLoc {
				t.Errorf("Location = %q; want %q", got, tt.wantLoc)
			}
			if string(body) != tt.wantBody {
				t.Errorf("body = %q; want %q", body, tt.wantBody)
			}
			if resp.Request != req {
				t.Errorf("resp.Request is not the caller's request")
			}
		})
	}
	if h := hits(); len(h) != 0 {
		t.Errorf("backends received %v; want no request", h)
	}

	// The route's response_headers_to_add apply to local answers too, as
	// in Envoy.
	for path, name := range map[string]string{"/down": "x-down", "/header": "x-moved"} {
		resp, err := c.Get("http://shop:8080" + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		resp.Body.Close()
		if got := resp.Header.Get(name); got != "yes" {
			t.Errorf("GET %s: %s = %q; want \"yes\"", path, name, got)
		}
	}

	// The default policy follows a redirect to another mesh route.
	if got := get(t, m.HTTPClient(), "http://shop:8080/follow/items"); !strings.HasPrefix(got, orders+" orders:8080") {
		t.Errorf("following the redirect got %q; want the orders backend with Host orders:8080", got)
	}
	if h := hits(); h[orders] != 1 || h[shop] != 0 {
		t.Errorf("backends received %v; want one request at orders (%s)", h, orders)
	}
}

// TestXDSGRPCFailsRedirectAndDirectResponseRoutes: grpc-go's xDS client
// fails a call whose route is neither route nor non_forwarding_action with
// UNAVAILABLE, and Weft's gRPC path does the same, reaching no backend.
func TestXDSGRPCFailsRedirectAndDirectResponseRoutes(t *testing.T) {
	b := startDualBackend(t, "shop")
	cp := xdstest.NewServer(t)
	cp.SetSnapshot(t, xdsNode, "1", shopConfig(b.addr, b.addr)...)
	m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)))
	cc, err := m.DialGRPC("xds:///shop:8080")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if got := status.Code(err); got != codes.Unavailable || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Check on a direct_response route: %v (code %v); want UNAVAILABLE", err, got)
	}
	if h, r := b.counts(); h+r != 0 {
		t.Errorf("backend received %d HTTP and %d gRPC requests; want none", h, r)
	}
}
