package mesh_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
)

// explainConfig routes orders:8080: x-canary: true goes to orders-v2
// (route "canary"), /items is split 80/20 between orders-v1 and orders-v2
// (route "split"), and nothing else matches.
func explainConfig(v1, v2 string) []types.Resource {
	rc := &routev3.RouteConfiguration{Name: "orders-routes", VirtualHosts: []*routev3.VirtualHost{{
		Name: "orders", Domains: []string{"orders:8080"},
		Routes: []*routev3.Route{
			{
				Name: "canary",
				Match: &routev3.RouteMatch{
					PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
					Headers: []*routev3.HeaderMatcher{{Name: "x-canary", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
						StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "true"}}}}},
				},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "orders-v2"}}},
			},
			{
				Name:  "split",
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/items"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{
					WeightedClusters: &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{
						{Name: "orders-v1", Weight: wrapperspb.UInt32(80)},
						{Name: "orders-v2", Weight: wrapperspb.UInt32(20)},
					}}},
					RetryPolicy: &routev3.RetryPolicy{RetryOn: "5xx,reset", NumRetries: wrapperspb.UInt32(2)}}},
			},
		},
	}}}
	return []types.Resource{
		xdstest.Listener("orders:8080", "orders-routes"), rc,
		xdstest.Cluster("orders-v1", ""), xdstest.Cluster("orders-v2", ""),
		xdstest.Endpoints("orders-v1", v1), xdstest.Endpoints("orders-v2", v2),
	}
}

type explainJSON struct {
	Source      string `json:"source"`
	Passthrough bool   `json:"passthrough"`
	Reason      string `json:"reason"`
	Listener    string `json:"listener"`
	RouteConfig string `json:"route_config"`
	VirtualHost *struct {
		Name string `json:"name"`
	} `json:"virtual_host"`
	Routes []struct {
		Name    string `json:"name"`
		Match   string `json:"match"`
		Matched bool   `json:"matched"`
		Failed  string `json:"failed"`
		Reason  string `json:"reason"`
	} `json:"routes"`
	Route *struct {
		Name   string `json:"name"`
		Action string `json:"action"`
	} `json:"route"`
	NoRoute  string `json:"no_route"`
	Clusters []struct {
		Name            string         `json:"name"`
		Weight          uint32         `json:"weight"`
		Percent         float64        `json:"percent"`
		Discovery       string         `json:"discovery"`
		LBPolicy        string         `json:"lb_policy"`
		CircuitBreakers map[string]any `json:"circuit_breakers"`
		MTLS            struct {
			Mode string `json:"mode"`
		} `json:"mtls"`
		Endpoints []struct {
			Addr     string `json:"addr"`
			Locality string `json:"locality"`
			Health   string `json:"health"`
		} `json:"endpoints"`
	} `json:"clusters"`
	Timeout string `json:"timeout"`
	Retry   *struct {
		NumRetries int    `json:"num_retries"`
		RetryOn    string `json:"retry_on"`
	} `json:"retry"`
}

func explain(t *testing.T, c *http.Client, admin, query string) explainJSON {
	t.Helper()
	code, _, body := fetch(t, c, "http://"+admin+"/explain?"+query)
	if code != http.StatusOK {
		t.Fatalf("/explain?%s: %d %s", query, code, body)
	}
	var e explainJSON
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("/explain?%s: %v\n%s", query, err, body)
	}
	return e
}

