package mesh

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	grpctap "google.golang.org/grpc/tap"

	"github.com/weftmesh/weft/internal/stackroom"
	"github.com/weftmesh/weft/internal/tap"
	"github.com/weftmesh/weft/internal/xds"
	"github.com/weftmesh/weft/resilience"
	"github.com/weftmesh/weft/security"
	"github.com/weftmesh/weft/telemetry/admin"
)

// Live requests for /tap (internal/tap). Every hook here starts with
// m.tap.Active(), one atomic load: with no tap open a request pays that
// and nothing else. With one open, a request carries a tapCall in its
// context; the layers that know a part of the story (the route match,
// each attempt, the authorization decision) write it there, and the
// outermost layer publishes the event when the request ends.

// tapCall is the event of one request in flight, and the context node
// that carries it (one allocation for both). Hedged attempts finish
// concurrently, so it is guarded; once finished it is published as is,
// and nothing writes it again.
type tapCall struct {
	context.Context
	mu   sync.Mutex
	ev   tap.Event
	side []attemptSide // beside ev.Attempts, index for index
	done bool
	// inline hold the first attempts, so a request that makes no more
	// allocates nothing for them.
	inlineAttempts [2]tap.Attempt
	inlineSide     [2]attemptSide
}

// attemptSide is what the tap knows of an attempt beyond its line.
type attemptSide struct {
	resp *http.Response // the attempt's response, to tell the winner
	peer string
	// pending: the attempt had not ended when the request did (a hedge
	// that lost the race).
	pending bool
}

type tapKey struct{}

func (c *tapCall) Value(key any) any {
	if key == (tapKey{}) {
		return c
	}
	return c.Context.Value(key)
}

func tapFrom(ctx context.Context) *tapCall {
	c, _ := ctx.Value(tapKey{}).(*tapCall)
	return c
}

func newTapCall(ctx context.Context, direction, protocol, method, authority, path string) (context.Context, *tapCall) {
	c := &tapCall{Context: ctx, ev: tap.Event{Time: time.Now(), Direction: direction, Protocol: protocol, Method: method, Authority: authority, Path: path}}
	c.ev.Attempts, c.side = c.inlineAttempts[:0], c.inlineSide[:0]
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		c.ev.TraceID = sc.TraceID().String()
	}
	return c, c
}

// setRoute records the routing decision: the route's label (routeLabel)
// and the cluster, each kept when empty.
func (c *tapCall) setRoute(label, cluster string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return
	}
	if label != "" {
		c.ev.Route = label
	}
	if cluster != "" {
		c.ev.Cluster = cluster
	}
}

// routeLabel names a route for an operator: its name, or what it matches.
func routeLabel(rt *xds.Route) string {
	if rt.Name != "" {
		return rt.Name
	}
	return rt.Match.String()
}

// startAttempt notes that an attempt of an outbound HTTP request went to
// endpoint; the returned index is endAttempt's. Noting the start, not
// only the end, keeps a hedge's losing attempt in the event even when
// it is still being cut off as the request returns.
//
// The reason comes from the attempt's context, where the hedging and
// retry middlewares mark their attempts (resilience.IsHedge, IsRetry):
// counting attempts would not do, as hedged attempts begin together.
func (c *tapCall) startAttempt(ctx context.Context, endpoint string) int {
	reason := tap.ReasonFirst
	switch {
	case resilience.IsHedge(ctx):
		reason = tap.ReasonHedge
	case resilience.IsRetry(ctx):
		reason = tap.ReasonRetry
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ev.Attempts = append(c.ev.Attempts, tap.Attempt{Endpoint: endpoint, Reason: reason})
	c.side = append(c.side, attemptSide{pending: true})
	return len(c.side) - 1
}

// endAttempt records the outcome of attempt i, unless the request has
// ended (a losing hedge): its line is out.
func (c *tapCall) endAttempt(i int, resp *http.Response, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return
	}
	a, side := &c.ev.Attempts[i], &c.side[i]
	side.pending, side.resp = false, resp
	if err != nil {
		a.Error = err.Error()
	}
	if resp != nil {
		a.Status = resp.StatusCode
		if id, ok := security.PeerIDFromTLS(resp.TLS); ok {
			side.peer = id.String()
		}
	}
}

