package devplane

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/log"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// ErrClosed is returned by a Server's methods after Close.
var ErrClosed = errors.New("devplane: server closed")

// Option configures a Server.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	logger   *slog.Logger
	grpcOpts []grpc.ServerOption
}

// WithLogger sets where the server logs config changes, rejected configs
// and clients' NACKs. nil keeps slog.Default().
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) {
		if l != nil {
			o.logger = l
		}
	})
}

// WithGRPCServerOptions adds options to the gRPC servers Serve and Start
// create.
func WithGRPCServerOptions(opts ...grpc.ServerOption) Option {
	return optionFunc(func(o *options) { o.grpcOpts = append(o.grpcOpts, opts...) })
}

// snapshotKey is the one cache key every node maps to.
const snapshotKey = "devplane"

// anyNode hashes every node to one key, so a client gets the config
// whatever node id its bootstrap carries.
type anyNode struct{}

func (anyNode) ID(*corev3.Node) string { return snapshotKey }

// cacheLogger sends the cache's logs to l; its Info lines describe every
// watch and response, which is debugging detail for a user of this server.
func cacheLogger(l *slog.Logger) log.Logger {
	f := func(level slog.Level) func(string, ...any) {
		return func(format string, args ...any) {
			if l.Enabled(context.Background(), level) {
				l.Log(context.Background(), level, "devplane: cache: "+fmt.Sprintf(format, args...))
			}
		}
	}
	return log.LoggerFuncs{DebugFunc: f(slog.LevelDebug), InfoFunc: f(slog.LevelDebug), WarnFunc: f(slog.LevelWarn), ErrorFunc: f(slog.LevelError)}
}

// Server serves the last applied Config over ADS (and over the separate
// LDS, RDS, CDS and EDS services). Its methods are safe for concurrent use.
type Server struct {
	opts   options
	log    *slog.Logger
	cache  cache.SnapshotCache
	xds    serverv3.Server
	cancel context.CancelFunc // stops the xDS server's streams

	mu      sync.Mutex
	seq     uint64
	version string
	servers map[*grpc.Server]struct{}
	closed  bool
	nacks   map[nackKey]string // last NACK logged per node and type
	wg      sync.WaitGroup     // Start's serving goroutines and watchers
	done    chan struct{}      // closed by Close
}

type nackKey struct{ node, typeURL string }

// New returns a server with no config: clients that connect before the
// first Apply wait for it.
func New(opts ...Option) *Server {
	o := options{logger: slog.Default()}
	for _, opt := range opts {
		opt.apply(&o)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		opts:    o,
		log:     o.logger,
		cancel:  cancel,
		servers: map[*grpc.Server]struct{}{},
		nacks:   map[nackKey]string{},
		done:    make(chan struct{}),
	}
	// ads=false: with ads=true the cache holds a response back until a
	// request names every resource of the snapshot, and a proxyless client
	// asks only for the services it uses.
	s.cache = cache.NewSnapshotCache(false, anyNode{}, cacheLogger(o.logger))
	s.xds = serverv3.NewServer(ctx, s.cache, serverv3.CallbackFuncs{StreamRequestFunc: s.onRequest})
	return s
}

// onRequest logs a client's NACK once per distinct error: after a NACK the
// cache answers again at once, so the same rejection can arrive many times
// a second.
func (s *Server) onRequest(_ int64, req *discoveryv3.DiscoveryRequest) error {
	key := nackKey{req.GetNode().GetId(), req.GetTypeUrl()}
	s.mu.Lock()
	defer s.mu.Unlock()
	if req.GetErrorDetail() == nil {
		delete(s.nacks, key)
		return nil
	}
	msg := req.GetErrorDetail().GetMessage()
	if s.nacks[key] == msg {
		return nil
	}
	s.nacks[key] = msg
	s.log.Warn("devplane: a client rejected the config",
		"node", key.node, "type", key.typeURL, "accepted_version", req.GetVersionInfo(), "error", msg)
	return nil
}

// Apply builds cfg's resources and makes them the snapshot every client
// gets, under a new version, which it returns. Versions end in a digest of
// the resources, so a client that reconnects to a restarted server with an
// old version still receives the current config.
func (s *Server) Apply(cfg *Config) (string, error) {
	if cfg == nil {
		return "", errors.New("devplane: Apply: nil config")
	}
	res := cfg.Resources()
	byType := map[resource.Type][]types.Resource{}
	h := sha256.New()
	add := func(t resource.Type, m proto.Message) {
		byType[t] = append(byType[t], m.(types.Resource))
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
		if err != nil {
			panic("devplane: " + err.Error()) // messages built by Resources always marshal
		}
		h.Write(b)
	}
	for _, m := range res.Listeners {
		add(resource.ListenerType, m)
	}
	for _, m := range res.RouteConfigs {
		add(resource.RouteType, m)
	}
	for _, m := range res.Clusters {
		add(resource.ClusterType, m)
	}
	for _, m := range res.Endpoints {
		add(resource.EndpointType, m)
	}
	digest := hex.EncodeToString(h.Sum(nil))[:12]

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return "", ErrClosed
	}
	s.seq++
	version := strconv.FormatUint(s.seq, 10) + "-" + digest
	// Snapshot.Consistent is not called: it does not follow the route
	// names inside API listeners and would reject every config here.
	snap, err := cache.NewSnapshot(version, byType)
	if err != nil {
		return "", fmt.Errorf("devplane: snapshot: %w", err)
	}
	if err := s.cache.SetSnapshot(context.Background(), snapshotKey, snap); err != nil {
		return "", fmt.Errorf("devplane: set snapshot: %w", err)
	}
	s.version = version
	s.log.Info("devplane: config applied", "file", cfg.file, "version", version, "services", cfg.Services(),
		"listeners", len(res.Listeners), "clusters", len(res.Clusters))
	return version, nil
}

