package spiffetest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// securityHeader is the metadata key every Workload API call must carry
// with the value "true" (SPIFFE Workload API specification, section 5.2).
const securityHeader = "workload.spiffe.io"

// Option configures StartWorkloadAPI. Options are immutable and may be
// shared.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	socketPath string
	ttl        time.Duration
	bundles    []*x509bundle.Bundle
}

// WithSocketPath makes the server listen on path instead of a socket in a
// fresh temporary directory. The caller owns path's directory; Close removes
// only the socket.
func WithSocketPath(path string) Option {
	return optionFunc(func(c *config) { c.socketPath = path })
}

// WithTTL sets the lifetime of the SVIDs the server issues (DefaultTTL when
// zero or not given).
func WithTTL(ttl time.Duration) Option {
	return optionFunc(func(c *config) { c.ttl = ttl })
}

// WithBundles sets the initial trust bundles the server serves, replacing
// the default of the CA's own bundle; see [WorkloadAPI.SetBundles].
func WithBundles(bundles ...*x509bundle.Bundle) Option {
	return optionFunc(func(c *config) { c.bundles = append([]*x509bundle.Bundle(nil), bundles...) })
}

// WorkloadAPI is an in-process SPIFFE Workload API server on a unix socket.
// It serves one identity, issued by its CA, through FetchX509SVID and
// FetchX509Bundles (both streaming); the JWT methods are unimplemented.
// Calls without the "workload.spiffe.io: true" metadata header are refused
// with InvalidArgument, as the specification requires.
//
// A WorkloadAPI is safe for concurrent use; Close is idempotent.
type WorkloadAPI struct {
	workload.UnimplementedSpiffeWorkloadAPIServer

	ca      *CA
	id      spiffeid.ID
	ttl     time.Duration
	addr    string
	sock    string
	tempDir string
	srv     *grpc.Server
	served  chan struct{}

	mu      sync.Mutex
	svid    *x509svid.SVID
	bundles *x509bundle.Set
	changed chan struct{} // closed and replaced on every update

	closeOnce sync.Once
	done      chan struct{}
	closeErr  error
}

var _ workload.SpiffeWorkloadAPIServer = (*WorkloadAPI)(nil)

// StartWorkloadAPI issues an SVID for id from ca and starts serving it on a
// unix socket. The caller must Close the server.
func StartWorkloadAPI(ca *CA, id spiffeid.ID, opts ...Option) (*WorkloadAPI, error) {
	if ca == nil {
		return nil, errors.New("spiffetest: nil CA")
	}
	var cfg config
	for _, o := range opts {
		if o != nil {
			o.apply(&cfg)
		}
	}
	svid, err := ca.IssueX509SVID(id, cfg.ttl)
	if err != nil {
		return nil, err
	}
	bundles := cfg.bundles
	if bundles == nil {
		bundles = []*x509bundle.Bundle{ca.Bundle()}
	}
	w := &WorkloadAPI{
		ca:      ca,
		id:      id,
		ttl:     cfg.ttl,
		svid:    svid,
		bundles: x509bundle.NewSet(bundles...),
		changed: make(chan struct{}),
		done:    make(chan struct{}),
		served:  make(chan struct{}),
		sock:    cfg.socketPath,
	}
	if w.sock == "" {
		dir, err := os.MkdirTemp("", "spiffetest")
		if err != nil {
			return nil, fmt.Errorf("spiffetest: creating socket directory: %w", err)
		}
		w.tempDir = dir
		w.sock = filepath.Join(dir, "agent.sock")
	}
	ln, err := net.Listen("unix", w.sock)
	if err != nil {
		if w.tempDir != "" {
			_ = os.RemoveAll(w.tempDir)
		}
		return nil, fmt.Errorf("spiffetest: listening on %s: %w", w.sock, err)
	}
	w.addr = "unix://" + w.sock
	w.srv = grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(w.srv, w)
	go func() {
		defer close(w.served)
		_ = w.srv.Serve(ln)
	}()
	return w, nil
}

// Addr returns the server's address in the form go-spiffe and
// SPIFFE_ENDPOINT_SOCKET expect: "unix:///path/to/socket".
func (w *WorkloadAPI) Addr() string { return w.addr }

// ID returns the SPIFFE ID the server serves.
func (w *WorkloadAPI) ID() spiffeid.ID { return w.id }

// X509SVID returns the SVID currently served.
func (w *WorkloadAPI) X509SVID() *x509svid.SVID {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.svid
}

// Rotate issues a fresh SVID (new key, new serial) for the server's
// identity, serves it from now on and pushes it to every open
// FetchX509SVID stream. It returns the new SVID.
func (w *WorkloadAPI) Rotate() (*x509svid.SVID, error) {
	svid, err := w.ca.IssueX509SVID(w.id, w.ttl)
	if err != nil {
		return nil, err
	}
	w.SetX509SVID(svid)
	return svid, nil
}

