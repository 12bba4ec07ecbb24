package mesh

import (
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	gresolver "google.golang.org/grpc/resolver"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/internal/xds"
	"github.com/weftmesh/weft/resilience"
	"github.com/weftmesh/weft/resolver"
	"github.com/weftmesh/weft/security"
	"github.com/weftmesh/weft/telemetry/admin"
)

// An Option configures New. Options are applied after the environment, so
// an option overrides the variable it corresponds to.
type Option interface{ apply(*config) error }

type optionFunc func(*config) error

func (f optionFunc) apply(c *config) error { return f(c) }

// config is everything New needs, from the environment and options.
type config struct {
	envWarnings     []string // unknown WEFT_* variables, logged by New
	serviceName     string
	endpoints       map[string][]resolver.Endpoint // static discovery
	dnsServices     map[string]string              // service -> DNS name
	dnsRefresh      time.Duration
	netResolver     *net.Resolver // nil: net.DefaultResolver; set only by tests
	bootstrap       []byte        // xDS bootstrap JSON; nil = no control plane
	bootstrapSource string        // the variable or option it came from, for errors
	lbPolicy        string
	cswrr           balancer.Builder // set by WithClientSideWRR: lbPolicy with its settings
	mtls            security.MTLSMode
	spiffeSocket    string
	source          security.Source // set by WithX509Source; owned by the caller
	svidCertFile    string
	svidKeyFile     string
	bundleFile      string
	authzPolicyFile string
	workload        security.Workload // Service is filled in by New
	adminAddr       string
	adminPprof      bool
	adminHosts      []string // Host values the admin listener answers besides loopback and its own
	http2           bool     // HTTP/2 to mesh endpoints: h2c in the clear, h2 over mTLS
	retry           resilience.RetryPolicy
	outlier         balancer.OutlierConfig
	zone            balancer.ZoneAwareConfig
	slowStart       balancer.SlowStartConfig
	slowStartSource string // the variable or option that set it, for errors
	// hashHeader and hashCookie are the hash source of ring_hash and
	// maglev outside xDS; hashSource names what set the last, for errors.
	hashHeader, hashCookie, hashSource string
	session                            *xds.SessionCookie // nil: no session affinity
	orca                               *orcaConfig        // nil: no backend metrics (WithBackendMetrics)
	xdsIdle                            time.Duration
	xdsDelta                           bool // incremental xDS instead of state of the world
	// grpcGoXDS, when set, hands xds:/// channels and NewGRPCServer to
	// grpc-go's own xDS client instead of the mesh's.
	grpcGoXDS       GRPCGoXDS
	limits          resilience.Limits
	hedge           *resilience.HedgePolicy     // nil: no hedging
	breaker         *resilience.BreakerSettings // nil: no classic breaker
	rateLimit       *rateLimit                  // nil: no inbound rate limit
	shutdownTimeout time.Duration
	logger          *slog.Logger
	tracerProvider  trace.TracerProvider
	meterProvider   metric.MeterProvider
}

// WithServiceName names this service, for telemetry and identity; it
// overrides WEFT_SERVICE_NAME.
func WithServiceName(name string) Option {
	return optionFunc(func(c *config) error {
		if name == "" {
			return fmt.Errorf("mesh: WithServiceName: empty name")
		}
		c.serviceName = name
		return nil
	})
}

// WithEndpoints adds a static service: requests to http://service/... and
// gRPC dials of "service" are balanced over addrs (host:port each). It
// replaces the service's entry from WEFT_ENDPOINTS, if any; call it once
// per service.
func WithEndpoints(service string, addrs ...string) Option {
	return optionFunc(func(c *config) error {
		spec := service + "=" + strings.Join(addrs, ",")
		parsed, err := resolver.ParseEndpoints(spec)
		if err != nil {
			return fmt.Errorf("mesh: WithEndpoints(%q): %w", service, err)
		}
		if c.endpoints == nil {
			c.endpoints = map[string][]resolver.Endpoint{}
		}
		for k, v := range parsed {
			c.endpoints[k] = v
		}
		return nil
	})
}

