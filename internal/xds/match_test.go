//lint:file-ignore SA1019 control planes still send these deprecated xDS fields, and grpc-go reads them too

package xds

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func route(name string, m *routev3.RouteMatch) *routev3.Route {
	return &routev3.Route{Name: name, Match: m, Action: &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: name},
	}}}
}

func prefix(p string) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p}}
}

func withHeaders(m *routev3.RouteMatch, hs ...*routev3.HeaderMatcher) *routev3.RouteMatch {
	m.Headers = hs
	return m
}

func testRouteConfig(t testing.TB) *RouteConfig {
	t.Helper()
	exact := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/Exact"}, CaseSensitive: wrapperspb.Bool(false)}
	re := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/items/[0-9]+"}}}
	frac := prefix("/frac")
	frac.RuntimeFraction = &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 25, Denominator: typev3.FractionalPercent_HUNDRED}}
	query := prefix("/q")
	query.QueryParameters = []*routev3.QueryParameterMatcher{{Name: "v", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "2"}}}}}
	rc := &routev3.RouteConfiguration{Name: "rc", VirtualHosts: []*routev3.VirtualHost{
		{Name: "any", Domains: []string{"*"}, Routes: []*routev3.Route{route("any", prefix("/"))}},
		{Name: "suffix", Domains: []string{"*.example.com"}, Routes: []*routev3.Route{route("suffix", prefix("/"))}},
		{Name: "longsuffix", Domains: []string{"*.api.example.com"}, Routes: []*routev3.Route{route("longsuffix", prefix("/"))}},
		{Name: "prefixwc", Domains: []string{"orders.*"}, Routes: []*routev3.Route{route("prefixwc", prefix("/"))}},
		{Name: "orders", Domains: []string{"orders:8080", "Orders"}, Routes: []*routev3.Route{
			route("exact", exact),
			route("regex", re),
			route("frac", frac),
			route("query", query),
			route("hdr-exact", withHeaders(prefix("/h"), &routev3.HeaderMatcher{Name: "x-env", HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "canary"}})),
			route("hdr-invert", withHeaders(prefix("/h"), &routev3.HeaderMatcher{Name: "x-env", InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_PrefixMatch{PrefixMatch: "prod"}})),
			route("hdr-range", withHeaders(prefix("/h"), &routev3.HeaderMatcher{Name: "x-n", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: 10, End: 20}}})),
			route("hdr-absent", withHeaders(prefix("/h"), &routev3.HeaderMatcher{Name: "x-debug", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: false}})),
			route("method", withHeaders(prefix("/m"), &routev3.HeaderMatcher{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{IgnoreCase: true, MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "post"}}}})),
			route("ct", withHeaders(prefix("/"), &routev3.HeaderMatcher{Name: "content-type", HeaderMatchSpecifier: &routev3.HeaderMatcher_ContainsMatch{ContainsMatch: "grpc"}})),
			route("suffixhdr", withHeaders(prefix("/"), &routev3.HeaderMatcher{Name: "x-s", HeaderMatchSpecifier: &routev3.HeaderMatcher_SuffixMatch{SuffixMatch: "-end"}})),
		}},
	}}
	out, err := TranslateRouteConfig(rc)
	if err != nil {
		t.Fatalf("TranslateRouteConfig() error = %v", err)
	}
	return out
}

