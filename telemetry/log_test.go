package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/weftmesh/weft/telemetry"
)

func TestLogHandler(t *testing.T) {
	svc := newService(t, "a", tracetest.NewSpanRecorder())
	spanCtx, span := svc.tp.Tracer("test").Start(context.Background(), "request")
	defer span.End()

	tests := []struct {
		name   string
		ctx    context.Context
		logger func(*slog.Logger) *slog.Logger
		wantID bool
	}{
		{"inside a span", spanCtx, func(l *slog.Logger) *slog.Logger { return l }, true},
		{"outside a span", context.Background(), func(l *slog.Logger) *slog.Logger { return l }, false},
		{"with attrs, inside", spanCtx, func(l *slog.Logger) *slog.Logger { return l.With("user", "u1") }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			l := tt.logger(slog.New(telemetry.NewLogHandler(slog.NewJSONHandler(&buf, nil))))
			l.InfoContext(tt.ctx, "hello")
			var got map[string]any
			if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
				t.Fatalf("log line %q: %v", buf.String(), err)
			}
			wantTrace, wantSpan := "", ""
			if tt.wantID {
				wantTrace, wantSpan = span.SpanContext().TraceID().String(), span.SpanContext().SpanID().String()
			}
			gotTrace, _ := got[telemetry.LogKeyTraceID].(string)
			gotSpan, _ := got[telemetry.LogKeySpanID].(string)
			if gotTrace != wantTrace || gotSpan != wantSpan {
				t.Errorf("trace_id, span_id = %q, %q; want %q, %q (line %s)", gotTrace, gotSpan, wantTrace, wantSpan, buf.String())
			}
			if _, present := got[telemetry.LogKeyTraceID]; present != tt.wantID {
				t.Errorf("trace_id present = %v, want %v", present, tt.wantID)
			}
		})
	}
}

func TestLogHandlerWrapsOnce(t *testing.T) {
	h := telemetry.NewLogHandler(slog.NewTextHandler(&bytes.Buffer{}, nil))
	if got := telemetry.NewLogHandler(h); got != h {
		t.Error("wrapping twice made a second layer; IDs would be logged twice")
	}
}
