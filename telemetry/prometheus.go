package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	promexporter "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

type promReader struct {
	reader  sdkmetric.Reader
	handler http.Handler
}

// newPromReader builds a Prometheus reader on a registry of its own, not
// prometheus.DefaultRegisterer: the default registry is process-wide
// state, and two meshes in one process (tests do this) would collide.
func newPromReader() (*promReader, error) {
	reg := prometheus.NewRegistry()
	exp, err := promexporter.New(promexporter.WithRegisterer(reg))
	if err != nil {
		return nil, fmt.Errorf("telemetry: prometheus exporter: %w", err)
	}
	return &promReader{
		reader:  exp,
		handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}),
	}, nil
}

// serveProm starts the specification's standalone Prometheus listener on
// OTEL_EXPORTER_PROMETHEUS_HOST:OTEL_EXPORTER_PROMETHEUS_PORT and returns
// the function that stops it.
func serveProm(h http.Handler) (func(context.Context) error, error) {
	host, port := getenv(EnvPrometheusHost), getenv(EnvPrometheusPort)
	if host == "" {
		host = "localhost"
	}
	if port == "" {
		port = "9464"
	}
	addr := net.JoinHostPort(host, port)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		name := EnvPrometheusPort
		if getenv(EnvPrometheusPort) == "" && getenv(EnvPrometheusHost) != "" {
			name = EnvPrometheusHost
		}
		return nil, envError(name, addr, fmt.Errorf("prometheus listener: %w", err))
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			otel.Handle(fmt.Errorf("telemetry: prometheus listener on %s: %w", addr, err))
		}
	}()
	return func(ctx context.Context) error {
		err := srv.Shutdown(ctx)
		if err != nil {
			srv.Close()
		}
		<-done
		return err
	}, nil
}
