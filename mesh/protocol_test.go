package mesh_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

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

// An xDS cluster's HttpProtocolOptions choose the HTTP client's protocol
// to its endpoints, as Envoy's do: explicit HTTP/1.1 or HTTP/2 whatever
// the mesh's setting; auto_config lets ALPN choose over TLS (the server
// prefers h2) and is HTTP/1.1 in the clear; use_downstream and unset
// follow the mesh's setting, as a caller's own request has no protocol
// of its own. That holds over a cluster's upstream TLS, over the mesh's
// own mTLS for a cluster without a transport socket, in the clear, and
// through a caller's base transport.
func TestXDSClusterHTTPProtocol(t *testing.T) {
	mtlsAddr, plainAddr, clientSocket := protocolServers(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Proto) }))

	protocols := []string{"http1", "http2", "auto", "use_downstream", "unset"}
	const h1, h2 = "HTTP/1.1", "HTTP/2.0"
	for _, mode := range []struct {
		name string
		// tls: the clusters ask for upstream TLS; identity: the client
		// has an SVID.
		tls, identity bool
	}{
		{"cluster TLS", true, true},
		{"mesh mTLS", false, true},
		{"cleartext", false, false},
	} {
		addr := plainAddr
		if mode.identity {
			addr = mtlsAddr
		}
		var resources []types.Resource
		for _, p := range protocols {
			name := "orders-" + strings.ReplaceAll(p, "_", "-")
			c := xdstest.Cluster(name, "")
			if mode.tls {
				c = tlsCluster(t, name, ordersID.String())
			}
			if p != "unset" {
				xdstest.UpstreamHTTP(c, p)
			}
			resources = append(resources, xdstest.Listener(name+":8080", name+"-routes"),
				xdstest.RouteConfig(name+"-routes", "*", name), c, xdstest.Endpoints(name, addr))
		}
		cp := xdstest.NewServer(t)
		cp.SetSnapshot(t, xdsNode, "1", resources...)
		for _, opt := range []struct {
			name  string
			opts  []mesh.Option
			proto string // the mesh's own
		}{
			{"default", nil, h1},
			{"WithHTTP2", []mesh.Option{mesh.WithHTTP2(true)}, h2},
		} {
			t.Run(mode.name+"/"+opt.name, func(t *testing.T) {
				want := map[string]string{"http1": h1, "http2": h2, "auto": h2, "use_downstream": opt.proto, "unset": opt.proto}
				if !mode.identity {
					want["auto"] = h1 // nothing negotiates in the clear
				}
				socket := ""
				if mode.identity {
					socket = clientSocket
				}
				t.Setenv("SPIFFE_ENDPOINT_SOCKET", socket)
				m := newMesh(t, append(opt.opts, mesh.WithBootstrap(cp.Bootstrap(xdsNode)))...)
				base := http.DefaultTransport.(*http.Transport).Clone()
				defer base.CloseIdleConnections()
				own := &http.Client{Transport: m.Transport(base)}
				for _, p := range protocols {
					url := "http://orders-" + strings.ReplaceAll(p, "_", "-") + ":8080/"
					if got := get(t, m.HTTPClient(), url); got != want[p] {
						t.Errorf("%s cluster: server saw %s, want %s", p, got, want[p])
					}
					if got := get(t, own, url); got != want[p] {
						t.Errorf("%s cluster, caller's base transport: server saw %s, want %s", p, got, want[p])
					}
				}
			})
		}
	}
}

// protocolServers serves h through two meshes, one over SPIFFE mTLS as
// orders and one in the clear, and returns their addresses and the
// Workload API socket of a frontend identity that may call the first.
func protocolServers(t *testing.T, h http.Handler) (mtlsAddr, plainAddr, clientSocket string) {
	t.Helper()
	ca := newCA(t, shop)
	server := workloadAPI(t, ca, ordersID)
	client := workloadAPI(t, ca, frontendID)
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", server.Addr())
	mtlsAddr = serveMeshHandler(t, newMesh(t), h)
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", "")
	plainAddr = serveMeshHandler(t, newMesh(t), h)
	return mtlsAddr, plainAddr, client.Addr()
}

