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
// # Where to start
//
// Package [github.com/weftmesh/weft/mesh] is the way in: its documentation
// (go doc github.com/weftmesh/weft/mesh) opens on how the pieces fit and a
// twenty-line service, a client and a server of HTTP and gRPC, and its
// examples run as they are.
package weft
