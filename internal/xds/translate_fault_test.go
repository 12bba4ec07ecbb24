package xds

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	commonfaultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/xds/xdstest"
)

const faultName = "envoy.filters.http.fault"

func pct(n uint32, d typev3.FractionalPercent_DenominatorType) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: n, Denominator: d}
}

func fixedDelay(d time.Duration, p *typev3.FractionalPercent) *commonfaultv3.FaultDelay {
	return &commonfaultv3.FaultDelay{FaultDelaySecifier: &commonfaultv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(d)}, Percentage: p}
}

func httpAbort(st uint32, p *typev3.FractionalPercent) *faultv3.FaultAbort {
	return &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: st}, Percentage: p}
}

func faultListener(f *faultv3.HTTPFault) *anypb.Any {
	a, err := anypb.New(xdstest.APIListener("orders", xdstest.WithFault(xdstest.HCM("orders-rc", nil), faultName, f)))
	if err != nil {
		panic(err)
	}
	return a
}

// TestDecodeFaultFilter: the listener's HTTPFault becomes its default
// fault config; the fields Weft applies are not reported, the runtime keys
// and response_rate_limit are.
func TestDecodeFaultFilter(t *testing.T) {
	hf := &faultv3.HTTPFault{
		Delay:           fixedDelay(200*time.Millisecond, pct(25, typev3.FractionalPercent_HUNDRED)),
		Abort:           &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_GrpcStatus{GrpcStatus: 14}, Percentage: pct(5000, typev3.FractionalPercent_TEN_THOUSAND)},
		MaxActiveFaults: wrapperspb.UInt32(3),
		UpstreamCluster: "orders-v2",
		Headers: []*routev3.HeaderMatcher{{Name: "x-chaos", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
			StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "on"}}}}},
		DownstreamNodes:     []string{"node-a"},
		AbortPercentRuntime: "fault.abort",
		ResponseRateLimit: &commonfaultv3.FaultRateLimit{LimitType: &commonfaultv3.FaultRateLimit_FixedLimit_{
			FixedLimit: &commonfaultv3.FaultRateLimit_FixedLimit{LimitKbps: 10}}},
	}
	_, r, err := Decode(ListenerType, faultListener(hf))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	l := r.(*Listener)
	if len(l.Faults) != 1 || l.Faults[0].Name != faultName {
		t.Fatalf("Faults = %+v, want one named %s", l.Faults, faultName)
	}
	f := l.Faults[0].Config
	for _, c := range []struct {
		what      string
		got, want any
	}{
		{"delay", *f.Delay, FaultDelay{Fixed: 200 * time.Millisecond, Percent: FaultPercent{25, 100}}},
		{"abort", *f.Abort, FaultAbort{Kind: AbortGRPCStatus, GRPCStatus: 14, Percent: FaultPercent{5000, 10_000}}},
		{"max_active_faults", [2]any{f.MaxActiveFaults, f.HasMaxActiveFaults}, [2]any{uint32(3), true}},
		{"upstream_cluster", f.UpstreamCluster, "orders-v2"},
		{"headers", len(f.Headers), 1},
		{"downstream_nodes", f.DownstreamNodes, []string{"node-a"}},
		{"disabled", f.Disabled, false},
	} {
		if !equalAny(c.got, c.want) {
			t.Errorf("%s = %+v, want %+v", c.what, c.got, c.want)
		}
	}
	const p = "api_listener.api_listener.http_filters[" + faultName + "]."
	want := []string{p + "abort_percent_runtime", p + "response_rate_limit.fixed_limit.limit_kbps"}
	u := r.UnappliedFields()
	for _, w := range want {
		if !slices.Contains(u, w) {
			t.Errorf("unapplied %v lacks %s", u, w)
		}
	}
	for _, f := range u {
		if strings.HasPrefix(f, p) && !slices.Contains(want, f) {
			t.Errorf("%s is applied but reported unapplied", f)
		}
		if f == "api_listener.api_listener.http_filters["+faultName+"]" {
			t.Errorf("the fault filter is reported unapplied as a whole: %v", u)
		}
	}
}

func equalAny(a, b any) bool {
	switch av := a.(type) {
	case []string:
		return slices.Equal(av, b.([]string))
	}
	return a == b
}

