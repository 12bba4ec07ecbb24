package rbac_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"testing"

	"github.com/weftmesh/weft/internal/rbac"
)

func exact(v string) rbac.StringMatcher { return rbac.StringMatcher{Kind: rbac.MatchExact, Value: v} }

func prefix(v string) rbac.StringMatcher { return rbac.StringMatcher{Kind: rbac.MatchPrefix, Value: v} }

func regex(t testing.TB, expr string) rbac.StringMatcher {
	re, err := rbac.CompileRegex(expr)
	if err != nil {
		t.Fatal(err)
	}
	return rbac.StringMatcher{Kind: rbac.MatchRegex, Value: expr, Regex: re}
}

func certWith(uris []string, dns []string, cn string) *x509.Certificate {
	c := &x509.Certificate{DNSNames: dns, Subject: pkix.Name{CommonName: cn}}
	for _, u := range uris {
		p, _ := url.Parse(u)
		c.URIs = append(c.URIs, p)
	}
	return c
}

// TestMatchers holds the meaning of each matcher, whichever front end
// built it.
func TestMatchers(t *testing.T) {
	base := rbac.Input{
		Method: "GET", Path: "/items/42", RawQuery: "a=1", Scheme: "https", Host: "Orders.example.com:8080",
		Header:    http.Header{"X-Team": {"blue"}, "X-Multi": {"a", "b"}, "X-Num": {"7"}},
		LocalAddr: netip.MustParseAddr("10.0.0.1"), LocalPort: 8080,
		RemoteAddr: netip.MustParseAddr("::ffff:10.1.2.3"),
		PeerID:     "spiffe://td/ns/shop/sa/web",
		ServerName: "orders.shop",
	}
	with := func(f func(*rbac.Input)) rbac.Input {
		in := base
		f(&in)
		return in
	}
	hdr := func(h rbac.HeaderMatcher) rbac.Matcher { return rbac.Header(h) }
	cases := []struct {
		name string
		m    rbac.Matcher
		in   rbac.Input
		want bool
	}{
		{"zero matcher is any", rbac.Matcher{}, base, true},
		{"none", rbac.None(), base, false},
		{"empty and", rbac.And(), base, true},
		{"empty or", rbac.Or(), base, false},
		{"not", rbac.Not(rbac.None()), base, true},
		{"and of one false", rbac.And(rbac.Any(), rbac.None()), base, false},
		{"or of one true", rbac.Or(rbac.None(), rbac.Any()), base, true},
		{"header exact", hdr(rbac.HeaderMatcher{Name: "x-team", Value: "blue"}), base, true},
		{"header absent fails even inverted", hdr(rbac.HeaderMatcher{Name: "x-none", Value: "blue", Invert: true}), base, false},
		{"header absent, presence false", hdr(rbac.HeaderMatcher{Name: "x-none", Kind: rbac.MatchPresent}), base, true},
		{"header present", hdr(rbac.HeaderMatcher{Name: "x-team", Kind: rbac.MatchPresent, Present: true}), base, true},
		{"repeated header joined", hdr(rbac.HeaderMatcher{Name: "x-multi", Value: "a,b"}), base, true},
		{"repeated header, one value", hdr(rbac.HeaderMatcher{Name: "x-multi", Value: "a"}), base, false},
		{"header range", hdr(rbac.HeaderMatcher{Name: "x-num", Kind: rbac.MatchRange, RangeStart: 1, RangeEnd: 8}), base, true},
		{"header ignore case", hdr(rbac.HeaderMatcher{Name: "X-TEAM", Value: "BLUE", IgnoreCase: true}), base, true},
		{":method", hdr(rbac.HeaderMatcher{Name: ":method", Value: "GET"}), base, true},
		{":path has the query", hdr(rbac.HeaderMatcher{Name: ":path", Value: "/items/42?a=1"}), base, true},
		{":authority as sent", hdr(rbac.HeaderMatcher{Name: ":authority", Value: "Orders.example.com:8080"}), base, true},
		{"host is :authority", hdr(rbac.HeaderMatcher{Name: "host", Kind: rbac.MatchSuffix, Value: ":8080"}), base, true},
		{":scheme", hdr(rbac.HeaderMatcher{Name: ":scheme", Value: "https"}), base, true},
		{"url path has no query", rbac.URLPath(exact("/items/42")), base, true},
		{"url path prefix", rbac.URLPath(prefix("/items/")), base, true},
		{"host without port", rbac.Host(rbac.StringMatcher{Value: "orders.example.com", IgnoreCase: true}), base, true},
		{"host with port", rbac.Host(rbac.StringMatcher{Kind: rbac.MatchSuffix, Value: ".com:8080"}), base, true},
		{"host other", rbac.Host(exact("x.example.com")), base, false},
		{"host empty", rbac.Host(rbac.StringMatcher{Kind: rbac.MatchPrefix}), with(func(in *rbac.Input) { in.Host = "" }), false},
		{"destination ip", rbac.DestinationIP(netip.MustParsePrefix("10.0.0.0/24")), base, true},
		{"destination ip unknown", rbac.DestinationIP(netip.MustParsePrefix("0.0.0.0/0")), with(func(in *rbac.Input) { in.LocalAddr = netip.Addr{} }), false},
		{"destination port", rbac.DestinationPort(8080), base, true},
		{"destination port range", rbac.DestinationPorts(8000, 8080), base, false},
		{"destination port unknown", rbac.DestinationPorts(0, 100), with(func(in *rbac.Input) { in.LocalPort = 0 }), false},
		{"server name", rbac.ServerName(exact("orders.shop")), base, true},
		{"remote ip, mapped", rbac.RemoteIP(netip.MustParsePrefix("10.0.0.0/8")), base, true},
		{"remote ip unknown", rbac.RemoteIP(netip.MustParsePrefix("0.0.0.0/0")), with(func(in *rbac.Input) { in.RemoteAddr = netip.Addr{} }), false},
		{"authenticated by id", rbac.Authenticated(), base, true},
		{"authenticated, plaintext", rbac.Authenticated(), with(func(in *rbac.Input) { in.PeerID = "" }), false},
		{"principal by id", rbac.AuthenticatedAs(exact("spiffe://td/ns/shop/sa/web")), base, true},
		{"namespace regex", rbac.AuthenticatedAs(regex(t, ".*/ns/shop/.*")), base, true},
		{"regex is anchored", rbac.AuthenticatedAs(regex(t, "ns/shop")), base, false},
		{"principal, plaintext", rbac.AuthenticatedAs(regex(t, ".*")), with(func(in *rbac.Input) { in.PeerID = "" }), false},
		{"cert URI SAN", rbac.AuthenticatedAs(exact("spiffe://td/a")),
			with(func(in *rbac.Input) {
				in.PeerCert = certWith([]string{"spiffe://td/b", "spiffe://td/a"}, []string{"a"}, "a")
			}), true},
		{"cert with URIs: DNS names not tried", rbac.AuthenticatedAs(exact("a")),
			with(func(in *rbac.Input) { in.PeerCert = certWith([]string{"spiffe://td/b"}, []string{"a"}, "a") }), false},
		{"cert DNS SAN", rbac.AuthenticatedAs(exact("a")), with(func(in *rbac.Input) { in.PeerCert = certWith(nil, []string{"b", "a"}, "x") }), true},
		{"cert subject", rbac.AuthenticatedAs(exact("CN=x")), with(func(in *rbac.Input) { in.PeerCert = certWith(nil, nil, "x") }), true},
		{"cert wins over id", rbac.AuthenticatedAs(exact("spiffe://td/ns/shop/sa/web")),
			with(func(in *rbac.Input) { in.PeerCert = certWith([]string{"spiffe://td/other"}, nil, "") }), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.m.Match(&c.in); got != c.want {
				t.Errorf("Match = %v, want %v", got, c.want)
			}
		})
	}
}

