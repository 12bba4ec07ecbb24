//lint:file-ignore SA1019 istiod still sends these deprecated DownstreamTlsContext fields, and grpc-go reads them too
package xds

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// sidecarMTLS is the DownstreamTlsContext istiod sends an Envoy sidecar
// for STRICT: SDS secrets "default" and "ROOTCA".
func sidecarMTLS() *tlsv3.DownstreamTlsContext {
	return &tlsv3.DownstreamTlsContext{
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "default"}},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         &tlsv3.CertificateValidationContext{},
				ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "ROOTCA"},
			}},
		},
		RequireClientCertificate: wrapperspb.Bool(true),
	}
}

// withTLS returns a two-chain listener (a plaintext chain, then one with
// ts) so errors must name filter_chains[1].
func withTLS(ts *corev3.TransportSocket) *listenerv3.Listener {
	plain := xdstest.FilterChain("plain", xdstest.InboundRoutes("r"))
	plain.FilterChainMatch = &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer"}
	sec := xdstest.FilterChain("tls", xdstest.InboundRoutes("r"))
	sec.FilterChainMatch = &listenerv3.FilterChainMatch{TransportProtocol: "tls"}
	sec.TransportSocket = ts
	return xdstest.ServerListener("in", netip.MustParseAddrPort("0.0.0.0:1"), nil, plain, sec)
}

