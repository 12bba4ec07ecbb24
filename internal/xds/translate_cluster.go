//lint:file-ignore SA1019 control planes still send these deprecated xDS fields, and grpc-go reads them too

package xds

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	aggregatev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/clusters/aggregate/v3"
	cswrrv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/client_side_weighted_round_robin/v3"
	leastrequestv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"
	maglevv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/maglev/v3"
	randomv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/random/v3"
	ringhashv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/ring_hash/v3"
	roundrobinv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	wrrlocalityv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/wrr_locality/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weftmesh/weft/balancer"
)

// defaultCircuitBreaker returns Envoy's default thresholds.
func defaultCircuitBreaker() CircuitBreaker {
	return CircuitBreaker{MaxPendingRequests: 1024, MaxRequests: 1024, MaxRetries: 3}
}

// Ring sizes grpc-go accepts (gRFC A42).
const (
	defaultMinRingSize = 1024
	defaultMaxRingSize = 8 * 1024 * 1024
)

// TranslateCluster validates a Cluster. An error is a *ResourceError.
func TranslateCluster(c *clusterv3.Cluster) (*Cluster, error) {
	fs := clusterApplied
	if c.GetClusterType().GetName() == AggregateClusterType {
		fs = aggregateApplied
	}
	out, err := finish(translateCluster(c))(c, nil, fs)
	if err != nil {
		return nil, resourceErr(ClusterType, c.GetName(), err)
	}
	return out, nil
}

func translateCluster(c *clusterv3.Cluster) (*Cluster, error) {
	out := &Cluster{meta: meta{Name: c.GetName()}, CircuitBreaker: defaultCircuitBreaker()}
	switch ct := c.GetClusterDiscoveryType().(type) {
	case *clusterv3.Cluster_Type:
		switch ct.Type {
		case clusterv3.Cluster_EDS:
			out.Kind = ClusterEDS
			if err := checkConfigSource(c.GetEdsClusterConfig().GetEdsConfig()); err != nil {
				return nil, prefixed("eds_cluster_config.eds_config", err)
			}
			out.EDSServiceName = c.GetEdsClusterConfig().GetServiceName()
			if out.EDSServiceName == "" {
				out.EDSServiceName = c.GetName()
			}
		case clusterv3.Cluster_LOGICAL_DNS:
			out.Kind = ClusterLogicalDNS
			eps := c.GetLoadAssignment().GetEndpoints()
			if len(eps) != 1 || len(eps[0].GetLbEndpoints()) != 1 {
				return nil, ferr("load_assignment", "a LOGICAL_DNS cluster needs exactly one locality with one endpoint")
			}
			sa := eps[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
			if sa.GetAddress() == "" || sa.GetPortValue() == 0 {
				return nil, ferr("load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address", "address and port_value are required")
			}
			out.DNSHostPort = net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10))
		case clusterv3.Cluster_STATIC:
			out.Kind = ClusterStatic
			la := c.GetLoadAssignment()
			if la == nil {
				return nil, ferr("load_assignment", "required for a STATIC cluster")
			}
			eps, err := translateEndpoints(la)
			if err != nil {
				return nil, prefixed("load_assignment", err)
			}
			out.StaticEndpoints = eps
		default:
			return nil, ferr("type", "unsupported cluster type %v", ct.Type)
		}
	case *clusterv3.Cluster_ClusterType:
		if err := translateAggregate(c, ct.ClusterType, out); err != nil {
			return nil, err
		}
	default:
		return nil, ferr("cluster_discovery_type", "unsupported %T", ct)
	}
	if out.Kind == ClusterAggregate && c.GetLoadBalancingPolicy() == nil && c.GetLbPolicy() == clusterv3.Cluster_CLUSTER_PROVIDED {
		// Envoy wants CLUSTER_PROVIDED on an aggregate cluster, whose
		// balancer first picks the underlying cluster; grpc-go balances
		// the flattened priorities with round_robin then (gRFC A75 lets
		// the aggregate's policy be anything).
		out.LBPolicy = "round_robin"
	} else if err := translateLB(c, out); err != nil {
		return nil, err
	}
	for _, t := range c.GetCircuitBreakers().GetThresholds() {
		if t.GetPriority() != corev3.RoutingPriority_DEFAULT {
			continue
		}
		if v := t.GetMaxPendingRequests(); v != nil {
			out.CircuitBreaker.MaxPendingRequests = v.GetValue()
		}
		if v := t.GetMaxRequests(); v != nil {
			out.CircuitBreaker.MaxRequests = v.GetValue()
		}
		if v := t.GetMaxRetries(); v != nil {
			out.CircuitBreaker.MaxRetries = v.GetValue()
		}
		if err := translateRetryBudget(t, &out.CircuitBreaker); err != nil {
			return nil, prefixed("circuit_breakers.thresholds", err)
		}
		break
	}
	if od := c.GetOutlierDetection(); od != nil {
		o, err := translateOutlier(od)
		if err != nil {
			return nil, prefixed("outlier_detection", err)
		}
		out.OutlierDetection = o
	}
	if lrs := c.GetLrsServer(); lrs != nil {
		// grpc-go accepts only self, the server the cluster came from,
		// and rejects the cluster otherwise; so does Weft.
		if lrs.GetSelf() == nil {
			return nil, ferr("lrs_server", "only self is supported, got %T", lrs.GetConfigSourceSpecifier())
		}
		out.ReportLoad = true
		out.LoadService = c.GetEdsClusterConfig().GetServiceName()
	}
	if out.Kind != ClusterAggregate {
		// An aggregate cluster's requests use its underlying clusters'
		// protocol; its own options are reported whole.
		if err := translateHTTPProtocol(c, out); err != nil {
			return nil, err
		}
	}
	if ts := c.GetTransportSocket(); ts != nil {
		t, err := translateUpstreamTLS(ts)
		if err != nil {
			return nil, prefixed("transport_socket", err)
		}
		out.TLS = t
	}
	return out, nil
}

