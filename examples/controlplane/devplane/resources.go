package devplane

import (
	"net"
	"strconv"
	"strings"
	"time"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	maglevv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/maglev/v3"
	randomv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/random/v3"
	ringhashv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/ring_hash/v3"
	roundrobinv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	wrrlocalityv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/wrr_locality/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Resources are the xDS resources a Config describes, each list in the
// order the file declares services and versions. Every call to
// [Config.Resources] builds new messages, so the caller may modify them.
type Resources struct {
	Listeners    []*listenerv3.Listener
	RouteConfigs []*routev3.RouteConfiguration
	Clusters     []*clusterv3.Cluster
	Endpoints    []*endpointv3.ClusterLoadAssignment
}

// WeftPolicyPrefix is prepended to a custom lb_policy's name to form the
// balancer name it is requested under: Weft registers its policies with
// grpc-go as "weft_<name>".
const WeftPolicyPrefix = "weft_"

// clusterName is the cluster, and load assignment, of one version.
func clusterName(svc, ver string) string { return svc + "-" + ver }

// ListenerNames returns the listener names of a service: "<name>:<port>"
// and "<name>".
func ListenerNames(name string, port uint32) []string {
	return []string{name + ":" + strconv.FormatUint(uint64(port), 10), name}
}

// Resources builds the resources of c.
func (c *Config) Resources() *Resources {
	r := &Resources{}
	for _, s := range c.services {
		for _, ln := range ListenerNames(s.name, s.port) {
			r.Listeners = append(r.Listeners, listener(ln, s.name))
		}
		r.RouteConfigs = append(r.RouteConfigs, routeConfig(s))
		for _, v := range s.versions {
			r.Clusters = append(r.Clusters, cluster(s, v, c.certProvider))
			r.Endpoints = append(r.Endpoints, loadAssignment(s, v))
		}
	}
	return r
}

// mustAny wraps a message built in this file; it fails only on a
// programming error, never on user input.
func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic("devplane: " + err.Error())
	}
	return a
}

func ads() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}

// listener is a client-side API listener whose routes come from RDS, so
// both of a service's listeners share one route configuration.
func listener(name, routeName string) *listenerv3.Listener {
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource: ads(), RouteConfigName: routeName,
		}},
		HttpFilters: []*hcmv3.HttpFilter{{
			Name:       "envoy.filters.http.router",
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})},
		}},
	}
	return &listenerv3.Listener{Name: name, ApiListener: &listenerv3.ApiListener{ApiListener: mustAny(hcm)}}
}

func routeConfig(s *service) *routev3.RouteConfiguration {
	names := ListenerNames(s.name, s.port)
	vh := &routev3.VirtualHost{Name: s.name, Domains: []string{names[1], names[0]}}
	for i, r := range s.routes {
		name := r.name
		if name == "" {
			name = s.name + "-route-" + strconv.Itoa(i)
		}
		timeout, retry := s.timeout, s.retry
		if r.timeout != 0 {
			timeout = r.timeout
		}
		if r.retry != nil {
			retry = r.retry
		}
		vh.Routes = append(vh.Routes, &routev3.Route{
			Name:   name,
			Match:  routeMatch(r.pathPrefix, r.headers),
			Action: &routev3.Route_Route{Route: routeAction(s, r.targets, timeout, retry)},
		})
	}
	vh.Routes = append(vh.Routes, &routev3.Route{
		Name:   s.name + "-default",
		Match:  routeMatch("/", nil),
		Action: &routev3.Route_Route{Route: routeAction(s, s.split, s.timeout, s.retry)},
	})
	return &routev3.RouteConfiguration{Name: s.name, VirtualHosts: []*routev3.VirtualHost{vh}}
}

func routeMatch(prefix string, hs []headerMatch) *routev3.RouteMatch {
	m := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}}
	for _, h := range hs {
		hm := &routev3.HeaderMatcher{Name: h.name, InvertMatch: h.invert}
		if h.kind == "present" {
			hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: h.present}
		} else {
			hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: stringMatcher(h.kind, h.value)}
		}
		m.Headers = append(m.Headers, hm)
	}
	return m
}

func stringMatcher(kind, v string) *matcherv3.StringMatcher {
	sm := &matcherv3.StringMatcher{}
	switch kind {
	case "exact":
		sm.MatchPattern = &matcherv3.StringMatcher_Exact{Exact: v}
	case "prefix":
		sm.MatchPattern = &matcherv3.StringMatcher_Prefix{Prefix: v}
	case "suffix":
		sm.MatchPattern = &matcherv3.StringMatcher_Suffix{Suffix: v}
	case "regex":
		sm.MatchPattern = &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: v}}
	}
	return sm
}