func TestFilterAndEngine(t *testing.T) {
	admin := rbac.Policy{Name: "admin", Permissions: []rbac.Matcher{rbac.URLPath(prefix("/admin"))}, Principals: []rbac.Matcher{rbac.Any()}}
	web := rbac.Policy{Name: "web", Permissions: []rbac.Matcher{rbac.Any()},
		Principals: []rbac.Matcher{rbac.AuthenticatedAs(exact("spiffe://td/web"))}}
	everyone := rbac.Policy{Name: "any", Permissions: []rbac.Matcher{rbac.Any()}, Principals: []rbac.Matcher{rbac.Any()}}
	engine := rbac.Engine{Filters: []rbac.Filter{
		{Action: rbac.Log, Policies: []rbac.Policy{admin, everyone}},
		{Action: rbac.Deny, Policies: []rbac.Policy{admin}},
		{Action: rbac.Allow, Policies: []rbac.Policy{web}},
	}}
	in := func(path, peer string) *rbac.Input { return &rbac.Input{Path: path, PeerID: peer} }
	cases := []struct {
		name string
		e    rbac.Engine
		in   *rbac.Input
		want rbac.Decision
	}{
		{"zero engine allows", rbac.Engine{}, in("/", ""), rbac.Decision{Allow: true}},
		{"allowed by ALLOW; the first LOG match marks", engine, in("/x", "spiffe://td/web"),
			rbac.Decision{Allow: true, Action: rbac.Allow, Matched: true, Policy: "web", Audit: true, AuditPolicy: "any"}},
		{"DENY before ALLOW", engine, in("/admin", "spiffe://td/web"),
			rbac.Decision{Action: rbac.Deny, Matched: true, Policy: "admin", Audit: true, AuditPolicy: "admin"}},
		{"no ALLOW match", engine, in("/x", "spiffe://td/other"),
			rbac.Decision{Action: rbac.Allow, Audit: true, AuditPolicy: "any"}},
		{"ALLOW filter without policies denies", rbac.Engine{Filters: []rbac.Filter{{Action: rbac.Allow}}}, in("/", ""),
			rbac.Decision{Action: rbac.Allow}},
		{"DENY alone, no match", rbac.Engine{Filters: []rbac.Filter{{Action: rbac.Deny, Policies: []rbac.Policy{admin}}}}, in("/x", ""),
			rbac.Decision{Allow: true}},
		{"every ALLOW filter must pass", rbac.Engine{Filters: []rbac.Filter{
			{Action: rbac.Allow, Policies: []rbac.Policy{everyone}}, {Action: rbac.Allow, Policies: []rbac.Policy{web}}}}, in("/x", ""),
			rbac.Decision{Action: rbac.Allow}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.e.Evaluate(c.in); got != c.want {
				t.Errorf("Evaluate = %+v, want %+v", got, c.want)
			}
		})
	}
	for _, c := range []struct {
		action      rbac.Action
		path        string
		wantAllowed bool
		wantMatched string
	}{
		{rbac.Allow, "/admin", true, "admin"},
		{rbac.Allow, "/x", false, ""},
		{rbac.Deny, "/admin", false, "admin"},
		{rbac.Deny, "/x", true, ""},
		{rbac.Log, "/admin", true, "admin"},
		{rbac.Log, "/x", true, ""},
	} {
		f := rbac.Filter{Action: c.action, Policies: []rbac.Policy{admin}}
		if allowed, matched := f.Evaluate(in(c.path, "")); allowed != c.wantAllowed || matched != c.wantMatched {
			t.Errorf("%s filter on %s: Evaluate = %v, %q; want %v, %q", c.action, c.path, allowed, matched, c.wantAllowed, c.wantMatched)
		}
	}
}

