package mesh

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/weftmesh/weft/internal/deadline"
	"github.com/weftmesh/weft/internal/stackroom"
	"github.com/weftmesh/weft/security"
)

// Handler wraps h with the mesh's inbound chain, outermost first:
//   - X-Forwarded-Client-Cert removed, whatever its spelling: only the
//     mesh's own TLS handshake says who the caller is, as Istio's sidecars
//     sanitize the header;
//   - the server span and metrics (OpenTelemetry; trace context taken from
//     the request);
//   - the request's line on the admin listener's /tap, while someone
//     follows it (outside authorization, so denials show with their rule);
//   - the caller's verified SPIFFE ID into the request context (see
//     security.PeerID);
//   - the caller's remaining time budget (TimeoutHeader) as the context
//     deadline;
//   - when the mesh authorizes requests (a policy or an xDS server
//     listener), the request's path normalized (security.NormalizeRequest:
//     400 for a path that cannot be), so that authorization judges the
//     path h will see;
//   - with a policy file holding RequestAuthentication documents, the
//     request's JSON Web Tokens validated (401 for an invalid one; see
//     security.RequestPrincipal);
//   - under xDS with a server_listener_resource_name_template, the
//     control plane's inbound listener for the server's address: its
//     filter chain, inbound routes, jwt_authn filter (401 for an invalid
//     token) and RBAC filters (403 when denied);
//   - the authorization policy (WEFT_AUTHZ_POLICY), answering 403 to a
//     denied request;
//   - then h.
//
// Handler leaves TLS to the server that runs it. For a port that browsers
// reach, run it with Serve and Public or PublicTLS rather than with a
// server of your own: under a server listener template Handler follows
// the control plane's inbound listener for the connection's address,
// which describes a mesh port.
func (m *Mesh) Handler(h http.Handler) http.Handler {
	return m.handler(h, false)
}

// handler is Handler; a public server's chain leaves out the control
// plane's inbound listener (see PublicTLS).
func (m *Mesh) handler(h http.Handler, public bool) http.Handler {
	for _, mw := range m.inboundChain(public) {
		h = mw(h)
	}
	return h
}

// inboundChain lists the server middleware innermost first, so Handler
// wraps them in order. The order is the mesh's decision, not the user's:
// identity must be known before anything that authorizes or records by it.
func (m *Mesh) inboundChain(public bool) []func(http.Handler) http.Handler {
	chain := []func(http.Handler) http.Handler{m.backendMetrics}
	xdsIn := m.inbound != nil && !public
	if m.authz != nil {
		chain = append(chain, m.authorization)
	}
	if xdsIn {
		chain = append(chain, m.xdsInbound)
	}
	if m.authz != nil {
		// RequestAuthentications of the policy file: tokens are verified
		// before either authorization engine judges request principals.
		chain = append(chain, m.requestAuthentication)
	}
	if m.authz != nil || xdsIn {
		chain = append(chain, m.normalizeRequest)
	}
	return append(chain, deadlineFromHeader, m.goldenInbound, peerIdentity, m.inboundRateLimit, m.tapServer, m.instrumentServer, stripForwardedClientCert)
}

// requestAuthentication validates the tokens of the policy file's
// RequestAuthentications.
func (m *Mesh) requestAuthentication(next http.Handler) http.Handler {
	return security.AuthenticationHandler(m.authz, next, security.WithLogger(m.limited))
}

// normalizeRequest hands the rest of the chain the request whose path both
// authorization engines judge and the handler receives.
func (m *Mesh) normalizeRequest(next http.Handler) http.Handler {
	return security.NormalizeRequest(next, security.WithLogger(m.limited))
}

// forwardedClientCert is the header Envoy uses to pass a client
// certificate's details to the application behind it.
const forwardedClientCert = "x-forwarded-client-cert"

// stripForwardedClientCert removes X-Forwarded-Client-Cert from inbound
// requests before any rule or handler reads headers. A Weft server has no
// proxy in front of it whose word it could trust: the header can only come
// from the caller, and a forged one must not pass a
// `when: request.headers[x-forwarded-client-cert]` rule or reach an
// application that reads it. net/http keys headers canonically; spellings
// with "_" for "-" are removed too, for applications that fold them.
//
// Being outermost, it also makes room on the stack for the chain: an
// HTTP/2 server runs every request on a fresh goroutine, whose stack would
// otherwise double deep inside the chain (see package internal/stackroom).
func stripForwardedClientCert(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		stackroom.Reserve4K()
		for k := range r.Header {
			if isForwardedClientCert(k) {
				r = withoutForwardedClientCert(r)
				break
			}
		}
		next.ServeHTTP(w, r)
	})
}

// withoutForwardedClientCert returns a shallow copy of r whose headers are
// a copy without X-Forwarded-Client-Cert: the server's request is not
// modified in place.
func withoutForwardedClientCert(r *http.Request) *http.Request {
	h := make(http.Header, len(r.Header))
	for k, v := range r.Header {
		if !isForwardedClientCert(k) {
			h[k] = v
		}
	}
	r = r.WithContext(r.Context())
	r.Header = h
	return r
}

