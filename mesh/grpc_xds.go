package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	gresolver "google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/internal/fault"
	"github.com/weftmesh/weft/internal/route"
	"github.com/weftmesh/weft/internal/stackroom"
	"github.com/weftmesh/weft/internal/tap"
	"github.com/weftmesh/weft/internal/xds"
	"github.com/weftmesh/weft/resilience"
	"github.com/weftmesh/weft/resolver"
)

// gRPC channels on the mesh's xDS client.
//
// A channel to "xds:///orders:50051" (or to "orders:50051" when a
// bootstrap is set) follows the listener an HTTP request to
// http://orders:50051/ follows, through the same xDS client and so the
// same ADS stream, and the same cluster state: the route match, the
// cluster's policy and its endpoints are the HTTP path's. What differs is
// only where each step runs in grpc-go:
//   - an interceptor matches the call (method as :path, metadata as
//     headers) to a route, chooses the cluster (weighted clusters), hashes
//     the call for ring_hash and applies the route's timeout, retries and
//     hedging, as the HTTP path's round tripper does;
//   - a resolver publishes every cluster the listener's routes name, with
//     its composed policy and endpoints;
//   - one balancer (balancer.GRPCClustersServiceConfig) owns the
//     sub-connections of those clusters and picks, in the cluster the
//     call's route chose, with that cluster's policy.

// grpcXDSScheme is the resolver scheme of such channels, registered per
// channel (grpc.WithResolvers), never globally.
const grpcXDSScheme = "weft-xds"

// xdsChannel is the routing state of one gRPC channel.
type xdsChannel struct {
	x *xdsPath
	// authority is the target as dialled, "host:port": the listener's name
	// (through the client template) and the virtual host it is matched by.
	authority string
	// hostKey is the key of the channel's listener: authority, or with an
	// xDS authority in the target (xds://<authority>/<host>) that too.
	hostKey string
	// client is what hash policies hash about the channel: a random
	// channel id, as grpc-go draws one per channel (a counter would put
	// every channel's hash at the start of a ring), and the source IP.
	client route.Client
	// plain is set for a channel dialled by plain name ("orders:50051"):
	// when the control plane says no listener has that name, the channel
	// goes to the name's DNS addresses, as an HTTP request to the same
	// host passes through. An xds:/// target without a listener fails.
	plain bool
}

// passthroughCluster is the cluster name of a plain-name channel's DNS
// addresses; xDS cluster names are never empty.
const passthroughCluster = ""

// dialXDS returns the dial options that route a channel to authority by
// the control plane's configuration, and the target to dial. xdsAuthority
// is the target's xDS authority (xds://<xdsAuthority>/<authority>), whose
// listener template and servers the bootstrap's authorities give.
func (m *Mesh) dialXDS(xdsAuthority, authority string, plain bool) (string, []grpc.DialOption, error) {
	if authority == "" {
		return "", nil, errors.New("empty xDS target")
	}
	if m.isClosed() {
		return "", nil, errClosed
	}
	key := hostKey(xdsAuthority, authority)
	if _, err := m.xds.listenerName(key); err != nil {
		return "", nil, err
	}
	ch := &xdsChannel{x: m.xds, authority: authority, hostKey: key, client: m.hashClient(), plain: plain}
	return grpcXDSScheme + ":///" + authority, []grpc.DialOption{
		grpc.WithTransportCredentials(clusterCreds{def: m.grpcClientCreds()}),
		grpc.WithResolvers(&xdsResolverBuilder{ch: ch}),
		grpc.WithDefaultServiceConfig(balancer.GRPCClustersServiceConfig()),
		// grpc-go's own retries stay off unary calls: the route's are
		// applied by the interceptor.
		grpc.WithChainUnaryInterceptor(resilience.NoChannelRetryUnaryClientInterceptor(), ch.unary),
		grpc.WithChainStreamInterceptor(ch.stream),
	}, nil
}

// callRoute is what the route match decided for one call.
type callRoute struct {
	plan *routePlan
	svc  *service
	// passthrough: no listener has the plain name dialled; the call goes
	// to its DNS addresses with no route policy.
	passthrough bool
	// okAbort: a fault aborted the call with status OK, which gRFC A33
	// reads as trailers with OK and no message, received at once.
	okAbort bool
}

