package telemetry_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/weftmesh/weft/telemetry"
)

// points returns an int64 sum's or gauge's data points as attribute
// encoding -> value.
func points(t *testing.T, m metricdata.Metrics) map[string]int64 {
	t.Helper()
	var dps []metricdata.DataPoint[int64]
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		dps = d.DataPoints
	case metricdata.Gauge[int64]:
		dps = d.DataPoints
	default:
		t.Fatalf("%s: data is %T", m.Name, m.Data)
	}
	out := map[string]int64{}
	for _, dp := range dps {
		out[dp.Attributes.Encoded(attribute.DefaultEncoder())] = dp.Value
	}
	return out
}

func TestMetrics(t *testing.T) {
	svc := newService(t, "a", tracetest.NewSpanRecorder())
	m, err := telemetry.NewMetrics(telemetry.WithMeterProvider(svc.mp))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	orders, users := m.Cluster("orders"), m.Cluster("users")
	orders.Retry(ctx, "5xx")
	orders.Retry(ctx, "5xx")
	orders.Retry(ctx, "reset")
	users.Retry(ctx, "5xx")
	orders.Hedge(ctx)
	orders.Overflow(ctx, "max_requests")
	orders.BreakerState(ctx, "", "closed")
	orders.BreakerState(ctx, "closed", "open")
	m.RateLimited(ctx, "inbound")
	m.AuthzDecision(ctx, true, "allow-frontend")
	m.AuthzDecision(ctx, false, "")
	m.AuthzDecision(ctx, false, "")
	m.XDSUpdate(ctx, "Listener", true)
	m.XDSUpdate(ctx, "Cluster", false)
	unregister, err := m.ObserveEndpoints(func(observe func(cluster, state string, n int64)) {
		observe("orders", "healthy", 3)
		observe("orders", "unhealthy", 1)
	})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		metric string
		want   map[string]int64
	}{
		{telemetry.MetricRetries, map[string]int64{
			"weft.cluster=orders,weft.retry.reason=5xx":   2,
			"weft.cluster=orders,weft.retry.reason=reset": 1,
			"weft.cluster=users,weft.retry.reason=5xx":    1,
		}},
		{telemetry.MetricHedges, map[string]int64{"weft.cluster=orders": 1}},
		{telemetry.MetricBreakerOverflows, map[string]int64{"weft.circuit_breaker.reason=max_requests,weft.cluster=orders": 1}},
		{telemetry.MetricBreakerState, map[string]int64{
			"weft.circuit_breaker.state=closed,weft.cluster=orders": 0,
			"weft.circuit_breaker.state=open,weft.cluster=orders":   1,
		}},
		{telemetry.MetricRateLimitRejections, map[string]int64{"weft.rate_limit.scope=inbound": 1}},
		{telemetry.MetricAuthzDecisions, map[string]int64{
			"weft.authz.decision=allow,weft.authz.policy=allow-frontend": 1,
			"weft.authz.decision=deny":                                   2,
		}},
		{telemetry.MetricXDSUpdates, map[string]int64{
			"weft.xds.result=accepted,weft.xds.type=Listener": 1,
			"weft.xds.result=rejected,weft.xds.type=Cluster":  1,
		}},
		{telemetry.MetricEndpoints, map[string]int64{
			"weft.cluster=orders,weft.endpoint.state=healthy":   3,
			"weft.cluster=orders,weft.endpoint.state=unhealthy": 1,
		}},
	}
	rm := svc.collect(t)
	for _, tt := range tests {
		t.Run(tt.metric, func(t *testing.T) {
			mm, ok := findMetric(rm, tt.metric)
			if !ok {
				t.Fatalf("no %s", tt.metric)
			}
			got := points(t, mm)
			if len(got) != len(tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
			for k, want := range tt.want {
				if got[k] != want {
					t.Errorf("%s{%s} = %d, want %d", tt.metric, k, got[k], want)
				}
			}
		})
	}

	if err := unregister(); err != nil {
		t.Fatalf("unregister: %v", err)
	}
	if mm, ok := findMetric(svc.collect(t), telemetry.MetricEndpoints); ok && len(points(t, mm)) != 0 {
		t.Errorf("after unregister: %s still reported: %v", telemetry.MetricEndpoints, points(t, mm))
	}
}

// TestMetricsHotPathAllocs holds the hot-path promise: once a value has
// been seen, recording it allocates nothing in Weft (measured against
// no-op instruments, which allocate nothing themselves).
func TestMetricsHotPathAllocs(t *testing.T) {
	m, err := telemetry.NewMetrics(telemetry.WithMeterProvider(noop.NewMeterProvider()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c := m.Cluster("orders")
	ops := []struct {
		name string
		f    func()
	}{
		{"Retry", func() { c.Retry(ctx, "5xx") }},
		{"Hedge", func() { c.Hedge(ctx) }},
		{"Overflow", func() { c.Overflow(ctx, "open") }},
		{"BreakerState", func() { c.BreakerState(ctx, "closed", "open") }},
		{"RateLimited", func() { m.RateLimited(ctx, "inbound") }},
		{"AuthzDecision", func() { m.AuthzDecision(ctx, true, "p") }},
		{"XDSUpdate", func() { m.XDSUpdate(ctx, "Listener", true) }},
	}
	for _, op := range ops {
		op.f() // first sight builds the attribute set
		if got := testing.AllocsPerRun(100, op.f); got != 0 {
			t.Errorf("%s: %v allocs per call, want 0", op.name, got)
		}
	}
}

func TestObserveEndpointsNil(t *testing.T) {
	m, err := telemetry.NewMetrics(telemetry.WithMeterProvider(noop.NewMeterProvider()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.ObserveEndpoints(nil); err == nil {
		t.Error("ObserveEndpoints(nil): no error")
	}
}