func TestMatch(t *testing.T) {
	rc := testRouteConfig(t)
	h := func(kv ...string) http.Header {
		out := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			out.Add(kv[i], kv[i+1])
		}
		return out
	}
	tests := []struct {
		name string
		host string
		req  Request
		want string // route name, "" = no match
	}{
		{"any host", "unknown", Request{Path: "/x"}, "any"},
		{"suffix wildcard", "a.example.com", Request{Path: "/"}, "suffix"},
		{"longest suffix wins", "v1.api.example.com", Request{Path: "/"}, "longsuffix"},
		{"wildcard needs a char", ".example.com", Request{Path: "/"}, "any"},
		{"prefix wildcard", "orders.default", Request{Path: "/"}, "prefixwc"},
		{"exact beats prefix wildcard", "orders:8080", Request{Path: "/Exact"}, "exact"},
		{"domain case-insensitive", "ORDERS", Request{Path: "/exact"}, "exact"},
		{"exact path case-insensitive", "orders:8080", Request{Path: "/EXACT"}, "exact"},
		{"exact path needs whole path", "orders:8080", Request{Path: "/Exact/more"}, ""},
		{"regex whole path", "orders:8080", Request{Path: "/items/42"}, "regex"},
		{"regex not partial", "orders:8080", Request{Path: "/items/42/x"}, ""},
		{"fraction in", "orders:8080", Request{Path: "/frac", FractionSample: 249_999}, "frac"},
		{"fraction out", "orders:8080", Request{Path: "/frac", FractionSample: 250_000}, ""},
		{"query prefix", "orders:8080", Request{Path: "/q", RawQuery: "a=1&v=2.1"}, "query"},
		{"query escaped", "orders:8080", Request{Path: "/q", RawQuery: "v=%32x"}, "query"},
		{"query mismatch", "orders:8080", Request{Path: "/q", RawQuery: "v=1"}, ""},
		{"query absent", "orders:8080", Request{Path: "/q"}, ""},
		{"header exact", "orders:8080", Request{Path: "/h", Header: h("X-Env", "canary")}, "hdr-exact"},
		{"header invert", "orders:8080", Request{Path: "/h", Header: h("X-Env", "staging")}, "hdr-invert"},
		{"inverted matcher fails on absent header", "orders:8080", Request{Path: "/h", Header: h("X-N", "15", "X-Debug", "1")}, "hdr-range"},
		{"header range end exclusive", "orders:8080", Request{Path: "/h", Header: h("X-Env", "prod", "X-N", "20")}, "hdr-absent"},
		{"header not present", "orders:8080", Request{Path: "/h", Header: h("X-Env", "prod", "X-N", "20", "X-Debug", "1")}, ""},
		{"repeated header joined", "orders:8080", Request{Path: "/h", Header: h("X-Env", "canary", "X-Env", "b")}, "hdr-invert"},
		{"pseudo method", "orders:8080", Request{Path: "/m", Method: "POST"}, "method"},
		{"contains", "orders:8080", Request{Path: "/z", Header: h("Content-Type", "application/grpc+proto")}, "ct"},
		{"suffix header", "orders:8080", Request{Path: "/z", Header: h("X-S", "the-end")}, "suffixhdr"},
		{"nothing", "orders:8080", Request{Path: "/z"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, ok := rc.Match(tt.host, &tt.req)
			got := ""
			if ok {
				got = r.Name
			}
			if got != tt.want {
				t.Errorf("Match(%q, %+v) = %q, want %q", tt.host, tt.req, got, tt.want)
			}
		})
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	rc := testRouteConfig(t)
	req := Request{Method: "GET", Path: "/h", RawQuery: "a=1&v=3", Header: http.Header{"X-Env": {"prod"}, "X-N": {"12"}}}
	allocs := testing.AllocsPerRun(1000, func() {
		if _, ok := rc.Match("orders:8080", &req); !ok {
			t.Fatal("no match")
		}
	})
	if allocs != 0 {
		t.Errorf("Match allocates %v times per call, want 0", allocs)
	}
}

// hundredRoutes is a 100-route table whose last route is the one matched,
// so every matcher kind is evaluated on the way.
func hundredRoutes(tb testing.TB) *RouteConfig {
	tb.Helper()
	var routes []*routev3.Route
	for i := 0; i < 99; i++ {
		var m *routev3.RouteMatch
		switch i % 4 {
		case 0:
			m = prefix(fmt.Sprintf("/svc%d/", i))
		case 1:
			m = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: fmt.Sprintf("/svc%d/get", i)}}
		case 2:
			m = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: fmt.Sprintf("/svc%d/[a-z]+", i)}}}
		case 3:
			m = withHeaders(prefix("/"), &routev3.HeaderMatcher{Name: "x-tenant", HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: fmt.Sprint("t", i)}})
		}
		routes = append(routes, route(fmt.Sprint("r", i), m))
	}
	routes = append(routes, route("last", withHeaders(prefix("/api/"), &routev3.HeaderMatcher{Name: "x-tenant", HeaderMatchSpecifier: &routev3.HeaderMatcher_PrefixMatch{PrefixMatch: "acme"}})))
	rc, err := TranslateRouteConfig(&routev3.RouteConfiguration{Name: "big", VirtualHosts: []*routev3.VirtualHost{
		{Name: "other", Domains: []string{"*.internal"}, Routes: routes[:1]},
		{Name: "orders", Domains: []string{"orders", "orders:8080"}, Routes: routes},
	}})
	if err != nil {
		tb.Fatal(err)
	}
	return rc
}

