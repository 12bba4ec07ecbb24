package mesh

import (
	"fmt"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/xds"
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
