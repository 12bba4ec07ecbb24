package mesh_test

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
)

func hv(name, value string, action corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: name, Value: value}, AppendAction: action}
}

const (
	appendOrAdd    = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
	addIfAbsent    = corev3.HeaderValueOption_ADD_IF_ABSENT
	overwriteOrAdd = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
	overwriteIf    = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS
)

// headerRoutes is a route configuration named name for host, with header
// changes at every level and the rewrites, all to the cluster "main".
func headerRoutes(name, host string, mostSpecificWins bool) *routev3.RouteConfiguration {
	prefix := func(p string) *routev3.RouteMatch {
		return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p}}
	}
	fwd := func(m *routev3.RouteMatch, set func(*routev3.RouteAction)) *routev3.Route {
		a := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "main"}}
		if set != nil {
			set(a)
		}
		return &routev3.Route{Match: m, Action: &routev3.Route_Route{Route: a}}
	}
	regex := func(pattern, sub string) *matcherv3.RegexMatchAndSubstitute {
		return &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: pattern}, Substitution: sub}
	}

	headers := fwd(prefix("/headers"), nil)
	headers.RequestHeadersToAdd = []*corev3.HeaderValueOption{
		hv("x-level", "route", overwriteOrAdd),
		hv("x-append", "route", appendOrAdd),
		hv("x-absent", "route", addIfAbsent),
		hv("x-new-absent", "route", addIfAbsent),
		hv("x-ow-present", "route", overwriteIf),
		hv("x-ow-missing", "route", overwriteIf),
		hv("x-empty-dropped", "", overwriteOrAdd),
		{Header: &corev3.HeaderValue{Key: "x-empty-kept", Value: ""}, KeepEmptyValue: true},
		// The deprecated append field, false: overwrite.
		{Header: &corev3.HeaderValue{Key: "x-legacy", Value: "route"}, Append: wrapperspb.Bool(false)},
	}
	headers.RequestHeadersToRemove = []string{"x-remove-me"}
	headers.ResponseHeadersToAdd = []*corev3.HeaderValueOption{hv("x-resp-level", "route", overwriteOrAdd), hv("x-resp-route", "yes", appendOrAdd)}
	headers.ResponseHeadersToRemove = []string{"x-backend-internal"}

	weighted := fwd(prefix("/weighted"), func(a *routev3.RouteAction) {
		a.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
			Clusters: []*routev3.WeightedCluster_ClusterWeight{{
				Name: "main", Weight: wrapperspb.UInt32(100),
				RequestHeadersToAdd:     []*corev3.HeaderValueOption{hv("x-level", "cluster", overwriteOrAdd), hv("x-cluster", "main", appendOrAdd)},
				ResponseHeadersToAdd:    []*corev3.HeaderValueOption{hv("x-resp-cluster", "main", appendOrAdd)},
				ResponseHeadersToRemove: []string{"x-backend-internal"},
				HostRewriteSpecifier:    &routev3.WeightedCluster_ClusterWeight_HostRewriteLiteral{HostRewriteLiteral: "cluster.example"},
			}}}}
	})
	routes := []*routev3.Route{
		headers, weighted,
		fwd(prefix("/rewrite/"), func(a *routev3.RouteAction) {
			a.PrefixRewrite = "/new/"
			a.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "literal.example"}
		}),
		fwd(prefix("/regex/"), func(a *routev3.RouteAction) {
			a.RegexRewrite = regex(`^/regex/(v[0-9]+)/(.*)$`, `/\2/\1`)
			a.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteHeader{HostRewriteHeader: "x-host"}
		}),
		fwd(prefix("/hostpath/"), func(a *routev3.RouteAction) {
			a.HostRewriteSpecifier = &routev3.RouteAction_HostRewritePathRegex{HostRewritePathRegex: regex(`^/hostpath/([^/]+)/.*$`, `\1.internal`)}
		}),
		fwd(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/exact"}}, func(a *routev3.RouteAction) { a.PrefixRewrite = "/replaced" }),
		fwd(prefix("/auto-named"), func(a *routev3.RouteAction) {
			a.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: "named"}
			a.HostRewriteSpecifier = &routev3.RouteAction_AutoHostRewrite{AutoHostRewrite: wrapperspb.Bool(true)}
		}),
		fwd(prefix("/auto-unnamed"), func(a *routev3.RouteAction) {
			a.HostRewriteSpecifier = &routev3.RouteAction_AutoHostRewrite{AutoHostRewrite: wrapperspb.Bool(true)}
		}),
		fwd(prefix("/"), nil),
	}
	return &routev3.RouteConfiguration{
		Name:                            name,
		MostSpecificHeaderMutationsWins: mostSpecificWins,
		RequestHeadersToAdd:             []*corev3.HeaderValueOption{hv("x-level", "routeconfig", overwriteOrAdd), hv("x-rc", "yes", appendOrAdd)},
		ResponseHeadersToAdd:            []*corev3.HeaderValueOption{hv("x-resp-level", "routeconfig", overwriteOrAdd)},
		VirtualHosts: []*routev3.VirtualHost{{
			Name: "svc", Domains: []string{host},
			RequestHeadersToAdd:     []*corev3.HeaderValueOption{hv("x-level", "vhost", overwriteOrAdd), hv("x-vhost", "yes", appendOrAdd)},
			RequestHeadersToRemove:  []string{"x-strip-vh"},
			ResponseHeadersToAdd:    []*corev3.HeaderValueOption{hv("x-resp-level", "vhost", overwriteOrAdd)},
			ResponseHeadersToRemove: []string{"x-upstream-secret"},
			Routes:                  routes,
		}},
	}
}

