package mesh_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/weftmesh/weft/mesh"
)

// With the admin listener on, golden metrics wrap every inbound
// ResponseWriter: a handler that asserts http.Hijacker (a WebSocket
// upgrade, say) must still find it, as it does with the admin listener off.
func TestInboundWriterKeepsHijackerWithAdmin(t *testing.T) {
	for _, admin := range []bool{false, true} {
		var opts []mesh.Option
		if admin {
			opts = append(opts, mesh.WithAdminAddr("127.0.0.1:0"))
		}
		m, err := mesh.New(context.Background(), opts...)
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(m.Handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			if _, ok := w.(http.Hijacker); !ok {
				http.Error(w, "no Hijacker", http.StatusInternalServerError)
				return
			}
			io.WriteString(w, "ok")
		})))
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		srv.Close()
		m.Close()
		if string(body) != "ok" {
			t.Errorf("admin listener %v: the handler got %q", admin, body)
		}
	}
}