// route matches a call and puts its routing decision in the returned
// context.
func (c *xdsChannel) route(ctx context.Context, method string) (context.Context, callRoute, error) {
	h := c.x.host(c.hostKey)
	if h == nil {
		return ctx, callRoute{}, status.Errorf(codes.Unavailable, "weft: xDS host limit reached; %q cannot be followed", c.authority)
	}
	h.used.Store(true)
	if err := h.wait(ctx); err != nil {
		return ctx, callRoute{}, status.FromContextError(err).Err()
	}
	st := h.state.Load()
	switch {
	case !st.exists && c.plain:
		if c.x.m.tap.Active() {
			tapFrom(ctx).setRoute("", "passthrough")
		}
		return balancer.ContextWithGRPCRoute(ctx, &passthroughRoute), callRoute{passthrough: true}, nil
	case !st.exists:
		return ctx, callRoute{}, status.Errorf(codes.Unavailable, "weft: listener %q does not exist", h.name)
	case st.routes == nil:
		return ctx, callRoute{}, status.Errorf(codes.Unavailable, "%v", st.err)
	}
	md, _ := metadata.FromOutgoingContext(ctx)
	req, _ := xds.RequestFromGRPC(method, md, false)
	rt, ok := st.routes.Match(c.authority, &req)
	if !ok || rt.Action.Kind != xds.ActionForward {
		// grpc-go's answer to a call no route takes. A redirect or
		// direct_response route fails the call the same way: grpc-go's
		// xDS client reads any action but route and non_forwarding_action
		// as unsupported, and its config selector fails such a call with
		// UNAVAILABLE ("matched route does not have a supported route
		// action type"); a gRPC call has no redirect to follow.
		return ctx, callRoute{}, status.Errorf(codes.Unavailable, "weft: no matching route for %s on %q (listener %q)", method, c.authority, h.name)
	}
	plan := st.plans[rt]
	name, faults := plan.PickCluster()
	if faults != nil {
		// grpc-go's fault filter runs in the config selector's
		// interceptor, before the pick: so do Weft's faults.
		abort, err := faults.Inject(ctx, &fault.Request{Match: fault.MatchOf(&req), Host: c.authority, Cluster: name}, nil)
		if err != nil {
			return ctx, callRoute{}, status.FromContextError(err).Err()
		}
		if abort != nil {
			if abort.Code == codes.OK {
				return ctx, callRoute{okAbort: true}, nil
			}
			return ctx, callRoute{}, abort.Err()
		}
	}
	svc := c.x.cluster(name)
	if svc == nil {
		return ctx, callRoute{}, status.Error(codes.Unavailable, errClosed.Error())
	}
	svc.used.Store(true)
	if c.x.m.tap.Active() {
		tapFrom(ctx).setRoute(plan.label, name)
	}
	d := &balancer.GRPCRoute{Cluster: name}
	if hp := rt.Action.HashPolicies; len(hp) > 0 {
		d.Hash, d.HasHash = route.GRPCHash(req.Header, hp, c.client)
	}
	ctx = balancer.ContextWithGRPCRoute(ctx, d)
	cr := callRoute{plan: plan, svc: svc}
	if c.x.sessions.Load() {
		if sc := xdsSession(h.session.Load(), rt); sc != nil {
			ctx = context.WithValue(ctx, sessionKey{}, sc)
		}
	}
	return ctx, cr, nil
}

// passthroughRoute sends a call to the DNS addresses of its channel's
// plain name.
var passthroughRoute = balancer.GRPCRoute{Cluster: passthroughCluster}

func (c *xdsChannel) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	// Beneath only the channel-retry switch: the call's room on the stack
	// is made here (see internal/stackroom).
	stackroom.Reserve8K()
	if c.x.m.tap.Active() {
		return c.tapUnary(ctx, method, req, reply, cc, invoker, opts...)
	}
	return c.unaryCall(ctx, method, req, reply, cc, invoker, opts...)
}

