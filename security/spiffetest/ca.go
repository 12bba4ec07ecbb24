package spiffetest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// DefaultTTL is the lifetime of an SVID issued with a zero TTL.
const DefaultTTL = time.Hour

// caTTL is the lifetime of a CA's self-signed root.
const caTTL = 24 * time.Hour

// backdate is how far before now certificates become valid, so that small
// clock differences between test goroutines never make a fresh SVID
// "not yet valid".
const backdate = time.Minute

// CA is an in-memory certificate authority for one trust domain. Its root is
// a self-signed ECDSA P-256 certificate valid for 24 hours.
//
// A CA is safe for concurrent use.
type CA struct {
	td   spiffeid.TrustDomain
	key  *ecdsa.PrivateKey
	cert *x509.Certificate

	mu     sync.Mutex
	serial int64
}

// NewCA returns a CA for td with a freshly generated root key.
func NewCA(td spiffeid.TrustDomain) (*CA, error) {
	if td.IsZero() {
		return nil, errors.New("spiffetest: trust domain is empty")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("spiffetest: generating CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"spiffetest"}, CommonName: td.Name() + " test CA"},
		URIs:                  []*url.URL{td.ID().URL()},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caTTL),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("spiffetest: creating CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("spiffetest: parsing CA certificate: %w", err)
	}
	return &CA{td: td, key: key, cert: cert, serial: 1}, nil
}

// TrustDomain returns the CA's trust domain.
func (ca *CA) TrustDomain() spiffeid.TrustDomain { return ca.td }

// Root returns the CA's self-signed root certificate.
func (ca *CA) Root() *x509.Certificate { return ca.cert }

// Bundle returns a new X.509 bundle for the CA's trust domain holding its
// root. The caller owns the returned bundle.
func (ca *CA) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.td, []*x509.Certificate{ca.cert})
}

// IssueX509SVID issues an X.509-SVID for id, valid from a minute ago until
// ttl from now (DefaultTTL when ttl is zero). The leaf has a fresh ECDSA
// P-256 key, exactly one URI SAN, is not a CA and has only the
// digitalSignature key usage. id must belong to the CA's trust domain and
// have a non-root path.
func (ca *CA) IssueX509SVID(id spiffeid.ID, ttl time.Duration) (*x509svid.SVID, error) {
	switch {
	case id.IsZero():
		return nil, errors.New("spiffetest: SPIFFE ID is empty")
	case id.TrustDomain() != ca.td:
		return nil, fmt.Errorf("spiffetest: %s is not in trust domain %s", id, ca.td)
	case id.Path() == "":
		return nil, fmt.Errorf("spiffetest: %s has no path", id)
	case ttl < 0:
		return nil, fmt.Errorf("spiffetest: negative TTL %s", ttl)
	case ttl == 0:
		ttl = DefaultTTL
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{Organization: []string{"spiffetest"}},
		URIs:                  []*url.URL{id.URL()},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(ttl),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	certs, key, err := ca.SignCertificate(tmpl)
	if err != nil {
		return nil, err
	}
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}, nil
}

// SignCertificate signs tmpl with the CA's key for a freshly generated ECDSA
// P-256 key and returns the chain (leaf, without the root) and the key. It
// fills in SerialNumber, and NotBefore/NotAfter when they are zero, and
// otherwise signs tmpl as given: it is the way to build certificates that
// break the X509-SVID rules (two URI SANs, a CA flag, an expired validity)
// to test that verifiers refuse them.
func (ca *CA) SignCertificate(tmpl *x509.Certificate) ([]*x509.Certificate, crypto.Signer, error) {
	if tmpl == nil {
		return nil, nil, errors.New("spiffetest: nil certificate template")
	}
	t := *tmpl
	ca.mu.Lock()
	ca.serial++
	t.SerialNumber = big.NewInt(ca.serial)
	ca.mu.Unlock()
	now := time.Now()
	if t.NotBefore.IsZero() {
		t.NotBefore = now.Add(-backdate)
	}
	if t.NotAfter.IsZero() {
		t.NotAfter = now.Add(DefaultTTL)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("spiffetest: generating key: %w", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &t, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("spiffetest: signing certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("spiffetest: parsing certificate: %w", err)
	}
	return []*x509.Certificate{cert}, key, nil
}

// MarshalPEM returns the CA's root certificate ("CERTIFICATE") and its
// private key (PKCS#8, "PRIVATE KEY") in PEM, the form [CAFromPEM] reads. It
// lets a development CA outlive the process that made it, so that services
// started one by one share a trust domain. The key is the CA's secret:
// whoever holds it can issue any identity in the trust domain.
func (ca *CA) MarshalPEM() (certPEM, keyPEM []byte, err error) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("spiffetest: encoding CA key: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	return certPEM, keyPEM, nil
}

// CAFromPEM returns a CA that signs with the root certificate and key that
// [CA.MarshalPEM] wrote. The trust domain is the root's SPIFFE ID (its one
// URI SAN). It fails if the certificate is not a CA, the key is not an ECDSA
// key matching the certificate, or the root has expired.
func CAFromPEM(certPEM, keyPEM []byte) (*CA, error) {
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, errors.New("spiffetest: CA certificate: no CERTIFICATE PEM block")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("spiffetest: CA certificate: %w", err)
	}
	if !cert.IsCA {
		return nil, errors.New("spiffetest: CA certificate: not a CA")
	}
	if len(cert.URIs) != 1 {
		return nil, fmt.Errorf("spiffetest: CA certificate: %d URI SANs, want the trust domain's SPIFFE ID", len(cert.URIs))
	}
	tdID, err := spiffeid.FromURI(cert.URIs[0])
	if err != nil {
		return nil, fmt.Errorf("spiffetest: CA certificate: %w", err)
	}
	if time.Now().After(cert.NotAfter) {
		return nil, fmt.Errorf("spiffetest: CA certificate expired at %s", cert.NotAfter.UTC().Format(time.RFC3339))
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil || kb.Type != "PRIVATE KEY" {
		return nil, errors.New("spiffetest: CA key: no PKCS#8 PRIVATE KEY PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("spiffetest: CA key: %w", err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("spiffetest: CA key: %T, want an ECDSA key", k)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("spiffetest: CA key does not match the CA certificate")
	}
	// Continue serial numbers where no earlier process is likely to have
	// been: a fresh random 62-bit start.
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return nil, fmt.Errorf("spiffetest: serial: %w", err)
	}
	return &CA{td: tdID.TrustDomain(), key: key, cert: cert, serial: serial.Int64() + 1}, nil
}
