package mesh_test

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// TestClusterTypes holds the LOGICAL_DNS and STATIC cluster types end to
// end on Weft's gRPC and HTTP clients, and LOGICAL_DNS on grpc-go's xDS
// client beside them (grpc-go has no STATIC clusters). A logical DNS
// cluster's endpoints are what its one host name resolves to (Envoy takes
// the first address, grpc-go since gRFC A61 and Weft all of them; here
// the name resolves to one); a static cluster's members are, in Envoy's
// words, "specified by the configuration" (its inline load_assignment).
// Each row changes the cluster once, to check that the change is followed.
func TestClusterTypes(t *testing.T) {
	port := func(addr string) uint32 {
		_, p, _ := net.SplitHostPort(addr)
		n, _ := strconv.ParseUint(p, 10, 32)
		return uint32(n)
	}
	front := []types.Resource{parityListener(), parityRoutes(parityRoute("svc", nil, nil))}
	tests := []struct {
		name   string
		grpcGo bool
		phases []clusterPhase
	}{
		{name: "LOGICAL_DNS", grpcGo: true, phases: []clusterPhase{
			// localhost resolves to 127.0.0.1, where the backends listen.
			{name: "localhost:b0", want: "b0", resources: func(e *parityEnv) []types.Resource {
				return append(front, xdstest.LogicalDNSCluster("svc", "localhost", port(e.b[0].addr)))
			}},
			{name: "localhost:b1", want: "b1", resources: func(e *parityEnv) []types.Resource {
				return append(front, xdstest.LogicalDNSCluster("svc", "localhost", port(e.b[1].addr)))
			}},
		}},
		{name: "STATIC", phases: []clusterPhase{
			{name: "inline b0", want: "b0", resources: func(e *parityEnv) []types.Resource {
				return append(front, xdstest.StaticCluster("svc", e.b[0].addr))
			}},
			{name: "inline b1", want: "b1", resources: func(e *parityEnv) []types.Resource {
				return append(front, xdstest.StaticCluster("svc", e.b[1].addr))
			}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newParityEnv(t, parityRow{backends: 2, resources: tt.phases[0].resources})
			if !tt.grpcGo {
				e.clients = []*parityClient{e.client(weftGRPC), e.client(weftHTTP)}
			}
			got := runPhases(t, e, tt.phases)
			for _, c := range e.clients {
				t.Logf("%-9s %s", c.name, got[c.name])
			}
		})
	}
}

// TestStaticClusterSpreads: a STATIC cluster of two endpoints is balanced
// round robin over both on both protocols.
func TestStaticClusterSpreads(t *testing.T) {
	e := newParityEnv(t, parityRow{backends: 2, resources: func(e *parityEnv) []types.Resource {
		return []types.Resource{parityListener(), parityRoutes(parityRoute("svc", nil, nil)), xdstest.StaticCluster("svc", addrs(e.b...)...)}
	}})
	for _, c := range []*parityClient{e.client(weftGRPC), e.client(weftHTTP)} {
		// A gRPC channel sends to its READY connections only: until the
		// second one is up, every call goes to the first. Wait (bounded)
		// until both have answered, then count.
		seen := map[string]bool{}
		for deadline := time.Now().Add(10 * time.Second); len(seen) < 2 && time.Now().Before(deadline); {
			if o := c.call(callLimit); o.err == nil {
				seen[o.backend] = true
			}
		}
		counts := map[string]int{}
		const n = 20
		for range n {
			o := c.call(callLimit)
			if o.err != nil {
				t.Fatalf("%s: %v", c.name, o.err)
			}
			counts[o.backend]++
		}
		if counts["b0"] < n/4 || counts["b1"] < n/4 {
			t.Errorf("%s: %v over %d calls, want both backends at least %d", c.name, counts, n, n/4)
		}
	}
}
