package devplane_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/examples/controlplane/devplane"
	"github.com/weftmesh/weft/internal/xds"
)

// full uses every feature of the format.
const full = `cert_provider_instance: mesh-certs
services:
  - name: orders
    port: 8080
    versions:
      v1: [127.0.0.1:8081, 127.0.0.1:8082]
      v2:
        - {endpoints: [127.0.0.1:8083], region: r1, zone: a, weight: 3}
        - {endpoints: [127.0.0.1:8084], region: r1, zone: b, priority: 1}
    split: {v1: 80, v2: 20}
    routes:
      - name: canary
        headers:
          - {name: x-canary, exact: "true"}
          - {name: x-user, regex: "[a-z]+"}
          - {name: x-beta, present: true}
          - {name: x-tier, prefix: gold, invert: true}
        version: v2
      - path_prefix: /admin/
        split: {v1: 1, v2: 0}
        timeout: 30s
        retry: {retry_on: [unavailable, 5xx], num_retries: 5}
    timeout: 2s
    retry: {retry_on: "5xx,gateway-error,unavailable", num_retries: 2, per_try_timeout: 500ms, base_interval: 10ms, max_interval: 50ms}
    hedge: {hedge_on_per_try_timeout: true, initial_requests: 2}
    circuit_breakers: {max_connections: 10, max_requests: 100, max_pending_requests: 5, max_retries: 2}
    outlier_detection: {consecutive_5xx: 5, interval: 5s, base_ejection_time: 15s, max_ejection_time: 60s, max_ejection_percent: 50, failure_percentage_threshold: 40, failure_percentage_minimum_hosts: 2, failure_percentage_request_volume: 10}
    lb_policy: least_request
    allowed_spiffe_ids: [spiffe://example.org/orders, spiffe://example.org/orders-canary]
  - name: users
    port: 9090
    versions: {v1: [127.0.0.1:9091]}
    lb_policy: ring_hash
    hash_policy: [{header: x-user-id}, {channel_id: true, terminal: true}, {source_ip: true}, {cookie: session}, {query_parameter: u}]
  - name: cart
    port: 7070
    versions: {v1: [127.0.0.1:7071]}
    lb_policy: maglev
  - name: search
    port: 6060
    versions: {v1: [127.0.0.1:6061]}
    lb_policy: random
  - name: pricing
    port: 5050
    versions: {v1: [127.0.0.1:5051]}
    lb_policy: p2c_ewma
    lb_config: {decay: 10s}
`

func mustParse(t *testing.T, y string) *devplane.Config {
	t.Helper()
	cfg, err := devplane.Parse([]byte(y), "mesh.yaml")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return cfg
}

