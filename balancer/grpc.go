package balancer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	v3orcapb "github.com/cncf/xds/go/xds/data/orca/v3"
	"google.golang.org/grpc/attributes"
	gbalancer "google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/orca"
	gresolver "google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/resolver"
)

// GRPCPrefix is prepended to a policy's name when it is registered with
// grpc-go, so Weft's round_robin ("weft_round_robin") never shadows
// grpc-go's own.
const GRPCPrefix = "weft_"

// GRPCName returns the name under which policy is registered with grpc-go.
func GRPCName(policy string) string { return GRPCPrefix + policy }

// GRPCServiceConfig returns a gRPC service config selecting policy, for
// grpc.WithDefaultServiceConfig: the bare registered policy, with none of
// the layers GRPCServiceConfigFor can carry.
func GRPCServiceConfig(policy string) string {
	return fmt.Sprintf(`{"loadBalancingConfig":[{%q:{}}]}`, GRPCName(policy))
}

func registerGRPC(b Builder) { gbalancer.Register(grpcBuilder{b}) }

func init() { gbalancer.Register(grpcBuilder{}) }

// grpcBuilder is the grpc-go face of a registered policy (b set, named
// "weft_" + its name) or, with b nil, of the Builders handed over by
// GRPCServiceConfigFor (named grpcHandleName).
type grpcBuilder struct{ b Builder }

// grpcHandleName is the gRPC policy that runs a Builder registered with
// GRPCServiceConfigFor. No Weft policy can take it: theirs start "weft_".
const grpcHandleName = "weft:builder"

func (g grpcBuilder) Name() string {
	if g.b == nil {
		return grpcHandleName
	}
	return GRPCName(g.b.Name())
}

// grpcConfig is a parsed gRPC load-balancing config: the Builder to run
// (nil: the registered policy's own) and its settings.
type grpcConfig struct {
	serviceconfig.LoadBalancingConfig
	b   Builder
	cfg any
}

func (g grpcBuilder) ParseConfig(js json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	if g.b == nil {
		return parseHandle(js)
	}
	p, ok := g.b.(ConfigParser)
	if !ok {
		return grpcConfig{}, nil
	}
	cfg, err := p.ParseConfig(js) // its errors already name the policy
	if err != nil {
		return nil, err
	}
	return grpcConfig{cfg: cfg}, nil
}

// grpcHandles holds the Builders handed to grpc-go by GRPCServiceConfigFor,
// by handle.
var grpcHandles struct {
	sync.Mutex
	next uint64
	m    map[uint64]Builder
}

// GRPCServiceConfigFor returns a gRPC service config, for
// grpc.WithDefaultServiceConfig, whose channels balance with b: a Builder
// composed at run time, such as a policy inside NewSlowStart,
// NewPriorityLocality and NewOutlierDetection, so that a gRPC channel runs
// the very balancer an HTTP client does. grpc-go's policy registry is
// global and reads configs from JSON, so b is not registered by name,
// which would make one data path's composition every channel's; the
// config names b's entry in a table instead, and each channel parses it
// once, when it is made, and keeps b, with its default settings, for its
// lifetime. release drops the entry: channels made afterwards with the
// config fail to parse it, while those already made are unaffected. Call
// release once b's owner is done making channels.
func GRPCServiceConfigFor(b Builder) (config string, release func()) {
	grpcHandles.Lock()
	if grpcHandles.m == nil {
		grpcHandles.m = map[uint64]Builder{}
	}
	grpcHandles.next++
	h := grpcHandles.next
	grpcHandles.m[h] = b
	grpcHandles.Unlock()
	// The name only helps a reader of the config; the handle decides.
	js, _ := json.Marshal(map[string]any{grpcHandleName: grpcHandle{Handle: h, Name: b.Name()}})
	var once sync.Once
	return `{"loadBalancingConfig":[` + string(js) + `]}`, func() {
		once.Do(func() {
			grpcHandles.Lock()
			delete(grpcHandles.m, h)
			grpcHandles.Unlock()
		})
	}
}

