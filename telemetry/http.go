package telemetry

import (
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/baggage"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// NewHTTPTransport wraps base so that each request is a client span whose
// context is injected into the request headers, and is measured by the
// http.client.request.duration histogram. base nil means
// http.DefaultTransport, as with otelhttp. It takes WithTracerProvider,
// WithMeterProvider and WithPropagator.
//
// When both providers are no-op ones (telemetry off, as Setup returns with
// nothing configured), otelhttp is left out: the transport only injects the
// caller's trace context and baggage, so traces still cross this service,
// at a fraction of the cost.
//
// The returned RoundTripper is safe for concurrent use if base is.
func NewHTTPTransport(base http.RoundTripper, opts ...Option) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	c := newConfig(opts)
	if c.off() {
		return &propagatingTransport{base: base, prop: c.propagatorOrDefault()}
	}
	return otelhttp.NewTransport(base, append(c.otelhttpOptions(),
		// The stable HTTP conventions name client spans by method alone;
		// otelhttp's default adds an "HTTP " prefix.
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method }),
	)...)
}

// NewHTTPHandler wraps h so that each request is a server span, a child of
// the caller's span when the request carries trace context, and is
// measured by the http.server.request.duration histogram. Spans are named
// by method and, with a ServeMux pattern, by route ("GET /items/{id}"). It
// takes WithTracerProvider, WithMeterProvider and WithPropagator.
//
// When both providers are no-op ones, otelhttp is left out: the handler
// only extracts the caller's trace context and baggage into the request
// context, for NewHTTPTransport to pass on.
//
// The returned Handler is safe for concurrent use if h is.
func NewHTTPHandler(h http.Handler, opts ...Option) http.Handler {
	c := newConfig(opts)
	if c.off() {
		return &propagatingHandler{next: h, prop: c.propagatorOrDefault()}
	}
	return otelhttp.NewHandler(h, "", c.otelhttpOptions()...)
}

func (c *config) otelhttpOptions() []otelhttp.Option {
	return []otelhttp.Option{
		otelhttp.WithTracerProvider(c.tracerProviderOrGlobal()),
		otelhttp.WithMeterProvider(c.meterProviderOrGlobal()),
		otelhttp.WithPropagators(c.propagatorOrDefault()),
	}
}

// off reports whether both providers are OpenTelemetry's no-op ones, so
// that spans and measurements would be thrown away as they are made.
func (c *config) off() bool {
	_, noTrace := c.tracerProvider.(tracenoop.TracerProvider)
	_, noMetrics := c.meterProvider.(metricnoop.MeterProvider)
	return noTrace && noMetrics
}

// propagatingTransport is NewHTTPTransport with telemetry off.
type propagatingTransport struct {
	base http.RoundTripper
	prop propagation.TextMapPropagator
}

func (t *propagatingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if !trace.SpanContextFromContext(ctx).IsValid() && baggage.FromContext(ctx).Len() == 0 {
		return t.base.RoundTrip(req) // nothing to pass on
	}
	// A RoundTripper must not modify the caller's request, so the headers
	// go on a copy.
	out := req.Clone(ctx)
	t.prop.Inject(ctx, propagation.HeaderCarrier(out.Header))
	return t.base.RoundTrip(out)
}

// CloseIdleConnections reaches the base transport's pool, as
// http.Client.CloseIdleConnections expects of a wrapping transport.
func (t *propagatingTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// propagatingHandler is NewHTTPHandler with telemetry off.
type propagatingHandler struct {
	next http.Handler
	prop propagation.TextMapPropagator
}

func (h *propagatingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if got := h.prop.Extract(ctx, propagation.HeaderCarrier(r.Header)); got != ctx {
		r = r.WithContext(got)
	}
	h.next.ServeHTTP(w, r)
}
