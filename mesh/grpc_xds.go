package mesh

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	gresolver "google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"

	"github.com/cespare/xxhash/v2"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/internal/xds"
	"github.com/weftmesh/weft/resilience"
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

// channelIDs numbers the mesh's xDS channels, for hash policies on the
// channel id (Envoy's filter state, grpc-go's channel ID).
var channelIDs atomic.Uint64

// xdsChannel is the routing state of one gRPC channel.
type xdsChannel struct {
	x *xdsPath
	// authority is the target as dialled, "host:port": the listener's name
	// (through the client template) and the virtual host it is matched by.
	authority string
	id        uint64
}

// dialXDS returns the dial options that route a channel to authority by
// the control plane's configuration, and the target to dial.
func (m *Mesh) dialXDS(authority string) (string, []grpc.DialOption, error) {
	if authority == "" {
		return "", nil, errors.New("empty xDS target")
	}
	if m.isClosed() {
		return "", nil, errClosed
	}
	ch := &xdsChannel{x: m.xds, authority: authority, id: channelIDs.Add(1)}
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
	route *xds.Route
	plan  *routePlan
	svc   *service
	// timeout is the call's deadline from the route (0: none), as
	// routeTimeout reads it. Unlike Envoy's HTTP default of 15 s, a silent
	// route sets none, as in grpc-go: streams may live long.
	timeout time.Duration
}

// route matches a call and puts its routing decision in the returned
// context.
func (c *xdsChannel) route(ctx context.Context, method string) (context.Context, callRoute, error) {
	h := c.x.host(c.authority)
	if h == nil {
		return ctx, callRoute{}, status.Errorf(codes.Unavailable, "weft: xDS host limit reached; %q cannot be followed", c.authority)
	}
	h.used.Store(true)
	select {
	case <-h.ready:
	default:
		select {
		case <-h.ready:
		case <-ctx.Done():
			return ctx, callRoute{}, status.FromContextError(fmt.Errorf("weft: waiting for listener %q: %w", h.name, ctx.Err())).Err()
		}
	}
	st := h.state.Load()
	switch {
	case !st.exists:
		return ctx, callRoute{}, status.Errorf(codes.Unavailable, "weft: listener %q does not exist", h.name)
	case st.routes == nil:
		return ctx, callRoute{}, status.Errorf(codes.Unavailable, "%v", st.err)
	}
	req := grpcMatchRequest(ctx, method)
	route, ok := st.routes.Match(c.authority, &req)
	if !ok || route.Action.Kind != xds.ActionForward {
		// grpc-go's answer to a call no route takes.
		return ctx, callRoute{}, status.Errorf(codes.Unavailable, "weft: no matching route for %s on %q (listener %q)", method, c.authority, h.name)
	}
	name := pickCluster(&route.Action)
	svc := c.x.cluster(name)
	if svc == nil {
		return ctx, callRoute{}, status.Error(codes.Unavailable, errClosed.Error())
	}
	svc.used.Store(true)
	d := &balancer.GRPCRoute{Cluster: name}
	if len(route.Action.HashPolicies) > 0 {
		d.Hash, d.HasHash = grpcHash(route.Action.HashPolicies, req.Header, c.id)
	}
	ctx = balancer.ContextWithGRPCRoute(ctx, d)
	cr := callRoute{route: route, plan: st.plans[route], svc: svc}
	cr.timeout, _ = routeTimeout(&route.Action, st.defaultTimeout)
	if c.x.sessions.Load() {
		if sc := xdsSession(h.session.Load(), route); sc != nil {
			ctx = context.WithValue(ctx, sessionKey{}, sc)
		}
	}
	return ctx, cr, nil
}

func (c *xdsChannel) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	ctx, cr, err := c.route(ctx, method)
	if err != nil {
		return err
	}
	return cr.plan.grpcUnary(cr.svc, cr.route, cr.timeout)(ctx, method, req, reply, cc, invoker, opts...)
}

