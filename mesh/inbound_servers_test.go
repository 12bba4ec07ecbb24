package mesh_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/security"
	"github.com/weftmesh/weft/security/spiffetest"
)

// serverBootstrap is cp's bootstrap with the server listener template,
// and extra top-level fields.
func serverBootstrap(t *testing.T, cp *xdstest.Server, extra map[string]any) []byte {
	t.Helper()
	var bs map[string]any
	if err := json.Unmarshal(cp.Bootstrap(xdsNode), &bs); err != nil {
		t.Fatal(err)
	}
	bs["server_listener_resource_name_template"] = inboundTemplate
	for k, v := range extra {
		bs[k] = v
	}
	out, _ := json.Marshal(bs)
	return out
}

func inboundName(addr string) string { return strings.ReplaceAll(inboundTemplate, "%s", addr) }

// A peer is a client of one kind: plaintext, or SPIFFE mTLS with a real
// SVID. Each call opens a new connection, so a configuration change is
// seen by the next call.
type peerClient struct {
	name string
	tls  *tls.Config // nil = plaintext
}

func (p peerClient) http(addr string) error {
	scheme := "http"
	tr := &http.Transport{DisableKeepAlives: true}
	if p.tls != nil {
		scheme = "https"
		tr.TLSClientConfig = p.tls.Clone()
		tr.ForceAttemptHTTP2 = true
	}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", scheme+"://"+addr+"/", nil)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	return nil
}

