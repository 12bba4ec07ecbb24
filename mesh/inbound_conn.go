package mesh

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync/atomic"

	"github.com/weftmesh/weft/internal/inbound"
	"github.com/weftmesh/weft/internal/xds"
	"github.com/weftmesh/weft/security"
)

// The TLS mode per connection under xDS. When the bootstrap names a
// server_listener_resource_name_template, every connection a mesh server
// accepts is peeked (its first byte says TLS or plaintext, as for
// WEFT_MTLS=permissive), matched to a filter chain of the inbound listener
// with its real addresses and transport protocol, and then served the way
// that chain's transport socket says: mutual TLS with the mesh's SPIFFE
// identity (the client certificate required, verified if presented, or not
// asked for) or plaintext. No matching chain closes the connection, as
// Envoy does. This is how istiod's PeerAuthentication STRICT, PERMISSIVE
// and DISABLE, per port too, reach a proxyless server. Until the listener
// is known a connection waits, nothing written to it; when the control
// plane says there is no listener, or has never answered, WEFT_MTLS
// decides as it does without a control plane.

// chainTLS are the server TLS configs of the chain modes, made once per
// server from the mesh's SPIFFE server config; nil without an identity.
type chainTLS struct {
	mtls       *tls.Config // client certificate required and verified
	optional   *tls.Config // verified when presented
	serverOnly *tls.Config // none asked for
}

func newChainTLS(base *tls.Config) *chainTLS {
	if base == nil {
		return nil
	}
	c := &chainTLS{mtls: base.Clone(), optional: base.Clone(), serverOnly: base.Clone()}
	c.optional.ClientAuth = tls.RequestClientCert
	verify := base.VerifyConnection
	c.optional.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return nil
		}
		return verify(cs)
	}
	c.serverOnly.ClientAuth = tls.NoClientCert
	c.serverOnly.VerifyConnection = nil
	return c
}

func (c *chainTLS) config(t *xds.DownstreamTLS) *tls.Config {
	switch {
	case t.RequireClientCert:
		return c.mtls
	case t.VerifyClient:
		return c.optional
	default:
		return c.serverOnly
	}
}

// errNoIdentity refuses a connection whose filter chain requires TLS on a
// mesh without an identity: serving it plaintext would quietly undo the
// control plane's PeerAuthentication.
var errNoIdentity = errors.New("mesh: the inbound filter chain requires TLS and this service has no SPIFFE identity")

// errPlaintextOnTLSChain refuses a plaintext connection whose chain
// requires TLS without writing to it.
var errPlaintextOnTLSChain = errors.New("mesh: plaintext connection on an inbound filter chain that requires TLS")

// localTLSChoice is what WEFT_MTLS alone decides for a connection: TLS
// only (strict), TLS or plaintext by the first byte (permissive), or
// plaintext (no identity).
func (m *Mesh) localTLSChoice(cfgs *chainTLS, isTLS bool) *tls.Config {
	switch {
	case cfgs == nil:
		return nil
	case m.id.mode == security.MTLSPermissive && !isTLS:
		return nil
	default:
		return cfgs.mtls
	}
}

// inboundTLSChooser returns the per-connection TLS choice of a server. addr
// is the listening address naming the inbound listener; "" reads it from
// the connection (gRPC, whose server may serve several listeners).
func (m *Mesh) inboundTLSChooser(addr string, cfgs *chainTLS) security.TLSChooser {
	var warned atomic.Bool
	return func(ctx context.Context, c net.Conn, isTLS bool) (*tls.Config, error) {
		a := addr
		if a == "" {
			sa, ok := c.LocalAddr().(servedAddr)
			if !ok {
				return m.localTLSChoice(cfgs, isTLS), nil
			}
			a = sa.listener
		}
		l := m.inbound.listener(a)
		if l == nil {
			return nil, errClosed
		}
		select {
		case <-l.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-m.ctx.Done():
			return nil, errClosed
		}
		st := l.state.Load()
		if st.err != nil || !st.exists {
			return m.localTLSChoice(cfgs, isTLS), nil
		}
		fc, err := inbound.Chain(st.listener, xds.ConnInfo{Local: addrPortOf(c.LocalAddr()), Remote: addrPortOf(c.RemoteAddr()), TLS: isTLS})
		switch {
		case err != nil:
			return nil, err
		case fc.TLS == nil:
			return nil, nil
		case cfgs == nil:
			if !warned.Swap(true) {
				m.log.Warn("weft: refusing connections to an inbound filter chain that requires TLS: this service has no identity",
					"listener", l.name, "chain", fc.Name, "tls", fc.TLS.String())
			}
			return nil, errNoIdentity
		case !isTLS:
			return nil, fmt.Errorf("%w (listener %q, chain %q)", errPlaintextOnTLSChain, l.name, fc.Name)
		}
		return cfgs.config(fc.TLS), nil
	}
}

// servedListener tags the connections it accepts with the address of the
// listener they came through (see servedAddr): a gRPC server may serve
// several listeners, and each names its own inbound listener.
type servedListener struct {
	net.Listener
	addr string
}

func (l servedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return servedConn{Conn: c, local: servedAddr{Addr: c.LocalAddr(), listener: l.addr, conn: c}}, nil
}

type servedConn struct {
	net.Conn
	local servedAddr
}

func (c servedConn) LocalAddr() net.Addr { return c.local }

// servedAddr is a connection's local address carrying the address of the
// listener that accepted it: the TLS choice reads it from the raw
// connection, the interceptors from the RPC's peer.LocalAddr.
type servedAddr struct {
	net.Addr
	listener string
	// conn is the raw connection, which a call's refusal closes when the
	// connection itself is no longer acceptable (inbound.TransportMismatch).
	conn net.Conn
}
