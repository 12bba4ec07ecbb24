//go:build race

package mesh_test

// churnRequests is the request count of TestLeakFDsAndGoroutines. Under
// the race detector each request costs several times more, so the -race
// run sends a tenth of the 100,000 the plain run sends, to stay within a
// CI time bound; the plain run is the one the README's figures quote.
const churnRequests = 10_000
