package mesh_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/security"
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

// serveGRPCHealth serves the health service on a gRPC server made by m,
// on loopback, until the test ends; it returns the address.
func serveGRPCHealth(t *testing.T, m *mesh.Mesh) string {
	t.Helper()
	gs, err := m.NewGRPCServer()
	if err != nil {
		t.Fatal(err)
	}
	healthpb.RegisterHealthServer(gs, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		gs.Serve(ln)
	}()
	t.Cleanup(func() {
		gs.Stop()
		<-done
	})
	return ln.Addr().String()
}

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
		{"gRPC", "A", serveGRPCHealth(t, srv), peerClient.grpc},
		{"gRPC", "B", serveGRPCHealth(t, srv), peerClient.grpc},
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
	phases := []struct {
		name   string
		chains func(server) []*listenerv3.FilterChain
		want   map[string]want // by server name
	}{
		{"PERMISSIVE", mode("PERMISSIVE"), map[string]want{"A": {true, true}, "B": {true, true}}},
		{"PERMISSIVE to STRICT", mode("STRICT"), map[string]want{"A": {false, true}, "B": {false, true}}},
		{"DISABLE", mode("DISABLE"), map[string]want{"A": {true, false}, "B": {true, false}}},
		{"per-port plaintext on A, STRICT elsewhere", perPort, map[string]want{"A": {true, false}, "B": {false, true}}},
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
