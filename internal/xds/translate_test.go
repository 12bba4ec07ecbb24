//lint:file-ignore SA1019 control planes still send these deprecated xDS fields, and grpc-go reads them too

package xds

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	leastrequestv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/resolver"
)

func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func decodeErr(t *testing.T, typ ResourceType, m proto.Message) *ResourceError {
	t.Helper()
	_, r, err := Decode(typ, mustAny(t, m))
	if err == nil {
		t.Fatalf("Decode() = %v, want error", r)
	}
	var re *ResourceError
	if !errors.As(err, &re) {
		t.Fatalf("Decode() error %T %v, want *ResourceError", err, err)
	}
	return re
}

func TestDecodeListener(t *testing.T) {
	name, r, err := Decode(ListenerType, mustAny(t, xdstest.Listener("orders:8080", "orders-rc")))
	if err != nil {
		t.Fatalf("Decode(RDS listener) error = %v", err)
	}
	l := r.(*Listener)
	if name != "orders:8080" || l.RouteConfigName != "orders-rc" || l.RouteConfig != nil {
		t.Errorf("got name %q rds %q inline %v, want orders:8080 orders-rc nil", name, l.RouteConfigName, l.RouteConfig)
	}
	_, r, err = Decode(ListenerType, mustAny(t, xdstest.InlineListener("l", xdstest.RouteConfig("rc", "*", "c"))))
	if err != nil {
		t.Fatalf("Decode(inline listener) error = %v", err)
	}
	if rc := r.(*Listener).RouteConfig; rc == nil || rc.VirtualHosts[0].Routes[0].Action.Cluster != "c" {
		t.Errorf("inline route config: got %+v, want one route to c", rc)
	}
}

func TestDecodeWrappedResource(t *testing.T) {
	// Resources may arrive wrapped in envoy.service.discovery.v3.Resource.
	inner := mustAny(t, xdstest.Cluster("c", ""))
	w := mustAny(t, &discoveryv3.Resource{Name: "c", Resource: inner})
	name, r, err := Decode(ClusterType, w)
	if err != nil || name != "c" || r.(*Cluster).EDSServiceName != "c" {
		t.Fatalf("Decode(wrapped) = %q, %v, %v; want c with EDS service c", name, r, err)
	}
}

