package security_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/internal/jwt/jwttest"
	"github.com/weftmesh/weft/security"
)

// jwtPolicies is a RequestAuthentication for issuer (keys at jwksURI) and
// an AuthorizationPolicy that lets alice read, members of the admins
// group (a list claim) or tokens with the scope "write" write, and
// denies bob.
func jwtPolicies(issuer, jwksURI string) string {
	return fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: shop}
spec:
  jwtRules:
  - issuer: %[1]q
    jwksUri: %[2]q
    audiences: [shop]
    fromHeaders: [{name: Authorization, prefix: "Bearer "}, {name: x-jwt}]
    fromParams: [token]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-bob, namespace: shop}
spec:
  action: DENY
  rules:
  - from: [{source: {requestPrincipals: ["%[1]s/*"]}}]
    when: [{key: "request.auth.claims[sub]", values: [bob]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: readers, namespace: shop}
spec:
  rules:
  - from: [{source: {requestPrincipals: ["%[1]s/alice"]}}]
    to: [{operation: {methods: [GET]}}]
  - to: [{operation: {methods: [POST]}}]
    when: [{key: "request.auth.claims[groups]", values: [admins]}]
  - to: [{operation: {methods: [POST]}}]
    when:
    - {key: "request.auth.claims[scope]", values: [write]}
    - {key: request.auth.audiences, values: [shop]}
    - {key: request.auth.presenter, notValues: [evil]}
  - to: [{operation: {paths: [/public]}}]
`, issuer, jwksURI)
}

func writePolicy(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestRequestAuthentication: Istio's RequestAuthentication from the
// policy file, with the AuthorizationPolicies that read its tokens, on an
// HTTP handler and a gRPC server. Istio's documented semantics are the
// reference: "a request that contains an invalid token is rejected" (401,
// UNAUTHENTICATED), "requests with no token are accepted, but will not
// have an authenticated identity" (the AuthorizationPolicy decides: 403,
// PERMISSION_DENIED).
func TestRequestAuthentication(t *testing.T) {
	iss := jwttest.NewIssuer(t, "https://issuer.test")
	other := jwttest.NewIssuer(t, "https://other.test")
	jwks := jwttest.NewServer(t, iss.JWKS())
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writePolicy(t, path, jwtPolicies(iss.Name, jwks.URI()))
	w, err := security.WatchPolicyFile(path, security.WithLogger(discard()))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	hs := httptest.NewServer(security.AuthorizationHandler(w, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		p, _ := security.RequestPrincipal(r.Context())
		c, _ := security.RequestClaims(r.Context())
		fmt.Fprintf(rw, "%s %v authorization=%v", p, c["sub"], r.Header.Get("Authorization") != "")
	}), security.WithLogger(discard())))
	defer hs.Close()
	defer hs.Client().CloseIdleConnections()

	seen := make(chan string, 1)
	gaddr := serveGRPC(t, insecure.NewCredentials(), &principalHealth{seen: seen},
		// The authorization interceptor alone validates tokens first,
		// and hands the handler the verified principal.
		grpc.ChainUnaryInterceptor(security.UnaryServerInterceptor(w, security.WithLogger(discard()))))
	cc, err := grpc.NewClient(gaddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	hc := healthgrpc.NewHealthClient(cc)

	tok := func(c jwttest.Claims) string {
		if _, ok := c["aud"]; !ok {
			c["aud"] = "shop"
		}
		return iss.Token(t, c)
	}
	alice := tok(jwttest.Claims{"sub": "alice"})
	admin := tok(jwttest.Claims{"sub": "carol", "groups": []string{"staff", "admins"}})
	writer := tok(jwttest.Claims{"sub": "dave", "scope": "read write"})
	bob := tok(jwttest.Claims{"sub": "bob", "groups": []string{"admins"}})
	pubHS := jwttest.SignWith(t, jose.HS256, []byte(iss.JWKS()), "rsa", jwttest.Claims{"iss": iss.Name, "sub": "alice", "aud": "shop"})
	type hdr = map[string]string
	for _, tc := range []struct {
		name     string
		method   string // HTTP; gRPC calls are POSTs
		path     string
		header   hdr
		query    string
		wantHTTP int
		wantGRPC codes.Code // 0: the case is HTTP only
		body     string
	}{
		{name: "alice reads", method: "GET", header: hdr{"Authorization": "Bearer " + alice}, wantHTTP: 200,
			body: iss.Name + "/alice alice authorization=false"},
		{name: "alice in x-jwt", method: "GET", header: hdr{"X-Jwt": alice}, wantHTTP: 200},
		{name: "alice in the token param", method: "GET", query: "token=" + alice, wantHTTP: 200},
		{name: "alice writes", method: "POST", header: hdr{"Authorization": "Bearer " + alice}, wantHTTP: 403, wantGRPC: codes.PermissionDenied},
		{name: "admins write (list claim)", method: "POST", header: hdr{"Authorization": "Bearer " + admin}, wantHTTP: 200, wantGRPC: codes.OK},
		{name: "scope write (space-delimited claim)", method: "POST", header: hdr{"Authorization": "Bearer " + writer}, wantHTTP: 200, wantGRPC: codes.OK},
		{name: "presenter evil", method: "POST", header: hdr{"Authorization": "Bearer " + tok(jwttest.Claims{"sub": "dave", "scope": "write", "azp": "evil"})}, wantHTTP: 403, wantGRPC: codes.PermissionDenied},
		{name: "bob denied though admin", method: "POST", header: hdr{"Authorization": "Bearer " + bob}, wantHTTP: 403, wantGRPC: codes.PermissionDenied},
		{name: "no token, public", method: "GET", path: "/public", wantHTTP: 200},
		{name: "no token", method: "POST", wantHTTP: 403, wantGRPC: codes.PermissionDenied},
		{name: "no token, Basic auth", method: "POST", header: hdr{"Authorization": "Basic dXNlcjpwYXNz"}, wantHTTP: 403, wantGRPC: codes.PermissionDenied},
		{name: "expired", method: "GET", header: hdr{"Authorization": "Bearer " + tok(jwttest.Claims{"sub": "alice", "exp": time.Now().Add(-time.Hour).Unix()})}, wantHTTP: 401, wantGRPC: codes.Unauthenticated},
		{name: "nbf in the future", method: "GET", header: hdr{"Authorization": "Bearer " + tok(jwttest.Claims{"sub": "alice", "nbf": time.Now().Add(time.Hour).Unix()})}, wantHTTP: 401, wantGRPC: codes.Unauthenticated},
		{name: "wrong issuer", method: "GET", header: hdr{"Authorization": "Bearer " + other.Token(t, jwttest.Claims{"sub": "alice", "aud": "shop"})}, wantHTTP: 401, wantGRPC: codes.Unauthenticated},
		{name: "wrong audience", method: "GET", header: hdr{"Authorization": "Bearer " + tok(jwttest.Claims{"sub": "alice", "aud": "bank"})}, wantHTTP: 401, wantGRPC: codes.Unauthenticated},
		{name: "kid not found", method: "GET", header: hdr{"Authorization": "Bearer " + iss.Sign(t, jose.RS256, "gone", jwttest.Claims{"sub": "alice", "aud": "shop"})}, wantHTTP: 401, wantGRPC: codes.Unauthenticated},
		{name: "alg none", method: "GET", header: hdr{"Authorization": "Bearer " + jwttest.Unsigned(jwttest.Claims{"iss": iss.Name, "sub": "alice", "aud": "shop"})}, wantHTTP: 401, wantGRPC: codes.Unauthenticated},
		{name: "HS256 keyed with the JWKS", method: "GET", header: hdr{"Authorization": "Bearer " + pubHS}, wantHTTP: 401, wantGRPC: codes.Unauthenticated},
		{name: "malformed", method: "GET", header: hdr{"Authorization": "Bearer a.b.c"}, wantHTTP: 401, wantGRPC: codes.Unauthenticated},
		{name: "oversized", method: "GET", header: hdr{"Authorization": "Bearer " + strings.Repeat("a", 17<<10)}, wantHTTP: 401, wantGRPC: codes.Unauthenticated},
		{name: "header and param disagree", method: "GET", header: hdr{"Authorization": "Bearer " + alice}, query: "token=" + admin, wantHTTP: 401},
		{name: "two locations disagree", method: "GET", header: hdr{"Authorization": "Bearer " + alice, "X-Jwt": admin}, wantHTTP: 401, wantGRPC: codes.Unauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Run("http", func(t *testing.T) {
				target := hs.URL + tc.path
				if tc.query != "" {
					target += "?" + tc.query
				}
				req, _ := http.NewRequest(tc.method, target, nil)
				for k, v := range tc.header {
					req.Header.Set(k, v)
				}
				resp, err := hs.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tc.wantHTTP {
					t.Fatalf("%s: %d %q, want %d", tc.method, resp.StatusCode, b, tc.wantHTTP)
				}
				if tc.body != "" && string(b) != tc.body {
					t.Errorf("handler saw %q, want %q", b, tc.body)
				}
				if resp.StatusCode == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("401 without WWW-Authenticate: Bearer")
				}
			})
			if tc.wantGRPC == 0 {
				return // HTTP only: a GET, a path or a query
			}
			t.Run("grpc", func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				for k, v := range tc.header {
					ctx = metadata.AppendToOutgoingContext(ctx, strings.ToLower(k), v)
				}
				_, err := hc.Check(ctx, &healthgrpc.HealthCheckRequest{})
				want := tc.wantGRPC
				if got := status.Code(err); got != want {
					t.Fatalf("Check = %v, want %v", err, want)
				}
				if err == nil {
					if got := <-seen; strings.Contains(got, "authorization=true") || !strings.HasPrefix(got, iss.Name+"/") {
						t.Errorf("the handler saw %q, want the principal and no token metadata", got)
					}
				}
			})
		})
	}
}

type principalHealth struct {
	healthgrpc.UnimplementedHealthServer
	seen chan string
}

func (h *principalHealth) Check(ctx context.Context, _ *healthgrpc.HealthCheckRequest) (*healthgrpc.HealthCheckResponse, error) {
	p, _ := security.RequestPrincipal(ctx)
	md, _ := metadata.FromIncomingContext(ctx)
	select {
	case h.seen <- fmt.Sprintf("%s authorization=%v", p, len(md.Get("authorization")) > 0):
	default:
	}
	return &healthgrpc.HealthCheckResponse{Status: healthgrpc.HealthCheckResponse_SERVING}, nil
}

// TestRequestAuthenticationReload: the watcher follows a rotated issuer,
// and fails closed on a file whose RequestAuthentication is invalid (an
// unparsable inline key set): the policies and keys in force stay.
func TestRequestAuthenticationReload(t *testing.T) {
	one := jwttest.NewIssuer(t, "https://one.test")
	two := jwttest.NewIssuer(t, "https://two.test")
	path := filepath.Join(t.TempDir(), "policy.yaml")
	inline := func(iss *jwttest.Issuer, jwks string) string {
		return fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt}
spec:
  jwtRules: [{issuer: %q, jwks: %q}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: any-token}
spec:
  rules: [{from: [{source: {requestPrincipals: ["*"]}}]}]
`, iss.Name, jwks)
	}
	writePolicy(t, path, inline(one, string(one.JWKS())))
	w, err := security.WatchPolicyFile(path, security.WithPollInterval(5*time.Millisecond), security.WithLogger(discard()))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	decide := func(tok string) (authErr error, allow bool) {
		r := security.Request{Method: "GET", Path: "/", Headers: http.Header{"Authorization": {"Bearer " + tok}}}
		if err := w.AuthenticateRequest(context.Background(), &r); err != nil {
			return err, false
		}
		return nil, w.Evaluate(&r).Allow
	}
	if err, ok := decide(one.Token(t, nil)); err != nil || !ok {
		t.Fatalf("issuer one: %v %v", err, ok)
	}
	writePolicy(t, path, inline(two, `{"keys": "broken"}`))
	st := waitStatus(t, w, func(s security.PolicyStatus) bool { return s.Err != nil })
	if !strings.Contains(st.Err.Error(), "jwks") {
		t.Errorf("refusal %v does not name the jwks field", st.Err)
	}
	if err, ok := decide(one.Token(t, nil)); err != nil || !ok {
		t.Fatalf("after a refused file, issuer one: %v %v, want the last good policy in force", err, ok)
	}
	writePolicy(t, path, inline(two, string(two.JWKS())))
	waitStatus(t, w, func(s security.PolicyStatus) bool { return s.Err == nil && s.Version == 2 })
	if err, _ := decide(one.Token(t, nil)); err == nil {
		t.Error("issuer one accepted after rotation to issuer two")
	}
	if err, ok := decide(two.Token(t, nil)); err != nil || !ok {
		t.Errorf("issuer two: %v %v", err, ok)
	}
	// No token: authenticated nobody, and the policy wants a principal.
	r := security.Request{Method: "GET", Path: "/"}
	if err := w.AuthenticateRequest(context.Background(), &r); err != nil || w.Evaluate(&r).Allow {
		t.Errorf("no token: %v, allowed %v; want no error and a denial", err, w.Evaluate(&r).Allow)
	}
}

