package xds

import (
	"encoding/json"
	"strings"
	"testing"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	roundrobinv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

func lbPolicy(name string, m proto.Message) *clusterv3.LoadBalancingPolicy_Policy {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return &clusterv3.LoadBalancingPolicy_Policy{TypedExtensionConfig: &corev3.TypedExtensionConfig{Name: name, TypedConfig: a}}
}

func edsCluster(policies ...*clusterv3.LoadBalancingPolicy_Policy) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 "orders",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}},
		LoadBalancingPolicy: &clusterv3.LoadBalancingPolicy{Policies: policies},
	}
}

// TestCustomPoliciesRefused holds the cluster's NACKs to grpc-go's: its
// xDS client has the policy registry parse the policy it chose, and
// refuses the cluster when no policy is left.
func TestCustomPoliciesRefused(t *testing.T) {
	negative, _ := structpb.NewStruct(map[string]any{"decayWindow": "-5s"})
	bad := lbPolicy("weft_p2c_ewma", &xdstypev3.TypedStruct{TypeUrl: "type.googleapis.com/weft_p2c_ewma", Value: negative})
	unregistered := lbPolicy("weft_fastest", &xdstypev3.TypedStruct{TypeUrl: "type.googleapis.com/weft_fastest"})
	rr := lbPolicy("rr", &roundrobinv3.RoundRobin{})
	for _, tt := range []struct {
		name     string
		policies []*clusterv3.LoadBalancingPolicy_Policy
		want     []string // in the error
	}{
		{"only a policy this process has not registered", []*clusterv3.LoadBalancingPolicy_Policy{unregistered},
			[]string{"load_balancing_policy", "no supported policy", "type.googleapis.com/weft_fastest"}},
		// The first supported policy is the cluster's; its bad config is
		// not a reason to try the next one.
		{"a config the policy refuses, before round_robin", []*clusterv3.LoadBalancingPolicy_Policy{bad, rr},
			[]string{"load_balancing_policy.policies[weft_p2c_ewma].typed_config.value", "decayWindow"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := TranslateCluster(edsCluster(tt.policies...))
			if err == nil {
				t.Fatalf("accepted, with policy %q; want it refused", got.LBPolicy)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
}

func TestCustomPolicies(t *testing.T) {
	cfg, _ := structpb.NewStruct(map[string]any{"decayWindow": "5s"})
	weft := lbPolicy("weft_p2c_ewma", &xdstypev3.TypedStruct{TypeUrl: "type.googleapis.com/weft_p2c_ewma", Value: cfg})
	foreign := lbPolicy("acme", &xdstypev3.TypedStruct{TypeUrl: "type.googleapis.com/acme.fastest"})
	unregistered := lbPolicy("weft_fastest", &xdstypev3.TypedStruct{TypeUrl: "type.googleapis.com/weft_fastest"})
	rr := lbPolicy("rr", &roundrobinv3.RoundRobin{})
	tests := []struct {
		name       string
		policies   []*clusterv3.LoadBalancingPolicy_Policy
		wantPolicy string
		wantConfig string
	}{
		{"Weft's policy by type URL, with its config", []*clusterv3.LoadBalancingPolicy_Policy{weft, rr}, "p2c_ewma", `{"decayWindow":"5s"}`},
		{"someone else's custom policy is skipped (A52)", []*clusterv3.LoadBalancingPolicy_Policy{foreign, rr}, "round_robin", ""},
		{"a Weft policy this process has not registered is skipped", []*clusterv3.LoadBalancingPolicy_Policy{unregistered, rr}, "round_robin", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := TranslateCluster(edsCluster(tt.policies...))
			if err != nil {
				t.Fatal(err)
			}
			if got.LBPolicy != tt.wantPolicy {
				t.Errorf("LBPolicy = %q, want %q", got.LBPolicy, tt.wantPolicy)
			}
			if tt.wantConfig != "" {
				var gotCfg, wantCfg any
				json.Unmarshal(got.LBConfig.(json.RawMessage), &gotCfg)
				json.Unmarshal([]byte(tt.wantConfig), &wantCfg)
				if b1, _ := json.Marshal(gotCfg); string(b1) != tt.wantConfig {
					t.Errorf("LBConfig = %s, want %s", got.LBConfig, tt.wantConfig)
				}
			}
		})
	}
}
