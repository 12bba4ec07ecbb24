package balancer

import (
	"context"
	"encoding/json"
	"errors"
	"sync"

	"google.golang.org/grpc/attributes"
	gbalancer "google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	gresolver "google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/resolver"
)

// grpcClustersName is the gRPC policy of a channel whose calls are routed
// to several clusters (an xDS listener's routes): it owns the SubConns of
// every cluster the routes name and picks in the cluster the call's route
// chose. No Weft policy can take the name: theirs start "weft_".
const grpcClustersName = "weft:clusters"

func init() { gbalancer.Register(grpcClustersBuilder{}) }

// GRPCCluster is one cluster of a channel's routes, as its resolver hands
// it to the balancer GRPCClustersServiceConfig selects.
type GRPCCluster struct {
	// Builder and Config are the cluster's policy, composed as the HTTP
	// path composes it (priority and locality failover, zone-aware
	// routing, slow start, outlier detection).
	Builder Builder
	Config  any
	// Generation changes whenever Builder or Config does: the channel then
	// replaces the cluster's balancer. Updates with the same Generation
	// only change the endpoints.
	Generation uint64
	Endpoints  []resolver.Endpoint
	// AddressAttributes are attached to the address of every SubConn the
	// cluster opens, where the channel's transport credentials find them
	// (credentials.ClientHandshakeInfoFromContext): how a cluster's own
	// upstream TLS, such as the server identities it allows, reaches the
	// handshake. A change needs a new Generation.
	AddressAttributes *attributes.Attributes
	// Load, when non-nil, counts the cluster's calls per locality of the
	// endpoint each attempt is picked for (xDS load reporting): started
	// at the pick, done when grpc-go reports the attempt's end, failed
	// when it ends with an error, as grpc-go's cluster_impl counts them.
	// A change needs a new Generation.
	Load LoadReporter
	// Err, with no Endpoints, fails the calls routed to the cluster with
	// UNAVAILABLE (the cluster does not exist, or its endpoints could not
	// be had); with Endpoints, the channel keeps using them.
	Err error
}

// LoadReporter counts a cluster's calls per locality for load reporting.
// Locality is called on every pick: it must not block, and should not
// allocate once a locality has been seen.
type LoadReporter interface {
	Locality(resolver.Locality) LocalityLoad
}

// LocalityLoad counts the calls of one locality: Start at the pick, Done
// at the end of the attempt.
type LocalityLoad interface {
	Start()
	Done(failed bool)
}

type grpcClustersKey struct{}

// grpcClusterSet is the attribute value: a pointer, so grpc-go's attribute
// comparison never looks inside the map.
type grpcClusterSet struct{ m map[string]GRPCCluster }

// GRPCClustersState returns the resolver state that hands clusters to a
// channel using GRPCClustersServiceConfig. A cluster a call's route names
// and clusters lacks is still pending: its calls wait for the next state,
// within their deadline.
func GRPCClustersState(clusters map[string]GRPCCluster) gresolver.State {
	return gresolver.State{Attributes: attributes.New(grpcClustersKey{}, &grpcClusterSet{m: clusters})}
}

// GRPCClustersServiceConfig is the service config, for
// grpc.WithDefaultServiceConfig, of a channel whose resolver publishes
// GRPCClustersState: each call goes to the cluster ContextWithGRPCRoute
// names, balanced by that cluster's own Weft policy.
func GRPCClustersServiceConfig() string {
	return `{"loadBalancingConfig":[{"` + grpcClustersName + `":{}}]}`
}

// GRPCRoute is the routing decision for one call on a channel using
// GRPCClustersServiceConfig, made before the pick (by the route match in
// an interceptor) and read by the picker. It holds for every attempt of
// the call, as in grpc-go, where the cluster is chosen once per call.
type GRPCRoute struct {
	Cluster string
	// Hash is the call's hash from the route's hash policies, for
	// consistent-hashing policies; valid when HasHash is true.
	Hash    uint64
	HasHash bool
}

