package telemetry_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	collmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	colltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/telemetry"
)

// collector is a minimal OTLP receiver, over gRPC and over HTTP: it
// remembers the names of the spans and metrics it was sent.
type collector struct {
	colltrace.UnimplementedTraceServiceServer
	collmetrics.UnimplementedMetricsServiceServer

	mu      sync.Mutex
	spans   []string
	metrics []string
}

func (c *collector) Export(_ context.Context, req *colltrace.ExportTraceServiceRequest) (*colltrace.ExportTraceServiceResponse, error) {
	c.addSpans(req)
	return &colltrace.ExportTraceServiceResponse{}, nil
}

func (c *collector) addSpans(req *colltrace.ExportTraceServiceRequest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				c.spans = append(c.spans, s.GetName())
			}
		}
	}
}

func (c *collector) addMetrics(req *collmetrics.ExportMetricsServiceRequest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rm := range req.GetResourceMetrics() {
		for _, sm := range rm.GetScopeMetrics() {
			for _, m := range sm.GetMetrics() {
				c.metrics = append(c.metrics, m.GetName())
			}
		}
	}
}

// metricsService adapts the collector to the metrics service, whose
// Export method has the same name as the trace service's.
type metricsService struct {
	collmetrics.UnimplementedMetricsServiceServer
	c *collector
}

func (m metricsService) Export(_ context.Context, req *collmetrics.ExportMetricsServiceRequest) (*collmetrics.ExportMetricsServiceResponse, error) {
	m.c.addMetrics(req)
	return &collmetrics.ExportMetricsServiceResponse{}, nil
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var resp proto.Message
	switch r.URL.Path {
	case "/v1/traces":
		var req colltrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c.addSpans(&req)
		resp = &colltrace.ExportTraceServiceResponse{}
	case "/v1/metrics":
		var req collmetrics.ExportMetricsServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c.addMetrics(&req)
		resp = &collmetrics.ExportMetricsServiceResponse{}
	default:
		http.NotFound(w, r)
		return
	}
	out, _ := proto.Marshal(resp)
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

// TestSetupOTLP exports a span and a metric through each OTLP protocol to
// a receiver on loopback, flushed by Shutdown.
func TestSetupOTLP(t *testing.T) {
	for _, protocol := range []string{"http/protobuf", "grpc"} {
		t.Run(protocol, func(t *testing.T) {
			clearOTELEnv(t)
			c := &collector{}
			var endpoint string
			if protocol == "grpc" {
				srv := grpc.NewServer()
				colltrace.RegisterTraceServiceServer(srv, c)
				collmetrics.RegisterMetricsServiceServer(srv, metricsService{c: c})
				endpoint = "http://" + serveGRPC(t, srv)
			} else {
				srv := httptest.NewServer(c)
				defer srv.Close()
				endpoint = srv.URL
			}
			t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
			t.Setenv("OTEL_METRICS_EXPORTER", "otlp")
			t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
			t.Setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
			t.Setenv("OTEL_TRACES_SAMPLER_ARG", "1")

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			tel, err := telemetry.Setup(ctx, telemetry.WithServiceName("orders"))
			if err != nil {
				t.Fatal(err)
			}
			_, span := tel.TracerProvider().Tracer("test").Start(ctx, "otlp-span")
			span.End()
			m, err := telemetry.NewMetrics(tel.Options()...)
			if err != nil {
				t.Fatal(err)
			}
			m.Cluster("orders").Hedge(ctx)
			if err := tel.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			if !slices.Contains(c.spans, "otlp-span") {
				t.Errorf("collector got spans %v, want otlp-span", c.spans)
			}
			if !slices.Contains(c.metrics, telemetry.MetricHedges) {
				t.Errorf("collector got metrics %v, want %s", c.metrics, telemetry.MetricHedges)
			}
		})
	}
}
