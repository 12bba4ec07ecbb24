package telemetry

import (
	"context"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
)

// ClientStatsHandler returns a gRPC stats handler, for
// grpc.WithStatsHandler, that makes each RPC a client span whose context
// goes out in the request metadata, and measures it with the
// rpc.client.call.duration histogram. It takes WithTracerProvider,
// WithMeterProvider and WithPropagator. With both providers no-op it only
// passes the caller's trace context on, at no cost when there is none.
//
// The handler is safe for concurrent use, as gRPC requires.
func ClientStatsHandler(opts ...Option) stats.Handler {
	c := newConfig(opts)
	if c.off() {
		return newPropagatingStats(c.propagatorOrDefault(), true)
	}
	return otelgrpc.NewClientHandler(c.otelgrpcOptions()...)
}

// ServerStatsHandler returns a gRPC stats handler, for grpc.StatsHandler,
// that makes each RPC a server span, a child of the caller's span when the
// metadata carries trace context, and measures it with the
// rpc.server.call.duration histogram. It takes WithTracerProvider,
// WithMeterProvider and WithPropagator. With both providers no-op it only
// takes the caller's trace context into the RPC's context, so a trace
// still crosses this hop.
//
// The handler is safe for concurrent use, as gRPC requires.
func ServerStatsHandler(opts ...Option) stats.Handler {
	c := newConfig(opts)
	if c.off() {
		return newPropagatingStats(c.propagatorOrDefault(), false)
	}
	return otelgrpc.NewServerHandler(c.otelgrpcOptions()...)
}

// ServerTraceContext returns nil when ServerStatsHandler(opts...) would
// make spans or measurements. With both providers no-op it returns all
// that handler would do for a call: take the caller's trace context from
// the call's incoming metadata into its context. A server that calls it
// first thing in its interceptors can then go without the stats handler,
// for which grpc-go builds its stats events, some fifteen allocations a
// call, even when the handler ignores them. The function is safe for
// concurrent use.
func ServerTraceContext(opts ...Option) func(context.Context) context.Context {
	c := newConfig(opts)
	if !c.off() {
		return nil
	}
	return newPropagatingStats(c.propagatorOrDefault(), false).incoming
}

// TraceContextKeys are the metadata keys ServerTraceContext's function
// reads, the propagator's fields: a server that finds none of them in a
// call's metadata need not call it. They are in lower case, as gRPC
// metadata keys arrive (HTTP/2 allows no other), so that a server can
// compare them as they are.
func TraceContextKeys(opts ...Option) []string {
	c := newConfig(opts)
	fields := c.propagatorOrDefault().Fields()
	keys := make([]string, len(fields))
	for i, f := range fields {
		keys[i] = strings.ToLower(f)
	}
	return keys
}

// ClientTraceContext is ServerTraceContext for ClientStatsHandler: nil
// when that handler would make spans or measurements; with both providers
// no-op, all it would do for a call: put the context's trace context in
// the call's outgoing metadata. A client that calls it innermost in its
// interceptors, just before the invoker or streamer, can go without the
// stats handler.
func ClientTraceContext(opts ...Option) func(context.Context) context.Context {
	c := newConfig(opts)
	if !c.off() {
		return nil
	}
	return newPropagatingStats(c.propagatorOrDefault(), true).outgoing
}

func (c *config) otelgrpcOptions() []otelgrpc.Option {
	return []otelgrpc.Option{
		otelgrpc.WithTracerProvider(c.tracerProviderOrGlobal()),
		otelgrpc.WithMeterProvider(c.meterProviderOrGlobal()),
		otelgrpc.WithPropagators(c.propagatorOrDefault()),
	}
}

// propagatingStats is the stats handler with telemetry off: otelgrpc
// would cost some 30 allocations an RPC making spans and measurements
// that are thrown away, while carrying the trace context is all a hop
// owes the trace.
type propagatingStats struct {
	prop   propagation.TextMapPropagator
	client bool
	// fields are the keys the propagator reads, asked once: the composite
	// propagator builds the list afresh on every call.
	fields []string
}

func newPropagatingStats(prop propagation.TextMapPropagator, client bool) *propagatingStats {
	return &propagatingStats{prop: prop, client: client, fields: prop.Fields()}
}

func (p *propagatingStats) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	if p.client {
		return p.outgoing(ctx)
	}
	return p.incoming(ctx)
}

// outgoing puts ctx's trace context, if it has one, in its outgoing
// metadata.
func (p *propagatingStats) outgoing(ctx context.Context) context.Context {
	if !trace.SpanContextFromContext(ctx).IsValid() && baggage.FromContext(ctx).Len() == 0 {
		return ctx
	}
	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	p.prop.Inject(ctx, mdCarrier(md))
	return metadata.NewOutgoingContext(ctx, md)
}

// incoming takes the caller's trace context, if its metadata carry one,
// into ctx.
func (p *propagatingStats) incoming(ctx context.Context) context.Context {
	// Look for the propagator's keys before copying the metadata, which
	// FromIncomingContext does: most calls carry no trace context.
	for _, f := range p.fields {
		if len(metadata.ValueFromIncomingContext(ctx, f)) > 0 {
			md, _ := metadata.FromIncomingContext(ctx)
			return p.prop.Extract(ctx, mdCarrier(md))
		}
	}
	return ctx
}

func (*propagatingStats) HandleRPC(context.Context, stats.RPCStats) {}

func (*propagatingStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}

func (*propagatingStats) HandleConn(context.Context, stats.ConnStats) {}

// mdCarrier adapts gRPC metadata to a TextMapCarrier.
type mdCarrier metadata.MD

func (c mdCarrier) Get(key string) string {
	if v := metadata.MD(c).Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c mdCarrier) Set(key, value string) { metadata.MD(c).Set(key, value) }

func (c mdCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
