package telemetry

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/weftmesh/weft/internal/stackroom"
	"github.com/weftmesh/weft/internal/tracehdr"
)

// HTTPScopeName is the instrumentation scope of the HTTP spans and
// duration histograms.
const HTTPScopeName = ScopeName + "/telemetry/http"

// The semantic conventions' HTTP duration histograms.
const (
	MetricHTTPClientDuration = "http.client.request.duration"
	MetricHTTPServerDuration = "http.server.request.duration"
)

// httpDurationBuckets are the boundaries the HTTP semantic conventions
// advise for the duration histograms, in seconds.
var httpDurationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// NewHTTPTransport wraps base so that each request is a client span whose
// context is injected into the request headers, and is measured by the
// http.client.request.duration histogram. base nil means
// http.DefaultTransport. It takes WithTracerProvider, WithMeterProvider and
// WithPropagator.
//
// Spans and measurements follow OpenTelemetry's stable HTTP semantic
// conventions: client spans are named by method; a span's attributes are
// set only when it is recording, so a request that sampling drops costs a
// span start and one histogram record with an attribute set built once per
// combination of method, host, scheme, protocol and status. The span ends
// when the response body is read to its end or closed.
//
// When both providers are no-op ones (telemetry off, as Setup returns with
// nothing configured), the transport only injects the caller's trace
// context and baggage, so traces still cross this service, at a fraction
// of the cost; over a HeaderInjector, which does that itself, it returns
// base unwrapped.
//
// The returned RoundTripper is safe for concurrent use if base is.
func NewHTTPTransport(base http.RoundTripper, opts ...Option) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	c := newConfig(opts)
	_, injects := base.(HeaderInjector)
	switch {
	case c.off() && injects:
		// Nothing to record and nothing to write that base does not: a
		// layer here would only add a call to every request.
		return base
	case c.off():
		return &propagatingTransport{base: base, prop: c.propagatorOrDefault()}
	}
	return &instrumentedTransport{
		base:        base,
		tracer:      c.tracerProviderOrGlobal().Tracer(HTTPScopeName),
		prop:        c.propagatorOrDefault(),
		duration:    httpDuration(c, MetricHTTPClientDuration, "Duration of HTTP client requests, to the response headers."),
		baseInjects: injects,
	}
}

// HeaderInjector is a RoundTripper that writes the trace context and
// baggage of each request's context into the headers it sends, with the
// propagator NewHTTPTransport is given, on a copy of the request it makes
// anyway. Over such a base, NewHTTPTransport hands the context down and
// leaves the headers alone rather than copy them first. Weft's mesh
// transport is one: it copies every request for the endpoint it picks.
type HeaderInjector interface {
	http.RoundTripper
	// InjectsTraceContext marks the transport; it does nothing.
	InjectsTraceContext()
}

// NewHTTPHandler wraps h so that each request is a server span, a child of
// the caller's span when the request carries trace context, and is
// measured by the http.server.request.duration histogram. Spans are named
// by method and, with a ServeMux pattern, by route ("GET /items/{id}"). It
// takes WithTracerProvider, WithMeterProvider and WithPropagator.
//
// As with NewHTTPTransport, attributes are only computed for recording
// spans. The histogram's attributes are the method, scheme, protocol
// version, status and route; server.address, which the caller controls
// through the Host header, is left out, as the conventions allow, so a
// client cannot multiply the series.
//
// When both providers are no-op ones, the handler only extracts the
// caller's trace context and baggage into the request context, for
// NewHTTPTransport to pass on.
//
// The returned Handler is safe for concurrent use if h is.
func NewHTTPHandler(h http.Handler, opts ...Option) http.Handler {
	c := newConfig(opts)
	if c.off() {
		prop := c.propagatorOrDefault()
		return &propagatingHandler{next: h, prop: prop, defaultProp: isW3C(prop)}
	}
	return &instrumentedHandler{
		next:        h,
		tracer:      c.tracerProviderOrGlobal().Tracer(HTTPScopeName),
		prop:        c.propagatorOrDefault(),
		defaultProp: isW3C(c.propagatorOrDefault()),
		noTrace:     isNoopTracing(c.tracerProvider),
		duration:    httpDuration(c, MetricHTTPServerDuration, "Duration of HTTP server requests."),
	}
}

