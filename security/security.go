// Package security gives a Weft service its SPIFFE identity, secures every
// hop with mutual TLS, and tells handlers who called them.
//
// Inside an HTTP handler wrapped by the mesh, or a gRPC method served by the
// mesh's server, [PeerID] returns the caller's SPIFFE ID as verified during
// the TLS handshake.
package security

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
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
	if id, ok := ctx.Value(peerIDKey{}).(spiffeid.ID); ok {
		return id, true
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
// whose config verified the peer (Weft's mTLS configs always do; go-spiffe's
// verifiers leave VerifiedChains empty, so that field cannot be the test).
func PeerIDFromTLS(cs *tls.ConnectionState) (spiffeid.ID, bool) {
	if cs == nil || !cs.HandshakeComplete || len(cs.PeerCertificates) == 0 {
		return spiffeid.ID{}, false
	}
	id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
	if err != nil {
		return spiffeid.ID{}, false
	}
	return id, true
}
