package mesh_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
)

// unhealthyEDS is cluster's load assignment with addrs all marked
// UNHEALTHY by the control plane.
func unhealthyEDS(cluster string, addrs ...string) *endpointv3.ClusterLoadAssignment {
	la := xdstest.Endpoints(cluster, addrs...)
	for _, e := range la.Endpoints[0].LbEndpoints {
		e.HealthStatus = corev3.HealthStatus_UNHEALTHY
	}
	return la
}

// clusterPhase is one configuration of a row and the backend every call
// must reach under it.
type clusterPhase struct {
	name      string
	resources func(e *parityEnv) []types.Resource
	want      string
}

// runPhases applies each phase and checks that, on every client, calls
// move to the phase's backend within 15 s and then all 10 of the next
// calls reach it.
func runPhases(t *testing.T, e *parityEnv, phases []clusterPhase) map[string]string {
	t.Helper()
	got := map[string]string{}
	for i, p := range phases {
		if i > 0 {
			e.cp.SetSnapshot(t, xdsNode, strconv.Itoa(i+1), p.resources(e)...)
		}
		for _, c := range e.clients {
			start := time.Now()
			var last outcome
			for {
				if last = c.call(callLimit); last.backend == p.want {
					break
				}
				if time.Since(start) > 15*time.Second {
					t.Fatalf("%s: %s: calls did not reach %s within 15 s; last backend %q, err %v", c.name, p.name, p.want, last.backend, last.err)
				}
				time.Sleep(10 * time.Millisecond)
			}
			const n = 10
			hits := 0
			for range n {
				if o := c.call(callLimit); o.err == nil && o.backend == p.want {
					hits++
				} else {
					t.Errorf("%s: %s: backend %q, err %v; want %s", c.name, p.name, o.backend, o.err, p.want)
				}
			}
			if got[c.name] != "" {
				got[c.name] += "; "
			}
			got[c.name] += fmt.Sprintf("%s: %d/%d to %s", p.name, hits, n, p.want)
		}
	}
	return got
}

// TestAggregateClusterFailover holds aggregate clusters (gRFC A37) on
// Weft's gRPC and HTTP clients beside grpc-go's xDS client, the oracle.
// Envoy: "The fallback priority is defined implicitly by the ordering in
// the clusters list", and the priorities of the underlying clusters are
// linearized, the secondary's after the primary's. So traffic stays on
// the primary while it has healthy endpoints, fails over to the secondary
// (EDS or LOGICAL_DNS) when the control plane marks them all unhealthy or
// removes them, and comes back when they return.
func TestAggregateClusterFailover(t *testing.T) {
	front := func(e *parityEnv) []types.Resource {
		return []types.Resource{parityListener(), parityRoutes(parityRoute("agg", nil, nil))}
	}
	with := func(base func(e *parityEnv) []types.Resource, more func(e *parityEnv) []types.Resource) func(e *parityEnv) []types.Resource {
		return func(e *parityEnv) []types.Resource { return append(base(e), more(e)...) }
	}
	secondaries := []struct {
		name string
		// secondary is the secondary cluster's resources, serving b1.
		secondary func(e *parityEnv) []types.Resource
	}{
		{name: "EDS secondary", secondary: func(e *parityEnv) []types.Resource {
			return []types.Resource{parityCluster("secondary", nil), xdstest.Endpoints("secondary", e.b[1].addr)}
		}},
		{name: "LOGICAL_DNS secondary", secondary: func(e *parityEnv) []types.Resource {
			// localhost resolves to 127.0.0.1, where b1 listens.
			_, port, _ := net.SplitHostPort(e.b[1].addr)
			p, _ := strconv.ParseUint(port, 10, 32)
			return []types.Resource{xdstest.LogicalDNSCluster("secondary", "localhost", uint32(p))}
		}},
		{name: "nested aggregate secondary", secondary: func(e *parityEnv) []types.Resource {
			return []types.Resource{xdstest.AggregateCluster("secondary", "inner"), parityCluster("inner", nil), xdstest.Endpoints("inner", e.b[1].addr)}
		}},
	}
	for _, sec := range secondaries {
		t.Run(sec.name, func(t *testing.T) {
			base := with(front, func(e *parityEnv) []types.Resource {
				return append(sec.secondary(e), xdstest.AggregateCluster("agg", "primary", "secondary"), parityCluster("primary", nil))
			})
			phases := []clusterPhase{
				{name: "primary healthy", want: "b0", resources: with(base, func(e *parityEnv) []types.Resource {
					return []types.Resource{xdstest.Endpoints("primary", e.b[0].addr)}
				})},
				{name: "primary unhealthy", want: "b1", resources: with(base, func(e *parityEnv) []types.Resource {
					return []types.Resource{unhealthyEDS("primary", e.b[0].addr)}
				})},
				{name: "primary healthy again", want: "b0", resources: with(base, func(e *parityEnv) []types.Resource {
					return []types.Resource{xdstest.Endpoints("primary", e.b[0].addr)}
				})},
				{name: "primary endpoints removed", want: "b1", resources: with(base, func(e *parityEnv) []types.Resource {
					return []types.Resource{&endpointv3.ClusterLoadAssignment{ClusterName: "primary"}}
				})},
			}
			e := newParityEnv(t, parityRow{backends: 2, resources: phases[0].resources})
			got := runPhases(t, e, phases)
			for _, c := range e.clients {
				t.Logf("%-9s %s", c.name, got[c.name])
			}
		})
	}
}