func BenchmarkRouteMatch100(b *testing.B) {
	rc := hundredRoutes(b)
	req := Request{Method: "GET", Path: "/api/items", Header: http.Header{"X-Tenant": {"acme-1"}}}
	b.ReportAllocs()
	for b.Loop() {
		r, ok := rc.Match("orders:8080", &req)
		if !ok || r.Name != "last" {
			b.Fatalf("Match = %v, %v; want last", r, ok)
		}
	}
}

func FuzzRouteMatch(f *testing.F) {
	f.Add("orders:8080", "/h", "a=1&v=2", "X-Env", "canary", uint32(0))
	f.Add("x.example.com", "/items/1", "", "Content-Type", "application/grpc", uint32(999_999))
	f.Add("ORDERS", "/EXACT", "v=%zz", "X-N", "-5", uint32(1))
	rc := testRouteConfig(f)
	big := hundredRoutes(f)
	f.Fuzz(func(t *testing.T, host, path, query, hk, hv string, frac uint32) {
		req := Request{Path: path, RawQuery: query, Header: http.Header{hk: {hv}}, FractionSample: frac}
		for _, c := range []*RouteConfig{rc, big} {
			r, ok := c.Match(host, &req)
			if ok != (r != nil) {
				t.Fatalf("Match returned route %v with ok=%v", r, ok)
			}
			if ok && c.MatchVirtualHost(host) == nil {
				t.Fatalf("route matched without a virtual host for %q", host)
			}
			// Explain takes the route Match takes, from the same matcher.
			if _, _, m := c.Explain(host, &req); m != r {
				t.Fatalf("Explain matched %v, Match %v", m, r)
			}
		}
	})
}

// TestRequestFromGRPC: metadata becomes headers the matchers read, without
// pseudo-headers or binary values; the method path is kept as sent.
func TestRequestFromGRPC(t *testing.T) {
	md := metadata.Pairs(":authority", "orders:7070", "x-user", "a", "x-user", "b", "trace-bin", "\x00", "content-type", "application/grpc")
	r, host := RequestFromGRPC("/svc.Orders/Get", md, true)
	if host != "orders:7070" || r.Method != "POST" || r.Path != "/svc.Orders/Get" || r.Scheme != "https" {
		t.Errorf("RequestFromGRPC = %q %q %q %q, want orders:7070 POST /svc.Orders/Get https", host, r.Method, r.Path, r.Scheme)
	}
	if got := r.Header.Values("X-User"); len(got) != 2 {
		t.Errorf("x-user = %v, want both values", got)
	}
	if _, ok := r.Header["Trace-Bin"]; ok {
		t.Error("binary metadata became a header")
	}
	if _, ok := r.Header[":authority"]; ok {
		t.Error("a pseudo-header became a header")
	}
	// A client's outgoing metadata have no content-type; matchers see
	// application/grpc all the same.
	c, _ := RequestFromGRPC("/svc.Orders/Get", metadata.Pairs("x-user", "a"), false)
	if got := c.Header.Get("Content-Type"); got != "application/grpc" || c.Scheme != "http" {
		t.Errorf("client request: content-type %q, scheme %q; want application/grpc, http", got, c.Scheme)
	}
}

// Each request draws its own runtime_fraction sample: a route with a 30%
// share must not take every request (a gRPC call once did, its sample
// left at 0).
func TestRequestsDrawAFractionSample(t *testing.T) {
	seen := map[uint32]bool{}
	for range 20 {
		g, _ := RequestFromGRPC("/svc.Orders/Get", nil, false)
		h := RequestFromHTTP(httptest.NewRequest("GET", "/items", nil))
		seen[g.FractionSample], seen[h.FractionSample] = true, true
	}
	if len(seen) < 30 {
		t.Errorf("40 requests drew %d distinct fraction samples, want nearly 40", len(seen))
	}
}
