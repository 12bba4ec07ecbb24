package security_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/security"
	"github.com/weftmesh/weft/security/spiffetest"
)

func ExampleParseAuthorizationPolicies() {
	policies, err := security.ParseAuthorizationPolicies([]byte(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: shop}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin", "/admin/*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: frontend-reads, namespace: shop}
spec:
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/frontend"]}}]
    to: [{operation: {methods: ["GET"], paths: ["/items*"]}}]
`))
	if err != nil {
		panic(err)
	}
	frontend := spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/frontend")
	for _, r := range []security.Request{
		{Method: "GET", Path: "/items/42", SourceID: frontend},
		{Method: "DELETE", Path: "/items/42", SourceID: frontend},
		{Method: "GET", Path: "/items/../admin", SourceID: frontend},
		{Method: "GET", Path: "/items/42"}, // plaintext caller
	} {
		d := policies.Evaluate(&r)
		fmt.Printf("%-6s %-16s allow=%-5v policy=%q\n", r.Method, r.Path, d.Allow, d.Policy)
	}
	// Output:
	// GET    /items/42        allow=true  policy="shop/frontend-reads"
	// DELETE /items/42        allow=false policy=""
	// GET    /items/../admin  allow=false policy="shop/deny-admin"
	// GET    /items/42        allow=false policy=""
}

func ExampleNormalizePath() {
	for _, p := range []string{"//admin", "/a/../admin", "/a/%2e%2e/admin", "/%61dmin", "/api/v1/"} {
		n, err := security.NormalizePath(p)
		fmt.Println(p, "->", n, err)
	}
	for _, p := range []string{"/a/..%2Fadmin", `/a\..\admin`, "/%252e%252e/admin"} {
		_, err := security.NormalizePath(p)
		fmt.Println(p, "->", err)
	}
	// Output:
	// //admin -> /admin <nil>
	// /a/../admin -> /admin <nil>
	// /a/%2e%2e/admin -> /admin <nil>
	// /%61dmin -> /admin <nil>
	// /api/v1/ -> /api/v1/ <nil>
	// /a/..%2Fadmin -> security: encoded slash or backslash in path
	// /a\..\admin -> security: backslash in path
	// /%252e%252e/admin -> security: doubly percent-encoded path
}

func ExampleNormalizeRequest() {
	h := security.NormalizeRequest(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "path %s, request URI %s", r.URL.Path, r.RequestURI)
	}), security.WithLogger(slog.New(slog.DiscardHandler)))
	for _, target := range []string{"/admin/%2e%2e/x?a=1", "http://orders//a/./b%20c", "/admin/..%2Fx", `/admin/..\x`} {
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET " + target + " HTTP/1.1\r\nHost: orders\r\n\r\n")))
		if err != nil {
			panic(err)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		fmt.Println(target, "->", w.Code, strings.TrimSpace(w.Body.String()))
	}
	// Output:
	// /admin/%2e%2e/x?a=1 -> 200 path /x, request URI /x?a=1
	// http://orders//a/./b%20c -> 200 path /a/b c, request URI /a/b%20c
	// /admin/..%2Fx -> 400 Bad Request
	// /admin/..\x -> 400 Bad Request
}

func ExampleAuthorizationHandler() {
	policies, err := security.ParseAuthorizationPolicies([]byte(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-mtls}
spec:
  action: DENY
  rules: [{from: [{source: {notPrincipals: ["*"]}}]}]
`))
	if err != nil {
		panic(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	h := security.AuthorizationHandler(policies, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := security.PeerID(r.Context())
		fmt.Fprintln(w, "hello", id)
	}), security.WithLogger(quiet))

	// A plaintext request has no principal and is denied.
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Print(resp.StatusCode, " ", string(body))

	// Middleware that terminated mTLS elsewhere may supply the peer ID.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/", nil)
	req = req.WithContext(security.ContextWithPeerID(req.Context(), spiffeid.RequireFromString("spiffe://example.org/web")))
	h.ServeHTTP(rec, req)
	fmt.Print(rec.Code, " ", rec.Body.String())
	// Output:
	// 403 Forbidden
	// 200 hello spiffe://example.org/web
}

// ExampleServerTLSConfig serves HTTP over SPIFFE mutual TLS on loopback;
// the handler reads the caller's verified ID.
func ExampleServerTLSConfig() {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	ca, err := spiffetest.NewCA(td)
	if err != nil {
		panic(err)
	}
	serverID := spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/api")
	clientID := spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/frontend")
	serverSVID, err := ca.IssueX509SVID(serverID, time.Hour)
	if err != nil {
		panic(err)
	}
	clientSVID, err := ca.IssueX509SVID(clientID, time.Hour)
	if err != nil {
		panic(err)
	}
	serverSrc := security.NewStaticSource(serverSVID, ca.Bundle())
	clientSrc := security.NewStaticSource(clientSVID, ca.Bundle())

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, _ := security.PeerIDFromTLS(r.TLS)
			fmt.Fprintln(w, "hello", id)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go srv.Serve(tls.NewListener(ln, security.ServerTLSConfig(serverSrc, security.AuthorizeMemberOf(td))))
	defer srv.Shutdown(context.Background())

	tr := &http.Transport{TLSClientConfig: security.ClientTLSConfig(clientSrc, security.AuthorizeID(serverID))}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("https://" + ln.Addr().String() + "/")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Print(string(body))
	// Output: hello spiffe://example.org/ns/shop/sa/frontend
}

func ExampleNewWorkloadAPISource() {
	ca, err := spiffetest.NewCA(spiffeid.RequireTrustDomainFromString("example.org"))
	if err != nil {
		panic(err)
	}
	api, err := spiffetest.StartWorkloadAPI(ca, spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/api"))
	if err != nil {
		panic(err)
	}
	defer api.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src, err := security.NewWorkloadAPISource(ctx, api.Addr()) // "" reads SPIFFE_ENDPOINT_SOCKET
	if err != nil {
		panic(err)
	}
	defer src.Close()
	svid, err := src.GetX509SVID()
	if err != nil {
		panic(err)
	}
	fmt.Println(svid.ID)
	// Output: spiffe://example.org/ns/shop/sa/api
}

func ExamplePolicySet_Evaluate() {
	policies, err := security.ParseAuthorizationPolicies([]byte(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: office-only}
spec:
  rules:
  - from: [{source: {ipBlocks: ["10.1.0.0/16"]}}]
    when: [{key: "request.headers[x-team]", values: ["payments"]}]
`))
	if err != nil {
		panic(err)
	}
	d := policies.Evaluate(&security.Request{
		Method:   "GET",
		Path:     "/ledger",
		Headers:  http.Header{"X-Team": {"payments"}},
		SourceIP: netip.MustParseAddr("10.1.2.3"),
	})
	fmt.Println(d.Allow, d.Policy)
	// Output: true office-only
}

// A RequestAuthentication with an inline key set, and a policy that
// wants its tokens: a valid token is let in as its request principal,
// an invalid one is refused with 401, a request without one with 403.
func ExampleAuthorizationHandler_requestAuthentication() {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	policies, err := security.ParseAuthorizationPolicies(fmt.Appendf(nil, `
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt}
spec:
  jwtRules: [{issuer: "https://issuer.example", audiences: [orders], jwks: %q}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwt}
spec:
  rules: [{from: [{source: {requestPrincipals: ["https://issuer.example/*"]}}]}]
`, jwks))
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(security.AuthorizationHandler(policies, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := security.RequestPrincipal(r.Context())
		fmt.Fprint(w, p)
	}), security.WithLogger(slog.New(slog.DiscardHandler))))
	defer srv.Close()

	sign := func(claims map[string]any) string {
		signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", "k1"))
		payload, _ := json.Marshal(claims)
		jws, _ := signer.Sign(payload)
		tok, _ := jws.CompactSerialize()
		return tok
	}
	exp := time.Now().Add(time.Hour).Unix()
	for _, tok := range []string{
		sign(map[string]any{"iss": "https://issuer.example", "sub": "alice", "aud": "orders", "exp": exp}),
		sign(map[string]any{"iss": "https://issuer.example", "sub": "alice", "aud": "billing", "exp": exp}),
		"",
	} {
		req, _ := http.NewRequest("GET", srv.URL+"/orders", nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			panic(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(resp.StatusCode, strings.TrimSpace(string(body)))
	}
	// Output:
	// 200 https://issuer.example/alice
	// 401 Jwt verification fails
	// 403 Forbidden
}