// TestDecodeFaultOverrides: per-route HTTPFault overrides, bare or in a
// FilterConfig, on the virtual host, the route and a weighted cluster.
// Envoy's and grpc-go's rule is that the most specific one wins; the
// route's own beats its virtual host's here, and the weighted cluster's is
// kept beside for the request that picks that cluster.
func TestDecodeFaultOverrides(t *testing.T) {
	vhFault := &faultv3.HTTPFault{Abort: httpAbort(503, pct(100, typev3.FractionalPercent_HUNDRED))}
	routeFault := &faultv3.HTTPFault{Delay: fixedDelay(time.Second, pct(100, typev3.FractionalPercent_HUNDRED))}
	wcFault := &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HeaderAbort_{}, Percentage: pct(1, typev3.FractionalPercent_MILLION)}}
	disabled := mustAny(t, &routev3.FilterConfig{Disabled: true})
	wrapped := mustAny(t, &routev3.FilterConfig{Config: mustAny(t, routeFault)})
	other := mustAny(t, &routev3.Route{}) // some other filter's override
	rc := &routev3.RouteConfiguration{Name: "orders-rc", VirtualHosts: []*routev3.VirtualHost{{
		Name: "orders", Domains: []string{"orders"},
		TypedPerFilterConfig: map[string]*anypb.Any{faultName: mustAny(t, vhFault), "second": mustAny(t, vhFault)},
		Routes: []*routev3.Route{
			{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/a"}},
				TypedPerFilterConfig: map[string]*anypb.Any{faultName: wrapped, "second": disabled},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{
					WeightedClusters: &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{
						{Name: "zero", Weight: wrapperspb.UInt32(0)},
						{Name: "v1", Weight: wrapperspb.UInt32(1)},
						{Name: "v2", Weight: wrapperspb.UInt32(1), TypedPerFilterConfig: map[string]*anypb.Any{faultName: mustAny(t, wcFault), "x": other}},
					}}}}}},
			{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"}}}},
		},
	}}}
	_, r, err := Decode(RouteConfigType, mustAny(t, rc))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	routes := r.(*RouteConfig).VirtualHosts[0].Routes
	a, b := routes[0], routes[1]
	if f := a.FaultOverrides[faultName]; f == nil || f.Delay == nil || f.Delay.Fixed != time.Second || f.Abort != nil {
		t.Errorf("route /a's override = %+v, want the route's own delay, not the virtual host's abort", f)
	}
	if f := a.FaultOverrides["second"]; f == nil || !f.Disabled {
		t.Errorf("route /a's override of filter second = %+v, want disabled", f)
	}
	if f := b.FaultOverrides[faultName]; f == nil || f.Abort == nil || f.Abort.HTTPStatus != 503 {
		t.Errorf("route /'s override = %+v, want the virtual host's abort 503", f)
	}
	wcs := a.Action.WeightedClusters
	if len(wcs) != 2 || wcs[0].FaultOverrides != nil {
		t.Fatalf("weighted clusters %+v: want v1 without overrides and v2 with its own", wcs)
	}
	if f := wcs[1].FaultOverrides[faultName]; f == nil || f.Abort == nil || f.Abort.Kind != AbortFromHeader || f.Abort.Percent != (FaultPercent{1, 1_000_000}) {
		t.Errorf("v2's override = %+v, want a header abort at 1/1000000", f)
	}
	u := r.UnappliedFields()
	for _, want := range []string{
		"virtual_hosts.routes.route.weighted_clusters.clusters.typed_per_filter_config[x]",
		"virtual_hosts.routes.typed_per_filter_config[second]", // disabled: which filter is unknown here
	} {
		if !slices.Contains(u, want) {
			t.Errorf("unapplied %v lacks %s", u, want)
		}
	}
	for _, f := range u {
		if strings.Contains(f, "["+faultName+"]") {
			t.Errorf("a fault override is reported unapplied: %s", f)
		}
	}
}

