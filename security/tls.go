package security

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// An Authorizer decides whether a peer whose X509-SVID has been verified
// may connect. It returns nil to accept the peer ID and an error to refuse
// it. Authorizers run inside TLS handshakes and must be safe for concurrent
// use and must not block.
type Authorizer func(id spiffeid.ID) error

// AuthorizeAny accepts any peer whose SVID verifies against a trusted
// bundle.
func AuthorizeAny() Authorizer {
	return func(spiffeid.ID) error { return nil }
}

// AuthorizeID accepts exactly the peer ID id.
func AuthorizeID(id spiffeid.ID) Authorizer {
	return func(got spiffeid.ID) error {
		if got != id {
			return fmt.Errorf("security: unexpected peer ID %q", got)
		}
		return nil
	}
}

// AuthorizeOneOf accepts any of the peer IDs ids. With no ids it refuses
// every peer.
func AuthorizeOneOf(ids ...spiffeid.ID) Authorizer {
	allowed := make(map[spiffeid.ID]struct{}, len(ids))
	for _, id := range ids {
		allowed[id] = struct{}{}
	}
	return func(got spiffeid.ID) error {
		if _, ok := allowed[got]; !ok {
			return fmt.Errorf("security: unexpected peer ID %q", got)
		}
		return nil
	}
}

// AuthorizeMemberOf accepts any peer ID in trust domain td.
func AuthorizeMemberOf(td spiffeid.TrustDomain) Authorizer {
	return func(got spiffeid.ID) error {
		if !got.MemberOf(td) {
			return fmt.Errorf("security: peer ID %q is not a member of trust domain %q", got, td)
		}
		return nil
	}
}

// ServerTLSConfig returns a server configuration for mutual TLS: it presents
// src's current SVID on every handshake and requires the client to present
// an X509-SVID that [VerifyPeer] accepts against src's bundles, followed by
// authorize (nil means [AuthorizeAny]). The check runs in VerifyConnection,
// so it also guards resumed sessions: a client whose trust domain has since
// been removed from src, or whose certificate has since expired, is
// refused.
//
// The configuration reads src on every handshake and may be shared by any
// number of servers. Set NextProtos as the protocol needs (net/http and
// grpc's credentials.NewTLS add "h2" themselves).
func ServerTLSConfig(src Source, authorize Authorizer) *tls.Config {
	if authorize == nil {
		authorize = AuthorizeAny()
	}
	certs := &certCache{src: src}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientAuth: tls.RequireAnyClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return certs.get()
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := verifyConnection(cs, src, authorize)
			return err
		},
	}
}

// ClientTLSConfig returns a client configuration for mutual TLS: it presents
// src's current SVID and accepts a server only if its X509-SVID passes
// [VerifyPeer] against src's bundles and authorize (nil means
// [AuthorizeAny]). Standard hostname verification is replaced by the SPIFFE
// check (InsecureSkipVerify is set for that reason and must stay set); the
// check runs in VerifyConnection, so resumed sessions are checked too.
//
// Session resumption is off unless the caller sets ClientSessionCache.
func ClientTLSConfig(src Source, authorize Authorizer) *tls.Config {
	if authorize == nil {
		authorize = AuthorizeAny()
	}
	certs := &certCache{src: src}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The server is verified in VerifyConnection against the bundle of
		// its own trust domain, which the standard verifier cannot do.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return certs.get()
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := verifyConnection(cs, src, authorize)
			return err
		},
	}
}

func verifyConnection(cs tls.ConnectionState, bundles x509bundle.Source, authorize Authorizer) (spiffeid.ID, error) {
	id, err := VerifyPeer(cs.PeerCertificates, bundles, time.Now())
	if err != nil {
		return id, err
	}
	if err := authorize(id); err != nil {
		return id, fmt.Errorf("security: peer %q not authorized: %w", id, err)
	}
	return id, nil
}

