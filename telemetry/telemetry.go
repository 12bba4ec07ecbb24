package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// Telemetry holds the providers and propagator one service uses, and owns
// whichever of them Setup built.
//
// A Telemetry is safe for concurrent use. Its providers stay usable after
// Shutdown but export nothing more.
type Telemetry struct {
	tp      trace.TracerProvider
	mp      metric.MeterProvider
	prop    propagation.TextMapPropagator
	metrics http.Handler // nil without a Prometheus reader

	// shutdowns release what Setup built, in order: spans first, so that
	// metrics about their export are still recorded, then metrics, then
	// the Prometheus listener.
	shutdowns []func(context.Context) error
	once      sync.Once
	err       error
}

// Setup builds a Telemetry from the OTEL_* variables (see the package
// documentation) and opts, which win over the variables. With nothing set
// it returns no-op providers and W3C propagation, and starts nothing.
//
// Setup never installs its providers as OpenTelemetry's globals; that is
// the program's decision (otel.SetTracerProvider), not a library's.
// Callers must call Shutdown to flush and stop the exporters.
func Setup(ctx context.Context, opts ...Option) (_ *Telemetry, err error) {
	c := newConfig(opts)
	t := &Telemetry{}
	defer func() {
		if err != nil {
			// Release what was built before the failure; its own error
			// would only hide the one that matters.
			_ = t.Shutdown(context.WithoutCancel(ctx))
		}
	}()

	t.prop = c.propagator
	if t.prop == nil {
		if t.prop, err = propagatorFromEnv(); err != nil {
			return nil, err
		}
	}

	disabled := sdkDisabled()
	var res *resource.Resource
	lazyResource := func() (*resource.Resource, error) {
		if res == nil {
			r, err := newResource(ctx, c.serviceName)
			if err != nil {
				return nil, err
			}
			res = r
		}
		return res, nil
	}

	switch {
	case c.tracerProvider != nil:
		t.tp = c.tracerProvider
	case disabled:
		t.tp = tracenoop.NewTracerProvider()
	default:
		if t.tp, err = t.setupTraces(ctx, lazyResource); err != nil {
			return nil, err
		}
	}

	switch {
	case c.meterProvider != nil:
		t.mp = c.meterProvider
	case disabled:
		t.mp = metricnoop.NewMeterProvider()
	default:
		if t.mp, err = t.setupMetrics(ctx, &c, lazyResource); err != nil {
			return nil, err
		}
	}
	return t, nil
}

func (t *Telemetry) setupTraces(ctx context.Context, res func() (*resource.Resource, error)) (trace.TracerProvider, error) {
	name := getenv(EnvTracesExporter)
	if name == "" || name == exporterNone {
		return tracenoop.NewTracerProvider(), nil
	}
	if name == exporterOTLP {
		if err := checkOTLPProtocol(envOTLPTracesProtocol); err != nil {
			return nil, err
		}
	}
	sampler, err := samplerFromEnv()
	if err != nil {
		return nil, err
	}
	r, err := res()
	if err != nil {
		return nil, err
	}
	exp, err := autoexport.NewSpanExporter(ctx)
	if err != nil {
		return nil, envError(EnvTracesExporter, name, err)
	}
	if autoexport.IsNoneSpanExporter(exp) {
		return tracenoop.NewTracerProvider(), nil
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(r),
		sdktrace.WithSampler(sampler),
	)
	t.shutdowns = append(t.shutdowns, tp.Shutdown)
	return tp, nil
}