func TestRequestAuthenticationParseErrors(t *testing.T) {
	const head = "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: ra}\n"
	for _, tc := range []struct {
		name, doc string
		want      []string
	}{
		{"no issuer", head + "spec:\n  jwtRules: [{jwksUri: 'https://x/jwks'}]\n", []string{"jwtRules[0].issuer", "must be set"}},
		{"no keys", head + "spec:\n  jwtRules: [{issuer: x}]\n", []string{"jwtRules[0].jwksUri", "must be set"}},
		{"both keys", head + "spec:\n  jwtRules: [{issuer: x, jwksUri: 'https://x/jwks', jwks: '{}'}]\n", []string{"jwtRules[0].jwks", "only one"}},
		{"bad jwks", head + "spec:\n  jwtRules: [{issuer: x, jwks: '{\"keys\": 1}'}]\n", []string{"jwtRules[0].jwks"}},
		{"bad uri", head + "spec:\n  jwtRules: [{issuer: x, jwksUri: 'file:///etc/passwd'}]\n", []string{"jwtRules[0].jwksUri", "not http"}},
		{"bad timeout", head + "spec:\n  jwtRules: [{issuer: x, jwksUri: 'https://x/jwks', timeout: soon}]\n", []string{"jwtRules[0].timeout"}},
		{"output to header", head + "spec:\n  jwtRules: [{issuer: x, jwksUri: 'https://x/jwks', outputPayloadToHeader: x-p}]\n", []string{"outputPayloadToHeader", "not supported"}},
		{"unknown field", head + "spec:\n  jwtRules: [{issuer: x, jwksUri: 'https://x/jwks', fromHeader: [{name: a}]}]\n", []string{"line 5", "fromHeaders", "spec.jwtRules[]"}},
		{"authorization rules", head + "spec:\n  rules: [{}]\n", []string{"spec.rules", "jwtRules"}},
		{"jwtRules in an AuthorizationPolicy", "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: ap}\nspec:\n  jwtRules: [{issuer: x}]\n", []string{"spec.jwtRules"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := security.ParseAuthorizationPolicies([]byte(tc.doc))
			if err == nil {
				t.Fatalf("parsed; want an error containing %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