// endGRPCAttempt records the outcome of attempt i of an outbound gRPC
// call: the endpoint the balancer picked (the call's peer) and the code.
func (c *tapCall) endGRPCAttempt(i int, p *peer.Peer, err error) {
	st := status.Convert(err)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return
	}
	a, side := &c.ev.Attempts[i], &c.side[i]
	side.pending = false
	if p.Addr != nil {
		a.Endpoint = p.Addr.String()
	}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
		if id, ok := security.PeerIDFromTLS(&ti.State); ok {
			side.peer = id.String()
		}
	}
	a.Status, a.GRPCStatus = grpcHTTPStatus(st.Code()), st.Code().String()
	if err != nil {
		a.Error = st.Message()
	}
}

// grpcHTTPStatus is the HTTP status a tap line shows for a gRPC call:
// 200, the status of every gRPC response; the code is in grpc_status.
func grpcHTTPStatus(codes.Code) int { return http.StatusOK }

// authz records an authorization decision; a denial, once made, stands.
func (c *tapCall) authz(allowed bool, rule string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done || c.ev.Authz != nil && c.ev.Authz.Decision == "deny" {
		return
	}
	d := "allow"
	if !allowed {
		d = "deny"
	}
	c.ev.Authz = &tap.Authz{Decision: d, Rule: rule}
}

// tapAuthz records a decision into the request's tap call, if tapped.
func (m *Mesh) tapAuthz(ctx context.Context, allowed bool, rule string) {
	if m.tap.Active() {
		tapFrom(ctx).authz(allowed, rule)
	}
}

// finish completes the event and publishes it. resp is the response the
// caller got (outbound HTTP), to tell which attempt's endpoint answered.
func (c *tapCall) finish(b *tap.Bus, resp *http.Response) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return
	}
	c.done = true
	ev := &c.ev
	ev.LatencyMS = tap.Since(ev.Time)
	winner := -1
	for i := range c.side {
		if c.side[i].pending && ev.Attempts[i].Error == "" {
			ev.Attempts[i].Error = "still in flight when the request ended: another attempt answered first"
		}
		if resp != nil && c.side[i].resp == resp {
			winner = i
		}
	}
	if winner < 0 {
		winner = len(c.side) - 1
	}
	if winner >= 0 {
		ev.Endpoint = ev.Attempts[winner].Endpoint
		if ev.Peer == "" {
			ev.Peer = c.side[winner].peer
		}
	}
	b.Publish(ev)
}

// tapRoundTrip is transport.RoundTrip with the request tapped.
func (t *transport) tapRoundTrip(req *http.Request) (*http.Response, error) {
	ctx, c := newTapCall(req.Context(), tap.Outbound, tap.HTTP, req.Method, req.URL.Host, req.URL.Path)
	resp, err := t.roundTrip(req.WithContext(ctx))
	c.mu.Lock()
	if resp != nil {
		resp.Request = req
		c.ev.Status = resp.StatusCode
	}
	if err != nil {
		c.ev.Error = err.Error()
	}
	c.mu.Unlock()
	c.finish(t.m.tap, resp)
	return resp, err
}

// tapUnary is the unary interceptor of an xDS channel with the call
// tapped.
func (c *xdsChannel) tapUnary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	ctx, call := newTapCall(ctx, tap.Outbound, tap.GRPC, method, c.authority, method)
	err := c.unaryCall(ctx, method, req, reply, cc, invoker, opts...)
	call.finishGRPC(c.x.m.tap, err)
	return err
}

// tapCallUnary wraps next, the outermost interceptor of a channel to a
// mesh service outside xDS (WEFT_ENDPOINTS, WEFT_DNS), to tap its unary
// calls: the service is the cluster.
func (m *Mesh) tapCallUnary(cluster, target string, next grpc.UnaryClientInterceptor) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		// The outermost of a static service's interceptors: the call's
		// room on the stack is made here (see internal/stackroom).
		stackroom.Reserve8K()
		if !m.tap.Active() {
			return next(ctx, method, req, reply, cc, invoker, opts...)
		}
		ctx, call := newTapCall(ctx, tap.Outbound, tap.GRPC, method, target, method)
		call.setRoute("", cluster)
		err := next(ctx, method, req, reply, cc, invoker, opts...)
		call.finishGRPC(m.tap, err)
		return err
	}
}