// Version returns the version of the last applied config, "" before the
// first.
func (s *Server) Version() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version
}

// Serve serves xDS on lis until ctx is done or the server is closed, and
// then returns nil; it closes lis. Several listeners may be served at once.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	gs, err := s.newGRPCServer(false)
	if err != nil {
		lis.Close()
		return err
	}
	stop := context.AfterFunc(ctx, gs.Stop)
	defer stop()
	err = gs.Serve(lis)
	s.mu.Lock()
	delete(s.servers, gs)
	s.mu.Unlock()
	if ctx.Err() != nil || errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	select {
	case <-s.done:
		return nil
	default:
	}
	if err != nil {
		return fmt.Errorf("devplane: serve: %w", err)
	}
	return nil
}

// newGRPCServer registers a new gRPC server, and with track counts a
// goroutine Close must wait for, under the lock that Close takes first.
func (s *Server) newGRPCServer(track bool) (*grpc.Server, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if track {
		s.wg.Add(1)
	}
	gs := grpc.NewServer(s.opts.grpcOpts...)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, s.xds)
	listenerservice.RegisterListenerDiscoveryServiceServer(gs, s.xds)
	routeservice.RegisterRouteDiscoveryServiceServer(gs, s.xds)
	clusterservice.RegisterClusterDiscoveryServiceServer(gs, s.xds)
	endpointservice.RegisterEndpointDiscoveryServiceServer(gs, s.xds)
	s.servers[gs] = struct{}{}
	return gs, nil
}

// Start listens on addr (host:port; port 0 picks one) and serves in the
// background until Close. It returns the address listened on.
func (s *Server) Start(addr string) (string, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("devplane: %w", err)
	}
	gs, err := s.newGRPCServer(true)
	if err != nil {
		lis.Close()
		return "", err
	}
	go func() {
		defer s.wg.Done()
		if err := gs.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.log.Error("devplane: serve", "addr", lis.Addr().String(), "error", err)
		}
	}()
	return lis.Addr().String(), nil
}

// Close stops every gRPC server Serve and Start run, ends the xDS
// streams, and stops file watchers. It waits for them and is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	servers := make([]*grpc.Server, 0, len(s.servers))
	for gs := range s.servers {
		servers = append(servers, gs)
	}
	s.mu.Unlock()
	for _, gs := range servers {
		gs.Stop()
	}
	s.cancel()
	s.wg.Wait()
	return nil
}

// WatchFile applies the config at path, then checks the file every
// interval (default one second when <= 0) and applies it again when its
// content changes. A file that does not parse is logged with its line (once
// it has stayed the same for two checks, so a save caught halfway is not
// reported) and otherwise ignored: the last good config stays in force. The first load
// must succeed; its error is returned and nothing is watched. Watching
// stops when ctx is done, stop is called or the server is closed; stop
// waits for the watcher to exit.
func (s *Server) WatchFile(ctx context.Context, path string, interval time.Duration) (stop func(), err error) {
	if interval <= 0 {
		interval = time.Second
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("devplane: %w", err)
	}
	cfg, err := Parse(data, filepath.Base(path))
	if err != nil {
		return nil, err
	}
	if _, err := s.Apply(cfg); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	s.wg.Add(1)
	s.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	exited := make(chan struct{})
	go func() {
		defer s.wg.Done()
		defer close(exited)
		s.watch(ctx, path, interval, data)
	}()
	return func() { cancel(); <-exited }, nil
}

func (s *Server) watch(ctx context.Context, path string, interval time.Duration, last []byte) {
	t := time.NewTicker(interval)
	defer t.Stop()
	// lastBad remembers the broken content already reported, so a file
	// left broken is logged once, not every interval.
	var lastBad, pending []byte
	var lastReadErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.done:
			return
		case <-t.C:
		}
		data, err := os.ReadFile(path)
		if err != nil {
			if err.Error() != lastReadErr {
				lastReadErr = err.Error()
				s.log.Error("devplane: cannot read config; keeping the last good one", "file", path, "error", err)
			}
			continue
		}
		lastReadErr = ""
		if bytes.Equal(data, last) || bytes.Equal(data, lastBad) {
			continue
		}
		cfg, err := Parse(data, filepath.Base(path))
		if err != nil {
			// An editor that truncates and then writes can be caught
			// between the two; only content still there at the next check
			// is reported.
			if !bytes.Equal(data, pending) {
				pending = data
				continue
			}
			lastBad, pending = data, nil
			s.log.Error("devplane: config rejected; keeping the last good one", "file", path, "error", err.Error())
			continue
		}
		if _, err := s.Apply(cfg); err != nil {
			if errors.Is(err, ErrClosed) {
				return
			}
			s.log.Error("devplane: apply", "file", path, "error", err)
			continue
		}
		last, lastBad, pending = data, nil, nil
	}
}
