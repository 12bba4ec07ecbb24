package mesh

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/propagation"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/internal/respbody"
	"github.com/weftmesh/weft/internal/route"
	"github.com/weftmesh/weft/internal/stackroom"
	"github.com/weftmesh/weft/internal/tracehdr"
	"github.com/weftmesh/weft/internal/xds"
	"github.com/weftmesh/weft/resilience"
	"github.com/weftmesh/weft/telemetry"
)

// HTTPClient returns the mesh's shared HTTP client: requests to mesh
// services (http://orders/..., http://orders:8080/...) are balanced over the
// service's endpoints; other hosts pass through to the default transport.
// The client has no overall timeout of its own; use request contexts.
//
// A request whose xDS route is a redirect or a direct response is
// answered in the process, as Envoy answers it, with no upstream
// contacted: the route's status and body, or its status and a Location
// built from the request URL. The client follows such a redirect by
// net/http's default policy (up to 10 hops); a copy of the client with
// CheckRedirect returning http.ErrUseLastResponse sees the 3xx instead.
//
// A request a circuit-breaker threshold refuses (max_requests from CDS or
// WithCircuitBreaker) is answered as Envoy answers it, with 503,
// x-envoy-overloaded: true and Envoy's body, not with an error: callers
// written for a sidecar read a status. [LocalReplyError] returns the error
// behind such an answer (errors.Is(err, resilience.ErrOverflow)).
func (m *Mesh) HTTPClient() *http.Client { return m.client }

// Transport wraps base so that requests to mesh services go to an endpoint
// the mesh picks, over base's pooled connections to that endpoint. base nil
// means the mesh's default transport (net/http's defaults with a larger idle
// pool). Requests to hosts that are not mesh services go to base unchanged.
//
// With mTLS on, requests to mesh services leave over mutual TLS (the URL
// names the service; the mesh secures the hop), through a copy of base that
// carries the service's SVID, so base must then be nil or an
// *http.Transport.
func (m *Mesh) Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		return m.instrumentClient(&transport{m: m, base: m.base, mesh: m.meshBase, defaultBase: true, client: m.hashClient()})
	}
	return m.instrumentClient(&transport{m: m, base: base, mesh: m.meshTransport(base), client: m.hashClient()})
}

type transport struct {
	m *Mesh
	// defaultBase: base is the mesh's own transport, so per-cluster TLS
	// transports (cloned from it) may stand in for mesh.
	defaultBase bool
	base        http.RoundTripper // pass-through traffic
	mesh        http.RoundTripper // traffic to mesh endpoints
	rts         sync.Map          // *service -> its retrying round tripper
	// client is what xDS hash policies hash about this client: its own
	// random id (the HTTP counterpart of a gRPC channel's) and the
	// process's source IP.
	client route.Client

	// clusterRTs holds, for a caller's base, the copies of it secured
	// with each TLS cluster's own config (see clusterTransport) or
	// speaking a cluster's own protocol (see protoClusterTransport).
	clusterMu  sync.Mutex
	clusterRTs map[*service]clusterCopy
}

var _ http.RoundTripper = (*transport)(nil)

// outbound is the request sent to the endpoint and its URL, allocated
// together (the copy is what makes the caller's request untouched), with
// what the attempt's outcome is reported to.
type outbound struct {
	req http.Request
	url url.URL

	rt         http.RoundTripper // the endpoint's transport
	res        balancer.PickResult
	th         *resilience.Thresholds
	sess       *xds.SessionCookie
	override   string // the endpoint the session cookie asked for
	tapped     *tapCall
	tapAttempt int
	ll         *xds.LocalityLoad // nil unless the cluster reports load
	// vals holds the header values of a copy that adds Weft-Timeout or
	// trace context to a request with few headers (see outboundHeader).
	vals   [6]string
	header headerCarrier
	// body wraps the response body to release the max-requests slot when
	// the body is done; here, it costs no allocation of its own. The
	// outbound lives as long as that body anyway: net/http's body refers
	// to the request it sent, req.
	body respbody.Body
	// ctx is the attempt's context as the endpoint's transport sees it:
	// net/http's HTTP/2 client grows the stack of the goroutine that
	// writes the request when it asks for Done (see stackroom.Context).
	ctx stackroom.Context
}

// RoundTrip implements http.RoundTripper.
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	// A request through the mesh needs more stack than net/http's alone:
	// on a fresh goroutine (a fan-out, a paced load, an HTTP/2 handler
	// calling onwards) the room is made here, a few frames deep, rather
	// than by doubling with the whole request on the stack. 8 KiB, not 4:
	// net/http asks the attempt's context for Done on this goroutine, deep
	// in its transport, and that makes 4 KiB of room of its own.
	stackroom.Reserve8K()
	if t.m.tap.Active() {
		return t.tapRoundTrip(req)
	}
	return t.roundTrip(req)
}

