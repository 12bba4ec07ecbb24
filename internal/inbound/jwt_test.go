//lint:file-ignore SA1019 istiod writes requestPrincipals as the deprecated metadata matchers

package inbound_test

import (
	"context"
	"net/http"
	"net/netip"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"

	"github.com/weftmesh/weft/internal/inbound"
	"github.com/weftmesh/weft/internal/jwt"
	"github.com/weftmesh/weft/internal/jwt/jwttest"
	"github.com/weftmesh/weft/internal/xds"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// TestDecideJWT: a chain's jwt_authn filter runs before its RBAC filters,
// in Envoy's filter order: an invalid token is Unauthenticated, a valid
// one is the metadata the RBAC filters after it read, and an RBAC filter
// placed before it sees only tokens verified earlier (the local policy's).
func TestDecideJWT(t *testing.T) {
	iss := jwttest.NewIssuer(t, "https://issuer.test")
	allowAlice := func(name string) *rbacv3.RBAC {
		return &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
			name: {Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}},
				Principals: []*rbacv3.Principal{xdstest.RequestPrincipal(iss.Name, "alice")}}}}
	}
	jwtFilter := xdstest.JWTFilter(xdstest.IstioJWT(iss.Name, nil, "", iss.JWKS()))
	after := decode(t, xdstest.ServerListener("in", netip.MustParseAddrPort("0.0.0.0:8080"), nil,
		xdstest.FilterChain("c", xdstest.InboundRoutes("r"), jwtFilter, xdstest.RBACFilter("rbac", allowAlice("alice")))))
	before := decode(t, xdstest.ServerListener("in", netip.MustParseAddrPort("0.0.0.0:8080"), nil,
		xdstest.FilterChain("c", xdstest.InboundRoutes("r"), xdstest.RBACFilter("rbac", allowAlice("alice")), jwtFilter)))
	auths := func(l *xds.ServerListener) map[*xds.FilterChain]*jwt.Authenticator {
		a, err := jwt.NewAuthenticator(l.FilterChains[0].JWT.Providers, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(a.Close)
		return map[*xds.FilterChain]*jwt.Authenticator{l.FilterChains[0]: a}
	}
	alice := iss.Token(t, jwttest.Claims{"sub": "alice"})
	// What the local RequestAuthentication verified earlier.
	local, err := auths(after)[after.FilterChains[0]].Authenticate(context.Background(),
		&jwt.Request{Header: http.Header{"Authorization": {"Bearer " + alice}}}, &jwt.Requirement{Kind: jwt.AllowMissing})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		l      *xds.ServerListener
		auth   bool // authenticators given
		token  string
		prior  *jwt.Result
		want   inbound.Outcome
		wantOK bool // a verified token in the decision
	}{
		{"valid token", after, true, alice, nil, inbound.Allowed, true},
		{"other subject", after, true, iss.Token(t, jwttest.Claims{"sub": "bob"}), nil, inbound.Denied, false},
		{"no token", after, true, "", nil, inbound.Denied, false},
		{"invalid token", after, true, "a.b.c", nil, inbound.Unauthenticated, false},
		{"no authenticator for the chain", after, false, alice, nil, inbound.Unauthenticated, false},
		{"no authenticator, no token", after, false, "", nil, inbound.Unauthenticated, false},
		{"RBAC before jwt_authn: the chain's token is not seen yet", before, true, alice, nil, inbound.Denied, false},
		{"RBAC before jwt_authn: a token verified earlier is", before, true, "", local, inbound.Allowed, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.token != "" {
				h.Set("Authorization", "Bearer "+tc.token)
			}
			r := &inbound.Request{Conn: xds.ConnInfo{Local: netip.MustParseAddrPort("127.0.0.1:8080"), Remote: netip.MustParseAddrPort("127.0.0.1:5000")},
				Host: "h", Req: &xds.Request{Method: "GET", Path: "/", Header: h}, Auth: tc.prior}
			if tc.auth {
				r.Authenticators = auths(tc.l)
			}
			d := inbound.Decide(tc.l, nil, r, nil)
			if d.Outcome != tc.want {
				t.Fatalf("outcome %v (%v), want %v", d.Outcome, d.Err, tc.want)
			}
			if got := d.Auth.First() != nil; got != tc.wantOK {
				t.Errorf("verified token in the decision: %v, want %v", got, tc.wantOK)
			}
			if tc.want == inbound.Unauthenticated && d.Err == nil {
				t.Error("Unauthenticated without a reason")
			}
		})
	}
}
