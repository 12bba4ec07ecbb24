package telemetry_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/weftmesh/weft/telemetry"
)

// scrape GETs url over real HTTP and returns the body.
func scrape(t *testing.T, url string) string {
	t.Helper()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(url)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %d, %v", resp.StatusCode, err)
	}
	return string(body)
}

// TestPrometheusHandler serves MetricsHandler as the admin endpoint would
// and scrapes it: Weft's own metrics and the HTTP duration histograms are
// in it, under Prometheus names.
func TestPrometheusHandler(t *testing.T) {
	clearOTELEnv(t)
	ctx := context.Background()
	tel, err := telemetry.Setup(ctx, telemetry.WithServiceName("orders"), telemetry.WithPrometheus())
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(ctx)
	if tel.MetricsHandler() == nil {
		t.Fatal("MetricsHandler() = nil with WithPrometheus")
	}

	m, err := telemetry.NewMetrics(tel.Options()...)
	if err != nil {
		t.Fatal(err)
	}
	m.Cluster("users").Retry(ctx, "reset")
	m.XDSUpdate(ctx, "Listener", true)

	app := httptest.NewServer(telemetry.NewHTTPHandler(http.NotFoundHandler(), tel.Options()...))
	scrape404(t, app.URL)
	app.Close()

	admin := http.NewServeMux()
	admin.Handle("GET /metrics", tel.MetricsHandler())
	srv := httptest.NewServer(admin)
	defer srv.Close()
	body := scrape(t, srv.URL+"/metrics")
	for _, want := range []string{
		`weft_client_retries_total{`,
		`weft_cluster="users"`,
		`weft_xds_updates_total{`,
		`http_server_request_duration_seconds_bucket{`,
		`service_name="orders"`, // target_info carries the resource
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %s:\n%s", want, body)
		}
	}
}

func scrape404(t *testing.T, url string) {
	t.Helper()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

// TestPrometheusListener selects the exporter through the variables and
// scrapes the specification's standalone listener.
func TestPrometheusListener(t *testing.T) {
	clearOTELEnv(t)
	// A free loopback port: taken, then released for Setup to bind.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	host, port, _ := net.SplitHostPort(addr)
	t.Setenv("OTEL_METRICS_EXPORTER", "prometheus")
	t.Setenv("OTEL_EXPORTER_PROMETHEUS_HOST", host)
	t.Setenv("OTEL_EXPORTER_PROMETHEUS_PORT", port)

	ctx := context.Background()
	tel, err := telemetry.Setup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m, err := telemetry.NewMetrics(tel.Options()...)
	if err != nil {
		t.Fatal(err)
	}
	m.AuthzDecision(ctx, false, "deny-all")
	body := scrape(t, "http://"+addr+"/metrics")
	if want := `weft_authz_decisions_total{`; !strings.Contains(body, want) {
		t.Errorf("scrape lacks %s:\n%s", want, body)
	}
	if err := tel.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Error("listener still accepting after Shutdown")
	}
}

// TestPrometheusListenerBusy: a port already taken is an error naming the
// variable, and Setup leaves nothing running.
func TestPrometheusListenerBusy(t *testing.T) {
	clearOTELEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	t.Setenv("OTEL_METRICS_EXPORTER", "prometheus")
	t.Setenv("OTEL_EXPORTER_PROMETHEUS_HOST", host)
	t.Setenv("OTEL_EXPORTER_PROMETHEUS_PORT", port)
	tel, err := telemetry.Setup(context.Background())
	if err == nil {
		tel.Shutdown(context.Background())
		t.Fatal("Setup on a busy port: no error")
	}
	if !strings.Contains(err.Error(), "OTEL_EXPORTER_PROMETHEUS_PORT") {
		t.Errorf("error %q does not name OTEL_EXPORTER_PROMETHEUS_PORT", err)
	}
}