func (c *xdsChannel) unaryCall(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	ctx, cr, err := c.route(ctx, method)
	if err != nil {
		return err
	}
	if cr.okAbort {
		// A unary call expects one message; grpc-go's fault filter ends
		// it at the first send, and the caller sees io.EOF.
		return errOKAbortUnary
	}
	if cr.passthrough {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	if len(cr.plan.Route.Action.MirrorPolicies) > 0 {
		c.mirrorUnary(ctx, cr.plan, method, req, reply, cc, invoker, opts)
	}
	return cr.plan.grpcUnary(cr.svc, c.x.m.tap)(ctx, method, req, reply, cc, invoker, opts...)
}

func (c *xdsChannel) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	ctx, cr, err := c.route(ctx, method)
	if err != nil {
		return nil, err
	}
	if cr.okAbort {
		return okStream{ctx}, nil
	}
	if cr.passthrough {
		return streamer(ctx, desc, cc, method, opts...)
	}
	open := streamer
	if sc, _ := ctx.Value(sessionKey{}).(*xds.SessionCookie); sc != nil {
		open = func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return grpcSession{sc}.stream(ctx, desc, cc, method, streamer, opts...)
		}
	}
	// A stream counts against the cluster's max_requests as a unary call
	// does, as in grpc-go, whose picker counts every call.
	counted, th := open, cr.svc.res.Load().thresholds
	open = func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		return resilience.ThresholdsStreamClientInterceptor(th)(ctx, desc, cc, method, counted, opts...)
	}
	// The route's timeout bounds the stream whether or not the route
	// pins it to a session's endpoint.
	timeout := cr.plan.GRPC.Timeout
	if timeout <= 0 {
		return open(ctx, desc, cc, method, opts...)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	s, err := open(ctx, desc, cc, method, opts...)
	if err != nil {
		cancel()
		return nil, err
	}
	return &timedStream{ClientStream: s, cancel: cancel}, nil
}

// errOKAbortUnary ends a unary call a fault aborted with status OK.
var errOKAbortUnary = status.Error(codes.Unknown, "weft: fault injection ended the call with status OK and no response message")

// okStream is a stream a fault aborted with status OK: it ends at once,
// with no message, as if the server had sent trailers with OK.
type okStream struct{ ctx context.Context }

func (okStream) Header() (metadata.MD, error) { return nil, nil }
func (okStream) Trailer() metadata.MD         { return nil }
func (okStream) CloseSend() error             { return nil }
func (s okStream) Context() context.Context   { return s.ctx }
func (okStream) SendMsg(any) error            { return io.EOF }
func (okStream) RecvMsg(any) error            { return io.EOF }

// timedStream releases its deadline's timer when the stream ends.
type timedStream struct {
	grpc.ClientStream
	cancel context.CancelFunc
}

func (s *timedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil {
		s.cancel()
	}
	return err
}

// plannedGRPC is a route's interceptor to one cluster, valid while the
// cluster's resilience state is res.
type plannedGRPC struct {
	res *serviceResilience
	ic  grpc.UnaryClientInterceptor
}

// grpcUnary returns the route's unary interceptor to svc: the route's
// timeout, hedging or retries, the cluster's breaker and thresholds, and
// the route's session affinity per attempt, built once per route version
// and cluster state; innermost, the tap's record of each attempt.
func (p *routePlan) grpcUnary(svc *service, bus *tap.Bus) grpc.UnaryClientInterceptor {
	res := svc.res.Load()
	if v, ok := p.grpc.Load(svc); ok && v.(*plannedGRPC).res == res {
		return v.(*plannedGRPC).ic
	}
	opts := res.options()
	var chain []grpc.UnaryClientInterceptor
	if hp := p.GRPCHedge; hp != nil {
		hedgeRetry := p.GRPC
		hedgeRetry.PerTryTimeout = 0
		// The route timeout bounds the hedged call as a whole.
		chain = append(chain,
			resilience.RetryUnaryClientInterceptor(resilience.RetryPolicy{NumRetries: -1, Timeout: p.GRPC.Timeout}),
			resilience.HedgeUnaryClientInterceptor(*hp, hedgeRetry, opts...))
	} else {
		chain = append(chain, resilience.RetryUnaryClientInterceptor(p.GRPC, opts...))
	}
	if res.breaker != nil {
		chain = append(chain, res.breaker.unary)
	}
	chain = append(chain, resilience.ThresholdsUnaryClientInterceptor(res.thresholds), tapAttemptUnary(bus, sessionUnary))
	ic := chainUnary(chain)
	p.grpc.Store(svc, &plannedGRPC{res: res, ic: ic})
	return ic
}

// sessionUnary applies the session cookie the route match found, per
// attempt.
func sessionUnary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if sc, _ := ctx.Value(sessionKey{}).(*xds.SessionCookie); sc != nil {
		return grpcSession{sc}.unary(ctx, method, req, reply, cc, invoker, opts...)
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// chainUnary composes interceptors, the first outermost.
func chainUnary(ics []grpc.UnaryClientInterceptor) grpc.UnaryClientInterceptor {
	if len(ics) == 1 {
		return ics[0]
	}
	first, rest := ics[0], chainUnary(ics[1:])
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return first(ctx, method, req, reply, cc, func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, opts ...grpc.CallOption) error {
			return rest(ctx, method, req, reply, cc, invoker, opts...)
		}, opts...)
	}
}

