//lint:file-ignore SA1019 istiod writes requestPrincipals and request.auth.* as the deprecated metadata matchers

package xds

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weftmesh/weft/internal/jwt"
	"github.com/weftmesh/weft/internal/jwt/jwttest"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

func jwtListener(cfg *jwtv3.JwtAuthentication, more ...*jwtv3.JwtAuthentication) *listenerv3.Listener {
	fc := xdstest.FilterChain("c", xdstest.InboundRoutes("r"), xdstest.JWTFilter(cfg))
	if len(more) > 0 {
		fc = xdstest.FilterChain("c", xdstest.InboundRoutes("r"), xdstest.JWTFilter(cfg), xdstest.JWTFilter(more[0]))
	}
	return xdstest.ServerListener("in", netip.MustParseAddrPort("0.0.0.0:1"), nil, fc)
}

// TestTranslateJWTAuthn: istiod's jwt_authn config becomes providers and
// a rule; what would change which tokens are accepted and Weft cannot do
// is NACKed naming the field; what only adds headers is reported.
func TestTranslateJWTAuthn(t *testing.T) {
	iss := jwttest.NewIssuer(t, "https://issuer.test")
	cfg := xdstest.IstioJWT(iss.Name, []string{"weft"}, "https://issuer.test/jwks", nil)
	_, l, err := Decode(ListenerType, mustAny(t, jwtListener(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	fc := l.(*Listener).Server.FilterChains[0]
	if fc.JWT == nil || len(fc.JWT.Providers) != 1 || len(fc.JWT.Rules) != 1 {
		t.Fatalf("JWT = %+v, want one provider and one rule", fc.JWT)
	}
	p := fc.JWT.Providers[0]
	if p.Name != "origins-0" || p.Issuer != iss.Name || p.JWKSURI != "https://issuer.test/jwks" || p.PayloadKey != "payload" ||
		p.ClockSkew != jwt.DefaultClockSkew || !slices.Equal(p.SpaceDelimited, []string{"scope", "permission"}) || !fc.JWT.BypassCORSPreflight {
		t.Errorf("provider %+v", p)
	}
	if r := fc.JWT.Requirement("h", &Request{Method: "GET", Path: "/x"}); r == nil || r.Kind != jwt.RequireAny || len(r.Subs) != 2 {
		t.Errorf("requirement for /x = %+v, want any(origins-0, allow_missing)", r)
	}
	preflight := &Request{Method: "OPTIONS", Path: "/x", Header: map[string][]string{"Origin": {"o"}, "Access-Control-Request-Method": {"GET"}}}
	if r := fc.JWT.Requirement("h", preflight); r != nil {
		t.Errorf("a CORS preflight requires %+v, want nothing (bypass_cors_preflight)", r)
	}

	edit := func(f func(c *jwtv3.JwtAuthentication)) *listenerv3.Listener {
		c := xdstest.IstioJWT(iss.Name, nil, "", iss.JWKS())
		f(c)
		return jwtListener(c)
	}
	const base = "filter_chains[0].filters[0].typed_config.http_filters[0].typed_config."
	for _, tc := range []struct {
		name  string
		l     *listenerv3.Listener
		field string
	}{
		{"filter state rules", edit(func(c *jwtv3.JwtAuthentication) { c.FilterStateRules = &jwtv3.FilterStateRule{Name: "x"} }), base + "filter_state_rules"},
		{"max lifetime", edit(func(c *jwtv3.JwtAuthentication) { c.Providers["origins-0"].MaxLifetime = durationpb.New(1) }), base + "providers[origins-0].max_lifetime"},
		{"JWKS from a file", edit(func(c *jwtv3.JwtAuthentication) {
			c.Providers["origins-0"].JwksSourceSpecifier = &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: "/jwks"}}}
		}), base + "providers[origins-0].local_jwks"},
		{"bad inline JWKS", edit(func(c *jwtv3.JwtAuthentication) {
			c.Providers["origins-0"].JwksSourceSpecifier = &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "{"}}}
		}), base + "providers[origins-0]"},
		{"no JWKS", edit(func(c *jwtv3.JwtAuthentication) { c.Providers["origins-0"].JwksSourceSpecifier = nil }), base + "providers[origins-0].jwks_source_specifier"},
		{"unknown provider", edit(func(c *jwtv3.JwtAuthentication) {
			c.Rules[0].RequirementType = &jwtv3.RequirementRule_Requires{Requires: &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: "nope"}}}
		}), base + "rules[0].requires.provider_name"},
		{"unknown requirement name", edit(func(c *jwtv3.JwtAuthentication) {
			c.Rules[0].RequirementType = &jwtv3.RequirementRule_RequirementName{RequirementName: "nope"}
		}), base + "rules[0].requirement_name"},
		{"extract without validation", edit(func(c *jwtv3.JwtAuthentication) {
			c.Rules[0].RequirementType = &jwtv3.RequirementRule_Requires{Requires: &jwtv3.JwtRequirement{
				RequiresType: &jwtv3.JwtRequirement_ExtractOnlyWithoutValidation{ExtractOnlyWithoutValidation: &jwtv3.ExtractOnlyWithoutValidation{}}}}
		}), base + "rules[0].requires.requires_type"},
		{"two jwt_authn filters", jwtListener(xdstest.IstioJWT(iss.Name, nil, "", iss.JWKS()), xdstest.IstioJWT(iss.Name, nil, "", iss.JWKS())),
			"filter_chains[0].filters[0].typed_config.http_filters[1]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			re := decodeErr(t, ListenerType, tc.l)
			if re.Field != tc.field {
				t.Errorf("error field %q, want %q: %v", re.Field, tc.field, re)
			}
		})
	}

	// A per-route override in an RDS route configuration is refused.
	rc := xdstest.InboundRoutes("r")
	rc.VirtualHosts[0].Routes[0].TypedPerFilterConfig = map[string]*anypb.Any{"jwt": mustAny(t, &jwtv3.PerRouteConfig{
		RequirementSpecifier: &jwtv3.PerRouteConfig_Disabled{Disabled: true}})}
	if re := decodeErr(t, RouteConfigType, rc); !strings.Contains(re.Field, "typed_per_filter_config[jwt]") {
		t.Errorf("per-route jwt_authn: error field %q: %v", re.Field, re)
	}

	// Copying claims into headers is for the application only: reported.
	withHeaders := xdstest.IstioJWT(iss.Name, nil, "", iss.JWKS())
	withHeaders.Providers["origins-0"].ClaimToHeaders = []*jwtv3.JwtClaimToHeader{{HeaderName: "x-sub", ClaimName: "sub"}}
	_, l, err = Decode(ListenerType, mustAny(t, jwtListener(withHeaders)))
	if err != nil {
		t.Fatal(err)
	}
	if u := l.(*Listener).Unapplied; !slices.Contains(u, "filter_chains.http_filters.jwt_authn.providers.claim_to_headers") {
		t.Errorf("unapplied %v, want claim_to_headers reported", u)
	}
}

