// Package mesh is Weft's façade, the one package a service imports to join
// the mesh. [New] reads the environment and options and composes discovery,
// load balancing, routing, retries, circuit breaking, SPIFFE mutual TLS,
// authorization and OpenTelemetry into one [Mesh], whose methods wrap the
// service's own HTTP and gRPC clients and servers; no sidecar sits between
// them. Four methods are most of what a service calls: [Mesh.HTTPClient]
// and [Mesh.Handler] for HTTP, [Mesh.DialGRPC] and [Mesh.NewGRPCServer]
// for gRPC.
//
//   - Clients: [Mesh.HTTPClient] (or [Mesh.Transport] around a transport of
//     your own) and [Mesh.DialGRPC]. A URL's host or a gRPC target is a
//     service name, not an address: the mesh finds the service's
//     endpoints, its balancer picks one, and the outcome feeds the balancer.
//     A host that is not a mesh service passes through untouched.
//   - Servers: [Mesh.Handler], [Mesh.ListenAndServe] or [Mesh.Serve] for
//     net/http, [Mesh.NewGRPCServer] for gRPC. The mesh's inbound chain
//     (peer identity, authorization, telemetry, load shedding) runs before
//     the service's code; [security.PeerID] tells a handler who called.
//
// # Configuration
//
// New reads WEFT_*, GRPC_XDS_*, SPIFFE_ENDPOINT_SOCKET and OTEL_* variables
// when it is called; options ([WithEndpoints], [WithBootstrap],
// [WithX509Source], ...) override them. A bad value fails New with an
// error naming the variable or option and the value ([EnvError]).
//
// Without a control plane, WEFT_ENDPOINTS or WEFT_DNS say where services
// live. With an xDS bootstrap (GRPC_XDS_BOOTSTRAP, or [WithBootstrap]) the
// control plane's listeners, routes, clusters and endpoints decide, for
// HTTP and gRPC alike, over one xDS client per Mesh and one ADS stream per
// control-plane server (one in all unless the bootstrap's federation
// authorities name servers of their own).
//
// With an identity (SPIFFE_ENDPOINT_SOCKET, the WEFT_SVID_CERT_FILE,
// WEFT_SVID_KEY_FILE and WEFT_BUNDLE_FILE files, or [WithX509Source]), the
// mesh's clients and servers speak SPIFFE mTLS to each other; WEFT_MTLS
// (strict by default) says whether a server also accepts plaintext.
//
// # Answers in Envoy's place
//
// Where Envoy, as a sidecar, would answer a request itself, the HTTP client
// returns the same answer as a response rather than an error, because a
// caller written for a sidecar branches on the status: a redirect or
// direct-response route gets its status, Location and body, and a request
// a cluster's circuit-breaker threshold refuses gets 503 with
// x-envoy-overloaded: true. The typed error stays reachable for Go
// callers: [LocalReplyError] returns it from the response (for an
// overflow, errors.Is(err, resilience.ErrOverflow) holds and errors.As
// finds a *resilience.OverflowError naming the threshold). gRPC calls get
// the status grpc-go gives: UNAVAILABLE.
//
// # Example
//
//	// WEFT_ENDPOINTS='orders=10.0.0.1:8080,10.0.0.2:8080;inventory=10.0.1.5:50051'
//	func main() {
//		ctx := context.Background()
//		m, err := mesh.New(ctx, mesh.WithServiceName("frontend")) // reads WEFT_*, GRPC_XDS_*, OTEL_*
//		if err != nil {
//			log.Fatal(err) // a bad variable is named: mesh: WEFT_ENDPOINTS="orders": ...
//		}
//		defer m.Close()
//
//		// Clients: the URL host or gRPC target is a service name, not an address.
//		resp, err := m.HTTPClient().Get("http://orders/items") // balanced over orders' endpoints
//		cc, err := m.DialGRPC("inventory")                      // same discovery, same balancer code
//
//		// Servers: the mesh's inbound chain wraps your handler.
//		srv, err := m.NewGRPCServer()
//		pb.RegisterInventoryServer(srv, impl)
//		go srv.Serve(lis)
//		log.Fatal(m.ListenAndServe(ctx, ":8080", mux)) // drains in-flight requests when ctx ends
//	}
//
// # An edge service
//
// With an identity every mesh server demands a client certificate, which
// browsers do not have. A server given [Public] (plaintext) or [PublicTLS]
// / [PublicTLSFiles] (one-way TLS with a web certificate) serves its own
// transport while the process's other servers stay strict:
//
//	go m.Serve(ctx, meshLis, api)                                   // SPIFFE mTLS
//	go m.Serve(ctx, publicLis, site, mesh.PublicTLSFiles(crt, key)) // browsers
//
// A public server has no peer identity: authorization judges its requests
// with an empty principal, so rules naming principals never match there,
// and it does not follow the control plane's inbound listener, which
// describes the mesh port.
//
// A Mesh is safe for concurrent use. Close releases everything it started.
package mesh
