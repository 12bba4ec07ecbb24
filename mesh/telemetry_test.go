package mesh_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/weftmesh/weft/mesh"
)

// A request crossing two Weft services (client -> A -> B) is one trace:
// the client span, A's server span, A's client span and B's server span,
// each the parent of the next.
func TestTraceCrossesTwoServices(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())

	serve := func(m *mesh.Mesh, h http.Handler) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- m.Serve(ctx, ln, h) }()
		t.Cleanup(func() { cancel(); <-done })
		return ln.Addr().String()
	}
	b := newMesh(t, mesh.WithServiceName("b"), mesh.WithTracerProvider(tp))
	bAddr := serve(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "from b") }))
	a := newMesh(t, mesh.WithServiceName("a"), mesh.WithTracerProvider(tp), mesh.WithEndpoints("b", bAddr))
	aAddr := serve(a, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), "GET", "http://b/inner", nil)
		resp, err := a.HTTPClient().Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		io.Copy(w, resp.Body)
	}))
	client := newMesh(t, mesh.WithServiceName("client"), mesh.WithTracerProvider(tp), mesh.WithEndpoints("a", aAddr))
	if got := get(t, client.HTTPClient(), "http://a/outer"); got != "from b" {
		t.Fatalf("body %q", got)
	}

	spans := rec.Ended()
	if len(spans) != 4 {
		for _, s := range spans {
			t.Logf("span %s kind %v", s.Name(), s.SpanKind())
		}
		t.Fatalf("got %d spans, want 4 (client, A server, A client, B server)", len(spans))
	}
	trace := spans[0].SpanContext().TraceID()
	byID := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		if s.SpanContext().TraceID() != trace {
			t.Errorf("span %q is in trace %s, want %s", s.Name(), s.SpanContext().TraceID(), trace)
		}
		byID[s.SpanContext().SpanID().String()] = s
	}
	roots := 0
	for _, s := range spans {
		if !s.Parent().IsValid() {
			roots++
			continue
		}
		if _, ok := byID[s.Parent().SpanID().String()]; !ok {
			t.Errorf("span %q has a parent outside the trace", s.Name())
		}
	}
	if roots != 1 {
		t.Errorf("%d root spans, want 1", roots)
	}
	var annotated bool
	for _, s := range spans {
		for _, kv := range s.Attributes() {
			if kv.Key == "weft.cluster" && kv.Value.AsString() == "b" {
				annotated = true
			}
		}
	}
	if !annotated {
		t.Error("no span carries weft.cluster=b for the hop to service b")
	}
}

// The mesh's own metrics, read through the OpenTelemetry SDK: endpoints by
// state (the failing one ejected) and the retries it caused.
func TestMeshMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())

	addrs, _ := backends(t, 2)
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer broken.Close()
	m := newMesh(t, mesh.WithMeterProvider(mp), mesh.WithEndpoints("orders", append(addrs, broken.Listener.Addr().String())...))
	for i := 0; i < 30; i++ {
		get(t, m.HTTPClient(), "http://orders/")
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	gauge := map[string]int64{}
	var retries int64
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			switch mt.Name {
			case "weft.cluster.endpoints":
				for _, dp := range mt.Data.(metricdata.Gauge[int64]).DataPoints {
					state, _ := dp.Attributes.Value("weft.endpoint.state")
					gauge[state.AsString()] += dp.Value
				}
			case "weft.client.retries":
				for _, dp := range mt.Data.(metricdata.Sum[int64]).DataPoints {
					retries += dp.Value
				}
			}
		}
	}
	if gauge["healthy"] != 2 || gauge["ejected"] != 1 {
		t.Errorf("weft.cluster.endpoints by state = %v, want 2 healthy and 1 ejected", gauge)
	}
	if retries == 0 {
		t.Error("weft.client.retries stayed at 0 though a failing endpoint forced retries")
	}
}

// traceRecorder answers health checks and watches, recording the span
// context each call's handler sees.
type traceRecorder struct {
	healthpb.UnimplementedHealthServer
	seen chan trace.SpanContext
}

func (r *traceRecorder) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	r.seen <- trace.SpanContextFromContext(ctx)
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func (r *traceRecorder) Watch(_ *healthpb.HealthCheckRequest, ss grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
	r.seen <- trace.SpanContextFromContext(ss.Context())
	return ss.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING})
}