// httpDuration creates one of the duration histograms; an instrument the
// provider refuses is reported to OpenTelemetry's error handler and
// replaced by a no-op, so instrumentation never fails a service.
func httpDuration(c config, name, desc string) metric.Float64Histogram {
	h, err := c.meterProviderOrGlobal().Meter(HTTPScopeName).Float64Histogram(name,
		metric.WithUnit("s"), metric.WithDescription(desc),
		metric.WithExplicitBucketBoundaries(httpDurationBuckets...))
	if err != nil {
		otel.Handle(fmt.Errorf("weft telemetry: %s: %w", name, err))
		return metricnoop.Float64Histogram{}
	}
	return h
}

// off reports whether both providers are OpenTelemetry's no-op ones, so
// that spans and measurements would be thrown away as they are made.
func (c *config) off() bool {
	_, noMetrics := c.meterProvider.(metricnoop.MeterProvider)
	return isNoopTracing(c.tracerProvider) && noMetrics
}

// isNoopTracing reports whether tp is OpenTelemetry's no-op provider.
func isNoopTracing(tp trace.TracerProvider) bool {
	_, ok := tp.(tracenoop.TracerProvider)
	return ok
}

// noSpan stands for the server span when tracing is off.
var noSpan trace.Span = tracenoop.Span{}

var (
	clientSpanKind = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}
	serverSpanKind = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer)}
)

// instrumentedTransport is NewHTTPTransport with telemetry on.
type instrumentedTransport struct {
	base     http.RoundTripper
	tracer   trace.Tracer
	prop     propagation.TextMapPropagator
	duration metric.Float64Histogram
	sets     attrCache[clientKey]
	// baseInjects: base writes the trace context on a copy of its own
	// (see HeaderInjector).
	baseInjects bool
}

func (t *instrumentedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	// Three steps, so that only what the request needs is on the stack
	// while it is in flight: a request sent from a fresh goroutine grows
	// its stack by copying, and every frame above the transport counts.
	// For the same reason the room the request will need, the span's
	// start and the transport below included, is made first, here, where
	// the stack is shallowest (as the mesh's own transport does).
	stackroom.Reserve8K()
	start := time.Now()
	out, span := t.begin(req)
	resp, err := t.base.RoundTrip(out)
	return t.end(req, out.Context(), span, start, resp, err)
}

// begin starts the client span and returns the request to send under it.
//
//go:noinline
func (t *instrumentedTransport) begin(req *http.Request) (*http.Request, trace.Span) {
	method := standardMethod(req.Method)
	ctx, span := t.tracer.Start(req.Context(), method, clientSpanKind...)
	if span.IsRecording() {
		clientRequestAttributes(span, req, method)
	}
	// A RoundTripper must not modify the caller's request: the headers
	// the context goes into are a copy, the base's own when it makes one.
	out := req.WithContext(ctx)
	if !t.baseInjects {
		out.Header = req.Header.Clone()
		if out.Header == nil {
			out.Header = make(http.Header, 2)
		}
		t.prop.Inject(ctx, propagation.HeaderCarrier(out.Header))
	}
	return out, span
}

// clientRequestAttributes sets a recording client span's request
// attributes, in a frame of its own (see RoundTrip).
//
//go:noinline
func clientRequestAttributes(span trace.Span, req *http.Request, method string) {
	host, port := requestHostPort(req)
	span.SetAttributes(
		semconv.HTTPRequestMethodKey.String(method),
		semconv.URLFull(redactedURL(req)),
		semconv.ServerAddress(host),
		semconv.ServerPort(port))
	if method == "_OTHER" {
		span.SetAttributes(semconv.HTTPRequestMethodOriginal(req.Method))
	}
}

