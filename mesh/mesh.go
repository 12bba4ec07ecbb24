package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	gresolver "google.golang.org/grpc/resolver"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/internal/tap"
	"github.com/weftmesh/weft/internal/xds"
	"github.com/weftmesh/weft/resolver"
	"github.com/weftmesh/weft/security"
	"github.com/weftmesh/weft/telemetry"
	"github.com/weftmesh/weft/telemetry/admin"
)

const defaultShutdownTimeout = 10 * time.Second

// Mesh is one service's view of the mesh. Most services call four of its
// methods: HTTPClient (an *http.Client whose URL hosts are service names),
// Handler (the inbound chain around an http.Handler), DialGRPC (a
// *grpc.ClientConn to a service name) and NewGRPCServer (a gRPC server
// with the inbound chain); ListenAndServe and Serve run an HTTP server
// with Handler applied, Transport wraps a transport of your own, and
// Close releases everything. A Mesh is safe for concurrent use.
type Mesh struct {
	cfg config
	log *slog.Logger
	// limited is log for lines that may repeat (ejections, breaker
	// transitions, denials, refused policy files): each at most once per
	// limitEvery, with a count of those not written.
	limited *slog.Logger
	policy  balancer.Builder

	static *resolver.Static
	dns    *resolver.DNS
	disc   *meshDiscovery
	// names maps what a URL host or gRPC target may say ("orders",
	// "orders:8080") to a mesh service name. Fixed at New.
	names map[string]string

	// grpcTraceCtx, with telemetry off, takes a gRPC caller's trace
	// context into its call's context in the servers' first interceptor,
	// in place of a stats handler; nil when the stats handler is needed.
	grpcTraceCtx func(context.Context) context.Context
	// grpcOutCtx, with telemetry off, puts a gRPC call's trace context in
	// its outgoing metadata in the channel's innermost interceptor, in
	// place of a stats handler; nil when the stats handler is needed.
	grpcOutCtx func(context.Context) context.Context

	base      *http.Transport   // the default transport behind Transport(nil)
	meshBase  http.RoundTripper // base, set to the mesh's protocol and secured by mTLS when the mesh has an identity
	http2     bool              // HTTP/2 to mesh endpoints (WithHTTP2)
	client    *http.Client
	tel       *telemetry.Telemetry
	metrics   *telemetry.Metrics
	unobserve func() error            // stops the endpoint gauge callback
	xds       *xdsPath                // nil: no control plane
	inbound   *inboundXDS             // nil: servers not managed by xDS
	id        *identity               // nil: mTLS off
	authz     *security.PolicyWatcher // nil: no authorization policy
	grpcRes   gresolver.Builder
	// hashPolicies are the hash source of services outside xDS
	// (WithLBHashHeader, WithLBHashCookie); nil for none.
	hashPolicies []xds.HashPolicy
	xdsOnce      sync.Once
	xdsRes       gresolver.Builder
	xdsErr       error
	services     atomic.Pointer[map[string]*service] // copy on write
	mu           sync.Mutex                          // guards services writes, closed, admin

	ctx    context.Context // ends at Close: stops servers started by ListenAndServe
	cancel context.CancelFunc
	admin  *admin.Server
	// golden and decisions are the admin endpoint's golden metrics and
	// recent authorization decisions; nil when it is off.
	golden    *admin.Golden
	decisions *admin.DecisionLog
	// adminBound is the admin listener's address, "" when it is off.
	adminBound string
	wg         sync.WaitGroup
	closed     bool
	once       sync.Once

	// grpcLB is the load-balancing config of gRPC channels to mesh
	// services, naming policy to grpc-go; releaseGRPCLB drops the name.
	grpcLB        string
	releaseGRPCLB func()

	// tap carries live requests to /tap subscribers (never nil).
	tap *tap.Bus
}

// New builds a Mesh from the environment (the variables documented in the
// README), then applies opts, which override the variables. A bad value is
// an error naming the variable or option and the value.
func New(ctx context.Context, opts ...Option) (*Mesh, error) {
	var cfg config
	if err := cfg.fromEnv(ctx, os.LookupEnv); err != nil {
		return nil, err
	}
	cfg.envWarnings = unknownEnv(os.Environ())
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o.apply(&cfg); err != nil {
			return nil, err
		}
	}
	return newMesh(ctx, cfg)
}

