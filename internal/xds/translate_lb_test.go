package xds

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	maglevv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/maglev/v3"
	randomv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/random/v3"
	wrrlocalityv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/wrr_locality/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// TestTranslateMaglevRandom: MAGLEV and RANDOM, as lb_policy (with
// maglev_lb_config) and as load_balancing_policy extensions. Envoy:
// "table_size: The table size for Maglev hashing. Maglev aims for
// 'minimal disruption' rather than an absolute guarantee. ... The
// default is 65537 and the max is 5000011. It must be a prime number
// limited to 5000011." A size that is not such a prime NACKs the cluster,
// naming the field.
func TestTranslateMaglevRandom(t *testing.T) {
	typed := func(m proto.Message) func(*clusterv3.Cluster) {
		return func(c *clusterv3.Cluster) { c.LoadBalancingPolicy = xdstest.LBPolicy(m) }
	}
	legacyMaglev := func(size uint64) func(*clusterv3.Cluster) {
		return func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_MAGLEV
			if size != 0 {
				c.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(size)}}
			}
		}
	}
	tests := []struct {
		name      string
		set       func(*clusterv3.Cluster)
		policy    string
		config    any
		wantField string // set: NACKed, naming this field
	}{
		{name: "lb_policy MAGLEV, default size", set: legacyMaglev(0), policy: "maglev", config: MaglevConfig{TableSize: 65537}},
		{name: "lb_policy MAGLEV, size 251", set: legacyMaglev(251), policy: "maglev", config: MaglevConfig{TableSize: 251}},
		{name: "lb_policy MAGLEV, largest size", set: legacyMaglev(5000011), policy: "maglev", config: MaglevConfig{TableSize: 5000011}},
		{name: "lb_policy MAGLEV, size not prime", set: legacyMaglev(1000), wantField: "maglev_lb_config.table_size"},
		{name: "lb_policy MAGLEV, size too large", set: legacyMaglev(5000087), wantField: "maglev_lb_config.table_size"},
		{name: "lb_policy RANDOM", set: func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_RANDOM }, policy: "random"},
		{name: "typed Maglev", set: typed(&maglevv3.Maglev{TableSize: wrapperspb.UInt64(65521)}), policy: "maglev", config: MaglevConfig{TableSize: 65521}},
		{name: "typed Maglev, default size", set: typed(&maglevv3.Maglev{}), policy: "maglev", config: MaglevConfig{TableSize: 65537}},
		{name: "typed Maglev, size not prime", set: typed(&maglevv3.Maglev{TableSize: wrapperspb.UInt64(65536)}),
			wantField: "load_balancing_policy.policies[policy-0].table_size"},
		{name: "typed Random", set: typed(&randomv3.Random{}), policy: "random"},
		{name: "Maglev inside wrr_locality", set: typed(&wrrlocalityv3.WrrLocality{EndpointPickingPolicy: xdstest.LBPolicy(&maglevv3.Maglev{})}),
			policy: "maglev", config: MaglevConfig{TableSize: 65537}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := xdstest.Cluster("svc", "")
			tt.set(c)
			got, err := TranslateCluster(c)
			if tt.wantField != "" {
				var re *ResourceError
				if !errors.As(err, &re) || re.Field != tt.wantField {
					t.Fatalf("TranslateCluster() error = %v, want a ResourceError on field %s", err, tt.wantField)
				}
				return
			}
			if err != nil {
				t.Fatalf("TranslateCluster() error = %v", err)
			}
			if got.LBPolicy != tt.policy || fmt.Sprint(got.LBConfig) != fmt.Sprint(tt.config) {
				t.Errorf("policy %q config %v, want %q %v", got.LBPolicy, got.LBConfig, tt.policy, tt.config)
			}
			if len(got.Unapplied) != 0 {
				t.Errorf("unapplied fields %v, want none", got.Unapplied)
			}
		})
	}
}