// xdsResolverBuilder builds the resolver of one xDS channel.
type xdsResolverBuilder struct{ ch *xdsChannel }

func (b *xdsResolverBuilder) Scheme() string { return grpcXDSScheme }

func (b *xdsResolverBuilder) Build(_ gresolver.Target, cc gresolver.ClientConn, _ gresolver.BuildOptions) (gresolver.Resolver, error) {
	x := b.ch.x
	h := x.pinHost(b.ch.hostKey)
	if h == nil {
		return nil, fmt.Errorf("weft: xDS host limit reached; %q cannot be followed", b.ch.authority)
	}
	r := &xdsResolver{ch: b.ch, h: h, cc: cc, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		subs: map[string]*clusterSub{}}
	r.hostCancel = h.subscribe(r.wake)
	r.wake()
	go r.run()
	return r, nil
}

// xdsResolver publishes the clusters of its listener's routes to the
// channel's balancer. Changes to the listener, the routes or any of the
// clusters wake its goroutine, which publishes the whole set again.
type xdsResolver struct {
	ch         *xdsChannel
	h          *xdsHost
	cc         gresolver.ClientConn
	kick       chan struct{}
	stop, done chan struct{}
	hostCancel func()
	closeOnce  sync.Once
	mu         sync.Mutex             // guards subs, which run writes
	subs       map[string]*clusterSub // the clusters followed, by name
	// dns follows the plain name's DNS addresses while no listener has
	// the name (plain channels only); owned by run.
	dns      func()
	dnsMu    sync.Mutex
	dnsState *resolver.State
}

type clusterSub struct {
	svc    *service
	cancel func()
}

func (r *xdsResolver) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *xdsResolver) run() {
	defer close(r.done)
	for {
		select {
		case <-r.stop:
			r.mu.Lock()
			for name, s := range r.subs {
				r.unsub(name, s)
			}
			r.mu.Unlock()
			r.stopDNS()
			return
		case <-r.kick:
		}
		r.publish()
	}
}

func (r *xdsResolver) unsub(name string, s *clusterSub) {
	s.cancel()
	s.svc.pins.Add(-1)
	delete(r.subs, name)
}

func (r *xdsResolver) publish() {
	st := r.h.state.Load()
	if st == nil {
		return // the listener's first answer is on its way
	}
	switch {
	case !st.exists && r.ch.plain:
		r.publishDNS()
		return
	case !st.exists:
		r.cc.ReportError(fmt.Errorf("weft: listener %q does not exist", r.h.name))
		return
	case st.routes == nil:
		r.cc.ReportError(st.err)
		return
	}
	r.stopDNS()
	names := map[string]bool{}
	if vh := st.routes.MatchVirtualHost(r.ch.authority); vh != nil {
		for _, rt := range vh.Routes {
			if rt.Action.Kind != xds.ActionForward {
				continue
			}
			if rt.Action.Cluster != "" {
				names[rt.Action.Cluster] = true
			}
			for _, w := range rt.Action.WeightedClusters {
				names[w.Name] = true
			}
			// Mirror clusters get sub-connections too, so a copy is
			// picked as any call is.
			for _, name := range mirrorClusters(&rt.Action) {
				names[name] = true
			}
		}
	}
	r.mu.Lock()
	for name, s := range r.subs {
		if !names[name] {
			r.unsub(name, s)
		}
	}
	clusters := make(map[string]balancer.GRPCCluster, len(names))
	for name := range names {
		s := r.subs[name]
		if s == nil {
			svc := r.ch.x.pinCluster(name)
			if svc == nil {
				continue // the mesh is closing
			}
			s = &clusterSub{svc: svc, cancel: svc.subscribe(r.wake)}
			r.subs[name] = s
		}
		select {
		case <-s.svc.ready:
		default:
			continue // pending: its calls wait for it
		}
		pol := s.svc.policy.Load()
		c := balancer.GRPCCluster{Builder: pol.b, Config: pol.cfg, Generation: pol.gen, Load: pol.load}
		if up := s.svc.upstream.Load(); up != nil {
			c.AddressAttributes = attributes.New(upstreamKey{}, up)
		}
		for _, e := range s.svc.balancer().Endpoints() {
			c.Endpoints = append(c.Endpoints, e.Endpoint)
		}
		if e := s.svc.lastErr.Load(); e != nil {
			c.Err = *e
		}
		clusters[name] = c
	}
	r.mu.Unlock()
	// An error means the balancer refused the state; grpc-go asks again.
	_ = r.cc.UpdateState(balancer.GRPCClustersState(clusters))
}