func (t *transport) roundTrip(req *http.Request) (*http.Response, error) {
	svc, isMesh, err := t.m.lookup(req.URL.Host)
	switch {
	case !isMesh:
		return t.otherRoundTrip(req)
	case err != nil:
		closeBody(req)
		return nil, err
	case t.m.golden != nil || t.m.tap.Active():
		return t.observedRoundTrip(svc, req)
	}
	// The common case keeps a small frame: it is on the stack while the
	// request is in flight (see pickTransport.RoundTripAttemptContext).
	resp, err := t.serviceRoundTripper(svc).RoundTrip(req)
	if err != nil {
		return t.failed(req, svc, err)
	}
	if resp != nil {
		resp.Request = req
	}
	return resp, nil
}

// otherRoundTrip sends a request for a host that is not a static or DNS
// mesh service: to an xDS listener's routes when one matches, else
// through the base transport unchanged.
//
//go:noinline
func (t *transport) otherRoundTrip(req *http.Request) (*http.Response, error) {
	if t.m.xds != nil {
		resp, handled, err := t.m.xds.roundTrip(t, req)
		if handled {
			if resp != nil && !isLocalReply(resp) {
				resp.Request = req
			}
			return resp, err
		}
	}
	if telemetry.CarriesContext(req.Context()) {
		// The telemetry layer above left the trace context to this
		// transport (see outboundHeader); a host outside the mesh gets it
		// on a copy.
		req = req.Clone(req.Context())
		t.m.injectTrace(req.Context(), req.Header)
	}
	return t.base.RoundTrip(req)
}

// injectTrace writes ctx's trace context and baggage on h, a copy's
// header, with the mesh's propagator: the one the telemetry layer would
// have used (see telemetry.HeaderInjector).
func (m *Mesh) injectTrace(ctx context.Context, h http.Header) {
	m.tel.Propagator().Inject(ctx, propagation.HeaderCarrier(h))
}

// InjectsTraceContext tells telemetry.NewHTTPTransport that this transport
// writes each request's trace context and baggage into the copy it sends
// (see telemetry.HeaderInjector).
func (t *transport) InjectsTraceContext() {}

// failed turns a request's error into the answer the caller gets, for
// every path (static, DNS and xDS services, observed or not): a
// circuit-breaker overflow is counted and answered as Envoy answers it,
// with a local reply whose Request carries the error (LocalReplyError).
//
//go:noinline
func (t *transport) failed(req *http.Request, svc *service, err error) (*http.Response, error) {
	countOverflow(req.Context(), svc, err)
	if local := overflowReply(req, svc.name, err); local != nil {
		// Envoy's 503: its Request carries the error for LocalReplyError.
		return local, nil
	}
	return nil, err
}

// observedRoundTrip is roundTrip with tap or golden metrics on.
//
//go:noinline
func (t *transport) observedRoundTrip(svc *service, req *http.Request) (*http.Response, error) {
	if t.m.tap.Active() {
		tapFrom(req.Context()).setRoute("", svc.name)
	}
	var start time.Time
	if t.m.golden != nil {
		start = time.Now()
	}
	resp, err := t.serviceRoundTripper(svc).RoundTrip(req)
	failed := err != nil
	if failed {
		resp, err = t.failed(req, svc, err)
	}
	if t.m.golden != nil {
		t.m.goldenOutbound(svc.name, "", start, resp, err)
	}
	if resp != nil && !failed {
		// (A local reply's Request carries the error for LocalReplyError.)
		resp.Request = req
	}
	return resp, err
}

// pickTransport sends one attempt of a request to a mesh service: it picks
// an endpoint (another one than earlier attempts tried, where possible),
// sends a copy of the request there and reports the outcome to the
// balancer.
type pickTransport struct {
	t   *transport
	svc *service
	// plan is set on the xDS path: rewrites, header changes and hash
	// policies come from its route.
	plan *routePlan
}

func (p *pickTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, _, err := p.RoundTripAttempt(req, resilience.AttemptsFromContext(req.Context()))
	return resp, err
}

// RoundTripAttempt implements resilience.EndpointTransport: the retry
// layer hands over the request's attempts (nil on a first attempt) and
// learns the endpoint picked, so a request that needs no retry carries no
// tracker.
func (p *pickTransport) RoundTripAttempt(req *http.Request, attempts *resilience.Attempts) (*http.Response, string, error) {
	return p.RoundTripAttemptContext(req.Context(), req, attempts)
}