// TestHeaderChangesEndToEnd sends real requests through a go-control-plane
// snapshot and checks what the backend and the caller see.
//
// Envoy's semantics (route.v3): a weighted cluster's headers "are applied
// before headers from the enclosing Route, VirtualHost, and
// RouteConfiguration"; "Headers mutations at all levels are evaluated, if
// specified. By default, the order is from most specific (i.e. route
// entry level) to least specific (i.e. route configuration level). Later
// header mutations may override earlier mutations. This order can be
// reversed by setting this field [most_specific_header_mutations_wins] to
// true. In other words, most specific level mutation is evaluated last."
// Within a level, removals come before additions, and append_action says
// how an addition meets a header already there (APPEND_IF_EXISTS_OR_ADD,
// ADD_IF_ABSENT, OVERWRITE_IF_EXISTS_OR_ADD, OVERWRITE_IF_EXISTS); a value
// that is empty is added only with keep_empty_value. The host is rewritten
// after the header changes (host_rewrite_literal, host_rewrite_header,
// host_rewrite_path_regex on the path before its rewrite); the weighted
// cluster's host_rewrite_literal holds when the route has none.
// auto_host_rewrite: "the host header will be swapped with the hostname
// of the upstream host chosen by the cluster manager", when it has one.
func TestHeaderChangesEndToEnd(t *testing.T) {
	backend := startRecBackend(t, http.Header{
		"X-Backend-Internal": {"secret"}, "X-Upstream-Secret": {"s"}, "X-Resp-Level": {"backend"},
	})
	cp := xdstest.NewServer(t)
	named := xdstest.Endpoints("named", backend.addr)
	named.Endpoints[0].LbEndpoints[0].GetEndpoint().Hostname = "backend.example"
	cp.SetSnapshot(t, xdsNode, "1",
		xdstest.Listener(parityHost, "rc-default"), headerRoutes("rc-default", parityHost, false),
		xdstest.Listener("wins:8080", "rc-wins"), headerRoutes("rc-wins", "wins:8080", true),
		parityCluster("main", nil), xdstest.Endpoints("main", backend.addr),
		parityCluster("named", nil), named)
	c := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode))).HTTPClient()

	type want struct {
		host, path string
		header     map[string][]string // nil: the header is absent
		response   map[string][]string
	}
	caller := map[string]string{
		"x-append": "caller", "x-absent": "caller", "x-ow-present": "caller", "x-remove-me": "1", "x-strip-vh": "1",
		"x-level": "caller", "x-legacy": "caller", "x-host": "from-header.example",
	}
	tests := []struct {
		name, host, path string
		want             want
	}{
		{"every level, least specific wins", parityHost, "/headers?q=1", want{
			host: parityHost, path: "/headers?q=1",
			header: map[string][]string{
				"x-level": {"routeconfig"}, "x-rc": {"yes"}, "x-vhost": {"yes"},
				"x-append": {"caller", "route"}, "x-absent": {"caller"}, "x-new-absent": {"route"},
				"x-ow-present": {"route"}, "x-ow-missing": nil, "x-empty-dropped": nil, "x-empty-kept": {""},
				"x-legacy": {"route"}, "x-remove-me": nil, "x-strip-vh": nil,
			},
			response: map[string][]string{"x-resp-level": {"routeconfig"}, "x-resp-route": {"yes"}, "x-backend-internal": nil, "x-upstream-secret": nil},
		}},
		{"most_specific_header_mutations_wins", "wins:8080", "/headers", want{
			host: "wins:8080", path: "/headers",
			header:   map[string][]string{"x-level": {"route"}, "x-rc": {"yes"}, "x-vhost": {"yes"}},
			response: map[string][]string{"x-resp-level": {"route"}, "x-resp-route": {"yes"}},
		}},
		{"weighted cluster first, its host rewrite", parityHost, "/weighted", want{
			host: "cluster.example", path: "/weighted",
			header:   map[string][]string{"x-level": {"routeconfig"}, "x-cluster": {"main"}, "x-vhost": {"yes"}, "x-strip-vh": nil},
			response: map[string][]string{"x-resp-cluster": {"main"}, "x-resp-level": {"routeconfig"}, "x-backend-internal": nil},
		}},
		{"weighted cluster, most specific wins", "wins:8080", "/weighted", want{
			host: "cluster.example", path: "/weighted",
			header: map[string][]string{"x-level": {"vhost"}, "x-cluster": {"main"}},
		}},
		{"prefix_rewrite, host_rewrite_literal", parityHost, "/rewrite/a%2Fb?x=1", want{
			host: "literal.example", path: "/new/a%2Fb?x=1",
			header: map[string][]string{"x-level": {"routeconfig"}},
		}},
		{"regex_rewrite, host_rewrite_header", parityHost, "/regex/v1/items", want{
			host: "from-header.example", path: "/items/v1",
		}},
		{"host_rewrite_path_regex", parityHost, "/hostpath/orders/x?y=1", want{
			host: "orders.internal", path: "/hostpath/orders/x?y=1",
		}},
		{"exact match, prefix_rewrite", parityHost, "/exact?q=1", want{
			host: parityHost, path: "/replaced?q=1",
		}},
		{"auto_host_rewrite, the endpoint's hostname", parityHost, "/auto-named", want{
			host: "backend.example", path: "/auto-named",
		}},
		{"auto_host_rewrite, an endpoint without one", parityHost, "/auto-unnamed", want{
			host: parityHost, path: "/auto-unnamed",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			backend.reset()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+tt.host+tt.path, nil)
			for k, v := range caller {
				req.Header.Set(k, v)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			got := backend.seen()
			if len(got) != 1 {
				t.Fatalf("backend saw %d requests; want 1", len(got))
			}
			a := got[0]
			if a.host != tt.want.host || a.path != tt.want.path {
				t.Errorf("backend saw Host %q, path %q; want %q, %q", a.host, a.path, tt.want.host, tt.want.path)
			}
			for k, v := range tt.want.header {
				if g := a.header.Values(k); !slices.Equal(g, v) {
					t.Errorf("backend saw %s: %q; want %q", k, g, v)
				}
			}
			for k, v := range tt.want.response {
				if g := resp.Header.Values(k); !slices.Equal(g, v) {
					t.Errorf("caller saw %s: %q; want %q", k, g, v)
				}
			}
		})
	}

	// gRPC: grpc-go's xDS client applies none of a route's header changes
	// or rewrites (its RDS parsing does not read request_headers_to_add,
	// response_headers_to_add, prefix_rewrite or the host rewrites), and
	// Weft's gRPC path holds to it: the backend sees the call's metadata
	// as sent, the caller the backend's header metadata as answered.
	for _, tc := range []struct {
		name string
		opts []mesh.Option
	}{{weftGRPC, nil}, {grpcGo, []mesh.Option{mesh.WithGRPCGoXDS(grpcGoOracle{})}}} {
		t.Run(tc.name, func(t *testing.T) {
			backend.reset()
			hc := dialHealth(t, newMesh(t, append(tc.opts, mesh.WithBootstrap(cp.Bootstrap(xdsNode)))...), "xds:///"+parityHost)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ctx = metadata.AppendToOutgoingContext(ctx, "x-level", "caller", "x-remove-me", "1")
			var md metadata.MD
			if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&md)); err != nil {
				t.Fatal(err)
			}
			a := first(backend.seen())
			if a.host != parityHost || !slices.Equal(a.header.Values("x-level"), []string{"caller"}) || a.header.Get("x-remove-me") != "1" ||
				a.header.Get("x-vhost") != "" || a.header.Get("x-rc") != "" {
				t.Errorf("backend saw :authority %q, metadata %v; want the call's own", a.host, a.header)
			}
			if got := md.Get("x-backend-internal"); !slices.Equal(got, []string{"secret"}) || len(md.Get("x-resp-route")) > 0 {
				t.Errorf("caller saw header metadata %v; want the backend's own", md)
			}
		})
	}
}