func (t *Telemetry) setupMetrics(ctx context.Context, c *config, res func() (*resource.Resource, error)) (metric.MeterProvider, error) {
	name := getenv(EnvMetricsExporter)
	wantProm := c.prometheus
	listen := false
	switch name {
	case "", exporterNone:
	case exporterPrometheus:
		// Built here rather than by autoexport, which hides the registry
		// behind its own listener: the admin endpoint needs the handler.
		wantProm = true
		listen = c.promListener == nil || *c.promListener
	case exporterOTLP:
		if err := checkOTLPProtocol(envOTLPMetricsProtocol); err != nil {
			return nil, err
		}
	}
	useAuto := name != "" && name != exporterNone && name != exporterPrometheus
	if !wantProm && !useAuto {
		return metricnoop.NewMeterProvider(), nil
	}
	r, err := res()
	if err != nil {
		return nil, err
	}

	var readers []sdkmetric.Reader
	var prom *promReader
	if wantProm {
		if prom, err = newPromReader(); err != nil {
			return nil, err
		}
		readers = append(readers, prom.reader)
	}
	if useAuto {
		// Last, because a periodic reader starts its goroutine at once:
		// nothing may fail between here and the provider that owns it.
		ar, err := autoexport.NewMetricReader(ctx)
		if err != nil {
			return nil, envError(EnvMetricsExporter, name, err)
		}
		if autoexport.IsNoneMetricReader(ar) {
			_ = ar.Shutdown(ctx)
		} else {
			readers = append(readers, ar)
		}
	}
	if len(readers) == 0 {
		return metricnoop.NewMeterProvider(), nil
	}
	mopts := []sdkmetric.Option{sdkmetric.WithResource(r)}
	for _, rd := range readers {
		mopts = append(mopts, sdkmetric.WithReader(rd))
	}
	mp := sdkmetric.NewMeterProvider(mopts...)
	t.shutdowns = append(t.shutdowns, mp.Shutdown)
	if prom != nil {
		t.metrics = prom.handler
		if listen {
			stop, err := serveProm(prom.handler)
			if err != nil {
				return nil, err
			}
			t.shutdowns = append(t.shutdowns, stop)
		}
	}
	return mp, nil
}

// newResource describes this process: a fallback service name, then
// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, the SDK's own attributes,
// and the service name Setup was given, later ones winning.
func newResource(ctx context.Context, serviceName string) (*resource.Resource, error) {
	opts := []resource.Option{
		resource.WithAttributes(serviceNameKey.String("unknown_service:" + filepath.Base(os.Args[0]))),
		resource.WithFromEnv(),
		resource.WithTelemetrySDK(),
	}
	if serviceName != "" {
		opts = append(opts, resource.WithAttributes(serviceNameKey.String(serviceName)))
	}
	r, err := resource.New(ctx, opts...)
	if err != nil {
		// The environment detector is the only one here that can fail.
		return nil, envError(EnvResourceAttributes, getenv(EnvResourceAttributes), err)
	}
	return r, nil
}

const serviceNameKey = attribute.Key("service.name")

// TracerProvider returns the tracer provider: the caller's, one Setup built,
// or a no-op one.
func (t *Telemetry) TracerProvider() trace.TracerProvider { return t.tp }

// MeterProvider returns the meter provider: the caller's, one Setup built,
// or a no-op one.
func (t *Telemetry) MeterProvider() metric.MeterProvider { return t.mp }

// Propagator returns the propagator: the caller's, OTEL_PROPAGATORS', or
// W3C tracecontext and baggage.
func (t *Telemetry) Propagator() propagation.TextMapPropagator { return t.prop }

// MetricsHandler returns an http.Handler that serves the meter provider's
// metrics in the Prometheus exposition format, for the admin endpoint's
// /metrics. It is nil unless Setup built a Prometheus reader
// (OTEL_METRICS_EXPORTER=prometheus, or WithPrometheus).
func (t *Telemetry) MetricsHandler() http.Handler { return t.metrics }

// Options returns the options that hand t's providers and propagator to
// the instrumentation constructors:
//
//	rt := telemetry.NewHTTPTransport(base, tel.Options()...)
func (t *Telemetry) Options() []Option {
	return []Option{WithTracerProvider(t.tp), WithMeterProvider(t.mp), WithPropagator(t.prop)}
}

// Shutdown flushes and stops the providers and exporters Setup built;
// providers given by the caller are left alone. It is idempotent: later
// calls return the first call's result. ctx bounds the flush.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	t.once.Do(func() {
		var errs []error
		for _, f := range t.shutdowns {
			if err := f(ctx); err != nil {
				errs = append(errs, err)
			}
		}
		if err := errors.Join(errs...); err != nil {
			t.err = fmt.Errorf("telemetry: shutdown: %w", err)
		}
	})
	return t.err
}