func TestDecodeErrors(t *testing.T) {
	badRegexRC := xdstest.RouteConfig("rc", "*", "c")
	badRegexRC.VirtualHosts[0].Routes[0].Match.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "a("}}
	zeroWeights := xdstest.RouteConfig("rc0", "*", "c")
	zeroWeights.VirtualHosts[0].Routes[0].GetRoute().ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
		Clusters: []*routev3.WeightedCluster_ClusterWeight{{Name: "a", Weight: wrapperspb.UInt32(0)}, {Name: "b"}},
	}}
	badHeader := xdstest.RouteConfig("rch", "*", "c")
	badHeader.VirtualHosts[0].Routes[0].Match.Headers = []*routev3.HeaderMatcher{{Name: "x", HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: &matcherv3.RegexMatcher{Regex: "[z-a]"}}}}
	zeroRetries := xdstest.RouteConfig("rcr", "*", "c")
	zeroRetries.VirtualHosts[0].Routes[0].GetRoute().RetryPolicy = &routev3.RetryPolicy{NumRetries: wrapperspb.UInt32(0)}

	unknownType := xdstest.Cluster("cu", "")
	unknownType.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}
	badRing := xdstest.Cluster("cr", "")
	badRing.LbPolicy = clusterv3.Cluster_RING_HASH
	badRing.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{MinimumRingSize: wrapperspb.UInt64(10), MaximumRingSize: wrapperspb.UInt64(5)}}
	badOutlier := xdstest.Cluster("co", "")
	badOutlier.OutlierDetection = &clusterv3.OutlierDetection{MaxEjectionPercent: wrapperspb.UInt32(101)}
	notADS := xdstest.Cluster("cn", "")
	notADS.EdsClusterConfig.EdsConfig = &corev3.ConfigSource{}

	noLocality := xdstest.Endpoints("e1", "10.0.0.1:80")
	noLocality.Endpoints[0].Locality = nil
	zeroLocWeight := xdstest.Endpoints("e2", "10.0.0.1:80")
	zeroLocWeight.Endpoints[0].LoadBalancingWeight = wrapperspb.UInt32(0)
	gapPrio := xdstest.Endpoints("e3", "10.0.0.1:80")
	gapPrio.Endpoints[0].Priority = 1
	dupAddr := xdstest.Endpoints("e4", "10.0.0.1:80", "10.0.0.1:80")

	noAPI := &listenerv3.Listener{Name: "srv"}
	noRouter := xdstest.HCM("rc", nil)
	noRouter.HttpFilters = nil
	noRouterL := xdstest.APIListener("nr", noRouter)

	tests := []struct {
		name      string
		typ       ResourceType
		msg       proto.Message
		wantName  string
		wantField string
	}{
		{"bad RE2 path", RouteConfigType, badRegexRC, "rc", "virtual_hosts[0].routes[0].match.safe_regex.regex"},
		{"weights sum to 0", RouteConfigType, zeroWeights, "rc0", "virtual_hosts[0].routes[0].route.weighted_clusters"},
		{"bad header regex", RouteConfigType, badHeader, "rch", "virtual_hosts[0].routes[0].match.headers[0].safe_regex_match.regex"},
		{"num_retries 0", RouteConfigType, zeroRetries, "rcr", "virtual_hosts[0].routes[0].route.retry_policy.num_retries"},
		{"unknown cluster type", ClusterType, unknownType, "cu", "type"},
		{"ring min > max", ClusterType, badRing, "cr", "ring_hash_lb_config.minimum_ring_size"},
		{"outlier percent", ClusterType, badOutlier, "co", "outlier_detection.max_ejection_percent"},
		{"eds config not ads", ClusterType, notADS, "cn", "eds_cluster_config.eds_config"},
		{"locality missing", EndpointsType, noLocality, "e1", "endpoints[0].locality"},
		{"locality weight 0", EndpointsType, zeroLocWeight, "e2", "endpoints[0].load_balancing_weight"},
		{"priority gap", EndpointsType, gapPrio, "e3", "endpoints.priority"},
		{"duplicate address", EndpointsType, dupAddr, "e4", "endpoints[0].lb_endpoints[1].endpoint.address"},
		{"no api_listener", ListenerType, noAPI, "srv", "api_listener"},
		{"no router", ListenerType, noRouterL, "nr", "api_listener.api_listener.http_filters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			re := decodeErr(t, tt.typ, tt.msg)
			if re.Name != tt.wantName || re.Field != tt.wantField {
				t.Errorf("error %q: got resource %q field %q, want %q %q", re, re.Name, re.Field, tt.wantName, tt.wantField)
			}
			if !strings.Contains(re.Error(), tt.wantName) || !strings.Contains(re.Error(), tt.wantField) || !strings.HasPrefix(re.Error(), "xds: ") {
				t.Errorf("error text %q does not name package, resource and field", re)
			}
		})
	}
	t.Run("wrong type url", func(t *testing.T) {
		re := decodeErr(t, ListenerType, xdstest.Cluster("c", ""))
		if re.Field != "type_url" {
			t.Errorf("got field %q, want type_url", re.Field)
		}
	})
	t.Run("garbage bytes", func(t *testing.T) {
		_, _, err := Decode(ClusterType, &anypb.Any{TypeUrl: ClusterTypeURL, Value: []byte{0xff, 0xff, 0xff}})
		if err == nil {
			t.Fatal("Decode(garbage) succeeded")
		}
	})
}

