package telemetry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// ScopeName is the instrumentation scope of Weft's own metrics.
const ScopeName = "github.com/weftmesh/weft"

// Names of Weft's own instruments, following OpenTelemetry's naming
// guidance: a weft. namespace, dots between components, counts of discrete
// things pluralized, units in UCUM annotations ({retry}), no _total suffix
// (the Prometheus exporter adds it).
const (
	MetricEndpoints           = "weft.cluster.endpoints"
	MetricRetries             = "weft.client.retries"
	MetricHedges              = "weft.client.hedges"
	MetricBreakerOverflows    = "weft.circuit_breaker.overflows"
	MetricBreakerState        = "weft.circuit_breaker.state"
	MetricRateLimitRejections = "weft.rate_limit.rejections"
	MetricAuthzDecisions      = "weft.authz.decisions"
	MetricXDSUpdates          = "weft.xds.updates"
	MetricMirrors             = "weft.client.mirrors"
)

// Attribute keys of Weft's metrics, besides AttrCluster and AttrRetryReason.
const (
	AttrEndpointState   = attribute.Key("weft.endpoint.state")
	AttrOverflowReason  = attribute.Key("weft.circuit_breaker.reason")
	AttrBreakerState    = attribute.Key("weft.circuit_breaker.state")
	AttrRateLimitScope  = attribute.Key("weft.rate_limit.scope")
	AttrAuthzDecision   = attribute.Key("weft.authz.decision")
	AttrAuthzPolicy     = attribute.Key("weft.authz.policy")
	AttrXDSType         = attribute.Key("weft.xds.type")
	AttrXDSUpdateResult = attribute.Key("weft.xds.result")
	AttrMirrorResult    = attribute.Key("weft.mirror.result")
)

// Metrics holds Weft's own instruments, created once from a meter
// provider. Recording methods are meant for the hot path: attribute sets
// are computed once per distinct value and reused, so a measurement with
// values seen before does not allocate in Weft.
//
// A Metrics is safe for concurrent use.
type Metrics struct {
	meter       metric.Meter
	endpoints   metric.Int64ObservableGauge
	retries     metric.Int64Counter
	hedges      metric.Int64Counter
	overflows   metric.Int64Counter
	breaker     metric.Int64Gauge
	rateLimited metric.Int64Counter
	authz       metric.Int64Counter
	xds         metric.Int64Counter
	mirrors     metric.Int64Counter

	sets attrCache[attrKey]
}

// NewMetrics creates Weft's instruments from the meter provider given by
// WithMeterProvider (otel.GetMeterProvider() without it).
func NewMetrics(opts ...Option) (*Metrics, error) {
	c := newConfig(opts)
	meter := c.meterProviderOrGlobal().Meter(ScopeName)
	m := &Metrics{meter: meter}
	var errs []error
	check := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	var err error
	m.endpoints, err = meter.Int64ObservableGauge(MetricEndpoints,
		metric.WithDescription("Endpoints of a cluster, by health state."),
		metric.WithUnit("{endpoint}"))
	check(err)
	m.retries, err = meter.Int64Counter(MetricRetries,
		metric.WithDescription("Retried attempts of client requests, by cluster and reason."),
		metric.WithUnit("{retry}"))
	check(err)
	m.hedges, err = meter.Int64Counter(MetricHedges,
		metric.WithDescription("Hedged attempts of client requests, by cluster."),
		metric.WithUnit("{hedge}"))
	check(err)
	m.overflows, err = meter.Int64Counter(MetricBreakerOverflows,
		metric.WithDescription("Requests refused by a circuit breaker, by cluster and reason."),
		metric.WithUnit("{request}"))
	check(err)
	m.breaker, err = meter.Int64Gauge(MetricBreakerState,
		metric.WithDescription("1 for a circuit breaker's current state, 0 for the states it left."),
		metric.WithUnit("{state}"))
	check(err)
	m.rateLimited, err = meter.Int64Counter(MetricRateLimitRejections,
		metric.WithDescription("Requests rejected by a rate limit, by scope."),
		metric.WithUnit("{request}"))
	check(err)
	m.authz, err = meter.Int64Counter(MetricAuthzDecisions,
		metric.WithDescription("Authorization decisions on inbound requests, by decision and policy."),
		metric.WithUnit("{request}"))
	check(err)
	m.xds, err = meter.Int64Counter(MetricXDSUpdates,
		metric.WithDescription("xDS resource updates, by type and whether they were accepted."),
		metric.WithUnit("{update}"))
	check(err)
	m.mirrors, err = meter.Int64Counter(MetricMirrors,
		metric.WithDescription("Mirrored copies of client requests (request_mirror_policies), by mirror cluster and result."),
		metric.WithUnit("{request}"))
	check(err)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("telemetry: creating instruments: %w", err)
	}
	return m, nil
}