// AggregateClusterType is the cluster_type name of an aggregate cluster.
const AggregateClusterType = "envoy.clusters.aggregate"

// translateAggregate reads a cluster_type extension: only the aggregate
// cluster is known (gRFC A37).
func translateAggregate(c *clusterv3.Cluster, ct *clusterv3.Cluster_CustomClusterType, out *Cluster) error {
	if ct.GetName() != AggregateClusterType {
		return ferr("cluster_type.name", "unsupported cluster type %q", ct.GetName())
	}
	tc := ct.GetTypedConfig()
	cfg := &aggregatev3.ClusterConfig{}
	if tc == nil || !tc.MessageIs(cfg) {
		return ferr("cluster_type.typed_config", "not an envoy.extensions.clusters.aggregate.v3.ClusterConfig")
	}
	if err := tc.UnmarshalTo(cfg); err != nil {
		return ferr("cluster_type.typed_config", "%v", err)
	}
	if len(cfg.GetClusters()) == 0 {
		return ferr("cluster_type.typed_config.clusters", "empty: an aggregate cluster needs at least one cluster")
	}
	for i, name := range cfg.GetClusters() {
		f := fmt.Sprintf("cluster_type.typed_config.clusters[%d]", i)
		switch name {
		case "":
			return ferr(f, "empty cluster name")
		case c.GetName():
			return ferr(f, "the aggregate cluster %q names itself", name)
		}
	}
	out.Kind = ClusterAggregate
	out.AggregateClusters = slices.Clone(cfg.GetClusters())
	return nil
}