// end records the request's duration and ends its span, at once or, for
// a response with a body, when the body is read or closed.
//
//go:noinline
func (t *instrumentedTransport) end(req *http.Request, ctx context.Context, span trace.Span, start time.Time,
	resp *http.Response, err error) (*http.Response, error) {
	method := standardMethod(req.Method)
	host, port := requestHostPort(req)
	k := clientKey{method: method, host: host, port: port, scheme: req.URL.Scheme}
	if err != nil {
		k.errType = errorType(err)
	} else {
		k.status = resp.StatusCode
		k.proto = protocolVersion(resp.ProtoMajor, resp.ProtoMinor)
		if resp.StatusCode >= 400 {
			k.errType = strconv.Itoa(resp.StatusCode)
		}
	}
	t.duration.Record(ctx, time.Since(start).Seconds(), t.sets.get(k).rec...)
	if !span.IsRecording() {
		span.End()
		return resp, err
	}
	if err != nil {
		span.SetAttributes(semconv.ErrorTypeKey.String(k.errType))
		span.SetStatus(codes.Error, err.Error())
		span.End()
		return resp, err
	}
	span.SetAttributes(semconv.HTTPResponseStatusCode(resp.StatusCode), semconv.NetworkProtocolVersion(k.proto))
	if resp.StatusCode >= 400 {
		// For a client any 4xx or 5xx is a failed request.
		span.SetAttributes(semconv.ErrorTypeKey.String(k.errType))
		span.SetStatus(codes.Error, "")
	}
	if resp.Body == nil || resp.Body == http.NoBody {
		span.End()
		return resp, nil
	}
	resp.Body = newSpanBody(resp.Body, span)
	return resp, nil
}

// CloseIdleConnections reaches the base transport's pool, as
// http.Client.CloseIdleConnections expects of a wrapping transport.
func (t *instrumentedTransport) CloseIdleConnections() { closeIdle(t.base) }

// clientKey is the attribute set of one client duration measurement.
type clientKey struct {
	method, host, scheme, proto, errType string
	port, status                         int
}

func (k clientKey) attributes() attribute.Set {
	kvs := []attribute.KeyValue{
		semconv.HTTPRequestMethodKey.String(k.method),
		semconv.ServerAddress(k.host),
		semconv.URLScheme(k.scheme),
	}
	if k.port > 0 {
		kvs = append(kvs, semconv.ServerPort(k.port))
	}
	if k.status > 0 {
		kvs = append(kvs, semconv.HTTPResponseStatusCode(k.status))
	}
	if k.proto != "" {
		kvs = append(kvs, semconv.NetworkProtocolVersion(k.proto))
	}
	if k.errType != "" {
		kvs = append(kvs, semconv.ErrorTypeKey.String(k.errType))
	}
	return attribute.NewSet(kvs...)
}

// spanBody ends the client span when the body is read to its end or
// closed, whichever comes first, so the span covers the whole response.
type spanBody struct {
	io.ReadCloser
	span  trace.Span
	ended atomic.Bool
}

// bodyWriterTo is spanBody for bodies that implement io.WriterTo, which
// io.Copy prefers; the transport's bodies do not, but a base
// RoundTripper's may.
type bodyWriterTo struct{ *spanBody }

func newSpanBody(rc io.ReadCloser, span trace.Span) io.ReadCloser {
	b := &spanBody{ReadCloser: rc, span: span}
	if _, ok := rc.(io.WriterTo); ok {
		return bodyWriterTo{b}
	}
	return b
}

func (b *spanBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.end(err)
	}
	return n, err
}

func (b *spanBody) Close() error {
	err := b.ReadCloser.Close()
	b.end(nil)
	return err
}

func (b *spanBody) end(err error) {
	if b.ended.Swap(true) {
		return
	}
	if err != nil && err != io.EOF {
		b.span.RecordError(err)
		b.span.SetStatus(codes.Error, err.Error())
	}
	b.span.End()
}

