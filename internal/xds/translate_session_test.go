//lint:file-ignore SA1019 control planes still send these deprecated xDS fields, and grpc-go reads them too

package xds

import (
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	statefulsessionv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/stateful_session/v3"
	commonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/common/v3"
	leastrequestv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"
	roundrobinv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	wrrlocalityv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/wrr_locality/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/xds/xdstest"
)

func sessionListener(ss *statefulsessionv3.StatefulSession) *listenerv3.Listener {
	return xdstest.APIListener("orders", xdstest.WithStatefulSession(xdstest.HCM("orders-rc", nil), ss))
}

func TestDecodeStatefulSession(t *testing.T) {
	_, r, err := Decode(ListenerType, mustAny(t, sessionListener(xdstest.StatefulSession("sticky", "", 2*time.Minute))))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	got := r.(*Listener).StatefulSession
	if got == nil || got.Name != "sticky" || got.Path != "/" || got.TTL != 2*time.Minute {
		t.Fatalf("StatefulSession = %+v, want sticky, path /, ttl 2m", got)
	}
	if u := r.UnappliedFields(); slices.ContainsFunc(u, func(f string) bool { return strings.Contains(f, "http_filters") }) {
		t.Errorf("the stateful session filter is reported unapplied: %v", u)
	}

	// A filter without session state does nothing.
	_, r, err = Decode(ListenerType, mustAny(t, sessionListener(&statefulsessionv3.StatefulSession{})))
	if err != nil || r.(*Listener).StatefulSession != nil {
		t.Fatalf("empty StatefulSession: %v, %v; want no session and no error", r, err)
	}

	const hf = "api_listener.api_listener.http_filters[0].typed_config."
	other := xdstest.StatefulSession("x", "", 0)
	other.SessionState.TypedConfig = mustAny(t, &routev3.Route{})
	for _, tc := range []struct {
		name  string
		ss    *statefulsessionv3.StatefulSession
		field string
	}{
		{"empty cookie name", xdstest.StatefulSession("", "", 0), hf + "session_state.typed_config.cookie.name"},
		{"bad cookie name", xdstest.StatefulSession("a b", "", 0), hf + "session_state.typed_config.cookie.name"},
		{"negative ttl", xdstest.StatefulSession("x", "", -time.Second), hf + "session_state.typed_config.cookie.ttl"},
		{"relative path", xdstest.StatefulSession("x", "api", 0), hf + "session_state.typed_config.cookie.path"},
		{"not a cookie session state", other, hf + "session_state.typed_config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			re := decodeErr(t, ListenerType, sessionListener(tc.ss))
			if re.Field != tc.field || re.Name != "orders" || re.Type != ListenerType {
				t.Errorf("NACK names %s %q field %q, want LDS \"orders\" field %q (%v)", re.Type, re.Name, re.Field, tc.field, re)
			}
		})
	}
}

func TestDecodeStatefulSessionPerRoute(t *testing.T) {
	rc := xdstest.RouteConfig("orders-rc", "orders", "orders")
	vh := rc.VirtualHosts[0]
	vh.TypedPerFilterConfig = map[string]*anypb.Any{
		"envoy.filters.http.stateful_session": mustAny(t, &statefulsessionv3.StatefulSessionPerRoute{
			Override: &statefulsessionv3.StatefulSessionPerRoute_StatefulSession{StatefulSession: xdstest.StatefulSession("vh", "", 0)}}),
		"envoy.filters.http.fault": mustAny(t, &routev3.Route{}),
	}
	off := proto.Clone(vh.Routes[0]).(*routev3.Route)
	off.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.stateful_session": mustAny(t, &routev3.FilterConfig{
		Config: mustAny(t, &statefulsessionv3.StatefulSessionPerRoute{Override: &statefulsessionv3.StatefulSessionPerRoute_Disabled{Disabled: true}})})}
	vh.Routes = append(vh.Routes, off)
	_, r, err := Decode(RouteConfigType, mustAny(t, rc))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	routes := r.(*RouteConfig).VirtualHosts[0].Routes
	if s := routes[0].Session; s == nil || s.Disabled || s.Cookie == nil || s.Cookie.Name != "vh" {
		t.Errorf("route 0 session %+v, want the virtual host's cookie \"vh\"", s)
	}
	if s := routes[1].Session; s == nil || !s.Disabled {
		t.Errorf("route 1 session %+v, want disabled", s)
	}
	if u := r.UnappliedFields(); !slices.Contains(u, "virtual_hosts.typed_per_filter_config[envoy.filters.http.fault]") {
		t.Errorf("unapplied %v: want the fault filter's per-route config named", u)
	}

	bad := xdstest.RouteConfig("orders-rc", "orders", "orders")
	bad.VirtualHosts[0].Routes[0].TypedPerFilterConfig = map[string]*anypb.Any{"ss": mustAny(t, &statefulsessionv3.StatefulSessionPerRoute{
		Override: &statefulsessionv3.StatefulSessionPerRoute_StatefulSession{StatefulSession: xdstest.StatefulSession("", "", 0)}})}
	re := decodeErr(t, RouteConfigType, bad)
	if want := "virtual_hosts[0].routes[0].typed_per_filter_config[ss].stateful_session.session_state.typed_config.cookie.name"; re.Field != want {
		t.Errorf("NACK field %q, want %q", re.Field, want)
	}
}