// RoundTripAttemptContext is RoundTripAttempt under ctx, which replaces
// req's context: the retry layer's route timeout reaches the endpoint
// through the copy of the request made here anyway, not through a copy
// of its own.
func (p *pickTransport) RoundTripAttemptContext(ctx context.Context, req *http.Request, attempts *resilience.Attempts) (*http.Response, string, error) {
	// Three steps, so that only the attempt's pointer is on this frame
	// while the request is in flight: a request sent from a fresh
	// goroutine grows its stack by copying, and the frames below the
	// endpoint's transport decide how often.
	out, addr, err := p.prepare(ctx, req, attempts)
	if out == nil {
		return nil, addr, err
	}
	start := balancer.Now()
	resp, err := out.rt.RoundTrip(&out.req)
	end := balancer.Now()
	return p.complete(ctx, out, resp, err, start, end)
}

// prepare picks the attempt's endpoint and builds the request it sends
// there. With no attempt to send, out is nil and err says why.
//
//go:noinline
func (p *pickTransport) prepare(ctx context.Context, req *http.Request, attempts *resilience.Attempts) (out *outbound, addr string, err error) {
	svc := p.svc
	if err := svc.waitReady(ctx); err != nil {
		closeBody(req)
		return nil, "", err
	}
	info := balancer.PickInfo{Ctx: ctx, Header: req.Header}
	sess := p.session(ctx, req)
	pickInfoSession(&info, req, sess)
	if p.plan != nil {
		if hp := p.plan.Route.Action.HashPolicies; len(hp) > 0 {
			info.Hash, info.HasHash = route.HTTPHash(req, hp, p.t.client)
		}
	} else if hp := p.t.m.hashPolicies; len(hp) > 0 {
		info.Hash, info.HasHash = route.HTTPHash(req, hp, route.Client{})
	}
	if attempts != nil {
		info.Tried = attempts
	}
	// max_requests, counted per attempt as Envoy counts active requests.
	// (net/http dials rather than queues, so there is no pending queue to
	// bound unless the transport limits connections.)
	th := svc.res.Load().thresholds
	if err := th.AcquireRequest(); err != nil {
		closeBody(req)
		return nil, "", err
	}
	res, err := svc.balancer().Pick(info)
	if err != nil {
		th.ReleaseRequest()
		closeBody(req)
		if e := svc.lastErr.Load(); e != nil {
			return nil, "", &ServiceError{Service: svc.name, Err: err, Discovery: *e}
		}
		return nil, "", &ServiceError{Service: svc.name, Err: err}
	}
	attempts.Record(res.Endpoint.Addr)
	attempt := max(attempts.Count(), 1) // 0 when the request cannot be retried
	// The attempt's context says what it is: the count alone cannot, as a
	// hedge may pick before the attempt it hedges.
	switch {
	case resilience.IsHedge(ctx):
		telemetry.RecordHedge(ctx, attempt)
		svc.stats.Hedge(ctx)
	case resilience.IsRetry(ctx):
		telemetry.RecordRetry(ctx, attempt, "")
		svc.stats.Retry(ctx, "")
	}
	if telemetry.Recording(ctx) {
		// The locality's text is built only for a span that keeps it.
		telemetry.AnnotateEndpoint(ctx, svc.name, res.Endpoint.Addr, res.Endpoint.Locality.String(), attempt)
	}
	var tapped *tapCall
	tapAttempt := -1
	if p.t.m.tap.Active() {
		if tapped = tapFrom(ctx); tapped != nil {
			tapAttempt = tapped.startAttempt(ctx, res.Endpoint.Addr)
		}
	}

	rt := p.t.mesh
	if up := svc.upstream.Load(); up != nil {
		if up.err != nil {
			if tapped != nil {
				tapped.endAttempt(tapAttempt, nil, up.err)
			}
			res.Finish(balancer.DoneInfo{Outcome: balancer.Canceled})
			th.ReleaseRequest()
			closeBody(req)
			return nil, res.Endpoint.Addr, up.err
		}
		rt = p.t.clusterTransport(svc, up)
	} else if pt := svc.proto.Load(); pt != nil {
		rt = p.t.protoClusterTransport(svc, pt)
	}

	out = &outbound{url: *req.URL,
		rt: rt, res: res, th: th, sess: sess, override: info.Override, tapped: tapped, tapAttempt: tapAttempt}
	out.ctx.Context = ctx
	out.req = *req.WithContext(&out.ctx)
	out.url.Host = res.Endpoint.Addr
	if p.t.m.id != nil {
		out.url.Scheme = "https"
	}
	out.req.URL = &out.url
	if out.req.Host == "" {
		// The Host header keeps the name the caller wrote, as a sidecar
		// would send it: servers route and log by service, not by address.
		out.req.Host = req.URL.Host
	}
	if p.plan != nil && p.plan.Mutates {
		p.plan.Rewrite(&out.req, svc.name)
	}
	if p.plan != nil && p.plan.Route.Action.AutoHostRewrite && res.Endpoint.Hostname != "" {
		// Envoy's router rewrites the host once the endpoint is picked.
		out.req.Host = res.Endpoint.Hostname
	}
	p.t.m.outboundHeader(ctx, out)

	// LRS counts the attempt at its endpoint's locality (see lrsLoad).
	if ld := svc.load.Load(); ld != nil {
		out.ll = ld.cl.Locality(res.Endpoint.Locality)
		out.ll.Start()
	}
	return out, res.Endpoint.Addr, nil
}

