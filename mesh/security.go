package mesh

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weftmesh/weft/internal/xds"
	"github.com/weftmesh/weft/security"
)

// spiffeWait bounds how long New waits for the Workload API's first SVID:
// an agent that is down must fail New with a clear error, not hang it.
const spiffeWait = 15 * time.Second

// identity is the service's SPIFFE identity and the TLS configs made from
// it. A nil *identity means mTLS is off.
type identity struct {
	src    security.Source
	owned  bool // the mesh opened src and closes it
	td     spiffeid.TrustDomain
	mode   security.MTLSMode
	client *tls.Config
	server *tls.Config
}

// setupIdentity opens the identity source the configuration names and
// decides the mTLS mode. Errors name the variable or option at fault.
func setupIdentity(ctx context.Context, cfg *config) (*identity, error) {
	id := &identity{src: cfg.source}
	switch {
	case cfg.source != nil:
	case cfg.svidCertFile != "" || cfg.svidKeyFile != "" || cfg.bundleFile != "":
		for _, v := range []struct{ name, value string }{
			{EnvSVIDCertFile, cfg.svidCertFile}, {EnvSVIDKeyFile, cfg.svidKeyFile}, {EnvBundleFile, cfg.bundleFile},
		} {
			if v.value == "" {
				return nil, &EnvError{Var: v.name, Value: "",
					Err: fmt.Errorf("%s, %s and %s must be set together", EnvSVIDCertFile, EnvSVIDKeyFile, EnvBundleFile)}
			}
		}
		src, err := security.NewFileSource(cfg.svidCertFile, cfg.svidKeyFile, cfg.bundleFile, security.WithLogger(cfg.logger))
		if err != nil {
			// Name the variable whose file could not be read, when it
			// is one of the other two.
			name, value := EnvSVIDCertFile, cfg.svidCertFile
			var pe *fs.PathError
			if errors.As(err, &pe) {
				switch pe.Path {
				case cfg.svidCertFile:
				case cfg.svidKeyFile:
					name, value = EnvSVIDKeyFile, cfg.svidKeyFile
				case cfg.bundleFile:
					name, value = EnvBundleFile, cfg.bundleFile
				}
			}
			return nil, &EnvError{Var: name, Value: value, Err: err}
		}
		id.src, id.owned = src, true
	case cfg.spiffeSocket != "" && cfg.mtls != security.MTLSDisable:
		wctx, cancel := context.WithTimeout(ctx, spiffeWait)
		defer cancel()
		src, err := security.NewWorkloadAPISource(wctx, cfg.spiffeSocket)
		if err != nil {
			return nil, &EnvError{Var: EnvSPIFFESocket, Value: cfg.spiffeSocket, Err: err}
		}
		id.src, id.owned = src, true
	}

	mode := cfg.mtls
	if id.src == nil {
		if mode == security.MTLSStrict || mode == security.MTLSPermissive {
			return nil, &EnvError{Var: EnvMTLS, Value: mode.String(),
				Err: fmt.Errorf("mTLS needs an identity: set %s (or the SVID files), or use WithX509Source", EnvSPIFFESocket)}
		}
		return nil, nil
	}
	if mode == security.MTLSDisable {
		id.close()
		return nil, nil
	}
	if mode == security.MTLSAuto {
		mode = security.MTLSStrict
	}
	svid, err := id.src.GetX509SVID()
	if err != nil {
		id.close()
		return nil, fmt.Errorf("mesh: reading this service's SVID: %w", err)
	}
	// An identity that is already expired, or that no bundle of its own
	// trust domain verifies, would only fail every handshake later.
	if err := security.CheckIdentity(id.src, time.Now()); err != nil {
		id.close()
		return nil, identitySourceError(cfg, err)
	}
	id.mode, id.td = mode, svid.ID.TrustDomain()
	// Inside the mesh, a peer is trusted by trust domain membership; finer
	// rules (which callers may do what) are authorization's job.
	authz := security.AuthorizeMemberOf(id.td)
	id.client = security.ClientTLSConfig(id.src, authz)
	id.server = security.ServerTLSConfig(id.src, authz)
	id.server.NextProtos = []string{"h2", "http/1.1"}
	return id, nil
}