// TestAggregateClusterErrors: an aggregate graph Weft cannot use fails
// the calls routed to it, on both protocols, with an error naming the
// aggregate cluster and what is wrong (grpc-go also fails such calls; its
// messages differ and are not compared).
func TestAggregateClusterErrors(t *testing.T) {
	tests := []struct {
		name      string
		resources func(e *parityEnv) []types.Resource
		want      string
	}{
		{name: "loop", want: `aggregate cluster "agg": the graph loops: agg -> x -> agg`, resources: func(e *parityEnv) []types.Resource {
			return []types.Resource{xdstest.AggregateCluster("agg", "x"), xdstest.AggregateCluster("x", "agg")}
		}},
		{name: "too deep", want: `aggregate cluster "agg": the graph exceeds the maximum depth of 16`, resources: func(e *parityEnv) []types.Resource {
			out := []types.Resource{xdstest.AggregateCluster("agg", "c1")}
			for i := 1; i < 17; i++ {
				out = append(out, xdstest.AggregateCluster(fmt.Sprintf("c%d", i), fmt.Sprintf("c%d", i+1)))
			}
			return append(out, parityCluster("c17", nil), xdstest.Endpoints("c17", e.b[0].addr))
		}},
		{name: "different upstream TLS", want: `underlying clusters "a" and "b" ask for different upstream TLS`, resources: func(e *parityEnv) []types.Resource {
			b := parityCluster("b", nil)
			b.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{
				TypedConfig: mustAnyT(t, &tlsv3.UpstreamTlsContext{Sni: "b"})}}
			return []types.Resource{xdstest.AggregateCluster("agg", "a", "b"), parityCluster("a", nil), b,
				xdstest.Endpoints("a", e.b[0].addr), xdstest.Endpoints("b", e.b[0].addr)}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newParityEnv(t, parityRow{backends: 1, resources: func(e *parityEnv) []types.Resource {
				return append([]types.Resource{parityListener(), parityRoutes(parityRoute("agg", nil, nil))}, tt.resources(e)...)
			}})
			for _, c := range []*parityClient{e.client(weftGRPC), e.client(weftHTTP)} {
				o := c.call(callLimit)
				if o.err == nil || !strings.Contains(o.err.Error(), tt.want) {
					t.Errorf("%s: call error = %v, want one containing %q", c.name, o.err, tt.want)
				}
				if c.hc != nil && o.code != codes.Unavailable {
					t.Errorf("%s: code %v, want UNAVAILABLE", c.name, o.code)
				}
			}
		})
	}
}

func mustAnyT(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestAggregateClusterUnsubscribes: when the aggregate cluster becomes an
// EDS cluster, the mesh stops following the underlying clusters and their
// endpoints; over delta xDS the control plane hears of it at once.
func TestAggregateClusterUnsubscribes(t *testing.T) {
	cp := xdstest.NewServer(t)
	b0, b1 := startParityBackend(t, "b0"), startParityBackend(t, "b1")
	front := []types.Resource{parityListener(), parityRoutes(parityRoute("agg", nil, nil))}
	cp.SetSnapshot(t, xdsNode, "1", append(front, xdstest.AggregateCluster("agg", "primary"), parityCluster("primary", nil),
		xdstest.Endpoints("primary", b0.addr))...)
	c := &parityClient{name: weftHTTP, http: newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)), mesh.WithXDSDelta(true)).HTTPClient()}
	if o := c.call(callLimit); o.backend != "b0" {
		t.Fatalf("through the aggregate: backend %q, err %v; want b0", o.backend, o.err)
	}
	cp.SetSnapshot(t, xdsNode, "2", append(front, parityCluster("agg", nil), xdstest.Endpoints("agg", b1.addr),
		parityCluster("primary", nil), xdstest.Endpoints("primary", b0.addr))...)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for _, typ := range []string{resource.ClusterType, resource.EndpointType} {
		if _, err := cp.WaitDeltaRequest(ctx, func(r *discoveryv3.DeltaDiscoveryRequest) bool {
			return r.GetTypeUrl() == typ && slices.Contains(r.GetResourceNamesUnsubscribe(), "primary")
		}); err != nil {
			t.Errorf("no %s unsubscription of primary: %v", typ, err)
		}
	}
	// The endpoints already known serve until the cluster's own arrive.
	for o := c.call(callLimit); o.backend != "b1"; o = c.call(callLimit) {
		if ctx.Err() != nil {
			t.Fatalf("after the change: backend %q, err %v; want b1", o.backend, o.err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
