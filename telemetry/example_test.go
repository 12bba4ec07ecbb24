package telemetry_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/weftmesh/weft/telemetry"
)

// A service configures telemetry from OTEL_* once, at start, and hands the
// result to its instrumentation. With no OTEL_* variables set, everything
// is a no-op.
func ExampleSetup() {
	ctx := context.Background()
	tel, err := telemetry.Setup(ctx, telemetry.WithServiceName("orders"))
	if err != nil {
		log.Fatal(err) // names the bad variable, e.g. OTEL_TRACES_SAMPLER
	}
	defer tel.Shutdown(ctx)

	client := &http.Client{Transport: telemetry.NewHTTPTransport(nil, tel.Options()...)}
	mux := http.NewServeMux()
	if h := tel.MetricsHandler(); h != nil { // OTEL_METRICS_EXPORTER=prometheus
		mux.Handle("GET /metrics", h)
	}
	_ = client
}

// A request from one instrumented service to another: the server's span is
// a child of the client's, in the same trace.
func ExampleNewHTTPTransport() {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer tp.Shutdown(context.Background())
	opts := []telemetry.Option{telemetry.WithTracerProvider(tp)}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hi") })
	srv := httptest.NewServer(telemetry.NewHTTPHandler(mux, opts...))
	defer srv.Close()

	base := &http.Transport{}
	defer base.CloseIdleConnections()
	client := &http.Client{Transport: telemetry.NewHTTPTransport(base, opts...)}
	resp, err := client.Get(srv.URL + "/hello")
	if err != nil {
		log.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	srv.Close() // waits for the handler, whose span then has ended

	spans := exp.GetSpans()
	for _, s := range spans {
		fmt.Println(s.SpanKind, s.Name)
	}
	server, clientSpan := spans[0], spans[1]
	fmt.Println("same trace:", server.SpanContext.TraceID() == clientSpan.SpanContext.TraceID())
	fmt.Println("server under client:", server.Parent.SpanID() == clientSpan.SpanContext.SpanID())
	// Output:
	// server GET /hello
	// client GET
	// same trace: true
	// server under client: true
}

// Log lines made with a request's context carry its trace and span IDs.
func ExampleNewLogHandler() {
	noTime := func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}
	logger := slog.New(telemetry.NewLogHandler(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{ReplaceAttr: noTime})))

	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
	})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	logger.InfoContext(ctx, "charged card", "order", 42)
	logger.InfoContext(context.Background(), "cache warmed")
	// Output:
	// {"level":"INFO","msg":"charged card","order":42,"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7"}
	// {"level":"INFO","msg":"cache warmed"}
}

// The mesh keeps one ClusterMetrics per cluster and records on it from the
// request path.
func ExampleMetrics_Cluster() {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	m, err := telemetry.NewMetrics(telemetry.WithMeterProvider(mp))
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	orders := m.Cluster("orders")
	orders.Retry(ctx, "5xx")
	orders.Retry(ctx, "5xx")

	var rm metricdata.ResourceMetrics
	reader.Collect(ctx, &rm)
	for _, sm := range rm.ScopeMetrics {
		for _, mm := range sm.Metrics {
			for _, dp := range mm.Data.(metricdata.Sum[int64]).DataPoints {
				cluster, _ := dp.Attributes.Value(telemetry.AttrCluster)
				reason, _ := dp.Attributes.Value(telemetry.AttrRetryReason)
				fmt.Println(mm.Name, cluster.AsString(), reason.AsString(), dp.Value)
			}
		}
	}
	// Output:
	// weft.client.retries orders 5xx 2
}
