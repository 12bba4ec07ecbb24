package mesh

import (
	"regexp"
	"testing"

	"github.com/weftmesh/weft/internal/route"
	"github.com/weftmesh/weft/internal/xds"
)

func TestAdminDescribeRoute(t *testing.T) {
	r := &xds.Route{Name: "r1", Match: xds.RouteMatch{Kind: xds.PathPrefix, Path: "/api", CaseSensitive: true},
		Action: xds.RouteAction{
			WeightedClusters: []xds.WeightedCluster{{Name: "a", Weight: 1}, {Name: "b", Weight: 2}}, TotalWeight: 3,
			HasTimeout: true, RetryPolicy: &xds.RetryPolicy{RetryOn: []string{"5xx", "reset"}, NumRetries: 3},
			PrefixRewrite: "/", RegexRewrite: &xds.RegexRewrite{Pattern: regexp.MustCompile("^/x"), Substitution: "/y"},
		}}
	e := describeRoute(r, &routePlan{Plan: route.New(r, 0)})
	if e.Timeout != "off" || e.Retries != "3 on 5xx,reset" || e.Cluster != "" || len(e.WeightedClusters) != 2 ||
		e.WeightedClusters[1].Percent < 66.6 || e.WeightedClusters[1].Percent > 66.7 ||
		e.Rewrite != `prefix → "/"; path ~ "^/x" → "/y"` {
		t.Errorf("describeRoute = %+v", e)
	}
	nf := describeRoute(&xds.Route{Action: xds.RouteAction{Kind: xds.ActionNonForwarding}}, nil)
	if !nf.NonForwarding || nf.Match != `prefix "" (any case)` {
		t.Errorf("non-forwarding route = %+v", nf)
	}
}