// SetX509SVID serves svid from now on and pushes it to every open
// FetchX509SVID stream. It lets a test serve an SVID issued elsewhere, for
// example one about to expire.
func (w *WorkloadAPI) SetX509SVID(svid *x509svid.SVID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.svid = svid
	w.notifyLocked()
}

// SetBundles replaces the trust bundles served (the bundle of the SVID's
// own trust domain and any federated ones) and pushes the change to every
// open stream. A set without the SVID's trust domain serves an empty bundle
// for it.
func (w *WorkloadAPI) SetBundles(bundles ...*x509bundle.Bundle) {
	set := x509bundle.NewSet(bundles...)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.bundles = set
	w.notifyLocked()
}

func (w *WorkloadAPI) notifyLocked() {
	close(w.changed)
	w.changed = make(chan struct{})
}

// snapshot returns the current state and the channel closed on its next
// change.
func (w *WorkloadAPI) snapshot() (*x509svid.SVID, *x509bundle.Set, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.svid, w.bundles, w.changed
}

// Close stops the server, ends open streams and removes the socket. It is
// idempotent and returns the first call's result.
func (w *WorkloadAPI) Close() error {
	w.closeOnce.Do(func() {
		close(w.done)
		w.srv.Stop()
		<-w.served
		if w.tempDir != "" {
			w.closeErr = os.RemoveAll(w.tempDir)
		} else if err := os.Remove(w.sock); err != nil && !errors.Is(err, os.ErrNotExist) {
			w.closeErr = err
		}
		if w.closeErr != nil {
			w.closeErr = fmt.Errorf("spiffetest: removing socket: %w", w.closeErr)
		}
	})
	return w.closeErr
}

func checkHeader(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(securityHeader); len(v) != 1 || v[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	return nil
}

// FetchX509SVID implements the Workload API: it sends the current SVID and
// bundles, then an update on every change, until the client or the server
// goes away.
func (w *WorkloadAPI) FetchX509SVID(_ *workload.X509SVIDRequest, stream workload.SpiffeWorkloadAPI_FetchX509SVIDServer) error {
	if err := checkHeader(stream.Context()); err != nil {
		return err
	}
	return w.serve(stream.Context(), func(svid *x509svid.SVID, bundles *x509bundle.Set) error {
		resp, err := x509SVIDResponse(svid, bundles)
		if err != nil {
			return err
		}
		return stream.Send(resp)
	})
}

// FetchX509Bundles implements the Workload API: it sends the current
// bundles, then an update on every change.
func (w *WorkloadAPI) FetchX509Bundles(_ *workload.X509BundlesRequest, stream workload.SpiffeWorkloadAPI_FetchX509BundlesServer) error {
	if err := checkHeader(stream.Context()); err != nil {
		return err
	}
	return w.serve(stream.Context(), func(_ *x509svid.SVID, bundles *x509bundle.Set) error {
		resp := &workload.X509BundlesResponse{Bundles: make(map[string][]byte, bundles.Len())}
		for _, b := range bundles.Bundles() {
			resp.Bundles[b.TrustDomain().IDString()] = concatDER(b)
		}
		return stream.Send(resp)
	})
}

// serve calls send with the current state and again after every change; it
// returns when the stream's context ends or the server closes.
func (w *WorkloadAPI) serve(ctx context.Context, send func(*x509svid.SVID, *x509bundle.Set) error) error {
	for {
		svid, bundles, changed := w.snapshot()
		if err := send(svid, bundles); err != nil {
			return err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil
		case <-w.done:
			return status.Error(codes.Unavailable, "server closing")
		}
	}
}

func x509SVIDResponse(svid *x509svid.SVID, bundles *x509bundle.Set) (*workload.X509SVIDResponse, error) {
	certs, key, err := svid.MarshalRaw()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "marshaling SVID: %v", err)
	}
	td := svid.ID.TrustDomain()
	var own []byte
	if b, ok := bundles.Get(td); ok {
		own = concatDER(b)
	}
	resp := &workload.X509SVIDResponse{
		Svids: []*workload.X509SVID{{
			SpiffeId:    svid.ID.String(),
			X509Svid:    certs,
			X509SvidKey: key,
			Bundle:      own,
		}},
	}
	for _, b := range bundles.Bundles() {
		if b.TrustDomain() == td {
			continue
		}
		if resp.FederatedBundles == nil {
			resp.FederatedBundles = make(map[string][]byte)
		}
		resp.FederatedBundles[b.TrustDomain().IDString()] = concatDER(b)
	}
	return resp, nil
}

func concatDER(b *x509bundle.Bundle) []byte {
	var out []byte
	for _, c := range b.X509Authorities() {
		out = append(out, c.Raw...)
	}
	return out
}