// TestWeftTranslatorAcceptsEveryResource runs Weft's own xDS translation
// on everything a config produces and checks that the meaning survived.
func TestWeftTranslatorAcceptsEveryResource(t *testing.T) {
	res := mustParse(t, full).Resources()
	var unapplied []string

	var names []string
	for _, l := range res.Listeners {
		got, err := xds.TranslateListener(l)
		if err != nil {
			t.Fatalf("TranslateListener(%s): %v", l.GetName(), err)
		}
		names = append(names, got.ResourceName())
		svc, _, _ := strings.Cut(l.GetName(), ":")
		if got.RouteConfigName != svc {
			t.Errorf("listener %s: route config %q, want %q", l.GetName(), got.RouteConfigName, svc)
		}
		unapplied = append(unapplied, got.UnappliedFields()...)
	}
	wantNames := []string{"orders:8080", "orders", "users:9090", "users", "cart:7070", "cart", "search:6060", "search", "pricing:5050", "pricing"}
	if !slices.Equal(names, wantNames) {
		t.Errorf("listeners = %v, want %v", names, wantNames)
	}

	routes := map[string]*xds.RouteConfig{}
	for _, rc := range res.RouteConfigs {
		got, err := xds.TranslateRouteConfig(rc)
		if err != nil {
			t.Fatalf("TranslateRouteConfig(%s): %v", rc.GetName(), err)
		}
		routes[rc.GetName()] = got
		unapplied = append(unapplied, got.UnappliedFields()...)
	}
	vh := routes["orders"].VirtualHosts[0]
	if !slices.Equal(vh.Domains, []string{"orders", "orders:8080"}) {
		t.Errorf("orders domains = %v", vh.Domains)
	}
	if len(vh.Routes) != 3 {
		t.Fatalf("orders has %d routes, want canary, /admin/ and the default", len(vh.Routes))
	}
	canary, admin, def := vh.Routes[0], vh.Routes[1], vh.Routes[2]
	if canary.Action.Cluster != "orders-v2" || len(canary.Match.Headers) != 4 {
		t.Errorf("canary route: cluster %q, %d header matchers; want orders-v2 and 4", canary.Action.Cluster, len(canary.Match.Headers))
	}
	if h := canary.Match.Headers[1]; h.Kind != xds.MatchRegex || h.Value != "[a-z]+" {
		t.Errorf("regex matcher = %+v", h)
	}
	if h := canary.Match.Headers[3]; h.Kind != xds.MatchPrefix || !h.Invert {
		t.Errorf("inverted prefix matcher = %+v", h)
	}
	if admin.Match.Path != "/admin/" || admin.Action.Cluster != "orders-v1" || admin.Action.Timeout != 30*time.Second || admin.Action.RetryPolicy.NumRetries != 5 {
		t.Errorf("admin route = match %q action %+v", admin.Match.Path, admin.Action)
	}
	wantSplit := []xds.WeightedCluster{{Name: "orders-v1", Weight: 80}, {Name: "orders-v2", Weight: 20}}
	sameSplit := func(a, b xds.WeightedCluster) bool { return a.Name == b.Name && a.Weight == b.Weight }
	if !slices.EqualFunc(def.Action.WeightedClusters, wantSplit, sameSplit) || def.Action.TotalWeight != 100 {
		t.Errorf("default split = %v (total %d), want %v", def.Action.WeightedClusters, def.Action.TotalWeight, wantSplit)
	}
	rp := def.Action.RetryPolicy
	if def.Action.Timeout != 2*time.Second || rp == nil || rp.NumRetries != 2 || rp.PerTryTimeout != 500*time.Millisecond ||
		rp.BaseInterval != 10*time.Millisecond || rp.MaxInterval != 50*time.Millisecond || !slices.Equal(rp.RetryOn, []string{"5xx", "gateway-error", "unavailable"}) {
		t.Errorf("default route timeout %v retry %+v", def.Action.Timeout, rp)
	}
	if hp := routes["users"].VirtualHosts[0].Routes[0].Action.HashPolicies; len(hp) != 5 || hp[0].Kind != xds.HashHeader || hp[1].Kind != xds.HashChannelID || !hp[1].Terminal {
		t.Errorf("users hash policies = %+v", hp)
	}

	clusters := map[string]*xds.Cluster{}
	for _, c := range res.Clusters {
		got, err := xds.TranslateCluster(c)
		if err != nil {
			t.Fatalf("TranslateCluster(%s): %v", c.GetName(), err)
		}
		clusters[c.GetName()] = got
		unapplied = append(unapplied, got.UnappliedFields()...)
	}
	o := clusters["orders-v2"]
	if o.Kind != xds.ClusterEDS || o.EDSServiceName != "orders-v2" || o.LBPolicy != "least_request" {
		t.Errorf("orders-v2 = kind %v eds %q lb %q", o.Kind, o.EDSServiceName, o.LBPolicy)
	}
	if want := (xds.CircuitBreaker{MaxRequests: 100, MaxPendingRequests: 5, MaxRetries: 2}); o.CircuitBreaker != want {
		t.Errorf("circuit breaker = %+v, want %+v", o.CircuitBreaker, want)
	}
	if od := o.OutlierDetection; od == nil || od.Interval != 5*time.Second || od.BaseEjectionTime != 15*time.Second ||
		od.MaxEjectionPercent != 50 || od.FailurePercentage == nil || od.FailurePercentage.Threshold != 40 || od.FailurePercentage.MinimumHosts != 2 {
		t.Errorf("outlier detection = %+v", od)
	}
	if tls := o.TLS; tls == nil || tls.RootProviderInstance != "mesh-certs" || tls.IdentityProviderInstance != "mesh-certs" ||
		len(tls.SANMatchers) != 2 || tls.SANMatchers[1].Value != "spiffe://example.org/orders-canary" {
		t.Errorf("upstream TLS = %+v", o.TLS)
	}
	for name, want := range map[string]string{"users-v1": "ring_hash", "cart-v1": "maglev", "search-v1": "random", "pricing-v1": "p2c_ewma"} {
		// maglev and random are requested by their Envoy extensions first,
		// which Weft's translator takes; custom policies as Weft's own
		// ("weft_<name>", gRFC A52); other clients fall back to the next
		// policy they know.
		if got := clusters[name].LBPolicy; got != want {
			t.Errorf("%s LB policy = %q, want %q", name, got, want)
		}
	}

	for _, la := range res.Endpoints {
		got, err := xds.TranslateEndpoints(la)
		if err != nil {
			t.Fatalf("TranslateEndpoints(%s): %v", la.GetClusterName(), err)
		}
		unapplied = append(unapplied, got.UnappliedFields()...)
		for _, l := range got.Localities {
			if l.Weight < 1 {
				t.Errorf("%s locality %v has weight %d", la.GetClusterName(), l.Locality, l.Weight)
			}
		}
		if la.GetClusterName() == "orders-v2" {
			if len(got.Localities) != 2 || got.Localities[0].Weight != 3 || got.Localities[1].Priority != 1 || got.Localities[1].Locality.Zone != "b" {
				t.Errorf("orders-v2 localities = %+v", got.Localities)
			}
		}
		if la.GetClusterName() == "orders-v1" && (len(got.All) != 2 || got.All[0].Locality.Region != devplane.DefaultRegion) {
			t.Errorf("orders-v1 endpoints = %+v", got.All)
		}
	}

	// What Weft reads but does not act on: hedging, Envoy's consecutive-5xx
	// ejection, max_connections (for Envoy clients), and the policies
	// listed before the fallback it takes.
	slices.Sort(unapplied)
	unapplied = slices.Compact(unapplied)
	t.Logf("fields Weft's translator reports as unapplied: %v", unapplied)
	for _, f := range unapplied {
		if !strings.Contains(f, "hedge_policy") && !strings.Contains(f, "consecutive_5xx") && f != "circuit_breakers.thresholds.max_connections" {
			t.Errorf("unexpected unapplied field %s", f)
		}
	}
}

