package tracehdr

import (
	"net/textproto"
	"testing"
)

func TestCanonicalIsTextprotos(t *testing.T) {
	for _, k := range []string{"traceparent", "tracestate", "baggage", "Traceparent", "x-b3-traceid", "uber-trace-id", "weft-timeout", ""} {
		if got, want := Canonical(k), textproto.CanonicalMIMEHeaderKey(k); got != want {
			t.Errorf("Canonical(%q) = %q, want %q", k, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() {
		Canonical("traceparent")
		Canonical("tracestate")
		Canonical("baggage")
	}); n != 0 {
		t.Errorf("the W3C names: %v allocations, want 0", n)
	}
}
