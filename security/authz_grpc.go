package security

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/internal/jwt"
)

// errPermissionDenied carries no detail: the reason and policy are logged.
var errPermissionDenied = status.Error(codes.PermissionDenied, "permission denied")

// UnaryServerInterceptor returns a gRPC interceptor that evaluates every
// unary call with e and fails denied calls with PERMISSION_DENIED. When e
// is a [RequestAuthenticator] and no [AuthenticationUnaryInterceptor] ran
// before, it first validates the call's tokens (UNAUTHENTICATED for an
// invalid one). The
// request's method is "POST", its path the full method
// ("/pkg.Service/Method"), its headers the incoming metadata and its host
// the :authority; the caller's ID is [PeerID]. Denied and audited calls are
// logged at Info level ([WithLogger]). Safe for concurrent use.
func UnaryServerInterceptor(e PolicyEvaluator, opts ...Option) grpc.UnaryServerInterceptor {
	logger := newOptions(opts).logger
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := authnFirst(ctx, e, logger, info.FullMethod)
		if err != nil {
			return nil, err
		}
		if err := authorizeGRPC(ctx, e, logger, info.FullMethod); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor is [UnaryServerInterceptor] for streaming calls;
// the decision is made once, before the handler runs.
func StreamServerInterceptor(e PolicyEvaluator, opts ...Option) grpc.StreamServerInterceptor {
	logger := newOptions(opts).logger
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := authnFirst(ss.Context(), e, logger, info.FullMethod)
		if err != nil {
			return err
		}
		if err := authorizeGRPC(ctx, e, logger, info.FullMethod); err != nil {
			return err
		}
		if ctx != ss.Context() {
			ss = &ctxServerStream{ServerStream: ss, ctx: ctx}
		}
		return handler(srv, ss)
	}
}

func authorizeGRPC(ctx context.Context, e PolicyEvaluator, logger *slog.Logger, fullMethod string) error {
	req := grpcRequest(ctx, fullMethod)
	req.auth, _ = jwt.FromContext(ctx) // verified before (authnFirst, or another interceptor)
	d := e.Evaluate(&req)
	logDecision(ctx, logger, &req, d)
	if !d.Allow {
		return errPermissionDenied
	}
	return nil
}

// authnFirst validates the call's tokens when e holds RequestAuthentications
// and no interceptor did before, returning the context the handler gets.
func authnFirst(ctx context.Context, e PolicyEvaluator, logger *slog.Logger, fullMethod string) (context.Context, error) {
	if _, ok := jwt.FromContext(ctx); ok {
		return ctx, nil
	}
	if a, ok := e.(RequestAuthenticator); ok {
		return authenticateGRPC(ctx, a, logger, fullMethod)
	}
	return ctx, nil
}

// grpcRequest is what authorization reads of a call.
func grpcRequest(ctx context.Context, fullMethod string) Request {
	req := Request{Method: http.MethodPost, Path: fullMethod}
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		req.Headers = make(http.Header, len(md))
		for k, vs := range md {
			if strings.HasPrefix(k, ":") {
				if k == ":authority" && len(vs) > 0 {
					req.Host = vs[0]
				}
				continue
			}
			req.Headers[http.CanonicalHeaderKey(k)] = vs
		}
	}
	if p, ok := peer.FromContext(ctx); ok {
		if p.Addr != nil {
			if ap, err := netip.ParseAddrPort(p.Addr.String()); err == nil {
				req.SourceIP = ap.Addr()
			}
		}
		req.Port = addrPort(p.LocalAddr)
	}
	if id, ok := PeerID(ctx); ok {
		req.SourceID = id
	}
	return req
}

// logDecision logs denied and audited requests.
func logDecision(ctx context.Context, logger *slog.Logger, r *Request, d Decision) {
	if d.Allow && !d.Audit {
		return
	}
	attrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.String("path", r.Path),
		slog.String("source_id", r.SourceID.String()),
		slog.String("source_ip", r.SourceIP.String()),
		slog.String("reason", d.Reason),
		slog.String("policy", d.Policy),
	}
	if d.Audit {
		logger.LogAttrs(ctx, slog.LevelInfo, "security: request audited", append(attrs, slog.String("audit_policy", d.AuditPolicy), slog.Bool("allowed", d.Allow))...)
	}
	if !d.Allow {
		logger.LogAttrs(ctx, slog.LevelInfo, "security: request denied", attrs...)
	}
}