// TestWeftClientReceivesTheConfig serves a config and reads it back with
// Weft's own xDS client over a real ADS stream, bootstrapped from
// BootstrapJSON.
func TestWeftClientReceivesTheConfig(t *testing.T) {
	srv := devplane.New(devplane.WithLogger(discardLogger()))
	defer srv.Close()
	addr, err := srv.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Apply(mustParse(t, full)); err != nil {
		t.Fatal(err)
	}
	b, err := xds.ParseBootstrap(devplane.BootstrapJSON(addr, "weft-test"))
	if err != nil {
		t.Fatalf("Weft cannot parse BootstrapJSON: %v", err)
	}
	if b.Node.Cluster != devplane.NodeCluster || b.Node.Locality.Zone != devplane.DefaultZone {
		t.Errorf("bootstrap node = %+v", b.Node)
	}
	c, err := xds.New(b)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, w := range []struct {
		typ  xds.ResourceType
		name string
	}{{xds.ListenerType, "orders:8080"}, {xds.ListenerType, "orders"}, {xds.RouteConfigType, "orders"}, {xds.ClusterType, "orders-v2"}, {xds.EndpointsType, "orders-v2"}} {
		got := make(chan any, 1)
		stop := c.Watch(w.typ, w.name, chanWatcher(got))
		select {
		case v := <-got:
			if _, ok := v.(xds.Resource); !ok {
				t.Errorf("%v %s: got %v, want the resource", w.typ, w.name, v)
			}
		case <-ctx.Done():
			t.Errorf("%v %s: nothing received", w.typ, w.name)
		}
		stop()
	}
}

type chanWatcher chan any

func (c chanWatcher) send(v any) {
	select {
	case c <- v:
	default:
	}
}
func (c chanWatcher) OnUpdate(r xds.Resource) { c.send(r) }
func (c chanWatcher) OnError(err error)       { c.send(err) }
func (c chanWatcher) OnDoesNotExist()         { c.send("does not exist") }