// ObserveEndpoints registers f as the source of weft.cluster.endpoints: at
// each collection f calls observe once per cluster and state ("healthy",
// "unhealthy", "draining", ...) with the number of endpoints in it. f runs
// on the exporter's goroutine and must not block. The returned function
// unregisters f; call it when the clusters f reports go away.
func (m *Metrics) ObserveEndpoints(f func(observe func(cluster, state string, count int64))) (unregister func() error, err error) {
	if f == nil {
		return nil, errors.New("telemetry: ObserveEndpoints: nil function")
	}
	reg, err := m.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		f(func(cluster, state string, count int64) {
			o.ObserveInt64(m.endpoints, count, m.sets.get(attrKey{kindEndpoints, cluster, state}).obs...)
		})
		return nil
	}, m.endpoints)
	if err != nil {
		return nil, fmt.Errorf("telemetry: ObserveEndpoints: %w", err)
	}
	return reg.Unregister, nil
}

// Cluster returns the recorder for one cluster's client-side metrics. Hold
// it (one per cluster, made when the cluster is) rather than calling
// Cluster per request.
func (m *Metrics) Cluster(name string) *ClusterMetrics {
	return &ClusterMetrics{m: m, name: name, hedge: m.sets.get(attrKey{kindHedge, name, ""})}
}

// RateLimited counts a request rejected by the rate limit of scope: the
// cluster for a client-side limit, "inbound" (or the route) for a server's.
func (m *Metrics) RateLimited(ctx context.Context, scope string) {
	m.rateLimited.Add(ctx, 1, m.sets.get(attrKey{kindRateLimit, scope, ""}).add...)
}

// AuthzDecision counts an authorization decision on an inbound request;
// policy names the policy that decided ("" when none did, as for the
// default decision, and then left out).
func (m *Metrics) AuthzDecision(ctx context.Context, allowed bool, policy string) {
	decision := "deny"
	if allowed {
		decision = "allow"
	}
	m.authz.Add(ctx, 1, m.sets.get(attrKey{kindAuthz, decision, policy}).add...)
}

// XDSUpdate counts an xDS update of resourceType (the type URL, or its
// short name such as "Listener") that was accepted, or rejected (NACKed).
func (m *Metrics) XDSUpdate(ctx context.Context, resourceType string, accepted bool) {
	result := "rejected"
	if accepted {
		result = "accepted"
	}
	m.xds.Add(ctx, 1, m.sets.get(attrKey{kindXDS, resourceType, result}).add...)
}

// ClusterMetrics records the client-side metrics of one cluster.
//
// A ClusterMetrics is safe for concurrent use.
type ClusterMetrics struct {
	m     *Metrics
	name  string
	hedge attrOpts
}

// Retry counts a retried attempt and why the previous one failed ("5xx",
// "reset", "connect-failure", ...).
func (c *ClusterMetrics) Retry(ctx context.Context, reason string) {
	c.m.retries.Add(ctx, 1, c.m.sets.get(attrKey{kindRetry, c.name, reason}).add...)
}

// Hedge counts a hedged attempt.
func (c *ClusterMetrics) Hedge(ctx context.Context) {
	c.m.hedges.Add(ctx, 1, c.hedge.add...)
}

// Overflow counts a request a circuit breaker refused: reason says which
// limit ("open", "max_requests", "max_pending", "max_retries").
func (c *ClusterMetrics) Overflow(ctx context.Context, reason string) {
	c.m.overflows.Add(ctx, 1, c.m.sets.get(attrKey{kindOverflow, c.name, reason}).add...)
}

// Mirror results: a copy that was sent (and answered, whatever the
// status), that failed without an answer, that the in-flight budget
// dropped, or that was skipped because the request's body could not be
// replayed.
const (
	MirrorSent    = "sent"
	MirrorFailed  = "failed"
	MirrorDropped = "dropped"
	MirrorSkipped = "skipped"
)