func (b bodyWriterTo) WriteTo(w io.Writer) (int64, error) {
	n, err := b.ReadCloser.(io.WriterTo).WriteTo(w)
	b.end(err)
	return n, err
}

// instrumentedHandler is NewHTTPHandler with telemetry on.
type instrumentedHandler struct {
	next   http.Handler
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
	// defaultProp: prop is the default W3C pair (see extract).
	defaultProp bool
	// noTrace: the tracer provider is OpenTelemetry's no-op one (metrics
	// alone are on), whose server spans are never recorded.
	noTrace  bool
	duration metric.Float64Histogram
	sets     attrCache[serverKey]
}

func (h *instrumentedHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	method := standardMethod(r.Method)
	ctx := extract(r.Context(), h.prop, h.defaultProp, r.Header)
	var span trace.Span = noSpan
	if !h.noTrace {
		// A no-op tracer's Start would only store a no-op span in a
		// new context, which costs the context and a request copy.
		ctx, span = h.tracer.Start(ctx, method, serverSpanKind...)
	}
	recording := span.IsRecording()
	if recording {
		span.SetAttributes(serverRequestAttributes(r, method)...)
	}
	// The ServeMux sets Pattern on the request it is handed, this one,
	// so the route is known once the handler returns.
	var sw *statusWriter
	if ctx != r.Context() {
		// The writer and the request carrying the span are one
		// allocation, the copy made on the stack and moved in.
		c := new(tracedCall)
		c.req = *r.WithContext(ctx)
		sw, r = &c.sw, &c.req
	} else {
		sw = new(statusWriter)
	}
	sw.ResponseWriter = w
	returned := false
	defer func() {
		status := sw.status
		switch {
		case status == 0 && !returned:
			// The handler panicked before writing: net/http aborts the
			// request, which is the server's failure. The panic goes on.
			status = http.StatusInternalServerError
		case status == 0:
			status = http.StatusOK // nothing written: net/http sends 200
		}
		k := serverKey{method: method, status: status, route: r.Pattern, tls: r.TLS != nil,
			proto: protocolVersion(r.ProtoMajor, r.ProtoMinor)}
		if status >= 500 {
			k.errType = strconv.Itoa(status)
		}
		h.duration.Record(ctx, time.Since(start).Seconds(), h.sets.get(k).rec...)
		if recording {
			if route := routeOf(r.Pattern); route != "" {
				span.SetName(method + " " + route)
				span.SetAttributes(semconv.HTTPRoute(route))
			}
			span.SetAttributes(semconv.HTTPResponseStatusCode(status))
			if status >= 500 {
				// For a server only 5xx is its failure; a 4xx is the
				// caller's.
				span.SetAttributes(semconv.ErrorTypeKey.String(k.errType))
				span.SetStatus(codes.Error, "")
			}
		}
		span.End()
	}()
	h.next.ServeHTTP(sw, r)
	returned = true
}

// serverKey is the attribute set of one server duration measurement.
type serverKey struct {
	method, route, proto, errType string
	status                        int
	tls                           bool
}

func (k serverKey) attributes() attribute.Set {
	scheme := "http"
	if k.tls {
		scheme = "https"
	}
	kvs := []attribute.KeyValue{
		semconv.HTTPRequestMethodKey.String(k.method),
		semconv.URLScheme(scheme),
		semconv.HTTPResponseStatusCode(k.status),
	}
	if route := routeOf(k.route); route != "" {
		kvs = append(kvs, semconv.HTTPRoute(route))
	}
	if k.proto != "" {
		kvs = append(kvs, semconv.NetworkProtocolVersion(k.proto))
	}
	if k.errType != "" {
		kvs = append(kvs, semconv.ErrorTypeKey.String(k.errType))
	}
	return attribute.NewSet(kvs...)
}