func (p peerClient) grpc(addr string) error {
	creds := insecure.NewCredentials()
	if p.tls != nil {
		creds = credentials.NewTLS(p.tls.Clone())
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

// waitFor polls cond until it returns nil, or fails the test after 20s
// with its last error.
func waitFor(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestXDSPeerAuthentication: PeerAuthentication as istiod sends it (filter
// chains with and without a DownstreamTlsContext, split by transport
// protocol or destination port) sets, per connection, what the mesh's HTTP
// and gRPC servers accept: STRICT refuses plaintext and accepts SPIFFE
// mTLS, PERMISSIVE accepts both, DISABLE only plaintext, and a per-port
// chain overrides the others on its port. Each change reaches new
// connections, PERMISSIVE to STRICT included.
func TestXDSPeerAuthentication(t *testing.T) {
	ca := newCA(t, shop)
	cp := xdstest.NewServer(t)
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", workloadAPI(t, ca, ordersID).Addr())
	srv := newMesh(t, mesh.WithBootstrap(serverBootstrap(t, cp, nil)))

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	src, err := security.NewWorkloadAPISource(ctx, workloadAPI(t, ca, frontendID).Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	mtls := peerClient{"mTLS", security.ClientTLSConfig(src, security.AuthorizeID(ordersID))}
	plain := peerClient{"plaintext", nil}

	// Servers A and B of each protocol: the per-port chain names A's port.
	type server struct {
		proto, name, addr string
		call              func(peerClient, string) error
	}
	servers := []server{
		{"HTTP", "A", serveWhoami(t, srv), peerClient.http},
		{"HTTP", "B", serveWhoami(t, srv), peerClient.http},
		{"gRPC", "A", serveHealth(t, srv, health.NewServer()), peerClient.grpc},
		{"gRPC", "B", serveHealth(t, srv, health.NewServer()), peerClient.grpc},
	}
	listeners := func(chains func(s server) []*listenerv3.FilterChain) []*listenerv3.Listener {
		var out []*listenerv3.Listener
		for _, s := range servers {
			out = append(out, xdstest.ServerListener(inboundName(s.addr), netip.MustParseAddrPort(s.addr), nil, chains(s)...))
		}
		return out
	}
	mode := func(m string) func(server) []*listenerv3.FilterChain {
		return func(server) []*listenerv3.FilterChain {
			return xdstest.PeerAuthentication(m, xdstest.InboundRoutes("inbound"))
		}
	}
	perPort := func(s server) []*listenerv3.FilterChain {
		strict := xdstest.PeerAuthentication("STRICT", xdstest.InboundRoutes("inbound"))
		port := xdstest.FilterChain("port-plaintext", xdstest.InboundRoutes("inbound"))
		var a server
		for _, x := range servers {
			if x.proto == s.proto && x.name == "A" {
				a = x
			}
		}
		port.FilterChainMatch = &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(uint32(netip.MustParseAddrPort(a.addr).Port()))}
		return append(strict, port)
	}
	type want struct{ plain, mtls bool }
	// Plaintext connections kept open from the PERMISSIVE phase: once
	// STRICT, they must not go on being served.
	keptHTTP := &http.Transport{}
	defer keptHTTP.CloseIdleConnections()
	keptGRPC := map[string]*grpc.ClientConn{}
	for _, s := range servers {
		if s.proto == "gRPC" {
			cc, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			keptGRPC[s.addr] = cc
		}
	}
	kept := func(s server) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if cc := keptGRPC[s.addr]; cc != nil {
			_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
			return err
		}
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+s.addr+"/", nil)
		resp, err := (&http.Client{Transport: keptHTTP}).Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	phases := []struct {
		name   string
		chains func(server) []*listenerv3.FilterChain
		want   map[string]want // by server name
		kept   int             // kept plaintext connections: 1 served, -1 refused, 0 not checked
	}{
		{"PERMISSIVE", mode("PERMISSIVE"), map[string]want{"A": {true, true}, "B": {true, true}}, 1},
		{"PERMISSIVE to STRICT", mode("STRICT"), map[string]want{"A": {false, true}, "B": {false, true}}, -1},
		{"DISABLE", mode("DISABLE"), map[string]want{"A": {true, false}, "B": {true, false}}, 0},
		{"per-port plaintext on A, STRICT elsewhere", perPort, map[string]want{"A": {true, false}, "B": {false, true}}, 0},
	}
	for i, ph := range phases {
		var res []types.Resource
		for _, l := range listeners(ph.chains) {
			res = append(res, l)
		}
		cp.SetSnapshot(t, xdsNode, fmt.Sprint(i+1), res...)
		t.Run(ph.name, func(t *testing.T) {
			check := func() error {
				for _, s := range servers {
					w := ph.want[s.name]
					for _, c := range []struct {
						p  peerClient
						ok bool
					}{{plain, w.plain}, {mtls, w.mtls}} {
						err := s.call(c.p, s.addr)
						if (err == nil) != c.ok {
							return fmt.Errorf("%s server %s, %s client: err = %v, want accepted = %v", s.proto, s.name, c.p.name, err, c.ok)
						}
					}
					if ph.kept != 0 {
						if err := kept(s); (err == nil) != (ph.kept > 0) {
							return fmt.Errorf("%s server %s, plaintext connection kept from PERMISSIVE: err = %v, want served = %v", s.proto, s.name, err, ph.kept > 0)
						}
					}
				}
				return nil
			}
			waitFor(t, ph.name, check)
			// Settled: it holds again on fresh connections.
			if err := check(); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestXDSServersShareOneStream: an HTTP server and a gRPC server of one
// mesh follow their inbound listeners through the mesh's one xDS client:
// the control plane sees exactly one ADS stream, and one configuration
// change reaches both servers.
func TestXDSServersShareOneStream(t *testing.T) {
	cp := xdstest.NewServer(t)
	srv := newMesh(t, mesh.WithBootstrap(serverBootstrap(t, cp, nil)))
	httpAddr, grpcAddr := serveWhoami(t, srv), serveHealth(t, srv, health.NewServer())
	set := func(version string, denyPrefix string) {
		var res []types.Resource
		for _, addr := range []string{httpAddr, grpcAddr} {
			deny := xdstest.RBACFilter("deny", &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{
				"deny": {Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{
					Path: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: denyPrefix}}}}}}},
					Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}}}}})
			res = append(res, xdstest.ServerListener(inboundName(addr), netip.MustParseAddrPort(addr), nil,
				xdstest.FilterChain("inbound", xdstest.InboundRoutes("inbound"), deny)))
		}
		cp.SetSnapshot(t, xdsNode, version, res...)
	}
	plain := peerClient{"plaintext", nil}
	set("1", "/nothing-here")
	waitFor(t, "HTTP server serves", func() error { return plain.http(httpAddr) })
	waitFor(t, "gRPC server serves", func() error { return plain.grpc(grpcAddr) })

	set("2", "/")
	waitFor(t, "HTTP server denies", func() error {
		if err := plain.http(httpAddr); err == nil || !strings.Contains(err.Error(), "403") {
			return fmt.Errorf("got %v, want 403", err)
		}
		return nil
	})
	waitFor(t, "gRPC server denies", func() error {
		if err := plain.grpc(grpcAddr); grpcstatus.Code(err) != codes.PermissionDenied {
			return fmt.Errorf("got %v, want PermissionDenied", err)
		}
		return nil
	})
	if opened, open := cp.Streams(); opened != 1 || open != 1 {
		t.Errorf("ADS streams of a mesh serving HTTP and gRPC: %d opened, %d open; want 1 and 1", opened, open)
	}
	opened, open := cp.Streams()
	t.Logf("ADS streams: %d opened, %d open", opened, open)
}

