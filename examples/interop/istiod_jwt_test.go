package interop

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pilot/pkg/security/authn"

	"github.com/weftmesh/weft/internal/jwt"
	"github.com/weftmesh/weft/internal/jwt/jwttest"
	"github.com/weftmesh/weft/internal/xds"
	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/security"
)

// jwtIssuer is the issuer of the tokens of TestIstiodJWT.
const jwtIssuer = "https://issuer.weft.test"

// istioJWTConfig is a plaintext service whose workload (127.0.0.6) is
// served by Weft, a RequestAuthentication for it with its jwksUri on a
// test JWKS server, and an AuthorizationPolicy requiring the request
// principal <issuer>/alice. Placeholders: the ports, {jwks}, {issuer}.
const istioJWTConfig = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: jwt, namespace: default}
spec:
  hosts: [jwt.mesh.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 8080, name: http, protocol: HTTP}
  - {number: 7070, name: grpc, protocol: GRPC}
  workloadSelector: {labels: {app: jwt}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: jwt, namespace: default, labels: {app: jwt}}
spec:
  address: 127.0.0.6
  labels: {app: jwt}
  ports: {http: {jwt.http}, grpc: {jwt.grpc}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-alice, namespace: default}
spec:
  selector: {matchLabels: {app: jwt}}
  action: ALLOW
  rules:
  - from: [{source: {requestPrincipals: ["{issuer}/alice"]}}]
---
` + istioRequestAuthn

// istioRequestAuthn is the RequestAuthentication, fed to istiod and, as
// the same YAML, to the Weft server's policy file.
const istioRequestAuthn = `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: default}
spec:
  selector: {matchLabels: {app: jwt}}
  jwtRules:
  - issuer: "{issuer}"
    jwksUri: "{jwks}"
