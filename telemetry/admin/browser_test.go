package admin_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/browsertest"
	"github.com/weftmesh/weft/telemetry/admin"
)

// The Tap panel follows /tap's newline-delimited JSON as it streams, and
// shows each event's decision: route, cluster, endpoint, attempts, authz.
func TestPageFollowsTap(t *testing.T) {
	browsertest.Chromium(t)
	srv, err := admin.New("127.0.0.1:0", source{})
	if err != nil {
		t.Fatal(err)
	}
	srv.Serve()
	defer srv.Close()
	done := make(chan struct{})
	defer close(done)
	// Events as /tap writes them: one JSON object a line; a gRPC status
	// is its code's name.
	events := []string{
		`{"time":"2026-01-02T03:04:05Z","direction":"outbound","protocol":"http","method":"GET","authority":"orders:8080","path":"/items/1","status":200,"latency_ms":12.5,"route":"items","cluster":"orders-v1","endpoint":"10.0.0.1:8080","attempts":[{"endpoint":"10.0.0.2:8080","status":"503","reason":"retry on 5xx"},{"endpoint":"10.0.0.1:8080","status":"200"}],"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}`,
		`{"time":"2026-01-02T03:04:06Z","direction":"inbound","protocol":"grpc","method":"POST","authority":"orders","path":"/orders.Orders/Delete","status":"PermissionDenied","latency_ms":0.4,"peer":"spiffe://shop.example/ns/shop/sa/frontend","authz":{"decision":"deny","rule":"shop/no-deletes"}}`,
	}
	srv.Handle("GET /tap", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		for _, e := range events {
			w.Write([]byte(e + "\n"))
			http.NewResponseController(w).Flush()
		}
		// A live stream stays open until the page goes away.
		select {
		case <-r.Context().Done():
		case <-done:
		case <-time.After(30 * time.Second):
		}
	}))
	dom := browsertest.Render(t, "http://"+srv.Addr().String()+"/", "admin-tap.png", "1400,900")
	for _, want := range []string{`<section id="tap-section">`, "streaming", "/items/1", "items → orders-v1 → 10.0.0.1:8080",
		"10.0.0.2:8080 503 (retry on 5xx); 10.0.0.1:8080 200", "/orders.Orders/Delete", "deny shop/no-deletes",
		"spiffe://shop.example/ns/shop/sa/frontend", "PermissionDenied", "2 events seen"} {
		if !strings.Contains(dom, want) {
			t.Errorf("the page does not show %q", want)
		}
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}
}
