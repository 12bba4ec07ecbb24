package mesh

import (
	"context"
	"net"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/internal/inbound"
	"github.com/weftmesh/weft/internal/jwt"
	"github.com/weftmesh/weft/internal/xds"
	"github.com/weftmesh/weft/security"
)

// A gRPC server under xDS, on the mesh's own xDS client: it follows the
// inbound listener of each address it serves, through the same client
// (and the same ADS stream) as the mesh's HTTP clients, gRPC channels and
// HTTP servers. Per connection, the filter chain's transport socket sets
// the TLS mode (inboundTLSChooser); per call, the chain's inbound routes
// and RBAC filters decide (inbound.Decide, the function the HTTP servers
// call), judged on the method path exactly as grpc-go dispatches it.
//
// Serving states, as grpc-go's xDS server (gRFC A36): until the listener is
// known a connection is accepted but nothing is served on it; when the
// control plane says the listener does not exist the server serves with
// its local policy (WEFT_MTLS, WEFT_AUTHZ_POLICY), as the HTTP servers do.

// xdsGRPCServer is a grpc.Server whose Serve tags connections with the
// listener they came through, and whose Stop ends the handshakes waiting
// for a listener (grpc-go's Stop waits for handshakes in progress).
type xdsGRPCServer struct {
	*grpc.Server
	cancel context.CancelFunc
}

func (s *xdsGRPCServer) Serve(lis net.Listener) error {
	return s.Server.Serve(servedListener{Listener: lis, addr: lis.Addr().String()})
}

func (s *xdsGRPCServer) Stop() {
	s.cancel()
	s.Server.Stop()
}

func (s *xdsGRPCServer) GracefulStop() {
	s.cancel()
	s.Server.GracefulStop()
}

// newXDSGRPCServer makes a gRPC server following the inbound listener
// through the mesh's xDS client; authn are the interceptors verifying the
// policy file's tokens (run before the xDS decision), first the
// server's first interceptors (grpcServerFirst), base the mesh's other
// options but credentials, opts the caller's.
func (m *Mesh) newXDSGRPCServer(first, authn, base, opts []grpc.ServerOption) *xdsGRPCServer {
	ctx, cancel := context.WithCancel(m.ctx)
	var cfgs *chainTLS
	if tc := m.ServerTLSConfig(); tc != nil {
		cfgs = newChainTLS(tc.Clone())
	}
	creds := security.PerConnectionCredentials(ctx, m.inboundTLSChooser("", cfgs), security.WithLogger(m.log))
	all := append([]grpc.ServerOption{grpc.Creds(creds)}, first...)
	all = append(all, authn...)
	all = append(all, grpc.ChainUnaryInterceptor(m.xdsInboundUnary), grpc.ChainStreamInterceptor(m.xdsInboundStream))
	all = append(all, base...)
	return &xdsGRPCServer{Server: grpc.NewServer(append(all, opts...)...), cancel: cancel}
}

func (m *Mesh) xdsInboundUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	auth, err := m.grpcInboundDecision(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return handler(grpcWithAuth(ctx, auth), req)
}

func (m *Mesh) xdsInboundStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	auth, err := m.grpcInboundDecision(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	if ctx := grpcWithAuth(ss.Context(), auth); ctx != ss.Context() {
		ss = ctxStream{ServerStream: ss, ctx: ctx}
	}
	return handler(srv, ss)
}

// grpcWithAuth is withAuth for a call: the verified tokens in the context,
// and the metadata without the headers of tokens not forwarded.
func grpcWithAuth(ctx context.Context, auth *jwt.Result) context.Context {
	if prev, _ := jwt.FromContext(ctx); prev == auth {
		return ctx
	}
	ctx = jwt.NewContext(ctx, auth)
	if auth == nil || len(auth.Headers) == 0 {
		return ctx
	}
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return ctx
	}
	md = md.Copy()
	for _, h := range auth.Headers {
		delete(md, strings.ToLower(h))
	}
	return metadata.NewIncomingContext(ctx, md)
}