// A CDS update changing a cluster's protocol takes effect on the next
// request, in the clear and over upstream TLS, on the default transport
// and a caller's.
func TestXDSClusterHTTPProtocolUpdate(t *testing.T) {
	mtlsAddr, plainAddr, clientSocket := protocolServers(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Proto) }))

	for _, mode := range []struct {
		name string
		tls  bool
	}{{"cleartext", false}, {"cluster TLS", true}} {
		t.Run(mode.name, func(t *testing.T) {
			addr, socket := plainAddr, ""
			if mode.tls {
				addr, socket = mtlsAddr, clientSocket
			}
			cp := xdstest.NewServer(t)
			snapshot := func(version, p string) {
				c := xdstest.Cluster("orders", "")
				if mode.tls {
					c = tlsCluster(t, "orders", ordersID.String())
				}
				if p != "" {
					xdstest.UpstreamHTTP(c, p)
				}
				cp.SetSnapshot(t, xdsNode, version, xdstest.Listener("orders:8080", "orders-routes"),
					xdstest.RouteConfig("orders-routes", "*", "orders"), c, xdstest.Endpoints("orders", addr))
			}
			snapshot("1", "")
			t.Setenv("SPIFFE_ENDPOINT_SOCKET", socket)
			m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)))
			base := http.DefaultTransport.(*http.Transport).Clone()
			defer base.CloseIdleConnections()
			own := &http.Client{Transport: m.Transport(base)}
			for i, step := range []struct{ protocol, want string }{
				{"", "HTTP/1.1"}, {"http2", "HTTP/2.0"}, {"http1", "HTTP/1.1"}, {"http2", "HTTP/2.0"}, {"", "HTTP/1.1"},
			} {
				if i > 0 {
					snapshot(strconv.Itoa(i+1), step.protocol)
				}
				for _, c := range []struct {
					name string
					c    *http.Client
				}{{"default transport", m.HTTPClient()}, {"caller's base transport", own}} {
					waitFor(t, fmt.Sprintf("step %d (%q), %s", i, step.protocol, c.name), func() error {
						if got := get(t, c.c, "http://orders:8080/"); got != step.want {
							return fmt.Errorf("server saw %s, want %s", got, step.want)
						}
						return nil
					})
				}
			}
		})
	}
}

// TestCloseIdleConnectionsReachesClusterTransports checks that the mesh
// client's CloseIdleConnections closes the idle connections of the
// transports xDS clusters have of their own (one with upstream TLS, one
// speaking another HTTP protocol than the mesh's), as it does the mesh's
// shared one: a request after it arrives on a new connection.
func TestCloseIdleConnectionsReachesClusterTransports(t *testing.T) {
	mtlsAddr, plainAddr, clientSocket := protocolServers(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.RemoteAddr) }))

	for _, c := range []struct {
		name     string
		tls      bool
		protocol string
	}{
		{"the mesh's transport", false, ""},
		{"a cluster speaking HTTP/2", false, "http2"},
		{"a cluster with upstream TLS", true, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr, socket := plainAddr, ""
			cl := xdstest.Cluster("orders", "")
			if c.tls {
				addr, socket, cl = mtlsAddr, clientSocket, tlsCluster(t, "orders", ordersID.String())
			}
			if c.protocol != "" {
				xdstest.UpstreamHTTP(cl, c.protocol)
			}
			cp := xdstest.NewServer(t)
			cp.SetSnapshot(t, xdsNode, "1", xdstest.Listener("orders:8080", "orders-routes"),
				xdstest.RouteConfig("orders-routes", "*", "orders"), cl, xdstest.Endpoints("orders", addr))
			t.Setenv("SPIFFE_ENDPOINT_SOCKET", socket)
			m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)))
			hc := m.HTTPClient()
			first := get(t, hc, "http://orders:8080/")
			if again := get(t, hc, "http://orders:8080/"); again != first {
				t.Fatalf("a kept-alive connection was not reused: %s, then %s", first, again)
			}
			// An HTTP/2 connection counts as idle only once its last
			// stream is forgotten, which net/http does a moment after the
			// body ends: ask until a request comes on a new connection.
			waitFor(t, "a request on a new connection after CloseIdleConnections", func() error {
				hc.CloseIdleConnections()
				if after := get(t, hc, "http://orders:8080/"); after == first {
					return fmt.Errorf("the request came again from %s: the idle connection stayed open", after)
				}
				return nil
			})
		})
	}
}

// TestCallerCopiesOfClosedClustersAreDropped checks that a caller's base
// keeps no copy for a cluster the idle sweep has closed: the cluster used
// again is a new one, and its copy replaces the old rather than joining
// it.
func TestCallerCopiesOfClosedClustersAreDropped(t *testing.T) {
	addr := serveMeshHandler(t, newMesh(t), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Proto) }))
	cp := xdstest.NewServer(t)
	cl := xdstest.Cluster("orders", "")
	xdstest.UpstreamHTTP(cl, "http2") // not the mesh's protocol: a caller's base gets a copy
	cp.SetSnapshot(t, xdsNode, "1", xdstest.Listener("orders:8080", "orders-routes"),
		xdstest.RouteConfig("orders-routes", "*", "orders"), cl, xdstest.Endpoints("orders", addr))
	m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)), mesh.WithXDSIdleTimeout(50*time.Millisecond))
	base := http.DefaultTransport.(*http.Transport).Clone()
	defer base.CloseIdleConnections()
	rt := m.Transport(base)
	c := &http.Client{Transport: rt}
	for round := range 3 {
		if got := get(t, c, "http://orders:8080/"); got != "HTTP/2.0" {
			t.Fatalf("round %d: server saw %s, want HTTP/2.0", round, got)
		}
		if n := mesh.CallerCopies(rt); n != 1 {
			t.Errorf("round %d: the caller's base has %d copies, want 1", round, n)
		}
		waitFor(t, "the idle sweep to close the cluster", func() error {
			if m.ClusterSubscribed("orders") {
				return errors.New("still subscribed")
			}
			return nil
		})
	}
}
