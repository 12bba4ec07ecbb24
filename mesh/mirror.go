package mesh

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/internal/route"
	"github.com/weftmesh/weft/internal/xds"
	"github.com/weftmesh/weft/resilience"
	"github.com/weftmesh/weft/telemetry"
)

// Request mirroring (request_mirror_policies; Istio's mirror and
// mirrorPercentage), as Envoy's router shadows: fire and forget. A copy of
// a sampled request goes to the mirror cluster with its Host suffixed
// "-shadow", and its answer is read and discarded. The request itself never
// waits on a copy: the copy is picked, sent and read on a goroutine of its
// own. What bounds the copies:
//
//   - the body: a copy needs a body of its own. A request with GetBody
//     gets one from it; one with a known length of at most maxMirrorBody
//     is read into a buffer that both share; any other (a larger or
//     unknown length) is not mirrored, and counted as skipped, rather than
//     have the request wait for its body to be buffered.
//   - the budget: at most maxMirrorsInFlight copies per mirror cluster are
//     in flight; beyond that a copy is dropped and counted, as a slow
//     mirror cluster must not pile up goroutines and connections.
//   - time: a copy ends with the route's timeout, or Envoy's 15 s when the
//     route has none, and at once when the mesh closes, which waits for
//     every copy's goroutine.
//
// Every copy is counted in weft.client.mirrors by mirror cluster and
// result (sent, failed, dropped, skipped).

// maxMirrorBody bounds the body the mesh buffers to mirror a request
// without GetBody.
const maxMirrorBody = 64 << 10

// maxMirrorsInFlight bounds the copies in flight to one mirror cluster.
const maxMirrorsInFlight = 64

// defaultMirrorTimeout bounds a copy whose route sets no timeout (Envoy's
// route default) or disables it: a copy holds budget while it runs.
const defaultMirrorTimeout = 15 * time.Second

// mirrors tracks the copies in flight, so Close can end them and wait.
type mirrors struct {
	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex // orders start against close: no wg.Add after Wait
	closed bool
	wg     sync.WaitGroup
}

func newMirrors() *mirrors {
	ctx, cancel := context.WithCancel(context.Background())
	return &mirrors{ctx: ctx, cancel: cancel}
}

// start counts a copy's goroutine in; false once the mesh is closing.
func (ms *mirrors) start() bool {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if ms.closed {
		return false
	}
	ms.wg.Add(1)
	return true
}

// close cancels the copies in flight and waits for their goroutines.
func (ms *mirrors) close() {
	ms.mu.Lock()
	ms.closed = true
	ms.mu.Unlock()
	ms.cancel()
	ms.wg.Wait()
}

// mirror sends the copies of req its route's mirror policies sample, to
// cluster's route plan; it returns the request to send on, which has a
// replayable body when the copies share one with it. The caller's request
// is never modified.
func (x *xdsPath) mirror(t *transport, plan *routePlan, cluster string, req *http.Request) *http.Request {
	policies := plan.Route.Action.MirrorPolicies
	var (
		getBody  func() (io.ReadCloser, error)
		bodyDone bool
		bodyOK   bool
	)
	for i := range policies {
		m := &policies[i]
		if !route.MirrorSampled(m) {
			continue
		}
		target := x.cluster(m.Cluster)
		if target == nil {
			return req // closing
		}
		target.used.Store(true)
		ctx := req.Context()
		if !bodyDone {
			bodyDone = true
			req, getBody, bodyOK = mirrorBody(req)
		}
		if !bodyOK {
			target.stats.Mirror(ctx, telemetry.MirrorSkipped)
			continue
		}
		if ok, closed := x.mirrorSlot(ctx, target); closed {
			return req
		} else if !ok {
			continue
		}
		var body io.ReadCloser
		if getBody != nil {
			var err error
			if body, err = getBody(); err != nil {
				target.mirrors.Add(-1)
				x.mirrors.wg.Done()
				target.stats.Mirror(ctx, telemetry.MirrorSkipped)
				continue
			}
		}
		// The copy is made here, while the caller still owns req: once
		// RoundTrip returns, the caller may change its request.
		mctx, cancel := context.WithTimeout(x.mirrors.ctx, mirrorTimeout(plan))
		out := req.Clone(mctx)
		if telemetry.CarriesContext(ctx) {
			// The copy's context is detached from the request's; the
			// trace context goes with its headers, as on the request
			// itself (see outboundHeader).
			x.m.injectTrace(ctx, out.Header)
		}
		out.Body, out.GetBody = body, nil
		if body == nil {
			out.Body, out.ContentLength = nil, 0
		}
		if out.Host == "" {
			out.Host = req.URL.Host
		}
		if plan.Mutates {
			plan.Rewrite(out, cluster)
		}
		out.Host = route.MirrorHost(m, out.Host)
		go func() {
			defer x.mirrors.wg.Done()
			defer target.mirrors.Add(-1)
			defer cancel()
			x.sendMirror(t, target, out)
		}()
	}
	return req
}

// sendMirror sends one copy to target and discards the answer.
func (x *xdsPath) sendMirror(t *transport, target *service, out *http.Request) {
	ctx := out.Context()
	resp, _, err := (&pickTransport{t: t, svc: target}).RoundTripAttempt(out, nil)
	if err != nil {
		target.stats.Mirror(ctx, telemetry.MirrorFailed)
		return
	}
	// Read what a connection needs to be reused, no more.
	io.CopyN(io.Discard, resp.Body, maxMirrorBody)
	resp.Body.Close()
	target.stats.Mirror(ctx, telemetry.MirrorSent)
}

