package mesh

import (
	"context"
	"net/http"
	"time"

	"google.golang.org/grpc"

	"github.com/weftmesh/weft/internal/stackroom"
	"github.com/weftmesh/weft/telemetry"
)

// setupTelemetry builds the mesh's providers: the ones given by option,
// otherwise OpenTelemetry's OTEL_* variables (nothing set: no-op providers,
// so a service without telemetry pays almost nothing). To use providers
// installed globally with otel.SetTracerProvider, pass them with
// WithTracerProvider(otel.GetTracerProvider()).
func setupTelemetry(ctx context.Context, cfg *config) (*telemetry.Telemetry, error) {
	opts := []telemetry.Option{
		telemetry.WithServiceName(cfg.serviceName),
		telemetry.WithTracerProvider(cfg.tracerProvider), // nil is ignored
		telemetry.WithMeterProvider(cfg.meterProvider),
	}
	if cfg.adminAddr != "" {
		// The admin endpoint serves /metrics whenever it is on, whatever
		// OTEL_METRICS_EXPORTER says (that variable picks where metrics
		// are also pushed), and no second port is opened for them.
		opts = append(opts, telemetry.WithPrometheus(), telemetry.WithPrometheusListener(false))
	}
	return telemetry.Setup(ctx, opts...)
}

// instrumentClient wraps a mesh transport with a client span per logical
// request, above the retry layer: attempts and retries appear on that span.
func (m *Mesh) instrumentClient(rt http.RoundTripper) http.RoundTripper {
	return telemetry.NewHTTPTransport(rt, m.tel.Options()...)
}

// instrumentServer is the outermost inbound middleware: the server span
// covers everything the mesh does, authorization denials included.
func (m *Mesh) instrumentServer(next http.Handler) http.Handler {
	return telemetry.NewHTTPHandler(next, m.tel.Options()...)
}

// grpcClientTelemetry returns a gRPC channel's stats handler, or, with
// telemetry off, the interceptors to put innermost among the mesh's
// (last) that do all that handler would: put the trace context in the
// call's metadata. grpc-go builds its stats events for a stats handler,
// some six allocations a call, even when the handler ignores them. The
// stats handler stays when something may run after the mesh's
// interceptors and change the trace context (after): the caller's own
// options, grpc-go's xDS client (its config selector's interceptors).
func (m *Mesh) grpcClientTelemetry(after bool) (tel, last []grpc.DialOption) {
	if m.grpcOutCtx == nil || after {
		return []grpc.DialOption{grpc.WithStatsHandler(telemetry.ClientStatsHandler(m.tel.Options()...))}, nil
	}
	c := clientTrace{m.grpcOutCtx}
	return nil, []grpc.DialOption{grpc.WithChainUnaryInterceptor(c.unary), grpc.WithChainStreamInterceptor(c.stream)}
}

// clientTrace puts a call's trace context in its outgoing metadata.
type clientTrace struct {
	outgoing func(context.Context) context.Context
}

func (c clientTrace) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	// The mesh's only interceptor on a channel to a scheme it leaves to
	// grpc-go: the call's room on the stack is made here if no interceptor
	// above made it (see internal/stackroom).
	stackroom.Reserve8K()
	return invoker(c.outgoing(ctx), method, req, reply, cc, opts...)
}

func (c clientTrace) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return streamer(c.outgoing(ctx), desc, cc, method, opts...)
}

// grpcServerFirst returns a gRPC server's telemetry options and its
// first interceptors (firstServer). With telemetry off the stats handler
// would only take the caller's trace context into the call's: the first
// interceptor does it instead and the server has no stats handler, for
// which grpc-go builds its stats events, some sixteen allocations a
// call, even when the handler ignores them. Not so when something may run
// ahead of the first interceptor and read that context (ahead): the
// caller's own options (a grpc.UnaryInterceptor runs before every chained
// one), grpc-go's xDS server (its interceptors come first).
//
// Without options of the caller's, none of which can then set a tap
// handle (grpc-go allows one), the server's tap handle (firstServer.scan)
// reads each call's metadata once, so that the first interceptor need
// not scan it for every spelling of x-forwarded-client-cert and every
// trace context key, about a microsecond a call.
func (m *Mesh) grpcServerFirst(ahead bool) (tel, first []grpc.ServerOption) {
	f := &firstServer{m: m}
	if m.grpcTraceCtx != nil && !ahead {
		f.traceCtx = m.grpcTraceCtx
		f.traceKeys = telemetry.TraceContextKeys(m.tel.Options()...)
	} else {
		tel = []grpc.ServerOption{grpc.StatsHandler(telemetry.ServerStatsHandler(m.tel.Options()...))}
	}
	first = []grpc.ServerOption{grpc.ChainUnaryInterceptor(f.unary), grpc.ChainStreamInterceptor(f.stream)}
	if !ahead {
		f.scanned = true
		first = append(first, grpc.InTapHandle(f.scan))
	}
	return tel, first
}

func (m *Mesh) shutdownTelemetry() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.tel.Shutdown(ctx); err != nil {
		m.log.Warn("weft: flushing telemetry", "error", err)
	}
}

// observeEndpoints reports each cluster's endpoints by state for the
// weft.cluster.endpoints gauge, at collection time only.
func (m *Mesh) observeEndpoints(observe func(cluster, state string, count int64)) {
	for _, c := range m.Clusters() {
		counts := map[string]int64{"healthy": 0, "ejected": 0, "unhealthy": 0}
		for _, e := range c.Endpoints {
			switch {
			case e.Ejected:
				counts["ejected"]++
			case e.Health == "UNHEALTHY" || e.Health == "DRAINING":
				counts["unhealthy"]++
			default:
				counts["healthy"]++
			}
		}
		for state, n := range counts {
			observe(c.Service, state, n)
		}
	}
}