func TestTranslateCluster(t *testing.T) {
	c := xdstest.Cluster("orders", "orders-eds")
	c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{
		{Priority: corev3.RoutingPriority_HIGH, MaxRequests: wrapperspb.UInt32(1)},
		{MaxRequests: wrapperspb.UInt32(77)},
	}}
	c.OutlierDetection = &clusterv3.OutlierDetection{Interval: durationpb.New(time.Second), EnforcingFailurePercentage: wrapperspb.UInt32(50)}
	c.ConnectTimeout = durationpb.New(time.Second)
	utc := &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{InstanceName: "default"},
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			CaCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{InstanceName: "default"},
			MatchSubjectAltNames:          []*matcherv3.StringMatcher{{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "spiffe://td/ns/default/sa/orders"}}},
		}},
	}}
	c.TransportSocket = &corev3.TransportSocket{Name: "tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, utc)}}
	got, err := TranslateCluster(c)
	if err != nil {
		t.Fatalf("TranslateCluster() error = %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"eds name", got.EDSServiceName, "orders-eds"},
		{"lb", got.LBPolicy, "least_request"},
		{"lb config", got.LBConfig, LeastRequestConfig{ChoiceCount: 2, ActiveRequestBias: 1}},
		{"max requests (DEFAULT priority)", got.CircuitBreaker.MaxRequests, uint32(77)},
		{"od interval", got.OutlierDetection.Interval, time.Second},
		{"od success rate on by default", got.OutlierDetection.SuccessRate != nil, true},
		{"od failure pct", got.OutlierDetection.FailurePercentage.EnforcementPercentage, uint32(50)},
		{"san", got.TLS.SANMatchers[0].Match("spiffe://td/ns/default/sa/orders"), true},
		{"san mismatch", got.TLS.SANMatchers[0].Match("spiffe://td/ns/default/sa/x"), false},
		{"root provider", got.TLS.RootProviderInstance, "default"},
		{"unapplied", strings.Join(got.Unapplied, ","), "connect_timeout"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestTranslateEndpoints(t *testing.T) {
	la := xdstest.Endpoints("svc", "10.0.0.1:80", "[::1]:81")
	la.Endpoints[0].LbEndpoints[1].HealthStatus = corev3.HealthStatus_DEGRADED
	la.Endpoints[0].LbEndpoints[0].LoadBalancingWeight = wrapperspb.UInt32(5)
	la.Endpoints = append(la.Endpoints, &endpointv3.LocalityLbEndpoints{
		Locality: &corev3.Locality{Region: "r2"}, LoadBalancingWeight: wrapperspb.UInt32(3), Priority: 1,
		LbEndpoints: xdstest.Endpoints("x", "10.0.0.2:80").Endpoints[0].LbEndpoints,
	})
	la.Policy = &endpointv3.ClusterLoadAssignment_Policy{DropOverloads: []*endpointv3.ClusterLoadAssignment_Policy_DropOverload{{Category: "c"}}}
	got, err := TranslateEndpoints(la)
	if err != nil {
		t.Fatalf("TranslateEndpoints() error = %v", err)
	}
	want := []resolver.Endpoint{
		{Addr: "10.0.0.1:80", Weight: 5, Locality: resolver.Locality{Region: "r", Zone: "z"}, LocalityWeight: 1, Health: resolver.Healthy},
		{Addr: "[::1]:81", Weight: 1, Locality: resolver.Locality{Region: "r", Zone: "z"}, LocalityWeight: 1, Health: resolver.Unhealthy},
		{Addr: "10.0.0.2:80", Weight: 1, Locality: resolver.Locality{Region: "r2"}, Priority: 1, LocalityWeight: 3, Health: resolver.Healthy},
	}
	if !slices.Equal(got.All, want) {
		t.Errorf("All:\n got %+v\nwant %+v", got.All, want)
	}
	if len(got.Localities) != 2 || got.Localities[1].Priority != 1 || len(got.Localities[0].Endpoints) != 2 {
		t.Errorf("Localities: got %+v, want 2 localities (2 endpoints, then priority 1)", got.Localities)
	}
	if !slices.Equal(got.Unapplied, []string{"policy.drop_overloads"}) {
		t.Errorf("Unapplied: got %v, want [policy.drop_overloads]", got.Unapplied)
	}
}

func FuzzDecode(f *testing.F) {
	rc := xdstest.RouteConfig("rc", "*", "c")
	rc.VirtualHosts[0].Routes[0].Match.Headers = []*routev3.HeaderMatcher{{Name: "x", HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: &matcherv3.RegexMatcher{Regex: "a+"}}}}
	for i, m := range []proto.Message{
		xdstest.Listener("l", "rc"),
		rc,
		xdstest.Cluster("c", ""),
		xdstest.Endpoints("e", "10.0.0.1:80", "[::1]:90"),
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(i), b)
	}
	f.Fuzz(func(t *testing.T, typ uint8, data []byte) {
		rt := ResourceType(typ % uint8(numTypes))
		name, r, err := Decode(rt, &anypb.Any{TypeUrl: rt.TypeURL(), Value: data})
		if (r == nil) == (err == nil) {
			t.Fatalf("Decode(%v) = %v, %v: want exactly one of resource and error", rt, r, err)
		}
		if err != nil && strings.Contains(err.Error(), "internal error translating") {
			t.Fatalf("translation panicked (recovered): %v", err)
		}
		if r != nil && r.ResourceName() != name {
			t.Fatalf("Decode name %q, resource name %q", name, r.ResourceName())
		}
	})
}

func TestUnappliedFields(t *testing.T) {
	rc := xdstest.RouteConfig("rc", "*", "c")
	rc.VirtualHosts[0].IncludeRequestAttemptCount = true
	rc.VirtualHosts[0].Routes[0].GetRoute().IdleTimeout = durationpb.New(time.Second)
	hcm := xdstest.HCM("", rc)
	hcm.XffNumTrustedHops = 1
	hcm.HttpFilters = append([]*hcmv3.HttpFilter{{Name: "fault", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &emptypb.Empty{})}}}, hcm.HttpFilters...)
	l := xdstest.APIListener("l", hcm)
	l.StatPrefix = "x"
	_, r, err := Decode(ListenerType, mustAny(t, l))
	if err != nil {
		t.Fatalf("Decode() error = %v", err)
	}
	const p = "api_listener.api_listener."
	want := []string{
		p + "http_filters[fault]",
		p + "route_config.virtual_hosts.include_request_attempt_count",
		p + "route_config.virtual_hosts.routes.route.idle_timeout",
		p + "xff_num_trusted_hops",
		"stat_prefix",
	}
	if got := r.UnappliedFields(); !slices.Equal(got, want) {
		t.Errorf("UnappliedFields:\n got %q\nwant %q", got, want)
	}
	// The same resource through the exported translator, without its bytes.
	tl, err := TranslateListener(l)
	if err != nil || !slices.Equal(tl.Unapplied, want) {
		t.Errorf("TranslateListener: got %q, %v; want %q", tl.Unapplied, err, want)
	}
}

