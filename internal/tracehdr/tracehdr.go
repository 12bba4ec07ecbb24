// Package tracehdr names HTTP header keys in net/http's canonical form for
// the trace-context propagators. OpenTelemetry's W3C propagators ask for
// and write their headers in lower case ("traceparent"), and
// textproto.CanonicalMIMEHeaderKey builds a new string for every such
// name, on every request; their three names are answered from constants.
package tracehdr

import "net/textproto"

// Canonical is textproto.CanonicalMIMEHeaderKey(key), without an
// allocation for traceparent, tracestate and baggage.
func Canonical(key string) string {
	switch key {
	case "traceparent":
		return "Traceparent"
	case "tracestate":
		return "Tracestate"
	case "baggage":
		return "Baggage"
	}
	return textproto.CanonicalMIMEHeaderKey(key)
}