func newMesh(ctx context.Context, cfg config) (*Mesh, error) {
	if cfg.logger == nil {
		cfg.logger = slog.Default()
	}
	if cfg.lbPolicy == "" {
		cfg.lbPolicy = balancer.RoundRobin
	}
	if cfg.shutdownTimeout == 0 {
		cfg.shutdownTimeout = defaultShutdownTimeout
	}
	if err := cfg.checkSlowStart(); err != nil {
		return nil, err
	}
	if err := cfg.checkHash(); err != nil {
		return nil, err
	}
	// Lines the mesh logs inside a request carry its trace and span IDs.
	cfg.logger = slog.New(telemetry.NewLogHandler(cfg.logger.Handler()))
	for _, w := range cfg.envWarnings {
		cfg.logger.Warn(w)
	}
	// Services without xDS get locality/priority failover (DNS SRV
	// priorities) and outlier detection around the chosen policy.
	m := &Mesh{cfg: cfg, log: cfg.logger, policy: cfg.servicePolicy(), hashPolicies: cfg.hashPolicies(), tap: tap.New(),
		limited: slog.New(newLimitedHandler(cfg.logger.Handler(), limitEvery, nil))}
	if cfg.adminAddr != "" {
		// What only the admin endpoint shows is recorded only when it
		// is on: without it, the data path pays nothing for them.
		m.golden, m.decisions = admin.NewGolden(0), admin.NewDecisionLog()
	}
	// From here on every failure goes through Close, which undoes
	// whatever part of the mesh was built, whatever that part is.
	fail := func(err error) (*Mesh, error) {
		m.Close()
		return nil, err
	}
	tel, err := setupTelemetry(ctx, &cfg)
	if err != nil {
		return nil, err
	}
	m.tel = tel
	m.grpcTraceCtx = telemetry.ServerTraceContext(tel.Options()...)
	m.grpcOutCtx = telemetry.ClientTraceContext(tel.Options()...)
	if m.metrics, err = telemetry.NewMetrics(tel.Options()...); err != nil {
		return fail(err)
	}
	if m.id, err = setupIdentity(ctx, &cfg); err != nil {
		return fail(err)
	}
	if cfg.authzPolicyFile != "" {
		wl := cfg.workload
		if wl.Service == "" {
			wl.Service = cfg.serviceName
		}
		// The mesh logs the watcher's reloads and refusals itself
		// (watchPolicy), as lines of its own.
		w, err := security.WatchPolicyFile(cfg.authzPolicyFile, security.WithLogger(slog.New(slog.DiscardHandler)), security.WithWorkload(wl))
		if err != nil {
			return fail(&EnvError{Var: EnvAuthzPolicy, Value: cfg.authzPolicyFile, Err: err})
		}
		m.authz = w
	}
	m.ctx, m.cancel = context.WithCancel(context.WithoutCancel(ctx))

	var dnsOpts []resolver.DNSOption
	if cfg.dnsRefresh > 0 {
		dnsOpts = append(dnsOpts, resolver.WithRefreshInterval(cfg.dnsRefresh))
	}
	if cfg.netResolver != nil {
		dnsOpts = append(dnsOpts, resolver.WithNetResolver(cfg.netResolver))
	}
	m.static = resolver.NewStatic(cfg.endpoints)
	m.dns = resolver.NewDNS(dnsOpts...)
	m.names = map[string]string{}
	for name := range cfg.endpoints {
		m.names[name] = name
	}
	for name := range cfg.dnsServices {
		if _, dup := cfg.endpoints[name]; dup {
			return fail(fmt.Errorf("mesh: service %q has both static endpoints and a DNS name", name))
		}
		m.names[name] = name
	}
	m.disc = &meshDiscovery{m: m}
	m.grpcRes = resolver.NewGRPCBuilder(grpcScheme, m.disc, m.grpcServiceName)
	m.grpcLB, m.releaseGRPCLB = balancer.GRPCServiceConfigFor(m.policy)
	empty := map[string]*service{}
	m.services.Store(&empty)

	if cfg.bootstrap != nil {
		x, err := newXDSPath(m, cfg.bootstrap, cfg.bootstrapSource)
		if err != nil {
			return fail(err)
		}
		m.xds = x
		if t := x.serverTemplate; t != "" {
			m.inbound = newInboundXDS(x, t)
		}
	}
	m.http2 = cfg.http2
	m.base = newBaseTransport()
	m.meshBase = m.meshTransport(m.base)
	m.client = &http.Client{Transport: m.Transport(nil)}

	if m.unobserve, err = m.metrics.ObserveEndpoints(m.observeEndpoints); err != nil {
		return fail(err)
	}
	if cfg.adminAddr != "" {
		if err := m.startAdmin(cfg.adminAddr); err != nil {
			return fail(&EnvError{Var: EnvAdminAddr, Value: cfg.adminAddr, Err: err})
		}
	}
	m.watchIdentity()
	m.watchPolicy()
	m.logStart()
	return m, nil
}