func translateLB(c *clusterv3.Cluster, out *Cluster) error {
	if lp := c.GetLoadBalancingPolicy(); lp != nil {
		// The first policy this client knows wins (gRFC A52).
		for _, p := range lp.GetPolicies() {
			tc := p.GetTypedExtensionConfig()
			ok, err := knownPolicy(tc.GetTypedConfig(), out)
			if err == nil && ok {
				err = typedLBExtras(tc.GetTypedConfig(), out)
			}
			if err != nil {
				return prefixed("load_balancing_policy.policies["+tc.GetName()+"]", err)
			}
			if ok {
				return nil
			}
		}
		var types []string
		for _, p := range lp.GetPolicies() {
			types = append(types, policyType(p.GetTypedExtensionConfig().GetTypedConfig()))
		}
		return ferr("load_balancing_policy", "no supported policy among %s", strings.Join(types, ", "))
	}
	if err := legacyLBExtras(c, out); err != nil {
		return err
	}
	switch c.GetLbPolicy() {
	case clusterv3.Cluster_ROUND_ROBIN:
		out.LBPolicy = "round_robin"
	case clusterv3.Cluster_RING_HASH:
		rh := c.GetRingHashLbConfig()
		if rh.GetHashFunction() != clusterv3.Cluster_RingHashLbConfig_XX_HASH {
			return ferr("ring_hash_lb_config.hash_function", "only XX_HASH is supported")
		}
		cfg, err := ringHash(rh.GetMinimumRingSize().GetValue(), rh.GetMaximumRingSize().GetValue())
		if err != nil {
			return prefixed("ring_hash_lb_config", err)
		}
		out.LBPolicy, out.LBConfig = "ring_hash", cfg
	case clusterv3.Cluster_LEAST_REQUEST:
		lr := c.GetLeastRequestLbConfig()
		cc := lr.GetChoiceCount()
		cfg, err := leastRequest(cc.GetValue(), cc != nil, lr.GetActiveRequestBias())
		if err != nil {
			return prefixed("least_request_lb_config", err)
		}
		out.LBPolicy, out.LBConfig = "least_request", cfg
	case clusterv3.Cluster_MAGLEV:
		cfg, err := maglev(c.GetMaglevLbConfig().GetTableSize().GetValue())
		if err != nil {
			return prefixed("maglev_lb_config", err)
		}
		out.LBPolicy, out.LBConfig = "maglev", cfg
	case clusterv3.Cluster_RANDOM:
		out.LBPolicy = "random"
	default:
		return ferr("lb_policy", "unsupported %v", c.GetLbPolicy())
	}
	return nil
}

func ringHash(minSize, maxSize uint64) (RingHashConfig, error) {
	cfg := RingHashConfig{MinRingSize: defaultMinRingSize, MaxRingSize: defaultMaxRingSize}
	if minSize != 0 {
		cfg.MinRingSize = minSize
	}
	if maxSize != 0 {
		cfg.MaxRingSize = maxSize
	}
	if cfg.MaxRingSize > defaultMaxRingSize {
		return cfg, ferr("maximum_ring_size", "%d is above %d", cfg.MaxRingSize, defaultMaxRingSize)
	}
	if cfg.MinRingSize > cfg.MaxRingSize {
		return cfg, ferr("minimum_ring_size", "%d is above maximum_ring_size %d", cfg.MinRingSize, cfg.MaxRingSize)
	}
	return cfg, nil
}

// Maglev table sizes (Envoy's): the default, and the largest prime Envoy
// accepts.
const (
	defaultMaglevTableSize = 65537
	maxMaglevTableSize     = 5000011
)

// maglev reads a Maglev table_size, 0 meaning unset. Envoy rejects a size
// that is not a prime ("The table size of maglev must be prime number"):
// a Maglev permutation visits every entry only when the size is prime.
func maglev(size uint64) (MaglevConfig, error) {
	if size == 0 {
		return MaglevConfig{TableSize: defaultMaglevTableSize}, nil
	}
	if size > maxMaglevTableSize {
		return MaglevConfig{}, ferr("table_size", "%d is above %d", size, maxMaglevTableSize)
	}
	if !new(big.Int).SetUint64(size).ProbablyPrime(0) {
		return MaglevConfig{}, ferr("table_size", "%d is not a prime", size)
	}
	return MaglevConfig{TableSize: size}, nil
}

