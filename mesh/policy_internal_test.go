package mesh

import (
	"fmt"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/xds"
	"github.com/weftmesh/weft/resilience"
)

// An xDS cluster's ring sizes and choice count reach the balancer's
// configuration: translation hands them over as values.
func TestPolicyForCarriesTheClusterConfig(t *testing.T) {
	x := &xdsPath{}
	for _, c := range []struct {
		cluster xds.Cluster
		want    string
	}{
		{xds.Cluster{LBPolicy: "ring_hash", LBConfig: xds.RingHashConfig{MinRingSize: 64, MaxRingSize: 128}}, "MinRingSize:64 MaxRingSize:128"},
		{xds.Cluster{LBPolicy: "least_request", LBConfig: xds.LeastRequestConfig{ChoiceCount: 5, ActiveRequestBias: 1.5}}, "choices:5 bias:1.5"},
	} {
		_, cfg := x.policyFor(&c.cluster)
		if got := fmt.Sprintf("%+v", cfg); !strings.Contains(got, c.want) {
			t.Errorf("%s: balancer config %s, want one with %s", c.cluster.LBPolicy, got, c.want)
		}
	}
}

// istiod's default retry_on mixes gRPC names in; the HTTP path keeps the
// HTTP ones instead of dropping the route's retries.
func TestPlanRouteKeepsHTTPRetryConditions(t *testing.T) {
	r := &xds.Route{Action: xds.RouteAction{RetryPolicy: &xds.RetryPolicy{
		RetryOn: []string{"connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes", "reset-before-request"}, NumRetries: 2}}}
	p := planRoute(r, 0)
	want := resilience.RetryConnectFailure | resilience.RetryRefusedStream | resilience.RetryRetriableStatusCodes
	if p.retry.RetryOn != want || p.retry.NumRetries != 2 {
		t.Errorf("retry on %v, %d retries; want %v, 2", p.retry.RetryOn, p.retry.NumRetries, want)
	}
	if p := planRoute(&xds.Route{Action: xds.RouteAction{RetryPolicy: &xds.RetryPolicy{RetryOn: []string{"unavailable"}}}}, 0); p.retry.NumRetries >= 0 {
		t.Errorf("a gRPC-only retry_on gave the HTTP path %d retries, want none", p.retry.NumRetries)
	}
}