type grpcRouteKey struct{}

// ContextWithGRPCRoute returns ctx carrying r for the picks of the calls
// made with it.
func ContextWithGRPCRoute(ctx context.Context, r *GRPCRoute) context.Context {
	return context.WithValue(ctx, grpcRouteKey{}, r)
}

func grpcRouteFrom(ctx context.Context) *GRPCRoute {
	r, _ := ctx.Value(grpcRouteKey{}).(*GRPCRoute)
	return r
}

type grpcClustersBuilder struct{}

func (grpcClustersBuilder) Name() string { return grpcClustersName }

type grpcClustersConfig struct {
	serviceconfig.LoadBalancingConfig
}

func (grpcClustersBuilder) ParseConfig(json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	return grpcClustersConfig{}, nil
}

func (grpcClustersBuilder) Build(cc gbalancer.ClientConn, _ gbalancer.BuildOptions) gbalancer.Balancer {
	return &grpcClusters{cc: cc, children: map[string]*clusterChild{}}
}

// grpcClusters runs one grpcBalancer per cluster inside one channel, as
// grpc-go's xds_cluster_manager does: each child opens and watches its
// cluster's SubConns through the channel and publishes its picker here;
// the channel's picker dispatches each call to the child of its route's
// cluster. grpc-go calls the Balancer methods serially; mu guards the
// children's published states, which child pickers update from their
// policies' goroutines too. Lock order: a child's lock, then mu; mu is
// never held while calling into a child.
type grpcClusters struct {
	cc gbalancer.ClientConn

	children map[string]*clusterChild // only touched serially

	mu     sync.Mutex
	states map[string]childState // by cluster; guarded by mu
	// current is each cluster's live child, guarded by mu: a replaced or
	// removed child may still publish (its SubConns report their shutdown
	// from grpc-go's goroutines), and its state must not overwrite its
	// successor's, whose READY picker would then never be seen again.
	current map[string]*childCC
	closed  bool
}

type clusterChild struct {
	bal        *grpcBalancer
	cc         *childCC
	generation uint64
}

type childState struct {
	cc *childCC // which child published it: a replaced child's are stale
	st gbalancer.State
}

// childCC is a child's view of the channel: SubConns are the channel's,
// published states come to the parent.
type childCC struct {
	gbalancer.ClientConn
	parent *grpcClusters
	name   string
}

func (c *childCC) UpdateState(s gbalancer.State) { c.parent.childUpdated(c, s) }

func (b *grpcClusters) UpdateClientConnState(ccs gbalancer.ClientConnState) error {
	var set *grpcClusterSet
	if a := ccs.ResolverState.Attributes; a != nil {
		set, _ = a.Value(grpcClustersKey{}).(*grpcClusterSet)
	}
	if set == nil {
		err := errors.New("balancer: " + grpcClustersName + ": resolver state carries no clusters")
		b.ResolverError(err)
		return gbalancer.ErrBadResolverState
	}
	for name, ch := range b.children {
		if spec, ok := set.m[name]; !ok || spec.Generation != ch.generation {
			b.removeChild(name, ch)
		}
	}
	for name, spec := range set.m {
		ch := b.children[name]
		if ch == nil {
			ccw := &childCC{ClientConn: b.cc, parent: b, name: name}
			ch = &clusterChild{
				bal: &grpcBalancer{builder: spec.Builder, cc: ccw, subConns: map[string]*grpcSubConn{},
					addrAttrs: spec.AddressAttributes, load: spec.Load},
				cc:         ccw,
				generation: spec.Generation,
			}
			b.children[name] = ch
			b.mu.Lock()
			if b.current == nil {
				b.current = map[string]*childCC{}
			}
			b.current[name] = ccw
			b.mu.Unlock()
		}
		if len(spec.Endpoints) == 0 {
			err := spec.Err
			if err == nil {
				err = errors.New("no endpoints")
			}
			ch.bal.ResolverError(err)
			continue
		}
		eps := make([]gresolver.Endpoint, len(spec.Endpoints))
		for i, e := range spec.Endpoints {
			eps[i] = gresolver.Endpoint{Addresses: []gresolver.Address{{Addr: e.Addr}}, Attributes: attributes.New(resolver.GRPCEndpointKey, e)}
		}
		// A child's error (no serving endpoint) is its own picker's to
		// report, to the calls routed to it.
		_ = ch.bal.UpdateClientConnState(gbalancer.ClientConnState{
			ResolverState:  gresolver.State{Endpoints: eps},
			BalancerConfig: grpcConfig{b: spec.Builder, cfg: spec.Config},
		})
	}
	b.publish()
	return nil
}

