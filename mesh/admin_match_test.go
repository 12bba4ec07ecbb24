package mesh

import (
	"regexp"
	"testing"

	"github.com/weftmesh/weft/internal/route"
	"github.com/weftmesh/weft/internal/xds"
)

func TestAdminDescribeMatch(t *testing.T) {
	for _, tt := range []struct {
		m    xds.RouteMatch
		want string
	}{
		{xds.RouteMatch{Kind: xds.PathPrefix, Path: "/", CaseSensitive: true}, `prefix "/"`},
		{xds.RouteMatch{Kind: xds.PathExact, Path: "/a"}, `path = "/a" (any case)`},
		{xds.RouteMatch{Kind: xds.PathRegex, Path: "/v[0-9]+/.*", CaseSensitive: true,
			Headers: []xds.HeaderMatcher{
				{Name: "x-user", Kind: xds.MatchPrefix, Value: "qa-", Invert: true},
				{Name: "x-debug", Kind: xds.MatchPresent, Present: false},
				{Name: "x-shard", Kind: xds.MatchRange, RangeStart: 1, RangeEnd: 10},
				{Name: "x-env", Kind: xds.MatchExact, Value: "Prod", IgnoreCase: true},
			},
			QueryParams:        []xds.QueryParamMatcher{{Name: "beta", Kind: xds.MatchRegex, Value: "1|true"}},
			FractionPerMillion: 125_000, HasFraction: true,
		}, `path ~ "/v[0-9]+/.*" and not header x-user starts with "qa-" and header x-debug absent and ` +
			`header x-shard in [1, 10) and header x-env = "Prod" (any case) and query beta ~ "1|true" and fraction 12.5%`},
	} {
		if got := describeMatch(&tt.m); got != tt.want {
			t.Errorf("describeMatch = %s\nwant             %s", got, tt.want)
		}
	}
}

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
