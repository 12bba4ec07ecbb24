package mesh_test

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/security"
)

// The HTTP client speaks one protocol to mesh endpoints, in the clear and
// over mTLS alike: HTTP/1.1 unless WithHTTP2 (as Istio's sidecars keep an
// HTTP/1.1 caller's protocol), HTTP/2 with it, on static services, xDS TLS
// clusters and a caller's own base transport. Hosts outside the mesh keep
// net/http's protocols whatever the mesh's setting.
func TestHTTPProtocolToMeshEndpoints(t *testing.T) {
	ca := newCA(t, shop)
	server := workloadAPI(t, ca, ordersID)
	client := workloadAPI(t, ca, frontendID)
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", server.Addr())
	addr := serveMeshHandler(t, newMesh(t), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := security.PeerID(r.Context())
		io.WriteString(w, r.Proto+" "+id.String())
	}))
	cp := xdstest.NewServer(t)
	cp.SetSnapshot(t, xdsNode, "1",
		xdstest.Listener("orders:8080", "orders-routes"),
		xdstest.RouteConfig("orders-routes", "*", "orders"),
		tlsCluster(t, "orders", ordersID.String()),
		xdstest.Endpoints("orders", addr))

	t.Setenv("SPIFFE_ENDPOINT_SOCKET", client.Addr())
	for _, tc := range []struct {
		name  string
		opts  []mesh.Option
		proto string
	}{
		{"default", nil, "HTTP/1.1"},
		{"WithHTTP2", []mesh.Option{mesh.WithHTTP2(true)}, "HTTP/2.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.proto + " " + frontendID.String()
			m := newMesh(t, append(tc.opts, mesh.WithEndpoints("orders", addr))...)
			if got := get(t, m.HTTPClient(), "http://orders/"); got != want {
				t.Errorf("static service: server saw %q, want %q", got, want)
			}
			base := http.DefaultTransport.(*http.Transport).Clone()
			defer base.CloseIdleConnections()
			own := &http.Client{Transport: m.Transport(base)}
			if got := get(t, own, "http://orders/"); got != want {
				t.Errorf("caller's base transport: server saw %q, want %q", got, want)
			}
			x := newMesh(t, append(tc.opts, mesh.WithBootstrap(cp.Bootstrap(xdsNode)))...)
			if got := get(t, x.HTTPClient(), "http://orders:8080/"); got != want {
				t.Errorf("xDS TLS cluster: server saw %q, want %q", got, want)
			}
			base = http.DefaultTransport.(*http.Transport).Clone()
			defer base.CloseIdleConnections()
			own = &http.Client{Transport: x.Transport(base)}
			if got := get(t, own, "http://orders:8080/"); got != want {
				t.Errorf("xDS TLS cluster, caller's base transport: server saw %q, want %q", got, want)
			}
		})
	}

	t.Run("hosts outside the mesh keep net/http's protocols", func(t *testing.T) {
		proto := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Proto) })
		http1Only := httptest.NewServer(proto) // no h2c: prior knowledge would fail here
		defer http1Only.Close()
		h2 := httptest.NewUnstartedServer(proto)
		h2.EnableHTTP2 = true
		h2.StartTLS()
		defer h2.Close()
		t.Setenv("SPIFFE_ENDPOINT_SOCKET", "")
		m := newMesh(t, mesh.WithHTTP2(true), mesh.WithEndpoints("orders", addr))
		if got := get(t, m.HTTPClient(), http1Only.URL); got != "HTTP/1.1" {
			t.Errorf("cleartext external host: server saw %q, want HTTP/1.1", got)
		}
		base := http.DefaultTransport.(*http.Transport).Clone()
		base.TLSClientConfig = &tls.Config{RootCAs: h2.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}
		defer base.CloseIdleConnections()
		if got := get(t, &http.Client{Transport: m.Transport(base)}, h2.URL); got != "HTTP/2.0" {
			t.Errorf("HTTPS external host: server saw %q, want HTTP/2.0 (negotiated as net/http does)", got)
		}
	})
}
