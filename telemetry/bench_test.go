package telemetry_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/weftmesh/weft/telemetry"
)

// discardExporter drops spans: the benchmark measures instrumentation,
// not an exporter.
type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }

// BenchmarkHTTPRoundTrip measures what the instrumentation costs per HTTP
// round trip, client and server side together, without a network: the
// client transport hands the request straight to the instrumented handler.
func BenchmarkHTTPRoundTrip(b *testing.B) {
	sdkTP := func(s sdktrace.Sampler) trace.TracerProvider {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(s), sdktrace.WithBatcher(discardExporter{}))
		b.Cleanup(func() { tp.Shutdown(context.Background()) })
		return tp
	}
	sdkMP := func() metric.MeterProvider {
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		b.Cleanup(func() { mp.Shutdown(context.Background()) })
		return mp
	}
	cases := []struct {
		name  string
		off   bool // no instrumentation at all: the baseline
		tp    func() trace.TracerProvider
		mp    func() metric.MeterProvider
		annot bool
	}{
		{name: "bare", off: true},
		{name: "telemetry-off", tp: func() trace.TracerProvider { return tracenoop.NewTracerProvider() },
			mp: func() metric.MeterProvider { return metricnoop.NewMeterProvider() }},
		{name: "sampled-1pct", tp: func() trace.TracerProvider {
			return sdkTP(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.01)))
		}, mp: sdkMP},
		{name: "traces-only-1pct", tp: func() trace.TracerProvider {
			return sdkTP(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.01)))
		}, mp: func() metric.MeterProvider { return metricnoop.NewMeterProvider() }},
		{name: "metrics-only", tp: func() trace.TracerProvider { return tracenoop.NewTracerProvider() }, mp: sdkMP},
		{name: "sampled-100pct", tp: func() trace.TracerProvider {
			return sdkTP(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(1)))
		}, mp: sdkMP},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain")
				io.WriteString(w, "ok")
			})
			var opts []telemetry.Option
			if !c.off {
				opts = []telemetry.Option{telemetry.WithTracerProvider(c.tp()), telemetry.WithMeterProvider(c.mp())}
				h = telemetry.NewHTTPHandler(h, opts...)
			}
			var rt http.RoundTripper = roundTripperFunc(func(req *http.Request) (*http.Response, error) {
				telemetry.AnnotateEndpoint(req.Context(), "orders", "10.0.0.1:8080", "zone-a", 1)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				return rec.Result(), nil
			})
			if !c.off {
				rt = telemetry.NewHTTPTransport(rt, opts...)
			}
			client := &http.Client{Transport: rt}
			b.ReportAllocs()
			for b.Loop() {
				resp, err := client.Get("http://orders:8080/items/42")
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
}

// BenchmarkMetrics measures a Weft counter on the hot path, against the
// SDK with a reader, as a service with metrics on runs it.
func BenchmarkMetrics(b *testing.B) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer mp.Shutdown(context.Background())
	m, err := telemetry.NewMetrics(telemetry.WithMeterProvider(mp))
	if err != nil {
		b.Fatal(err)
	}
	c := m.Cluster("orders")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		c.Retry(ctx, "5xx")
	}
}