// newBaseTransport is the transport behind Transport(nil): net/http's
// defaults, with an idle pool sized for a mesh, where every request to a
// service lands on one of few endpoint addresses (net/http keeps only 2 idle
// connections per host by default, which churns connections under load).
// It carries pass-through requests as net/http would; requests to mesh
// endpoints go through a copy set to the mesh's protocol (see
// meshTransport).
func newBaseTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 256
	return t
}

func (m *Mesh) isClosed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}

// mtlsMode is the mode in force: MTLSDisable when the mesh has no identity.
func (m *Mesh) mtlsMode() security.MTLSMode {
	if m.id == nil {
		return security.MTLSDisable
	}
	return m.id.mode
}

// Close stops the mesh: discovery watches, the admin endpoint, servers
// started by ListenAndServe (gracefully, within the shutdown timeout) and
// idle pooled connections. It is idempotent; clients and handlers made by
// the mesh must not be used afterwards.
//
// Close also undoes a mesh that New built only in part, when a later step
// failed: every part it releases may be missing.
func (m *Mesh) Close() error {
	m.once.Do(func() {
		m.mu.Lock()
		m.closed = true
		var services map[string]*service
		if p := m.services.Load(); p != nil {
			services = *p
			empty := map[string]*service{}
			m.services.Store(&empty)
		}
		admin := m.admin
		m.mu.Unlock()

		if m.cancel != nil {
			m.cancel()
		}
		m.tap.Close() // ends the /tap streams
		for _, s := range services {
			s.close()
		}
		if m.inbound != nil {
			m.inbound.close()
		}
		if m.xds != nil {
			m.xds.close()
		}
		if admin != nil {
			admin.Close()
		}
		m.wg.Wait()
		if m.releaseGRPCLB != nil {
			m.releaseGRPCLB()
		}
		if m.static != nil {
			m.static.Close()
		}
		if m.dns != nil {
			m.dns.Close()
		}
		if m.base != nil {
			m.base.CloseIdleConnections()
		}
		if t, ok := m.meshBase.(*http.Transport); ok {
			t.CloseIdleConnections()
		}
		if m.authz != nil {
			m.authz.Close()
		}
		m.id.close()
		if m.unobserve != nil {
			m.unobserve()
		}
		if m.tel != nil {
			m.shutdownTelemetry()
		}
	})
	return nil
}

// service is a set of endpoints the HTTP path balances over: a mesh
// service from static or DNS discovery, or an xDS cluster. It is created on
// first use; its balancer and resilience state can be replaced when the
// control plane changes the cluster's policy.
type service struct {
	name    string
	bal     atomic.Pointer[balancer.Cluster]
	res     atomic.Pointer[serviceResilience]
	cancel  func()
	ready   chan struct{} // closed at the first endpoint update (or failure)
	once    sync.Once
	lastErr atomic.Pointer[error]
	used    atomic.Bool // xDS clusters: set by requests, cleared by the idle sweep
	closed  atomic.Bool // set by close: the idle sweep or the mesh's Close ended it
	// requests counts finished requests, for the admin page's rates.
	requests atomic.Uint64
	stats    *telemetry.ClusterMetrics
	// upstream is set for xDS clusters with upstream TLS: the transport
	// that verifies the cluster's allowed SPIFFE IDs, or why there is none.
	upstream atomic.Pointer[upstreamTLS]
	// proto is set for xDS clusters without upstream TLS whose protocol
	// is not the mesh's: the transport speaking it.
	proto atomic.Pointer[protoTransport]
	// resolveNow asks discovery to look again after a connection failure;
	// set before the service is published, never changed.
	resolveNow func()
	// dnsTarget is the DNS name of an xDS LOGICAL_DNS cluster, which CDS
	// may change while requests read it.
	dnsTarget atomic.Pointer[string]
	// policy is an xDS cluster's composed balancing policy, which gRPC
	// channels run on their own sub-connections; changes (policy,
	// endpoints, errors) are told to subs. pins counts the channels
	// following the cluster, which the idle sweep leaves alone.
	policy atomic.Pointer[clusterPolicy]
	gen    atomic.Uint64 // numbers the policies
	subs   subscribers
	pins   atomic.Int32
	// clusterOpts are given to each balancer the service builds (the
	// ejection log).
	clusterOpts []balancer.ClusterOption
	// mirrors counts the mirrored copies in flight to this cluster,
	// against maxMirrorsInFlight.
	mirrors atomic.Int32
	// cds is an xDS cluster's last CDS resource, for /explain.
	cds atomic.Pointer[xds.Cluster]
	// load counts an xDS cluster's requests for LRS while its lrs_server
	// is set; nil otherwise, and then requests count nothing.
	load atomic.Pointer[lrsLoad]
}

