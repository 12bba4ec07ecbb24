package mesh_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
)

// Federation (gRFC A47) with two management servers: the top-level one
// (def) serves old-style names, and the authority "fed" has a server of
// its own (fed) serving xdstp://fed/... names. The listener of
// "svc:8080" on def routes to b0; the listener of the same host in
// authority "fed" routes, through resources that exist only on fed, to
// b1. grpc-go's xDS client is the oracle.

const (
	fedListener = "xdstp://fed/envoy.config.listener.v3.Listener/svc:8080"
	fedRoutes   = "xdstp://fed/envoy.config.route.v3.RouteConfiguration/svc-routes"
	fedCluster  = "xdstp://fed/envoy.config.cluster.v3.Cluster/svc"
	fedEDS      = "xdstp://fed/envoy.config.endpoint.v3.ClusterLoadAssignment/svc"
)

// federatedBootstrap returns def's bootstrap with authority "fed" served
// by fed, and the default listener template set to template ("" keeps
// "%s").
func federatedBootstrap(t *testing.T, def, fed *xdstest.Server, template string) []byte {
	t.Helper()
	var v, f map[string]any
	if err := json.Unmarshal(def.Bootstrap(xdsNode), &v); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(fed.Bootstrap(xdsNode), &f); err != nil {
		t.Fatal(err)
	}
	v["authorities"] = map[string]any{"fed": map[string]any{"xds_servers": f["xds_servers"]}}
	if template != "" {
		v["client_default_listener_resource_name_template"] = template
	}
	out, _ := json.Marshal(v)
	return out
}

func TestFederation(t *testing.T) {
	def, fed := xdstest.NewServer(t), xdstest.NewServer(t)
	b0, b1 := startParityBackend(t, "b0"), startParityBackend(t, "b1")
	def.SetSnapshot(t, xdsNode, "1", parityListener(), parityRoutes(parityRoute("svc", nil, nil)), parityCluster("svc", nil),
		xdstest.Endpoints("svc", b0.addr))
	routes := parityRoutes(parityRoute(fedCluster, nil, nil))
	routes.Name = fedRoutes
	fed.SetSnapshot(t, xdsNode, "1", xdstest.Listener(fedListener, fedRoutes), routes, xdstest.Cluster(fedCluster, fedEDS),
		xdstest.Endpoints(fedEDS, b1.addr))

	plainBS := federatedBootstrap(t, def, fed, "")
	fedBS := federatedBootstrap(t, def, fed, "xdstp://fed/envoy.config.listener.v3.Listener/%s")
	weft := newMesh(t, mesh.WithBootstrap(plainBS))
	oracle := newMesh(t, mesh.WithBootstrap(plainBS), mesh.WithGRPCGoXDS(grpcGoOracle{}))
	tests := []struct {
		name string
		c    *parityClient
		want string
	}{
		{"weft gRPC xds:///svc:8080", &parityClient{name: weftGRPC, hc: dialHealth(t, weft, "xds:///svc:8080")}, "b0"},
		{"weft gRPC xds://fed/svc:8080", &parityClient{name: weftGRPC, hc: dialHealth(t, weft, "xds://fed/svc:8080")}, "b1"},
		{"grpc-go xds:///svc:8080", &parityClient{name: grpcGo, hc: dialHealth(t, oracle, "xds:///svc:8080")}, "b0"},
		{"grpc-go xds://fed/svc:8080", &parityClient{name: grpcGo, hc: dialHealth(t, oracle, "xds://fed/svc:8080")}, "b1"},
		{"weft HTTP, template %s", &parityClient{name: weftHTTP, http: newMesh(t, mesh.WithBootstrap(plainBS)).HTTPClient()}, "b0"},
		{"weft HTTP, template xdstp://fed/...", &parityClient{name: weftHTTP, http: newMesh(t, mesh.WithBootstrap(fedBS)).HTTPClient()}, "b1"},
		// The channel's own resolver on the same bootstrap, and the
		// HTTP client of that mesh (one xDS client for both).
		{"weft HTTP beside the channels", &parityClient{name: weftHTTP, http: weft.HTTPClient()}, "b0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := range 5 {
				if o := tt.c.call(callLimit); o.err != nil || o.backend != tt.want {
					t.Fatalf("call %d: backend %q, err %v; want %s", i, o.backend, o.err, tt.want)
				}
			}
		})
	}
	// One stream per client and server: def serves weft, the oracle and
	// the first HTTP mesh; fed serves weft, the oracle and the second.
	if _, open := def.Streams(); open != 3 {
		t.Errorf("top-level server: %d streams open, want 3", open)
	}
	if _, open := fed.Streams(); open != 3 {
		t.Errorf("fed's server: %d streams open, want 3", open)
	}
	for _, r := range def.Requests() {
		for _, n := range r.GetResourceNames() {
			if strings.HasPrefix(n, "xdstp://fed/") {
				t.Errorf("the top-level server was asked for %q", n)
			}
		}
	}
}

// TestFederationUnknownAuthority: a target naming an authority the
// bootstrap lacks is refused by DialGRPC, naming it.
func TestFederationUnknownAuthority(t *testing.T) {
	def, fed := xdstest.NewServer(t), xdstest.NewServer(t)
	m := newMesh(t, mesh.WithBootstrap(federatedBootstrap(t, def, fed, "")))
	_, err := m.DialGRPC("xds://elsewhere/svc:8080")
	if err == nil || !strings.Contains(err.Error(), `authority "elsewhere" is not in the bootstrap's authorities`) {
		t.Fatalf("DialGRPC error = %v, want one naming the authority", err)
	}
}