// identitySourceError names the variable or option that supplied a bad
// identity: the SVID files (the certificate for an expired SVID, the
// bundle for a bundle that does not verify it), the Workload API socket,
// or WithX509Source.
func identitySourceError(cfg *config, err error) error {
	switch {
	case cfg.source != nil:
		return fmt.Errorf("mesh: WithX509Source: %w", err)
	case cfg.svidCertFile != "":
		if errors.Is(err, security.ErrNoOwnBundle) {
			return &EnvError{Var: EnvBundleFile, Value: cfg.bundleFile, Err: err}
		}
		return &EnvError{Var: EnvSVIDCertFile, Value: cfg.svidCertFile, Err: err}
	}
	return &EnvError{Var: EnvSPIFFESocket, Value: cfg.spiffeSocket, Err: fmt.Errorf("from the Workload API: %w", err)}
}

// identityErr says why the mesh's own identity is unusable now, or nil: a
// rotation that stopped leaves an expired SVID, an agent may drop the
// bundle of the service's own trust domain. /readyz reports it.
func (m *Mesh) identityErr() error {
	if m.id == nil {
		return nil
	}
	return security.CheckIdentity(m.id.src, time.Now())
}

func (id *identity) close() {
	if id != nil && id.owned && id.src != nil {
		id.src.Close()
	}
}

// meshTransport returns the transport that carries requests to mesh
// endpoints, given the one that carries everything else: a copy of base
// set to the mesh's protocol (WithHTTP2) and, with mTLS on, presenting this
// service's SVID and verifying the peer's, so external HTTPS hosts never
// meet SPIFFE verification and external hosts keep net/http's protocols.
func (m *Mesh) meshTransport(base http.RoundTripper) http.RoundTripper {
	t, ok := base.(*http.Transport)
	switch {
	case m.id == nil && !m.http2:
		return base
	case m.id == nil && !ok:
		return base // a caller's own round tripper speaks what it speaks
	case !ok:
		return errRoundTripper{errors.New("weft: with mTLS on, Transport's base must be nil or an *http.Transport, so the mesh can secure its copy")}
	}
	return endpointTransport(t, m.meshTLS(), m.meshProto())
}

// meshTLS is the TLS config of the mesh's own transport to endpoints, nil
// in the clear.
func (m *Mesh) meshTLS() *tls.Config {
	if m.id == nil {
		return nil
	}
	return m.id.client
}

// httpProto is the HTTP protocol of a transport to mesh endpoints.
type httpProto uint8

const (
	protoHTTP1 httpProto = iota
	protoHTTP2
	// protoAuto lets ALPN choose over TLS, offering h2 and http/1.1; in
	// the clear, where nothing negotiates, it is HTTP/1.1, as Envoy's
	// auto_config is.
	protoAuto
)

// meshProto is the mesh's own protocol to its endpoints (WithHTTP2).
func (m *Mesh) meshProto() httpProto {
	if m.http2 {
		return protoHTTP2
	}
	return protoHTTP1
}

// clusterProto is the protocol an xDS cluster's HTTP requests take: its
// CDS resource's upstream protocol, or the mesh's own when the cluster
// leaves it open (unset, HTTP/3, or the downstream protocol, which a
// caller's own request does not have).
func (m *Mesh) clusterProto(c *xds.Cluster) httpProto {
	switch c.Protocol {
	case xds.ProtocolHTTP1:
		return protoHTTP1
	case xds.ProtocolHTTP2:
		return protoHTTP2
	case xds.ProtocolAuto:
		return protoAuto
	}
	return m.meshProto()
}

// endpointTransport is a copy of base for mesh endpoints speaking p: in
// the clear HTTP/1.1, or h2c with prior knowledge for HTTP/2; with tc,
// over TLS with ALPN offering only p's protocols, so a server offering
// both cannot pick another.
func endpointTransport(base *http.Transport, tc *tls.Config, p httpProto) *http.Transport {
	t := base.Clone()
	var ps http.Protocols
	switch {
	case tc == nil && p == protoHTTP2:
		ps.SetUnencryptedHTTP2(true)
	case tc == nil:
		ps.SetHTTP1(true)
	default:
		tc = tc.Clone()
		switch p {
		case protoHTTP2:
			ps.SetHTTP2(true)
			tc.NextProtos = []string{"h2"}
		case protoAuto:
			ps.SetHTTP2(true)
			ps.SetHTTP1(true)
			tc.NextProtos = []string{"h2", "http/1.1"}
		default:
			ps.SetHTTP1(true)
			tc.NextProtos = []string{"http/1.1"}
		}
		t.TLSClientConfig = tc
	}
	t.Protocols = &ps
	t.ForceAttemptHTTP2 = false
	return t
}

