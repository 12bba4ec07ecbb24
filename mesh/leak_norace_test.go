//go:build !race

package mesh_test

// churnRequests is the request count of TestLeakFDsAndGoroutines; see
// leak_race_test.go for the smaller count under the race detector.
const churnRequests = 100_000