// serverRequestAttributes are a recording server span's request
// attributes.
func serverRequestAttributes(r *http.Request, method string) []attribute.KeyValue {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	kvs := []attribute.KeyValue{
		semconv.HTTPRequestMethodKey.String(method),
		semconv.URLScheme(scheme),
		semconv.URLPath(r.URL.Path),
		semconv.NetworkProtocolVersion(protocolVersion(r.ProtoMajor, r.ProtoMinor)),
	}
	if method == "_OTHER" {
		kvs = append(kvs, semconv.HTTPRequestMethodOriginal(r.Method))
	}
	if r.URL.RawQuery != "" {
		kvs = append(kvs, semconv.URLQuery(r.URL.RawQuery))
	}
	if host, port := splitHostPort(r.Host); host != "" {
		kvs = append(kvs, semconv.ServerAddress(host))
		if port > 0 {
			kvs = append(kvs, semconv.ServerPort(port))
		}
	}
	if host, port := splitHostPort(r.RemoteAddr); host != "" {
		kvs = append(kvs, semconv.ClientAddress(host), semconv.NetworkPeerAddress(host))
		if port > 0 {
			kvs = append(kvs, semconv.NetworkPeerPort(port))
		}
	}
	if ua := r.UserAgent(); ua != "" {
		kvs = append(kvs, semconv.UserAgentOriginal(ua))
	}
	return kvs
}

// tracedCall is what a server request under a span of its own needs
// beside the caller's: the status writer and the request copy.
type tracedCall struct {
	sw  statusWriter
	req http.Request
}

// statusWriter records the status a handler sends. It passes Flush,
// Hijack and ReadFrom through, and Unwrap gives http.ResponseController
// the writer underneath.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code // 1xx other than 101 are interim responses
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) ReadFrom(src io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(w.ResponseWriter, src)
}

func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.status == 0 {
		w.status = http.StatusSwitchingProtocols
	}
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// standardMethod is the method as the conventions record it: one of the
// known methods, else "_OTHER", so a client cannot invent series.
func standardMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodHead,
		http.MethodPatch, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	case "":
		return http.MethodGet // net/http's meaning of an empty method
	}
	return "_OTHER"
}

// protocolVersion is network.protocol.version: "1.1", "2", "3".
func protocolVersion(major, minor int) string {
	switch {
	case major == 1 && minor == 1:
		return "1.1"
	case major == 1 && minor == 0:
		return "1.0"
	case major == 2 && minor == 0:
		return "2"
	case major == 3 && minor == 0:
		return "3"
	case major == 0:
		return ""
	}
	return strconv.Itoa(major) + "." + strconv.Itoa(minor)
}

// routeOf is the route template of a ServeMux pattern: the pattern
// without its method and host ("GET example.com/items/{id}" gives
// "/items/{id}").
func routeOf(pattern string) string {
	if pattern == "" {
		return ""
	}
	if i := strings.IndexByte(pattern, ' '); i >= 0 {
		pattern = strings.TrimLeft(pattern[i+1:], " \t")
	}
	if i := strings.IndexByte(pattern, '/'); i > 0 {
		pattern = pattern[i:]
	}
	return pattern
}

// requestHostPort is the server a client request goes to, with the
// scheme's default port when the URL names none.
func requestHostPort(req *http.Request) (string, int) {
	host, port := splitHostPort(req.URL.Host)
	if host == "" {
		host, port = splitHostPort(req.Host)
	}
	if port <= 0 {
		switch req.URL.Scheme {
		case "https":
			port = 443
		case "http":
			port = 80
		}
	}
	return host, port
}

// splitHostPort splits "host:port", "[v6]:port" or a bare host; port is 0
// when absent or not a number.
func splitHostPort(hp string) (string, int) {
	if hp == "" {
		return "", 0
	}
	// A mesh service is named without a port ("http://orders"): answer
	// before net.SplitHostPort builds an error to say so, on every request.
	if !strings.Contains(hp, ":") || strings.HasSuffix(hp, "]") {
		return strings.Trim(hp, "[]"), 0
	}
	host, ps, err := net.SplitHostPort(hp)
	if err != nil {
		return strings.Trim(hp, "[]"), 0
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		port = 0
	}
	return host, port
}