// clusterCopy is a caller's base made over for one cluster, and the
// cluster state it was built from (an *upstreamTLS or a *protoTransport).
type clusterCopy struct {
	from any
	rt   *http.Transport
}

// clusterTransport returns the transport for an attempt to a cluster whose
// CDS resource asks for upstream TLS. Its SAN matchers (the server
// identities it allows) must hold on every path: on the default path the
// cluster's own transport carries them; a caller's base gets a copy secured
// with the same config, kept per service and rebuilt when the cluster's
// TLS changes. Without that copy a caller's transport checked only trust
// domain membership.
func (t *transport) clusterTransport(svc *service, up *upstreamTLS) http.RoundTripper {
	if t.defaultBase {
		return up.rt
	}
	return t.callerCopy(svc, up, up.rt.TLSClientConfig, up.proto)
}

// protoTransport is the transport of an xDS cluster without upstream TLS
// of its own whose protocol is not the mesh's: a copy of the mesh's base,
// secured as the mesh's own transport is, speaking the cluster's protocol.
// It is built once per cluster update.
type protoTransport struct {
	proto httpProto
	rt    *http.Transport
}

// closeIdle closes the idle connections of p's transport; p may be nil.
func (p *protoTransport) closeIdle() {
	if p != nil {
		p.rt.CloseIdleConnections()
	}
}

// protoClusterTransport returns the transport for an attempt to such a
// cluster: its own on the default path; a caller's base gets a copy
// speaking the cluster's protocol, kept per service as a TLS cluster's is.
// A caller's round tripper that is not an *http.Transport speaks what it
// speaks.
func (t *transport) protoClusterTransport(svc *service, pt *protoTransport) http.RoundTripper {
	if t.defaultBase {
		return pt.rt
	}
	return t.callerCopy(svc, pt, t.m.meshTLS(), pt.proto)
}

// callerCopy returns the copy of the caller's base for svc built from
// from, building it (and closing the previous copy's idle connections)
// when the cluster changed.
func (t *transport) callerCopy(svc *service, from any, tc *tls.Config, p httpProto) http.RoundTripper {
	base, ok := t.base.(*http.Transport)
	if !ok {
		return t.mesh // the caller's own round tripper, or an errRoundTripper saying why
	}
	t.clusterMu.Lock()
	defer t.clusterMu.Unlock()
	c, ok := t.clusterRTs[svc]
	if ok && c.from == from {
		return c.rt
	}
	if ok {
		c.rt.CloseIdleConnections()
	}
	if t.clusterRTs == nil {
		t.clusterRTs = map[*service]clusterCopy{}
	}
	// Copies for clusters the idle sweep has closed go now: a cluster used
	// again comes back as a new service, and a long-lived client would
	// otherwise keep a copy (and its idle connections) for every one it
	// ever called.
	for s, c := range t.clusterRTs {
		if s.closed.Load() {
			c.rt.CloseIdleConnections()
			delete(t.clusterRTs, s)
		}
	}
	rt := endpointTransport(base, tc, p)
	t.clusterRTs[svc] = clusterCopy{from: from, rt: rt}
	return rt
}

// plaintextToTLS is net/http's answer, over HTTP/1.0 with no header, to a
// plaintext HTTP/1 request on a TLS port.
const plaintextToTLS = "Client sent an HTTP request to an HTTPS server.\n"

// mtlsRefusal turns a strict mTLS server's refusal of this plaintext
// service into the connection failure it is: net/http's 400 to an HTTP/1
// request, or the GOAWAY INADEQUATE_SECURITY security.StrictListener
// sends an h2c one. A 400 is final to the retry layer, so during an mTLS
// rollout most requests to upgraded endpoints failed; a connect failure
// is retried on another endpoint and ejects this one.
func mtlsRefusal(addr string, resp *http.Response, err error) (*http.Response, error) {
	if err != nil {
		if strings.Contains(err.Error(), "INADEQUATE_SECURITY") {
			return nil, &mtlsRequiredError{addr: addr, cause: err}
		}
		return resp, err
	}
	if resp.StatusCode != http.StatusBadRequest || resp.ProtoMajor != 1 || resp.ProtoMinor != 0 || len(resp.Header) != 0 {
		return resp, nil
	}
	buf := make([]byte, len(plaintextToTLS)+1)
	n, _ := io.ReadFull(resp.Body, buf)
	if string(buf[:n]) == plaintextToTLS {
		resp.Body.Close()
		return nil, &mtlsRequiredError{addr: addr, cause: errors.New(`it answered 400 "` + strings.TrimSpace(plaintextToTLS) + `"`)}
	}
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(buf[:n]), resp.Body), resp.Body}
	return resp, nil
}