func newService(name string, policy balancer.Builder, config any, res serviceResilience, opts ...balancer.ClusterOption) *service {
	s := &service{name: name, ready: make(chan struct{}), clusterOpts: opts}
	s.bal.Store(balancer.NewCluster(policy, config, opts...))
	s.res.Store(&res)
	return s
}

// balancer returns the service's current balancing state.
func (s *service) balancer() *balancer.Cluster { return s.bal.Load() }

// markReady lets requests waiting for the service's first update go on.
// Every change to the service's endpoints, policy or error ends with it,
// so it also tells the subscribers.
func (s *service) markReady() {
	s.once.Do(func() { close(s.ready) })
	s.subs.notify()
}

// subscribe calls f after each change to the service; f must not block.
func (s *service) subscribe(f func()) (cancel func()) { return s.subs.subscribe(f) }

// setErr records the latest discovery error (nil clears it).
func (s *service) setErr(err error) {
	if err == nil {
		s.lastErr.Store(nil)
		return
	}
	s.lastErr.Store(&err)
}

func (s *service) close() {
	s.closed.Store(true)
	if s.cancel != nil {
		s.cancel()
	}
	s.closeIdle()
	s.balancer().Close()
}

// closeIdle closes the idle connections of the transports an xDS cluster
// has of its own, if it has any (see upstreamTLS and protoTransport).
func (s *service) closeIdle() {
	s.upstream.Load().closeIdle()
	s.proto.Load().closeIdle()
}

// waitReady blocks until discovery has answered once for s, or ctx ends.
func (s *service) waitReady(ctx context.Context) error {
	select {
	case <-s.ready:
		return nil
	default:
	}
	select {
	case <-s.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("weft: service %q: waiting for discovery: %w", s.name, ctx.Err())
	}
}

// errClosed is returned for requests to mesh services after Close: they
// must fail rather than leak out to whatever DNS says the name is.
var errClosed = errors.New("weft: mesh is closed")

// lookup returns the mesh service a URL host names; ok is false when the
// host is not a mesh service. The hot path is two map reads and no lock.
func (m *Mesh) lookup(host string) (s *service, ok bool, err error) {
	name, ok := m.serviceName(host)
	if !ok {
		return nil, false, nil
	}
	if s := (*m.services.Load())[name]; s != nil {
		return s, true, nil
	}
	if s := m.addService(name); s != nil {
		return s, true, nil
	}
	return nil, true, errClosed
}

// serviceName maps a host or gRPC target ("orders", "orders:8080") to a
// configured mesh service: the exact name first, then the host alone.
func (m *Mesh) serviceName(host string) (string, bool) {
	if name, ok := m.names[host]; ok {
		return name, true
	}
	h, port := resolver.SplitHostPort(host)
	if port == "" {
		return "", false
	}
	name, ok := m.names[h]
	return name, ok
}

func (m *Mesh) addService(name string) *service {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := *m.services.Load()
	if s := cur[name]; s != nil {
		return s
	}
	if m.closed {
		return nil
	}
	s := newService(name, m.policy, nil, m.newServiceResilience(), m.logEjections(name))
	s.stats = m.metrics.Cluster(name)
	m.addBreaker(s)
	s.resolveNow = func() { m.disc.ResolveNow(name) }
	s.cancel = m.disc.Watch(name, resolver.WatcherFunc(func(st resolver.State) {
		s.setErr(st.Err)
		if st.Err != nil {
			m.log.Warn("weft: discovery error", "service", name, "error", st.Err)
		}
		if st.Err == nil || len(st.Endpoints) > 0 {
			s.balancer().Update(st.Endpoints)
		}
		s.markReady()
	}))
	next := make(map[string]*service, len(cur)+1)
	for k, v := range cur {
		next[k] = v
	}
	next[name] = s
	m.services.Store(&next)
	return s
}

// meshDiscovery routes a service name to the discovery that owns it:
// static entries, configured DNS names, and otherwise DNS on the name
// itself (how a gRPC target that is no mesh service still resolves).
type meshDiscovery struct{ m *Mesh }

func (d *meshDiscovery) route(name string) (resolver.Discovery, string) {
	if d.m.static.Has(name) {
		return d.m.static, name
	}
	if target, ok := d.m.cfg.dnsServices[name]; ok {
		return d.m.dns, target
	}
	return d.m.dns, name
}

func (d *meshDiscovery) Watch(name string, w resolver.Watcher) func() {
	disc, target := d.route(name)
	return disc.Watch(target, w)
}

func (d *meshDiscovery) ResolveNow(name string) {
	disc, target := d.route(name)
	disc.ResolveNow(target)
}

func (d *meshDiscovery) Close() error { return nil } // the Mesh closes the parts

// listen opens a TCP listener, with the error naming the address.
func listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("weft: listen on %s: %w", addr, err)
	}
	return ln, nil
}