// BenchmarkEngine evaluates the shapes security's BenchmarkEvaluate
// translates to: a DENY filter, then an ALLOW filter of n policies of
// which only the last matches.
func BenchmarkEngine(b *testing.B) {
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("policies=%d", n), func(b *testing.B) {
			method := rbac.Header(rbac.HeaderMatcher{Name: ":method", Value: "GET"})
			allow := rbac.Filter{Action: rbac.Allow}
			for i := 0; i < n-1; i++ {
				allow.Policies = append(allow.Policies, rbac.Policy{Name: fmt.Sprint(i),
					Permissions: []rbac.Matcher{rbac.And(method, rbac.URLPath(prefix(fmt.Sprintf("/svc%d/", i))))},
					Principals:  []rbac.Matcher{rbac.AuthenticatedAs(prefix(fmt.Sprintf("spiffe://cluster.local/ns/team%d/sa/", i)))}})
			}
			allow.Policies = append(allow.Policies, rbac.Policy{Name: "last",
				Permissions: []rbac.Matcher{rbac.And(method, rbac.URLPath(prefix("/info")), rbac.DestinationPort(8080))},
				Principals: []rbac.Matcher{rbac.And(rbac.AuthenticatedAs(exact("spiffe://cluster.local/ns/default/sa/sleep")),
					rbac.RemoteIP(netip.MustParsePrefix("10.0.0.0/8")), rbac.Header(rbac.HeaderMatcher{Name: "x-team", Value: "blue"}))}})
			e := rbac.Engine{Filters: []rbac.Filter{
				{Action: rbac.Deny, Policies: []rbac.Policy{{Name: "debug", Permissions: []rbac.Matcher{rbac.URLPath(prefix("/debug/"))},
					Principals: []rbac.Matcher{rbac.Any()}}}},
				allow,
			}}
			in := &rbac.Input{Method: "GET", Path: "/info/items", Header: http.Header{"X-Team": {"blue"}}, LocalPort: 8080,
				RemoteAddr: netip.MustParseAddr("10.1.2.3"), PeerID: "spiffe://cluster.local/ns/default/sa/sleep"}
			if d := e.Evaluate(in); !d.Allow {
				b.Fatalf("benchmark request denied: %+v", d)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				e.Evaluate(in)
			}
		})
	}
}
