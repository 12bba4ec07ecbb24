package mesh_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/orca"

	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/resilience"
	"github.com/weftmesh/weft/security"
	"github.com/weftmesh/weft/security/spiffetest"
)

// A client that names its dependency, not its addresses.
func Example() {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "orders answered %s %s", r.Method, r.URL.Path)
	}))
	defer backend.Close()

	// In production: WEFT_ENDPOINTS=orders=10.0.0.1:8080,10.0.0.2:8080
	m, err := mesh.New(context.Background(), mesh.WithEndpoints("orders", backend.Listener.Addr().String()))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()

	resp, err := m.HTTPClient().Get("http://orders/items")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body))
	// Output: orders answered GET /items
}

// The README's twenty lines, run on loopback: a frontend that calls orders
// over HTTP and inventory over gRPC by name, and serves its own page through
// the mesh's inbound chain.
func Example_frontend() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Two dependencies: orders (plain net/http) and inventory (gRPC on a mesh).
	orders := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "orders: %s", r.URL.Path)
	}))
	defer orders.Close()
	inv, err := mesh.New(ctx, mesh.WithServiceName("inventory"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer inv.Close()
	srv, err := inv.NewGRPCServer()
	if err != nil {
		fmt.Println(err)
		return
	}
	healthpb.RegisterHealthServer(srv, health.NewServer())
	invLis, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(invLis)
	defer srv.Stop()

	// In production: WEFT_ENDPOINTS='orders=10.0.0.1:8080;inventory=10.0.1.5:50051'
	m, err := mesh.New(ctx, mesh.WithServiceName("frontend"),
		mesh.WithEndpoints("orders", orders.Listener.Addr().String()),
		mesh.WithEndpoints("inventory", invLis.Addr().String()))
	if err != nil {
		fmt.Println(err) // a bad variable or option is named
		return
	}
	defer m.Close()

	// Clients: the URL host or gRPC target is a service name, not an address.
	resp, err := m.HTTPClient().Get("http://orders/items")
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(string(body))
	cc, err := m.DialGRPC("inventory")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cc.Close()
	st, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("inventory:", st.GetStatus())

	// Server: the mesh's inbound chain wraps the handler; Serve returns,
	// after draining, when ctx ends.
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	served := make(chan error, 1)
	go func() {
		served <- m.Serve(ctx, lis, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "frontend page")
		}))
	}()
	page, err := http.Get("http://" + lis.Addr().String() + "/")
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ = io.ReadAll(page.Body)
	page.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	fmt.Println(string(body))
	cancel()
	<-served
	// Output:
	// orders: /items
	// inventory: SERVING
	// frontend page
}

// A bad environment variable or option stops New with an error naming it.
func ExampleNew_badOption() {
	_, err := mesh.New(context.Background(), mesh.WithEndpoints("orders", "10.0.0.1"))
	fmt.Println(err)
	// Output: mesh: WithEndpoints("orders"): service "orders": endpoint "10.0.0.1": missing port
}

// Wrapping a server: the mesh's inbound chain runs before the handler.
func ExampleMesh_Handler() {
	m, err := mesh.New(context.Background())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()
	srv := httptest.NewServer(m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "served by the mesh's chain")
	})))
	defer srv.Close()

	resp, err := http.Get(srv.URL)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body))
	// Output: served by the mesh's chain
}

