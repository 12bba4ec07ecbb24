package devplane_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/examples/controlplane/devplane"
	"github.com/weftmesh/weft/mesh"
)

// httpBackend serves its version as the body on loopback.
func httpBackend(t *testing.T, version string) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, version) })}
	done := make(chan struct{})
	go func() { defer close(done); _ = hs.Serve(lis) }()
	t.Cleanup(func() { hs.Close(); <-done })
	return lis.Addr().String()
}

// TestWeftHTTPClientFollowsTheConfig sends Weft's HTTP client to
// http://orders:8080/ through the served config.
func TestWeftHTTPClientFollowsTheConfig(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	y := meshYAML("{v1: 80, v2: 20}", map[string]string{"v1": httpBackend(t, "v1") + ", " + httpBackend(t, "v1"), "v2": httpBackend(t, "v2")})
	y = strings.Replace(y, "port: 50051", "port: 8080", 1)
	srv := devplane.New(devplane.WithLogger(discardLogger()))
	defer srv.Close()
	addr, err := srv.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Apply(mustParse(t, y)); err != nil {
		t.Fatal(err)
	}
	m, err := mesh.New(ctx, mesh.WithBootstrap(devplane.BootstrapJSON(addr, "weft-http")))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	hc := m.HTTPClient()
	get := func(url string, canary bool) string {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if canary {
			req.Header.Set("x-canary", "true")
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	const n = 500
	got := map[string]int{}
	for range n {
		got[get("http://orders:8080/items", false)]++
	}
	t.Logf("Weft HTTP split over %d GETs: %v", n, got)
	if v1 := got["v1"] * 100 / n; got["v1"]+got["v2"] != n || v1 < 73 || v1 > 87 {
		t.Errorf("got %v, want v1 within 80±7%%", got)
	}
	for range 50 {
		if v := get("http://orders:8080/items", true); v != "v2" {
			t.Fatalf("with x-canary: true got %q, want v2", v)
		}
	}
	if v := get("http://orders/items", true); v != "v2" {
		t.Errorf("http://orders/ with x-canary: got %q, want v2", v)
	}
}