// redactedURL is url.full without credentials, as the conventions ask.
func redactedURL(req *http.Request) string {
	if req.URL.User == nil {
		return req.URL.String()
	}
	return req.URL.Redacted()
}

// errorType is error.type for a transport error: a timeout, a cancel, or
// the error's Go type, all of low cardinality.
func errorType(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return fmt.Sprintf("%T", err)
}

// propagatingTransport is NewHTTPTransport with telemetry off, over a
// base that does not write the trace context itself.
type propagatingTransport struct {
	base http.RoundTripper
	prop propagation.TextMapPropagator
}

func (t *propagatingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if CarriesContext(ctx) {
		req = t.inject(ctx, req)
	}
	return t.base.RoundTrip(req)
}

// CarriesContext reports whether ctx has a trace context or baggage for a
// request made under it to pass on.
//
//go:noinline
func CarriesContext(ctx context.Context) bool {
	return trace.SpanContextFromContext(ctx).IsValid() || baggage.FromContext(ctx).Len() > 0
}

// inject returns a copy of req carrying ctx's trace context: a
// RoundTripper must not modify the caller's request. It is a function of
// its own so that its locals are off the stack while the request is in
// flight: a request sent from a fresh goroutine grows that goroutine's
// stack by copying, once per doubling, and every frame below the
// transport counts.
//
//go:noinline
func (t *propagatingTransport) inject(ctx context.Context, req *http.Request) *http.Request {
	out := req.Clone(ctx)
	t.prop.Inject(ctx, propagation.HeaderCarrier(out.Header))
	return out
}

// CloseIdleConnections reaches the base transport's pool, as
// http.Client.CloseIdleConnections expects of a wrapping transport.
func (t *propagatingTransport) CloseIdleConnections() { closeIdle(t.base) }

func closeIdle(rt http.RoundTripper) {
	if c, ok := rt.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// propagatingHandler is NewHTTPHandler with telemetry off.
type propagatingHandler struct {
	next http.Handler
	prop propagation.TextMapPropagator
	// defaultProp: prop is the default W3C pair (see extract).
	defaultProp bool
}

func (h *propagatingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if got := extract(ctx, h.prop, h.defaultProp, r.Header); got != ctx {
		r = r.WithContext(got)
	}
	h.next.ServeHTTP(w, r)
}

// extract is prop.Extract from the request header h. The default
// propagator (W3C trace context and baggage) reads only the traceparent
// header (tracestate only after a valid traceparent) and the baggage
// header, and returns ctx unchanged without them, so a request that
// carries neither skips it. Any other propagator (the caller's, or one
// named by OTEL_PROPAGATORS) is always asked.
func extract(ctx context.Context, prop propagation.TextMapPropagator, defaultProp bool, h http.Header) context.Context {
	if defaultProp && len(h["Traceparent"]) == 0 && len(h["Baggage"]) == 0 {
		return ctx
	}
	return prop.Extract(ctx, headerReader(h))
}

// headerReader is propagation.HeaderCarrier without an allocation per
// lookup: the W3C propagators ask for their headers in lower case
// ("traceparent"), which HeaderCarrier canonicalizes into a new string
// every time. Their names are looked up in canonical form directly; any
// other name is canonicalized as net/http does.
type headerReader http.Header

// Get implements propagation.TextMapCarrier.
func (h headerReader) Get(key string) string {
	if v := h[tracehdr.Canonical(key)]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Values implements propagation.ValuesGetter: baggage may come in several
// headers.
func (h headerReader) Values(key string) []string { return h[tracehdr.Canonical(key)] }

// Set implements propagation.TextMapCarrier.
func (h headerReader) Set(key, value string) { http.Header(h).Set(key, value) }

// Keys implements propagation.TextMapCarrier.
func (h headerReader) Keys() []string { return propagation.HeaderCarrier(h).Keys() }
