package mesh_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/weftmesh/weft/mesh"
)

func TestAdminPprofOnlyWhenAskedFor(t *testing.T) {
	c := adminClient(t)
	t.Run("off", func(t *testing.T) {
		admin := freeAddr(t)
		newMesh(t, mesh.WithAdminAddr(admin))
		for _, p := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/cmdline", "/debug/pprof/profile?seconds=1"} {
			if code, _, _ := fetch(t, c, "http://"+admin+p); code != http.StatusNotFound {
				t.Errorf("GET %s with pprof off: status %d, want 404", p, code)
			}
		}
	})
	t.Run("on", func(t *testing.T) {
		admin := freeAddr(t)
		newMesh(t, mesh.WithAdminAddr(admin), mesh.WithAdminPprof(true))
		base := "http://" + admin + "/debug/pprof/"
		code, _, body := fetch(t, c, base)
		if code != http.StatusOK || !strings.Contains(body, "goroutine") || !strings.Contains(body, "heap") {
			t.Errorf("index: status %d, body:\n%s", code, body)
		}
		code, _, body = fetch(t, c, base+"goroutine?debug=1")
		if code != http.StatusOK || !strings.HasPrefix(body, "goroutine profile: total") {
			t.Errorf("goroutine?debug=1: status %d, body %.200q", code, body)
		}
		// go tool pprof's formats are gzipped protobuf.
		for _, p := range []string{"heap", "allocs", "profile?seconds=1"} {
			code, h, body := fetch(t, c, base+p)
			if code != http.StatusOK || !bytes.HasPrefix([]byte(body), []byte{0x1f, 0x8b}) {
				t.Errorf("%s: status %d, Content-Type %q, not a gzipped profile: %.100q", p, code, h.Get("Content-Type"), body)
			}
		}
		if code, _, _ := fetch(t, c, base+"trace?seconds=1"); code != http.StatusOK {
			t.Errorf("trace: status %d", code)
		}
		if code, _, body := fetch(t, c, base+"symbol"); code != http.StatusOK || !strings.HasPrefix(body, "num_symbols: 1") {
			t.Errorf("symbol: status %d, body %q", code, body)
		}
		if code, _, _ := fetch(t, c, base+"nonsense"); code != http.StatusNotFound {
			t.Errorf("unknown profile: status %d, want 404", code)
		}
		if code, _, _ := fetch(t, c, base+"profile?seconds=100000"); code != http.StatusBadRequest {
			t.Errorf("profile?seconds=100000: status %d, want 400", code)
		}
	})
	// Profiles are on the admin listener only, never on the default mux a
	// program may serve on its public port.
	_, pattern := http.DefaultServeMux.Handler(httptest.NewRequest("GET", "/debug/pprof/", nil))
	if pattern != "" {
		t.Errorf("http.DefaultServeMux serves /debug/pprof/ (pattern %q)", pattern)
	}
}
