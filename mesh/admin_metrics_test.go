package mesh_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/weftmesh/weft/mesh"
)

// TestAdminMetricsByDefault: with the admin listener on, /metrics serves
// the mesh's HTTP client and server duration histograms whatever
// OTEL_METRICS_EXPORTER says, and a later scrape counts the requests sent
// since the first.
func TestAdminMetricsByDefault(t *testing.T) {
	for _, exporter := range []string{"", "none", "prometheus"} {
		t.Run("OTEL_METRICS_EXPORTER="+exporter, func(t *testing.T) {
			t.Setenv("OTEL_METRICS_EXPORTER", exporter)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			admin := freeAddr(t)
			// One mesh is both the client and the server, so one scrape
			// sees both sides.
			m := newMesh(t, mesh.WithServiceName("orders"), mesh.WithAdminAddr(admin),
				mesh.WithEndpoints("orders", ln.Addr().String()))
			waitListening(t, admin)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				done <- m.Serve(ctx, ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
			}()
			t.Cleanup(func() { cancel(); <-done })

			send := func(n int) {
				for range n {
					if got := get(t, m.HTTPClient(), "http://orders/items"); got != "ok" {
						t.Fatalf("GET http://orders/items: body %q, want ok", got)
					}
				}
			}
			names := []string{"http_client_request_duration_seconds_count", "http_server_request_duration_seconds_count"}
			send(3)
			first := scrapeCounts(t, "http://"+admin+"/metrics")
			for _, name := range names {
				if first[name] < 3 {
					t.Errorf("first scrape: %s = %v, want at least 3", name, first[name])
				}
			}
			send(5)
			second := scrapeCounts(t, "http://"+admin+"/metrics")
			for _, name := range names {
				if got, want := second[name], first[name]+5; got < want {
					t.Errorf("second scrape: %s = %v, want at least %v (first %v, 5 requests since)", name, got, want, first[name])
				}
			}
		})
	}
}

// TestAdminMetricsWithCallersProvider: a meter provider given with
// WithMeterProvider was built without the mesh's Prometheus reader, so
// /metrics says where the metrics went and how to scrape them instead of
// a bare 404.
func TestAdminMetricsWithCallersProvider(t *testing.T) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer mp.Shutdown(context.Background())
	admin := freeAddr(t)
	newMesh(t, mesh.WithMeterProvider(mp), mesh.WithAdminAddr(admin))
	waitListening(t, admin)

	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /metrics: status %d, want %d", resp.StatusCode, http.StatusNotFound)
	}
	for _, want := range []string{"WithMeterProvider", "go.opentelemetry.io/otel/exporters/prometheus"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("GET /metrics: body %q does not mention %q", body, want)
		}
	}
}

// scrapeCounts reads a Prometheus text page and sums each _count series
// over its labels.
func scrapeCounts(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: status %d: %s", url, resp.StatusCode, body)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, _, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		if !strings.HasSuffix(name, "_count") {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			t.Fatalf("GET %s: line %q: %v", url, line, err)
		}
		out[name] += v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
