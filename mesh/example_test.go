package mesh_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/weftmesh/weft/mesh"
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