// mtlsRequiredError is a connection to an endpoint that requires mTLS,
// made in plaintext. It matches security.ErrMTLSRequired, and a dial
// *net.OpError so that retry policies and outlier detection count it as
// a connect failure.
type mtlsRequiredError struct {
	addr  string
	cause error
}

func (e *mtlsRequiredError) Error() string {
	return fmt.Sprintf("mesh: endpoint %s: %s, and this service sends plaintext (it has no SPIFFE identity, or %s=disable): %v",
		e.addr, security.MTLSRequired, EnvMTLS, e.cause)
}

func (e *mtlsRequiredError) Unwrap() []error {
	return []error{security.ErrMTLSRequired, &net.OpError{Op: "dial", Net: "tcp", Err: e.cause}}
}

type errRoundTripper struct{ err error }

func (e errRoundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	closeBody(req)
	return nil, e.err
}

// grpcClientCreds are the transport credentials of the mesh's gRPC clients.
func (m *Mesh) grpcClientCreds() credentials.TransportCredentials {
	if m.id == nil {
		// Plaintext, recognizing a strict server's refusal so that the
		// call's error says the server requires mTLS.
		return security.PlaintextCredentials()
	}
	return credentials.NewTLS(m.id.client)
}

// grpcServerCreds are the transport credentials of the mesh's gRPC servers.
func (m *Mesh) grpcServerCreds() credentials.TransportCredentials {
	switch {
	case m.id == nil:
		return insecure.NewCredentials()
	case m.id.mode == security.MTLSPermissive:
		return security.PermissiveCredentials(m.id.server)
	default:
		// Plaintext callers are told the server requires mTLS.
		return security.StrictCredentials(m.id.server)
	}
}

// secureListener wraps a listener for the mesh's mode: TLS only (strict),
// TLS or plaintext by the first byte (permissive), or as is (off).
func (m *Mesh) secureListener(ln net.Listener, cfg *tls.Config) net.Listener {
	switch {
	case m.id == nil:
		return ln
	case m.id.mode == security.MTLSPermissive:
		return security.PermissiveListener(ln, cfg)
	default:
		return security.StrictListener(ln, cfg)
	}
}

// authzServerOptions are the gRPC interceptors enforcing the authorization
// policy, if one is configured.
func (m *Mesh) authzServerOptions() []grpc.ServerOption {
	if m.authz == nil {
		return nil
	}
	e := countedPolicy{e: m.authz, m: m, protocol: "grpc"}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(m.tappedAuthzUnary(security.UnaryServerInterceptor(e, security.WithLogger(m.limited)))),
		grpc.ChainStreamInterceptor(m.tappedAuthzStream(security.StreamServerInterceptor(e, security.WithLogger(m.limited)))),
	}
}

// authnServerOptions are the gRPC interceptors validating the tokens of
// the policy file's RequestAuthentications; they run before the xDS
// inbound decision and the local policy, which both read the tokens.
func (m *Mesh) authnServerOptions() []grpc.ServerOption {
	if m.authz == nil {
		return nil
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(security.AuthenticationUnaryInterceptor(m.authz, security.WithLogger(m.log))),
		grpc.ChainStreamInterceptor(security.AuthenticationStreamInterceptor(m.authz, security.WithLogger(m.log))),
	}
}

// authorization is the HTTP middleware enforcing the policy.
func (m *Mesh) authorization(next http.Handler) http.Handler {
	return m.tappedAuthz(security.AuthorizationHandler(countedPolicy{e: m.authz, m: m, protocol: "http"}, next, security.WithLogger(m.limited)), next)
}

// countedPolicy records each authorization decision in the
// weft.authz.decisions metric, and for the admin page, on its way to the
// enforcing middleware.
type countedPolicy struct {
	e        security.PolicyEvaluator
	m        *Mesh
	protocol string // http or grpc
	// tap, when set, is the tapped request the decision is for.
	tap *tapCall
}

func (c countedPolicy) Evaluate(r *security.Request) security.Decision {
	d := c.e.Evaluate(r)
	c.m.metrics.AuthzDecision(context.Background(), d.Allow, d.Policy)
	c.m.recordDecision("policy", c.protocol, d.Allow, d.Policy, r)
	c.tap.authz(d.Allow, d.Policy)
	return d
}
