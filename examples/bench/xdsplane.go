package main

import (
	"context"
	"fmt"
	"net"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/log"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// grpcNode is the xDS node of the gRPC comparison's clients.
const grpcNode = "bench-grpc"

// controlPlane is a go-control-plane management server on loopback: its
// snapshot cache behind its ADS server, as a real deployment runs it.
type controlPlane struct {
	addr   string
	cache  cache.SnapshotCache
	gs     *grpc.Server
	cancel context.CancelFunc
	done   chan struct{}
}

func startControlPlane() (*controlPlane, error) {
	ln, err := listen()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	// ads=false: with ads=true the cache holds a response back until a
	// request names every resource of the snapshot, and a proxyless client
	// asks only for what it uses.
	c := &controlPlane{addr: ln.Addr().String(), cache: cache.NewSnapshotCache(false, cache.IDHash{}, log.LoggerFuncs{}),
		gs: grpc.NewServer(), cancel: cancel, done: make(chan struct{})}
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(c.gs, serverv3.NewServer(ctx, c.cache, nil))
	go func() { defer close(c.done); c.gs.Serve(ln) }()
	return c, nil
}

func (c *controlPlane) close() {
	c.gs.Stop()
	c.cancel()
	<-c.done
}

// xdsConfig is one node's configuration. Each type has its own version,
// so that a change to endpoints alone resends endpoints alone.
type xdsConfig struct {
	version                                 string // for types without their own
	listeners, routes, clusters, endpoints  []types.Resource
	listenerV, routeV, clusterV, endpointsV string
}

func (c *controlPlane) setSnapshot(node string, cfg xdsConfig) error {
	or := func(v string) string {
		if v == "" {
			return cfg.version
		}
		return v
	}
	snap := &cache.Snapshot{}
	snap.Resources[types.Listener] = cache.NewResources(or(cfg.listenerV), cfg.listeners)
	snap.Resources[types.Route] = cache.NewResources(or(cfg.routeV), cfg.routes)
	snap.Resources[types.Cluster] = cache.NewResources(or(cfg.clusterV), cfg.clusters)
	snap.Resources[types.Endpoint] = cache.NewResources(or(cfg.endpointsV), cfg.endpoints)
	// Not Snapshot.Consistent: it rejects API-listener-only configurations.
	return c.cache.SetSnapshot(context.Background(), node, snap)
}

// bootstrap is a gRPC xDS bootstrap for node pointing at the server.
func (c *controlPlane) bootstrap(node string) []byte { return xdstest.BootstrapJSON(node, c.addr) }

func resourceList[T types.Resource](rs ...T) []types.Resource {
	out := make([]types.Resource, len(rs))
	for i, r := range rs {
		out[i] = r
	}
	return out
}

var (
	listener = xdstest.Listener
	cluster  = func(name string) types.Resource { return xdstest.Cluster(name, "") }
)

func routeConfig(name, clusterName string) types.Resource {
	return xdstest.RouteConfig(name, "*", clusterName)
}

func endpoints(clusterName string, addrs ...string) types.Resource {
	return xdstest.Endpoints(clusterName, addrs...)
}

// scaleEndpoints is a load assignment of n endpoints: primary, the one
// that answers, alone at priority 0, and n-1 addresses that are never
// dialled at priority 1, used only if priority 0 failed. Every endpoint is
// decoded, validated and balanced over all the same.
func scaleEndpoints(clusterName, primary string, n int) *endpointv3.ClusterLoadAssignment {
	la := xdstest.Endpoints(clusterName, primary)
	if n <= 1 {
		return la
	}
	addrs := make([]string, 0, n-1)
	for i := 1; i < n; i++ {
		addrs = append(addrs, net.JoinHostPort(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), "80"))
	}
	backup := xdstest.Endpoints(clusterName, addrs...).Endpoints[0]
	backup.Priority = 1
	backup.Locality = &corev3.Locality{Region: "r", Zone: "backup"}
	backup.LoadBalancingWeight = wrapperspb.UInt32(1)
	la.Endpoints = append(la.Endpoints, backup)
	return la
}
