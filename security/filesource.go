package security

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/weftmesh/weft/internal/fileutil"
)

// FileSource is a [Source] read from PEM files: the SVID's certificate chain
// (leaf first), its private key, and the bundle of the SVID's trust domain.
// It stats the files every poll interval and reloads all three when any
// modification time or size changes. A reload that fails (a half-written
// file, a key that does not match) is logged and the last good SVID and
// bundle stay in use until the files change again.
//
// A FileSource is safe for concurrent use; Close is idempotent.
type FileSource struct {
	certFile, keyFile, bundleFile string
	logger                        *slog.Logger

	mu      sync.RWMutex
	svid    *x509svid.SVID
	bundle  *x509bundle.Bundle
	closed  bool
	updated chan struct{}

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

var _ Source = (*FileSource)(nil)

type fileStamp struct {
	mod  time.Time
	size int64
	ok   bool
}

// NewFileSource loads the SVID from certFile and keyFile and the trust
// bundle from bundleFile, and starts watching them. It fails if the initial
// load fails. Options: [WithPollInterval], [WithLogger]. The caller must
// Close the source.
func NewFileSource(certFile, keyFile, bundleFile string, opts ...Option) (*FileSource, error) {
	o := newOptions(opts)
	s := &FileSource{
		certFile:   certFile,
		keyFile:    keyFile,
		bundleFile: bundleFile,
		logger:     o.logger,
		updated:    make(chan struct{}, 1),
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
	}
	stamps := s.stamps()
	svid, bundle, err := s.load()
	if err != nil {
		return nil, err
	}
	s.svid, s.bundle = svid, bundle
	go s.watch(o.pollInterval, stamps)
	return s, nil
}

func (s *FileSource) stamps() [3]fileStamp {
	return [3]fileStamp{statFile(s.certFile), statFile(s.keyFile), statFile(s.bundleFile)}
}

func (s *FileSource) load() (*x509svid.SVID, *x509bundle.Bundle, error) {
	svid, err := loadSVID(s.certFile, s.keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("security: loading SVID from %s and %s: %w", s.certFile, s.keyFile, err)
	}
	bundlePEM, err := fileutil.ReadFile(context.Background(), s.bundleFile, fileutil.MaxPEMFile)
	if err != nil {
		return nil, nil, fmt.Errorf("security: loading bundle: %w", err)
	}
	bundle, err := x509bundle.Parse(svid.ID.TrustDomain(), bundlePEM)
	if err != nil {
		return nil, nil, fmt.Errorf("security: loading bundle from %s: %w", s.bundleFile, err)
	}
	if bundle.Empty() {
		return nil, nil, fmt.Errorf("security: bundle file %s holds no certificates", s.bundleFile)
	}
	return svid, bundle, nil
}

func (s *FileSource) watch(interval time.Duration, last [3]fileStamp) {
	defer close(s.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		cur := s.stamps()
		if cur == last {
			continue
		}
		last = cur
		svid, bundle, err := s.load()
		if err != nil {
			s.logger.Error("security: keeping the last good SVID", "err", err)
			continue
		}
		s.mu.Lock()
		s.svid, s.bundle = svid, bundle
		s.mu.Unlock()
		select {
		case s.updated <- struct{}{}:
		default:
		}
	}
}

// Updated returns a channel that receives a value after each successful
// reload (without blocking the watcher; reloads may coalesce).
func (s *FileSource) Updated() <-chan struct{} { return s.updated }

// GetX509SVID returns the last SVID loaded successfully.
func (s *FileSource) GetX509SVID() (*x509svid.SVID, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, errClosed
	}
	return s.svid, nil
}

// GetX509BundleForTrustDomain returns the last bundle loaded successfully if
// td is the SVID's trust domain.
func (s *FileSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, errClosed
	}
	if s.bundle.TrustDomain() != td {
		return nil, fmt.Errorf("security: no X.509 bundle for trust domain %q", td)
	}
	return s.bundle, nil
}

// Close stops watching the files. It is idempotent.
func (s *FileSource) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.done
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
	})
	return nil
}

// loadSVID reads an SVID from PEM files. Besides PKCS#8 ("PRIVATE KEY"),
// the only form go-spiffe reads, the key may be SEC 1 ("EC PRIVATE KEY")
// or PKCS#1 ("RSA PRIVATE KEY"): istio-agent writes its key.pem in those
// forms unless told otherwise.
func loadSVID(certFile, keyFile string) (*x509svid.SVID, error) {
	// The files are bounded and must be regular files: a path to a FIFO
	// or a device fails at once rather than blocking or filling memory.
	certPEM, err := fileutil.ReadFile(context.Background(), certFile, fileutil.MaxPEMFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := fileutil.ReadFile(context.Background(), keyFile, fileutil.MaxPEMFile)
	if err != nil {
		return nil, err
	}
	if b, _ := pem.Decode(keyPEM); b != nil {
		var key any
		switch b.Type {
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.Type, err)
		}
		if key != nil {
			der, err := x509.MarshalPKCS8PrivateKey(key)
			if err != nil {
				return nil, err
			}
			keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		}
	}
	return x509svid.Parse(certPEM, keyPEM)
}
