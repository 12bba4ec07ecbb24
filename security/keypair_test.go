package security_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/security"
)

func webCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	ca := newCA(t, spiffeid.RequireTrustDomainFromString("web.test"))
	c := rawCert(t, ca, &x509.Certificate{IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	pool := x509.NewCertPool()
	pool.AddCert(ca.Root())
	return c, pool
}

func writePair(t *testing.T, dir string, c tls.Certificate) (string, string) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	for name, b := range map[string][]byte{
		certFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}),
		keyFile:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
	} {
		if err := os.WriteFile(name+".tmp", b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(name+".tmp", name); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile
}

// TestServerOnlyTLSConfig: a client with no certificate completes the
// handshake, and the server learns no identity.
func TestServerOnlyTLSConfig(t *testing.T) {
	cert, roots := webCert(t)
	get, err := security.StaticCertificate(cert)
	if err != nil {
		t.Fatal(err)
	}
	s := startTLSServer(t, security.ServerOnlyTLSConfig(get))
	if _, err := dial(s.addr(), &tls.Config{RootCAs: roots}); err != nil {
		t.Fatalf("a client without a certificate: %v", err)
	}
	if r := s.result(t); r.err != nil || r.idOK {
		t.Errorf("server saw err %v, identity %v (%v); want a handshake without one", r.err, r.id, r.idOK)
	}
}

func TestKeyPairFilesErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	cert, _ := webCert(t)
	certFile, keyFile := writePair(t, dir, cert)
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	for _, tt := range []struct {
		name, cert, key, want string
	}{
		{"missing certificate", missing, keyFile, missing},
		{"missing key", certFile, missing, missing},
		{"a key that is not PEM", certFile, garbage, garbage},
		{"a directory", dir, keyFile, dir},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := security.LoadKeyPairFiles(tt.cert, tt.key, security.WithLogger(discard()))
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "security: ") {
				t.Errorf("LoadKeyPairFiles(%s, %s) = %v, want a security: error naming %s", tt.cert, tt.key, err, tt.want)
			}
		})
	}
	for _, tt := range []struct {
		name string
		cert tls.Certificate
	}{
		{"no chain", tls.Certificate{PrivateKey: cert.PrivateKey}},
		{"no key", tls.Certificate{Certificate: cert.Certificate}},
	} {
		if _, err := security.StaticCertificate(tt.cert); err == nil {
			t.Errorf("StaticCertificate with %s: no error", tt.name)
		}
	}
}

// TestKeyPairFilesReloadsOnChange: the renewed pair serves from the first
// check after the change; a broken one leaves the last good pair.
func TestKeyPairFilesReloadsOnChange(t *testing.T) {
	dir := t.TempDir()
	first, _ := webCert(t)
	certFile, keyFile := writePair(t, dir, first)
	k, err := security.LoadKeyPairFiles(certFile, keyFile, security.WithPollInterval(10*time.Millisecond), security.WithLogger(discard()))
	if err != nil {
		t.Fatal(err)
	}
	leaf := func() *x509.Certificate {
		c, err := k.GetCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf
	}
	if got := leaf(); !got.Equal(first.Leaf) {
		t.Fatalf("serves %v, want the first certificate", got.SerialNumber)
	}
	second, _ := webCert(t)
	writePair(t, dir, second)
	waitLeaf := func(want *x509.Certificate) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !leaf().Equal(want); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("still serving %v, want %v", leaf().SerialNumber, want.SerialNumber)
			}
		}
	}
	waitLeaf(second.Leaf)
	if err := os.WriteFile(keyFile, []byte("half-written"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if got := leaf(); !got.Equal(second.Leaf) {
		t.Errorf("after a broken renewal serves %v, want the last good %v", got.SerialNumber, second.Leaf.SerialNumber)
	}
}