// TestTranslateEndpointHashKey: gRFC A76, "the xDS resolver ... will set
// the hash_key endpoint attribute to the value of LbEndpoint.Metadata
// envoy.lb hash_key field, as described in Envoy's documentation for the
// ring hash load balancer". A hash_key that is not a string is ignored.
func TestTranslateEndpointHashKey(t *testing.T) {
	la := xdstest.Endpoints("svc", "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80")
	meta := func(v *structpb.Value) *corev3.Metadata {
		return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
			"envoy.lb": {Fields: map[string]*structpb.Value{"hash_key": v}}}}
	}
	la.Endpoints[0].LbEndpoints[0].Metadata = meta(structpb.NewStringValue("pod-0"))
	la.Endpoints[0].LbEndpoints[1].Metadata = meta(structpb.NewNumberValue(7))
	got, err := TranslateEndpoints(la)
	if err != nil {
		t.Fatalf("TranslateEndpoints() error = %v", err)
	}
	for i, want := range []struct{ hashKey, key string }{{"pod-0", "pod-0"}, {"", "10.0.0.2:80"}, {"", "10.0.0.3:80"}} {
		if e := got.All[i]; e.HashKey != want.hashKey || e.Key() != want.key {
			t.Errorf("endpoint %d: HashKey %q Key %q, want %q %q", i, e.HashKey, e.Key(), want.hashKey, want.key)
		}
	}
}

// TestLBReport: what the ignored-field report says of the load-balancing
// fields. max_connections is not applied on either protocol (grpc-go
// ignores it too) and is reported; EDS's overprovisioning_factor is not
// applied, since the node advertises
// "envoy.lb.does_not_support_overprovisioning", and is reported.
func TestLBReport(t *testing.T) {
	c := xdstest.Cluster("svc", "")
	c.LbPolicy = clusterv3.Cluster_MAGLEV
	c.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(251)}}
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{
		{MaxConnections: wrapperspb.UInt32(10), MaxRequests: wrapperspb.UInt32(5)}}}
	got, err := TranslateCluster(c)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"circuit_breakers.thresholds.max_connections"}; !slices.Equal(got.Unapplied, want) {
		t.Errorf("cluster: unapplied %q, want %q", got.Unapplied, want)
	}
	la := xdstest.Endpoints("svc", "10.0.0.1:80")
	la.Policy = &endpointv3.ClusterLoadAssignment_Policy{OverprovisioningFactor: wrapperspb.UInt32(140)}
	eps, err := TranslateEndpoints(la)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"policy.overprovisioning_factor"}; !slices.Equal(eps.Unapplied, want) {
		t.Errorf("endpoints: unapplied %q, want %q", eps.Unapplied, want)
	}
	if !slices.Contains(Node{}.Proto().GetClientFeatures(), "envoy.lb.does_not_support_overprovisioning") {
		t.Error("the node does not advertise envoy.lb.does_not_support_overprovisioning")
	}
}

// TestHashPolicyReport: the hash policies are applied but for what makes
// Envoy generate a cookie ("If the cookie is not present and ttl below
// is not set, no hash will be produced. If the ttl is present and
// non-zero, the generated cookie will have the TTL"): Weft hashes a
// cookie the request carries and generates none, so ttl, path and
// attributes are reported.
func TestHashPolicyReport(t *testing.T) {
	rc := xdstest.RouteConfig("rc", "*", "c")
	rc.VirtualHosts[0].Routes[0].GetRoute().HashPolicy = []*routev3.RouteAction_HashPolicy{
		{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: "x-user"}}, Terminal: true},
		{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{Cookie: &routev3.RouteAction_HashPolicy_Cookie{Name: "s", Ttl: durationpb.New(time.Hour), Path: "/"}}},
		{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}},
		{PolicySpecifier: &routev3.RouteAction_HashPolicy_FilterState_{FilterState: &routev3.RouteAction_HashPolicy_FilterState{Key: "io.grpc.channel_id"}}},
		{PolicySpecifier: &routev3.RouteAction_HashPolicy_QueryParameter_{QueryParameter: &routev3.RouteAction_HashPolicy_QueryParameter{Name: "q"}}},
	}
	got, err := TranslateRouteConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	const p = "virtual_hosts.routes.route.hash_policy.cookie."
	if want := []string{p + "path", p + "ttl"}; !slices.Equal(got.Unapplied, want) {
		t.Errorf("unapplied %q, want %q", got.Unapplied, want)
	}
	if hp := got.VirtualHosts[0].Routes[0].Action.HashPolicies; len(hp) != 5 {
		t.Errorf("%d hash policies, want 5", len(hp))
	}
}