func TestDownstreamTLS(t *testing.T) {
	edit := func(f func(*tlsv3.DownstreamTlsContext)) *corev3.TransportSocket {
		c := proto.Clone(xdstest.IstioMTLS()).(*tlsv3.DownstreamTlsContext)
		f(c)
		return xdstest.TLSSocket(c)
	}
	editVC := func(f func(*tlsv3.CertificateValidationContext)) *corev3.TransportSocket {
		return edit(func(c *tlsv3.DownstreamTlsContext) {
			f(c.CommonTlsContext.GetCombinedValidationContext().DefaultValidationContext)
		})
	}
	const ctc = "filter_chains[1].transport_socket.typed_config.common_tls_context"
	const vc = ctc + ".combined_validation_context.default_validation_context"
	cases := []struct {
		name      string
		ts        *corev3.TransportSocket
		want      *DownstreamTLS // nil = plaintext
		field     string         // NACK naming this field
		unapplied string
	}{
		{name: "istiod proxyless STRICT", ts: xdstest.TLSSocket(xdstest.IstioMTLS()), want: &DownstreamTLS{RequireClientCert: true, VerifyClient: true}},
		{name: "istiod sidecar SDS shape", ts: xdstest.TLSSocket(sidecarMTLS()), want: &DownstreamTLS{RequireClientCert: true, VerifyClient: true}},
		{name: "provider instances, new fields", ts: xdstest.TLSSocket(&tlsv3.DownstreamTlsContext{
			CommonTlsContext: &tlsv3.CommonTlsContext{
				TlsCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{InstanceName: "default"},
				ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
					CaCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{InstanceName: "default", CertificateName: "ROOTCA"}}},
			},
			RequireClientCertificate: wrapperspb.Bool(true),
		}), want: &DownstreamTLS{RequireClientCert: true, VerifyClient: true}},
		{name: "client cert verified if given", ts: edit(func(c *tlsv3.DownstreamTlsContext) { c.RequireClientCertificate = nil }),
			want: &DownstreamTLS{VerifyClient: true}},
		{name: "server TLS only", ts: xdstest.TLSSocket(&tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "default"}}}}), want: &DownstreamTLS{}},
		{name: "raw_buffer socket is plaintext", ts: &corev3.TransportSocket{Name: "envoy.transport_sockets.raw_buffer"}},
		{name: "alpn reported", ts: edit(func(c *tlsv3.DownstreamTlsContext) { c.CommonTlsContext.AlpnProtocols = []string{"h2"} }),
			want: &DownstreamTLS{RequireClientCert: true, VerifyClient: true}, unapplied: "filter_chains.transport_socket.alpn_protocols"},
		{name: "session timeout reported", ts: edit(func(c *tlsv3.DownstreamTlsContext) { c.SessionTimeout = durationpb.New(1) }),
			want: &DownstreamTLS{RequireClientCert: true, VerifyClient: true}, unapplied: "filter_chains.transport_socket.session_timeout"},
		{name: "TLS 1.2 floor accepted", ts: edit(func(c *tlsv3.DownstreamTlsContext) {
			c.CommonTlsContext.TlsParams = &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2}
		}), want: &DownstreamTLS{RequireClientCert: true, VerifyClient: true}},

		{name: "SAN matcher", ts: editVC(func(v *tlsv3.CertificateValidationContext) {
			v.MatchSubjectAltNames = []*matcherv3.StringMatcher{{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "spiffe://td/x"}}}
		}), field: vc + ".match_subject_alt_names"},
		{name: "typed SAN matcher", ts: editVC(func(v *tlsv3.CertificateValidationContext) {
			v.MatchTypedSubjectAltNames = []*tlsv3.SubjectAltNameMatcher{{SanType: tlsv3.SubjectAltNameMatcher_URI}}
		}), field: vc + ".match_typed_subject_alt_names"},
		{name: "custom validator", ts: editVC(func(v *tlsv3.CertificateValidationContext) {
			v.CustomValidatorConfig = &corev3.TypedExtensionConfig{Name: "spiffe"}
		}), field: vc + ".custom_validator_config"},
		{name: "inline trusted CA", ts: editVC(func(v *tlsv3.CertificateValidationContext) {
			v.TrustedCa = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "pem"}}
		}), field: vc + ".trusted_ca"},
		{name: "SPKI pin", ts: editVC(func(v *tlsv3.CertificateValidationContext) { v.VerifyCertificateSpki = []string{"x"} }),
			field: vc + ".verify_certificate_spki"},
		{name: "max verify depth", ts: editVC(func(v *tlsv3.CertificateValidationContext) { v.MaxVerifyDepth = wrapperspb.UInt32(1) }),
			field: vc + ".max_verify_depth"},
		{name: "SAN matcher, plain validation context", ts: edit(func(c *tlsv3.DownstreamTlsContext) {
			c.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				MatchSubjectAltNames: []*matcherv3.StringMatcher{{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "spiffe://td/x"}}}}}
		}), field: ctc + ".validation_context.match_subject_alt_names"},
		{name: "require_sni", ts: edit(func(c *tlsv3.DownstreamTlsContext) { c.RequireSni = wrapperspb.Bool(true) }),
			field: "filter_chains[1].transport_socket.typed_config.require_sni"},
		{name: "must staple", ts: edit(func(c *tlsv3.DownstreamTlsContext) { c.OcspStaplePolicy = tlsv3.DownstreamTlsContext_MUST_STAPLE }),
			field: "filter_chains[1].transport_socket.typed_config.ocsp_staple_policy"},
		{name: "client cert required, nothing to verify it", ts: edit(func(c *tlsv3.DownstreamTlsContext) { c.CommonTlsContext.ValidationContextType = nil }),
			field: "filter_chains[1].transport_socket.typed_config.require_client_certificate"},
		{name: "cipher suites", ts: edit(func(c *tlsv3.DownstreamTlsContext) {
			c.CommonTlsContext.TlsParams = &tlsv3.TlsParameters{CipherSuites: []string{"ECDHE-RSA-AES128-GCM-SHA256"}}
		}), field: ctc + ".tls_params.cipher_suites"},
		{name: "TLS 1.3 floor", ts: edit(func(c *tlsv3.DownstreamTlsContext) {
			c.CommonTlsContext.TlsParams = &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3}
		}), field: ctc + ".tls_params.tls_minimum_protocol_version"},
		{name: "custom handshaker", ts: edit(func(c *tlsv3.DownstreamTlsContext) {
			c.CommonTlsContext.CustomHandshaker = &corev3.TypedExtensionConfig{Name: "h"}
		}), field: ctc + ".custom_handshaker"},
		{name: "no common context", ts: xdstest.TLSSocket(&tlsv3.DownstreamTlsContext{}),
			field: "filter_chains[1].transport_socket.typed_config.common_tls_context"},
		{name: "unknown transport socket", ts: &corev3.TransportSocket{Name: "alts", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, &emptypb.Empty{})}},
			field: "filter_chains[1].transport_socket.typed_config"},
		{name: "transport socket without config", ts: &corev3.TransportSocket{Name: "envoy.transport_sockets.tls"},
			field: "filter_chains[1].transport_socket.typed_config"},
		{name: "not a DownstreamTlsContext", ts: &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{
			TypedConfig: &anypb.Any{TypeUrl: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext", Value: []byte{0xff}}}},
			field: "filter_chains[1].transport_socket.typed_config"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := withTLS(c.ts)
			if c.field != "" {
				re := decodeErr(t, ListenerType, l)
				if re.Field != c.field && !strings.HasPrefix(re.Field, c.field+".") && !strings.HasPrefix(re.Field, c.field+"[") || re.Name != "in" {
					t.Errorf("NACK field = %q (resource %q), want %q: %v", re.Field, re.Name, c.field, re)
				}
				return
			}
			got := decodeServer(t, l)
			if plain := got.Server.FilterChains[0].TLS; plain != nil {
				t.Errorf("plaintext chain: TLS = %+v, want nil", plain)
			}
			gotTLS := got.Server.FilterChains[1].TLS
			switch {
			case (gotTLS == nil) != (c.want == nil):
				t.Errorf("TLS = %v, want %v", gotTLS, c.want)
			case gotTLS != nil && *gotTLS != *c.want:
				t.Errorf("TLS = %+v, want %+v", *gotTLS, *c.want)
			}
			if slices.Contains(got.UnappliedFields(), "filter_chains.transport_socket") {
				t.Errorf("unapplied = %v: the transport socket is applied", got.UnappliedFields())
			}
			if c.unapplied != "" && !slices.Contains(got.UnappliedFields(), c.unapplied) {
				t.Errorf("unapplied = %v, want %s", got.UnappliedFields(), c.unapplied)
			}
		})
	}
}