// copyCallOptions keeps the call options a copy may share with its call:
// not those that write what the call learns (its header, trailer, peer,
// the end of the call) into the caller's variables, which the caller owns
// once its call returns.
func copyCallOptions(opts []grpc.CallOption) []grpc.CallOption {
	out := make([]grpc.CallOption, 0, len(opts)+1)
	for _, o := range opts {
		switch o.(type) {
		case grpc.HeaderCallOption, grpc.TrailerCallOption, grpc.PeerCallOption, grpc.OnFinishCallOption:
			continue
		}
		out = append(out, o)
	}
	return out
}

// mirrorTimeout is how long a copy may take.
func mirrorTimeout(plan *routePlan) time.Duration {
	if d := plan.HTTP.Timeout; d > 0 {
		return d
	}
	return defaultMirrorTimeout
}

// mirrorBody makes req's body shareable with copies: ok is false when it
// cannot be without waiting on the body (a length above maxMirrorBody, or
// unknown). The request returned is req, or a shallow copy of it reading a
// buffer the copies read too; getBody is nil for a request without a body.
func mirrorBody(req *http.Request) (_ *http.Request, getBody func() (io.ReadCloser, error), ok bool) {
	switch {
	case req.Body == nil || req.Body == http.NoBody:
		return req, nil, true
	case req.GetBody != nil:
		return req, req.GetBody, true
	case req.ContentLength <= 0 || req.ContentLength > maxMirrorBody:
		return req, nil, false
	}
	buf := make([]byte, req.ContentLength)
	n, err := io.ReadFull(req.Body, buf)
	r := req.WithContext(req.Context())
	if err != nil {
		// The request goes on with what was read and the rest, and meets
		// the body's error itself; no copy is made.
		r.Body = readCloser{io.MultiReader(bytes.NewReader(buf[:n]), req.Body), req.Body}
		return r, nil, false
	}
	req.Body.Close()
	getBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
	r.Body, _ = getBody()
	r.GetBody = getBody
	return r, getBody, true
}

type readCloser struct {
	io.Reader
	io.Closer
}

// mirrorClusters lists the clusters a route mirrors to.
func mirrorClusters(a *xds.RouteAction) []string {
	var out []string
	for _, m := range a.MirrorPolicies {
		out = append(out, m.Cluster)
	}
	return out
}

// mirrorUnary sends the copies of a unary call its route's mirror
// policies sample, as mirror does for HTTP: on the channel's own
// sub-connections to the mirror cluster (the resolver publishes it), with
// the call's metadata, through the interceptors after the channel's, under
// the mirror cluster's max_requests. The request message is cloned here,
// before the call returns and its caller may reuse it; a message that is
// not a protocol buffer cannot be, and is not mirrored.
//
// The copy's :authority gains Envoy's "-shadow" suffix on a plaintext
// channel. Over TLS it keeps the channel's: grpc-go checks an overridden
// authority against the server certificate's DNS names, which SPIFFE
// certificates do not carry, and the copy would always fail.
func (c *xdsChannel) mirrorUnary(ctx context.Context, plan *routePlan, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts []grpc.CallOption) {
	x := c.x
	policies := plan.Route.Action.MirrorPolicies
	for i := range policies {
		m := &policies[i]
		if !route.MirrorSampled(m) {
			continue
		}
		target := x.cluster(m.Cluster)
		if target == nil {
			return
		}
		target.used.Store(true)
		in, ok1 := req.(proto.Message)
		out, ok2 := reply.(proto.Message)
		if !ok1 || !ok2 {
			target.stats.Mirror(ctx, telemetry.MirrorSkipped)
			continue
		}
		if ok, closed := x.mirrorSlot(ctx, target); closed {
			return
		} else if !ok {
			continue
		}
		timeout := plan.GRPC.Timeout
		if timeout <= 0 {
			timeout = defaultMirrorTimeout
		}
		mctx, cancel := context.WithTimeout(x.mirrors.ctx, timeout)
		if md, ok := metadata.FromOutgoingContext(ctx); ok {
			mctx = metadata.NewOutgoingContext(mctx, md.Copy())
		}
		mctx = balancer.ContextWithGRPCRoute(mctx, &balancer.GRPCRoute{Cluster: m.Cluster})
		copyReq, copyReply := proto.Clone(in), out.ProtoReflect().New().Interface()
		callOpts := copyCallOptions(opts)
		if x.m.id == nil && target.upstream.Load() == nil {
			callOpts = append(callOpts, grpc.CallAuthority(route.MirrorHost(m, c.authority)))
		}
		th := target.res.Load().thresholds
		go func() {
			defer x.mirrors.wg.Done()
			defer target.mirrors.Add(-1)
			defer cancel()
			err := resilience.ThresholdsUnaryClientInterceptor(th)(mctx, method, copyReq, copyReply, cc, invoker, callOpts...)
			result := telemetry.MirrorSent
			// A status from the mirror's server is an answer; a call
			// that never reached one failed.
			if s, _ := status.FromError(err); err != nil && (s.Code() == codes.Unavailable || s.Code() == codes.DeadlineExceeded || s.Code() == codes.Canceled) {
				result = telemetry.MirrorFailed
			}
			target.stats.Mirror(mctx, result)
		}()
	}
}

// mirrorSlot takes one of target's in-flight copy slots and registers the
// copy with the mesh, so Close waits for it. ok is false when target has
// maxMirrorsInFlight copies in flight already (the drop is counted) or
// the mesh is closing (closed).
func (x *xdsPath) mirrorSlot(ctx context.Context, target *service) (ok, closed bool) {
	if target.mirrors.Add(1) > maxMirrorsInFlight {
		target.mirrors.Add(-1)
		target.stats.Mirror(ctx, telemetry.MirrorDropped)
		return false, false
	}
	if !x.mirrors.start() {
		target.mirrors.Add(-1)
		return false, true
	}
	return true, false
}
