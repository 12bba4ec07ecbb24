package telemetry

import (
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc/stats"
)

// ClientStatsHandler returns a gRPC stats handler, for
// grpc.WithStatsHandler, that makes each RPC a client span whose context
// goes out in the request metadata, and measures it with the
// rpc.client.call.duration histogram. It takes WithTracerProvider,
// WithMeterProvider and WithPropagator.
//
// The handler is safe for concurrent use, as gRPC requires.
func ClientStatsHandler(opts ...Option) stats.Handler {
	c := newConfig(opts)
	return otelgrpc.NewClientHandler(c.otelgrpcOptions()...)
}

// ServerStatsHandler returns a gRPC stats handler, for grpc.StatsHandler,
// that makes each RPC a server span, a child of the caller's span when the
// metadata carries trace context, and measures it with the
// rpc.server.call.duration histogram. It takes WithTracerProvider,
// WithMeterProvider and WithPropagator.
//
// The handler is safe for concurrent use, as gRPC requires.
func ServerStatsHandler(opts ...Option) stats.Handler {
	c := newConfig(opts)
	return otelgrpc.NewServerHandler(c.otelgrpcOptions()...)
}

func (c *config) otelgrpcOptions() []otelgrpc.Option {
	return []otelgrpc.Option{
		otelgrpc.WithTracerProvider(c.tracerProviderOrGlobal()),
		otelgrpc.WithMeterProvider(c.meterProviderOrGlobal()),
		otelgrpc.WithPropagators(c.propagatorOrDefault()),
	}
}
