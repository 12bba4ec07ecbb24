package security

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// MTLSMode says whether a service's connections use mutual TLS.
type MTLSMode uint8

const (
	// MTLSAuto is the zero value: strict when the service has an identity,
	// disabled otherwise.
	MTLSAuto MTLSMode = iota
	// MTLSStrict: every connection is mutual TLS; plaintext is refused.
	MTLSStrict
	// MTLSPermissive: servers accept mutual TLS and plaintext on one port,
	// for migrating a fleet; clients still send mutual TLS.
	MTLSPermissive
	// MTLSDisable: plaintext, even with an identity.
	MTLSDisable
)

// String returns the mode's WEFT_MTLS spelling.
func (m MTLSMode) String() string {
	switch m {
	case MTLSStrict:
		return "strict"
	case MTLSPermissive:
		return "permissive"
	case MTLSDisable:
		return "disable"
	default:
		return "auto"
	}
}

// ParseMTLSMode parses a WEFT_MTLS value: strict, permissive or disable
// (case-insensitive); "" is MTLSAuto.
func ParseMTLSMode(s string) (MTLSMode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "":
		return MTLSAuto, nil
	case "strict":
		return MTLSStrict, nil
	case "permissive":
		return MTLSPermissive, nil
	case "disable", "disabled", "off":
		return MTLSDisable, nil
	}
	return MTLSAuto, fmt.Errorf("security: unknown mTLS mode %q (want strict, permissive or disable)", s)
}

type peerIDKey struct{}

// ConnContext is an http.Server's ConnContext that makes PeerID answer
// for every request of a TLS connection from the connection's handshake,
// read once, rather than from a value each request's context must carry:
// a connection has one peer, and parsing its certificate and copying the
// request for every request of a keep-alive or HTTP/2 connection is waste.
// Connections that are not TLS are left as they are.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	tc, ok := c.(tlsConn)
	if !ok {
		return ctx
	}
	return context.WithValue(ctx, peerIDKey{}, &connPeer{conn: tc})
}

// HasConnPeer reports whether ctx is a connection's from ConnContext, whose
// requests PeerID answers for without ContextWithPeerID.
func HasConnPeer(ctx context.Context) bool {
	_, ok := ctx.Value(peerIDKey{}).(*connPeer)
	return ok
}

type tlsConn interface {
	ConnectionState() tls.ConnectionState
}

// connPeer is a TLS connection's peer identity, read from its handshake
// when first asked for after the handshake completed.
type connPeer struct {
	conn     tlsConn
	resolved atomic.Pointer[resolvedPeer]
}

type resolvedPeer struct {
	id spiffeid.ID
	ok bool
}

func (p *connPeer) id() (spiffeid.ID, bool) {
	if r := p.resolved.Load(); r != nil {
		return r.id, r.ok
	}
	cs := p.conn.ConnectionState()
	if !cs.HandshakeComplete {
		return spiffeid.ID{}, false // asked too early: ask again later
	}
	id, ok := peerIDFromChain(cs.PeerCertificates)
	p.resolved.Store(&resolvedPeer{id: id, ok: ok})
	return id, ok
}

// ContextWithPeerID returns ctx carrying id as the verified peer identity.
// The mesh's server middleware calls it after the handshake has verified
// the peer; it is exported for middleware that terminates mTLS elsewhere.
func ContextWithPeerID(ctx context.Context, id spiffeid.ID) context.Context {
	return context.WithValue(ctx, peerIDKey{}, id)
}

// PeerID returns the SPIFFE ID of the caller whose request ctx belongs to:
// set by the mesh's HTTP middleware, or read from a gRPC peer's verified TLS
// state. It reports false for plaintext callers.
func PeerID(ctx context.Context) (spiffeid.ID, bool) {
	switch v := ctx.Value(peerIDKey{}).(type) {
	case spiffeid.ID:
		return v, true
	case *connPeer:
		return v.id()
	}
	if p, ok := peer.FromContext(ctx); ok && p.AuthInfo != nil {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			return PeerIDFromTLS(&ti.State)
		}
	}
	return spiffeid.ID{}, false
}

// PeerIDFromTLS returns the SPIFFE ID in the leaf certificate of a TLS
// connection's peer. It trusts the handshake: call it only on connections
// whose config verified the peer, as [ServerTLSConfig] and [ClientTLSConfig]
// do on full and resumed handshakes alike (go-spiffe's verifiers and these
// configs leave VerifiedChains empty, so that field cannot be the test). It
// reports false for an incomplete handshake, a peer without certificates,
// and a leaf that could not be an X509-SVID (a CA certificate, not exactly
// one URI SAN, or a SPIFFE ID without a path).
func PeerIDFromTLS(cs *tls.ConnectionState) (spiffeid.ID, bool) {
	if cs == nil || !cs.HandshakeComplete {
		return spiffeid.ID{}, false
	}
	return peerIDFromChain(cs.PeerCertificates)
}