// svidProviderFiles writes id's SVID, key and ca's root as PEM files for
// grpc-go's file_watcher certificate provider, and returns the bootstrap's
// certificate_providers naming them "default".
func svidProviderFiles(t *testing.T, ca *spiffetest.CA, id spiffeid.ID) map[string]any {
	t.Helper()
	svid, err := ca.IssueX509SVID(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := map[string][]byte{
		"cert.pem": certPEM, "key.pem": keyPEM,
		"ca.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Root().Raw}),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return map[string]any{"default": map[string]any{"plugin_name": "file_watcher", "config": map[string]any{
		"certificate_file": filepath.Join(dir, "cert.pem"), "private_key_file": filepath.Join(dir, "key.pem"),
		"ca_certificate_file": filepath.Join(dir, "ca.pem"), "refresh_interval": "600s"}}}
}

// healthCall makes one call of the health service's method on a new
// connection and returns its status code.
func healthCall(p peerClient, addr, method string) codes.Code {
	creds := insecure.NewCredentials()
	if p.tls != nil {
		creds = credentials.NewTLS(p.tls.Clone())
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return codes.Internal
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hc := healthpb.NewHealthClient(cc)
	switch method {
	case "Check":
		_, err = hc.Check(ctx, &healthpb.HealthCheckRequest{})
	case "List":
		_, err = hc.List(ctx, &healthpb.HealthListRequest{})
	case "Watch":
		var s grpc.ServerStreamingClient[healthpb.HealthCheckResponse]
		if s, err = hc.Watch(ctx, &healthpb.HealthCheckRequest{}); err == nil {
			_, err = s.Recv()
		}
	}
	return grpcstatus.Code(err)
}

// TestXDSInboundGRPCParity: the gRPC server on the mesh's xDS client and
// grpc-go's xDS server (WithGRPCGoXDS), given the same inbound listener
// (istiod's STRICT transport socket, an RBAC DENY by method path, an RBAC
// ALLOW by SPIFFE principal, routes naming two methods), answer every call
// with the same code.
func TestXDSInboundGRPCParity(t *testing.T) {
	ca := newCA(t, shop)
	cp := xdstest.NewServer(t)
	bootstrap := serverBootstrap(t, cp, map[string]any{"certificate_providers": svidProviderFiles(t, ca, ordersID)})
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", workloadAPI(t, ca, ordersID).Addr())
	weft := serveHealth(t, newMesh(t, mesh.WithBootstrap(bootstrap)), health.NewServer())
	oracle := serveHealth(t, newMesh(t, mesh.WithBootstrap(bootstrap), mesh.WithGRPCGoXDS(grpcGoOracle{})), health.NewServer())

	path := func(p string) *rbacv3.Permission {
		return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{
			Path: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: p}}}}}}
	}
	anyone := &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
	frontend := &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{
		PrincipalName: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: frontendID.String()}}}}}
	deny := xdstest.RBACFilter("deny", &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{
		"deny-list": {Permissions: []*rbacv3.Permission{path("/grpc.health.v1.Health/List")}, Principals: []*rbacv3.Principal{anyone}}}})
	allow := xdstest.RBACFilter("allow", &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
		"allow-frontend": {Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}}, Principals: []*rbacv3.Principal{frontend}}}})
	route := func(p string) *routev3.Route {
		return &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: p}},
			Action: &routev3.Route_NonForwardingAction{NonForwardingAction: &routev3.NonForwardingAction{}}}
	}
	rc := &routev3.RouteConfiguration{Name: "inbound", VirtualHosts: []*routev3.VirtualHost{{Name: "inbound", Domains: []string{"*"},
		Routes: []*routev3.Route{route("/grpc.health.v1.Health/Check"), route("/grpc.health.v1.Health/List")}}}}
	var res []types.Resource
	for _, addr := range []string{weft, oracle} {
		fc := xdstest.FilterChain("inbound", rc, deny, allow)
		fc.TransportSocket = xdstest.TLSSocket(xdstest.IstioMTLS())
		res = append(res, xdstest.ServerListener(inboundName(addr), netip.MustParseAddrPort(addr), nil, fc))
	}
	cp.SetSnapshot(t, xdsNode, "1", res...)

	client := func(id spiffeid.ID) peerClient {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		src, err := security.NewWorkloadAPISource(ctx, workloadAPI(t, ca, id).Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { src.Close() })
		return peerClient{id.String(), security.ClientTLSConfig(src, security.AuthorizeID(ordersID))}
	}
	fe, other := client(frontendID), client(spiffeid.RequireFromPath(shop, "/ns/shop/sa/other"))
	for _, addr := range []string{weft, oracle} {
		waitFor(t, "server "+addr+" serves", func() error {
			if c := healthCall(fe, addr, "Check"); c != codes.OK {
				return fmt.Errorf("Check = %v", c)
			}
			return nil
		})
	}
	for _, c := range []struct {
		name   string
		client peerClient
		method string
		want   codes.Code
	}{
		{"allowed principal, routed method", fe, "Check", codes.OK},
		{"DENY by method path", fe, "List", codes.PermissionDenied},
		{"ALLOW by principal: another identity", other, "Check", codes.PermissionDenied},
		{"no route (streaming method)", fe, "Watch", codes.Unavailable},
		{"plaintext on a STRICT chain", peerClient{"plaintext", nil}, "Check", codes.Unavailable},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, oracleGot := healthCall(c.client, weft, c.method), healthCall(c.client, oracle, c.method)
			if got != oracleGot || got != c.want {
				t.Errorf("%s: Weft's server = %v, grpc-go's xDS server = %v, want %v from both", c.method, got, oracleGot, c.want)
			}
		})
	}
}