// TestExplainAgreesWithWhatRequestsDo asks /explain about a request that
// takes a header route, one that meets a weighted split and one that no
// route takes, then sends the same requests and checks, on /tap, that
// each went where /explain said.
func TestExplainAgreesWithWhatRequestsDo(t *testing.T) {
	v1, v2 := startDualBackend(t, "v1"), startDualBackend(t, "v2")
	cp := xdstest.NewServer(t)
	cp.SetSnapshot(t, xdsNode, "1", explainConfig(v1.addr, v2.addr)...)
	admin := freeAddr(t)
	m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)), mesh.WithAdminAddr(admin))
	ac := adminClient(t)
	lines := follow(t, admin, "?direction=outbound")
	endpointOf := map[string]string{"orders-v1": v1.addr, "orders-v2": v2.addr}

	send := func(path string, header string) (*http.Response, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://orders:8080"+path, nil)
		if k, v, ok := strings.Cut(header, ":"); ok {
			req.Header.Set(k, v)
		}
		resp, err := m.HTTPClient().Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return resp, err
	}
	tapped := func(path string, n int) []map[string]any {
		t.Helper()
		var out []map[string]any
		await(t, lines, path, func(ev map[string]any) bool {
			if ev["path"] == path {
				out = append(out, ev)
			}
			return len(out) == n
		})
		return out
	}

	// First, while the mesh follows no listener: its first request for
	// listeners is answered at once. (A later one may wait for the
	// does-not-exist timeout, for requests as for /explain.)
	t.Run("passthrough", func(t *testing.T) {
		e := explain(t, ac, admin, "url="+url.QueryEscape("http://elsewhere.test:8080/"))
		if !e.Passthrough || e.Source != "passthrough" || !strings.Contains(e.Reason, "no listener") {
			t.Errorf("explain: %+v, want passthrough: no listener", e)
		}
	})

	t.Run("header route", func(t *testing.T) {
		e := explain(t, ac, admin, "url="+url.QueryEscape("http://orders:8080/items")+"&header=x-canary:true")
		if e.Source != "xds" || e.Listener != "orders:8080" || e.RouteConfig != "orders-routes" || e.VirtualHost == nil || e.VirtualHost.Name != "orders" {
			t.Fatalf("explain: %+v, want listener orders:8080, orders-routes, virtual host orders", e)
		}
		if e.Route == nil || e.Route.Name != "canary" || e.Route.Action != "forward" || len(e.Routes) != 1 || !e.Routes[0].Matched {
			t.Fatalf("explain: route %+v (routes %+v), want canary, first", e.Route, e.Routes)
		}
		if len(e.Clusters) != 1 || e.Clusters[0].Name != "orders-v2" || e.Clusters[0].Percent != 100 || e.Clusters[0].LBPolicy != "round_robin" ||
			e.Clusters[0].Discovery != "EDS" || e.Clusters[0].MTLS.Mode != "plaintext" || e.Clusters[0].CircuitBreakers["max_requests"] != float64(1024) ||
			len(e.Clusters[0].Endpoints) != 1 || e.Clusters[0].Endpoints[0].Addr != v2.addr {
			t.Fatalf("explain: clusters %+v, want orders-v2 alone, round_robin over EDS, plaintext, Envoy's default thresholds, endpoint %s", e.Clusters, v2.addr)
		}
		if e.Timeout != "15s" || e.Retry != nil {
			t.Errorf("explain: timeout %q retry %+v, want Envoy's 15s and no retries", e.Timeout, e.Retry)
		}
		if _, err := send("/items", "x-canary:true"); err != nil {
			t.Fatal(err)
		}
		ev := tapped("/items", 1)[0]
		if ev["route"] != "canary" || ev["cluster"] != "orders-v2" || ev["endpoint"] != v2.addr {
			t.Errorf("the request did %v, /explain said canary to orders-v2 at %s", ev, v2.addr)
		}
	})

	t.Run("weighted split", func(t *testing.T) {
		e := explain(t, ac, admin, "url="+url.QueryEscape("http://orders:8080/items/7"))
		if e.Route == nil || e.Route.Name != "split" || len(e.Routes) != 2 {
			t.Fatalf("explain: route %+v (routes %+v), want split after canary", e.Route, e.Routes)
		}
		if r := e.Routes[0]; r.Name != "canary" || r.Matched || r.Failed != "header" || r.Reason != `header x-canary is absent: want = "true"` {
			t.Errorf("canary: %+v, want it to fail on the absent x-canary header", r)
		}
		var names []string
		for _, c := range e.Clusters {
			names = append(names, c.Name)
			if want := map[string]float64{"orders-v1": 80, "orders-v2": 20}[c.Name]; c.Percent != want {
				t.Errorf("cluster %s: %v%%, want %v%%", c.Name, c.Percent, want)
			}
		}
		if strings.Join(names, ",") != "orders-v1,orders-v2" {
			t.Fatalf("explain: clusters %v, want orders-v1 (80) and orders-v2 (20)", names)
		}
		if e.Retry == nil || e.Retry.NumRetries != 2 || !strings.Contains(e.Retry.RetryOn, "5xx") {
			t.Errorf("explain: retry %+v, want 2 on 5xx,reset", e.Retry)
		}
		const n = 20
		for i := 0; i < n; i++ {
			if _, err := send("/items/7", ""); err != nil {
				t.Fatal(err)
			}
		}
		for _, ev := range tapped("/items/7", n) {
			cluster, _ := ev["cluster"].(string)
			if ev["route"] != "split" || !slices.Contains(names, cluster) || ev["endpoint"] != endpointOf[cluster] {
				t.Errorf("a request did %v; /explain said split to %v", ev, names)
			}
		}
	})

	t.Run("no route", func(t *testing.T) {
		e := explain(t, ac, admin, "url="+url.QueryEscape("http://orders:8080/other")+"&method=POST")
		if e.Route != nil || len(e.Routes) != 2 || !strings.Contains(e.NoRoute, "no route") {
			t.Fatalf("explain: %+v, want no route after trying both", e)
		}
		if r := e.Routes[1]; r.Failed != "path" || r.Reason != `path "/other": want prefix "/items"` {
			t.Errorf("split: %+v, want it to fail on the path", r)
		}
		_, err := send("/other", "")
		if !errors.Is(err, mesh.ErrNoRoute) {
			t.Errorf("the request got %v, /explain said no route", err)
		}
	})

	t.Run("gRPC", func(t *testing.T) {
		e := explain(t, ac, admin, "grpc="+url.QueryEscape("orders:8080/grpc.health.v1.Health/Check")+"&header=x-canary:true")
		if e.Route == nil || e.Route.Name != "canary" || len(e.Clusters) != 1 || e.Clusters[0].Name != "orders-v2" || e.Timeout != "off" {
			t.Fatalf("explain: %+v, want canary to orders-v2, no timeout (gRPC's default)", e)
		}
		e = explain(t, ac, admin, "grpc="+url.QueryEscape("orders:8080/grpc.health.v1.Health/Check"))
		if e.Route != nil || !strings.Contains(e.NoRoute, "UNAVAILABLE") {
			t.Fatalf("explain without the header: %+v, want no route (UNAVAILABLE)", e)
		}
		cc, err := m.DialGRPC("xds:///orders:8080")
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unavailable {
			t.Errorf("the call got %v, /explain said no route", err)
		}
	})

	for _, q := range []string{"", "url=orders", "url=http://orders/&grpc=orders/a.B/C", "grpc=orders:8080/Check", "url=http://orders/&header=nocolon", "url=http://orders/&x=1"} {
		if code, _, body := fetch(t, ac, "http://"+admin+"/explain?"+q); code != http.StatusBadRequest || !strings.HasPrefix(body, "explain: ") {
			t.Errorf("/explain?%s: %d %q, want 400 with the reason", q, code, body)
		}
	}
}

// TestExplainStaticService: a service outside xDS is explained with the
// mesh's own policy.
func TestExplainStaticService(t *testing.T) {
	admin := freeAddr(t)
	newMesh(t, mesh.WithAdminAddr(admin), mesh.WithEndpoints("users", "127.0.0.1:9", "127.0.0.1:10"))
	e := explain(t, adminClient(t), admin, "url="+url.QueryEscape("http://users/x"))
	if e.Source != "static" || len(e.Clusters) != 1 || e.Clusters[0].Name != "users" || len(e.Clusters[0].Endpoints) != 2 ||
		e.Clusters[0].LBPolicy != "round_robin" || e.Retry == nil || e.Retry.NumRetries != 2 {
		t.Errorf("explain: %+v, want users from static discovery, two endpoints, round_robin, the mesh's 2 retries", e)
	}
	e = explain(t, adminClient(t), admin, "url="+url.QueryEscape("http://example.test/"))
	if !e.Passthrough {
		t.Errorf("explain of a host outside the mesh: %+v, want passthrough", e)
	}
}