type grpcHandle struct {
	Handle uint64 `json:"handle"`
	Name   string `json:"name,omitempty"`
}

func parseHandle(js json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	var h grpcHandle
	if err := json.Unmarshal(js, &h); err != nil {
		return nil, fmt.Errorf("balancer: %s: %w", grpcHandleName, err)
	}
	grpcHandles.Lock()
	b := grpcHandles.m[h.Handle]
	grpcHandles.Unlock()
	if b == nil {
		return nil, fmt.Errorf("balancer: %s: no Builder under handle %d (released, or never given to GRPCServiceConfigFor)", grpcHandleName, h.Handle)
	}
	return grpcConfig{b: b}, nil
}

func (g grpcBuilder) Build(cc gbalancer.ClientConn, _ gbalancer.BuildOptions) gbalancer.Balancer {
	return &grpcBalancer{builder: g.b, cc: cc, subConns: map[string]*grpcSubConn{}}
}

// grpcBalancer runs a Weft policy inside a gRPC channel: one SubConn per
// serving address. The policy sees every serving address, as an HTTP
// client's does, with the address's discovery data; an address whose
// connection has failed (TRANSIENT_FAILURE, until it is READY again) is
// handed over as Unhealthy, the way outlier detection hands over an
// ejected one, so that priority, locality and zone-aware shares count it
// out. Picks land only on READY SubConns (see grpcPicker). grpc-go calls
// its methods and the SubConn state listeners serially; mu guards what a
// policy's own goroutine (publishing a picker on its own) also reads.
type grpcBalancer struct {
	builder Builder
	cc      gbalancer.ClientConn
	cluster *Cluster
	// addrAttrs go on every SubConn's address (see
	// GRPCCluster.AddressAttributes).
	addrAttrs *attributes.Attributes
	// load counts calls for load reporting, nil when the cluster does not
	// report (see GRPCCluster.Load).
	load LoadReporter

	subConns map[string]*grpcSubConn // by address; only touched serially
	lastErr  error
	// oob, when not 0, is the interval at which the policy asks each READY
	// endpoint for out-of-band load reports (the OpenRcaService stream).
	oob time.Duration

	mu     sync.Mutex
	conns  map[string]grpcConn // the SubConns' states, for pickers
	ready  []string            // the READY addresses, sorted
	state  connectivity.State
	closed bool
}

type grpcSubConn struct {
	sc    gbalancer.SubConn
	ep    resolver.Endpoint
	state connectivity.State
	// failed is set by TRANSIENT_FAILURE and cleared by READY: grpc-go
	// moves a failed SubConn on to IDLE and CONNECTING while it retries,
	// and the policy should not see the address come back until it is READY.
	failed bool
	// stopOOB ends the out-of-band load report stream, nil when none runs.
	stopOOB func()
}

// oobConfig is implemented by the parsed configuration of a policy that
// wants out-of-band load reports (client_side_weighted_round_robin).
type oobConfig interface {
	oobInterval() (time.Duration, bool)
}

// oobListener hands one SubConn's out-of-band reports to its address's
// Endpoint, where the policy reads them.
type oobListener struct {
	b    *grpcBalancer
	addr string
}

func (l *oobListener) OnLoadReport(r *v3orcapb.OrcaLoadReport) {
	if r == nil || l.b.cluster == nil {
		return
	}
	if addrs := l.b.cluster.addrs.Load(); addrs != nil {
		if e := (*addrs)[l.addr]; e != nil {
			e.ReportLoad(loadFromProto(r))
		}
	}
}

// setOOB starts s's out-of-band load reports while it is READY and the
// policy asks for them, and stops them otherwise.
func (b *grpcBalancer) setOOB(s *grpcSubConn, on bool) {
	switch {
	case on && b.oob > 0 && s.stopOOB == nil && s.sc != nil:
		s.stopOOB = orca.RegisterOOBListener(s.sc, &oobListener{b: b, addr: s.ep.Addr}, orca.OOBListenerOptions{ReportInterval: b.oob})
	case !on && s.stopOOB != nil:
		s.stopOOB()
		s.stopOOB = nil
	}
}