// grpcInboundDecision is the gRPC adapter of inbound.Decide; nil admits
// the call. Its codes are grpc-go's xDS server's: UNAVAILABLE when no
// route, or a route without the non-forwarding action, matches ("a route
// with an inappropriate action causes RPCs matching that route to fail
// with UNAVAILABLE", gRFC A36; grpc-go answers a missing route the same
// way), PERMISSION_DENIED when RBAC denies (gRFC A41), and UNAUTHENTICATED
// for a token the jwt_authn filter refuses (Envoy's 401, mapped as gRPC
// maps HTTP 401). auth are the tokens verified, for the handler.
func (m *Mesh) grpcInboundDecision(ctx context.Context, fullMethod string) (auth *jwt.Result, err error) {
	auth, _ = jwt.FromContext(ctx)
	err = m.grpcInboundDecide(ctx, fullMethod, &auth)
	return auth, err
}

func (m *Mesh) grpcInboundDecide(ctx context.Context, fullMethod string, auth **jwt.Result) error {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return status.Error(codes.Internal, "no peer for the call")
	}
	sa, ok := p.LocalAddr.(servedAddr)
	if !ok {
		return status.Error(codes.Unavailable, "inbound listener unknown")
	}
	l := m.inbound.listener(sa.listener)
	if l == nil {
		return status.Error(codes.Unavailable, "server closing")
	}
	select {
	case <-l.ready:
	case <-ctx.Done():
		return status.Error(codes.Unavailable, "inbound configuration pending")
	}
	st := l.state.Load()
	switch {
	case st.err != nil:
		m.limited.DebugContext(ctx, "weft: inbound call refused", "listener", l.name, "code", codes.Unavailable, "error", st.err)
		return status.Error(codes.Unavailable, "inbound configuration unavailable")
	case !st.exists:
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	ti, isTLS := p.AuthInfo.(credentials.TLSInfo)
	req, authority := xds.RequestFromGRPC(fullMethod, md, isTLS)
	in := inbound.Request{Conn: xds.ConnInfo{Local: addrPortOf(p.LocalAddr), Remote: addrPortOf(p.Addr), TLS: isTLS}, Host: authority, Req: &req,
		Ctx: ctx, Authenticators: st.auth, Auth: *auth}
	if isTLS {
		in.ServerName = ti.State.ServerName
		if len(ti.State.PeerCertificates) > 0 {
			in.PeerCert = ti.State.PeerCertificates[0]
		}
	}
	d := inbound.Decide(st.listener, st.routes, &in, func(allowed bool, policy string) {
		m.metrics.AuthzDecision(ctx, allowed, policy)
		m.recordXDSDecision(ctx, "grpc", allowed, policy, "POST", fullMethod, in.Conn.Remote)
		m.tapAuthz(ctx, allowed, policy)
	})
	var msg string
	switch d.Outcome {
	case inbound.Allowed:
		*auth = d.Auth
		return nil
	case inbound.Unauthenticated:
		m.log.InfoContext(ctx, "weft: call refused by xDS jwt_authn", "listener", l.name, "error", d.Err, "method", fullMethod,
			"source_ip", in.Conn.Remote.Addr().String())
		return status.Error(codes.Unauthenticated, "Jwt verification fails")
	case inbound.Denied:
		src, _ := security.PeerID(ctx)
		m.limited.InfoContext(ctx, "weft: call denied by xDS RBAC", "listener", l.name, "filter", d.Filter.FilterName, "action", d.Filter.Action.String(),
			"policy", d.Policy, "method", fullMethod, "source_id", src.String(), "source_ip", in.Conn.Remote.Addr().String())
		return status.Error(codes.PermissionDenied, "RBAC: access denied")
	case inbound.NoFilterChain:
		msg = "no inbound filter chain for this connection"
	case inbound.TransportMismatch:
		// Accepted under an earlier configuration, the connection would
		// be refused today: close it, so the client's next connection
		// meets the current filter chain (grpc-go's xDS server drains
		// such connections too).
		msg = "the inbound filter chain requires another transport for this connection"
		sa.conn.Close()
	case inbound.RoutesPending:
		msg = "inbound routes pending"
	case inbound.NoRoute:
		msg = "the incoming RPC did not match a configured Route"
	case inbound.NotNonForwarding:
		msg = "the incoming RPC matched to a route that was not of action type non forwarding"
	}
	m.limited.DebugContext(ctx, "weft: inbound call refused", "listener", l.name, "code", codes.Unavailable, "reason", msg, "method", fullMethod)
	return status.Error(codes.Unavailable, msg)
}