// complete reports the outcome of the attempt out sent, between start
// and end: to tap, LRS, the balancer and the thresholds.
//
//go:noinline
func (p *pickTransport) complete(ctx context.Context, out *outbound, resp *http.Response, err error, start, end int64) (*http.Response, string, error) {
	svc, res := p.svc, out.res
	if p.t.m.id == nil {
		resp, err = mtlsRefusal(res.Endpoint.Addr, resp, err)
	}
	if out.tapped != nil {
		out.tapped.endAttempt(out.tapAttempt, resp, err)
	}
	if out.ll != nil {
		out.ll.Done(err != nil || resp.StatusCode >= 500)
	}
	if out.sess != nil && err == nil {
		setSessionCookie(resp, out.sess, out.override, res.Endpoint.Addr)
	}
	outcome := httpOutcome(ctx, resp, err)
	done := balancer.DoneInfo{Latency: time.Duration(end - start), End: end, Outcome: outcome, Err: err, Ctx: ctx}
	if resp != nil {
		done.Load = loadReport(resp.Header)
	}
	res.Finish(done)
	svc.requests.Add(1)
	if err != nil || resp.Body == nil {
		out.th.ReleaseRequest()
	} else {
		out.body.ReadCloser, out.body.Slot = resp.Body, out.th
		resp.Body = &out.body
	}
	if outcome == balancer.ConnectFailure && svc.resolveNow != nil {
		// The endpoint may be gone; ask discovery (DNS) to look again.
		svc.resolveNow()
	}
	return resp, res.Endpoint.Addr, err
}

// CloseIdleConnections closes idle connections of the wrapped transport,
// so http.Client.CloseIdleConnections reaches the pool.
func (t *transport) CloseIdleConnections() {
	for _, rt := range []http.RoundTripper{t.base, t.mesh} {
		if c, ok := rt.(interface{ CloseIdleConnections() }); ok {
			c.CloseIdleConnections()
		}
	}
	t.clusterMu.Lock()
	for _, c := range t.clusterRTs {
		c.rt.CloseIdleConnections()
	}
	t.clusterMu.Unlock()
	if t.defaultBase && t.m.xds != nil {
		// On the default path an xDS cluster with upstream TLS or a
		// protocol of its own sends over a transport of its own.
		for _, s := range *t.m.xds.clusterSnap.Load() {
			s.closeIdle()
		}
	}
}

// ServiceError is the error of a request the mesh could not place on an
// endpoint of a mesh service.
type ServiceError struct {
	Service string
	// Err is the balancer's error, such as balancer.ErrNoHealthyEndpoint.
	Err error
	// Discovery is the last discovery error for the service, if any: the
	// likely reason it has no endpoints.
	Discovery error
}

func (e *ServiceError) Error() string {
	s := "weft: service " + `"` + e.Service + `": ` + e.Err.Error()
	if e.Discovery != nil {
		s += " (discovery: " + e.Discovery.Error() + ")"
	}
	return s
}

func (e *ServiceError) Unwrap() error { return e.Err }

// closeBody honours RoundTrip's contract to close the body even on error.
func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// httpOutcome classifies a round trip for the balancer.
func httpOutcome(ctx context.Context, resp *http.Response, err error) balancer.Outcome {
	if err != nil {
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			return balancer.Timeout
		case ctx.Err() != nil, errors.Is(err, context.Canceled):
			return balancer.Canceled
		case isConnectFailure(err):
			return balancer.ConnectFailure
		default:
			return balancer.Reset
		}
	}
	switch {
	case resp.StatusCode == http.StatusBadGateway, resp.StatusCode == http.StatusServiceUnavailable,
		resp.StatusCode == http.StatusGatewayTimeout:
		return balancer.GatewayError
	case resp.StatusCode >= 500:
		return balancer.ServerError
	}
	return balancer.Success
}

