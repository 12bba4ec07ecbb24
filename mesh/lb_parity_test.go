package mesh_test

import (
	"fmt"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	maglevv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/maglev/v3"
	randomv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/random/v3"
	ringhashv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/ring_hash/v3"
	roundrobinv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// TestLBParity holds the load-balancing features of a cluster and a
// route's hash policies on Weft's gRPC and HTTP paths side by side with
// grpc-go's xDS client, on the same resources. Where grpc-go implements
// the feature (ring hash on a channel id, A76's endpoint hash keys,
// failover without overprovisioning) it is the oracle; where it does not
// (Maglev, RANDOM, source IP) its result is logged as the contrast and
// Envoy's documented meaning, quoted in the row, is held to both Weft
// paths.
func TestLBParity(t *testing.T) {
	byHeader := func(a *routev3.RouteAction) {
		a.HashPolicy = []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
			Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: "x-user"}}}}
	}
	rows := []parityRow{
		// Envoy: "MAGLEV: Refer to the Maglev load balancing policy";
		// Istio's consistentHash.maglev sends lb_policy MAGLEV, which
		// grpc-go NACKs ("unexpected lbPolicy MAGLEV").
		{name: "maglev from lb_policy, by header", backends: 3, resources: func(e *parityEnv) []types.Resource {
			return []types.Resource{parityListener(), parityRoutes(parityRoute("svc", nil, byHeader)),
				parityCluster("svc", func(c *clusterv3.Cluster) {
					c.LbPolicy = clusterv3.Cluster_MAGLEV
					c.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{}}
				}),
				xdstest.Endpoints("svc", addrs(e.b...)...)}
		}, run: func(t *testing.T, e *parityEnv) map[string]string { return runWeftSticky(t, e) }},
		// gRFC A52: the first policy the client supports wins; grpc-go
		// skips Maglev and runs ring_hash, Weft runs Maglev.
		{name: "typed Maglev, then ring_hash", backends: 3, resources: func(e *parityEnv) []types.Resource {
			return []types.Resource{parityListener(), parityRoutes(parityRoute("svc", nil, byHeader)),
				parityCluster("svc", func(c *clusterv3.Cluster) {
					c.LoadBalancingPolicy = xdstest.LBPolicy(&maglevv3.Maglev{}, &ringhashv3.RingHash{HashFunction: ringhashv3.RingHash_XX_HASH})
				}),
				xdstest.Endpoints("svc", addrs(e.b...)...)}
		}, run: func(t *testing.T, e *parityEnv) map[string]string { return runWeftSticky(t, e, grpcGo) }},
		// Envoy: "RANDOM: The random load balancer selects a random
		// available host." grpc-go skips it for round_robin.
		{name: "typed Random, then round_robin", backends: 3, resources: func(e *parityEnv) []types.Resource {
			return []types.Resource{parityListener(), parityRoutes(parityRoute("svc", nil, nil)),
				parityCluster("svc", func(c *clusterv3.Cluster) {
					c.LoadBalancingPolicy = xdstest.LBPolicy(&randomv3.Random{}, &roundrobinv3.RoundRobin{})
				}),
				xdstest.Endpoints("svc", addrs(e.b...)...)}
		}, run: runSpread},
		// The node advertises envoy.lb.does_not_support_overprovisioning,
		// as grpc-go does: priority 0 with one healthy endpoint of three
		// keeps all the traffic (Envoy's factor 1.4 would send it 46%).
		{name: "failover without overprovisioning", backends: 2, resources: func(e *parityEnv) []types.Resource {
			p0 := parityEDS("svc", locality{zone: "p0", addrs: []string{e.b[0].addr, freeAddr(t), freeAddr(t)}},
				locality{zone: "p1", priority: 1, addrs: []string{e.b[1].addr}})
			for _, lb := range p0.Endpoints[0].LbEndpoints[1:] {
				lb.HealthStatus = corev3.HealthStatus_UNHEALTHY
			}
			return []types.Resource{parityListener(), parityRoutes(parityRoute("svc", nil, nil)), parityCluster("svc", nil), p0}
		}, run: runStaysOnP0},
		// grpc-go: filter_state io.grpc.channel_id hashes "a random
		// number per channel", so a channel's calls stick to one endpoint.
		{name: "ring hash by channel id", backends: 3, resources: func(e *parityEnv) []types.Resource {
			return []types.Resource{parityListener(), parityRoutes(parityRoute("svc", nil, func(a *routev3.RouteAction) {
				a.HashPolicy = []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_FilterState_{
					FilterState: &routev3.RouteAction_HashPolicy_FilterState{Key: "io.grpc.channel_id"}}}}
			})), parityCluster("svc", func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_RING_HASH }),
				xdstest.Endpoints("svc", addrs(e.b...)...)}
		}, run: func(t *testing.T, e *parityEnv) map[string]string {
			return runOneBackend(t, e, weftGRPC, grpcGo, weftHTTP)
		}},
		// Envoy: connection_properties "Hash on source IP address". A
		// proxyless client's source is its own process, so all its calls
		// stick to one endpoint, the same one on both protocols. grpc-go
		// ignores the policy (a random hash per call).
		{name: "ring hash by source IP", backends: 3, resources: func(e *parityEnv) []types.Resource {
			return []types.Resource{parityListener(), parityRoutes(parityRoute("svc", nil, func(a *routev3.RouteAction) {
				a.HashPolicy = []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{
					ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}}}
			})), parityCluster("svc", func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_RING_HASH }),
				xdstest.Endpoints("svc", addrs(e.b...)...)}
		}, run: runSourceIP},
		// gRFC A76: the endpoints' envoy.lb hash_key places them on the
		// ring; every client maps each user to the same backend.
		{name: "ring hash with endpoint hash_key", backends: 3, resources: func(e *parityEnv) []types.Resource {
			la := xdstest.Endpoints("svc", addrs(e.b...)...)
			for i, lb := range la.Endpoints[0].LbEndpoints {
				lb.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy.lb": {Fields: map[string]*structpb.Value{
					"hash_key": structpb.NewStringValue(fmt.Sprintf("pod-%d", i))}}}}
			}
			return []types.Resource{parityListener(), parityRoutes(parityRoute("svc", nil, byHeader)),
				parityCluster("svc", func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_RING_HASH }), la}
		}, run: runRingHash},
	}
	var table [][]string
	for i, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			e := newParityEnv(t, row)
			got := row.run(t, e)
			table = append(table, []string{fmt.Sprintf("%d. %s", i+1, row.name), got[weftGRPC], got[grpcGo], got[weftHTTP]})
		})
	}
	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "row\t"+weftGRPC+"\t"+grpcGo+"\t"+weftHTTP)
	for _, r := range table {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
	t.Logf("what each client measured:\n%s", sb.String())
}