`

// TestIstiodJWT: istiod applies an AuthorizationPolicy on requestPrincipals
// to a Weft HTTP server and a Weft gRPC server, and the RequestAuthentication
// that makes the principal is honoured.
//
// What istiod sends a proxyless workload (pilot/pkg/networking/grpcgen):
// the inbound listener's RBAC filter, with requestPrincipals translated
// into metadata matchers on the jwt_authn filter's verified payload
// (payload.iss, payload.sub), but no jwt_authn filter: the proxyless
// generator does not translate RequestAuthentication, and so never
// fetches the jwksUri or inlines a local_jwks. The same RequestAuthentication
// therefore reaches the Weft server through its policy file (as
// denyPolicy does in TestIstiod), whose watcher fetches the jwksUri; the
// decision on the principal is istiod's RBAC. A valid token of alice is
// served, an invalid token is refused with 401 (gRPC UNAUTHENTICATED), and
// a request without one with 403 (PERMISSION_DENIED) by istiod's policy.
//
// For a sidecar, istiod does translate the RequestAuthentication: it
// fetches the jwksUri itself and inlines the keys as local_jwks. The last
// subtest runs that filter through Weft's xDS path and wants it to
// decide every token as the policy file does.
func TestIstiodJWT(t *testing.T) {
	iss := jwttest.NewIssuer(t, jwtIssuer)
	jwks := jwttest.NewServer(t, iss.JWKS())
	httpL, grpcL := listenT(t, "127.0.0.6"), listenT(t, "127.0.0.6")
	strs := strings.NewReplacer("{issuer}", jwtIssuer, "{jwks}", jwks.URI())
	d := startIstiod(t, strs.Replace(fill(istioJWTConfig, map[string]int{"jwt.http": port(httpL), "jwt.grpc": port(grpcL)})))

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	policy := filepath.Join(t.TempDir(), "requestauthn.yaml")
	// The file holds the RequestAuthentication only: the authorization
	// is istiod's. Without selector and namespace, it applies to the
	// workload loading it.
	ra := strings.Replace(strs.Replace(istioRequestAuthn), "metadata: {name: jwt, namespace: default}\nspec:\n  selector: {matchLabels: {app: jwt}}\n", "metadata: {name: jwt}\nspec:\n", 1)
	if err := os.WriteFile(policy, []byte(ra), 0o600); err != nil {
		t.Fatal(err)
	}
	server := d.newWorkload(t, "jwt", "127.0.0.6", "")
	sm := server.mesh(t, mesh.WithAuthorizationPolicyFile(policy))
	go sm.Serve(ctx, httpL, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := security.RequestPrincipal(r.Context())
		fmt.Fprintf(w, "jwt sees %s", p)
	}))
	gs, err := sm.NewGRPCServer()
	if err != nil {
		t.Fatal(err)
	}
	testpb.RegisterTestServiceServer(gs, grpcEcho{b: &behaviour{name: "jwt"}})
	go gs.Serve(grpcL)
	t.Cleanup(gs.Stop)

	checkIstiodRBAC(t, d, server, fmt.Sprintf("127.0.0.6:%d", port(grpcL)))

	client := d.newWorkload(t, "jwt-client", "127.0.0.13", "")
	cm := client.mesh(t)
	const httpURL, grpcTarget = "http://jwt.mesh.local:8080/", "jwt.mesh.local:7070"
	rows := client.grpcRows(t, cm, grpcTarget)

	alice := iss.Token(t, map[string]any{"sub": "alice"})
	cases := []struct {
		name     string
		token    string
		wantHTTP int
		wantGRPC codes.Code
	}{
		{"valid token of alice", alice, http.StatusOK, codes.OK},
		{"valid ES256 token of alice", iss.Sign(t, jose.ES256, "ec", map[string]any{"sub": "alice"}), http.StatusOK, codes.OK},
		{"no token: denied by istiod's policy", "", http.StatusForbidden, codes.PermissionDenied},
		{"valid token of bob: denied by istiod's policy", iss.Token(t, map[string]any{"sub": "bob"}), http.StatusForbidden, codes.PermissionDenied},
		{"expired token", iss.Token(t, map[string]any{"sub": "alice", "exp": time.Now().Add(-time.Hour).Unix()}), http.StatusUnauthorized, codes.Unauthenticated},
		{"token of another issuer's keys", jwttest.NewIssuer(t, jwtIssuer).Token(t, map[string]any{"sub": "alice"}), http.StatusUnauthorized, codes.Unauthenticated},
		{"alg none", jwttest.Unsigned(map[string]any{"iss": jwtIssuer, "sub": "alice"}), http.StatusUnauthorized, codes.Unauthenticated},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.token != "" {
				hdr = []string{"authorization", "Bearer " + tc.token}
			}
			t.Run(rowHTTP, func(t *testing.T) {
				var code int
				var body string
				err := eventually(20*time.Second, func() error {
					var err error
					code, body, err = httpGet(ctx, cm.HTTPClient(), httpURL, hdr...)
					if err == nil && i == 0 && code != tc.wantHTTP {
						err = statusErr(code, body) // the first case waits for istiod's push
					}
					return err
				})
				if err != nil || code != tc.wantHTTP {
					t.Fatalf("%d %q %v, want %d", code, body, err, tc.wantHTTP)
				}
				if code == http.StatusOK && body != "jwt sees "+jwtIssuer+"/alice" {
					t.Errorf("handler saw %q", body)
				}
			})
			for _, g := range rows {
				t.Run(g.name, func(t *testing.T) {
					var err error
					if i == 0 {
						err = eventually(20*time.Second, func() error { _, err := grpcServerID(ctx, g.cc, hdr...); return err })
					} else {
						_, err = grpcServerID(ctx, g.cc, hdr...)
					}
					if got := status.Code(err); got != tc.wantGRPC {
						t.Fatalf("%v, want %v", err, tc.wantGRPC)
					}
				})
			}
		})
	}
	t.Logf("the JWKS server saw %d fetches (the Weft server's watcher; istiod's proxyless generator fetches none)", jwks.Fetches.Load())

	t.Run("istiod's sidecar jwt_authn through Weft's xDS path", func(t *testing.T) {
		// What istiod would send a sidecar for the same workload
		// (authn.NewPolicyApplier(...).JwtFilter, where istiod fetches
		// the jwksUri itself and inlines it as local_jwks), translated by
		// Weft's xDS path, decides each token as the policy file does.
		before := jwks.Fetches.Load()
		proxy := &model.Proxy{ConfigNamespace: "default", Labels: map[string]string{"app": "jwt"}, Metadata: &model.NodeMetadata{}}
		f := authn.NewPolicyApplier(d.ds.PushContext(), proxy, nil).JwtFilter(false)
		if f == nil {
			t.Fatal("istiod made no jwt_authn filter for the workload")
		}
		var cfg jwtv3.JwtAuthentication
		if err := f.GetTypedConfig().UnmarshalTo(&cfg); err != nil {
			t.Fatal(err)
		}
		for n, p := range cfg.GetProviders() {
			t.Logf("istiod's provider %s: issuer %s, local_jwks inline %v, remote_jwks %v, payload_in_metadata %q; istiod fetched the JWKS %d times",
				n, p.GetIssuer(), p.GetLocalJwks() != nil, p.GetRemoteJwks() != nil, p.GetPayloadInMetadata(), jwks.Fetches.Load()-before)
		}
		l := xdstest.ServerListener("in", netip.MustParseAddrPort("127.0.0.6:1"), nil,
			xdstest.FilterChain("c", xdstest.InboundRoutes("r"), &hcmv3.HttpFilter{Name: f.GetName(), ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: f.GetTypedConfig()}}))
		a, err := anypb.New(l)
		if err != nil {
			t.Fatal(err)
		}
		_, res, err := xds.Decode(xds.ListenerType, a)
		if err != nil {
			t.Fatalf("Weft refuses istiod's jwt_authn filter: %v", err)
		}
		fc := res.(*xds.Listener).Server.FilterChains[0]
		reg := jwt.NewRegistry(nil, nil)
		defer reg.Close()
		viaXDS, err := jwt.NewAuthenticator(fc.JWT.Providers, reg)
		if err != nil {
			t.Fatal(err)
		}
		defer viaXDS.Close()
		file, err := security.WatchPolicyFile(policy)
		if err != nil {
			t.Fatal(err)
		}
		defer file.Close()
		for _, tc := range cases {
			h := http.Header{}
			if tc.token != "" {
				h.Set("Authorization", "Bearer "+tc.token)
			}
			req := &xds.Request{Method: "GET", Path: "/", Header: h}
			xres, xerr := viaXDS.Authenticate(ctx, &jwt.Request{Method: "GET", Header: h}, fc.JWT.Requirement("jwt.mesh.local", req))
			r := security.Request{Method: "GET", Path: "/", Headers: h}
			ferr := file.AuthenticateRequest(ctx, &r)
			if (xerr == nil) != (ferr == nil) || (xerr != nil) != (tc.wantHTTP == http.StatusUnauthorized) {
				t.Errorf("%s: istiod's filter via Weft's xDS path: %v; the policy file: %v; want both to refuse exactly the invalid tokens", tc.name, xerr, ferr)
			}
			if v := xres.First(); xerr == nil && tc.token != "" && (v == nil || v.Principal() != jwtIssuer+"/"+v.Subject) {
				t.Errorf("%s: istiod's filter via Weft's xDS path verified %+v", tc.name, v)
			}
		}
	})
}

// checkIstiodRBAC asks istiod, with the node of workload w, for the
// inbound listener of addr and checks what the comment of TestIstiodJWT
// says it holds: an RBAC filter whose principals are metadata matchers on
// envoy.filters.http.jwt_authn, and no jwt_authn filter.
func checkIstiodRBAC(t *testing.T, d *istiod, w *workload, addr string) {
	t.Helper()
	var bs struct {
		Node     json.RawMessage `json:"node"`
		Template string          `json:"server_listener_resource_name_template"`
	}
	if err := json.Unmarshal(w.bootstrap, &bs); err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(bs.Node, node); err != nil {
		t.Fatal(err)
	}
	name := strings.ReplaceAll(bs.Template, "%s", addr)
	cc, err := grpc.NewClient(d.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: "type.googleapis.com/envoy.config.listener.v3.Listener", ResourceNames: []string{name}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("istiod's listener %s: %v", name, err)
	}
	var filters []string
	metadataMatchers := 0
	for _, r := range resp.GetResources() {
		var l listenerv3.Listener
		if err := r.UnmarshalTo(&l); err != nil {
			t.Fatal(err)
		}
		if l.GetName() != name {
			continue
		}
		for _, fc := range l.GetFilterChains() {
			var h hcmv3.HttpConnectionManager
			if err := fc.GetFilters()[0].GetTypedConfig().UnmarshalTo(&h); err != nil {
				t.Fatal(err)
			}
			for _, f := range h.GetHttpFilters() {
				filters = append(filters, f.GetName())
				var rb rbacfilterv3.RBAC
				if f.GetTypedConfig().UnmarshalTo(&rb) == nil {
					b, err := proto.Marshal(&rb)
					if err != nil {
						t.Fatal(err)
					}
					metadataMatchers += strings.Count(string(b), "envoy.filters.http.jwt_authn")
				}
			}
		}
	}
	t.Logf("istiod's inbound listener %s: HTTP filters %v, %d metadata matchers on the jwt_authn payload", name, filters, metadataMatchers)
	if metadataMatchers == 0 || slices.Contains(filters, "envoy.filters.http.jwt_authn") {
		t.Errorf("istiod sent filters %v with %d jwt_authn metadata matchers; want RBAC reading the jwt_authn payload and no jwt_authn filter", filters, metadataMatchers)
	}
}
