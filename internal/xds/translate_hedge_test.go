package xds

import (
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestTranslateHedgeAndRetryExtras(t *testing.T) {
	route := func(a *routev3.RouteAction) *routev3.Route {
		a.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: "c"}
		return &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: a}}
	}
	rc := &routev3.RouteConfiguration{Name: "rc", VirtualHosts: []*routev3.VirtualHost{{
		Name: "vh", Domains: []string{"*"},
		HedgePolicy: &routev3.HedgePolicy{InitialRequests: wrapperspb.UInt32(2)},
		RetryPolicy: &routev3.RetryPolicy{RetryOn: "reset"},
		Routes: []*routev3.Route{
			route(&routev3.RouteAction{
				HedgePolicy: &routev3.HedgePolicy{HedgeOnPerTryTimeout: true,
					AdditionalRequestChance: &typev3.FractionalPercent{Numerator: 25, Denominator: typev3.FractionalPercent_HUNDRED}},
				RetryPolicy: &routev3.RetryPolicy{RetryOn: "5xx", PerTryTimeout: durationpb.New(50 * time.Millisecond),
					RateLimitedRetryBackOff: &routev3.RetryPolicy_RateLimitedRetryBackOff{
						ResetHeaders: []*routev3.RetryPolicy_ResetHeader{{Name: "x-ratelimit-reset", Format: routev3.RetryPolicy_UNIX_TIMESTAMP}}},
					RetriableRequestHeaders: []*routev3.HeaderMatcher{{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "GET"}}}}},
					RetryHostPredicate:      []*routev3.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.previous_hosts"}},
				}}),
			route(&routev3.RouteAction{}),
		},
	}}}
	out, err := TranslateRouteConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	r0, r1 := out.VirtualHosts[0].Routes[0].Action, out.VirtualHosts[0].Routes[1].Action
	if h := r0.HedgePolicy; h == nil || !h.HedgeOnPerTryTimeout || h.InitialRequests != 1 || h.AdditionalRequestChance != 0.25 {
		t.Errorf("route hedge policy = %+v", h)
	}
	rp := r0.RetryPolicy
	if len(rp.ResetHeaders) != 1 || !rp.ResetHeaders[0].UnixTimestamp || rp.MaxResetInterval != 300*time.Second || !rp.PreviousHosts {
		t.Errorf("retry extras = %+v", rp)
	}
	get, post := Request{Method: "GET"}, Request{Method: "POST"}
	if !rp.RetryableRequest("h", &get) || rp.RetryableRequest("h", &post) {
		t.Error("retriable_request_headers :method GET: want GET retryable and POST not")
	}
	if h := r1.HedgePolicy; h == nil || h.InitialRequests != 2 {
		t.Errorf("the virtual host's hedge policy was not inherited: %+v", h)
	}
	if p := r1.RetryPolicy; p == nil || !slices.Equal(p.RetryOn, []string{"reset"}) {
		t.Errorf("the virtual host's retry policy was not inherited: %+v", p)
	}
	for _, f := range out.UnappliedFields() {
		if strings.Contains(f, "hedge") || strings.Contains(f, "retry") {
			t.Errorf("%s reported as unapplied", f)
		}
	}

	bad := &routev3.RouteConfiguration{Name: "bad", VirtualHosts: []*routev3.VirtualHost{{Name: "vh", Domains: []string{"*"},
		Routes: []*routev3.Route{route(&routev3.RouteAction{HedgePolicy: &routev3.HedgePolicy{InitialRequests: wrapperspb.UInt32(0)}})}}}}
	if _, err := TranslateRouteConfig(bad); err == nil || !strings.Contains(err.Error(), "hedge_policy.initial_requests") {
		t.Errorf("initial_requests 0: err = %v, want one naming the field", err)
	}
}

func TestTranslateRetryBudget(t *testing.T) {
	c := &clusterv3.Cluster{Name: "c", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}},
		CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{BudgetPercent: &typev3.Percent{Value: 10}}}}}}
	out, err := TranslateCluster(c)
	if err != nil {
		t.Fatal(err)
	}
	if cb := out.CircuitBreaker; !cb.HasRetryBudget || cb.RetryBudget.BudgetPercent != 10 || cb.RetryBudget.MinRetryConcurrency != 3 || cb.MaxRetries != 3 {
		t.Errorf("circuit breaker = %+v, want a 10%% budget with Envoy's floor of 3", cb)
	}
	if f := out.UnappliedFields(); len(f) > 0 {
		t.Errorf("unapplied: %v", f)
	}
	c.CircuitBreakers.Thresholds[0].RetryBudget.BudgetPercent = &typev3.Percent{Value: 150}
	if _, err := TranslateCluster(c); err == nil || !strings.Contains(err.Error(), "budget_percent") {
		t.Errorf("budget_percent 150: err = %v", err)
	}
}
