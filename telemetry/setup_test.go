package telemetry_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/weftmesh/weft/telemetry"
)

// clearOTELEnv unsets every OTEL_* variable for the test, so the runner's
// environment cannot change what Setup sees.
func clearOTELEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "OTEL_") {
			t.Setenv(name, "") // restores the value afterwards
			os.Unsetenv(name)
		}
	}
}

func TestSetup(t *testing.T) {
	tests := []struct {
		name        string
		env         map[string]string
		wantSDKSpan bool // an SDK tracer provider, not a no-op one
		wantSDKMet  bool
		wantProm    bool
	}{
		{name: "nothing set", env: nil},
		{name: "none", env: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}},
		{name: "sdk disabled wins", env: map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"}},
		{name: "console", env: map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "console"}, wantSDKSpan: true, wantSDKMet: true},
		{name: "prometheus without listener", env: map[string]string{"OTEL_METRICS_EXPORTER": "prometheus"}, wantSDKMet: true, wantProm: true},
		{name: "b3 propagation", env: map[string]string{"OTEL_PROPAGATORS": "b3multi, tracecontext"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearOTELEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			tel, err := telemetry.Setup(context.Background(), telemetry.WithServiceName("orders"), telemetry.WithPrometheusListener(false))
			if err != nil {
				t.Fatalf("Setup: %v", err)
			}
			defer func() {
				// No telemetry was recorded, so there is nothing to send
				// to the closed OTLP port and Shutdown has no excuse to
				// fail or to leave a goroutine behind.
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if err := tel.Shutdown(ctx); err != nil {
					t.Errorf("Shutdown: %v", err)
				}
			}()
			_, sdkSpan := tel.TracerProvider().(*sdktrace.TracerProvider)
			_, noopSpan := tel.TracerProvider().(tracenoop.TracerProvider)
			if sdkSpan != tt.wantSDKSpan || noopSpan == tt.wantSDKSpan {
				t.Errorf("tracer provider is %T, want SDK %v", tel.TracerProvider(), tt.wantSDKSpan)
			}
			_, sdkMet := tel.MeterProvider().(*sdkmetric.MeterProvider)
			_, noopMet := tel.MeterProvider().(metricnoop.MeterProvider)
			if sdkMet != tt.wantSDKMet || noopMet == tt.wantSDKMet {
				t.Errorf("meter provider is %T, want SDK %v", tel.MeterProvider(), tt.wantSDKMet)
			}
			if got := tel.MetricsHandler() != nil; got != tt.wantProm {
				t.Errorf("MetricsHandler present = %v, want %v", got, tt.wantProm)
			}
			if tel.Propagator() == nil {
				t.Error("Propagator() = nil")
			}
		})
	}
}