// WithDNS makes service a mesh service discovered through DNS: dnsName is
// host:port (A and AAAA records) or an SRV name such as
// "_grpc._tcp.inventory.default.svc.cluster.local". It overrides the
// service's entry in WEFT_DNS.
func WithDNS(service, dnsName string) Option {
	return optionFunc(func(c *config) error {
		if service == "" {
			return fmt.Errorf("mesh: WithDNS: empty service name")
		}
		if err := resolver.ValidateDNSName(dnsName); err != nil {
			return fmt.Errorf("mesh: WithDNS(%q, %q): %w", service, dnsName, err)
		}
		if c.dnsServices == nil {
			c.dnsServices = map[string]string{}
		}
		c.dnsServices[service] = dnsName
		return nil
	})
}

// WithBootstrap sets the xDS bootstrap (gRPC's JSON format), as
// GRPC_XDS_BOOTSTRAP_CONFIG would; it overrides both bootstrap variables.
func WithBootstrap(bootstrapJSON []byte) Option {
	return optionFunc(func(c *config) error {
		if err := checkBootstrap(bootstrapJSON); err != nil {
			return fmt.Errorf("mesh: WithBootstrap: %w", err)
		}
		c.bootstrap, c.bootstrapSource = bootstrapJSON, "WithBootstrap"
		return nil
	})
}

// WithLBPolicy sets the balancer for services not configured by xDS
// (a registered balancer name such as "round_robin"); it overrides
// WEFT_LB_POLICY.
func WithLBPolicy(name string) Option {
	return optionFunc(func(c *config) error {
		if err := checkLBPolicy(name); err != nil {
			return fmt.Errorf("mesh: WithLBPolicy: %w", err)
		}
		c.lbPolicy, c.cswrr = name, nil
		return nil
	})
}

// WithMTLS sets the mutual-TLS mode; it overrides WEFT_MTLS.
func WithMTLS(mode security.MTLSMode) Option {
	return optionFunc(func(c *config) error {
		if mode > security.MTLSDisable {
			return fmt.Errorf("mesh: WithMTLS: unknown mode %d", mode)
		}
		c.mtls = mode
		return nil
	})
}

// WithX509Source gives the service its SPIFFE identity from src (a
// security.NewFileSource, a Workload API source, or your own), instead of
// SPIFFE_ENDPOINT_SOCKET or the SVID file variables. The mesh does not
// close src.
func WithX509Source(src security.Source) Option {
	return optionFunc(func(c *config) error {
		if src == nil {
			return fmt.Errorf("mesh: WithX509Source: nil source")
		}
		c.source = src
		return nil
	})
}

// WithAuthorizationPolicyFile enforces the Istio AuthorizationPolicy
// documents in path on the mesh's servers, reloading the file when it
// changes; it overrides WEFT_AUTHZ_POLICY.
func WithAuthorizationPolicyFile(path string) Option {
	return optionFunc(func(c *config) error {
		if path == "" {
			return fmt.Errorf("mesh: WithAuthorizationPolicyFile: empty path")
		}
		c.authzPolicyFile = path
		return nil
	})
}

// WithWorkload places this service for the authorization policy file:
// its namespace and labels (Service defaults to the mesh's service name).
// Policies of other namespaces, and those whose selector or targetRefs
// name other workloads, then do not apply, so one file can hold a
// namespace's policies as istiod serves them. It overrides WEFT_NAMESPACE
// and WEFT_WORKLOAD_LABELS.
func WithWorkload(w security.Workload) Option {
	return optionFunc(func(c *config) error {
		c.workload = w
		return nil
	})
}

// WithOutlierDetection sets how endpoints of services not configured by
// xDS are ejected after failing (the zero value is Envoy's defaults: five
// consecutive errors, 30 s growing with each ejection, at most 10% of a
// service's endpoints); it overrides WEFT_OUTLIER_CONSECUTIVE_ERRORS.
func WithOutlierDetection(cfg balancer.OutlierConfig) Option {
	return optionFunc(func(c *config) error {
		for _, d := range []struct {
			name string
			d    time.Duration
		}{{"Interval", cfg.Interval}, {"BaseEjectionTime", cfg.BaseEjectionTime}, {"MaxEjectionTime", cfg.MaxEjectionTime}} {
			// Zero and negative values mean the defaults; a positive one
			// below the floor would run ejection sweeps in a loop.
			if d.d > 0 {
				if err := checkDuration(d.d, minDuration); err != nil {
					return fmt.Errorf("mesh: WithOutlierDetection: %s: %w", d.name, err)
				}
			}
		}
		c.outlier = cfg
		return nil
	})
}