func (c *xdsChannel) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	ctx, cr, err := c.route(ctx, method)
	if err != nil {
		return nil, err
	}
	if sc, _ := ctx.Value(sessionKey{}).(*xds.SessionCookie); sc != nil {
		return grpcSession{sc}.stream(ctx, desc, cc, method, streamer, opts...)
	}
	if cr.timeout <= 0 {
		return streamer(ctx, desc, cc, method, opts...)
	}
	ctx, cancel := context.WithTimeout(ctx, cr.timeout)
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		cancel()
		return nil, err
	}
	return &timedStream{ClientStream: s, cancel: cancel}, nil
}

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

// grpcMatchRequest is a call's matching input: the method is :path and
// the outgoing metadata are the headers, without binary ("-bin") ones,
// which grpc-go's matchers never see either (gRFC A28); content-type is
// application/grpc.
func grpcMatchRequest(ctx context.Context, method string) xds.Request {
	md, _ := metadata.FromOutgoingContext(ctx)
	hdr := make(http.Header, len(md)+1)
	for k, v := range md {
		if strings.HasSuffix(k, "-bin") {
			continue
		}
		hdr[textproto.CanonicalMIMEHeaderKey(k)] = v
	}
	hdr["Content-Type"] = []string{"application/grpc"}
	return xds.Request{Method: http.MethodPost, Path: method, Header: hdr, Scheme: "http"}
}

// pickCluster chooses a route's cluster: its single cluster, or one of its
// weighted clusters by weight.
func pickCluster(a *xds.RouteAction) string {
	ws := a.WeightedClusters
	if len(ws) == 0 {
		return a.Cluster
	}
	n := rand.Uint64N(a.TotalWeight)
	for _, w := range ws {
		if n < uint64(w.Weight) {
			return w.Name
		}
		n -= uint64(w.Weight)
	}
	return ws[len(ws)-1].Name
}

