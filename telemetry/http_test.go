package telemetry_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/weftmesh/weft/telemetry"
)

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// retryOnce stands in for the mesh's retrying transport, which sits under
// the instrumented one: one client span covers every attempt, each attempt
// is annotated with its endpoint, and a 503 is retried once with an event.
func retryOnce(base http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		ctx := req.Context()
		for attempt := 1; ; attempt++ {
			telemetry.AnnotateEndpoint(ctx, "b", req.URL.Host, "us-east1/us-east1-b", attempt)
			resp, err := base.RoundTrip(req)
			if err != nil || resp.StatusCode != http.StatusServiceUnavailable || attempt == 2 {
				return resp, err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			telemetry.RecordRetry(ctx, attempt+1, "5xx")
		}
	})
}

// TestHTTPTraceAcrossServices sends a request client -> A -> B over real
// loopback servers, each with its own providers, and checks that one trace
// with the right parent links comes out, and that the semantic-convention
// duration histograms were recorded on each side.
func TestHTTPTraceAcrossServices(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	client, svcA, svcB := newService(t, "client", rec), newService(t, "a", rec), newService(t, "b", rec)
	opts := func(s *service) []telemetry.Option {
		return []telemetry.Option{telemetry.WithTracerProvider(s.tp), telemetry.WithMeterProvider(s.mp)}
	}

	var calls atomic.Int32
	srvB := httptest.NewServer(telemetry.NewHTTPHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			http.Error(w, "warming up", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "from b")
	}), opts(svcB)...))
	defer srvB.Close()

	baseA := &http.Transport{}
	defer baseA.CloseIdleConnections()
	clientA := &http.Client{Transport: telemetry.NewHTTPTransport(retryOnce(baseA), opts(svcA)...)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, srvB.URL+"/stock", nil)
		resp, err := clientA.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		io.Copy(w, resp.Body)
	})
	srvA := httptest.NewServer(telemetry.NewHTTPHandler(mux, opts(svcA)...))
	defer srvA.Close()

	base := &http.Transport{}
	defer base.CloseIdleConnections()
	hc := &http.Client{Transport: telemetry.NewHTTPTransport(base, opts(client)...)}
	ctx, root := client.tp.Tracer("test").Start(context.Background(), "checkout")
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srvA.URL+"/items/42", nil)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	root.End()
	if got, want := string(body), "from b"; resp.StatusCode != http.StatusOK || got != want {
		t.Fatalf("response = %d %q, want 200 %q", resp.StatusCode, got, want)
	}
	// Close waits for handlers in flight, so server spans have ended and
	// server durations are recorded before anything is checked.
	srvA.Close()
	srvB.Close()

	spans := rec.Ended()
	if got, want := len(spans), 6; got != want {
		for _, s := range spans {
			t.Logf("span %q kind %v service %s", s.Name(), s.SpanKind(), serviceOf(s))
		}
		t.Fatalf("got %d spans, want %d (root, client GET, A server, A client GET, 2 B server)", got, want)
	}
	for _, s := range spans {
		if s.SpanContext().TraceID() != root.SpanContext().TraceID() {
			t.Errorf("span %q of %s: trace %s, want %s", s.Name(), serviceOf(s), s.SpanContext().TraceID(), root.SpanContext().TraceID())
		}
	}

	one := func(name, svc string, kind trace.SpanKind) sdktrace.ReadOnlySpan {
		t.Helper()
		var found []sdktrace.ReadOnlySpan
		for _, s := range spansByName(spans, name) {
			if serviceOf(s) == svc && s.SpanKind() == kind {
				found = append(found, s)
			}
		}
		if len(found) != 1 {
			t.Fatalf("%d %v spans %q of %s, want 1", len(found), kind, name, svc)
		}
		return found[0]
	}
	clientGet := one("GET", "client", trace.SpanKindClient)
	serverA := one("GET /items/{id}", "a", trace.SpanKindServer)
	clientAGet := one("GET", "a", trace.SpanKindClient)
	serverB := spansByName(spans, "GET")
	var bSpans []sdktrace.ReadOnlySpan
	for _, s := range serverB {
		if serviceOf(s) == "b" {
			bSpans = append(bSpans, s)
		}
	}

	parents := []struct {
		child, parent sdktrace.ReadOnlySpan
		what          string
	}{
		{serverA, clientGet, "A server under client GET"},
		{clientAGet, serverA, "A's client GET under A server"},
	}
	if got, want := clientGet.Parent().SpanID(), root.SpanContext().SpanID(); got != want {
		t.Errorf("client GET parent = %s, want root %s", got, want)
	}
	for _, p := range parents {
		if got, want := p.child.Parent().SpanID(), p.parent.SpanContext().SpanID(); got != want {
			t.Errorf("%s: parent = %s, want %s", p.what, got, want)
		}
		if !p.child.Parent().IsRemote() && p.child.SpanKind() == trace.SpanKindServer {
			t.Errorf("%s: parent not remote: context did not come from headers", p.what)
		}
	}
	if len(bSpans) != 2 {
		t.Fatalf("%d B server spans, want 2 (one per attempt)", len(bSpans))
	}
	for i, s := range bSpans {
		if s.SpanKind() != trace.SpanKindServer {
			t.Errorf("B span %d kind = %v, want server", i, s.SpanKind())
		}
		if got, want := s.Parent().SpanID(), clientAGet.SpanContext().SpanID(); got != want {
			t.Errorf("B span %d parent = %s, want A's client span %s", i, got, want)
		}
	}

	// The retry shows up as an event, and the endpoint annotations end
	// with the attempt that answered.
	var retries []sdktrace.Event
	for _, e := range clientAGet.Events() {
		if e.Name == telemetry.EventRetry {
			retries = append(retries, e)
		}
	}
	if len(retries) != 1 {
		t.Fatalf("A's client span has %d %s events, want 1: %v", len(retries), telemetry.EventRetry, clientAGet.Events())
	}
	wantEvent := map[attribute.Key]attribute.Value{
		telemetry.AttrAttempt:     attribute.IntValue(2),
		telemetry.AttrRetryReason: attribute.StringValue("5xx"),
	}
	for _, kv := range retries[0].Attributes {
		if want, ok := wantEvent[kv.Key]; ok && kv.Value != want {
			t.Errorf("retry event %s = %v, want %v", kv.Key, kv.Value.String(), want.String())
		}
		delete(wantEvent, kv.Key)
	}
	if len(wantEvent) != 0 {
		t.Errorf("retry event lacks %v", wantEvent)
	}
	wantAttrs := []struct {
		key  attribute.Key
		want attribute.Value
	}{
		{telemetry.AttrCluster, attribute.StringValue("b")},
		{telemetry.AttrAttempt, attribute.IntValue(2)},
		{telemetry.AttrNetworkPeerAddr, attribute.StringValue("127.0.0.1")},
		{telemetry.AttrLocality, attribute.StringValue("us-east1/us-east1-b")},
	}
	for _, w := range wantAttrs {
		if got, ok := attrOf(clientAGet, w.key); !ok || got != w.want {
			t.Errorf("A's client span %s = %v (present %v), want %v", w.key, got.String(), ok, w.want.String())
		}
	}

	// Metrics through the manual readers, under semantic-convention names.
	checks := []struct {
		svc    *service
		metric string
		want   uint64
	}{
		{client, "http.client.request.duration", 1},
		{svcA, "http.server.request.duration", 1},
		{svcA, "http.client.request.duration", 1},
		{svcB, "http.server.request.duration", 2},
	}
	for _, c := range checks {
		m, ok := findMetric(c.svc.collect(t), c.metric)
		if !ok {
			t.Errorf("%s: no %s", c.svc.name, c.metric)
			continue
		}
		if m.Unit != "s" {
			t.Errorf("%s: %s unit = %q, want s", c.svc.name, c.metric, m.Unit)
		}
		if got := histogramCount(t, m); got != c.want {
			t.Errorf("%s: %s count = %d, want %d", c.svc.name, c.metric, got, c.want)
		}
	}
}

