package mesh_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/security"
	"github.com/weftmesh/weft/security/spiffetest"
)

var (
	shop        = spiffeid.RequireTrustDomainFromString("shop.example")
	frontendID  = spiffeid.RequireFromPath(shop, "/ns/shop/sa/frontend")
	ordersID    = spiffeid.RequireFromPath(shop, "/ns/shop/sa/orders")
	otherDomain = spiffeid.RequireTrustDomainFromString("other.example")
)

// workloadAPI starts a development Workload API serving id, signed by ca.
func workloadAPI(t *testing.T, ca *spiffetest.CA, id spiffeid.ID) *spiffetest.WorkloadAPI {
	t.Helper()
	api, err := spiffetest.StartWorkloadAPI(ca, id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api.Close() })
	return api
}

func newCA(t *testing.T, td spiffeid.TrustDomain) *spiffetest.CA {
	t.Helper()
	ca, err := spiffetest.NewCA(td)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// serveWhoami runs a mesh server answering with the caller's SPIFFE ID
// (or "anonymous") and returns its address.
func serveWhoami(t *testing.T, m *mesh.Mesh) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- m.Serve(ctx, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if id, ok := security.PeerID(r.Context()); ok {
				io.WriteString(w, id.String())
				return
			}
			io.WriteString(w, "anonymous")
		}))
	}()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

func TestMTLSFromTheWorkloadAPI(t *testing.T) {
	ca := newCA(t, shop)
	server := workloadAPI(t, ca, ordersID)
	client := workloadAPI(t, ca, frontendID)

	t.Setenv("SPIFFE_ENDPOINT_SOCKET", server.Addr())
	srvMesh := newMesh(t)
	if srvMesh.ServerTLSConfig() == nil {
		t.Fatal("a mesh with an identity has no server TLS config")
	}
	addr := serveWhoami(t, srvMesh)

	t.Setenv("SPIFFE_ENDPOINT_SOCKET", client.Addr())
	cliMesh := newMesh(t, mesh.WithEndpoints("orders", addr))

	t.Run("the handler sees the caller's SPIFFE ID", func(t *testing.T) {
		if got := get(t, cliMesh.HTTPClient(), "http://orders/whoami"); got != frontendID.String() {
			t.Errorf("server saw %q, want %q", got, frontendID)
		}
	})
	t.Run("strict refuses plaintext", func(t *testing.T) {
		resp, err := http.Get("http://" + addr + "/whoami")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Errorf("plaintext request reached the handler: %q", body)
			}
		}
		http.DefaultClient.CloseIdleConnections()
	})
	t.Run("a client of another trust domain is refused", func(t *testing.T) {
		stranger := workloadAPI(t, newCA(t, otherDomain), spiffeid.RequireFromPath(otherDomain, "/ns/x/sa/y"))
		t.Setenv("SPIFFE_ENDPOINT_SOCKET", stranger.Addr())
		m := newMesh(t, mesh.WithEndpoints("orders", addr))
		if _, err := m.HTTPClient().Get("http://orders/whoami"); err == nil {
			t.Error("a client from another trust domain got through")
		}
	})
	t.Run("gRPC carries the identity too", func(t *testing.T) {
		gs, err := srvMesh.NewGRPCServer()
		if err != nil {
			t.Fatal(err)
		}
		seen := make(chan spiffeid.ID, 1)
		healthpb.RegisterHealthServer(gs, &peerRecorder{seen: seen})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go gs.Serve(ln)
		defer gs.Stop()
		t.Setenv("SPIFFE_ENDPOINT_SOCKET", client.Addr())
		m := newMesh(t, mesh.WithEndpoints("orders-grpc", ln.Addr().String()))
		cc, err := m.DialGRPC("orders-grpc")
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
		if got := <-seen; got != frontendID {
			t.Errorf("gRPC method saw %v, want %v", got, frontendID)
		}
	})
}

type peerRecorder struct {
	healthpb.UnimplementedHealthServer
	seen chan spiffeid.ID
}