// grpcConn is a published view of one SubConn.
type grpcConn struct {
	sc    gbalancer.SubConn
	state connState
}

type connState uint8

const (
	connDown       connState = iota // failed, or no SubConn
	connConnecting                  // its first connection is under way
	connReady
)

func (b *grpcBalancer) UpdateClientConnState(ccs gbalancer.ClientConnState) error {
	if b.cluster == nil {
		var cfg any
		if c, ok := ccs.BalancerConfig.(grpcConfig); ok {
			cfg = c.cfg
			if c.b != nil {
				b.builder = c.b
			}
		}
		if b.builder == nil {
			// grpc-go passes the parsed config to the first update; only a
			// config parsed by another policy leads here.
			return fmt.Errorf("balancer: %s: no Builder in config %T", grpcHandleName, ccs.BalancerConfig)
		}
		if o, ok := cfg.(oobConfig); ok {
			if d, on := o.oobInterval(); on {
				b.oob = d
			}
		}
		b.cluster = NewCluster(b.builder, cfg, OnPicker(b.onPicker))
	}
	eps := endpointsFromState(ccs.ResolverState)
	if len(eps) == 0 {
		b.ResolverError(errors.New("resolver returned no serving endpoints"))
		return gbalancer.ErrBadResolverState
	}
	seen := make(map[string]bool, len(eps))
	for _, ep := range eps {
		seen[ep.Addr] = true
		if s, ok := b.subConns[ep.Addr]; ok {
			s.ep = ep
			continue
		}
		s := &grpcSubConn{ep: ep, state: connectivity.Idle}
		// The deprecation notice warns that SubConns will carry one address
		// each, which is how this balancer uses them; grpc-go offers
		// policies outside its module no other way to open one.
		//lint:ignore SA1019 one address per SubConn, as the notice asks
		sc, err := b.cc.NewSubConn([]gresolver.Address{{Addr: ep.Addr, Attributes: b.addrAttrs}}, gbalancer.NewSubConnOptions{
			StateListener: func(st gbalancer.SubConnState) { b.updateSubConnState(s, st) },
		})
		if err != nil {
			continue
		}
		s.sc = sc
		b.subConns[ep.Addr] = s
		sc.Connect()
	}
	for addr, s := range b.subConns {
		if !seen[addr] {
			b.setOOB(s, false)
			s.sc.Shutdown()
			delete(b.subConns, addr)
		}
	}
	b.regenerate()
	return nil
}

// endpointsFromState reads the serving endpoints of a resolver state; Weft's
// resolver attaches its Endpoint (weight, locality, health) to each one.
func endpointsFromState(st gresolver.State) []resolver.Endpoint {
	var out []resolver.Endpoint
	add := func(addr gresolver.Address, attrs any) {
		ep, ok := attrs.(resolver.Endpoint)
		if !ok {
			ep = resolver.Endpoint{Addr: addr.Addr}
		}
		if ep.Health.Serving() {
			out = append(out, ep)
		}
	}
	if len(st.Endpoints) > 0 {
		for _, e := range st.Endpoints {
			if len(e.Addresses) == 0 {
				continue
			}
			var v any
			if e.Attributes != nil {
				v = e.Attributes.Value(resolver.GRPCEndpointKey)
			}
			add(e.Addresses[0], v)
		}
		return out
	}
	for _, a := range st.Addresses {
		add(a, nil)
	}
	return out
}

func (b *grpcBalancer) updateSubConnState(s *grpcSubConn, st gbalancer.SubConnState) {
	if cur, ok := b.subConns[s.ep.Addr]; !ok || cur != s {
		return // a SubConn this balancer already shut down
	}
	s.state = st.ConnectivityState
	b.setOOB(s, st.ConnectivityState == connectivity.Ready)
	switch st.ConnectivityState {
	case connectivity.Ready:
		s.failed = false
	case connectivity.Idle:
		s.sc.Connect() // keep every endpoint connected, as round_robin does
	case connectivity.TransientFailure:
		s.failed = true
		b.lastErr = st.ConnectionError
		b.cc.ResolveNow(gresolver.ResolveNowOptions{})
	case connectivity.Shutdown:
		delete(b.subConns, s.ep.Addr)
	}
	b.regenerate()
}