// WithXDSIdleTimeout sets how long an xDS-configured host or cluster may go
// unused before the mesh unsubscribes from its resources (default 5 min).
// The control plane hears of it with the mesh's next new subscription
// (a state-of-the-world server need not answer a request that only
// removes names); until then a request for it is served at once from
// what the control plane last sent, and afterwards it subscribes again,
// waiting one round trip.
func WithXDSIdleTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) error {
		if err := checkDuration(d, minDuration); err != nil {
			return fmt.Errorf("mesh: WithXDSIdleTimeout: %w", err)
		}
		c.xdsIdle = d
		return nil
	})
}

// WithXDSDelta makes the xDS client speak incremental (delta) xDS to the
// control plane instead of state of the world; it overrides
// WEFT_XDS_DELTA. The control plane must serve DeltaAggregatedResources.
func WithXDSDelta(on bool) Option {
	return optionFunc(func(c *config) error { c.xdsDelta = on; return nil })
}

// GRPCGoXDS is grpc-go's own xDS client, which WithGRPCGoXDS puts behind
// the mesh's gRPC. Package mesh/grpcgoxds provides it. The mesh package
// itself does not import grpc-go's xDS client, so a binary that never asks
// for it does not carry it (about a fifth of a minimal service's size).
type GRPCGoXDS interface {
	// NewResolver returns grpc-go's xDS resolver built from bootstrap, the
	// one the mesh read.
	NewResolver(bootstrap []byte) (gresolver.Builder, error)
	// NewServer returns grpc-go's xDS-managed server on bootstrap, with
	// opts (the mesh's credentials and interceptors, then the caller's).
	NewServer(bootstrap []byte, opts ...grpc.ServerOption) (GRPCServer, error)
}

// WithGRPCGoXDS hands gRPC to grpc-go's own xDS client x (grpcgoxds.New()):
// DialGRPC with an "xds:///" target and NewGRPCServer under a server
// listener template then run grpc-go's xDS resolver, balancers and server
// instead of the mesh's. It costs one ADS stream per channel and per
// server on top of the mesh's own, which istio-agent (one stream per
// workload) answers by closing the previous stream, and gRPC then gets
// grpc-go's features, not the mesh's (no hedging, zone-aware routing,
// slow start, cookie affinity or per-try timeouts, and no delta xDS). It
// exists for comparison and migration; nil, the default, is the mesh's
// one stream for everything. grpc-go's public API reads its bootstrap from
// GRPC_XDS_BOOTSTRAP or GRPC_XDS_BOOTSTRAP_CONFIG when the process starts,
// so the mesh's must come from there too (see package grpcgoxds).
func WithGRPCGoXDS(x GRPCGoXDS) Option {
	return optionFunc(func(c *config) error { c.grpcGoXDS = x; return nil })
}

// WithHTTP2 makes the mesh's HTTP client speak HTTP/2 to mesh endpoints:
// with prior knowledge (h2c) in the clear, and by ALPN over mutual TLS. It
// overrides WEFT_HTTP_PROTOCOL. Off, the default, requests go over
// HTTP/1.1 both ways, as Istio's sidecars keep an HTTP/1.1 caller's
// protocol between them unless told to upgrade (h2UpgradePolicy): Go's
// HTTP/1.1 costs less per request than its HTTP/2, while HTTP/2 carries
// many callers' requests on one connection (one TLS handshake per endpoint
// rather than one per concurrent request). Servers started by Serve or
// ListenAndServe accept both, whatever this says.
//
// An xDS cluster's CDS HttpProtocolOptions (typed_extension_protocol_options,
// or the deprecated http2_protocol_options) override it for that cluster,
// as Envoy honours them: explicit HTTP/1.1 or HTTP/2 is spoken whatever
// this says (istiod asks for HTTP/2 on ports declared http2 or grpc and
// under h2UpgradePolicy UPGRADE); auto_config lets ALPN choose over TLS,
// offering h2 and http/1.1, and is HTTP/1.1 in the clear; clusters that
// set nothing, use_downstream_protocol_config (a caller's request has no
// protocol of its own) or HTTP/3 (which is reported as not applied)
// follow this setting. gRPC channels speak HTTP/2 whatever either says.
func WithHTTP2(on bool) Option {
	return optionFunc(func(c *config) error { c.http2 = on; return nil })
}