// TestXDSServingStates: a gRPC server on the mesh's xDS client serves
// nothing until its inbound listener is known (the call waits, as on
// grpc-go's xDS server), then follows it; and on a mesh without an
// identity, a chain requiring TLS fails closed for HTTP and gRPC alike,
// logged once per server, never served in plaintext.
func TestXDSServingStates(t *testing.T) {
	cp := xdstest.NewServer(t)
	var logs syncBuffer
	srv := newMesh(t, mesh.WithBootstrap(serverBootstrap(t, cp, nil)), mesh.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	httpAddr, grpcAddr := serveWhoami(t, srv), serveHealth(t, srv, health.NewServer())
	plain := peerClient{"plaintext", nil}

	// No snapshot yet: the control plane has not answered.
	cc, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	cancel()
	if grpcstatus.Code(err) != codes.DeadlineExceeded {
		t.Errorf("before the listener is known: Check = %v, want it to wait (DeadlineExceeded)", err)
	}

	var res []types.Resource
	for _, addr := range []string{httpAddr, grpcAddr} {
		res = append(res, xdstest.ServerListener(inboundName(addr), netip.MustParseAddrPort(addr), nil,
			xdstest.PeerAuthentication("STRICT", xdstest.InboundRoutes("inbound"))...))
	}
	cp.SetSnapshot(t, xdsNode, "1", res...)
	for i := range 3 {
		if err := plain.http(httpAddr); err == nil {
			t.Errorf("HTTP call %d to a STRICT chain on a mesh without identity was served", i)
		}
		if err := plain.grpc(grpcAddr); grpcstatus.Code(err) != codes.Unavailable {
			t.Errorf("gRPC call %d to a STRICT chain on a mesh without identity: %v, want Unavailable", i, err)
		}
	}
	if n := strings.Count(logs.String(), "has no identity"); n != 2 {
		t.Errorf("refusals logged %d times, want once per server (2):\n%s", n, logs.String())
	}

	cp.SetSnapshot(t, xdsNode, "2") // the listeners no longer exist
	waitFor(t, "HTTP serves with the local policy", func() error { return plain.http(httpAddr) })
	waitFor(t, "gRPC serves with the local policy", func() error { return plain.grpc(grpcAddr) })
}