// regenerate feeds the endpoints to the policy and works out the channel's
// aggregate state, as grpc-go's round_robin does.
func (b *grpcBalancer) regenerate() {
	conns := make(map[string]grpcConn, len(b.subConns))
	eps := make([]resolver.Endpoint, 0, len(b.subConns))
	var ready []string
	connecting := false
	for addr, s := range b.subConns {
		ep, c := s.ep, grpcConn{sc: s.sc}
		switch {
		case s.state == connectivity.Ready:
			c.state = connReady
			ready = append(ready, addr)
		case s.failed:
			ep.Health = resolver.Unhealthy
		case s.state == connectivity.Idle || s.state == connectivity.Connecting:
			c.state = connConnecting
		}
		if s.state == connectivity.Idle || s.state == connectivity.Connecting {
			connecting = true
		}
		conns[addr] = c
		eps = append(eps, ep)
	}
	// Map order is random; a stable order keeps rotations stable across
	// rebuilds.
	slices.SortFunc(eps, func(a, b resolver.Endpoint) int { return strings.Compare(a.Addr, b.Addr) })
	slices.Sort(ready)
	b.mu.Lock()
	b.conns, b.ready = conns, ready
	switch {
	case len(ready) > 0:
		b.state = connectivity.Ready
	case connecting:
		b.state = connectivity.Connecting
	default:
		b.state = connectivity.TransientFailure
	}
	b.mu.Unlock()
	// The policy answers through onPicker, which publishes to grpc-go.
	b.cluster.Update(eps)
}

func (b *grpcBalancer) onPicker(p Picker) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	var gp gbalancer.Picker
	switch b.state {
	case connectivity.Ready:
		gp = &grpcPicker{p: p, cluster: b.cluster, conns: b.conns, ready: b.ready, load: b.load}
	case connectivity.Connecting:
		gp = errGRPCPicker{gbalancer.ErrNoSubConnAvailable}
	default:
		err := b.lastErr
		if err == nil {
			err = ErrNoHealthyEndpoint
		}
		gp = errGRPCPicker{status.Errorf(codes.Unavailable, "balancer: %s: %v", b.builder.Name(), err)}
	}
	b.cc.UpdateState(gbalancer.State{ConnectivityState: b.state, Picker: gp})
}

func (b *grpcBalancer) ResolverError(err error) {
	b.lastErr = err
	if len(b.subConns) > 0 {
		return // keep using the endpoints we have
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.state = connectivity.TransientFailure
	b.cc.UpdateState(resolverFailure(err))
}

// resolverFailure is the channel state of a balancer that has no
// endpoints because its resolver failed: every call fails with
// UNAVAILABLE, saying why.
func resolverFailure(err error) gbalancer.State {
	return gbalancer.State{
		ConnectivityState: connectivity.TransientFailure,
		Picker:            errGRPCPicker{status.Errorf(codes.Unavailable, "resolver: %v", err)},
	}
}

func (b *grpcBalancer) UpdateSubConnState(gbalancer.SubConn, gbalancer.SubConnState) {
	// Unused: every SubConn has a StateListener.
}

func (b *grpcBalancer) ExitIdle() {
	for _, s := range b.subConns {
		if s.state == connectivity.Idle {
			s.sc.Connect()
		}
	}
}

func (b *grpcBalancer) Close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	for addr, s := range b.subConns {
		b.setOOB(s, false)
		s.sc.Shutdown()
		delete(b.subConns, addr)
	}
	if b.cluster != nil {
		b.cluster.Close()
	}
}

