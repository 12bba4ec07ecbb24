// Package xdstest runs a real xDS management server for tests: a
// go-control-plane snapshot cache behind its ADS server, on loopback, with
// builders for the small Listener, RouteConfiguration, Cluster and
// ClusterLoadAssignment resources tests need. It serves state-of-the-world
// and incremental (delta) ADS from the same snapshots.
package xdstest

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	lrsv3 "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/log"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Server is a management server on 127.0.0.1. Its methods are safe for
// concurrent use. The snapshot cache outlives Stop, so a restarted server
// serves the snapshots set before (or while) it was down.
type Server struct {
	// Addr is host:port of the listener; Restart reuses it.
	Addr  string
	cache cache.SnapshotCache

	mu       sync.Mutex
	cond     chan struct{} // closed and replaced on every new request
	requests []*discoveryv3.DiscoveryRequest
	// deltaRequests are copies: the server fills in a request's node
	// after the callback sees it.
	deltaRequests  []*discoveryv3.DeltaDiscoveryRequest
	deltaResponses []*discoveryv3.DeltaDiscoveryResponse
	grpc           *grpc.Server
	cancel         context.CancelFunc
	done           chan struct{}
	// opened counts the ADS streams ever opened (both protocols); open
	// those open now.
	opened, open int
	// opts are the gRPC server's options (its TLS, for one).
	opts []grpc.ServerOption

	// LRS is the load reporting service beside ADS; it outlives Restart.
	LRS *LRSServer
}

// NewServer starts a server and stops it when tb ends.
func NewServer(tb testing.TB) *Server {
	tb.Helper()
	return NewServerWith(tb)
}

// NewServerWith is NewServer with options for the gRPC server, such as
// grpc.Creds for a server behind TLS; Restart keeps them.
func NewServerWith(tb testing.TB, opts ...grpc.ServerOption) *Server {
	tb.Helper()
	// ads=false: with ads=true the cache holds back a response until a
	// request names every resource of the snapshot, and a proxyless client
	// asks only for what it uses.
	s := &Server{cache: cache.NewSnapshotCache(false, cache.IDHash{}, log.LoggerFuncs{}), cond: make(chan struct{}), opts: opts, LRS: newLRSServer()}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("xdstest: listen: %v", err)
	}
	s.Addr = lis.Addr().String()
	s.serve(lis)
	tb.Cleanup(s.Stop)
	return s
}

func (s *Server) serve(lis net.Listener) {
	ctx, cancel := context.WithCancel(context.Background())
	streamOpen := func() {
		s.mu.Lock()
		s.opened++
		s.open++
		s.notifyLocked()
		s.mu.Unlock()
	}
	streamClosed := func() {
		s.mu.Lock()
		s.open--
		s.notifyLocked()
		s.mu.Unlock()
	}
	cb := serverv3.CallbackFuncs{StreamOpenFunc: func(context.Context, int64, string) error {
		streamOpen()
		return nil
	}, StreamClosedFunc: func(int64, *corev3.Node) { streamClosed() },
		DeltaStreamOpenFunc: func(context.Context, int64, string) error {
			streamOpen()
			return nil
		}, DeltaStreamClosedFunc: func(int64, *corev3.Node) { streamClosed() },
		StreamRequestFunc: func(_ int64, req *discoveryv3.DiscoveryRequest) error {
			s.mu.Lock()
			s.requests = append(s.requests, req)
			s.notifyLocked()
			s.mu.Unlock()
			return nil
		}, StreamDeltaRequestFunc: func(_ int64, req *discoveryv3.DeltaDiscoveryRequest) error {
			req = proto.Clone(req).(*discoveryv3.DeltaDiscoveryRequest)
			s.mu.Lock()
			s.deltaRequests = append(s.deltaRequests, req)
			s.notifyLocked()
			s.mu.Unlock()
			return nil
		}, StreamDeltaResponseFunc: func(_ int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
			s.mu.Lock()
			s.deltaResponses = append(s.deltaResponses, resp)
			s.notifyLocked()
			s.mu.Unlock()
		}}
	gs := grpc.NewServer(s.opts...)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, serverv3.NewServer(ctx, s.cache, cb))
	lrsv3.RegisterLoadReportingServiceServer(gs, s.LRS)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = gs.Serve(lis)
	}()
	s.mu.Lock()
	s.grpc, s.cancel, s.done = gs, cancel, done
	s.mu.Unlock()
}

// Streams returns how many ADS streams (state of the world and delta)
// clients have opened since the server started, and how many are open.
func (s *Server) Streams() (opened, open int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opened, s.open
}

