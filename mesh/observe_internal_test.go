package mesh

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/xds"
)

// TestControlPlaneRetriesAreLoggedAtMostEvery30s drives the logger with
// the events of a control plane away for 95 s, retried every 5 s.
func TestControlPlaneRetriesAreLoggedAtMostEvery30s(t *testing.T) {
	var buf bytes.Buffer
	l := &cpLogger{log: slog.New(slog.NewJSONHandler(&buf, nil))}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	good := t0.Add(-time.Minute)
	refused := errors.New("connection refused")
	l.event(xds.Event{Kind: xds.EventLost, At: t0, Server: "cp:15010", Err: refused, LastGood: good})
	for i := 1; i <= 19; i++ { // every 5 s up to 95 s
		l.event(xds.Event{Kind: xds.EventConnectFailed, At: t0.Add(time.Duration(i) * 5 * time.Second), Server: "cp:15010", Err: refused, LastGood: good})
	}
	l.event(xds.Event{Kind: xds.EventConnected, At: t0.Add(97 * time.Second), Server: "cp:15010", LastGood: good, DownSince: t0})

	var got []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		got = append(got, rec)
	}
	want := []struct {
		msg                   string
		attempts, suppressed  float64
		sinceGood, downForStr string
	}{
		{msg: "weft: control plane lost", sinceGood: "1m0s"},
		// 30 s after the loss: the attempts at 5..25 s were not logged.
		{msg: "weft: control plane still unreachable", attempts: 6, suppressed: 5, sinceGood: "1m30s"},
		{msg: "weft: control plane still unreachable", attempts: 12, suppressed: 5, sinceGood: "2m0s"},
		{msg: "weft: control plane still unreachable", attempts: 18, suppressed: 5, sinceGood: "2m30s"},
		{msg: "weft: control plane connected", attempts: 19, sinceGood: "2m37s", downForStr: "1m37s"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(got), len(want), buf.String())
	}
	for i, w := range want {
		t.Run(w.msg, func(t *testing.T) {
			g := got[i]
			if g["msg"] != w.msg || g["since_last_good_config"] != w.sinceGood {
				t.Errorf("line %d = %v, want %q since_last_good_config %s", i, g, w.msg, w.sinceGood)
			}
			if w.attempts > 0 && (g["failed_attempts"] != w.attempts || (w.suppressed > 0 && g["suppressed"] != w.suppressed)) {
				t.Errorf("line %d = %v, want failed_attempts %v suppressed %v", i, g, w.attempts, w.suppressed)
			}
			if w.downForStr != "" && g["down_for"] != w.downForStr {
				t.Errorf("line %d down_for = %v, want %s", i, g["down_for"], w.downForStr)
			}
		})
	}
}

// TestRepeatedLinesAreWrittenOncePer10s drives the limiting handler with
// a clock of its own.
func TestRepeatedLinesAreWrittenOncePer10s(t *testing.T) {
	type line struct {
		at    time.Duration
		msg   string
		attrs []any
	}
	for _, tt := range []struct {
		name  string
		lines []line
		// want is each written line's message and "suppressed" (0: absent).
		want []string
	}{
		{"a flapping endpoint", []line{
			{0, "ejected", []any{"address", "a"}},
			{time.Second, "returned", []any{"address", "a"}},
			{2 * time.Second, "ejected", []any{"address", "a"}},
			{3 * time.Second, "ejected", []any{"address", "a"}},
			{11 * time.Second, "ejected", []any{"address", "a"}},
			{12 * time.Second, "ejected", []any{"address", "a"}},
		}, []string{"ejected 0", "returned 0", "ejected 2"}},
		{"other attributes are other lines", []line{
			{0, "denied", []any{"path", "/a"}},
			{0, "denied", []any{"path", "/b"}},
			{time.Second, "denied", []any{"path", "/a"}},
		}, []string{"denied 0", "denied 0"}},
		{"after a quiet interval, no count", []line{
			{0, "breaker", []any{"to", "open"}},
			{10 * time.Second, "breaker", []any{"to", "open"}},
		}, []string{"breaker 0", "breaker 0"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			now := t0
			log := slog.New(newLimitedHandler(slog.NewJSONHandler(&buf, nil), limitEvery, func() time.Time { return now }))
			for _, l := range tt.lines {
				now = t0.Add(l.at)
				log.Info(l.msg, l.attrs...)
			}
			var got []string
			for _, s := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
				var rec map[string]any
				if err := json.Unmarshal([]byte(s), &rec); err != nil {
					t.Fatal(err)
				}
				n, _ := rec["suppressed"].(float64)
				got = append(got, fmt.Sprintf("%s %d", rec["msg"], int(n)))
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("written %q, want %q", got, tt.want)
			}
		})
	}
}

// TestLimitedHandlerMemoryIsBounded: a flood of distinct lines is written
// whole, and the handler remembers at most limitMaxKeys of them.
func TestLimitedHandlerMemoryIsBounded(t *testing.T) {
	var n int
	h := newLimitedHandler(countingHandler{&n}, limitEvery, nil)
	log := slog.New(h)
	for i := 0; i < 2*limitMaxKeys; i++ {
		log.Info("denied", "path", i)
	}
	if n != 2*limitMaxKeys {
		t.Errorf("%d lines written, want %d", n, 2*limitMaxKeys)
	}
	if len(h.st.seen) > limitMaxKeys {
		t.Errorf("%d keys remembered, want at most %d", len(h.st.seen), limitMaxKeys)
	}
}

type countingHandler struct{ n *int }

func (c countingHandler) Enabled(context.Context, slog.Level) bool  { return true }
func (c countingHandler) Handle(context.Context, slog.Record) error { *c.n++; return nil }
func (c countingHandler) WithAttrs([]slog.Attr) slog.Handler        { return c }
func (c countingHandler) WithGroup(string) slog.Handler             { return c }