// leastRequest reads least_request's settings; bias is a runtime value,
// of which Weft, having no runtime, takes the default.
func leastRequest(n uint32, set bool, bias *corev3.RuntimeDouble) (LeastRequestConfig, error) {
	cfg := LeastRequestConfig{ChoiceCount: 2, ActiveRequestBias: 1}
	if set {
		if n < 2 {
			return cfg, ferr("choice_count", "%d is below 2", n)
		}
		cfg.ChoiceCount = min(n, 10)
	}
	if bias != nil {
		b := bias.GetDefaultValue()
		if math.IsNaN(b) || math.IsInf(b, 0) || b < 0 {
			return cfg, ferr("active_request_bias.default_value", "%v is not a finite number at least 0", b)
		}
		cfg.ActiveRequestBias = b
	}
	return cfg, nil
}

// policyType names a load-balancing policy for an error: its type, or,
// for a custom policy (a TypedStruct), the type it names.
func policyType(a *anypb.Any) string {
	if ts, err := customPolicy(a); ts != nil && err == nil {
		return ts.GetTypeUrl()
	}
	return a.GetTypeUrl()
}

// customPolicy unwraps a custom policy (gRFC A52): the TypedStruct a
// carries, or nil when a is not one.
func customPolicy(a *anypb.Any) (*xdstypev3.TypedStruct, error) {
	if !a.MessageIs((*xdstypev3.TypedStruct)(nil)) {
		return nil, nil
	}
	ts := &xdstypev3.TypedStruct{}
	if err := a.UnmarshalTo(ts); err != nil {
		return nil, err
	}
	return ts, nil
}