// notifyLocked wakes the waiters for requests.
func (s *Server) notifyLocked() {
	close(s.cond)
	s.cond = make(chan struct{})
}

// Stop closes the listener and every stream. It is idempotent.
func (s *Server) Stop() {
	s.mu.Lock()
	gs, cancel, done := s.grpc, s.cancel, s.done
	s.grpc = nil
	s.mu.Unlock()
	if gs == nil {
		return
	}
	gs.Stop()
	cancel()
	<-done
}

// Restart starts a stopped server again on the same address.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	lis, err := net.Listen("tcp", s.Addr)
	if err != nil {
		tb.Fatalf("xdstest: restart on %s: %v", s.Addr, err)
	}
	s.serve(lis)
}

// SetSnapshot makes resources, sorted by their type, version of every
// type for node. It does not call Snapshot.Consistent, which rejects
// API-listener-only configurations.
func (s *Server) SetSnapshot(tb testing.TB, node, version string, resources ...types.Resource) {
	tb.Helper()
	byType := map[resource.Type][]types.Resource{}
	for _, r := range resources {
		t := typeURLOf(r)
		if t == "" {
			tb.Fatalf("xdstest: SetSnapshot: unsupported resource %T", r)
		}
		byType[t] = append(byType[t], r)
	}
	snap, err := cache.NewSnapshot(version, byType)
	if err != nil {
		tb.Fatalf("xdstest: NewSnapshot: %v", err)
	}
	if err := s.cache.SetSnapshot(context.Background(), node, snap); err != nil {
		tb.Fatalf("xdstest: SetSnapshot: %v", err)
	}
}

// Requests returns a copy of every DiscoveryRequest received so far.
func (s *Server) Requests() []*discoveryv3.DiscoveryRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*discoveryv3.DiscoveryRequest(nil), s.requests...)
}

// WaitRequest waits until a received request satisfies match and returns
// it, or returns ctx's error.
func (s *Server) WaitRequest(ctx context.Context, match func(*discoveryv3.DiscoveryRequest) bool) (*discoveryv3.DiscoveryRequest, error) {
	return waitFor(ctx, s, &s.requests, "request", match)
}

// waitFor waits until an entry of the log s appends to satisfies match.
func waitFor[T any](ctx context.Context, s *Server, log *[]T, what string, match func(T) bool) (T, error) {
	next := 0
	for {
		s.mu.Lock()
		entries, cond := (*log)[next:], s.cond
		next = len(*log)
		s.mu.Unlock()
		for _, e := range entries {
			if match(e) {
				return e, nil
			}
		}
		select {
		case <-ctx.Done():
			var zero T
			return zero, fmt.Errorf("xdstest: no matching %s: %w", what, ctx.Err())
		case <-cond:
		}
	}
}

// DeltaRequests returns a copy of every DeltaDiscoveryRequest received so
// far, as received.
func (s *Server) DeltaRequests() []*discoveryv3.DeltaDiscoveryRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*discoveryv3.DeltaDiscoveryRequest(nil), s.deltaRequests...)
}

// DeltaResponses returns every DeltaDiscoveryResponse sent so far. They
// must not be modified.
func (s *Server) DeltaResponses() []*discoveryv3.DeltaDiscoveryResponse {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*discoveryv3.DeltaDiscoveryResponse(nil), s.deltaResponses...)
}

// WaitDeltaRequest waits until a received DeltaDiscoveryRequest satisfies
// match and returns it, or returns ctx's error.
func (s *Server) WaitDeltaRequest(ctx context.Context, match func(*discoveryv3.DeltaDiscoveryRequest) bool) (*discoveryv3.DeltaDiscoveryRequest, error) {
	return waitFor(ctx, s, &s.deltaRequests, "delta request", match)
}

// Bootstrap returns a bootstrap JSON pointing at the server with insecure
// credentials, for node; extra servers (URIs) follow as fallbacks.
func (s *Server) Bootstrap(node string, fallbacks ...string) []byte {
	return BootstrapJSON(node, append([]string{s.Addr}, fallbacks...)...)
}

// BootstrapJSON returns a bootstrap naming servers in order.
func BootstrapJSON(node string, servers ...string) []byte {
	out := `{"node":{"id":"` + node + `"},"xds_servers":[`
	for i, u := range servers {
		if i > 0 {
			out += ","
		}
		out += `{"server_uri":"` + u + `","channel_creds":[{"type":"insecure"}],"server_features":["xds_v3"]}`
	}
	return []byte(out + `]}`)
}

// Node returns a core Node with id, for tests building requests by hand.
func Node(id string) *corev3.Node { return &corev3.Node{Id: id} }
