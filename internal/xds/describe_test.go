package xds

import "testing"

// A route on the admin page reads as an operator would write it down.
func TestRouteMatchString(t *testing.T) {
	for _, tt := range []struct {
		m    RouteMatch
		want string
	}{
		{RouteMatch{Kind: PathPrefix, Path: "/", CaseSensitive: true}, `prefix "/"`},
		{RouteMatch{Kind: PathExact, Path: "/a"}, `path = "/a" (any case)`},
		{RouteMatch{Kind: PathRegex, Path: "/v[0-9]+/.*", CaseSensitive: true,
			Headers: []HeaderMatcher{
				{Name: "x-user", Kind: MatchPrefix, Value: "qa-", Invert: true},
				{Name: "x-debug", Kind: MatchPresent, Present: false},
				{Name: "x-shard", Kind: MatchRange, RangeStart: 1, RangeEnd: 10},
				{Name: "x-env", Kind: MatchExact, Value: "Prod", IgnoreCase: true},
			},
			QueryParams:        []QueryParamMatcher{{Name: "beta", Kind: MatchRegex, Value: "1|true"}},
			FractionPerMillion: 125_000, HasFraction: true,
		}, `path ~ "/v[0-9]+/.*" and not header x-user starts with "qa-" and header x-debug absent and ` +
			`header x-shard in [1, 10) and header x-env = "Prod" (any case) and query beta ~ "1|true" and fraction 12.5%`},
	} {
		if got := tt.m.String(); got != tt.want {
			t.Errorf("String() = %s\nwant       %s", got, tt.want)
		}
	}
}
