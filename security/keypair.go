package security

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/internal/fileutil"
)

// KeyPairFiles is a TLS certificate and key read from PEM files, such as a
// public server's web certificate, read again when either file changes. It
// is not a SPIFFE identity: nothing checks its SANs, and a server using it
// asks callers for no certificate (see [ServerOnlyTLSConfig]).
//
// The files are checked during handshakes, at most once per poll interval,
// so that a KeyPairFiles starts no goroutine and needs no Close: an idle
// server does no work, and a certificate renewed on disk (certbot,
// cert-manager) is served from the first handshake after the next check.
// A reload that fails (a half-written file, a key that does not match the
// certificate) is logged once and the last good pair keeps serving until
// the files change again.
//
// A KeyPairFiles is safe for concurrent use.
type KeyPairFiles struct {
	certFile, keyFile string
	interval          time.Duration
	logger            *slog.Logger

	cert      atomic.Pointer[tls.Certificate]
	nextCheck atomic.Int64 // unix nanoseconds
	mu        sync.Mutex   // one reload at a time; guards stamps and lastErr
	stamps    [2]fileStamp
	lastErr   string
}

// LoadKeyPairFiles loads the certificate chain (leaf first) in certFile
// and its private key in keyFile (PEM, as [tls.LoadX509KeyPair] reads
// them). It fails, naming the file, if the first load fails. Options:
// [WithPollInterval] (how often the files are checked), [WithLogger].
func LoadKeyPairFiles(certFile, keyFile string, opts ...Option) (*KeyPairFiles, error) {
	o := newOptions(opts)
	k := &KeyPairFiles{certFile: certFile, keyFile: keyFile, interval: o.pollInterval, logger: o.logger}
	k.stamps = k.stat()
	cert, err := k.load()
	if err != nil {
		return nil, err
	}
	k.cert.Store(cert)
	k.nextCheck.Store(time.Now().Add(k.interval).UnixNano())
	return k, nil
}

func (k *KeyPairFiles) stat() [2]fileStamp {
	return [2]fileStamp{statFile(k.certFile), statFile(k.keyFile)}
}

func (k *KeyPairFiles) load() (*tls.Certificate, error) {
	// Bounded reads of regular files only, as for SVID files: a FIFO or
	// a device fails at once instead of blocking a handshake.
	certPEM, err := fileutil.ReadFile(context.Background(), k.certFile, fileutil.MaxPEMFile)
	if err != nil {
		return nil, fmt.Errorf("security: loading certificate: %w", err)
	}
	keyPEM, err := fileutil.ReadFile(context.Background(), k.keyFile, fileutil.MaxPEMFile)
	if err != nil {
		return nil, fmt.Errorf("security: loading key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("security: key pair from %s and %s: %w", k.certFile, k.keyFile, err)
	}
	return &cert, nil
}

// Certificate returns the last pair loaded successfully, first checking
// the files when the poll interval has passed since the last check.
func (k *KeyPairFiles) Certificate() *tls.Certificate {
	now := time.Now()
	if now.UnixNano() >= k.nextCheck.Load() && k.mu.TryLock() {
		// Handshakes that arrive during a reload are served the current
		// pair rather than waiting for the files.
		k.reloadLocked(now)
		k.mu.Unlock()
	}
	return k.cert.Load()
}

func (k *KeyPairFiles) reloadLocked(now time.Time) {
	k.nextCheck.Store(now.Add(k.interval).UnixNano())
	cur := k.stat()
	if cur == k.stamps {
		return
	}
	k.stamps = cur
	cert, err := k.load()
	if err != nil {
		if msg := err.Error(); msg != k.lastErr {
			k.lastErr = msg
			k.logger.Warn("security: keeping the last good certificate", "cert_file", k.certFile, "key_file", k.keyFile, "err", err)
		}
		return
	}
	k.lastErr = ""
	k.cert.Store(cert)
	attrs := []any{"cert_file", k.certFile}
	if cert.Leaf != nil {
		attrs = append(attrs, "expires", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	k.logger.Info("security: certificate reloaded", attrs...)
}

// GetCertificate is [KeyPairFiles.Certificate] in the shape of
// tls.Config.GetCertificate.
func (k *KeyPairFiles) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return k.Certificate(), nil
}

// ServerOnlyTLSConfig returns a server configuration for one-way TLS, as a
// web server's: it presents the certificate getCert returns and requests
// no client certificate, so a browser or any plain TLS client connects,
// and the server learns no caller identity. getCert is a
// tls.Config.GetCertificate ([KeyPairFiles.GetCertificate], or a function
// returning a fixed certificate). NextProtos offers HTTP/2 and HTTP/1.1;
// a gRPC server's credentials keep what gRPC needs.
func ServerOnlyTLSConfig(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		ClientAuth:     tls.NoClientCert,
		GetCertificate: getCert,
		NextProtos:     []string{"h2", "http/1.1"},
	}
}

// StaticCertificate returns a GetCertificate function serving cert, for
// [ServerOnlyTLSConfig]. It fails if cert holds no certificate or no
// private key.
func StaticCertificate(cert tls.Certificate) (func(*tls.ClientHelloInfo) (*tls.Certificate, error), error) {
	switch {
	case len(cert.Certificate) == 0:
		return nil, errors.New("security: the certificate holds no certificate chain")
	case cert.PrivateKey == nil:
		return nil, errors.New("security: the certificate has no private key")
	}
	c := cert
	return func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &c, nil }, nil
}