// gRPC clients dial a service name; the mesh's discovery and balancer run
// inside grpc-go.
func ExampleMesh_DialGRPC() {
	ctx := context.Background()
	m, err := mesh.New(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()

	srv, _ := m.NewGRPCServer()
	healthpb.RegisterHealthServer(srv, &countingHealth{})
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(lis)
	defer srv.Stop()

	client, err := mesh.New(ctx, mesh.WithEndpoints("inventory", lis.Addr().String()))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()
	cc, err := client.DialGRPC("inventory")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cc.Close()
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(resp.GetStatus())
	// Output: SERVING
}

// An edge service: the frontend's mesh port demands a SPIFFE client
// certificate (strict mTLS, the default with an identity) while its public
// port serves browsers over one-way TLS with a web certificate. Handlers
// on the public port see no peer identity.
func ExampleMesh_Serve_edge() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// In production the identity comes from SPIFFE_ENDPOINT_SOCKET or
	// the WEFT_SVID_* files, and the web certificate from
	// PublicTLSFiles("/etc/tls/tls.crt", "/etc/tls/tls.key").
	meshCA, _ := spiffetest.NewCA(spiffeid.RequireTrustDomainFromString("shop.example"))
	svid, _ := meshCA.IssueX509SVID(spiffeid.RequireFromString("spiffe://shop.example/ns/shop/sa/frontend"), time.Hour)
	webCA, _ := spiffetest.NewCA(spiffeid.RequireTrustDomainFromString("web.example"))
	chain, key, _ := webCA.SignCertificate(&x509.Certificate{DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature})
	webCert := tls.Certificate{Certificate: [][]byte{chain[0].Raw}, PrivateKey: key}

	m, err := mesh.New(ctx, mesh.WithServiceName("frontend"),
		mesh.WithX509Source(security.NewStaticSource(svid, meshCA.Bundle())))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()
	page := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, ok := security.PeerID(r.Context()); ok {
			fmt.Fprintf(w, "hello %s", id)
			return
		}
		io.WriteString(w, "hello browser")
	})
	meshLis, _ := net.Listen("tcp", "127.0.0.1:0")
	publicLis, _ := net.Listen("tcp", "127.0.0.1:0")
	go m.Serve(ctx, meshLis, page)                            // mesh port: SPIFFE mTLS
	go m.Serve(ctx, publicLis, page, mesh.PublicTLS(webCert)) // public port: browsers

	roots := x509.NewCertPool()
	roots.AddCert(webCA.Root())
	browser := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}}}
	defer browser.CloseIdleConnections()
	for _, lis := range []net.Listener{publicLis, meshLis} {
		resp, err := browser.Get("https://" + lis.Addr().String() + "/")
		if err != nil {
			fmt.Println("refused: the mesh port asks for a certificate the browser does not have")
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(string(body))
	}
	// Output:
	// hello browser
	// refused: the mesh port asks for a certificate the browser does not have
}

// A request over a circuit-breaker threshold gets Envoy's answer, 503
// with x-envoy-overloaded, and LocalReplyError gives Go code the error.
func ExampleLocalReplyError() {
	entered, release := make(chan struct{}), make(chan struct{})
	orders := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	}))
	defer orders.Close()
	m, err := mesh.New(context.Background(), mesh.WithEndpoints("orders", orders.Listener.Addr().String()),
		mesh.WithCircuitBreaker(resilience.Limits{MaxRequests: 1}))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()

	done := make(chan struct{})
	go func() { // takes the one request slot
		defer close(done)
		if resp, err := m.HTTPClient().Get("http://orders/slow"); err == nil {
			resp.Body.Close()
		}
	}()
	<-entered
	resp, err := m.HTTPClient().Get("http://orders/items")
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()
	fmt.Println(resp.StatusCode, resp.Header.Get("X-Envoy-Overloaded"))
	err = mesh.LocalReplyError(resp)
	fmt.Println(errors.Is(err, resilience.ErrOverflow), err)
	close(release)
	<-done
	// Output:
	// 503 true
	// true weft: service "orders": resilience: overflow: max requests
}

// Requests that carry the same x-user stick to one backend of a service
// outside xDS, as under an xDS hash policy on the header.
func ExampleWithLBHashHeader() {
	var addrs []string
	for i := range 3 {
		b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "backend %d", i)
		}))
		defer b.Close()
		addrs = append(addrs, b.Listener.Addr().String())
	}
	// In production: WEFT_LB_POLICY=ring_hash WEFT_LB_HASH_HEADER=x-user
	m, err := mesh.New(context.Background(), mesh.WithEndpoints("carts", addrs...),
		mesh.WithLBPolicy("ring_hash"), mesh.WithLBHashHeader("x-user"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()

	seen := map[string]bool{}
	for range 5 {
		req, _ := http.NewRequest(http.MethodGet, "http://carts/cart", nil)
		req.Header.Set("x-user", "alice")
		resp, err := m.HTTPClient().Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		seen[string(body)] = true
	}
	fmt.Println("backends alice reached:", len(seen))
	// Output: backends alice reached: 1
}

// A handler reports its call's load (ORCA); the response carries it in
// Envoy's endpoint-load-metrics header, for clients balancing with
// client_side_weighted_round_robin.
func ExampleWithBackendMetrics() {
	server := orca.NewServerMetricsRecorder()
	server.SetQPS(250) // the server's own figures, in every report
	m, err := mesh.New(context.Background(), mesh.WithBackendMetrics(server))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()
	srv := httptest.NewServer(m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mesh.CallMetricsRecorderFromContext(r.Context()).SetApplicationUtilization(0.7)
		io.WriteString(w, "ok")
	})))
	defer srv.Close()

	resp, err := http.Get(srv.URL)
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()
	fmt.Println(resp.Header.Get("Endpoint-Load-Metrics"))
	// Output: TEXT application_utilization=0.7,rps_fractional=250
}