// WithHTTP2Cleartext is WithHTTP2, under the name it had when HTTP/2 over
// TLS was always negotiated.
//
// Deprecated: use WithHTTP2, which says what it does over TLS too.
func WithHTTP2Cleartext(on bool) Option { return WithHTTP2(on) }

// WithAdminAddr serves the admin endpoint on addr: a live HTML page at /,
// /healthz, /readyz, /clusters, /routes, /stats, /config_dump, /metrics
// (Prometheus text of the mesh's OpenTelemetry metrics, whatever
// OTEL_METRICS_EXPORTER says; see WithMeterProvider) and /debug/pprof/
// (with WithAdminPprof); it overrides WEFT_ADMIN_ADDR. "" turns it off.
func WithAdminAddr(addr string) Option {
	return optionFunc(func(c *config) error {
		if addr != "" {
			if err := checkListenAddr(addr); err != nil {
				return fmt.Errorf("mesh: WithAdminAddr: %w", err)
			}
		}
		c.adminAddr = addr
		return nil
	})
}

// WithAdminHosts names the Host values (host names or addresses; a port
// is ignored) the admin listener answers besides localhost, loopback
// addresses and its own address; it overrides WEFT_ADMIN_HOSTS. Requests
// naming any other host get 421 Misdirected Request, so that a web page
// cannot read the admin endpoint through DNS rebinding.
func WithAdminHosts(hosts ...string) Option {
	return optionFunc(func(c *config) error {
		for _, h := range hosts {
			if err := admin.CheckHost(h); err != nil {
				return fmt.Errorf("mesh: WithAdminHosts: %w", err)
			}
		}
		c.adminHosts = hosts
		return nil
	})
}

// WithAdminPprof serves net/http/pprof under /debug/pprof/ on the admin
// endpoint; it overrides WEFT_ADMIN_PPROF. Off by default: profiles show
// internals an operator should ask for.
func WithAdminPprof(on bool) Option {
	return optionFunc(func(c *config) error { c.adminPprof = on; return nil })
}

// WithShutdownTimeout bounds how long ListenAndServe waits for in-flight
// requests after its context ends (default 10 s); it overrides
// WEFT_SHUTDOWN_TIMEOUT.
func WithShutdownTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) error {
		if err := checkDuration(d, minDuration); err != nil {
			return fmt.Errorf("mesh: WithShutdownTimeout: %w", err)
		}
		c.shutdownTimeout = d
		return nil
	})
}

// WithLogger sets the logger for the mesh's own events; nil keeps
// slog.Default().
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(c *config) error {
		if l != nil {
			c.logger = l
		}
		return nil
	})
}

// WithTracerProvider sets the provider of the mesh's spans; nil keeps the
// global provider (otel.GetTracerProvider()).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(c *config) error {
		if tp != nil {
			c.tracerProvider = tp
		}
		return nil
	})
}

// WithMeterProvider sets the provider of the mesh's metrics; nil, the
// default, has the mesh build one from the OTEL_* variables.
//
// The admin endpoint's /metrics serves the provider the mesh builds itself,
// to which it adds a Prometheus reader. A provider given here was built
// without the mesh, and OpenTelemetry takes readers only when a provider
// is built, so /metrics then answers 404 with a note: to scrape the
// mesh's metrics, give that provider a Prometheus reader and serve it.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) error {
		if mp != nil {
			c.meterProvider = mp
		}
		return nil
	})
}
