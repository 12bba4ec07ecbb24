package interop

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/jwt"
	"github.com/weftmesh/weft/internal/jwt/jwttest"
	"github.com/weftmesh/weft/internal/xds"
	"github.com/weftmesh/weft/security"
)

// jwtTranslationPolicies exercise every request.auth field the policy file
// accepts, with Istio's wildcards.
const jwtTranslationPolicies = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: foo}
spec:
  action: DENY
  rules:
  - from: [{source: {requestPrincipals: ["https://b.test/banned"]}}]
  - when: [{key: request.auth.presenter, values: ["evil*"]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow, namespace: foo}
spec:
  rules:
  - from: [{source: {requestPrincipals: ["https://a.test/alice", "*/carol"]}}]
  - from: [{source: {requestPrincipals: ["https://b.test/*"], notRequestPrincipals: ["*/dave"]}}]
    when: [{key: "request.auth.claims[groups]", values: ["dev", "ops*"]}]
  - from: [{source: {requestPrincipals: ["*"]}}]
    when:
    - {key: "request.auth.claims[org][team]", values: ["core"]}
    - {key: request.auth.audiences, values: ["api", "*.internal"]}
  - when:
    - {key: request.auth.principal, values: ["https://a.test*"]}
    - {key: "request.auth.claims[scope]", values: ["write"]}
    - {key: "request.auth.claims[level]", notValues: ["guest"]}
  - from: [{source: {notRequestPrincipals: ["*"]}}]
    to: [{operation: {paths: ["/public"]}}]
`

// TestIstiodJWTTranslationDecidesAsPolicyFile feeds the policies to
// istiod's translation (metadata matchers on the jwt_authn payload) and
// to Weft's policy file with a RequestAuthentication for two issuers, and
// wants, for every token of a cross product of issuers, subjects, groups,
// audiences, presenters, nested claims and scopes, and for no token, the
// decision of the file (which verifies the token) to be that of istiod's
// RBAC run on the verified payload by Weft's xDS path.
func TestIstiodJWTTranslationDecidesAsPolicyFile(t *testing.T) {
	a, b := jwttest.NewIssuer(t, "https://a.test"), jwttest.NewIssuer(t, "https://b.test")
	ra := fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: foo}
spec:
  jwtRules:
  - {issuer: %q, jwks: %q}
  - {issuer: %q, jwks: %q}
---
`, a.Name, a.JWKS(), b.Name, b.JWKS())
	set, err := security.ParseAuthorizationPolicies([]byte(ra + jwtTranslationPolicies))
	if err != nil {
		t.Fatal(err)
	}
	chain := istiodChain(t, jwtTranslationPolicies)

	type token struct {
		iss    *jwttest.Issuer
		claims jwttest.Claims
	}
	tokens := []*token{nil}
	for _, iss := range []*jwttest.Issuer{a, b} {
		for _, sub := range []string{"alice", "carol", "dave", "banned", "eve"} {
			for _, groups := range []any{nil, "dev", []string{"x", "ops-1"}, []string{"qa"}} {
				for _, aud := range []any{nil, "api", []string{"x", "svc.internal"}} {
					for _, extra := range []jwttest.Claims{
						{}, {"azp": "evil-app"}, {"org": map[string]any{"team": "core"}},
						{"scope": "read write", "level": "admin"}, {"scope": "write", "level": "guest"}, {"scope": "write"},
					} {
						c := jwttest.Claims{"sub": sub}
						if groups != nil {
							c["groups"] = groups
						}
						if aud != nil {
							c["aud"] = aud
						}
						for k, v := range extra {
							c[k] = v
						}
						tokens = append(tokens, &token{iss, c})
					}
				}
			}
		}
	}
	n, allowed := 0, 0
	for _, tok := range tokens {
		for _, path := range []string{"/", "/public"} {
			h := http.Header{}
			var md map[string]map[string]any
			desc := "no token"
			if tok != nil {
				h.Set("Authorization", "Bearer "+tok.iss.Token(t, tok.claims))
				md = payloadMetadata(t, tok.iss.Name, tok.claims)
				desc = fmt.Sprintf("%s %v", tok.iss.Name, tok.claims)
			}
			r := security.Request{Method: "GET", Path: path, Headers: h}
			if err := set.AuthenticateRequest(context.Background(), &r); err != nil {
				t.Fatalf("%s: the policy file refused a valid token: %v", desc, err)
			}
			file := set.Evaluate(&r).Allow
			viaIstiod := true
			in := &xds.RBACInput{Request: &xds.Request{Method: "GET", Path: path, Header: h}, Metadata: md,
				Local: netip.MustParseAddrPort("10.0.0.1:8080"), Remote: netip.MustParseAddrPort("10.0.0.2:5000")}
			for _, f := range chain {
				if ok, _ := f.Allowed(in); !ok && f.Action != xds.RBACLog {
					viaIstiod = false
					break
				}
			}
			if file != viaIstiod {
				t.Fatalf("%s on %s: policy file allow=%v, istiod's RBAC allow=%v", desc, path, file, viaIstiod)
			}
			n++
			if file {
				allowed++
			}
		}
	}
	t.Logf("%d requests, %d allowed, decided alike", n, allowed)
}

// payloadMetadata is the metadata Envoy's jwt_authn publishes for a
// verified token with claims, as istiod configures it: the payload under
// "payload", with scope and permission split on spaces.
func payloadMetadata(t *testing.T, iss string, c jwttest.Claims) map[string]map[string]any {
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var p map[string]any
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	p["iss"] = iss
	for _, k := range []string{"scope", "permission"} {
		if s, ok := p[k].(string); ok {
			var l []any
			for _, w := range strings.Fields(s) {
				l = append(l, w)
			}
			p[k] = l
		}
	}
	return map[string]map[string]any{jwt.FilterName: {"payload": p}}
}