// With telemetry off a mesh gRPC server installs no stats handler, yet
// the caller's trace context still reaches unary and streaming handlers,
// so a trace crosses the hop; and a caller's grpc.UnaryInterceptor, which
// runs ahead of the mesh's interceptors, sees it too.
func TestGRPCServerCarriesTheTraceWithTelemetryOff(t *testing.T) {
	m := newMesh(t)
	const traceID, spanID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	check := func(t *testing.T, who string, sc trace.SpanContext) {
		t.Helper()
		if sc.TraceID().String() != traceID || sc.SpanID().String() != spanID || !sc.IsRemote() {
			t.Errorf("%s saw span context %s/%s (remote %v), want the caller's %s/%s", who, sc.TraceID(), sc.SpanID(), sc.IsRemote(), traceID, spanID)
		}
	}
	for _, withInterceptor := range []bool{false, true} {
		name := "mesh options only"
		var opts []grpc.ServerOption
		ahead := make(chan trace.SpanContext, 1)
		if withInterceptor {
			name = "a caller's interceptor ahead"
			opts = append(opts, grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
				ahead <- trace.SpanContextFromContext(ctx)
				return handler(ctx, req)
			}))
		}
		t.Run(name, func(t *testing.T) {
			gs, err := m.NewGRPCServer(opts...)
			if err != nil {
				t.Fatal(err)
			}
			rec := &traceRecorder{seen: make(chan trace.SpanContext, 2)}
			healthpb.RegisterHealthServer(gs, rec)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go gs.Serve(ln)
			defer gs.Stop()
			cc, err := grpc.NewClient("passthrough:///"+ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ctx = metadata.AppendToOutgoingContext(ctx, "traceparent", "00-"+traceID+"-"+spanID+"-01")
			checkAndWatch(t, ctx, cc)
			check(t, "the unary handler", <-rec.seen)
			check(t, "the streaming handler", <-rec.seen)
			if withInterceptor {
				check(t, "the caller's interceptor", <-ahead)
			}
		})
	}
}

// checkAndWatch makes one unary health check and one watch over cc, and
// reads the watch's first answer.
func checkAndWatch(t *testing.T, ctx context.Context, cc *grpc.ClientConn) {
	t.Helper()
	client := healthpb.NewHealthClient(cc)
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	w, err := client.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
}

// mdRecorder answers health checks and watches, recording the
// traceparent each call arrived with.
type mdRecorder struct {
	healthpb.UnimplementedHealthServer
	seen chan string
}

func traceparentOf(ctx context.Context) string {
	if v := metadata.ValueFromIncomingContext(ctx, "traceparent"); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (r *mdRecorder) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	r.seen <- traceparentOf(ctx)
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func (r *mdRecorder) Watch(_ *healthpb.HealthCheckRequest, ss grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
	r.seen <- traceparentOf(ss.Context())
	return ss.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING})
}

// With telemetry off a mesh gRPC channel installs no stats handler, yet
// its unary and streaming calls carry the caller's trace context; and
// with a caller's interceptor that runs after the mesh's, the calls carry
// the trace context that interceptor leaves.
func TestDialGRPCCarriesTheTraceWithTelemetryOff(t *testing.T) {
	rec := &mdRecorder{seen: make(chan string, 2)}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, rec)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Stop()
	m := newMesh(t, mesh.WithEndpoints("health", ln.Addr().String()))

	spanContext := func(traceID, spanID string) trace.SpanContext {
		tid, _ := trace.TraceIDFromHex(traceID)
		sid, _ := trace.SpanIDFromHex(spanID)
		return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
	}
	caller := spanContext("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
	inner := spanContext("4bf92f3577b34da6a3ce929d0e0e4736", "1111111111111111")
	traceparent := func(sc trace.SpanContext) string {
		return "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-01"
	}
	for _, c := range []struct {
		name string
		opts []grpc.DialOption
		want trace.SpanContext
	}{
		{"mesh options only", nil, caller},
		{"a caller's interceptor after the mesh's", []grpc.DialOption{
			grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
				return invoker(trace.ContextWithSpanContext(ctx, inner), method, req, reply, cc, opts...)
			}),
			grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
				return streamer(trace.ContextWithSpanContext(ctx, inner), desc, cc, method, opts...)
			})}, inner},
	} {
		t.Run(c.name, func(t *testing.T) {
			cc, err := m.DialGRPC("health", c.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ctx = trace.ContextWithSpanContext(ctx, caller)
			checkAndWatch(t, ctx, cc)
			for _, kind := range []string{"unary", "stream"} {
				if got := <-rec.seen; got != traceparent(c.want) {
					t.Errorf("the %s call carried traceparent %q, want %q", kind, got, traceparent(c.want))
				}
			}
		})
	}
}