// ctxStream is a server stream with another context.
type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s ctxStream) Context() context.Context { return s.ctx }

// withoutForwardedClientCertMD returns ctx, or a copy whose incoming
// metadata lack x-forwarded-client-cert in every spelling.
func withoutForwardedClientCertMD(ctx context.Context) context.Context {
	// Look before copying: FromIncomingContext copies every key and
	// value, some six allocations a call, for a header that is almost
	// never there. ValueFromIncomingContext reads the metadata in place
	// and ignores case; the spellings differ only by separators.
	found := false
	for _, k := range forwardedClientCertSpellings {
		if metadata.ValueFromIncomingContext(ctx, k) != nil {
			found = true
			break
		}
	}
	if !found {
		return ctx
	}
	md, _ := metadata.FromIncomingContext(ctx)
	clean := make(metadata.MD, len(md))
	for k, v := range md {
		if !isForwardedClientCert(k) {
			clean[k] = v
		}
	}
	return metadata.NewIncomingContext(ctx, clean)
}

// forwardedClientCertSpellings are x-forwarded-client-cert with each of
// its three separators a hyphen or an underscore: with case ignored, every
// spelling isForwardedClientCert accepts.
var forwardedClientCertSpellings = func() []string {
	var out []string
	for i := range 8 {
		b := []byte(forwardedClientCert)
		for bit, at := range []int{1, 11, 18} {
			if i&(1<<bit) != 0 {
				b[at] = '_'
			}
		}
		out = append(out, string(b))
	}
	return out
}()

func isForwardedClientCert(k string) bool {
	if len(k) != len(forwardedClientCert) {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case c == '_':
			c = '-'
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		if c != forwardedClientCert[i] {
			return false
		}
	}
	return true
}

// maxTimeoutHeaderMS is the largest TimeoutHeader value that fits a
// time.Duration (about 292 years); a larger one is clamped to it rather
// than wrapping around to a deadline already past.
const maxTimeoutHeaderMS = math.MaxInt64 / int64(time.Millisecond)

// deadlineFromHeader bounds the request's context by the caller's
// remaining budget (TimeoutHeader). It can only shorten a deadline: a
// caller cannot buy more time than the server gives.
func deadlineFromHeader(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v := r.Header.Get(TimeoutHeader); v != "" {
			if ms, err := strconv.ParseInt(v, 10, 64); (err == nil || errors.Is(err, strconv.ErrRange)) && ms > 0 {
				ms = min(ms, maxTimeoutHeaderMS)
				// Most handlers never wait on their context: its timer
				// starts only when one does. The context and the request
				// carrying it are one allocation.
				b := new(budgetRequest)
				b.ctx.Init(r.Context(), time.Now().Add(time.Duration(ms)*time.Millisecond))
				defer b.ctx.Release()
				b.req = *r.WithContext(&b.ctx)
				r = &b.req
			}
		}
		next.ServeHTTP(w, r)
	})
}

// budgetRequest is the request a handler sees under its caller's budget,
// with the context that bounds it.
type budgetRequest struct {
	req http.Request
	ctx deadline.Context
}

// peerIdentity puts the TLS peer's SPIFFE ID into the request context.
// Plaintext requests pass through untouched, at no cost.
func peerIdentity(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Under Serve the connection's context answers (see
		// security.ConnContext); a server of the caller's own, serving
		// Handler, gets the identity on each request's context.
		if r.TLS != nil && !security.HasConnPeer(r.Context()) {
			if id, ok := security.PeerIDFromTLS(r.TLS); ok {
				r = r.WithContext(security.ContextWithPeerID(r.Context(), id))
			}
		}
		next.ServeHTTP(w, r)
	})
}

// ServerTLSConfig returns the TLS config servers of this service must use:
// mutual TLS from the service's SPIFFE identity. It is nil when mTLS is off,
// as it is when the service has no identity.
// In permissive mode the same config serves the TLS side of each port.
// Callers must not modify it.
func (m *Mesh) ServerTLSConfig() *tls.Config {
	if m.id == nil {
		return nil
	}
	return m.id.server
}

// ListenAndServe serves h, wrapped by Handler, on addr until ctx ends or
// the mesh is closed; then it stops accepting, waits for requests in flight
// up to the shutdown timeout, and returns nil. Plaintext listeners accept
// HTTP/1.1 and cleartext HTTP/2 (h2c) alike. For a public server beside
// the mesh's (an edge service's browser port), open the listener and call
// Serve with Public or PublicTLS.
func (m *Mesh) ListenAndServe(ctx context.Context, addr string, h http.Handler) error {
	ln, err := listen(addr)
	if err != nil {
		return err
	}
	return m.Serve(ctx, ln, h)
}