// VerifyPeer checks a peer's certificate chain (leaf first) against the
// X509-SVID rules and returns the leaf's SPIFFE ID: the leaf has exactly one
// URI SAN, a SPIFFE ID with a non-root path; it is not a CA, has the
// digitalSignature key usage and neither keyCertSign nor cRLSign; it is
// valid at now; and it chains to a root in the bundle of the ID's own trust
// domain, so a CA trusted for another trust domain cannot vouch for it.
func VerifyPeer(chain []*x509.Certificate, bundles x509bundle.Source, now time.Time) (spiffeid.ID, error) {
	if len(chain) == 0 {
		return spiffeid.ID{}, errors.New("security: peer presented no certificate")
	}
	leaf := chain[0]
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("security: peer certificate is not an X509-SVID: %w", err)
	}
	switch {
	case id.Path() == "":
		return id, fmt.Errorf("security: peer ID %q has no path", id)
	case leaf.IsCA:
		return id, fmt.Errorf("security: peer %q presented a CA certificate", id)
	case leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0:
		return id, fmt.Errorf("security: peer %q certificate lacks the digitalSignature key usage", id)
	case leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0:
		return id, fmt.Errorf("security: peer %q certificate has a CA key usage", id)
	case now.Before(leaf.NotBefore) || now.After(leaf.NotAfter):
		return id, fmt.Errorf("security: peer %q certificate is not valid at %s (valid %s to %s)",
			id, now.UTC().Format(time.RFC3339), leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if bundles == nil {
		return id, errors.New("security: no bundle source")
	}
	if _, _, err := x509svid.Verify(chain, bundles, x509svid.WithTime(now)); err != nil {
		return id, fmt.Errorf("security: verifying peer %q: %w", id, err)
	}
	return id, nil
}

// certCache turns the source's current SVID into a tls.Certificate, redoing
// the conversion only when the source hands out a different SVID.
type certCache struct {
	src  x509svid.Source
	last atomic.Pointer[cachedCert]
}

type cachedCert struct {
	svid *x509svid.SVID
	cert *tls.Certificate
}

func (c *certCache) get() (*tls.Certificate, error) {
	svid, err := c.src.GetX509SVID()
	if err != nil {
		return nil, fmt.Errorf("security: getting SVID: %w", err)
	}
	if last := c.last.Load(); last != nil && last.svid == svid {
		return last.cert, nil
	}
	if len(svid.Certificates) == 0 {
		return nil, errors.New("security: SVID has no certificates")
	}
	cert := &tls.Certificate{
		Certificate: make([][]byte, 0, len(svid.Certificates)),
		PrivateKey:  svid.PrivateKey,
		Leaf:        svid.Certificates[0],
	}
	for _, c := range svid.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	c.last.Store(&cachedCert{svid: svid, cert: cert})
	return cert, nil
}

// peerIDFromChain is PeerIDFromTLS's leaf check, shared with the
// authorization code. Its answer is kept per leaf certificate (leafIDs).
func peerIDFromChain(chain []*x509.Certificate) (spiffeid.ID, bool) {
	if len(chain) == 0 {
		return spiffeid.ID{}, false
	}
	leaf := chain[0]
	key := weak.Make(leaf)
	leafIDs.RLock()
	e, found := leafIDs.m[key]
	leafIDs.RUnlock()
	if found {
		return e.id, e.ok
	}
	e.id, e.ok = leafID(leaf)
	leafIDs.Lock()
	if _, found := leafIDs.m[key]; !found {
		leafIDs.m[key] = e
		runtime.AddCleanup(leaf, forgetLeaf, key)
	}
	leafIDs.Unlock()
	return e.id, e.ok
}

// leafIDs are peerIDFromChain's answers by leaf certificate. A peer's
// certificate is parsed once, at the handshake, and lives as long as its
// connection, while the SPIFFE ID in it is asked for on every call or
// request (golden metrics, authorization, the xDS decision, the tap), at
// the cost of printing and parsing its URI each time. The keys are weak:
// an entry goes when its certificate is collected, so there are never
// more entries than live certificates.
var leafIDs = struct {
	sync.RWMutex
	m map[weak.Pointer[x509.Certificate]]cachedLeafID
}{m: map[weak.Pointer[x509.Certificate]]cachedLeafID{}}

type cachedLeafID struct {
	id spiffeid.ID
	ok bool
}

func forgetLeaf(key weak.Pointer[x509.Certificate]) {
	leafIDs.Lock()
	delete(leafIDs.m, key)
	leafIDs.Unlock()
}

// leafID is peerIDFromChain's check of a leaf certificate.
func leafID(leaf *x509.Certificate) (spiffeid.ID, bool) {
	if leaf.IsCA {
		return spiffeid.ID{}, false
	}
	id, err := x509svid.IDFromCert(leaf)
	if err != nil || id.Path() == "" {
		return spiffeid.ID{}, false
	}
	return id, true
}
