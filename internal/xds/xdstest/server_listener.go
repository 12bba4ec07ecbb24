//lint:file-ignore SA1019 istiod still sends these deprecated DownstreamTlsContext fields, and grpc-go reads them too
package xdstest

import (
	"net/netip"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// InboundRoutes returns the route configuration of an inbound listener:
// every request to any host is served here (non-forwarding action).
func InboundRoutes(name string) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{
		Name: "inbound", Domains: []string{"*"},
		Routes: []*routev3.Route{{
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_NonForwardingAction{NonForwardingAction: &routev3.NonForwardingAction{}},
		}},
	}}}
}

// RBACFilter returns an HTTP filter enforcing rules.
func RBACFilter(name string, rules *rbacv3.RBAC) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&rbacfilterv3.RBAC{Rules: rules})}}
}

// FilterChain returns a filter chain whose HttpConnectionManager serves rc
// inline through filters, then the router.
func FilterChain(name string, rc *routev3.RouteConfiguration, filters ...*hcmv3.HttpFilter) *listenerv3.FilterChain {
	h := &hcmv3.HttpConnectionManager{
		StatPrefix:     "inbound",
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc},
		HttpFilters: append(filters, &hcmv3.HttpFilter{Name: "router",
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})}}),
	}
	return &listenerv3.FilterChain{Name: name, Filters: []*listenerv3.Filter{{
		Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(h)},
	}}}
}

// ServerListener returns an inbound listener named name for addr with the
// given filter chains and def, when non-nil, as the default chain.
func ServerListener(name string, addr netip.AddrPort, def *listenerv3.FilterChain, chains ...*listenerv3.FilterChain) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name: name,
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: addr.Addr().String(), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(addr.Port())},
		}}},
		FilterChains:       chains,
		DefaultFilterChain: def,
	}
}

// TLSSocket wraps ctx as the envoy.transport_sockets.tls transport socket
// of a filter chain.
func TLSSocket(ctx *tlsv3.DownstreamTlsContext) *corev3.TransportSocket {
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}}
}

// IstioMTLS is the DownstreamTlsContext istiod sends a proxyless server
// for PeerAuthentication STRICT: the "default" certificate provider
// instance for the identity, ROOTCA for the roots, and a client
// certificate required.
func IstioMTLS() *tlsv3.DownstreamTlsContext {
	return &tlsv3.DownstreamTlsContext{
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateCertificateProviderInstance: &tlsv3.CommonTlsContext_CertificateProviderInstance{InstanceName: "default", CertificateName: "default"},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				ValidationContextCertificateProviderInstance: &tlsv3.CommonTlsContext_CertificateProviderInstance{InstanceName: "default", CertificateName: "ROOTCA"},
				DefaultValidationContext:                     &tlsv3.CertificateValidationContext{},
			}},
		},
		RequireClientCertificate: wrapperspb.Bool(true),
	}
}

// PeerAuthentication returns the filter chains istiod's shapes of
// PeerAuthentication give one port: "STRICT", one chain requiring mTLS;
// "PERMISSIVE", an mTLS chain matching transport protocol "tls" and a
// plaintext chain matching "raw_buffer"; "DISABLE", one plaintext chain.
// Each chain serves rc inline through filters.
func PeerAuthentication(mode string, rc *routev3.RouteConfiguration, filters ...*hcmv3.HttpFilter) []*listenerv3.FilterChain {
	mtls := FilterChain("mtls", rc, filters...)
	mtls.TransportSocket = TLSSocket(IstioMTLS())
	plain := FilterChain("plaintext", rc, filters...)
	switch mode {
	case "STRICT":
		return []*listenerv3.FilterChain{mtls}
	case "PERMISSIVE":
		mtls.FilterChainMatch = &listenerv3.FilterChainMatch{TransportProtocol: "tls"}
		plain.FilterChainMatch = &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer"}
		return []*listenerv3.FilterChain{mtls, plain}
	case "DISABLE":
		return []*listenerv3.FilterChain{plain}
	}
	panic("xdstest: PeerAuthentication: unknown mode " + mode)
}