// TestSelectByTransportProtocol: PERMISSIVE's two chains split
// connections by what their first bytes say, and a per-port chain wins
// over both for its port.
func TestSelectByTransportProtocol(t *testing.T) {
	chains := xdstest.PeerAuthentication("PERMISSIVE", xdstest.InboundRoutes("r"))
	port := xdstest.FilterChain("port-9000-plaintext", xdstest.InboundRoutes("r"))
	port.FilterChainMatch = &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(9000)}
	l := decodeServer(t, xdstest.ServerListener("in", netip.MustParseAddrPort("0.0.0.0:1"), nil, append(chains, port)...)).Server
	remote := netip.MustParseAddrPort("127.0.0.1:40000")
	for _, c := range []struct {
		local string
		tls   bool
		want  string
		mode  string
	}{
		{"127.0.0.1:8080", true, "mtls", "mtls"},
		{"127.0.0.1:8080", false, "plaintext", "plaintext"},
		{"127.0.0.1:9000", true, "port-9000-plaintext", "plaintext"},
		{"127.0.0.1:9000", false, "port-9000-plaintext", "plaintext"},
	} {
		fc := l.Select(ConnInfo{Local: netip.MustParseAddrPort(c.local), Remote: remote, TLS: c.tls})
		if fc == nil || fc.Name != c.want || fc.TLS.String() != c.mode {
			t.Errorf("Select(%s, tls=%v) = %v, want chain %s (%s)", c.local, c.tls, fc, c.want, c.mode)
		}
	}
}