func slowStartRR(window time.Duration, aggression float64, minPct float64) *commonv3.SlowStartConfig {
	ss := &commonv3.SlowStartConfig{SlowStartWindow: durationpb.New(window)}
	if aggression != 0 {
		ss.Aggression = &corev3.RuntimeDouble{DefaultValue: aggression, RuntimeKey: "k"}
	}
	if minPct >= 0 {
		ss.MinWeightPercent = &typev3.Percent{Value: minPct}
	}
	return ss
}

func TestDecodeZoneAwareAndSlowStart(t *testing.T) {
	zone := &commonv3.LocalityLbConfig{LocalityConfigSpecifier: &commonv3.LocalityLbConfig_ZoneAwareLbConfig_{
		ZoneAwareLbConfig: &commonv3.LocalityLbConfig_ZoneAwareLbConfig{RoutingEnabled: &typev3.Percent{Value: 80}, MinClusterSize: wrapperspb.UInt64(3), FailTrafficOnPanic: true}}}
	typed := func(m *anypb.Any) *clusterv3.Cluster {
		c := xdstest.Cluster("orders", "")
		c.LoadBalancingPolicy = &clusterv3.LoadBalancingPolicy{Policies: []*clusterv3.LoadBalancingPolicy_Policy{{
			TypedExtensionConfig: &corev3.TypedExtensionConfig{Name: "p", TypedConfig: m}}}}
		return c
	}
	legacy := xdstest.Cluster("orders", "")
	legacy.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{LocalityConfigSpecifier: &clusterv3.Cluster_CommonLbConfig_ZoneAwareLbConfig_{
		ZoneAwareLbConfig: &clusterv3.Cluster_CommonLbConfig_ZoneAwareLbConfig{MinClusterSize: wrapperspb.UInt64(4)}}}
	legacy.LbConfig = &clusterv3.Cluster_RoundRobinLbConfig_{RoundRobinLbConfig: &clusterv3.Cluster_RoundRobinLbConfig{
		SlowStartConfig: &clusterv3.Cluster_SlowStartConfig{SlowStartWindow: durationpb.New(time.Minute)}}}
	wantZone := &ZoneAwareConfig{RoutingEnabledPercent: 80, MinClusterSize: 3, FailTrafficOnPanic: true}
	for _, tc := range []struct {
		name      string
		c         *clusterv3.Cluster
		zone      *ZoneAwareConfig
		slowStart *SlowStartConfig
		policy    string
	}{
		{"typed round_robin", typed(mustAny(t, &roundrobinv3.RoundRobin{SlowStartConfig: slowStartRR(30*time.Second, 2, 5), LocalityLbConfig: zone})),
			wantZone, &SlowStartConfig{Window: 30 * time.Second, Aggression: 2, MinWeightPercent: 5}, "round_robin"},
		{"typed least_request", typed(mustAny(t, &leastrequestv3.LeastRequest{SlowStartConfig: slowStartRR(time.Minute, 0, -1), LocalityLbConfig: zone})),
			wantZone, &SlowStartConfig{Window: time.Minute, Aggression: 1, MinWeightPercent: 10}, "least_request"},
		{"wrr_locality round_robin", typed(mustAny(t, &wrrlocalityv3.WrrLocality{EndpointPickingPolicy: &clusterv3.LoadBalancingPolicy{
			Policies: []*clusterv3.LoadBalancingPolicy_Policy{{TypedExtensionConfig: &corev3.TypedExtensionConfig{Name: "rr",
				TypedConfig: mustAny(t, &roundrobinv3.RoundRobin{SlowStartConfig: slowStartRR(time.Minute, 0, -1)})}}}}})),
			nil, &SlowStartConfig{Window: time.Minute, Aggression: 1, MinWeightPercent: 10}, "round_robin"},
		{"legacy", legacy, &ZoneAwareConfig{RoutingEnabledPercent: 100, MinClusterSize: 4},
			&SlowStartConfig{Window: time.Minute, Aggression: 1, MinWeightPercent: 10}, "round_robin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, r, err := Decode(ClusterType, mustAny(t, tc.c))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			c := r.(*Cluster)
			if c.LBPolicy != tc.policy {
				t.Errorf("policy %q, want %q", c.LBPolicy, tc.policy)
			}
			if (c.ZoneAware == nil) != (tc.zone == nil) || c.ZoneAware != nil && *c.ZoneAware != *tc.zone {
				t.Errorf("ZoneAware = %+v, want %+v", c.ZoneAware, tc.zone)
			}
			if (c.SlowStart == nil) != (tc.slowStart == nil) || c.SlowStart != nil && *c.SlowStart != *tc.slowStart {
				t.Errorf("SlowStart = %+v, want %+v", c.SlowStart, tc.slowStart)
			}
			for _, f := range c.UnappliedFields() {
				if strings.Contains(f, "slow_start") || strings.Contains(f, "zone_aware") {
					t.Errorf("applied field reported unapplied: %s", f)
				}
			}
		})
	}

	badZone := proto.Clone(legacy).(*clusterv3.Cluster)
	badZone.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{LocalityConfigSpecifier: &clusterv3.Cluster_CommonLbConfig_ZoneAwareLbConfig_{
		ZoneAwareLbConfig: &clusterv3.Cluster_CommonLbConfig_ZoneAwareLbConfig{RoutingEnabled: &typev3.Percent{Value: 150}}}}
	badWindow := proto.Clone(legacy).(*clusterv3.Cluster)
	badWindow.CommonLbConfig = nil
	badWindow.LbConfig = &clusterv3.Cluster_RoundRobinLbConfig_{RoundRobinLbConfig: &clusterv3.Cluster_RoundRobinLbConfig{
		SlowStartConfig: &clusterv3.Cluster_SlowStartConfig{SlowStartWindow: &durationpb.Duration{Seconds: -1}}}}
	for _, tc := range []struct {
		name  string
		c     *clusterv3.Cluster
		field string
	}{
		{"routing_enabled above 100", badZone, "common_lb_config.zone_aware_lb_config.routing_enabled.value"},
		{"negative window", badWindow, "round_robin_lb_config.slow_start_config.slow_start_window"},
		{"aggression 0", typed(mustAny(t, &roundrobinv3.RoundRobin{SlowStartConfig: &commonv3.SlowStartConfig{
			SlowStartWindow: durationpb.New(time.Minute), Aggression: &corev3.RuntimeDouble{DefaultValue: -1}}})),
			"load_balancing_policy.policies[p].slow_start_config.aggression.default_value"},
		{"min weight above 100", typed(mustAny(t, &leastrequestv3.LeastRequest{SlowStartConfig: slowStartRR(time.Minute, 0, 101)})),
			"load_balancing_policy.policies[p].slow_start_config.min_weight_percent.value"},
		{"typed routing_enabled", typed(mustAny(t, &roundrobinv3.RoundRobin{LocalityLbConfig: &commonv3.LocalityLbConfig{
			LocalityConfigSpecifier: &commonv3.LocalityLbConfig_ZoneAwareLbConfig_{ZoneAwareLbConfig: &commonv3.LocalityLbConfig_ZoneAwareLbConfig{
				RoutingEnabled: &typev3.Percent{Value: -3}}}}})),
			"load_balancing_policy.policies[p].locality_lb_config.zone_aware_lb_config.routing_enabled.value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			re := decodeErr(t, ClusterType, tc.c)
			if re.Field != tc.field || re.Name != "orders" {
				t.Errorf("NACK names %q field %q, want \"orders\" field %q (%v)", re.Name, re.Field, tc.field, re)
			}
		})
	}
}