func (p *peerRecorder) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	id, _ := security.PeerID(ctx)
	select {
	case p.seen <- id:
	default:
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func TestMTLSPermissiveAcceptsBoth(t *testing.T) {
	ca := newCA(t, shop)
	server := workloadAPI(t, ca, ordersID)
	client := workloadAPI(t, ca, frontendID)
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", server.Addr())
	t.Setenv("WEFT_MTLS", "permissive")
	addr := serveWhoami(t, newMesh(t))
	t.Setenv("WEFT_MTLS", "")

	if got := get(t, http.DefaultClient, "http://"+addr+"/"); got != "anonymous" {
		t.Errorf("plaintext caller seen as %q, want anonymous", got)
	}
	http.DefaultClient.CloseIdleConnections()
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", client.Addr())
	m := newMesh(t, mesh.WithEndpoints("orders", addr))
	if got := get(t, m.HTTPClient(), "http://orders/"); got != frontendID.String() {
		t.Errorf("mTLS caller seen as %q, want %q", got, frontendID)
	}
}

func TestAuthorizationPolicy(t *testing.T) {
	ca := newCA(t, shop)
	server := workloadAPI(t, ca, ordersID)
	client := workloadAPI(t, ca, frontendID)
	policy := filepath.Join(t.TempDir(), "authz.yaml")
	os.WriteFile(policy, []byte(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: orders
spec:
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["shop.example/ns/shop/sa/frontend"]
    to:
    - operation:
        methods: ["GET"]
        paths: ["/items*"]
`), 0o600)
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", server.Addr())
	t.Setenv("WEFT_AUTHZ_POLICY", policy)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	addr := serveWhoami(t, newMesh(t, mesh.WithMeterProvider(mp)))
	t.Setenv("WEFT_AUTHZ_POLICY", "")
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", client.Addr())
	c := newMesh(t, mesh.WithEndpoints("orders", addr)).HTTPClient()

	for _, tt := range []struct {
		path string
		want int
	}{{"/items/1", http.StatusOK}, {"/admin", http.StatusForbidden}, {"//items/../admin", http.StatusForbidden}} {
		resp, err := c.Get("http://orders" + tt.path)
		if err != nil {
			t.Fatalf("GET %s: %v", tt.path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("GET %s: status %d, want %d", tt.path, resp.StatusCode, tt.want)
		}
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	decisions := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			if mt.Name != "weft.authz.decisions" {
				continue
			}
			for _, dp := range mt.Data.(metricdata.Sum[int64]).DataPoints {
				for _, kv := range dp.Attributes.ToSlice() {
					if v := kv.Value.AsString(); v == "allow" || v == "deny" {
						decisions[v] += dp.Value
					}
				}
			}
		}
	}
	if decisions["allow"] != 1 || decisions["deny"] != 2 {
		t.Errorf("weft.authz.decisions = %v, want 1 allow and 2 deny", decisions)
	}
}

func TestIdentityErrorsNameTheVariable(t *testing.T) {
	t.Run("strict without an identity", func(t *testing.T) {
		t.Setenv("WEFT_MTLS", "strict")
		_, err := mesh.New(context.Background())
		if err == nil || !strings.Contains(err.Error(), "WEFT_MTLS") {
			t.Errorf("err = %v, want one naming WEFT_MTLS", err)
		}
	})
	t.Run("an unreachable Workload API", func(t *testing.T) {
		t.Setenv("SPIFFE_ENDPOINT_SOCKET", "unix://"+filepath.Join(t.TempDir(), "nobody.sock"))
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		_, err := mesh.New(ctx)
		if err == nil || !strings.Contains(err.Error(), "SPIFFE_ENDPOINT_SOCKET") {
			t.Errorf("err = %v, want one naming SPIFFE_ENDPOINT_SOCKET", err)
		}
	})
	t.Run("a missing policy file", func(t *testing.T) {
		t.Setenv("WEFT_AUTHZ_POLICY", filepath.Join(t.TempDir(), "none.yaml"))
		_, err := mesh.New(context.Background())
		if err == nil || !strings.Contains(err.Error(), "WEFT_AUTHZ_POLICY") {
			t.Errorf("err = %v, want one naming WEFT_AUTHZ_POLICY", err)
		}
	})
	t.Run("SVID files set by halves", func(t *testing.T) {
		t.Setenv("WEFT_SVID_CERT_FILE", "/tmp/cert.pem")
		_, err := mesh.New(context.Background())
		if err == nil || !strings.Contains(err.Error(), "WEFT_SVID_KEY_FILE") {
			t.Errorf("err = %v, want one naming the missing variables", err)
		}
	})
}

// tlsCluster is an xDS cluster asking for upstream TLS whose server must
// present the SPIFFE ID san.
func tlsCluster(t *testing.T, name, san string) *clusterv3.Cluster {
	t.Helper()
	c := xdstest.Cluster(name, "")
	utc := &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{InstanceName: "default"},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
			CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext: &tlsv3.CertificateValidationContext{
					MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
						SanType: tlsv3.SubjectAltNameMatcher_URI,
						Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: san}},
					}},
					CaCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{InstanceName: "default"},
				},
			},
		},
	}}
	a, err := anypb.New(utc)
	if err != nil {
		t.Fatal(err)
	}
	c.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}
	return c
}

// The cluster's SAN matchers from xDS decide which server identities the
// client accepts, not mere trust-domain membership.
func TestXDSClusterSANMatchersPickTheServerIdentity(t *testing.T) {
	ca := newCA(t, shop)
	server := workloadAPI(t, ca, ordersID)
	client := workloadAPI(t, ca, frontendID)
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", server.Addr())
	addr := serveWhoami(t, newMesh(t))

	cp := xdstest.NewServer(t)
	snapshot := func(version, san string) {
		cp.SetSnapshot(t, xdsNode, version,
			xdstest.Listener("orders:8080", "orders-routes"),
			xdstest.RouteConfig("orders-routes", "*", "orders"),
			tlsCluster(t, "orders", san),
			xdstest.Endpoints("orders", addr))
	}
	snapshot("1", ordersID.String())
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", client.Addr())
	m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)))
	if got := get(t, m.HTTPClient(), "http://orders:8080/"); got != frontendID.String() {
		t.Fatalf("server saw %q, want %q", got, frontendID)
	}

	snapshot("2", "spiffe://shop.example/ns/shop/sa/payments")
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := m.HTTPClient().Get("http://orders:8080/")
		if err != nil {
			break // refused: orders is not the identity the cluster now allows
		}
		resp.Body.Close()
		if time.Now().After(deadline) {
			t.Fatal("requests still reach a server whose identity the cluster's SAN matchers no longer allow")
		}
		time.Sleep(5 * time.Millisecond)
	}

	t.Run("a TLS cluster needs an identity", func(t *testing.T) {
		t.Setenv("SPIFFE_ENDPOINT_SOCKET", "")
		snapshot("3", ordersID.String())
		plain := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)))
		_, err := plain.HTTPClient().Get("http://orders:8080/")
		if err == nil || !strings.Contains(err.Error(), `cluster "orders" requires TLS`) {
			t.Errorf("err = %v, want the error naming the TLS cluster", err)
		}
	})
}

// Several TLS servers of one mesh each get their own copy of the server
// config: net/http's HTTP/2 set-up writes to it (the race detector watches).
func TestTLSServersOfOneMeshDoNotShareConfigWrites(t *testing.T) {
	ca := newCA(t, shop)
	server := workloadAPI(t, ca, ordersID)
	client := workloadAPI(t, ca, frontendID)
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", server.Addr())
	srvMesh := newMesh(t)
	a, b := serveWhoami(t, srvMesh), serveWhoami(t, srvMesh)
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", client.Addr())
	m := newMesh(t, mesh.WithEndpoints("orders", a, b))
	for i := 0; i < 4; i++ {
		if got := get(t, m.HTTPClient(), "http://orders/"); got != frontendID.String() {
			t.Fatalf("server saw %q", got)
		}
	}
}

// TestAuthorizationPolicyWorkloadScope: one file with a namespace's
// policies; the workload's namespace and labels pick those that apply.
func TestAuthorizationPolicyWorkloadScope(t *testing.T) {
	policy := filepath.Join(t.TempDir(), "authz.yaml")
	os.WriteFile(policy, []byte(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: orders-v2, namespace: shop}
spec:
  selector: {matchLabels: {app: orders, version: v2}}
  action: DENY
  rules: [{to: [{operation: {paths: ["/v2-only"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: shop-wide, namespace: shop}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: ["/nobody"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: billing, namespace: billing}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: ["/billing-only"]}}]}]
`), 0o600)
	t.Setenv("WEFT_AUTHZ_POLICY", policy)
	t.Setenv("WEFT_NAMESPACE", "shop")
	for _, tt := range []struct {
		labels string
		deny   map[string]bool
	}{
		{"app=orders, version=v1", map[string]bool{"/nobody": true}},
		{"app=orders,version=v2", map[string]bool{"/nobody": true, "/v2-only": true}},
	} {
		t.Run(tt.labels, func(t *testing.T) {
			t.Setenv("WEFT_WORKLOAD_LABELS", tt.labels)
			addr := serveWhoami(t, newMesh(t))
			for _, p := range []string{"/nobody", "/v2-only", "/billing-only", "/items"} {
				want := http.StatusOK
				if tt.deny[p] {
					want = http.StatusForbidden
				}
				if got := statusOf(t, http.DefaultClient, "GET", "http://"+addr+p); got != want {
					t.Errorf("GET %s = %d, want %d", p, got, want)
				}
			}
			http.DefaultClient.CloseIdleConnections()
		})
	}
}