// GRPCPick carries one gRPC call's pick arguments into a channel that runs
// a Weft policy, and reports where the call went: grpc-go hands the call's
// context to the picker, which finds the GRPCPick that
// ContextWithGRPCPick put there. Session affinity uses it to pin a call to
// the endpoint its cookie names and to learn which endpoint served it.
// One GRPCPick serves one call (or one attempt of it); grpc-go may pick
// more than once for a call (a transparent retry), and the last pick is
// the one that served it.
type GRPCPick struct {
	// Override is PickInfo.Override: the call goes to this address while
	// the policy would let it (in the endpoint set, serving, not ejected,
	// not Tried) and its SubConn is READY. While the address's first
	// connection is still being made, the pick waits for it, as gRFC A55
	// says; once its connection has failed, the policy picks.
	Override string
	// Tried is PickInfo.Tried: endpoints the call's earlier attempts
	// went to, which picks avoid when they can. When it also has a
	// Record(addr string) method, as resilience.Attempts does, each pick
	// is recorded there as it is made, so that attempts in flight at once
	// (hedges) avoid each other's endpoints too.
	Tried interface{ Tried(addr string) bool }

	picked atomic.Pointer[Endpoint]
}

// Picked returns the address of the endpoint the call's latest pick chose,
// or "" before any pick. It is safe for concurrent use.
func (p *GRPCPick) Picked() string {
	if e := p.picked.Load(); e != nil {
		return e.Addr
	}
	return ""
}

type grpcPickKey struct{}

// ContextWithGRPCPick returns ctx carrying p for the picks of a gRPC call
// made with it.
func ContextWithGRPCPick(ctx context.Context, p *GRPCPick) context.Context {
	return context.WithValue(ctx, grpcPickKey{}, p)
}

// grpcPicker is immutable but for next; Pick is safe for concurrent use.
type grpcPicker struct {
	p       Picker
	cluster *Cluster
	conns   map[string]grpcConn // never mutated after publication
	ready   []string            // never mutated after publication
	next    atomic.Uint32       // rotation over ready, for fallbacks
	load    LoadReporter        // nil unless the cluster reports load
}

// Pick asks the policy, and asks again, up to retryPickAttempts times, when
// it chose an endpoint without a READY SubConn (one still connecting, a
// failed one that a priority in panic hands out) or, when a retry is
// being placed, one the call already tried. A pick that found no READY
// endpoint waits for the next picker while an endpoint it chose is making
// its first connection, and otherwise goes to the READY endpoints in turn:
// a priority in panic may send traffic to endpoints the HTTP path would
// try, but a gRPC channel knows they have no connection.
func (p *grpcPicker) Pick(gi gbalancer.PickInfo) (gbalancer.PickResult, error) {
	info := PickInfo{Ctx: gi.Ctx}
	if r := grpcRouteFrom(gi.Ctx); r != nil && r.HasHash {
		info.Hash, info.HasHash = r.Hash, true
	}
	call, _ := gi.Ctx.Value(grpcPickKey{}).(*GRPCPick)
	if call != nil {
		info.Override, info.Tried = call.Override, call.Tried
		if info.Override != "" {
			if e := p.cluster.override(info); e != nil {
				switch c := p.conns[e.Addr]; c.state {
				case connReady:
					return p.done(call, PickResult{Endpoint: e}, c.sc), nil
				case connConnecting:
					return gbalancer.PickResult{}, gbalancer.ErrNoSubConnAvailable
				}
			}
		}
	}
	var (
		found      PickResult // a READY endpoint, possibly one tried
		sc         gbalancer.SubConn
		connecting bool
	)
	for i := 0; i <= retryPickAttempts; i++ {
		res, err := p.p.Pick(info)
		if err != nil {
			return gbalancer.PickResult{}, status.Error(codes.Unavailable, err.Error())
		}
		switch c := p.conns[res.Endpoint.Addr]; c.state {
		case connReady:
			if info.Tried == nil || !info.Tried.Tried(res.Endpoint.Addr) {
				return p.done(call, res, c.sc), nil
			}
			if found.Endpoint == nil {
				found, sc = res, c.sc
			}
		case connConnecting:
			connecting = true
		}
	}
	switch {
	case found.Endpoint != nil:
		// Every draw was tried already: a READY endpoint not tried in
		// the priority of that draw, if any, before going back to one
		// that was (see Cluster.untried).
		if e := p.cluster.untried(p.p, found.Endpoint, info.Tried, p.isReady); e != nil {
			return p.done(call, PickResult{Endpoint: e}, p.conns[e.Addr].sc), nil
		}
		// An untried endpoint there whose connection is under way is
		// where the retry belongs: Envoy's previous_hosts would pick it
		// and connect. Going back to a tried one would spend the attempt
		// on a known failure (right after a channel starts, every retry
		// of a call hashed to a failing endpoint did). The connection's
		// outcome brings the next picker; if it fails, the endpoint is
		// no longer serving and the retry goes back after all.
		if p.cluster.untried(p.p, found.Endpoint, info.Tried, p.isConnecting) != nil {
			return gbalancer.PickResult{}, gbalancer.ErrNoSubConnAvailable
		}
		return p.done(call, found, sc), nil
	case connecting:
		// The policy's picker is a step ahead of the connections; the
		// connection's outcome brings the next picker.
		return gbalancer.PickResult{}, gbalancer.ErrNoSubConnAvailable
	}
	addrs := p.cluster.addrs.Load()
	for i := 0; addrs != nil && i < len(p.ready); i++ {
		addr := p.ready[int(p.next.Add(1)-1)%len(p.ready)]
		if e := (*addrs)[addr]; e != nil {
			return p.done(call, PickResult{Endpoint: e}, p.conns[addr].sc), nil
		}
	}
	// The policy's picker is a step behind the ready set; grpc-go will
	// retry the pick with the next picker.
	return gbalancer.PickResult{}, gbalancer.ErrNoSubConnAvailable
}

