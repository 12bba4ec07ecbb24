package telemetry

import (
	"context"
	"net"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Attribute keys Weft puts on spans, span events and metrics. The endpoint
// goes in the semantic conventions' network.peer.address and
// network.peer.port, which tracing back ends already understand.
const (
	AttrCluster         = attribute.Key("weft.cluster")
	AttrLocality        = attribute.Key("weft.locality")
	AttrAttempt         = attribute.Key("weft.attempt")
	AttrRetryReason     = attribute.Key("weft.retry.reason")
	AttrNetworkPeerAddr = attribute.Key("network.peer.address")
	AttrNetworkPeerPort = attribute.Key("network.peer.port")
)

// Span event names.
const (
	EventRetry = "weft.retry"
	EventHedge = "weft.hedge"
)

// Recording reports whether the span in ctx records what is added to it,
// so that a caller can skip building attributes nobody keeps.
func Recording(ctx context.Context) bool { return trace.SpanFromContext(ctx).IsRecording() }

// AnnotateEndpoint records on the span in ctx (the client span
// NewHTTPTransport or ClientStatsHandler started) where the mesh sent an
// attempt: the cluster, the endpoint address (host:port), its locality
// ("" when unknown, then left out) and the attempt number, 1 for the first
// try. A later call, for a retry, overwrites an earlier one's values, so
// the span ends naming the endpoint that answered.
//
// When the span is not recording (no SDK, or not sampled) it returns before
// building any attribute: the hot path pays one interface call.
func AnnotateEndpoint(ctx context.Context, cluster, endpoint, locality string, attempt int) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		annotateEndpoint(span, cluster, endpoint, locality, attempt)
	}
}

// annotateEndpoint is AnnotateEndpoint on a recording span. Its attribute
// buffer is in a frame of its own, not on the stack of every attempt.
//
//go:noinline
func annotateEndpoint(span trace.Span, cluster, endpoint, locality string, attempt int) {
	var buf [6]attribute.KeyValue
	attrs := append(buf[:0], AttrCluster.String(cluster), AttrAttempt.Int(attempt))
	if host, port, err := net.SplitHostPort(endpoint); err == nil {
		attrs = append(attrs, AttrNetworkPeerAddr.String(host))
		if p, err := strconv.Atoi(port); err == nil {
			attrs = append(attrs, AttrNetworkPeerPort.Int(p))
		}
	} else {
		attrs = append(attrs, AttrNetworkPeerAddr.String(endpoint))
	}
	if locality != "" {
		attrs = append(attrs, AttrLocality.String(locality))
	}
	span.SetAttributes(attrs...)
}

// RecordRetry adds a weft.retry event to the span in ctx: attempt is the
// number of the attempt about to start (2 for the first retry) and reason
// why the previous one is retried ("5xx", "reset", "connect-failure", ...).
// It costs nothing when the span is not recording.
func RecordRetry(ctx context.Context, attempt int, reason string) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	span.AddEvent(EventRetry, trace.WithAttributes(AttrAttempt.Int(attempt), AttrRetryReason.String(reason)))
}

// RecordHedge adds a weft.hedge event to the span in ctx: attempt is the
// number of the hedged attempt being started, which races those already in
// flight. It costs nothing when the span is not recording.
func RecordHedge(ctx context.Context, attempt int) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	span.AddEvent(EventHedge, trace.WithAttributes(AttrAttempt.Int(attempt)))
}