// grpcHash hashes a call by the route's hash policies, as grpc-go does
// (gRFC A42) and combined as requestHash combines them: headers from the
// call's metadata and the channel id; a terminal policy that produced a
// hash ends the walk. Policies on cookies, query parameters and source
// IPs have nothing to hash on a client call.
func grpcHash(policies []xds.HashPolicy, hdr http.Header, channelID uint64) (uint64, bool) {
	var hash uint64
	found := false
	for _, p := range policies {
		var h uint64
		switch p.Kind {
		case xds.HashHeader:
			vs := hdr.Values(p.Name)
			if len(vs) == 0 {
				continue
			}
			v := strings.Join(vs, ",")
			if p.Rewrite != nil {
				v = p.Rewrite.Pattern.ReplaceAllString(v, p.Rewrite.Substitution)
			}
			h = xxhash.Sum64String(v)
		case xds.HashChannelID:
			h = channelID
		default:
			continue
		}
		hash = (hash<<1 | hash>>63) ^ h
		found = true
		if p.Terminal {
			break
		}
	}
	return hash, found
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
// and cluster state.
func (p *routePlan) grpcUnary(svc *service, route *xds.Route, timeout time.Duration) grpc.UnaryClientInterceptor {
	res := svc.res.Load()
	if v, ok := p.grpc.Load(svc); ok && v.(*plannedGRPC).res == res {
		return v.(*plannedGRPC).ic
	}
	policy := grpcRoutePolicy(p.retry, route.Action.RetryPolicy, timeout)
	opts := res.options()
	chain := []grpc.UnaryClientInterceptor{}
	if hp := planHedge(route.Action.HedgePolicy, policy); hp != nil {
		hedgeRetry := policy
		hedgeRetry.PerTryTimeout = 0
		// The route timeout bounds the hedged call as a whole.
		chain = append(chain,
			resilience.RetryUnaryClientInterceptor(resilience.RetryPolicy{NumRetries: -1, Timeout: policy.Timeout}),
			resilience.HedgeUnaryClientInterceptor(*hp, hedgeRetry, opts...))
	} else {
		chain = append(chain, resilience.RetryUnaryClientInterceptor(policy, opts...))
	}
	if res.breaker != nil {
		chain = append(chain, resilience.BreakerUnaryClientInterceptor(res.breaker))
	}
	chain = append(chain, resilience.ThresholdsUnaryClientInterceptor(res.thresholds), sessionUnary)
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

// grpcRetryCodes are the retry_on names that are gRPC status codes, the
// ones grpc-go retries on (gRFC A44).
var grpcRetryCodes = map[string]codes.Code{
	"cancelled":          codes.Canceled,
	"deadline-exceeded":  codes.DeadlineExceeded,
	"internal":           codes.Internal,
	"resource-exhausted": codes.ResourceExhausted,
	"unavailable":        codes.Unavailable,
}

// grpcRoutePolicy turns a route's plan into the retry policy of a gRPC
// call. The route's retry_on names that are gRPC codes decide which
// statuses are retried; the others (HTTP conditions istiod mixes in) have
// no meaning for a gRPC status and are skipped, as in grpc-go. As in
// grpc-go, a route's retry policy applies to every method: the control
// plane declared the calls safe to retry. The per-try timeout, which
// grpc-go ignores, is applied as on the HTTP path: an attempt that
// outlives it is retried (or, with hedge_on_per_try_timeout, hedged) under
// the gRPC codes unavailable and deadline-exceeded and under the HTTP
// conditions 5xx, gateway-error and reset, as Envoy retries it.
func grpcRoutePolicy(plan resilience.RetryPolicy, rp *xds.RetryPolicy, timeout time.Duration) resilience.RetryPolicy {
	p := resilience.RetryPolicy{NumRetries: -1, Timeout: -1}
	if timeout > 0 {
		p.Timeout = timeout
	}
	if rp == nil {
		return p
	}
	for _, n := range rp.RetryOn {
		if c, ok := grpcRetryCodes[strings.TrimSpace(n)]; ok {
			p.GRPCCodes = append(p.GRPCCodes, c)
		}
	}
	// The gRPC interceptor reads the HTTP conditions for per-try
	// timeouts only.
	p.RetryOn = plan.RetryOn
	if len(p.GRPCCodes) == 0 {
		// Only HTTP conditions: no status is retried (an empty, non-nil
		// GRPCCodes), but a per-try timeout they cover is.
		if plan.PerTryTimeout <= 0 || plan.RetryOn&(resilience.Retry5xx|resilience.RetryGatewayError|resilience.RetryReset) == 0 {
			return resilience.RetryPolicy{NumRetries: -1, Timeout: p.Timeout}
		}
		p.GRPCCodes = []codes.Code{}
	}
	p.NumRetries = int(rp.NumRetries)
	if rp.NumRetries == 0 {
		p.NumRetries = 1 // Envoy's and grpc-go's default
	}
	p.PerTryTimeout = plan.PerTryTimeout
	p.BaseInterval, p.MaxInterval = rp.BaseInterval, rp.MaxInterval
	p.RetryNonIdempotent = true
	return p
}

// xdsResolverBuilder builds the resolver of one xDS channel.
type xdsResolverBuilder struct{ ch *xdsChannel }

func (b *xdsResolverBuilder) Scheme() string { return grpcXDSScheme }

func (b *xdsResolverBuilder) Build(_ gresolver.Target, cc gresolver.ClientConn, _ gresolver.BuildOptions) (gresolver.Resolver, error) {
	x := b.ch.x
	h := x.pinHost(b.ch.authority)
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
	case !st.exists:
		r.cc.ReportError(fmt.Errorf("weft: listener %q does not exist", r.h.name))
		return
	case st.routes == nil:
		r.cc.ReportError(st.err)
		return
	}
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
		c := balancer.GRPCCluster{Builder: pol.b, Config: pol.cfg, Generation: pol.gen}
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
	gen uint64
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