// TestTranslateActiveRequestBias: least_request's active_request_bias, in
// the legacy cluster field and in the typed policy, reaches the balancer's
// settings, and a negative one is NACKed by field.
func TestTranslateActiveRequestBias(t *testing.T) {
	legacy := func(bias float64) *clusterv3.Cluster {
		c := xdstest.Cluster("orders", "")
		c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
		c.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{
			ChoiceCount:       wrapperspb.UInt32(3),
			ActiveRequestBias: &corev3.RuntimeDouble{DefaultValue: bias, RuntimeKey: "upstream.lb.bias"}}}
		return c
	}
	typed := func(bias float64) *clusterv3.Cluster {
		c := xdstest.Cluster("orders", "")
		c.LoadBalancingPolicy = &clusterv3.LoadBalancingPolicy{Policies: []*clusterv3.LoadBalancingPolicy_Policy{{
			TypedExtensionConfig: &corev3.TypedExtensionConfig{Name: "lr", TypedConfig: mustAny(t, &leastrequestv3.LeastRequest{
				ActiveRequestBias: &corev3.RuntimeDouble{DefaultValue: bias}})}}}}
		return c
	}
	for name, mk := range map[string]func(float64) *clusterv3.Cluster{"least_request_lb_config": legacy, "load_balancing_policy": typed} {
		got, err := TranslateCluster(mk(0.5))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if cfg, ok := got.LBConfig.(LeastRequestConfig); !ok || cfg.ActiveRequestBias != 0.5 {
			t.Errorf("%s: config %+v, want active request bias 0.5", name, got.LBConfig)
		}
		for _, f := range got.UnappliedFields() {
			if strings.Contains(f, "bias") {
				t.Errorf("%s: %s reported unapplied", name, f)
			}
		}
		if _, err := TranslateCluster(mk(-1)); err == nil || !strings.Contains(err.Error(), "active_request_bias") {
			t.Errorf("%s: bias -1: err = %v, want one naming active_request_bias", name, err)
		}
	}
}