// contrastLimit bounds a call of a client whose result is only logged.
const contrastLimit = 3 * time.Second

// runWeftSticky: 30 users, 3 calls each: on Weft's two paths, and on the
// clients named in also, each user's calls stick to one backend and the
// users spread; both Weft paths map every user alike. Other clients'
// results are logged.
func runWeftSticky(t *testing.T, e *parityEnv, also ...string) map[string]string {
	const users, per = 30, 3
	asserted := append([]string{weftGRPC, weftHTTP}, also...)
	mapping := map[string][]string{}
	got := map[string]string{}
	for _, c := range e.clients {
		check := strings.Contains(strings.Join(asserted, "|"), c.name)
		limit := callLimit
		if !check {
			limit = contrastLimit
		}
		spread, failed := map[string]int{}, 0
		for u := range users {
			seen := map[string]bool{}
			for range per {
				o := c.call(limit, "x-user", fmt.Sprintf("user-%d", u))
				if o.err != nil {
					if check {
						t.Fatalf("%s: user %d: %v", c.name, u, o.err)
					}
					failed++
					continue
				}
				seen[o.backend] = true
			}
			if check && len(seen) != 1 {
				t.Errorf("%s: user-%d's calls reached %d backends, want 1", c.name, u, len(seen))
			}
			for b := range seen {
				mapping[c.name] = append(mapping[c.name], b)
				spread[b]++
			}
			if !check && failed > 0 {
				break // the contrast has shown what it does
			}
		}
		if check && len(spread) < 2 {
			t.Errorf("%s: %d users all on %v, want them spread", c.name, users, spread)
		}
		got[c.name] = fmt.Sprintf("users per backend %v", sortedCounts(spread))
		if failed > 0 {
			got[c.name] = fmt.Sprintf("calls fail (%d): the cluster is NACKed", failed)
		}
	}
	if a, b := mapping[weftGRPC], mapping[weftHTTP]; strings.Join(a, ",") != strings.Join(b, ",") {
		t.Errorf("Weft gRPC maps users %v, Weft HTTP %v: the same table and hash must agree", a, b)
	}
	return got
}

// runSpread: 60 calls from each client reach every one of the 3 backends
// (a backend a random pick misses 60 times has odds of 1e-10).
func runSpread(t *testing.T, e *parityEnv) map[string]string {
	got := map[string]string{}
	for _, c := range e.clients {
		counts := map[string]int{}
		for range 60 {
			o := c.call(callLimit)
			if o.err != nil {
				t.Fatalf("%s: %v", c.name, o.err)
			}
			counts[o.backend]++
		}
		if len(counts) != 3 {
			t.Errorf("%s: 60 calls reached %v, want all 3 backends", c.name, counts)
		}
		got[c.name] = sortedCounts(counts)
	}
	return got
}

// runStaysOnP0: every call of every client goes to b0, priority 0's one
// healthy endpoint.
func runStaysOnP0(t *testing.T, e *parityEnv) map[string]string {
	const n = 40
	got := map[string]string{}
	for _, c := range e.clients {
		counts := map[string]int{}
		for range n {
			o := c.call(callLimit)
			if o.err != nil {
				t.Fatalf("%s: %v", c.name, o.err)
			}
			counts[o.backend]++
		}
		if counts["b0"] != n {
			t.Errorf("%s: %v, want all %d calls on priority 0's b0", c.name, counts, n)
		}
		got[c.name] = sortedCounts(counts)
	}
	return got
}

// runOneBackend: each asserted client's 30 calls all reach one backend.
func runOneBackend(t *testing.T, e *parityEnv, asserted ...string) map[string]string {
	got := map[string]string{}
	for _, c := range e.clients {
		counts := map[string]int{}
		for range 30 {
			o := c.call(callLimit)
			if o.err != nil {
				t.Fatalf("%s: %v", c.name, o.err)
			}
			counts[o.backend]++
		}
		if strings.Contains(strings.Join(asserted, "|"), c.name) && len(counts) != 1 {
			t.Errorf("%s: calls reached %v, want one backend", c.name, counts)
		}
		got[c.name] = sortedCounts(counts)
	}
	return got
}

// runSourceIP: Weft's gRPC and HTTP clients, on meshes of their own in one
// process, send all their calls to one backend, the same one; grpc-go's
// spread is logged.
func runSourceIP(t *testing.T, e *parityEnv) map[string]string {
	got := runOneBackend(t, e, weftGRPC, weftHTTP)
	if got[weftGRPC] != got[weftHTTP] {
		t.Errorf("Weft gRPC calls reached %s, Weft HTTP %s: one process has one source IP", got[weftGRPC], got[weftHTTP])
	}
	return got
}
