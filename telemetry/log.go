package telemetry

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
)

// Log attribute keys for the IDs NewLogHandler adds.
const (
	LogKeyTraceID = "trace_id"
	LogKeySpanID  = "span_id"
)

// NewLogHandler wraps h so that a record logged with a context holding a
// valid span context (slog.InfoContext(ctx, ...) inside a request) carries
// trace_id and span_id, joining log lines to traces. Records without one
// pass through unchanged. The IDs are added to the record, so they sit
// inside any group opened with WithGroup, as the record's other
// attributes do.
//
// The returned handler is safe for concurrent use if h is.
func NewLogHandler(h slog.Handler) slog.Handler {
	if lh, ok := h.(*logHandler); ok {
		return lh // already wrapped: the IDs would appear twice
	}
	return &logHandler{next: h}
}

type logHandler struct{ next slog.Handler }

var _ slog.Handler = (*logHandler)(nil)

func (l *logHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return l.next.Enabled(ctx, level)
}

func (l *logHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		// r is this handler's own copy: slog passes records by value and
		// AddAttrs never writes into storage another copy can see.
		r.AddAttrs(
			slog.String(LogKeyTraceID, sc.TraceID().String()),
			slog.String(LogKeySpanID, sc.SpanID().String()),
		)
	}
	return l.next.Handle(ctx, r)
}

func (l *logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &logHandler{next: l.next.WithAttrs(attrs)}
}

func (l *logHandler) WithGroup(name string) slog.Handler {
	return &logHandler{next: l.next.WithGroup(name)}
}
