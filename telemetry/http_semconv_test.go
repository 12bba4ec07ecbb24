package telemetry_test

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/weftmesh/weft/telemetry"
)

// histogramPoints returns a float64 histogram's data points.
func histogramPoints(t *testing.T, rm metricdata.ResourceMetrics, name string) []metricdata.HistogramDataPoint[float64] {
	t.Helper()
	m, ok := findMetric(rm, name)
	if !ok {
		t.Fatalf("no %s", name)
	}
	h, ok := m.Data.(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("%s: data is %T", name, m.Data)
	}
	return h.DataPoints
}

func attrString(s attribute.Set, k string) string {
	v, ok := s.Value(attribute.Key(k))
	if !ok {
		return "<absent>"
	}
	return v.String()
}

// TestHTTPSemanticConventions checks the attributes of the spans and
// duration histograms against OpenTelemetry's stable HTTP conventions:
// routes from the ServeMux, statuses, error.type on failures (4xx fails a
// client span but not a server span), unknown methods folded into
// _OTHER, and no server.address on server metrics, which the caller
// controls through Host.
func TestHTTPSemanticConventions(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	svc := newService(t, "svc", rec)
	opts := []telemetry.Option{telemetry.WithTracerProvider(svc.tp), telemetry.WithMeterProvider(svc.mp)}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "item") })
	mux.HandleFunc("/missing", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	mux.HandleFunc("/broken", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadGateway) })
	srv := httptest.NewServer(telemetry.NewHTTPHandler(mux, opts...))
	defer srv.Close()
	base := &http.Transport{}
	defer base.CloseIdleConnections()
	hc := &http.Client{Transport: telemetry.NewHTTPTransport(base, opts...)}

	for _, c := range []struct{ method, path string }{
		{"GET", "/items/1"}, {"GET", "/items/2?q=secret"}, {"GET", "/missing"}, {"GET", "/broken"}, {"BREW", "/items/3"},
	} {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, nil)
		req.Host = "spoofed.example:1234"
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", c.method, c.path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	srv.Close()

	byName := map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		byName[s.Name()] = append(byName[s.Name()], s)
	}
	if got := len(byName["GET /items/{id}"]); got != 2 {
		t.Errorf("%d server spans named by route, want 2; spans: %v", got, keys(byName))
	}
	for _, s := range byName["GET /items/{id}"] {
		if v, _ := attrOf(s, "http.route"); v.AsString() != "/items/{id}" {
			t.Errorf("http.route = %q", v.AsString())
		}
		if v, _ := attrOf(s, "url.path"); !strings.HasPrefix(v.AsString(), "/items/") {
			t.Errorf("url.path = %q", v.AsString())
		}
	}
	var sawMissing, sawBroken, sawOther bool
	for _, s := range append(byName["GET"], byName["_OTHER"]...) {
		status, _ := attrOf(s, "http.response.status_code")
		switch {
		case s.Name() == "_OTHER":
			sawOther = true
			if v, _ := attrOf(s, "http.request.method_original"); v.AsString() != "BREW" {
				t.Errorf("_OTHER span: method_original = %q, want BREW", v.AsString())
			}
		case status.AsInt64() == 404:
			sawMissing = true
			// A 404 is the caller's failure: an error on the client span
			// only.
			wantErr := s.SpanKind().String() == "client"
			if got := s.Status().Code == codes.Error; got != wantErr {
				t.Errorf("404 %v span: error status %v, want %v", s.SpanKind(), got, wantErr)
			}
		case status.AsInt64() == 502:
			sawBroken = true
			if s.Status().Code != codes.Error {
				t.Errorf("502 %v span: status %v, want Error", s.SpanKind(), s.Status())
			}
			if v, _ := attrOf(s, "error.type"); v.AsString() != "502" {
				t.Errorf("502 %v span: error.type = %q", s.SpanKind(), v.AsString())
			}
		}
	}
	if !sawMissing || !sawBroken || !sawOther {
		t.Errorf("spans for 404 %v, 502 %v, BREW %v; spans: %v", sawMissing, sawBroken, sawOther, keys(byName))
	}

	rm := svc.collect(t)
	var routed uint64
	for _, p := range histogramPoints(t, rm, telemetry.MetricHTTPServerDuration) {
		if got := attrString(p.Attributes, "server.address"); got != "<absent>" {
			t.Errorf("server metric carries server.address %q: a caller's Host header would make series", got)
		}
		if attrString(p.Attributes, "http.route") == "/items/{id}" && attrString(p.Attributes, "http.request.method") == "GET" {
			routed += p.Count
		}
		if attrString(p.Attributes, "http.response.status_code") == "502" && attrString(p.Attributes, "error.type") != "502" {
			t.Errorf("server 502 point without error.type: %v", p.Attributes.ToSlice())
		}
	}
	if routed != 2 {
		t.Errorf("server points for GET /items/{id}: %d requests, want 2", routed)
	}
	var clientCount uint64
	for _, p := range histogramPoints(t, rm, telemetry.MetricHTTPClientDuration) {
		clientCount += p.Count
		if got := attrString(p.Attributes, "server.address"); got != "127.0.0.1" {
			t.Errorf("client point server.address = %q, want the URL's host", got)
		}
		if attrString(p.Attributes, "http.response.status_code") == "404" && attrString(p.Attributes, "error.type") != "404" {
			t.Errorf("client 404 point without error.type: %v", p.Attributes.ToSlice())
		}
	}
	if clientCount != 5 {
		t.Errorf("client duration count = %d, want 5", clientCount)
	}
}

