package telemetry

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"go.opentelemetry.io/contrib/propagators/autoprop"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// The variables Setup reads itself. The exporters read the rest
// (OTEL_EXPORTER_OTLP_ENDPOINT and friends) when autoexport builds them.
const (
	EnvTracesExporter     = "OTEL_TRACES_EXPORTER"
	EnvMetricsExporter    = "OTEL_METRICS_EXPORTER"
	EnvTracesSampler      = "OTEL_TRACES_SAMPLER"
	EnvTracesSamplerArg   = "OTEL_TRACES_SAMPLER_ARG"
	EnvPropagators        = "OTEL_PROPAGATORS"
	EnvResourceAttributes = "OTEL_RESOURCE_ATTRIBUTES"
	EnvSDKDisabled        = "OTEL_SDK_DISABLED"
	EnvPrometheusHost     = "OTEL_EXPORTER_PROMETHEUS_HOST"
	EnvPrometheusPort     = "OTEL_EXPORTER_PROMETHEUS_PORT"

	envOTLPProtocol        = "OTEL_EXPORTER_OTLP_PROTOCOL"
	envOTLPTracesProtocol  = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	envOTLPMetricsProtocol = "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"
)

// EnvError is Setup's error for a variable it cannot use.
type EnvError struct {
	Var   string
	Value string
	Err   error
}

func (e *EnvError) Error() string {
	return fmt.Sprintf("telemetry: %s=%q: %v", e.Var, e.Value, e.Err)
}

func (e *EnvError) Unwrap() error { return e.Err }

func envError(name, value string, err error) error {
	return &EnvError{Var: name, Value: value, Err: err}
}

// Exporter names with a meaning of their own to Setup. Any other name is
// handed to autoexport, so exporters registered there keep working.
const (
	exporterNone       = "none"
	exporterOTLP       = "otlp"
	exporterPrometheus = "prometheus"
)

func getenv(name string) string { return strings.TrimSpace(os.Getenv(name)) }

func sdkDisabled() bool { return strings.EqualFold(getenv(EnvSDKDisabled), "true") }

// checkOTLPProtocol validates the protocol variables before autoexport reads
// them, because autoexport's error for a bad one does not say which
// variable was wrong.
func checkOTLPProtocol(signalVar string) error {
	name, v := signalVar, getenv(signalVar)
	if v == "" {
		name, v = envOTLPProtocol, getenv(envOTLPProtocol)
	}
	switch v {
	case "", "grpc", "http/protobuf":
		return nil
	}
	return envError(name, v, fmt.Errorf("unsupported OTLP protocol (want grpc or http/protobuf)"))
}

// samplerFromEnv is the SDK's reading of OTEL_TRACES_SAMPLER(_ARG), done
// here because the SDK reports a bad value to the global error handler
// and carries on with the default, where Weft wants an error. The default,
// with the variable unset, is the specification's: parentbased_always_on.
func samplerFromEnv() (sdktrace.Sampler, error) {
	name := strings.ToLower(getenv(EnvTracesSampler))
	arg := getenv(EnvTracesSamplerArg)
	ratio := func() (sdktrace.Sampler, error) {
		if arg == "" {
			return sdktrace.TraceIDRatioBased(1), nil
		}
		v, err := strconv.ParseFloat(arg, 64)
		if err != nil {
			return nil, envError(EnvTracesSamplerArg, arg, fmt.Errorf("not a number: %w", err))
		}
		if v < 0 || v > 1 {
			return nil, envError(EnvTracesSamplerArg, arg, fmt.Errorf("ratio not in [0, 1]"))
		}
		return sdktrace.TraceIDRatioBased(v), nil
	}
	switch name {
	case "", "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "traceidratio":
		return ratio()
	case "parentbased_traceidratio":
		s, err := ratio()
		if err != nil {
			return nil, err
		}
		return sdktrace.ParentBased(s), nil
	}
	return nil, envError(EnvTracesSampler, getenv(EnvTracesSampler), fmt.Errorf("unsupported sampler"))
}

// propagatorFromEnv reads OTEL_PROPAGATORS; unset means tracecontext and
// baggage.
func propagatorFromEnv() (propagation.TextMapPropagator, error) {
	v := getenv(EnvPropagators)
	if v == "" {
		return defaultPropagator(), nil
	}
	names := strings.Split(v, ",")
	for i := range names {
		names[i] = strings.TrimSpace(names[i])
	}
	p, err := autoprop.TextMapPropagator(names...)
	if err != nil {
		return nil, envError(EnvPropagators, v, err)
	}
	return p, nil
}