// A route's timeout and max_stream_duration both bound the request, as in
// Envoy: the shorter one set wins, and a zero disables only its own bound.
func TestTranslateRouteTimeout(t *testing.T) {
	const none = -1 // field unset
	tests := []struct {
		name         string
		timeout, msd time.Duration
		want         time.Duration
		wantHas      bool
	}{
		{"neither", none, none, 0, false},
		{"timeout only", 2 * time.Second, none, 2 * time.Second, true},
		{"max_stream_duration only", none, 300 * time.Millisecond, 300 * time.Millisecond, true},
		{"both equal (istiod)", 300 * time.Millisecond, 300 * time.Millisecond, 300 * time.Millisecond, true},
		{"max_stream_duration shorter", 5 * time.Second, 300 * time.Millisecond, 300 * time.Millisecond, true},
		{"timeout shorter", 300 * time.Millisecond, 5 * time.Second, 300 * time.Millisecond, true},
		{"timeout disabled", 0, 300 * time.Millisecond, 300 * time.Millisecond, true},
		{"max_stream_duration disabled", 2 * time.Second, 0, 2 * time.Second, true},
		{"both disabled", 0, 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := xdstest.RouteConfig("r", "*", "c")
			a := rc.VirtualHosts[0].Routes[0].GetRoute()
			if tt.timeout != none {
				a.Timeout = durationpb.New(tt.timeout)
			}
			if tt.msd != none {
				a.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(tt.msd)}
			}
			out, err := TranslateRouteConfig(rc)
			if err != nil {
				t.Fatal(err)
			}
			got := out.VirtualHosts[0].Routes[0].Action
			if got.Timeout != tt.want || got.HasTimeout != tt.wantHas || got.HasMaxStreamDuration != (tt.msd != none) {
				t.Errorf("Timeout, HasTimeout, HasMaxStreamDuration = %v, %v, %v; want %v, %v, %v",
					got.Timeout, got.HasTimeout, got.HasMaxStreamDuration, tt.want, tt.wantHas, tt.msd != none)
			}
		})
	}
}

// Envoy's regex_rewrite substitution is RE2's rewrite string (\1 for a
// group); it reaches Go's regexp converted, and what RE2 refuses is NACKed
// by field.
func TestRegexRewriteSubstitution(t *testing.T) {
	withRewrite := func(pattern, sub string) *routev3.RouteConfiguration {
		rc := xdstest.RouteConfig("rc", "*", "c")
		rc.VirtualHosts[0].Routes[0].GetRoute().RegexRewrite = &matcherv3.RegexMatchAndSubstitute{
			Pattern: &matcherv3.RegexMatcher{Regex: pattern}, Substitution: sub}
		return rc
	}
	for _, tt := range []struct {
		sub, path, want string
	}{
		{`/\2/\1`, "/regex/v1/items", "/items/v1"},
		{`/\0`, "/regex/v1/items", "//regex/v1/items"},
		{`/$1\\x`, "/regex/v1/items", `/$1\x`},
		{"/plain", "/regex/v1/items", "/plain"},
	} {
		_, r, err := Decode(RouteConfigType, mustAny(t, withRewrite(`^/regex/(v[0-9]+)/(.*)$`, tt.sub)))
		if err != nil {
			t.Fatalf("substitution %q: %v", tt.sub, err)
		}
		rw := r.(*RouteConfig).VirtualHosts[0].Routes[0].Action.RegexRewrite
		if got := rw.Pattern.ReplaceAllString(tt.path, rw.Substitution); got != tt.want {
			t.Errorf("substitution %q on %s = %s, want %s", tt.sub, tt.path, got, tt.want)
		}
	}
	for _, sub := range []string{`/\3`, `/\x`, `/end\`} {
		re := decodeErr(t, RouteConfigType, withRewrite(`^/regex/(v[0-9]+)/(.*)$`, sub))
		if !strings.HasSuffix(re.Field, "regex_rewrite.substitution") {
			t.Errorf("substitution %q: error field %q, want ...regex_rewrite.substitution: %v", sub, re.Field, re)
		}
	}
}