// done counts res in flight, records it in call, and returns grpc-go's
// result, which reports the call's outcome to res.
func (p *grpcPicker) done(call *GRPCPick, res PickResult, sc gbalancer.SubConn) gbalancer.PickResult {
	res.Endpoint.load.inFlight.Add(1)
	if call != nil {
		call.picked.Store(res.Endpoint)
		if r, ok := call.Tried.(interface{ Record(addr string) }); ok {
			r.Record(res.Endpoint.Addr)
		}
	}
	var ll LocalityLoad
	if p.load != nil {
		ll = p.load.Locality(res.Endpoint.Locality)
		ll.Start()
	}
	start := Now()
	return gbalancer.PickResult{SubConn: sc, Done: func(di gbalancer.DoneInfo) {
		end := Now()
		d := DoneInfo{Latency: time.Duration(end - start), End: end, Outcome: GRPCOutcome(di.Err), Err: di.Err}
		if r, ok := di.ServerLoad.(*v3orcapb.OrcaLoadReport); ok && r != nil {
			d.Load = loadFromProto(r)
		}
		res.Finish(d)
		if ll != nil {
			ll.Done(di.Err != nil)
		}
	}}
}

// isReady reports whether e's SubConn is READY.
func (p *grpcPicker) isReady(e *Endpoint) bool { return p.conns[e.Addr].state == connReady }

// isConnecting reports whether e's SubConn is connecting, or idle and
// about to, without having failed since it was last READY.
func (p *grpcPicker) isConnecting(e *Endpoint) bool {
	return p.conns[e.Addr].state == connConnecting
}

type errGRPCPicker struct{ err error }

func (p errGRPCPicker) Pick(gbalancer.PickInfo) (gbalancer.PickResult, error) {
	return gbalancer.PickResult{}, p.err
}

// GRPCOutcome classifies a finished RPC's error. Application errors
// (NOT_FOUND, INVALID_ARGUMENT and the like) are a Success for the
// endpoint: it answered.
func GRPCOutcome(err error) Outcome {
	if err == nil {
		return Success
	}
	switch status.Code(err) {
	case codes.OK:
		return Success
	case codes.Unavailable:
		return GatewayError
	case codes.DeadlineExceeded:
		return Timeout
	case codes.Canceled:
		return Canceled
	case codes.Internal, codes.Unknown, codes.DataLoss:
		return ServerError
	default:
		return Success
	}
}
