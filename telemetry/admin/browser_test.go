package admin_test

import (
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/browsertest"
	"github.com/weftmesh/weft/telemetry/admin"
)

// The Tap panel follows /tap's newline-delimited JSON as it streams, and
// shows each event's decision: route, cluster, endpoint, attempts, authz.
// #tap in the page's URL starts following on load; #tap=2s follows for
// 2s (/tap?duration=2s) and says so once the stream has ended.
func TestPageFollowsTap(t *testing.T) {
	browsertest.Chromium(t)
	// Events as /tap writes them: one JSON object a line; a gRPC status
	// is its code's name.
	events := []string{
		`{"time":"2026-01-02T03:04:05Z","direction":"outbound","protocol":"http","method":"GET","authority":"orders:8080","path":"/items/1","status":200,"latency_ms":12.5,"route":"items","cluster":"orders-v1","endpoint":"10.0.0.1:8080","attempts":[{"endpoint":"10.0.0.2:8080","status":"503","reason":"retry on 5xx"},{"endpoint":"10.0.0.1:8080","status":"200"}],"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}`,
		`{"time":"2026-01-02T03:04:06Z","direction":"inbound","protocol":"grpc","method":"POST","authority":"orders","path":"/orders.Orders/Delete","status":"PermissionDenied","latency_ms":0.4,"peer":"spiffe://shop.example/ns/shop/sa/frontend","authz":{"decision":"deny","rule":"shop/no-deletes"}}`,
	}
	for _, tc := range []struct {
		name, hash string
		// ends: the stream ends after the events, as /tap's does once
		// its duration has passed (at once here, so that the end shows
		// in the render); else it stays open until the page goes away.
		ends bool
		want []string
	}{
		{"until stopped", "#tap", false, []string{`<span id="tap-state" class="pill ok" title="until stopped">streaming</span>`,
			">Stop following</button>"}},
		{"for 2s", "#tap=2s", true, []string{`<span id="tap-state" class="pill" title="">stopped after 2s</span>`,
			">Follow live requests</button>"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := admin.New("127.0.0.1:0", source{})
			if err != nil {
				t.Fatal(err)
			}
			srv.Serve()
			defer srv.Close()
			done := make(chan struct{})
			defer close(done)
			var mu sync.Mutex
			var queries []string
			srv.Handle("GET /tap", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				queries = append(queries, r.URL.RawQuery)
				mu.Unlock()
				w.Header().Set("Content-Type", "application/x-ndjson")
				if r.URL.RawQuery == "duration=1ms" {
					return // the page's probe: is /tap served?
				}
				for _, e := range events {
					w.Write([]byte(e + "\n"))
					http.NewResponseController(w).Flush()
				}
				if tc.ends {
					return
				}
				select {
				case <-r.Context().Done():
				case <-done:
				case <-time.After(30 * time.Second):
				}
			}))
			dom := browsertest.Render(t, "http://"+srv.Addr().String()+"/"+tc.hash, "admin-tap-"+strings.ReplaceAll(tc.name, " ", "-")+".png", "1400,900")
			for _, want := range append([]string{`<section id="tap-section">`, "/items/1", "items → orders-v1 → 10.0.0.1:8080",
				"10.0.0.2:8080 503 (retry on 5xx); 10.0.0.1:8080 200", "/orders.Orders/Delete", "deny shop/no-deletes",
				"spiffe://shop.example/ns/shop/sa/frontend", "PermissionDenied", "2 events seen"}, tc.want...) {
				if !strings.Contains(dom, want) {
					t.Errorf("the page does not show %q", want)
				}
			}
			// The probe, then one follow: #tap=2s asks for duration=2s.
			want := []string{"duration=1ms", strings.Replace(strings.TrimPrefix(tc.hash, "#tap"), "=", "duration=", 1)}
			mu.Lock()
			if !slices.Equal(queries, want) {
				t.Errorf("the page asked /tap with %q, want %q", queries, want)
			}
			mu.Unlock()
			if t.Failed() {
				t.Logf("DOM:\n%s", dom)
			}
		})
	}
}