// TestFaultNACK: a fault config Envoy's validation refuses is NACKed,
// naming the resource and the field, wherever it sits: the listener's
// filter, a virtual host's, a route's or a weighted cluster's override.
// Envoy's fault.proto: abort's error_type and delay's specifier are
// required oneofs, http_status is in [200, 600), fixed_delay is above 0,
// and a FractionalPercent's denominator is one of its enum's values.
func TestFaultNACK(t *testing.T) {
	bad := []struct {
		name  string
		f     *faultv3.HTTPFault
		field string // under the config
		msg   string
	}{
		{"abort without a status", &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{Percentage: pct(100, 0)}}, "abort", "none of http_status"},
		{"http_status 600", &faultv3.HTTPFault{Abort: httpAbort(600, nil)}, "abort.http_status", "[200, 600)"},
		{"http_status 199", &faultv3.HTTPFault{Abort: httpAbort(199, nil)}, "abort.http_status", "[200, 600)"},
		{"abort percentage denominator", &faultv3.HTTPFault{Abort: httpAbort(503, pct(1, 7))}, "abort.percentage.denominator", "unknown"},
		{"delay without a duration", &faultv3.HTTPFault{Delay: &commonfaultv3.FaultDelay{Percentage: pct(1, 0)}}, "delay", "neither fixed_delay nor header_delay"},
		{"zero fixed_delay", &faultv3.HTTPFault{Delay: fixedDelay(0, nil)}, "delay.fixed_delay", "above 0"},
		{"negative fixed_delay", &faultv3.HTTPFault{Delay: &commonfaultv3.FaultDelay{FaultDelaySecifier: &commonfaultv3.FaultDelay_FixedDelay{
			FixedDelay: &durationpb.Duration{Seconds: -1}}}}, "delay.fixed_delay", "negative"},
		{"invalid fixed_delay", &faultv3.HTTPFault{Delay: &commonfaultv3.FaultDelay{FaultDelaySecifier: &commonfaultv3.FaultDelay_FixedDelay{
			FixedDelay: &durationpb.Duration{Nanos: 2_000_000_000}}}}, "delay.fixed_delay", "nanos"},
		{"delay percentage denominator", &faultv3.HTTPFault{Delay: fixedDelay(time.Second, pct(1, 9))}, "delay.percentage.denominator", "unknown"},
		{"header matcher without name", &faultv3.HTTPFault{Abort: httpAbort(503, nil), Headers: []*routev3.HeaderMatcher{{}}}, "headers[0].name", "empty"},
		{"header matcher bad regex", &faultv3.HTTPFault{Abort: httpAbort(503, nil), Headers: []*routev3.HeaderMatcher{{Name: "x",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "("}}}}}}}, "headers[0].string_match.safe_regex.regex", ""},
	}
	route := func(tp map[string]*anypb.Any, wc map[string]*anypb.Any, vh map[string]*anypb.Any) *routev3.RouteConfiguration {
		return &routev3.RouteConfiguration{Name: "orders-rc", VirtualHosts: []*routev3.VirtualHost{{
			Name: "orders", Domains: []string{"orders"}, TypedPerFilterConfig: vh,
			Routes: []*routev3.Route{{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				TypedPerFilterConfig: tp,
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{
					WeightedClusters: &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{
						{Name: "v1", Weight: wrapperspb.UInt32(1), TypedPerFilterConfig: wc}}}}}}}},
		}}}
	}
	for _, b := range bad {
		a := mustAny(t, b.f)
		wrapped := mustAny(t, &routev3.FilterConfig{Config: a})
		places := []struct {
			where string
			typ   ResourceType
			res   *anypb.Any
			name  string
			field string
		}{
			{"listener", ListenerType, faultListener(b.f), "orders", "api_listener.api_listener.http_filters[0].typed_config." + b.field},
			{"virtual host", RouteConfigType, mustAny(t, route(nil, nil, map[string]*anypb.Any{faultName: a})), "orders-rc",
				"virtual_hosts[0].typed_per_filter_config[" + faultName + "]." + b.field},
			{"route", RouteConfigType, mustAny(t, route(map[string]*anypb.Any{faultName: a}, nil, nil)), "orders-rc",
				"virtual_hosts[0].routes[0].typed_per_filter_config[" + faultName + "]." + b.field},
			{"route, in a FilterConfig", RouteConfigType, mustAny(t, route(map[string]*anypb.Any{faultName: wrapped}, nil, nil)), "orders-rc",
				"virtual_hosts[0].routes[0].typed_per_filter_config[" + faultName + "].config." + b.field},
			{"weighted cluster", RouteConfigType, mustAny(t, route(nil, map[string]*anypb.Any{faultName: a}, nil)), "orders-rc",
				"virtual_hosts[0].routes[0].route.weighted_clusters.clusters[0].typed_per_filter_config[" + faultName + "]." + b.field},
		}
		for _, p := range places {
			t.Run(b.name+"/"+p.where, func(t *testing.T) {
				_, r, err := Decode(p.typ, p.res)
				var re *ResourceError
				if !errors.As(err, &re) {
					t.Fatalf("Decode = %v, %v; want a ResourceError", r, err)
				}
				if re.Name != p.name || re.Field != p.field || !strings.Contains(re.Err.Error(), b.msg) {
					t.Errorf("error %q: name %q field %q; want name %q field %q and a message with %q", err, re.Name, re.Field, p.name, p.field, b.msg)
				}
			})
		}
	}

	// What Envoy accepts is accepted: a numerator above its denominator
	// (every request), no percentage at all (no request), a gRPC status
	// above 16 (UNKNOWN for gRPC), and max_active_faults 0 (no fault).
	for _, f := range []*faultv3.HTTPFault{
		{Abort: httpAbort(503, pct(200, typev3.FractionalPercent_HUNDRED))},
		{Abort: httpAbort(200, nil), Delay: &commonfaultv3.FaultDelay{FaultDelaySecifier: &commonfaultv3.FaultDelay_HeaderDelay_{}}},
		{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_GrpcStatus{GrpcStatus: 99}}, MaxActiveFaults: wrapperspb.UInt32(0)},
		{},
	} {
		if _, _, err := Decode(ListenerType, faultListener(f)); err != nil {
			t.Errorf("Decode(%v) = %v, want it accepted", f, err)
		}
	}
}
