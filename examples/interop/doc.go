// Package interop holds Weft's interoperability tests: Weft's HTTP and gRPC
// clients and servers against real peers rather than fixtures, namely
// istiod's discovery server (in-process, as Istio's own proxyless gRPC
// tests run it), a SPIRE server and agent, and Jaeger receiving OTLP
// traces; plus a test that parses the Kubernetes manifests under
// examples/kubernetes.
//
// It is a module of its own so that Istio's, SPIRE's and Kubernetes'
// dependencies never reach the library's go.mod. Run it with
//
//	cd examples/interop && go test ./...
//
// The SPIRE and Jaeger tests build their binaries from the Go module proxy
// once, into the user's cache directory (a few minutes each), and skip
// with the missing piece named when a build is impossible.
package interop
