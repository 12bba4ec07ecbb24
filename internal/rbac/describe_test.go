package rbac_test

import (
	"net/netip"
	"testing"

	"github.com/weftmesh/weft/internal/rbac"
)

// A rule on the admin page reads as an operator would write it down.
func TestMatcherString(t *testing.T) {
	exact := func(v string) rbac.StringMatcher { return rbac.StringMatcher{Kind: rbac.MatchExact, Value: v} }
	for _, tt := range []struct {
		m    rbac.Matcher
		want string
	}{
		{rbac.Any(), "any"},
		{rbac.None(), "none"},
		{rbac.URLPath(rbac.StringMatcher{Kind: rbac.MatchPrefix, Value: "/admin"}), `path starts with "/admin"`},
		{rbac.AuthenticatedAs(exact("spiffe://shop.example/ns/shop/sa/frontend")), `principal = "spiffe://shop.example/ns/shop/sa/frontend"`},
		{rbac.Authenticated(), "authenticated"},
		{rbac.And(rbac.Header(rbac.HeaderMatcher{Name: ":method", Kind: rbac.MatchExact, Value: "GET"}),
			rbac.Or(rbac.URLPath(exact("/a")), rbac.URLPath(rbac.StringMatcher{Kind: rbac.MatchSuffix, Value: ".js", IgnoreCase: true}))),
			`header :method = "GET" and (path = "/a" or path ends with ".js" (any case))`},
		{rbac.Not(rbac.RemoteIP(netip.MustParsePrefix("10.0.0.0/8"))), "not (source 10.0.0.0/8)"},
		{rbac.DestinationPort(8080), "port 8080"},
		{rbac.DestinationPorts(8000, 8100), "ports [8000, 8100)"},
		{rbac.Header(rbac.HeaderMatcher{Name: "x-debug", Kind: rbac.MatchPresent, Present: true, Invert: true}), "not header x-debug present"},
	} {
		if got := tt.m.String(); got != tt.want {
			t.Errorf("String() = %s\nwant       %s", got, tt.want)
		}
	}
	p := rbac.Policy{Name: "p", Permissions: []rbac.Matcher{rbac.URLPath(exact("/x")), rbac.DestinationPort(80)},
		Principals: []rbac.Matcher{rbac.Any()}}
	if got, want := p.String(), `path = "/x" or port 80 from any`; got != want {
		t.Errorf("Policy.String() = %s, want %s", got, want)
	}
}