func knownPolicy(a *anypb.Any, out *Cluster) (bool, error) {
	switch {
	case a.MessageIs((*roundrobinv3.RoundRobin)(nil)):
		out.LBPolicy = "round_robin"
		return true, nil
	case a.MessageIs((*ringhashv3.RingHash)(nil)):
		rh := &ringhashv3.RingHash{}
		if err := a.UnmarshalTo(rh); err != nil {
			return false, err
		}
		cfg, err := ringHash(rh.GetMinimumRingSize().GetValue(), rh.GetMaximumRingSize().GetValue())
		if err != nil {
			return false, err
		}
		out.LBPolicy, out.LBConfig = "ring_hash", cfg
		return true, nil
	case a.MessageIs((*leastrequestv3.LeastRequest)(nil)):
		lr := &leastrequestv3.LeastRequest{}
		if err := a.UnmarshalTo(lr); err != nil {
			return false, err
		}
		cfg, err := leastRequest(lr.GetChoiceCount().GetValue(), lr.GetChoiceCount() != nil, lr.GetActiveRequestBias())
		if err != nil {
			return false, err
		}
		out.LBPolicy, out.LBConfig = "least_request", cfg
		return true, nil
	case a.MessageIs((*maglevv3.Maglev)(nil)):
		m := &maglevv3.Maglev{}
		if err := a.UnmarshalTo(m); err != nil {
			return false, err
		}
		cfg, err := maglev(m.GetTableSize().GetValue())
		if err != nil {
			return false, err
		}
		out.LBPolicy, out.LBConfig = "maglev", cfg
		return true, nil
	case a.MessageIs((*randomv3.Random)(nil)):
		out.LBPolicy = "random"
		return true, nil
	case a.MessageIs((*cswrrv3.ClientSideWeightedRoundRobin)(nil)):
		w := &cswrrv3.ClientSideWeightedRoundRobin{}
		if err := a.UnmarshalTo(w); err != nil {
			return false, err
		}
		cfg, err := clientSideWRR(w)
		if err != nil {
			return false, err
		}
		out.LBPolicy, out.LBConfig = "client_side_weighted_round_robin", cfg
		// Fields grpc-go does not apply either (A78's custom utilization
		// metrics, slow start inside the policy, the newer OOB config).
		for _, f := range []struct {
			name string
			set  bool
		}{
			{"metric_names_for_computing_utilization", len(w.GetMetricNamesForComputingUtilization()) > 0},
			{"slow_start_config", w.GetSlowStartConfig() != nil},
			{"oob_reporting_config", w.GetOobReportingConfig() != nil},
		} {
			if f.set {
				out.Unapplied = append(out.Unapplied, "load_balancing_policy.client_side_weighted_round_robin."+f.name)
			}
		}
		return true, nil
	case a.MessageIs((*wrrlocalityv3.WrrLocality)(nil)):
		// Locality weighting is always on in Weft's balancer; the child
		// policy is what picks within a locality.
		w := &wrrlocalityv3.WrrLocality{}
		if err := a.UnmarshalTo(w); err != nil {
			return false, err
		}
		for _, p := range w.GetEndpointPickingPolicy().GetPolicies() {
			if ok, err := knownPolicy(p.GetTypedExtensionConfig().GetTypedConfig(), out); ok || err != nil {
				return ok, err
			}
		}
		return false, errors.New("wrr_locality: no supported endpoint_picking_policy")
	case a.MessageIs((*xdstypev3.TypedStruct)(nil)):
		// A custom policy (gRFC A52) named by its type URL. Weft's own
		// policies are published as "weft_<name>", the name they carry in
		// grpc-go's registry, so a control plane can ask for p2c_ewma,
		// which only Envoy's contrib build knows.
		ts, err := customPolicy(a)
		if err != nil {
			return false, err
		}
		url := ts.GetTypeUrl()
		name := url[strings.LastIndexByte(url, '/')+1:]
		if !strings.HasPrefix(name, WeftPolicyPrefix) || len(name) == len(WeftPolicyPrefix) {
			return false, nil // someone else's custom policy: try the next one
		}
		policy := strings.TrimPrefix(name, WeftPolicyPrefix)
		b := balancer.Get(policy)
		if b == nil {
			// Not registered in this process: grpc-go skips a policy its
			// registry lacks, and NACKs when none is left.
			return false, nil
		}
		cfg := json.RawMessage("{}")
		if v := ts.GetValue(); v != nil {
			js, err := protojson.Marshal(v)
			if err != nil {
				return false, err
			}
			cfg = js
		}
		// The registry validates the config here, as grpc-go's xDS client
		// has its registry parse the converted policy: a config the policy
		// refuses NACKs the cluster rather than run it on defaults.
		if p, ok := b.(balancer.ConfigParser); ok {
			if _, err := p.ParseConfig(cfg); err != nil {
				return false, ferr("typed_config.value", "%v", err)
			}
		}
		out.LBPolicy, out.LBConfig = policy, cfg
		return true, nil
	}
	return false, nil
}

// clientSideWRR reads ClientSideWeightedRoundRobin, filling in gRFC
// A58's defaults; a negative duration or penalty is refused by field, as
// Envoy's validation refuses it.
func clientSideWRR(w *cswrrv3.ClientSideWeightedRoundRobin) (ClientSideWRRConfig, error) {
	cfg := ClientSideWRRConfig{
		EnableOOBLoadReport:     w.GetEnableOobLoadReport().GetValue(),
		OOBReportingPeriod:      10 * time.Second,
		BlackoutPeriod:          10 * time.Second,
		WeightExpirationPeriod:  3 * time.Minute,
		WeightUpdatePeriod:      time.Second,
		ErrorUtilizationPenalty: 1,
	}
	for _, d := range []struct {
		name string
		in   *durationpb.Duration
		out  *time.Duration
	}{
		{"oob_reporting_period", w.GetOobReportingPeriod(), &cfg.OOBReportingPeriod},
		{"blackout_period", w.GetBlackoutPeriod(), &cfg.BlackoutPeriod},
		{"weight_expiration_period", w.GetWeightExpirationPeriod(), &cfg.WeightExpirationPeriod},
		{"weight_update_period", w.GetWeightUpdatePeriod(), &cfg.WeightUpdatePeriod},
	} {
		if d.in == nil {
			continue
		}
		v, err := duration(d.in)
		if err != nil {
			return cfg, prefixed(d.name, err)
		}
		*d.out = v
	}
	if cfg.OOBReportingPeriod == 0 {
		cfg.OOBReportingPeriod = 10 * time.Second
	}
	if cfg.WeightExpirationPeriod == 0 {
		cfg.WeightExpirationPeriod = 3 * time.Minute
	}
	// A58: "values less than 100ms are capped at 100ms".
	cfg.WeightUpdatePeriod = max(cfg.WeightUpdatePeriod, 100*time.Millisecond)
	if p := w.GetErrorUtilizationPenalty(); p != nil {
		v := float64(p.GetValue())
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return cfg, ferr("error_utilization_penalty", "%v is not a finite number at least 0", v)
		}
		cfg.ErrorUtilizationPenalty = v
	}
	return cfg, nil
}