// TestRBACMetadataMatchers: istiod's metadata matchers for
// requestPrincipals and request.auth.claims read the jwt_authn payload,
// with Envoy's ValueMatcher semantics: a string matcher matches a string,
// list_match.one_of an element of a list, and a request without a
// verified token has no value (only an inverted matcher matches it).
func TestRBACMetadataMatchers(t *testing.T) {
	allow := func(p *rbacv3.Principal) *RBAC {
		r, err := translateRBACFilter("rbac", &rbacfilterv3.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
			"p": {Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}}, Principals: []*rbacv3.Principal{p}}}}})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	payload := func(claims map[string]any) map[string]map[string]any {
		return map[string]map[string]any{jwt.FilterName: {"payload": claims}}
	}
	notPrincipal := &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: xdstest.RequestPrincipal("iss", "alice")}}
	inverted := xdstest.RequestClaim("groups", "dev")
	inverted.GetMetadata().Invert = true
	for _, tc := range []struct {
		name string
		p    *rbacv3.Principal
		md   map[string]map[string]any
		want bool
	}{
		{"principal", xdstest.RequestPrincipal("iss", "alice"), payload(map[string]any{"iss": "iss", "sub": "alice"}), true},
		{"principal: other sub", xdstest.RequestPrincipal("iss", "alice"), payload(map[string]any{"iss": "iss", "sub": "bob"}), false},
		{"principal: no token", xdstest.RequestPrincipal("iss", "alice"), nil, false},
		{"notRequestPrincipals: no token", notPrincipal, nil, true},
		{"claim in a list", xdstest.RequestClaim("groups", "dev"), payload(map[string]any{"groups": []any{"ops", "dev"}}), true},
		{"claim as a string", xdstest.RequestClaim("groups", "dev"), payload(map[string]any{"groups": "dev"}), true},
		{"claim as a number", xdstest.RequestClaim("groups", "1"), payload(map[string]any{"groups": 1.0}), false},
		{"claim absent", xdstest.RequestClaim("groups", "dev"), payload(map[string]any{}), false},
		{"inverted, no token", inverted, nil, true},
		{"other filter's metadata", xdstest.RequestPrincipal("iss", "alice"), map[string]map[string]any{"istio_authn": {"payload": map[string]any{"iss": "iss", "sub": "alice"}}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, _ := allow(tc.p).Allowed(&RBACInput{Metadata: tc.md}); got != tc.want {
				t.Errorf("allowed = %v, want %v", got, tc.want)
			}
		})
	}
}
