package telemetry_test

import (
	"context"
	"net"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
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

	// WaitForHandlers: Stop returns once the handlers, and the stats
	// handler's End with them, are done; by default it returns as soon as
	// the connections close, and a server span may not have ended yet.
	srvB := grpc.NewServer(grpc.WaitForHandlers(true), grpc.StatsHandler(telemetry.ServerStatsHandler(opts(svcB)...)))
	healthpb.RegisterHealthServer(srvB, health.NewServer())
	addrB := serveGRPC(t, srvB)

	srvA := grpc.NewServer(grpc.WaitForHandlers(true), grpc.StatsHandler(telemetry.ServerStatsHandler(opts(svcA)...)))
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
	// Stop waits for handlers (WaitForHandlers), so server spans have ended.
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
		// otelgrpc records a call's duration on the stats handler's End
		// event, which grpc-go may deliver just after Stop has returned
		// (the server side) or after the client's call has returned: wait
		// a bounded time for it.
		var (
			m  metricdata.Metrics
			ok bool
		)
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if m, ok = findMetric(c.svc.collect(t), c.metric); ok || time.Now().After(deadline) {
				break
			}
		}
		if !ok {
			t.Errorf("%s: no %s", c.svc.name, c.metric)
			continue
		}
		if got, want := histogramCount(t, m), uint64(1); got != want {
			t.Errorf("%s: %s count = %d, want %d", c.svc.name, c.metric, got, want)
		}
	}
}

// TestGRPCPropagationWithoutSDK is TestHTTPPropagationWithoutSDK over
// gRPC: service A records nothing (no-op providers), yet B's server span is
// a child of the client's span, because A's handlers carry the context on.
func TestGRPCPropagationWithoutSDK(t *testing.T) {
	testGRPCPropagationWithoutSDK(t, func(tel *telemetry.Telemetry) grpc.ServerOption {
		return grpc.StatsHandler(telemetry.ServerStatsHandler(tel.Options()...))
	})
}

// TestGRPCServerTraceContext is TestGRPCPropagationWithoutSDK with A's
// server taking the trace context in an interceptor, by
// ServerTraceContext, instead of a stats handler.
func TestGRPCServerTraceContext(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	if f := telemetry.ServerTraceContext(telemetry.WithTracerProvider(newService(t, "on", rec).tp)); f != nil {
		t.Error("ServerTraceContext with a tracer provider is not nil: the stats handler is needed")
	}
	testGRPCPropagationWithoutSDK(t, func(tel *telemetry.Telemetry) grpc.ServerOption {
		incoming := telemetry.ServerTraceContext(tel.Options()...)
		if incoming == nil {
			t.Fatal("ServerTraceContext with no-op providers is nil")
		}
		return grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			return handler(incoming(ctx), req)
		})
	})
}

// TestGRPCClientTraceContext is TestGRPCPropagationWithoutSDK with A's
// client putting the trace context in the metadata in an interceptor, by
// ClientTraceContext, instead of a stats handler.
func TestGRPCClientTraceContext(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	if f := telemetry.ClientTraceContext(telemetry.WithTracerProvider(newService(t, "on", rec).tp)); f != nil {
		t.Error("ClientTraceContext with a tracer provider is not nil: the stats handler is needed")
	}
	testGRPCPropagationWithoutSDK(t, func(tel *telemetry.Telemetry) grpc.ServerOption {
		return grpc.StatsHandler(telemetry.ServerStatsHandler(tel.Options()...))
	}, func(tel *telemetry.Telemetry) grpc.DialOption {
		outgoing := telemetry.ClientTraceContext(tel.Options()...)
		if outgoing == nil {
			t.Fatal("ClientTraceContext with no-op providers is nil")
		}
		return grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(outgoing(ctx), method, req, reply, cc, opts...)
		})
	})
}

func testGRPCPropagationWithoutSDK(t *testing.T, serverA func(*telemetry.Telemetry) grpc.ServerOption, clientA ...func(*telemetry.Telemetry) grpc.DialOption) {
	clearOTELEnv(t)
	rec := tracetest.NewSpanRecorder()
	client, svcB := newService(t, "client", rec), newService(t, "b", rec)
	// Stop below waits for B's handler and its span's end (see
	// TestGRPCTraceAcrossServices).
	srvB := grpc.NewServer(grpc.WaitForHandlers(true),
		grpc.StatsHandler(telemetry.ServerStatsHandler(telemetry.WithTracerProvider(svcB.tp), telemetry.WithMeterProvider(svcB.mp))))
	healthpb.RegisterHealthServer(srvB, health.NewServer())
	addrB := serveGRPC(t, srvB)

	tel, err := telemetry.Setup(context.Background()) // nothing set: no-op
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	srvA := grpc.NewServer(serverA(tel))
	aToB := dial(t, addrB, tel.Options()...)
	if len(clientA) > 0 {
		cc, err := grpc.NewClient(addrB, grpc.WithTransportCredentials(insecure.NewCredentials()), clientA[0](tel))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		aToB = cc
	}
	healthpb.RegisterHealthServer(srvA, &forwardingHealth{next: healthpb.NewHealthClient(aToB)})
	addrA := serveGRPC(t, srvA)

	cc := dial(t, addrA, telemetry.WithTracerProvider(client.tp), telemetry.WithMeterProvider(client.mp))
	if _, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	srvB.Stop()
	var clientSpan, serverB sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		switch serviceOf(s) {
		case "client":
			clientSpan = s
		case "b":
			serverB = s
		}
	}
	if clientSpan == nil || serverB == nil {
		t.Fatalf("spans %v, want one from the client and one from b", rec.Ended())
	}
	if serverB.SpanContext().TraceID() != clientSpan.SpanContext().TraceID() || serverB.Parent().SpanID() != clientSpan.SpanContext().SpanID() {
		t.Errorf("b's span is not the client span's child across A: trace %s parent %s, client %s/%s",
			serverB.SpanContext().TraceID(), serverB.Parent().SpanID(), clientSpan.SpanContext().TraceID(), clientSpan.SpanContext().SpanID())
	}
}

// upperFields is a propagator whose fields are spelled as HTTP headers.
type upperFields struct{ propagation.TraceContext }

func (upperFields) Fields() []string { return []string{"X-Trace-Id", "Traceparent"} }

// TestTraceContextKeysAreMetadataKeys: the keys come in lower case,
// as gRPC metadata carries them, whatever case the propagator spells its
// fields in; a server comparing them with a call's keys as they are must
// find them.
func TestTraceContextKeysAreMetadataKeys(t *testing.T) {
	got := telemetry.TraceContextKeys(telemetry.WithPropagator(upperFields{}))
	if want := []string{"x-trace-id", "traceparent"}; !slices.Equal(got, want) {
		t.Errorf("TraceContextKeys = %q, want %q", got, want)
	}
	if got := telemetry.TraceContextKeys(); !slices.Contains(got, "traceparent") || !slices.Contains(got, "baggage") {
		t.Errorf("default TraceContextKeys = %q, want the W3C fields", got)
	}
}