// publishDNS publishes the plain name's DNS addresses as the channel's one
// cluster, balanced round robin as the HTTP path's pass-through is by
// net/http's dialer; it starts following DNS on first use.
func (r *xdsResolver) publishDNS() {
	if r.dns == nil {
		r.dns = r.ch.x.m.dns.Watch(r.ch.authority, resolver.WatcherFunc(func(st resolver.State) {
			r.dnsMu.Lock()
			r.dnsState = &st
			r.dnsMu.Unlock()
			r.wake()
		}))
	}
	r.dnsMu.Lock()
	st := r.dnsState
	r.dnsMu.Unlock()
	if st == nil {
		return // the first lookup is under way
	}
	c := balancer.GRPCCluster{Builder: balancer.Get(balancer.RoundRobin), Endpoints: st.Endpoints, Err: st.Err}
	_ = r.cc.UpdateState(balancer.GRPCClustersState(map[string]balancer.GRPCCluster{passthroughCluster: c}))
}

func (r *xdsResolver) stopDNS() {
	if r.dns != nil {
		r.dns()
		r.dns = nil
		r.dnsMu.Lock()
		r.dnsState = nil
		r.dnsMu.Unlock()
	}
}

// ResolveNow asks DNS again for the channel's LOGICAL_DNS clusters, after
// a connection failure; EDS clusters follow the control plane's pushes.
func (r *xdsResolver) ResolveNow(gresolver.ResolveNowOptions) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.subs {
		if s.svc.resolveNow != nil {
			s.svc.resolveNow()
		}
	}
	if r.ch.plain {
		r.ch.x.m.dns.ResolveNow(r.ch.authority)
	}
}

func (r *xdsResolver) Close() {
	r.closeOnce.Do(func() {
		r.hostCancel()
		close(r.stop)
		<-r.done
		r.h.pins.Add(-1)
	})
}

// clusterPolicy is an xDS cluster's composed balancing policy; a new value
// for every change, numbered by gen.
type clusterPolicy struct {
	b   balancer.Builder
	cfg any
	// name is the policy in force under the wrappers (priority,
	// locality, outlier detection): what /clusters shows as lb_policy.
	name string
	gen  uint64
	// load counts the cluster's calls for LRS, nil when it does not report.
	load balancer.LoadReporter
}

// subscribers is a set of change callbacks; they must not block.
type subscribers struct {
	mu sync.Mutex
	fs map[*func()]struct{}
}

func (s *subscribers) subscribe(f func()) (cancel func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fs == nil {
		s.fs = map[*func()]struct{}{}
	}
	p := &f
	s.fs[p] = struct{}{}
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.fs, p)
	}
}

func (s *subscribers) notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for f := range s.fs {
		(*f)()
	}
}

// upstreamKey is the address attribute carrying a cluster's upstream TLS
// to the handshake of each of its gRPC sub-connections.
type upstreamKey struct{}

// clusterCreds are the transport credentials of an xDS channel: each
// sub-connection is secured as its cluster's CDS resource says (mutual
// TLS accepting only the server identities its SAN matchers allow, as the
// HTTP path does), and with the mesh's default otherwise (mutual TLS with
// any member of the trust domain when the mesh has an identity).
type clusterCreds struct {
	def credentials.TransportCredentials
}

func (c clusterCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if attrs := credentials.ClientHandshakeInfoFromContext(ctx).Attributes; attrs != nil {
		if up, _ := attrs.Value(upstreamKey{}).(*upstreamTLS); up != nil {
			if up.err != nil {
				return nil, nil, up.err
			}
			return up.creds.ClientHandshake(ctx, authority, raw)
		}
	}
	return c.def.ClientHandshake(ctx, authority, raw)
}

func (c clusterCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("weft: cluster credentials are for clients")
}

func (c clusterCreds) Info() credentials.ProtocolInfo { return c.def.Info() }

func (c clusterCreds) Clone() credentials.TransportCredentials {
	return clusterCreds{def: c.def.Clone()}
}

//lint:ignore SA1019 part of the interface grpc-go still defines
func (c clusterCreds) OverrideServerName(name string) error { return c.def.OverrideServerName(name) } //nolint:staticcheck
