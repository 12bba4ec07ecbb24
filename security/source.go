package security

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// Source supplies a service's X.509-SVID and the X.509 bundles that verify
// its peers. Implementations must be safe for concurrent use: the TLS
// configs of this package call them on every handshake, so the methods must
// not block on I/O. Close releases the source; it is idempotent, and the
// getters return errors afterwards.
type Source interface {
	x509svid.Source
	x509bundle.Source
	Close() error
}

var errClosed = errors.New("security: source is closed")

// The reasons [CheckIdentity] refuses a source's own identity, for callers
// that name the part of their configuration at fault.
var (
	// ErrSVIDExpired: the SVID's certificate is past its NotAfter, so
	// every peer refuses it.
	ErrSVIDExpired = errors.New("security: this service's SVID has expired")
	// ErrNoOwnBundle: the source has no bundle for its SVID's own trust
	// domain, or that bundle does not verify the SVID, so no peer of the
	// service's own trust domain can be verified.
	ErrNoOwnBundle = errors.New("security: no trust bundle of this service's own trust domain verifies its SVID")
)

// CheckIdentity reports whether src serves a usable identity at now: an
// SVID whose certificate has not expired, and a bundle of the SVID's own
// trust domain that verifies it. A source that fails this is not an
// identity a service can work with, yet nothing else would notice until
// handshakes fail; the error wraps [ErrSVIDExpired] or [ErrNoOwnBundle]
// when one of them is the reason, and names the SVID's ID and trust domain.
func CheckIdentity(src Source, now time.Time) error {
	svid, err := src.GetX509SVID()
	if err != nil {
		return err
	}
	if len(svid.Certificates) == 0 {
		return fmt.Errorf("security: SVID %s has no certificate", svid.ID)
	}
	leaf := svid.Certificates[0]
	if now.After(leaf.NotAfter) {
		return fmt.Errorf("%w: %s expired at %s", ErrSVIDExpired, svid.ID, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	td := svid.ID.TrustDomain()
	b, err := src.GetX509BundleForTrustDomain(td)
	if err != nil || b.Empty() {
		return fmt.Errorf("%w: the source has no bundle for trust domain %q", ErrNoOwnBundle, td)
	}
	// Verified no earlier than the leaf's NotBefore: a clock a little
	// behind the issuer's is not a bundle problem.
	at := now
	if at.Before(leaf.NotBefore) {
		at = leaf.NotBefore
	}
	if _, _, err := x509svid.Verify(svid.Certificates, b, x509svid.WithTime(at)); err != nil {
		return fmt.Errorf("%w: the bundle of trust domain %q does not verify %s: %w", ErrNoOwnBundle, td, svid.ID, err)
	}
	return nil
}

// WorkloadAPISource is a [Source] backed by the SPIFFE Workload API. It holds
// the latest SVID and bundles pushed by the agent and follows every rotation
// without blocking the getters.
//
// A WorkloadAPISource is safe for concurrent use; Close is idempotent.
type WorkloadAPISource struct {
	src       *workloadapi.X509Source
	closeOnce sync.Once
	closeErr  error
}

var _ Source = (*WorkloadAPISource)(nil)

// NewWorkloadAPISource connects to the Workload API at addr
// ("unix:///path/agent.sock" or "tcp://127.0.0.1:port"; "" means the
// SPIFFE_ENDPOINT_SOCKET environment variable) and blocks until the first
// SVID arrives or ctx ends. The caller must Close the source.
func NewWorkloadAPISource(ctx context.Context, addr string) (*WorkloadAPISource, error) {
	var clientOpts []workloadapi.ClientOption
	if addr != "" {
		clientOpts = append(clientOpts, workloadapi.WithAddr(addr))
	}
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(clientOpts...))
	if err != nil {
		return nil, fmt.Errorf("security: workload API source: %w", err)
	}
	return &WorkloadAPISource{src: src}, nil
}

// GetX509SVID returns the current SVID.
func (s *WorkloadAPISource) GetX509SVID() (*x509svid.SVID, error) {
	svid, err := s.src.GetX509SVID()
	if err != nil {
		return nil, fmt.Errorf("security: %w", err)
	}
	return svid, nil
}

// GetX509BundleForTrustDomain returns the current bundle for td.
func (s *WorkloadAPISource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	b, err := s.src.GetX509BundleForTrustDomain(td)
	if err != nil {
		return nil, fmt.Errorf("security: %w", err)
	}
	return b, nil
}

// Updated returns a channel that receives a value (without blocking the
// sender; updates may coalesce) after each update from the Workload API.
func (s *WorkloadAPISource) Updated() <-chan struct{} { return s.src.Updated() }

// WaitUntilUpdated blocks until the next update or until ctx ends.
func (s *WorkloadAPISource) WaitUntilUpdated(ctx context.Context) error {
	return s.src.WaitUntilUpdated(ctx)
}

// Close drops the connection to the Workload API. It is idempotent.
func (s *WorkloadAPISource) Close() error {
	s.closeOnce.Do(func() {
		if err := s.src.Close(); err != nil {
			s.closeErr = fmt.Errorf("security: closing workload API source: %w", err)
		}
	})
	return s.closeErr
}

// StaticSource is a [Source] holding an SVID and bundles set in code, for
// tests and for programs that obtain their identity some other way.
// SetX509SVID and SetBundles replace them atomically; connections made
// afterwards see the new values.
//
// A StaticSource is safe for concurrent use; Close is idempotent.
type StaticSource struct {
	mu      sync.RWMutex
	svid    *x509svid.SVID
	bundles *x509bundle.Set
	closed  bool
}

var _ Source = (*StaticSource)(nil)

// NewStaticSource returns a source serving svid (nil: GetX509SVID fails,
// which suits a verify-only client) and bundles.
func NewStaticSource(svid *x509svid.SVID, bundles ...*x509bundle.Bundle) *StaticSource {
	return &StaticSource{svid: svid, bundles: x509bundle.NewSet(bundles...)}
}

// GetX509SVID returns the current SVID.
func (s *StaticSource) GetX509SVID() (*x509svid.SVID, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	switch {
	case s.closed:
		return nil, errClosed
	case s.svid == nil:
		return nil, errors.New("security: static source has no SVID")
	}
	return s.svid, nil
}

// GetX509BundleForTrustDomain returns the bundle for td.
func (s *StaticSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, errClosed
	}
	b, ok := s.bundles.Get(td)
	if !ok {
		return nil, fmt.Errorf("security: no X.509 bundle for trust domain %q", td)
	}
	return b, nil
}

// SetX509SVID replaces the SVID.
func (s *StaticSource) SetX509SVID(svid *x509svid.SVID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.svid = svid
}

// SetBundles replaces the whole bundle set; trust domains not listed are no
// longer trusted.
func (s *StaticSource) SetBundles(bundles ...*x509bundle.Bundle) {
	set := x509bundle.NewSet(bundles...)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bundles = set
}

// Close makes the getters fail from now on. It is idempotent.
func (s *StaticSource) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}
