package xds

import (
	"net/http"
	"strings"
	"testing"
)

// Explain walks the routes with the matcher Match uses and says, for each
// route before the one that takes the request, the first condition it
// failed. Envoy: "the first route that matches will be used" (route
// ordering); a runtime fraction is drawn per request.
func TestExplainSaysWhyEachEarlierRouteFailed(t *testing.T) {
	rc := testRouteConfig(t)
	for _, tc := range []struct {
		name    string
		host    string
		req     Request
		vh      string
		matched string // "" for none
		// reasons, by route name, each a substring of the reason given
		reasons map[string]string
		kinds   map[string]MismatchKind
	}{
		{
			name: "header route after path and header misses", host: "orders:8080",
			req: Request{Method: "GET", Path: "/h", Header: http.Header{"X-Env": {"prod"}}, FractionSample: ExplainFractionSample},
			vh:  "orders", matched: "hdr-absent",
			reasons: map[string]string{
				"exact":      `path "/h": want path = "/Exact" (any case)`,
				"regex":      `path "/h": want path ~ "/items/[0-9]+"`,
				"hdr-exact":  `header x-env is "prod": want = "canary"`,
				"hdr-invert": `header x-env is "prod": want not starts with "prod"`,
				"hdr-range":  `header x-n is absent: want in [10, 20)`,
			},
			kinds: map[string]MismatchKind{"exact": MismatchPath, "hdr-exact": MismatchHeader, "hdr-range": MismatchHeader, "hdr-absent": Matched},
		},
		{
			name: "fraction, then no route", host: "orders:8080",
			req: Request{Method: "GET", Path: "/frac", Header: http.Header{}, FractionSample: ExplainFractionSample},
			vh:  "orders",
			reasons: map[string]string{
				"frac":      "runtime fraction, drawn per request: the route takes 25% of the requests",
				"ct":        `header content-type is absent: want contains "grpc"`,
				"suffixhdr": `header x-s is absent`,
			},
			kinds: map[string]MismatchKind{"frac": MismatchFraction, "ct": MismatchHeader},
		},
		{
			name: "query", host: "orders:8080",
			req: Request{Method: "GET", Path: "/q", RawQuery: "v=1", Header: http.Header{"Content-Type": {"application/grpc"}}, FractionSample: ExplainFractionSample},
			vh:  "orders", matched: "ct",
			reasons: map[string]string{"query": `query "v=1": want v starts with "2"`},
			kinds:   map[string]MismatchKind{"query": MismatchQuery},
		},
		{
			name: "method pseudo-header", host: "orders:8080",
			req:     Request{Method: "GET", Path: "/m", Header: http.Header{}, FractionSample: ExplainFractionSample},
			vh:      "orders",
			reasons: map[string]string{"method": `header :method is "GET": want = "post" (any case)`},
		},
		{name: "other virtual host", host: "x.api.example.com", req: Request{Path: "/"}, vh: "longsuffix", matched: "longsuffix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vh, verdicts, matched := rc.Explain(tc.host, &tc.req)
			if vh == nil || vh.Name != tc.vh {
				t.Fatalf("virtual host = %v, want %s", vh, tc.vh)
			}
			got := ""
			if matched != nil {
				got = matched.Name
			}
			if got != tc.matched {
				t.Errorf("matched %q, want %q", got, tc.matched)
			}
			// The same request through Match: the two cannot differ.
			if r, ok := rc.Match(tc.host, &tc.req); ok != (matched != nil) || (ok && r != matched) {
				t.Errorf("Match = %v, %v; Explain matched %v", r, ok, matched)
			}
			byName := map[string]RouteVerdict{}
			for i, v := range verdicts {
				byName[v.Route.Name] = v
				if (v.Mismatch.Kind == Matched) != (i == len(verdicts)-1 && matched != nil) {
					t.Errorf("verdict %d (%s) = %+v: only the last may match, and only when a route matched", i, v.Route.Name, v.Mismatch)
				}
				if (v.Reason == "") != (v.Mismatch.Kind == Matched) {
					t.Errorf("verdict %s: reason %q with kind %v", v.Route.Name, v.Reason, v.Mismatch.Kind)
				}
			}
			for name, want := range tc.reasons {
				if v, ok := byName[name]; !ok || !strings.Contains(v.Reason, want) {
					t.Errorf("route %s: reason %q, want it to say %q", name, byName[name].Reason, want)
				}
			}
			for name, want := range tc.kinds {
				if byName[name].Mismatch.Kind != want {
					t.Errorf("route %s: kind %v, want %v", name, byName[name].Mismatch.Kind, want)
				}
			}
		})
	}
	empty := &RouteConfig{}
	if vh, v, m := empty.Explain("orders", &Request{Path: "/"}); vh != nil || v != nil || m != nil {
		t.Errorf("Explain with no virtual host: %v, %v, %v", vh, v, m)
	}
}

func TestRouteMatchStringOfExplainedRoutes(t *testing.T) {
	rc := testRouteConfig(t)
	vh := rc.MatchVirtualHost("orders:8080")
	want := map[string]string{
		"exact":      `path = "/Exact" (any case)`,
		"frac":       `prefix "/frac" and fraction 25%`,
		"query":      `prefix "/q" and query v starts with "2"`,
		"hdr-invert": `prefix "/h" and not header x-env starts with "prod"`,
		"hdr-absent": `prefix "/h" and header x-debug absent`,
	}
	for _, r := range vh.Routes {
		if w, ok := want[r.Name]; ok && r.Match.String() != w {
			t.Errorf("route %s: String = %q, want %q", r.Name, r.Match.String(), w)
		}
	}
}