func (b *grpcClusters) removeChild(name string, ch *clusterChild) {
	delete(b.children, name)
	// Retired before it closes: what it publishes while closing is stale.
	b.mu.Lock()
	if b.current[name] == ch.cc {
		delete(b.current, name)
	}
	if cs, ok := b.states[name]; ok && cs.cc == ch.cc {
		delete(b.states, name)
	}
	b.mu.Unlock()
	ch.bal.Close()
}

func (b *grpcClusters) childUpdated(c *childCC, s gbalancer.State) {
	b.mu.Lock()
	if b.closed || b.current[c.name] != c {
		b.mu.Unlock()
		return // closed, or a replaced child's late state
	}
	if b.states == nil {
		b.states = map[string]childState{}
	}
	b.states[c.name] = childState{cc: c, st: s}
	b.mu.Unlock()
	b.publish()
}

// publish hands grpc-go a picker over the children's latest pickers and
// the channel's aggregate state: READY when any cluster is, as grpc-go's
// cluster manager reports it.
func (b *grpcClusters) publish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	pickers := make(map[string]gbalancer.Picker, len(b.states))
	var ready, connecting, failing bool
	for name, cs := range b.states {
		pickers[name] = cs.st.Picker
		switch cs.st.ConnectivityState {
		case connectivity.Ready:
			ready = true
		case connectivity.Connecting, connectivity.Idle:
			connecting = true
		case connectivity.TransientFailure:
			failing = true
		}
	}
	state := connectivity.Connecting
	switch {
	case ready:
		state = connectivity.Ready
	case connecting:
	case failing:
		state = connectivity.TransientFailure
	}
	b.cc.UpdateState(gbalancer.State{ConnectivityState: state, Picker: &clustersPicker{pickers: pickers}})
}

func (b *grpcClusters) ResolverError(err error) {
	if len(b.children) > 0 {
		return // keep routing with the clusters we have
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.cc.UpdateState(resolverFailure(err))
}

func (b *grpcClusters) UpdateSubConnState(gbalancer.SubConn, gbalancer.SubConnState) {
	// Unused: every SubConn has a StateListener, owned by its child.
}

func (b *grpcClusters) ExitIdle() {
	for _, ch := range b.children {
		ch.bal.ExitIdle()
	}
}

func (b *grpcClusters) Close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	for name, ch := range b.children {
		delete(b.children, name)
		ch.bal.Close()
	}
}

// clustersPicker dispatches a call to the picker of its route's cluster.
// It is immutable.
type clustersPicker struct {
	pickers map[string]gbalancer.Picker
}

func (p *clustersPicker) Pick(info gbalancer.PickInfo) (gbalancer.PickResult, error) {
	r := grpcRouteFrom(info.Ctx)
	if r == nil {
		return gbalancer.PickResult{}, status.Error(codes.Internal, "balancer: "+grpcClustersName+": the call carries no route decision")
	}
	cp := p.pickers[r.Cluster]
	if cp == nil {
		// The cluster's first state is still on its way.
		return gbalancer.PickResult{}, gbalancer.ErrNoSubConnAvailable
	}
	return cp.Pick(info)
}
