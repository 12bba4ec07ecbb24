package mesh

import (
	"bytes"
	"encoding/json"
	"errors"
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