// Mirror counts one mirrored copy of a request to this cluster by result
// (MirrorSent, MirrorFailed, MirrorDropped, MirrorSkipped).
func (c *ClusterMetrics) Mirror(ctx context.Context, result string) {
	c.m.mirrors.Add(ctx, 1, c.m.sets.get(attrKey{kindMirror, c.name, result}).add...)
}

// BreakerState records a circuit breaker's transition: from goes to 0 and
// to goes to 1 in weft.circuit_breaker.state. Pass from "" for the initial
// state. It fits resilience.BreakerSettings.OnStateChange with the states'
// String values.
func (c *ClusterMetrics) BreakerState(ctx context.Context, from, to string) {
	if from != "" && from != to {
		c.m.breaker.Record(ctx, 0, c.m.sets.get(attrKey{kindBreaker, c.name, from}).rec...)
	}
	c.m.breaker.Record(ctx, 1, c.m.sets.get(attrKey{kindBreaker, c.name, to}).rec...)
}

// attrKey identifies one attribute set: which instrument family it is for
// and up to two values, whose keys the kind implies.
type attrKey struct {
	kind uint8
	a, b string
}

const (
	kindEndpoints uint8 = iota
	kindRetry
	kindHedge
	kindOverflow
	kindBreaker
	kindRateLimit
	kindAuthz
	kindXDS
	kindMirror
)

func (k attrKey) attributes() attribute.Set {
	switch k.kind {
	case kindEndpoints:
		return attribute.NewSet(AttrCluster.String(k.a), AttrEndpointState.String(k.b))
	case kindRetry:
		return attribute.NewSet(AttrCluster.String(k.a), AttrRetryReason.String(k.b))
	case kindHedge:
		return attribute.NewSet(AttrCluster.String(k.a))
	case kindOverflow:
		return attribute.NewSet(AttrCluster.String(k.a), AttrOverflowReason.String(k.b))
	case kindBreaker:
		return attribute.NewSet(AttrCluster.String(k.a), AttrBreakerState.String(k.b))
	case kindRateLimit:
		return attribute.NewSet(AttrRateLimitScope.String(k.a))
	case kindAuthz:
		if k.b == "" {
			return attribute.NewSet(AttrAuthzDecision.String(k.a))
		}
		return attribute.NewSet(AttrAuthzDecision.String(k.a), AttrAuthzPolicy.String(k.b))
	case kindXDS:
		return attribute.NewSet(AttrXDSType.String(k.a), AttrXDSUpdateResult.String(k.b))
	case kindMirror:
		return attribute.NewSet(AttrCluster.String(k.a), AttrMirrorResult.String(k.b))
	}
	return *attribute.EmptySet()
}

// attrOpts is one attribute set as the option slices each instrument kind
// takes, built once: passing a stored slice with ... allocates nothing,
// where building the option per call would.
type attrOpts struct {
	add []metric.AddOption
	rec []metric.RecordOption
	obs []metric.ObserveOption
}

// maxCachedSets bounds the cache, in case a caller passes values of
// unbounded cardinality (the SDK's own cardinality limit then applies);
// past it, sets are built per call.
const maxCachedSets = 4096

// attributeKey is a comparable summary of an attribute set, cheap to build
// on the hot path; attributes builds the set itself, once per key.
type attributeKey interface {
	comparable
	attributes() attribute.Set
}

// attrCache maps attribute keys to their options. Reads are one atomic
// load and a map lookup; a new key copies the map, which is rare because
// clusters, reasons, states, routes and status codes are few.
type attrCache[K attributeKey] struct {
	m  atomic.Pointer[map[K]attrOpts]
	mu sync.Mutex // serializes writers
}

func (c *attrCache[K]) get(k K) attrOpts {
	if p := c.m.Load(); p != nil {
		if o, ok := (*p)[k]; ok {
			return o
		}
	}
	return c.add(k)
}

func (c *attrCache[K]) add(k K) attrOpts {
	c.mu.Lock()
	defer c.mu.Unlock()
	var cur map[K]attrOpts
	if p := c.m.Load(); p != nil {
		cur = *p
		if o, ok := cur[k]; ok {
			return o
		}
	}
	opt := metric.WithAttributeSet(k.attributes())
	o := attrOpts{
		add: []metric.AddOption{opt},
		rec: []metric.RecordOption{opt},
		obs: []metric.ObserveOption{opt},
	}
	if len(cur) >= maxCachedSets {
		return o
	}
	next := make(map[K]attrOpts, len(cur)+1)
	for key, v := range cur {
		next[key] = v
	}
	next[k] = o
	c.m.Store(&next)
	return o
}