// tapAttemptUnary wraps next, the innermost interceptor of a channel (it
// runs once per attempt): with the call tapped, it records each attempt's
// endpoint (learnt from the connection the balancer picked) and outcome.
func tapAttemptUnary(b *tap.Bus, next grpc.UnaryClientInterceptor) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if !b.Active() {
			return next(ctx, method, req, reply, cc, invoker, opts...)
		}
		call := tapFrom(ctx)
		if call == nil {
			return next(ctx, method, req, reply, cc, invoker, opts...)
		}
		var p peer.Peer
		i := call.startAttempt(ctx, "")
		err := next(ctx, method, req, reply, cc, invoker, append(slices.Clip(opts), grpc.Peer(&p))...)
		call.endGRPCAttempt(i, &p, err)
		return err
	}
}

// tapServer is the inbound HTTP middleware that taps requests, inside
// the server span (for the trace ID) and outside authorization (to see
// its denials).
func (m *Mesh) tapServer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !m.tap.Active() {
			next.ServeHTTP(w, r)
			return
		}
		ctx, c := newTapCall(r.Context(), tap.Inbound, tap.HTTP, r.Method, r.Host, r.URL.Path)
		c.ev.Endpoint = r.RemoteAddr
		if id, ok := security.PeerIDFromTLS(r.TLS); ok {
			c.ev.Peer = id.String()
		}
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			c.mu.Lock()
			c.ev.Status = sw.status()
			c.mu.Unlock()
			c.finish(m.tap, nil)
		}()
		next.ServeHTTP(sw, r.WithContext(ctx))
	})
}

// statusWriter remembers the status a handler wrote. It keeps the
// optional interfaces handlers use (Flusher, Hijacker) and unwraps for
// http.ResponseController.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) status() int {
	if w.code == 0 {
		return http.StatusOK // nothing written: net/http sends 200
	}
	return w.code
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 && code >= 200 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// firstServer is the first interceptor of a mesh gRPC server, so that
// golden metrics see every call, denied ones too: the call's golden
// metrics recorded (when the admin endpoint is on); the caller's trace
// context taken into the call's when the server has no stats handler to
// do it (grpcServerFirst); x-forwarded-client-cert removed from the
// metadata that authorization rules and the handler read, as
// stripForwardedClientCert removes it from HTTP requests; then the call
// tapped, outside authorization. One interceptor, not four: grpc-go
// allocates per call for each interceptor of a chain, and what is off
// must cost nothing.
type firstServer struct {
	m *Mesh
	// traceCtx takes the caller's trace context into the call's; nil
	// when a stats handler does.
	traceCtx func(context.Context) context.Context
	// scanned: the server's tap handle (scan) has looked at each call's
	// metadata for traceKeys (lower case) and x-forwarded-client-cert.
	scanned   bool
	traceKeys []string
}

// scanned is what firstServer.scan found in a call's metadata.
type scanned uint8

const (
	foundForwardedClientCert scanned = 1 << iota
	foundTraceContext
)

type scannedKey struct{}

// scan is a server's tap handle, run before the interceptors: it reads
// the call's metadata once, in place, and marks the call's context when
// x-forwarded-client-cert or a trace context key is there. The first
// interceptor then looks them up, one scan of the metadata per spelling
// and key, only for the calls so marked, which are few.
func (f *firstServer) scan(ctx context.Context, info *grpctap.Info) (context.Context, error) {
	var found scanned
	for k := range info.Header {
		if isForwardedClientCert(k) {
			found |= foundForwardedClientCert
			continue
		}
		if slices.Contains(f.traceKeys, k) {
			found |= foundTraceContext
		}
	}
	if found == 0 {
		return ctx, nil
	}
	return context.WithValue(ctx, scannedKey{}, found), nil
}

func (f *firstServer) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	m := f.m
	if m.golden == nil {
		return m.tapServerUnary(f.inbound(ctx), req, info, handler)
	}
	start := time.Now()
	resp, err := m.tapServerUnary(f.inbound(ctx), req, info, handler)
	m.observeGRPC(admin.GoldenKey{Direction: admin.DirectionInbound, Route: info.FullMethod, Caller: grpcCaller(ctx)}, start, err)
	return resp, err
}