func keys(m map[string][]sdktrace.ReadOnlySpan) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestHTTPClientSpanCoversBody checks that a client span ends when the
// response body is closed, not when the headers arrive, so a slow body
// shows in the trace; and that a transport error ends it with an error.
func TestHTTPClientSpanCoversBody(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	svc := newService(t, "svc", rec)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "head")
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "tail")
	}))
	defer srv.Close()
	base := &http.Transport{}
	defer base.CloseIdleConnections()
	hc := &http.Client{Transport: telemetry.NewHTTPTransport(base, telemetry.WithTracerProvider(svc.tp), telemetry.WithMeterProvider(svc.mp))}
	resp, err := hc.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(rec.Ended()); n != 0 {
		t.Errorf("%d spans ended with the body unread, want 0", n)
	}
	close(release)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "headtail" {
		t.Errorf("body = %q", body)
	}
	if n := len(rec.Ended()); n != 1 {
		t.Fatalf("%d spans ended after the body, want 1", n)
	}

	srv.Close()
	if _, err := hc.Get(srv.URL); err == nil {
		t.Fatal("GET to a closed server succeeded")
	}
	spans := rec.Ended()
	last := spans[len(spans)-1]
	if last.Status().Code != codes.Error {
		t.Errorf("failed request's span status = %v, want Error", last.Status())
	}
	if v, ok := attrOf(last, "error.type"); !ok || v.AsString() == "" {
		t.Errorf("failed request's span has no error.type")
	}
}

// TestHTTPHandlerKeepsWriterFeatures checks that the instrumented handler
// passes streaming (Flush) and connection takeover (Hijack) through, as
// server-sent events and WebSocket upgrades need.
func TestHTTPHandlerKeepsWriterFeatures(t *testing.T) {
	svc := newService(t, "svc", tracetest.NewSpanRecorder())
	opts := []telemetry.Option{telemetry.WithTracerProvider(svc.tp), telemetry.WithMeterProvider(svc.mp)}
	srv := httptest.NewServer(telemetry.NewHTTPHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hijack" {
			conn, buf, err := w.(http.Hijacker).Hijack()
			if err != nil {
				t.Errorf("Hijack: %v", err)
				return
			}
			defer conn.Close()
			buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhijacked")
			buf.Flush()
			return
		}
		io.WriteString(w, "first")
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Errorf("Flush through ResponseController: %v", err)
		}
	}), opts...))
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/hijack")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hijacked" {
		t.Errorf("hijacked body = %q", body)
	}
	resp, err = http.Get(srv.URL + "/flush")
	if err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	resp.Body.Close()
	if line != "first" {
		t.Errorf("flushed body = %q", line)
	}
}
