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
	var tc *tls.Config
	if m.id != nil {
		tc = m.id.client
	}
	return endpointTransport(t, tc, m.http2)
}

// endpointTransport is a copy of base for mesh endpoints: HTTP/2 or
// HTTP/1.1 alone, in the clear (h2c with prior knowledge for HTTP/2) or,
// with tc, over TLS with ALPN offering only that protocol, so a server
// offering both cannot pick the other.
func endpointTransport(base *http.Transport, tc *tls.Config, http2 bool) *http.Transport {
	t := base.Clone()
	var p http.Protocols
	switch {
	case tc == nil && http2:
		p.SetUnencryptedHTTP2(true)
	case tc == nil:
		p.SetHTTP1(true)
	default:
		tc = tc.Clone()
		if http2 {
			p.SetHTTP2(true)
			tc.NextProtos = []string{"h2"}
		} else {
			p.SetHTTP1(true)
			tc.NextProtos = []string{"http/1.1"}
		}
		t.TLSClientConfig = tc
	}
	t.Protocols = &p
	t.ForceAttemptHTTP2 = false
	return t
}

// clusterTLS is a caller's base secured for one TLS cluster, and the
// cluster TLS state it was built from.
type clusterTLS struct {
	up *upstreamTLS
	rt *http.Transport
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
	base, ok := t.base.(*http.Transport)
	if !ok {
		return t.mesh // an errRoundTripper saying why
	}
	t.clusterMu.Lock()
	defer t.clusterMu.Unlock()
	c, ok := t.clusterTLS[svc]
	if ok && c.up == up {
		return c.rt
	}
	if ok {
		c.rt.CloseIdleConnections()
	}
	if t.clusterTLS == nil {
		t.clusterTLS = map[*service]clusterTLS{}
	}
	rt := endpointTransport(base, up.rt.TLSClientConfig, up.rt.Protocols.HTTP2())
	t.clusterTLS[svc] = clusterTLS{up: up, rt: rt}
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