// WeftPolicyPrefix marks a custom load-balancing policy's type URL as one
// of Weft's balancers ("type.googleapis.com/weft_p2c_ewma").
const WeftPolicyPrefix = "weft_"

// Outlier detection defaults (gRFC A50, Envoy).
func translateOutlier(od *clusterv3.OutlierDetection) (*OutlierDetection, error) {
	o := &OutlierDetection{Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second, MaxEjectionTime: 300 * time.Second, MaxEjectionPercent: 10}
	for _, d := range []struct {
		name string
		in   *durationpb.Duration
		out  *time.Duration
	}{{"interval", od.GetInterval(), &o.Interval}, {"base_ejection_time", od.GetBaseEjectionTime(), &o.BaseEjectionTime}, {"max_ejection_time", od.GetMaxEjectionTime(), &o.MaxEjectionTime}} {
		if d.in == nil {
			continue
		}
		v, err := duration(d.in)
		if err != nil {
			return nil, prefixed(d.name, err)
		}
		*d.out = v
	}
	pct := func(name string, v interface{ GetValue() uint32 }, def uint32, isNil bool) (uint32, error) {
		if isNil {
			return def, nil
		}
		if v.GetValue() > 100 {
			return 0, ferr(name, "%d is above 100", v.GetValue())
		}
		return v.GetValue(), nil
	}
	u32 := func(v interface{ GetValue() uint32 }, def uint32, isNil bool) uint32 {
		if isNil {
			return def
		}
		return v.GetValue()
	}
	var err error
	if o.MaxEjectionPercent, err = pct("max_ejection_percent", od.GetMaxEjectionPercent(), 10, od.GetMaxEjectionPercent() == nil); err != nil {
		return nil, err
	}
	sr := &SuccessRateEjection{
		StdevFactor:   u32(od.GetSuccessRateStdevFactor(), 1900, od.GetSuccessRateStdevFactor() == nil),
		MinimumHosts:  u32(od.GetSuccessRateMinimumHosts(), 5, od.GetSuccessRateMinimumHosts() == nil),
		RequestVolume: u32(od.GetSuccessRateRequestVolume(), 100, od.GetSuccessRateRequestVolume() == nil),
	}
	if sr.EnforcementPercentage, err = pct("enforcing_success_rate", od.GetEnforcingSuccessRate(), 100, od.GetEnforcingSuccessRate() == nil); err != nil {
		return nil, err
	}
	fp := &FailurePercentageEjection{
		MinimumHosts:  u32(od.GetFailurePercentageMinimumHosts(), 5, od.GetFailurePercentageMinimumHosts() == nil),
		RequestVolume: u32(od.GetFailurePercentageRequestVolume(), 50, od.GetFailurePercentageRequestVolume() == nil),
	}
	if fp.Threshold, err = pct("failure_percentage_threshold", od.GetFailurePercentageThreshold(), 85, od.GetFailurePercentageThreshold() == nil); err != nil {
		return nil, err
	}
	if fp.EnforcementPercentage, err = pct("enforcing_failure_percentage", od.GetEnforcingFailurePercentage(), 0, od.GetEnforcingFailurePercentage() == nil); err != nil {
		return nil, err
	}
	if e, err := pct("enforcing_consecutive_5xx", od.GetEnforcingConsecutive_5Xx(), 100, od.GetEnforcingConsecutive_5Xx() == nil); err != nil {
		return nil, err
	} else if e > 0 {
		o.Consecutive5xx = u32(od.GetConsecutive_5Xx(), 5, od.GetConsecutive_5Xx() == nil)
	}
	if e, err := pct("enforcing_consecutive_gateway_failure", od.GetEnforcingConsecutiveGatewayFailure(), 0, od.GetEnforcingConsecutiveGatewayFailure() == nil); err != nil {
		return nil, err
	} else if e > 0 {
		o.ConsecutiveGatewayFailure = u32(od.GetConsecutiveGatewayFailure(), 5, od.GetConsecutiveGatewayFailure() == nil)
	}
	// An algorithm whose enforcement is 0 can never eject (gRFC A50).
	if sr.EnforcementPercentage != 0 {
		o.SuccessRate = sr
	}
	if fp.EnforcementPercentage != 0 {
		o.FailurePercentage = fp
	}
	return o, nil
}

