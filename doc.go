// Package weft is a proxyless service mesh for Go.
//
// A service imports Weft and wraps its net/http and gRPC clients and
// servers; from then on discovery, load balancing, routing, retries, circuit
// breaking, SPIFFE mutual TLS, authorization and OpenTelemetry happen inside
// the process, with no sidecar hop. Configuration comes from any xDS control
// plane (istiod, Traffic Director, a go-control-plane server) through gRPC's
// bootstrap file, or, without one, from environment variables.
//
// # The packages
//
//   - mesh: the façade. New reads the environment and options; the Mesh
//     wraps clients (HTTPClient, Transport, DialGRPC) and servers (Handler,
//     ListenAndServe, NewGRPCServer).
//   - resolver: discovery, from a service name to a stream of endpoint sets
//     (static, DNS, xDS), with a grpc-go resolver adapter.
//   - balancer: endpoint picking, one policy a file behind one Picker
//     interface, registered with grpc-go too.
//   - resilience: retries, budgets, timeouts, circuit breakers, rate limits.
//   - security: SPIFFE identities, mTLS, peer identity, authorization.
//   - telemetry: OpenTelemetry traces, metrics and logs.
//
// # The data path
//
// An outbound request to http://orders:8080/items names the service
// "orders" by its URL host. The mesh finds the service's endpoints
// (WEFT_ENDPOINTS, a DNS name, or the xDS listener, route, cluster and
// endpoint resources), the service's balancer picks one, and the request
// goes out on a pooled connection to that endpoint, its outcome feeding the
// balancer. A host that is not a mesh service passes through untouched.
// Inbound, Handler and NewGRPCServer verify the caller and record the
// request before the service's own code runs.
//
// # Example
//
//	// WEFT_ENDPOINTS=orders=10.0.0.1:8080,10.0.0.2:8080
//	func main() {
//		ctx := context.Background()
//		m, err := mesh.New(ctx, mesh.WithServiceName("frontend"))
//		if err != nil {
//			log.Fatal(err) // names the bad variable or option
//		}
//		defer m.Close()
//
//		resp, err := m.HTTPClient().Get("http://orders/items") // balanced
//		if err == nil {
//			resp.Body.Close()
//		}
//		log.Fatal(m.ListenAndServe(ctx, ":8080", http.HandlerFunc(page)))
//	}
package weft
