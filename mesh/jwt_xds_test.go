package mesh_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/weftmesh/weft/internal/jwt/jwttest"
	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/security"
)

// TestXDSInboundJWT serves an HTTP and a gRPC server under an inbound
// listener carrying what istiod makes of
//
//	RequestAuthentication: issuer, audiences [weft], jwksUri (a JWKS server on 127.0.0.1)
//	AuthorizationPolicy ALLOW: requestPrincipals [<issuer>/alice]
//	                           when request.auth.claims[groups] in [dev]
//
// a jwt_authn filter, then an RBAC filter with metadata matchers on the
// verified payload. Istio's documented semantics, Envoy's jwt_authn being
// the reference: "a request with an invalid token is rejected" (401, gRPC
// UNAUTHENTICATED); a request without one passes authentication and
// authorization decides (403, PERMISSION_DENIED); a valid token is the
// request principal "iss/sub". The table runs on both protocols.
func TestXDSInboundJWT(t *testing.T) {
	iss := jwttest.NewIssuer(t, "https://issuer.test")
	other := jwttest.NewIssuer(t, "https://other.test")
	jwks := jwttest.NewServer(t, iss.JWKS())

	cp := xdstest.NewServer(t)
	var bs map[string]any
	if err := json.Unmarshal(cp.Bootstrap(xdsNode), &bs); err != nil {
		t.Fatal(err)
	}
	bs["server_listener_resource_name_template"] = inboundTemplate
	bootstrap, _ := json.Marshal(bs)
	srv := newMesh(t, mesh.WithBootstrap(bootstrap))

	listener := func(addr string) *listenerv3.Listener {
		allow := xdstest.RBACFilter("envoy.filters.http.rbac", &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
			"ns-require-jwt-0": {
				Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}},
				Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{
					xdstest.RequestPrincipal(iss.Name, "alice"), xdstest.RequestClaim("groups", "dev"),
				}}}}},
			}}})
		fc := xdstest.FilterChain("inbound", xdstest.InboundRoutes("inbound"),
			xdstest.JWTFilter(xdstest.IstioJWT(iss.Name, []string{"weft"}, jwks.URI(), nil)), allow)
		return xdstest.ServerListener(strings.ReplaceAll(inboundTemplate, "%s", addr), netip.MustParseAddrPort(addr), nil, fc)
	}

	// HTTP: the handler answers with the request principal and whether
	// it still sees the Authorization header.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := security.RequestPrincipal(r.Context())
		fmt.Fprintf(w, "%s authorization=%v", p, r.Header.Get("Authorization") != "")
	}))

	// gRPC: an interceptor after the mesh's records the principal.
	principals := make(chan string, 1)
	gs, err := srv.NewGRPCServer(grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		p, _ := security.RequestPrincipal(ctx)
		md, _ := metadata.FromIncomingContext(ctx)
		select {
		case principals <- fmt.Sprintf("%s authorization=%v", p, len(md.Get("authorization")) > 0):
		default:
		}
		return h(ctx, req)
	}))
	if err != nil {
		t.Fatal(err)
	}
	healthpb.RegisterHealthServer(gs, health.NewServer())
	gln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(gln)
	defer gs.Stop()
	grpcAddr := gln.Addr().String()
	cp.SetSnapshot(t, xdsNode, "1", listener(httpAddr), listener(grpcAddr))

	cc, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)

	alice := iss.Token(t, jwttest.Claims{"sub": "alice", "aud": "weft", "groups": []string{"ops", "dev"}})
	aliceScalar := iss.Token(t, jwttest.Claims{"sub": "alice", "aud": "weft", "groups": "dev"})
	for _, tc := range []struct {
		name     string
		token    string
		wantHTTP int
		wantGRPC codes.Code
	}{
		{"valid token, principal and claim", alice, 200, codes.OK},
		{"valid token, claim as a string", aliceScalar, 200, codes.OK},
		{"valid ES256 token", iss.Sign(t, jose.ES256, "ec", jwttest.Claims{"sub": "alice", "aud": "weft", "groups": "dev"}), 200, codes.OK},
		{"no token: authorization decides", "", 403, codes.PermissionDenied},
		{"valid token, other subject", iss.Token(t, jwttest.Claims{"sub": "bob", "aud": "weft", "groups": "dev"}), 403, codes.PermissionDenied},
		{"valid token, claim missing", iss.Token(t, jwttest.Claims{"sub": "alice", "aud": "weft"}), 403, codes.PermissionDenied},
		{"expired", iss.Token(t, jwttest.Claims{"sub": "alice", "aud": "weft", "groups": "dev", "exp": time.Now().Add(-time.Hour).Unix()}), 401, codes.Unauthenticated},
		{"wrong issuer", other.Token(t, jwttest.Claims{"sub": "alice", "aud": "weft", "groups": "dev"}), 401, codes.Unauthenticated},
		{"forged issuer", other.Token(t, jwttest.Claims{"iss": iss.Name, "sub": "alice", "aud": "weft", "groups": "dev"}), 401, codes.Unauthenticated},
		{"wrong audience", iss.Token(t, jwttest.Claims{"sub": "alice", "aud": "x", "groups": "dev"}), 401, codes.Unauthenticated},
		{"alg none", jwttest.Unsigned(jwttest.Claims{"iss": iss.Name, "sub": "alice", "aud": "weft", "groups": "dev"}), 401, codes.Unauthenticated},
		{"malformed", "abc.def.ghi", 401, codes.Unauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Run("http", func(t *testing.T) {
				var code int
				var body string
				// The first request waits for the listener.
				deadline := time.Now().Add(15 * time.Second)
				for {
					req, _ := http.NewRequest("GET", "http://"+httpAddr+"/items", nil)
					if tc.token != "" {
						req.Header.Set("Authorization", "Bearer "+tc.token)
					}
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					code, body = resp.StatusCode, string(b)
					if code != http.StatusServiceUnavailable || time.Now().After(deadline) {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				if code != tc.wantHTTP {
					t.Fatalf("status %d %q, want %d", code, body, tc.wantHTTP)
				}
				if code == 200 && body != iss.Name+"/alice authorization=false" {
					t.Errorf("handler saw %q, want the principal and no Authorization header (forward is false)", body)
				}
			})
			t.Run("grpc", func(t *testing.T) {
				cctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				defer cancel()
				if tc.token != "" {
					cctx = metadata.AppendToOutgoingContext(cctx, "authorization", "Bearer "+tc.token)
				}
				_, err := hc.Check(cctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
				if got := grpcstatus.Code(err); got != tc.wantGRPC {
					t.Fatalf("Check = %v, want %v", err, tc.wantGRPC)
				}
				if err == nil {
					if got := <-principals; got != iss.Name+"/alice authorization=false" {
						t.Errorf("handler saw %q, want the principal and no authorization metadata", got)
					}
				}
			})
		})
	}
	http.DefaultClient.CloseIdleConnections()
	if n := jwks.Fetches.Load(); n < 1 || n > 3 {
		t.Errorf("the JWKS was fetched %d times for one cache period, want 1 (one cache for both listeners)", n)
	}
}

// TestPolicyFileJWT: without a control plane, the policy file's
// RequestAuthentication and AuthorizationPolicy on requestPrincipals
// decide alike on a mesh's HTTP server and gRPC server, the JWKS fetched
// from its jwksUri.
func TestPolicyFileJWT(t *testing.T) {
	iss := jwttest.NewIssuer(t, "https://issuer.test")
	jwks := jwttest.NewServer(t, iss.JWKS())
	policy := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(policy, fmt.Appendf(nil, `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt}
spec:
  jwtRules: [{issuer: %q, jwksUri: %q}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: alice}
spec:
  rules: [{from: [{source: {requestPrincipals: ["%s/alice"]}}]}]
`, iss.Name, jwks.URI(), iss.Name), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := newMesh(t, mesh.WithAuthorizationPolicyFile(policy))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := security.RequestPrincipal(r.Context())
		io.WriteString(w, p)
	}))
	gs, err := srv.NewGRPCServer()
	if err != nil {
		t.Fatal(err)
	}
	healthpb.RegisterHealthServer(gs, health.NewServer())
	gln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(gln)
	defer gs.Stop()
	cc, err := grpc.NewClient(gln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	defer http.DefaultClient.CloseIdleConnections()

	for _, tc := range []struct {
		name     string
		token    string
		wantHTTP int
		wantGRPC codes.Code
	}{
		{"alice", iss.Token(t, jwttest.Claims{"sub": "alice"}), 200, codes.OK},
		{"bob", iss.Token(t, jwttest.Claims{"sub": "bob"}), 403, codes.PermissionDenied},
		{"no token", "", 403, codes.PermissionDenied},
		{"expired", iss.Token(t, jwttest.Claims{"sub": "alice", "exp": time.Now().Add(-time.Hour).Unix()}), 401, codes.Unauthenticated},
		{"HS256", jwttest.SignWith(t, jose.HS256, iss.JWKS(), "rsa", jwttest.Claims{"iss": iss.Name, "sub": "alice"}), 401, codes.Unauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/", nil)
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantHTTP || tc.wantHTTP == 200 && string(b) != iss.Name+"/alice" {
				t.Errorf("HTTP: %d %q, want %d", resp.StatusCode, b, tc.wantHTTP)
			}
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if tc.token != "" {
				cctx = metadata.AppendToOutgoingContext(cctx, "authorization", "Bearer "+tc.token)
			}
			_, err = healthpb.NewHealthClient(cc).Check(cctx, &healthpb.HealthCheckRequest{})
			if got := grpcstatus.Code(err); got != tc.wantGRPC {
				t.Errorf("gRPC: %v, want %v", err, tc.wantGRPC)
			}
		})
	}
}
