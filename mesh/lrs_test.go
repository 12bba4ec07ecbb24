package mesh_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
)

// TestLoadReportingParity sends the same calls through grpc-go's xDS
// client (the oracle), Weft's gRPC path and Weft's HTTP client to a
// cluster whose lrs_server is self, over two localities with one failing
// backend, and holds what each reports over LRS to what its calls did:
// per locality, every attempt issued once, a success or an error once.
// An error is, for gRPC, a status other than OK (grpc-go's count); for
// HTTP, Envoy's upstream rq_error: a reset or a 5xx from the upstream.
// No LRS stream opens before the cluster asks for one, and the stream
// closes when no cluster does.
func TestLoadReportingParity(t *testing.T) {
	cp := xdstest.NewServer(t)
	var b []*parityBackend
	for i := range 4 {
		b = append(b, startParityBackend(t, fmt.Sprintf("b%d", i)))
	}
	b[3].fail.Store(true)
	zoneOf := map[string]string{"b0": "r/a/", "b1": "r/a/", "b2": "r/b/", "b3": "r/b/"}
	resources := func(lrs bool) []types.Resource {
		return []types.Resource{parityListener(), parityRoutes(parityRoute("svc", nil, nil)),
			parityCluster("svc", func(c *clusterv3.Cluster) {
				if lrs {
					c.LrsServer = &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Self{Self: &corev3.SelfConfigSource{}}}
				}
			}),
			parityEDS("svc", locality{zone: "a", addrs: addrs(b[0], b[1])}, locality{zone: "b", addrs: addrs(b[2], b[3])})}
	}
	nodes := map[string]string{weftGRPC: "lrs-weft-grpc", grpcGo: "lrs-grpc-go", weftHTTP: "lrs-weft-http"}
	setAll := func(version string, lrs bool) {
		for _, n := range nodes {
			cp.SetSnapshot(t, n, version, resources(lrs)...)
		}
	}
	setAll("1", false)
	// One node id per client: the LRS server tells their reports apart
	// by the node of each stream's first request.
	bootstrap := func(node string) []byte { return cp.Bootstrap(node) }
	clients := []*parityClient{
		{name: weftGRPC, hc: dialHealth(t, newMesh(t, mesh.WithBootstrap(bootstrap(nodes[weftGRPC]))), "xds:///"+parityHost)},
		{name: grpcGo, hc: dialHealth(t, newMesh(t, mesh.WithBootstrap(bootstrap(nodes[grpcGo])), mesh.WithGRPCGoXDS(grpcGoOracle{})), "xds:///"+parityHost)},
		{name: weftHTTP, http: newMesh(t, mesh.WithBootstrap(bootstrap(nodes[weftHTTP]))).HTTPClient()},
	}
	for _, c := range clients {
		for range 4 {
			c.call(callLimit)
		}
	}
	if opened, _ := cp.LRS.Streams(); opened != 0 {
		t.Fatalf("%d LRS streams opened with no lrs_server set", opened)
	}

	setAll("2", true)
	// Every client has seen the new cluster once its LRS stream is open.
	waitLRS(t, "an LRS stream from every client", func() bool {
		seen := map[string]bool{}
		for _, r := range cp.LRS.FirstRequests() {
			seen[r.GetNode().GetId()] = true
		}
		return len(seen) == len(nodes)
	})
	const calls = 40
	for _, c := range clients {
		before := map[string]int64{}
		for _, bk := range b {
			before[bk.name] = c.arrivals(bk)
		}
		for range calls {
			c.call(callLimit)
		}
		// What the backends saw, per locality.
		want := map[string]xdstest.LocalityCounts{}
		for _, bk := range b {
			n := uint64(c.arrivals(bk) - before[bk.name])
			if n == 0 {
				continue
			}
			w := want[zoneOf[bk.name]]
			w.Issued += n
			if bk.fail.Load() {
				w.Errors += n
			} else {
				w.Succeeded += n
			}
			want[zoneOf[bk.name]] = w
		}
		var got map[string]xdstest.LocalityCounts
		waitLRS(t, c.name+"'s load reports", func() bool {
			got = cp.LRS.Totals(nodes[c.name], "svc")
			return fmt.Sprint(got) == fmt.Sprint(want)
		}, func() {
			t.Errorf("%s: LRS totals per locality: got %v, want %v (what the backends saw)", c.name, got, want)
		})
		t.Logf("%s: reported per locality %v", c.name, got)
	}
	for _, r := range cp.LRS.Reports() {
		for _, cs := range r.Req.GetClusterStats() {
			if cs.GetClusterName() != "svc" || cs.GetClusterServiceName() != "" || cs.GetLoadReportInterval().AsDuration() <= 0 {
				t.Errorf("%s: cluster stats %q/%q interval %v, want svc, no service name (eds_service_name unset), a positive interval",
					r.Node, cs.GetClusterName(), cs.GetClusterServiceName(), cs.GetLoadReportInterval().AsDuration())
			}
		}
	}

	// In progress: every client counts a call from its pick to its end
	// (for HTTP, its response headers), at the picked endpoint's locality.
	for _, bk := range b {
		bk.delay.Store(int64(1500 * time.Millisecond))
	}
	const inFlight = 4
	var wg sync.WaitGroup
	for _, c := range clients {
		for range inFlight {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.call(callLimit)
			}()
		}
	}
	for _, c := range clients {
		var got uint64
		waitLRS(t, c.name+"'s calls in progress", func() bool {
			got = latestInProgress(cp.LRS, nodes[c.name])
			return got == inFlight
		}, func() {
			t.Errorf("%s: requests in progress in the latest report: got %d, want %d", c.name, got, inFlight)
		})
	}
	wg.Wait()
	for _, bk := range b {
		bk.delay.Store(0)
	}
	for _, c := range clients {
		var got uint64
		waitLRS(t, c.name+"'s calls done", func() bool {
			got = latestInProgress(cp.LRS, nodes[c.name])
			return got == 0
		}, func() { t.Errorf("%s: requests in progress after the calls ended: got %d, want 0", c.name, got) })
	}

	// lrs_server gone: the Weft clients close their stream, as grpc-go does.
	setAll("3", false)
	for _, c := range clients {
		c.call(callLimit) // follow the update
	}
	waitLRS(t, "no LRS stream open", func() bool {
		_, open := cp.LRS.Streams()
		return open == 0
	})
}

// latestInProgress is the requests in progress to cluster svc in node's
// latest report.
func latestInProgress(l *xdstest.LRSServer, node string) uint64 {
	rs := l.Reports()
	for i := len(rs) - 1; i >= 0; i-- {
		if rs[i].Node != node {
			continue
		}
		var n uint64
		for _, cs := range rs[i].Req.GetClusterStats() {
			for _, ls := range cs.GetUpstreamLocalityStats() {
				n += ls.GetTotalRequestsInProgress()
			}
		}
		return n
	}
	return 0
}

// waitLRS polls cond for up to 20s; onFail, if given, reports instead of
// the default failure.
func waitLRS(t *testing.T, what string, cond func() bool, onFail ...func()) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			if len(onFail) > 0 {
				onFail[0]()
				return
			}
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}
