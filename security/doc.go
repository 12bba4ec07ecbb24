// Package security gives a Weft service its SPIFFE identity, secures every
// hop with mutual TLS, and decides which callers may do what.
//
// # Identity
//
// A [Source] supplies this service's X.509-SVID and the trust bundles used
// to verify peers. [NewWorkloadAPISource] follows a SPIFFE Workload API
// (SPIRE, or spiffetest in tests) through every rotation; [NewFileSource]
// reads PEM files and reloads them when they change; [NewStaticSource]
// holds values set in code.
//
// # Mutual TLS
//
// [ServerTLSConfig] and [ClientTLSConfig] build tls.Configs that present the
// source's current SVID on every handshake (so rotation needs no restart)
// and verify the peer's X509-SVID against the bundle of the peer's own trust
// domain only, on full and resumed handshakes alike, before an [Authorizer]
// decides whether that peer ID may connect. [PermissiveListener] serves
// mutual TLS and plaintext on one port, for WEFT_MTLS=permissive.
//
// A public port (an edge service's, reached by browsers) is not mutual TLS:
// [ServerOnlyTLSConfig] serves a web certificate and asks for none, from
// [StaticCertificate] or from [LoadKeyPairFiles], which reads the PEM
// files again when they change. Its callers have no [PeerID].
//
// Inside an HTTP handler wrapped by the mesh, or a gRPC method served by the
// mesh's server, [PeerID] returns the caller's SPIFFE ID as verified during
// the handshake; [PeerIDFromTLS] reads it from a connection state.
//
// # Authorization
//
// [ParseAuthorizationPolicies] reads Istio AuthorizationPolicy documents
// (security.istio.io/v1) into a [PolicySet], evaluated in Istio's order:
// any matching DENY policy denies; then, when ALLOW policies exist, a
// request must match one of them; AUDIT policies only mark a request.
// [AuthorizationHandler] and the gRPC interceptors ([UnaryServerInterceptor],
// [StreamServerInterceptor]) enforce a policy set, and [WatchPolicyFile]
// keeps one in step with a file (WEFT_AUTHZ_POLICY).
//
// # Request authentication
//
// RequestAuthentication documents in the same data declare the JSON Web
// Token issuers a workload accepts (Istio's semantics: an invalid token
// is refused with 401 or UNAUTHENTICATED, a request without one goes on,
// and AuthorizationPolicy decides on requestPrincipals and
// request.auth.claims). [AuthenticationHandler] and its gRPC interceptors
// validate the tokens, as [AuthorizationHandler] does itself when none ran
// before; [RequestPrincipal] and [RequestClaims] give the handler the
// verified token. A [PolicyWatcher] fetches and caches the issuers' key
// sets (jwksUri), keeping the last good keys when a fetch fails.
//
// A file may hold the policies of a whole namespace or mesh, as istiod
// serves them: given the loading [Workload] (its namespace, service and
// labels), [PolicySet.For] and [WithWorkload] keep only the policies whose
// namespace, spec.selector and spec.targetRefs select it. Without a
// namespace, every policy in the file applies to the service that loads it.
package security
