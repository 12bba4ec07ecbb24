package mesh_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
)

// TestCallerTransportChecksClusterSANs: a caller's own *http.Transport
// handed to m.Transport gets the cluster's SAN check too, not only the
// trust-domain check: a server of the right trust domain but an identity
// the cluster does not allow is refused, on the default transport and on
// the caller's alike.
func TestCallerTransportChecksClusterSANs(t *testing.T) {
	ca := newCA(t, shop)
	paymentsID := spiffeid.RequireFromPath(shop, "/ns/shop/sa/payments")
	ordersAPI := workloadAPI(t, ca, ordersID)
	imposterAPI := workloadAPI(t, ca, paymentsID)
	clientAPI := workloadAPI(t, ca, frontendID)
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", ordersAPI.Addr())
	ordersAddr := serveWhoami(t, newMesh(t))
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", imposterAPI.Addr())
	imposterAddr := serveWhoami(t, newMesh(t))

	cp := xdstest.NewServer(t)
	// Both clusters allow only the orders identity; "spoofed" has the
	// payments server as its endpoint.
	cp.SetSnapshot(t, xdsNode, "1",
		xdstest.Listener("orders:8080", "orders-routes"),
		xdstest.RouteConfig("orders-routes", "*", "orders"),
		tlsCluster(t, "orders", ordersID.String()),
		xdstest.Endpoints("orders", ordersAddr),
		xdstest.Listener("spoofed:8080", "spoofed-routes"),
		xdstest.RouteConfig("spoofed-routes", "*", "spoofed"),
		tlsCluster(t, "spoofed", ordersID.String()),
		xdstest.Endpoints("spoofed", imposterAddr))
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", clientAPI.Addr())
	m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)))

	base := &http.Transport{}
	defer base.CloseIdleConnections()
	for _, c := range []struct {
		name   string
		client *http.Client
	}{
		{"default transport", m.HTTPClient()},
		{"caller's transport", &http.Client{Transport: m.Transport(base)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := get(t, c.client, "http://orders:8080/"); got != frontendID.String() {
				t.Errorf("allowed server saw %q, want %q", got, frontendID)
			}
			resp, err := c.client.Get("http://spoofed:8080/")
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				t.Fatalf("a server whose identity %s the cluster does not allow answered %q; want the connection refused", paymentsID, body)
			}
			if !strings.Contains(err.Error(), "not an allowed identity") {
				t.Errorf("err = %v, want one saying the identity is not allowed", err)
			}
		})
	}
}