func (f *firstServer) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	m, outer := f.m, ss
	if ctx := f.inbound(ss.Context()); ctx != ss.Context() {
		ss = ctxStream{ServerStream: ss, ctx: ctx}
	}
	if m.golden == nil {
		return m.tapServerStream(srv, ss, info, handler)
	}
	start := time.Now()
	err := m.tapServerStream(srv, ss, info, handler)
	m.observeGRPC(admin.GoldenKey{Direction: admin.DirectionInbound, Route: info.FullMethod, Caller: grpcCaller(outer.Context())}, start, err)
	return err
}

// inbound is a call's context with the caller's trace context, when no
// stats handler took it, and without x-forwarded-client-cert.
func (f *firstServer) inbound(ctx context.Context) context.Context {
	found := foundForwardedClientCert | foundTraceContext
	if f.scanned {
		found, _ = ctx.Value(scannedKey{}).(scanned)
	}
	if f.traceCtx != nil && found&foundTraceContext != 0 {
		ctx = f.traceCtx(ctx)
	}
	if found&foundForwardedClientCert != 0 {
		ctx = withoutForwardedClientCertMD(ctx)
	}
	return ctx
}

// tapServerUnary and tapServerStream tap inbound gRPC calls.
func (m *Mesh) tapServerUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if !m.tap.Active() {
		return handler(ctx, req)
	}
	ctx, c := newInboundGRPCCall(ctx, info.FullMethod)
	resp, err := handler(ctx, req)
	c.finishGRPC(m.tap, err)
	return resp, err
}

func (m *Mesh) tapServerStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !m.tap.Active() {
		return handler(srv, ss)
	}
	ctx, c := newInboundGRPCCall(ss.Context(), info.FullMethod)
	err := handler(srv, ctxStream{ServerStream: ss, ctx: ctx})
	c.finishGRPC(m.tap, err)
	return err
}

func newInboundGRPCCall(ctx context.Context, fullMethod string) (context.Context, *tapCall) {
	var authority string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(":authority"); len(v) > 0 {
			authority = v[0]
		}
	}
	ctx, c := newTapCall(ctx, tap.Inbound, tap.GRPC, fullMethod, authority, fullMethod)
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		c.ev.Endpoint = p.Addr.String()
	}
	if id, ok := security.PeerID(ctx); ok {
		c.ev.Peer = id.String()
	}
	return ctx, c
}

func (c *tapCall) finishGRPC(b *tap.Bus, err error) {
	st := status.Convert(err)
	c.mu.Lock()
	c.ev.Status, c.ev.GRPCStatus = grpcHTTPStatus(st.Code()), st.Code().String()
	if err != nil {
		c.ev.Error = st.Message()
	}
	c.mu.Unlock()
	c.finish(b, nil)
}

// tappedAuthz is the policy's HTTP middleware (plain) that, for a tapped
// request, puts the decision and the policy that made it in the event;
// the evaluator is per request then, and untapped requests keep plain.
func (m *Mesh) tappedAuthz(plain, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if m.tap.Active() {
			if c := tapFrom(r.Context()); c != nil {
				security.AuthorizationHandler(countedPolicy{e: m.authz, m: m, protocol: "http", tap: c}, next, security.WithLogger(m.limited)).ServeHTTP(w, r)
				return
			}
		}
		plain.ServeHTTP(w, r)
	})
}

// tappedAuthzUnary and tappedAuthzStream are tappedAuthz for gRPC.
func (m *Mesh) tappedAuthzUnary(plain grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if m.tap.Active() {
			if c := tapFrom(ctx); c != nil {
				return security.UnaryServerInterceptor(countedPolicy{e: m.authz, m: m, protocol: "grpc", tap: c}, security.WithLogger(m.limited))(ctx, req, info, handler)
			}
		}
		return plain(ctx, req, info, handler)
	}
}

func (m *Mesh) tappedAuthzStream(plain grpc.StreamServerInterceptor) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if m.tap.Active() {
			if c := tapFrom(ss.Context()); c != nil {
				return security.StreamServerInterceptor(countedPolicy{e: m.authz, m: m, protocol: "grpc", tap: c}, security.WithLogger(m.limited))(srv, ss, info, handler)
			}
		}
		return plain(srv, ss, info, handler)
	}
}

// tapHandler is the /tap endpoint of the admin listener.
func (m *Mesh) tapHandler() http.Handler { return tap.Handler(m.tap) }
