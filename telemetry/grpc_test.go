package telemetry_test

import (
	"context"
	"net"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/weftmesh/weft/telemetry"
)

// forwardingHealth is service A: its Check asks B, so a call to A crosses
// two gRPC hops.
type forwardingHealth struct {
	healthpb.UnimplementedHealthServer
	next healthpb.HealthClient
}

func (f *forwardingHealth) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	return f.next.Check(ctx, req)
}

// serveGRPC starts srv on a loopback port and returns its address.
func serveGRPC(t *testing.T, srv *grpc.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return ln.Addr().String()
}

func dial(t *testing.T, addr string, opts ...telemetry.Option) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(telemetry.ClientStatsHandler(opts...)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// TestGRPCTraceAcrossServices is TestHTTPTraceAcrossServices over gRPC:
// client -> A -> B on real servers, one trace, right parents, and the
// rpc duration histograms.
func TestGRPCTraceAcrossServices(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	client, svcA, svcB := newService(t, "client", rec), newService(t, "a", rec), newService(t, "b", rec)
	opts := func(s *service) []telemetry.Option {
		return []telemetry.Option{telemetry.WithTracerProvider(s.tp), telemetry.WithMeterProvider(s.mp)}
	}

	srvB := grpc.NewServer(grpc.StatsHandler(telemetry.ServerStatsHandler(opts(svcB)...)))
	healthpb.RegisterHealthServer(srvB, health.NewServer())
	addrB := serveGRPC(t, srvB)

	srvA := grpc.NewServer(grpc.StatsHandler(telemetry.ServerStatsHandler(opts(svcA)...)))
	healthpb.RegisterHealthServer(srvA, &forwardingHealth{next: healthpb.NewHealthClient(dial(t, addrB, opts(svcA)...))})
	addrA := serveGRPC(t, srvA)

	hc := healthpb.NewHealthClient(dial(t, addrA, opts(client)...))
	ctx, root := client.tp.Tracer("test").Start(context.Background(), "probe")
	resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
	root.End()
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if got, want := resp.GetStatus(), healthpb.HealthCheckResponse_SERVING; got != want {
		t.Fatalf("status = %v, want %v", got, want)
	}
	// Stop waits for handlers, so server spans have ended.
	srvA.Stop()
	srvB.Stop()

	const method = "grpc.health.v1.Health/Check"
	spans := spansByName(rec.Ended(), method)
	byService := map[string]map[trace.SpanKind]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		if s.SpanContext().TraceID() != root.SpanContext().TraceID() {
			t.Errorf("span of %s: trace %s, want %s", serviceOf(s), s.SpanContext().TraceID(), root.SpanContext().TraceID())
		}
		if byService[serviceOf(s)] == nil {
			byService[serviceOf(s)] = map[trace.SpanKind]sdktrace.ReadOnlySpan{}
		}
		byService[serviceOf(s)][s.SpanKind()] = s
	}
	if len(spans) != 4 {
		t.Fatalf("got %d %s spans, want 4 (client, A server, A client, B server)", len(spans), method)
	}
	tests := []struct {
		child, parent sdktrace.ReadOnlySpan
		what          string
	}{
		{byService["a"][trace.SpanKindServer], byService["client"][trace.SpanKindClient], "A server under client"},
		{byService["a"][trace.SpanKindClient], byService["a"][trace.SpanKindServer], "A client under A server"},
		{byService["b"][trace.SpanKindServer], byService["a"][trace.SpanKindClient], "B server under A client"},
	}
	if c := byService["client"][trace.SpanKindClient]; c == nil || c.Parent().SpanID() != root.SpanContext().SpanID() {
		t.Errorf("client span missing or not under the root span")
	}
	for _, tt := range tests {
		if tt.child == nil || tt.parent == nil {
			t.Errorf("%s: span missing", tt.what)
			continue
		}
		if got, want := tt.child.Parent().SpanID(), tt.parent.SpanContext().SpanID(); got != want {
			t.Errorf("%s: parent = %s, want %s", tt.what, got, want)
		}
	}

	checks := []struct {
		svc    *service
		metric string
	}{
		{client, "rpc.client.call.duration"},
		{svcA, "rpc.server.call.duration"},
		{svcA, "rpc.client.call.duration"},
		{svcB, "rpc.server.call.duration"},
	}
	for _, c := range checks {
		m, ok := findMetric(c.svc.collect(t), c.metric)
		if !ok {
			t.Errorf("%s: no %s", c.svc.name, c.metric)
			continue
		}
		if got, want := histogramCount(t, m), uint64(1); got != want {
			t.Errorf("%s: %s count = %d, want %d", c.svc.name, c.metric, got, want)
		}
	}
}