// isConnectFailure reports whether err happened while dialing, before any
// byte of the request could have reached the endpoint.
func isConnectFailure(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// countOverflow records a request the service's thresholds refused.
func countOverflow(ctx context.Context, svc *service, err error) {
	if err != nil && errors.Is(err, resilience.ErrOverflow) {
		svc.stats.Overflow(ctx, "thresholds")
	}
}

// TimeoutHeader carries a request's remaining time budget, in milliseconds,
// from a mesh client to a mesh server, which turns it back into a context
// deadline: a chain of services cannot outlive its caller. A duration, not
// a point in time, so clock skew between hosts does not matter; gRPC's
// grpc-timeout works the same way.
const TimeoutHeader = "Weft-Timeout"

// outboundHeader gives the attempt's request a header of its own and
// writes on it what the mesh adds: the time left until the context's
// deadline (Weft-Timeout, replacing a value the caller may have set) and
// the context's trace context and baggage (the telemetry layer above
// leaves that to this copy rather than make one of its own: see
// telemetry.HeaderInjector). The caller's values are shared, never
// modified; the copy's value slices live in the outbound request's own
// array when they fit, and the timeout's text is reused while the budget
// reads the same (a route timeout sends most requests out with the same
// millisecond count), so the header costs the map alone.
func (m *Mesh) outboundHeader(ctx context.Context, out *outbound) {
	deadline, hasDeadline := ctx.Deadline()
	inject := telemetry.CarriesContext(ctx)
	if !hasDeadline && !inject {
		return
	}
	h := out.req.Header
	nv := 0
	for _, v := range h {
		nv += len(v)
	}
	room := out.vals[:]
	var sv []string
	if nv <= len(room) {
		sv, room = room[:nv:nv], room[nv:]
	} else {
		sv = make([]string, nv)
	}
	h2 := make(http.Header, len(h)+2)
	for k, v := range h {
		if k == TimeoutHeader && hasDeadline {
			continue
		}
		if v == nil {
			// Preserve nil values, as Header.Clone does.
			h2[k] = nil
			continue
		}
		n := copy(sv, v)
		h2[k] = sv[:n:n]
		sv = sv[n:]
	}
	out.header = headerCarrier{h: h2, room: room}
	if hasDeadline {
		ms := time.Until(deadline).Milliseconds()
		if ms < 1 {
			ms = 1 // already late: the server fails fast rather than running unbounded
		}
		out.header.put(TimeoutHeader, timeoutText(ms))
	}
	if inject {
		m.tel.Propagator().Inject(ctx, &out.header)
	}
	out.req.Header = h2
}

// headerCarrier is a propagation.TextMapCarrier writing into an outbound
// header copy, its values in the copy's spare room when there is some.
type headerCarrier struct {
	h    http.Header
	room []string
}

// put sets key, already canonical, to v.
func (c *headerCarrier) put(key, v string) {
	var vs []string
	if len(c.room) > 0 {
		vs, c.room = c.room[:1:1], c.room[1:]
	} else {
		vs = make([]string, 1)
	}
	vs[0] = v
	c.h[key] = vs
}

// Set implements propagation.TextMapCarrier. The W3C keys are written in
// their canonical form without the allocation canonicalizing them costs.
func (c *headerCarrier) Set(key, v string) { c.put(tracehdr.Canonical(key), v) }

// Get implements propagation.TextMapCarrier.
func (c *headerCarrier) Get(key string) string { return c.h.Get(key) }

// Keys implements propagation.TextMapCarrier.
func (c *headerCarrier) Keys() []string { return propagation.HeaderCarrier(c.h).Keys() }

// lastTimeout is the last budget rendered by timeoutText.
var lastTimeout atomic.Pointer[renderedTimeout]

type renderedTimeout struct {
	ms   int64
	text string
}

// timeoutText renders ms in decimal, reusing the last rendering when it is
// the same number.
func timeoutText(ms int64) string {
	if r := lastTimeout.Load(); r != nil && r.ms == ms {
		return r.text
	}
	r := &renderedTimeout{ms: ms, text: strconv.FormatInt(ms, 10)}
	lastTimeout.Store(r)
	return r.text
}