func TestSetupPropagators(t *testing.T) {
	tests := []struct {
		env  string
		want []string // header fields the propagator writes
	}{
		{"", []string{"baggage", "traceparent", "tracestate"}},
		{"b3", []string{"b3"}},
		{"tracecontext,b3multi", []string{"traceparent", "tracestate", "x-b3-flags", "x-b3-sampled", "x-b3-spanid", "x-b3-traceid"}},
	}
	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			clearOTELEnv(t)
			if tt.env != "" {
				t.Setenv("OTEL_PROPAGATORS", tt.env)
			}
			tel, err := telemetry.Setup(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer tel.Shutdown(context.Background())
			got := tel.Propagator().Fields()
			if strings.Join(sorted(got), ",") != strings.Join(tt.want, ",") {
				t.Errorf("fields = %v, want %v", sorted(got), tt.want)
			}
		})
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestSetupErrors(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		wantVar string
	}{
		{"unknown traces exporter", map[string]string{"OTEL_TRACES_EXPORTER": "zipkin-v9"}, "OTEL_TRACES_EXPORTER"},
		{"unknown metrics exporter", map[string]string{"OTEL_METRICS_EXPORTER": "graphite"}, "OTEL_METRICS_EXPORTER"},
		{"unknown sampler", map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"},
		{"sampler arg not a number", map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"}, "OTEL_TRACES_SAMPLER_ARG"},
		{"sampler arg above 1", map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"}, "OTEL_TRACES_SAMPLER_ARG"},
		{"bad OTLP protocol", map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{"bad per-signal OTLP protocol", map[string]string{"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "udp"}, "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"},
		{"unknown propagator", map[string]string{"OTEL_PROPAGATORS": "tracecontext,carrier-pigeon"}, "OTEL_PROPAGATORS"},
		{"malformed resource attributes", map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_RESOURCE_ATTRIBUTES": "region"}, "OTEL_RESOURCE_ATTRIBUTES"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearOTELEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			tel, err := telemetry.Setup(context.Background())
			if err == nil {
				tel.Shutdown(context.Background())
				t.Fatalf("Setup: no error, want one naming %s", tt.wantVar)
			}
			var envErr *telemetry.EnvError
			if !errors.As(err, &envErr) || envErr.Var != tt.wantVar {
				t.Errorf("error %q: want an *EnvError for %s", err, tt.wantVar)
			}
			if !strings.HasPrefix(err.Error(), "telemetry: "+tt.wantVar) {
				t.Errorf("error %q does not start with %q", err, "telemetry: "+tt.wantVar)
			}
		})
	}
}

// TestSetupConsole runs the console exporter end to end: a span made with
// the provider Setup built is written to standard output at Shutdown, with
// the service name given to Setup winning over OTEL_SERVICE_NAME. The
// exporter holds the os.Stdout of its package's initialization, so the
// test runs itself in a child process and reads the child's output.
func TestSetupConsole(t *testing.T) {
	if os.Getenv(consoleChildEnv) == "1" {
		consoleChild(t)
		return
	}
	clearOTELEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestSetupConsole$", "-test.count=1")
	cmd.Env = append(os.Environ(), consoleChildEnv+"=1",
		"OTEL_TRACES_EXPORTER=console",
		"OTEL_SERVICE_NAME=from-env",
		"OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name=test")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	got := string(out)
	for _, want := range []string{`"Name":"console-span"`, `"Value":"orders"`, `"deployment.environment.name"`} {
		if !strings.Contains(got, want) {
			t.Errorf("console output lacks %s:\n%s", want, got)
		}
	}
	if strings.Contains(got, "from-env") {
		t.Errorf("OTEL_SERVICE_NAME won over WithServiceName:\n%s", got)
	}
}

const consoleChildEnv = "WEFT_TELEMETRY_CONSOLE_CHILD"

func consoleChild(t *testing.T) {
	tel, err := telemetry.Setup(context.Background(), telemetry.WithServiceName("orders"))
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	_, span := tel.TracerProvider().Tracer("test").Start(context.Background(), "console-span")
	span.End()
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// TestSetupExplicitProviders checks that providers given to Setup are used
// as they are and survive Shutdown, which belongs to their owner.
func TestSetupExplicitProviders(t *testing.T) {
	clearOTELEnv(t)
	t.Setenv("OTEL_TRACES_EXPORTER", "console") // would build a provider if the option did not win
	svc := newService(t, "a", tracetest.NewSpanRecorder())
	tel, err := telemetry.Setup(context.Background(), telemetry.WithTracerProvider(svc.tp), telemetry.WithMeterProvider(svc.mp))
	if err != nil {
		t.Fatal(err)
	}
	if tel.TracerProvider() != svc.tp || tel.MeterProvider() != svc.mp {
		t.Fatalf("providers = %T, %T; want the ones given", tel.TracerProvider(), tel.MeterProvider())
	}
	for i := range 2 { // idempotent
		if err := tel.Shutdown(context.Background()); err != nil {
			t.Fatalf("Shutdown #%d: %v", i+1, err)
		}
	}
	_, span := svc.tp.Tracer("test").Start(context.Background(), "after")
	defer span.End()
	if !span.IsRecording() {
		t.Error("the caller's tracer provider was shut down by Telemetry.Shutdown")
	}
}
