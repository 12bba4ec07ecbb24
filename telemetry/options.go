package telemetry

import (
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// An Option configures Setup or one of the instrumentation constructors
// (NewHTTPTransport, NewHTTPHandler, ClientStatsHandler, ServerStatsHandler,
// NewMetrics). Each option's documentation says where it applies; elsewhere
// it is ignored. Options given nil arguments are ignored.
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// config is what the options set. Zero values mean "not given".
type config struct {
	tracerProvider trace.TracerProvider
	meterProvider  metric.MeterProvider
	propagator     propagation.TextMapPropagator
	serviceName    string
	prometheus     bool
	promListener   *bool // nil: the default, a listener when the variables select prometheus
}

func newConfig(opts []Option) config {
	var c config
	for _, o := range opts {
		if o != nil {
			o.apply(&c)
		}
	}
	return c
}

// WithTracerProvider sets the tracer provider. Given to Setup, it replaces
// the one OTEL_TRACES_EXPORTER would build, and Shutdown leaves it alone.
// Given to an instrumentation constructor, it is where spans go; without it
// they go to otel.GetTracerProvider().
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(c *config) {
		if tp != nil {
			c.tracerProvider = tp
		}
	})
}

// WithMeterProvider sets the meter provider. Given to Setup, it replaces the
// one OTEL_METRICS_EXPORTER would build, and Shutdown leaves it alone. Given
// to an instrumentation constructor or NewMetrics, it is where measurements
// go; without it they go to otel.GetMeterProvider().
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) {
		if mp != nil {
			c.meterProvider = mp
		}
	})
}

// WithPropagator sets how trace context and baggage cross process
// boundaries. Given to Setup, it replaces OTEL_PROPAGATORS. Given to an
// instrumentation constructor, it is what injects and extracts headers;
// without it that is W3C tracecontext and baggage, not the global
// propagator, which OpenTelemetry leaves a no-op until someone sets it.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return optionFunc(func(c *config) {
		if p != nil {
			c.propagator = p
		}
	})
}

// WithServiceName sets the service.name resource attribute (Setup only).
// It takes precedence over OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES,
// because the mesh resolves the name (WEFT_SERVICE_NAME first) before
// calling Setup. An empty name is ignored.
func WithServiceName(name string) Option {
	return optionFunc(func(c *config) {
		if name != "" {
			c.serviceName = name
		}
	})
}

// WithPrometheus makes Setup add a Prometheus reader to the meter provider
// it builds, whatever OTEL_METRICS_EXPORTER says, so that
// Telemetry.MetricsHandler can serve /metrics on the admin endpoint. It has
// no effect when WithMeterProvider is given, since Weft cannot add a reader
// to a provider it did not build.
func WithPrometheus() Option {
	return optionFunc(func(c *config) { c.prometheus = true })
}

// WithPrometheusListener says whether Setup starts the standalone Prometheus
// listener on OTEL_EXPORTER_PROMETHEUS_HOST:OTEL_EXPORTER_PROMETHEUS_PORT
// when OTEL_METRICS_EXPORTER=prometheus (Setup only). The default, on, is
// what the specification and autoexport do; a mesh that serves
// MetricsHandler on its admin endpoint may turn it off to hold one port
// fewer. WithPrometheus alone never starts the listener.
func WithPrometheusListener(on bool) Option {
	return optionFunc(func(c *config) { c.promListener = &on })
}

// defaultPropagator is W3C tracecontext and baggage: what OTEL_PROPAGATORS
// defaults to, and what the mesh speaks unless told otherwise.
func defaultPropagator() propagation.TextMapPropagator {
	return w3cPropagator{propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})}
}

// w3cPropagator is the default propagator, W3C trace context and baggage,
// marked so that the handlers know which headers it reads (see extract).
type w3cPropagator struct{ propagation.TextMapPropagator }

// isW3C reports whether p is the default propagator.
func isW3C(p propagation.TextMapPropagator) bool {
	_, ok := p.(w3cPropagator)
	return ok
}

func (c *config) propagatorOrDefault() propagation.TextMapPropagator {
	if c.propagator != nil {
		return c.propagator
	}
	return defaultPropagator()
}

func (c *config) meterProviderOrGlobal() metric.MeterProvider {
	if c.meterProvider != nil {
		return c.meterProvider
	}
	return otel.GetMeterProvider()
}

func (c *config) tracerProviderOrGlobal() trace.TracerProvider {
	if c.tracerProvider != nil {
		return c.tracerProvider
	}
	return otel.GetTracerProvider()
}
