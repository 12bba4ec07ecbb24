package xds

import (
	"errors"
	"math"
	"slices"
	"testing"
	"time"

	cswrrv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/client_side_weighted_round_robin/v3"
	commonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/common/v3"
	roundrobinv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	wrrlocalityv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/wrr_locality/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// TestTranslateClientSideWRR: Envoy's ClientSideWeightedRoundRobin
// becomes client_side_weighted_round_robin with gRFC A58's defaults
// ("blackout_period ... Default is 10 seconds", "weight_expiration_period
// ... Default is 3 minutes", "weight_update_period ... Default is 1
// second", "error_utilization_penalty ... Default is 1.0",
// "oob_reporting_period ... Default is 10 seconds"), a
// weight_update_period below 100ms raised to it ("values less than 100ms
// are capped at 100ms"). A negative duration or penalty NACKs the
// cluster, naming the field; the fields grpc-go does not apply either are
// reported.
func TestTranslateClientSideWRR(t *testing.T) {
	defaults := ClientSideWRRConfig{OOBReportingPeriod: 10 * time.Second, BlackoutPeriod: 10 * time.Second,
		WeightExpirationPeriod: 3 * time.Minute, WeightUpdatePeriod: time.Second, ErrorUtilizationPenalty: 1}
	with := func(f func(*ClientSideWRRConfig)) ClientSideWRRConfig {
		c := defaults
		f(&c)
		return c
	}
	const field = "load_balancing_policy.policies[policy-0]."
	tests := []struct {
		name      string
		policy    proto.Message
		want      ClientSideWRRConfig
		unapplied []string
		wantField string
	}{
		{name: "defaults", policy: &cswrrv3.ClientSideWeightedRoundRobin{}, want: defaults},
		{name: "every field", policy: &cswrrv3.ClientSideWeightedRoundRobin{
			EnableOobLoadReport: wrapperspb.Bool(true), OobReportingPeriod: durationpb.New(5 * time.Second),
			BlackoutPeriod: durationpb.New(0), WeightExpirationPeriod: durationpb.New(time.Minute),
			WeightUpdatePeriod: durationpb.New(200 * time.Millisecond), ErrorUtilizationPenalty: wrapperspb.Float(0.5),
		}, want: ClientSideWRRConfig{EnableOOBLoadReport: true, OOBReportingPeriod: 5 * time.Second, WeightExpirationPeriod: time.Minute,
			WeightUpdatePeriod: 200 * time.Millisecond, ErrorUtilizationPenalty: 0.5}},
		{name: "update period capped", policy: &cswrrv3.ClientSideWeightedRoundRobin{WeightUpdatePeriod: durationpb.New(time.Millisecond)},
			want: with(func(c *ClientSideWRRConfig) { c.WeightUpdatePeriod = 100 * time.Millisecond })},
		{name: "inside wrr_locality", policy: &wrrlocalityv3.WrrLocality{EndpointPickingPolicy: xdstest.LBPolicy(&cswrrv3.ClientSideWeightedRoundRobin{})}, want: defaults},
		{name: "unapplied fields reported", policy: &cswrrv3.ClientSideWeightedRoundRobin{
			MetricNamesForComputingUtilization: []string{"named_metrics.foo"}, SlowStartConfig: &commonv3.SlowStartConfig{},
		}, want: defaults, unapplied: []string{
			"load_balancing_policy.client_side_weighted_round_robin.metric_names_for_computing_utilization",
			"load_balancing_policy.client_side_weighted_round_robin.slow_start_config"}},
		{name: "negative blackout", policy: &cswrrv3.ClientSideWeightedRoundRobin{BlackoutPeriod: durationpb.New(-time.Second)},
			wantField: field + "blackout_period"},
		{name: "negative update period", policy: &cswrrv3.ClientSideWeightedRoundRobin{WeightUpdatePeriod: durationpb.New(-time.Second)},
			wantField: field + "weight_update_period"},
		{name: "negative penalty", policy: &cswrrv3.ClientSideWeightedRoundRobin{ErrorUtilizationPenalty: wrapperspb.Float(-1)},
			wantField: field + "error_utilization_penalty"},
		{name: "NaN penalty", policy: &cswrrv3.ClientSideWeightedRoundRobin{ErrorUtilizationPenalty: wrapperspb.Float(float32(math.NaN()))},
			wantField: field + "error_utilization_penalty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := xdstest.Cluster("svc", "")
			c.LoadBalancingPolicy = xdstest.LBPolicy(tt.policy, &roundrobinv3.RoundRobin{})
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
			if got.LBPolicy != "client_side_weighted_round_robin" || got.LBConfig != tt.want {
				t.Errorf("policy %q config %+v, want client_side_weighted_round_robin %+v", got.LBPolicy, got.LBConfig, tt.want)
			}
			if !slices.Equal(got.Unapplied, tt.unapplied) {
				t.Errorf("unapplied %q, want %q", got.Unapplied, tt.unapplied)
			}
		})
	}
}
