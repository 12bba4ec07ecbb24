package telemetry

import (
	"context"
	"net/http"
	"testing"

	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

func TestSplitHostPort(t *testing.T) {
	for _, c := range []struct {
		in   string
		host string
		port int
	}{
		{"", "", 0},
		{"orders", "orders", 0},
		{"orders:8080", "orders", 8080},
		{"127.0.0.1:80", "127.0.0.1", 80},
		{"[::1]:443", "::1", 443},
		{"[::1]", "::1", 0},
		{"::1", "::1", 0},
		{"orders:http", "orders", 0},
		{"orders:70000", "orders", 0},
		{"orders:", "orders", 0},
	} {
		if host, port := splitHostPort(c.in); host != c.host || port != c.port {
			t.Errorf("splitHostPort(%q) = %q, %d; want %q, %d", c.in, host, port, c.host, c.port)
		}
	}
	if n := testing.AllocsPerRun(100, func() { splitHostPort("orders") }); n != 0 {
		t.Errorf("splitHostPort of a host without a port: %v allocations, want 0", n)
	}
}

// TestHeaderReaderExtractsAsHeaderCarrier holds the extraction carrier to
// propagation.HeaderCarrier: the same span context, trace state and
// baggage (from two headers) out of the same header, for the default
// propagators, and no allocation for the lookups themselves.
func TestHeaderReaderExtractsAsHeaderCarrier(t *testing.T) {
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	h := http.Header{}
	h.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	h.Set("Tracestate", "vendor=opaque")
	h.Add("Baggage", "tenant=acme")
	h.Add("Baggage", "region=eu")
	h.Set("X-Other", "1")

	want := prop.Extract(context.Background(), propagation.HeaderCarrier(h))
	got := prop.Extract(context.Background(), headerReader(h))
	ws, gs := trace.SpanContextFromContext(want), trace.SpanContextFromContext(got)
	if !gs.IsValid() || !gs.Equal(ws) || gs.TraceState().String() != "vendor=opaque" {
		t.Errorf("span context %+v (state %q), want %+v", gs, gs.TraceState(), ws)
	}
	wb, gb := baggage.FromContext(want), baggage.FromContext(got)
	if gb.Len() != 2 || gb.Len() != wb.Len() {
		t.Errorf("baggage %q, want %q", gb, wb)
	}
	for _, m := range wb.Members() {
		if g := gb.Member(m.Key()).Value(); g != m.Value() {
			t.Errorf("baggage %s = %q, want %q", m.Key(), g, m.Value())
		}
	}

	r := headerReader(h)
	for _, k := range []string{"traceparent", "tracestate", "baggage", "x-other", "X-Other"} {
		if g, w := r.Get(k), propagation.HeaderCarrier(h).Get(k); g != w {
			t.Errorf("Get(%q) = %q, want %q", k, g, w)
		}
	}
	if n := testing.AllocsPerRun(100, func() {
		r.Get("traceparent")
		r.Get("tracestate")
		r.Values("baggage")
	}); n != 0 {
		t.Errorf("looking up the W3C headers: %v allocations, want 0", n)
	}
}