// TestHTTPPropagationWithoutSDK checks that a service with telemetry off
// (no-op providers) still forwards the caller's trace context, so a trace
// is not broken by a service that does not record it.
func TestHTTPPropagationWithoutSDK(t *testing.T) {
	clearOTELEnv(t)
	rec := tracetest.NewSpanRecorder()
	client, svcC := newService(t, "client", rec), newService(t, "c", rec)

	srvC := httptest.NewServer(telemetry.NewHTTPHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}),
		telemetry.WithTracerProvider(svcC.tp), telemetry.WithMeterProvider(svcC.mp)))
	defer srvC.Close()
	tel, err := telemetry.Setup(context.Background()) // nothing set: no-op
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	baseB := &http.Transport{}
	defer baseB.CloseIdleConnections()
	clientB := &http.Client{Transport: telemetry.NewHTTPTransport(baseB, tel.Options()...)}
	srvB := httptest.NewServer(telemetry.NewHTTPHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, srvC.URL, nil)
		resp, err := clientB.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		resp.Body.Close()
	}), tel.Options()...))
	defer srvB.Close()

	base := &http.Transport{}
	defer base.CloseIdleConnections()
	hc := &http.Client{Transport: telemetry.NewHTTPTransport(base, telemetry.WithTracerProvider(client.tp), telemetry.WithMeterProvider(client.mp))}
	req, _ := http.NewRequest(http.MethodGet, srvB.URL, nil)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	srvB.Close()
	srvC.Close()

	spans := rec.Ended()
	if got, want := len(spans), 2; got != want {
		t.Fatalf("got %d spans, want %d (client GET, C server)", got, want)
	}
	var clientSpan, serverC sdktrace.ReadOnlySpan
	for _, s := range spans {
		switch serviceOf(s) {
		case "client":
			clientSpan = s
		case "c":
			serverC = s
		}
	}
	if clientSpan == nil || serverC == nil {
		t.Fatalf("spans from %v, want client and c", spans)
	}
	if got, want := serverC.Parent().SpanID(), clientSpan.SpanContext().SpanID(); got != want {
		t.Errorf("C server parent = %s, want the client span %s (passed through B untraced)", got, want)
	}
}