func dur(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

func routeAction(s *service, ts []target, timeout time.Duration, retry *retryPolicy) *routev3.RouteAction {
	a := &routev3.RouteAction{}
	// Zero-weight targets are left out: clients differ on whether they
	// accept them, and they take no traffic anyway.
	var wcs []*routev3.WeightedCluster_ClusterWeight
	for _, t := range ts {
		if t.weight > 0 {
			wcs = append(wcs, &routev3.WeightedCluster_ClusterWeight{Name: clusterName(s.name, t.version), Weight: wrapperspb.UInt32(t.weight)})
		}
	}
	if len(wcs) == 1 {
		a.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: wcs[0].GetName()}
	} else {
		a.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: wcs}}
	}
	if timeout > 0 {
		// Envoy and Weft read timeout; grpc-go reads only
		// max_stream_duration, so both carry the value.
		a.Timeout = dur(timeout)
		a.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: dur(timeout)}
	}
	if retry != nil {
		rp := &routev3.RetryPolicy{
			RetryOn:    strings.Join(retry.retryOn, ","),
			NumRetries: wrapperspb.UInt32(retry.numRetries),
		}
		if retry.perTryTimeout > 0 {
			rp.PerTryTimeout = dur(retry.perTryTimeout)
		}
		if retry.baseInterval > 0 {
			rp.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: dur(retry.baseInterval)}
			if retry.maxInterval > 0 {
				rp.RetryBackOff.MaxInterval = dur(retry.maxInterval)
			}
		}
		a.RetryPolicy = rp
	}
	if s.hedge != nil {
		a.HedgePolicy = &routev3.HedgePolicy{
			InitialRequests:      wrapperspb.UInt32(s.hedge.initialRequests),
			HedgeOnPerTryTimeout: s.hedge.onPerTryTimeout,
		}
	}
	for _, h := range s.hash {
		hp := &routev3.RouteAction_HashPolicy{Terminal: h.terminal}
		switch h.kind {
		case "header":
			hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: h.name}}
		case "cookie":
			hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_Cookie_{Cookie: &routev3.RouteAction_HashPolicy_Cookie{Name: h.name}}
		case "query_parameter":
			hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_QueryParameter_{QueryParameter: &routev3.RouteAction_HashPolicy_QueryParameter{Name: h.name}}
		case "source_ip":
			hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_ConnectionProperties_{ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}
		case "channel_id":
			// The filter-state key grpc-go hashes the channel on (gRFC A42).
			hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_FilterState_{FilterState: &routev3.RouteAction_HashPolicy_FilterState{Key: "io.grpc.channel_id"}}
		}
		a.HashPolicy = append(a.HashPolicy, hp)
	}
	return a
}

func cluster(s *service, v *version, certProvider string) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:                 clusterName(s.name, v.name),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads()},
	}
	setLB(c, s.lb, s)
	if cb := s.cb; cb != nil {
		t := &clusterv3.CircuitBreakers_Thresholds{Priority: corev3.RoutingPriority_DEFAULT}
		t.MaxConnections = u32(cb.maxConnections)
		t.MaxRequests = u32(cb.maxRequests)
		t.MaxPendingRequests = u32(cb.maxPendingRequests)
		t.MaxRetries = u32(cb.maxRetries)
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{t}}
	}
	if o := s.outlier; o != nil {
		od := &clusterv3.OutlierDetection{
			Consecutive_5Xx:    u32(o.consecutive5xx),
			MaxEjectionPercent: u32(o.maxEjectionPercent),
		}
		if o.interval > 0 {
			od.Interval = dur(o.interval)
		}
		if o.baseEjectionTime > 0 {
			od.BaseEjectionTime = dur(o.baseEjectionTime)
		}
		if o.maxEjectionTime > 0 {
			od.MaxEjectionTime = dur(o.maxEjectionTime)
		}
		if o.failurePercentageThreshold != nil {
			// A threshold alone would do nothing: enforcement defaults to 0.
			od.FailurePercentageThreshold = u32(o.failurePercentageThreshold)
			od.EnforcingFailurePercentage = wrapperspb.UInt32(100)
			od.FailurePercentageMinimumHosts = u32(o.failurePercentageMinHosts)
			od.FailurePercentageRequestVolume = u32(o.failurePercentageVol)
		}
		c.OutlierDetection = od
	}
	if len(s.spiffe) > 0 {
		vc := &tlsv3.CertificateValidationContext{
			CaCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{InstanceName: certProvider},
		}
		for _, id := range s.spiffe {
			// SPIFFE IDs are URI SANs; the typed matcher says so.
			vc.MatchTypedSubjectAltNames = append(vc.MatchTypedSubjectAltNames, &tlsv3.SubjectAltNameMatcher{
				SanType: tlsv3.SubjectAltNameMatcher_URI,
				Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: id}},
			})
		}
		utc := &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{InstanceName: certProvider},
			ValidationContextType:          &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc},
		}}
		c.TransportSocket = &corev3.TransportSocket{
			Name:       "envoy.transport_sockets.tls",
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(utc)},
		}
	}
	return c
}