// Serve is ListenAndServe on a listener the caller opened (one on port 0,
// a unix socket, an inherited descriptor). Serve closes ln.
//
// opts configure this server alone: with Public or PublicTLS it serves
// browsers and other callers without a client certificate, while the
// mesh's other servers keep mTLS (the edge pattern; see PublicTLS).
// Serve fails at once, closing ln, when an option does.
func (m *Mesh) Serve(ctx context.Context, ln net.Listener, h http.Handler, opts ...ServerOption) error {
	sc, err := m.newServerConfig(opts)
	if err != nil {
		ln.Close()
		return err
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler:           m.handler(h, sc.public),
		ReadHeaderTimeout: 10 * time.Second, // bounds a slowloris; bodies are the handler's business
		Protocols:         &protocols,
		ErrorLog:          slog.NewLogLogger(m.log.Handler(), slog.LevelWarn),
		BaseContext:       withServerAddr(ln),
		ConnContext:       security.ConnContext,
	}
	switch tc := m.ServerTLSConfig(); {
	case sc.public:
		m.logPublic(sc, "http", ln.Addr().String())
		if ptc := sc.tlsConfig(); ptc != nil {
			// Browsers negotiate HTTP/2 by ALPN.
			protocols.SetHTTP2(true)
			srv.TLSConfig = ptc
			ln = tls.NewListener(ln, ptc)
		}
	case tc != nil:
		// A copy per server: net/http's HTTP/2 set-up writes to the config,
		// and several servers of one mesh must not share those writes.
		tc = tc.Clone()
		srv.TLSConfig = tc
		if m.inbound == nil {
			ln = m.secureListener(ln, tc)
		}
	}
	if m.inbound != nil && !sc.public {
		// The inbound listener's filter chains choose TLS per connection.
		ln = security.PerConnectionListener(ln, m.inboundTLSChooser(ln.Addr().String(), newChainTLS(srv.TLSConfig)), security.WithLogger(m.log))
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		ln.Close()
		return errClosed
	}
	m.wg.Add(1)
	m.mu.Unlock()
	defer m.wg.Done()

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	case <-m.ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), m.cfg.shutdownTimeout)
	defer cancel()
	err = srv.Shutdown(sctx)
	if err != nil {
		srv.Close() // the timeout passed: cut the stragglers
	}
	<-errc
	return err
}

// GRPCServer is a gRPC server made by the mesh: it registers services like
// *grpc.Server and serves, stops and drains like it.
type GRPCServer interface {
	grpc.ServiceRegistrar
	Serve(net.Listener) error
	GracefulStop()
	Stop()
}

// NewGRPCServer returns a gRPC server with the mesh's credentials and
// interceptors; opts are applied after them. When the xDS bootstrap names a
// server_listener_resource_name_template, the server follows the control
// plane's inbound listener for each address it serves, through the mesh's
// one xDS client: the filter chain's transport socket sets each
// connection's TLS mode (PeerAuthentication), its inbound routes and RBAC
// filters judge each call by its method path. With WithGRPCGoXDS the
// server is grpc-go's xDS server instead, at the
// cost of a second ADS stream per server, which istio-agent, keeping one
// stream per workload, answers by closing the mesh's other stream.
//
// Among opts, Public or PublicTLS make this server public (see PublicTLS):
// it then serves its own transport, not the mesh's credentials, and does
// not follow the inbound listener, whatever the bootstrap and WithGRPCGoXDS
// say.
func (m *Mesh) NewGRPCServer(opts ...grpc.ServerOption) (GRPCServer, error) {
	mine, opts := splitServerOptions(opts)
	sc, err := m.newServerConfig(mine)
	if err != nil {
		return nil, err
	}
	// Tokens are verified (authn) before the xDS inbound decision and the
	// local policy (authz), which both read them.
	authn := m.authnServerOptions()
	after := append(m.authzServerOptions(), m.grpcServerResilience()...)
	after = append(after, m.grpcServerORCA()...)
	// Golden metrics first, so they see every call, denied ones too.
	tel, first := m.grpcServerFirst(len(opts) > 0 || (!sc.public && m.inbound != nil && m.cfg.grpcGoXDS != nil))
	base := append(append(tel, authn...), after...)
	var srv GRPCServer
	switch {
	case sc.public:
		m.logPublic(sc, "grpc", "")
		srv = grpc.NewServer(append(append([]grpc.ServerOption{grpc.Creds(sc.grpcCreds())}, append(first, base...)...), opts...)...)
	case m.inbound == nil:
		srv = grpc.NewServer(append(append([]grpc.ServerOption{grpc.Creds(m.grpcServerCreds())}, append(first, base...)...), opts...)...)
	case m.cfg.grpcGoXDS == nil:
		// Its first interceptor comes first, then authn, then the xDS decision.
		srv = m.newXDSGRPCServer(first, authn, append(tel, after...), opts)
	default:
		base = append([]grpc.ServerOption{grpc.Creds(m.grpcServerCreds())}, append(first, base...)...)
		s, err := m.cfg.grpcGoXDS.NewServer(m.cfg.bootstrap, append(base, opts...)...)
		if err != nil {
			return nil, fmt.Errorf("weft: NewGRPCServer: grpc-go's xDS server: %w", err)
		}
		srv = s
	}
	if err := m.registerORCAService(srv); err != nil {
		return nil, fmt.Errorf("weft: NewGRPCServer: ORCA service: %w", err)
	}
	return srv, nil
}
