package mesh

import (
	"context"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/internal/stackroom"
	"github.com/weftmesh/weft/security"
	"github.com/weftmesh/weft/telemetry/admin"
)

// Golden metrics (the admin page's and /stats/golden's request rate,
// success rate and latency percentiles, as Linkerd's `viz stat` shows
// them) are recorded where each request's outcome is known:
//   - outbound HTTP in transport.RoundTrip, per service, or per xDS
//     cluster and route, once per logical request (retries included), to
//     the response's headers; a 5xx or an error is a failure;
//   - outbound gRPC by a client interceptor, per target and method; a
//     status other than OK and the application codes (InvalidArgument,
//     NotFound, AlreadyExists, FailedPrecondition, OutOfRange,
//     Unauthenticated, PermissionDenied... see grpcFailed) is a failure;
//   - inbound HTTP by a middleware outside authorization, so a denial
//     counts, per path and caller;
//   - inbound gRPC by the first interceptor, per method and caller.
// Keys are bounded (admin.DefaultMaxGoldenKeys): past the bound, traffic
// lands in one "(other)" series per direction.

// goldenOutbound records one outbound HTTP request.
func (m *Mesh) goldenOutbound(service, route string, start time.Time, resp *http.Response, err error) {
	if m.golden == nil {
		return
	}
	now := time.Now()
	ok := err == nil && resp != nil && resp.StatusCode < 500
	m.golden.Observe(admin.GoldenKey{Direction: admin.DirectionOutbound, Service: service, Route: route}, ok, now.Sub(start), now)
}

// goldenInbound is the inbound HTTP middleware recording golden metrics.
// It sits inside peerIdentity (the caller is known) and outside
// authorization (a denial is a request too).
func (m *Mesh) goldenInbound(next http.Handler) http.Handler {
	if m.golden == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		// The writer tap uses too: it keeps Hijacker for handlers that
		// assert it, and ignores interim 1xx statuses.
		rec := &statusWriter{ResponseWriter: w}
		defer func() {
			now := time.Now()
			caller := ""
			if id, ok := security.PeerID(r.Context()); ok {
				caller = id.String()
			}
			code := rec.status()
			m.golden.Observe(admin.GoldenKey{Direction: admin.DirectionInbound, Route: r.URL.Path, Caller: caller}, code < 500, now.Sub(start), now)
		}()
		next.ServeHTTP(rec, r)
	})
}

// grpcFailed is whether a call's code is a failure of the server rather
// than an answer about the request: Linkerd counts gRPC failures the
// same way, by the status a server would alert on.
func grpcFailed(c codes.Code) bool {
	switch c {
	case codes.Unknown, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted,
		codes.Unimplemented, codes.Internal, codes.Unavailable, codes.DataLoss:
		return true
	}
	return false
}

func (m *Mesh) observeGRPC(k admin.GoldenKey, start time.Time, err error) {
	now := time.Now()
	m.golden.Observe(k, !grpcFailed(status.Code(err)), now.Sub(start), now)
}

// grpcCaller is the caller of an inbound call, for its golden metrics:
// its SPIFFE ID, "" for a plaintext caller.
func grpcCaller(ctx context.Context) string {
	if id, ok := security.PeerID(ctx); ok {
		return id.String()
	}
	return ""
}

// goldenDialOptions are the interceptors recording outbound gRPC golden
// metrics for a channel to target, outermost: one observation per call,
// retries and hedges included.
func (m *Mesh) goldenDialOptions(target string) []grpc.DialOption {
	if m.golden == nil {
		return nil
	}
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			stackroom.Reserve8K() // the outermost interceptor (see internal/stackroom)
			start := time.Now()
			err := invoker(ctx, method, req, reply, cc, opts...)
			m.observeGRPC(admin.GoldenKey{Direction: admin.DirectionOutbound, Service: target, Route: method}, start, err)
			return err
		}),
		// A stream's outcome is known only when it ends, which the
		// caller decides; streams count at their start, as opened or not.
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			start := time.Now()
			cs, err := streamer(ctx, desc, cc, method, opts...)
			m.observeGRPC(admin.GoldenKey{Direction: admin.DirectionOutbound, Service: target, Route: method}, start, err)
			return cs, err
		}),
	}
}
