// Package spiffetest provides real SPIFFE identities for tests: an
// in-memory certificate authority per trust domain that issues X.509-SVIDs,
// and an in-process SPIFFE Workload API server on a unix socket that serves
// them to go-spiffe's own client.
//
// Everything here is real cryptography and a real gRPC server; nothing is a
// mock. A test typically creates a [CA], starts a [WorkloadAPI] for the
// identity under test, and points the code under test at [WorkloadAPI.Addr]
// (for example through SPIFFE_ENDPOINT_SOCKET):
//
//	ca, _ := spiffetest.NewCA(spiffeid.RequireTrustDomainFromString("example.org"))
//	api, _ := spiffetest.StartWorkloadAPI(ca, spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/web"))
//	defer api.Close()
//	t.Setenv("SPIFFE_ENDPOINT_SOCKET", api.Addr())
//
// [WorkloadAPI.Rotate] issues a fresh SVID and pushes it to every open
// stream; [WorkloadAPI.SetBundles] changes the trust bundles served.
package spiffetest
