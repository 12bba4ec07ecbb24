package xdstest

import (
	"net"
	"strconv"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	aggregatev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/clusters/aggregate/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func typeURLOf(r types.Resource) string {
	switch r.(type) {
	case *listenerv3.Listener:
		return resource.ListenerType
	case *routev3.RouteConfiguration:
		return resource.RouteType
	case *clusterv3.Cluster:
		return resource.ClusterType
	case *endpointv3.ClusterLoadAssignment:
		return resource.EndpointType
	}
	return ""
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic("xdstest: " + err.Error()) // only for messages built here
	}
	return a
}

func ads() *corev3.ConfigSource {
	return &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}, ResourceApiVersion: corev3.ApiVersion_V3}
}

// HCM returns an HttpConnectionManager with only the router filter, using
// route configuration routeName over ADS, or rc inline when rc is non-nil.
func HCM(routeName string, rc *routev3.RouteConfiguration) *hcmv3.HttpConnectionManager {
	h := &hcmv3.HttpConnectionManager{
		StatPrefix:  "weft",
		HttpFilters: []*hcmv3.HttpFilter{{Name: "router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})}}},
	}
	if rc != nil {
		h.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc}
	} else {
		h.RouteSpecifier = &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{ConfigSource: ads(), RouteConfigName: routeName}}
	}
	return h
}

// APIListener returns a client-side listener wrapping hcm.
func APIListener(name string, hcm *hcmv3.HttpConnectionManager) *listenerv3.Listener {
	return &listenerv3.Listener{Name: name, ApiListener: &listenerv3.ApiListener{ApiListener: mustAny(hcm)}}
}

// Listener returns an API listener whose routes come from RDS routeName.
func Listener(name, routeName string) *listenerv3.Listener {
	return APIListener(name, HCM(routeName, nil))
}

// InlineListener returns an API listener carrying rc inline.
func InlineListener(name string, rc *routev3.RouteConfiguration) *listenerv3.Listener {
	return APIListener(name, HCM("", rc))
}

// RouteConfig returns a route configuration with one virtual host for
// domain whose single prefix "/" route sends to cluster.
func RouteConfig(name, domain, cluster string) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{
		Name: domain, Domains: []string{domain},
		Routes: []*routev3.Route{{
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}},
		}},
	}}}
}

// Cluster returns a round-robin EDS cluster reading EDS resource
// edsService over ADS ("" = the cluster's name).
func Cluster(name, edsService string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads(), ServiceName: edsService},
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
	}
}

// AggregateCluster returns an aggregate cluster (gRFC A37) over clusters,
// highest priority first, balanced round robin (grpc-go refuses Envoy's
// CLUSTER_PROVIDED).
func AggregateCluster(name string, clusters ...string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name: name,
		ClusterDiscoveryType: &clusterv3.Cluster_ClusterType{ClusterType: &clusterv3.Cluster_CustomClusterType{
			Name: "envoy.clusters.aggregate", TypedConfig: mustAny(&aggregatev3.ClusterConfig{Clusters: clusters})}},
		LbPolicy: clusterv3.Cluster_ROUND_ROBIN,
	}
}

// LogicalDNSCluster returns a LOGICAL_DNS cluster resolving host:port.
func LogicalDNSCluster(name, host string, port uint32) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_LOGICAL_DNS},
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}}}}},
		}}},
	}
}

// StaticCluster returns a STATIC cluster whose endpoints, addrs, are
// inline (the load assignment Endpoints builds).
func StaticCluster(name string, addrs ...string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		LoadAssignment:       Endpoints(name, addrs...),
	}
}

// Endpoints returns a load assignment for cluster with one locality
// (region "r", zone "z", weight 1, priority 0) holding addrs (host:port).
func Endpoints(cluster string, addrs ...string) *endpointv3.ClusterLoadAssignment {
	var lbs []*endpointv3.LbEndpoint
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			panic("xdstest: Endpoints: " + err.Error())
		}
		p, err := strconv.ParseUint(port, 10, 32)
		if err != nil {
			panic("xdstest: Endpoints: " + err.Error())
		}
		lbs = append(lbs, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{
				Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)},
				}},
			}}},
			HealthStatus: corev3.HealthStatus_HEALTHY,
		})
	}
	return &endpointv3.ClusterLoadAssignment{ClusterName: cluster, Endpoints: []*endpointv3.LocalityLbEndpoints{{
		Locality:            &corev3.Locality{Region: "r", Zone: "z"},
		LoadBalancingWeight: wrapperspb.UInt32(1),
		LbEndpoints:         lbs,
	}}}
}

// LBPolicy returns a load_balancing_policy listing policies in order of
// preference, named "policy-0", "policy-1", ...
func LBPolicy(policies ...proto.Message) *clusterv3.LoadBalancingPolicy {
	out := &clusterv3.LoadBalancingPolicy{}
	for i, p := range policies {
		out.Policies = append(out.Policies, &clusterv3.LoadBalancingPolicy_Policy{
			TypedExtensionConfig: &corev3.TypedExtensionConfig{Name: "policy-" + strconv.Itoa(i), TypedConfig: mustAny(p)}})
	}
	return out
}

// UpstreamHTTP sets c's upstream HTTP protocol options, as istiod sends
// them, to the protocol named: "http1" and "http2" choose one explicitly
// (istiod's explicit HTTP/2 for ports declared http2 or grpc, and for
// h2UpgradePolicy UPGRADE), "auto" lets ALPN choose, "use_downstream"
// follows the caller's protocol (istiod's choice for ports whose protocol
// it sniffs). It returns c.
func UpstreamHTTP(c *clusterv3.Cluster, protocol string) *clusterv3.Cluster {
	o := &httpv3.HttpProtocolOptions{}
	switch protocol {
	case "http1":
		o.UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}}}}
	case "http2":
		o.UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}}}
	case "auto":
		o.UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_AutoConfig{AutoConfig: &httpv3.HttpProtocolOptions_AutoHttpConfig{
			HttpProtocolOptions: &corev3.Http1ProtocolOptions{}, Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}}
	case "use_downstream":
		o.UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{UseDownstreamProtocolConfig: &httpv3.HttpProtocolOptions_UseDownstreamHttpConfig{
			HttpProtocolOptions: &corev3.Http1ProtocolOptions{}, Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}}
	default:
		panic("xdstest: UpstreamHTTP: unknown protocol " + protocol) // only for names written in tests
	}
	if c.TypedExtensionProtocolOptions == nil {
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{}
	}
	c.TypedExtensionProtocolOptions["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"] = mustAny(o)
	return c
}