func translateUpstreamTLS(ts *corev3.TransportSocket) (*UpstreamTLS, error) {
	tc := ts.GetTypedConfig()
	if tc == nil {
		return nil, ferr("typed_config", "missing")
	}
	utc := &tlsv3.UpstreamTlsContext{}
	if err := tc.UnmarshalTo(utc); err != nil {
		return nil, ferr("typed_config", "not an UpstreamTlsContext: %v", err)
	}
	out := &UpstreamTLS{SNI: utc.GetSni()}
	ctc := utc.GetCommonTlsContext()
	out.IdentityProviderInstance = ctc.GetTlsCertificateProviderInstance().GetInstanceName()
	if out.IdentityProviderInstance == "" {
		out.IdentityProviderInstance = ctc.GetTlsCertificateCertificateProviderInstance().GetInstanceName()
	}
	var vc *tlsv3.CertificateValidationContext
	switch v := ctc.GetValidationContextType().(type) {
	case *tlsv3.CommonTlsContext_ValidationContext:
		vc = v.ValidationContext
	case *tlsv3.CommonTlsContext_CombinedValidationContext:
		vc = v.CombinedValidationContext.GetDefaultValidationContext()
		if out.RootProviderInstance == "" {
			out.RootProviderInstance = v.CombinedValidationContext.GetValidationContextCertificateProviderInstance().GetInstanceName()
		}
	case *tlsv3.CommonTlsContext_ValidationContextCertificateProviderInstance:
		out.RootProviderInstance = v.ValidationContextCertificateProviderInstance.GetInstanceName()
	case nil:
	default:
		return nil, ferr("typed_config.common_tls_context.validation_context_type", "unsupported %T", v)
	}
	if p := vc.GetCaCertificateProviderInstance().GetInstanceName(); p != "" {
		out.RootProviderInstance = p
	}
	for i, m := range vc.GetMatchSubjectAltNames() {
		sm, err := translateStringMatcher(m)
		if err != nil {
			return nil, prefixed(fmt.Sprintf("typed_config.common_tls_context.validation_context.match_subject_alt_names[%d]", i), err)
		}
		out.SANMatchers = append(out.SANMatchers, sm)
	}
	// The typed form replaced the field above; SPIFFE IDs are URI SANs, so
	// matchers of other SAN types can never match a peer and are refused.
	for i, m := range vc.GetMatchTypedSubjectAltNames() {
		field := fmt.Sprintf("typed_config.common_tls_context.validation_context.match_typed_subject_alt_names[%d]", i)
		if t := m.GetSanType(); t != tlsv3.SubjectAltNameMatcher_URI {
			return nil, ferr(field+".san_type", "%v is not supported (SPIFFE IDs are URI SANs)", t)
		}
		sm, err := translateStringMatcher(m.GetMatcher())
		if err != nil {
			return nil, prefixed(field+".matcher", err)
		}
		out.SANMatchers = append(out.SANMatchers, sm)
	}
	return out, nil
}