func u32(p *uint32) *wrapperspb.UInt32Value {
	if p == nil {
		return nil
	}
	return wrapperspb.UInt32(*p)
}

func policy(name string, m proto.Message) *clusterv3.LoadBalancingPolicy_Policy {
	return &clusterv3.LoadBalancingPolicy_Policy{TypedExtensionConfig: &corev3.TypedExtensionConfig{Name: name, TypedConfig: mustAny(m)}}
}

// weftPolicy names a Weft balancer the way gRFC A52 names a custom
// policy: a TypedStruct whose type URL ends in the registered name.
func weftPolicy(name string, cfg *xdstypev3.TypedStruct) *clusterv3.LoadBalancingPolicy_Policy {
	if cfg == nil {
		cfg = &xdstypev3.TypedStruct{}
	}
	cfg.TypeUrl = "type.googleapis.com/" + WeftPolicyPrefix + name
	return policy(WeftPolicyPrefix+name, cfg)
}

func wrrRoundRobin() *clusterv3.LoadBalancingPolicy_Policy {
	return policy("envoy.load_balancing_policies.wrr_locality", &wrrlocalityv3.WrrLocality{
		EndpointPickingPolicy: &clusterv3.LoadBalancingPolicy{Policies: []*clusterv3.LoadBalancingPolicy_Policy{
			policy("envoy.load_balancing_policies.round_robin", &roundrobinv3.RoundRobin{}),
		}},
	})
}

// setLB expresses the policy so that every client finds one it knows:
// round_robin, least_request and ring_hash as the classic enum, which
// Envoy, grpc-go and Weft all read; the others as a load_balancing_policy
// list that starts with the exact policy and ends with the closest one all
// clients support, since a client takes the first entry it knows (gRFC A52).
func setLB(c *clusterv3.Cluster, name string, s *service) {
	switch name {
	case "round_robin":
		c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
	case "least_request":
		c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
	case "ring_hash":
		c.LbPolicy = clusterv3.Cluster_RING_HASH
		c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{HashFunction: clusterv3.Cluster_RingHashLbConfig_XX_HASH}}
	case "maglev":
		c.LoadBalancingPolicy = &clusterv3.LoadBalancingPolicy{Policies: []*clusterv3.LoadBalancingPolicy_Policy{
			policy("envoy.load_balancing_policies.maglev", &maglevv3.Maglev{}),
			weftPolicy("maglev", nil),
			// Ring hash keeps the consistent-hashing promise where
			// Maglev is unknown.
			policy("envoy.load_balancing_policies.ring_hash", &ringhashv3.RingHash{HashFunction: ringhashv3.RingHash_XX_HASH}),
		}}
	case "random":
		c.LoadBalancingPolicy = &clusterv3.LoadBalancingPolicy{Policies: []*clusterv3.LoadBalancingPolicy_Policy{
			policy("envoy.load_balancing_policies.random", &randomv3.Random{}),
			weftPolicy("random", nil),
			wrrRoundRobin(),
		}}
	default:
		var ts *xdstypev3.TypedStruct
		if s.lbConfig != nil {
			ts = &xdstypev3.TypedStruct{Value: s.lbConfig}
		}
		c.LoadBalancingPolicy = &clusterv3.LoadBalancingPolicy{Policies: []*clusterv3.LoadBalancingPolicy_Policy{
			weftPolicy(name, ts),
			wrrRoundRobin(),
		}}
	}
}

func loadAssignment(s *service, v *version) *endpointv3.ClusterLoadAssignment {
	la := &endpointv3.ClusterLoadAssignment{ClusterName: clusterName(s.name, v.name)}
	for _, g := range v.groups {
		// Every locality carries a Locality message and a weight of at
		// least 1: grpc-go rejects the assignment otherwise.
		l := &endpointv3.LocalityLbEndpoints{
			Locality:            &corev3.Locality{Region: g.region, Zone: g.zone, SubZone: g.subZone},
			LoadBalancingWeight: wrapperspb.UInt32(max(g.weight, 1)),
			Priority:            g.priority,
		}
		for _, a := range g.addrs {
			l.LbEndpoints = append(l.LbEndpoints, &endpointv3.LbEndpoint{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
						Protocol:      corev3.SocketAddress_TCP,
						Address:       a.host,
						PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: a.port},
					}}},
				}},
				HealthStatus: corev3.HealthStatus_HEALTHY,
			})
		}
		la.Endpoints = append(la.Endpoints, l)
	}
	return la
}

// addrString formats an endpoint for logs.
func addrString(a hostPort) string {
	return net.JoinHostPort(a.host, strconv.FormatUint(uint64(a.port), 10))
}
