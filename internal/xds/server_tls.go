package xds

import (
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// DownstreamTLS is a filter chain's TLS transport socket (an
// envoy.transport_sockets.tls DownstreamTlsContext) reduced to what a Weft
// server applies. The certificate a Weft server presents is always the
// mesh's own SPIFFE SVID and the roots it verifies callers with are always
// the mesh's trust bundle: the context's certificate and validation sources
// (SDS secret names, certificate provider instances) name those, and are
// not certificates Weft loads. This is the shape istiod sends for
// PeerAuthentication STRICT (and the TLS half of PERMISSIVE).
type DownstreamTLS struct {
	// RequireClientCert refuses a caller that presents no certificate:
	// mutual TLS.
	RequireClientCert bool
	// VerifyClient is set when the context has a validation context: a
	// certificate the caller presents is verified against the mesh's trust
	// bundle. Unset (and RequireClientCert unset), the server asks for no
	// client certificate: server-authenticated TLS.
	VerifyClient bool
}

// Field sets of the DownstreamTlsContext messages, by how Weft treats a
// field that is set: applied (it shapes DownstreamTLS), accepted (it names
// the mesh's identity or bundle, which Weft uses anyway), reported (it does
// not change who may connect, and Weft does not apply it: it is listed in
// Unapplied), or checked (allowed only at a value Weft matches). A field in
// none of them is refused: it could restrict who may connect, and skipping
// it silently would open the server wider than the control plane asked.
var (
	downstreamTLSFields = tlsFieldPolicy{
		"common_tls_context":                    fieldApplied,
		"require_client_certificate":            fieldApplied,
		"require_sni":                           fieldChecked,
		"ocsp_staple_policy":                    fieldChecked,
		"session_ticket_keys":                   fieldReported,
		"session_ticket_keys_sds_secret_config": fieldReported,
		"disable_stateless_session_resumption":  fieldReported,
		"disable_stateful_session_resumption":   fieldReported,
		"session_timeout":                       fieldReported,
		"full_scan_certs_on_sni_mismatch":       fieldReported,
		"prefer_client_ciphers":                 fieldReported,
	}
	commonTLSFields = tlsFieldPolicy{
		"tls_params":                                       fieldChecked,
		"tls_certificate_sds_secret_configs":               fieldAccepted,
		"tls_certificate_provider_instance":                fieldAccepted,
		"tls_certificate_certificate_provider_instance":    fieldAccepted,
		"tls_certificate_certificate_provider":             fieldAccepted,
		"tls_certificates":                                 fieldReported,
		"custom_tls_certificate_selector":                  fieldReported,
		"validation_context":                               fieldApplied,
		"validation_context_sds_secret_config":             fieldAccepted,
		"combined_validation_context":                      fieldApplied,
		"validation_context_certificate_provider":          fieldAccepted,
		"validation_context_certificate_provider_instance": fieldAccepted,
		"alpn_protocols":                                   fieldReported,
		"key_log":                                          fieldReported,
	}
	combinedValidationFields = tlsFieldPolicy{
		"default_validation_context":                       fieldApplied,
		"validation_context_sds_secret_config":             fieldAccepted,
		"validation_context_certificate_provider":          fieldAccepted,
		"validation_context_certificate_provider_instance": fieldAccepted,
	}
	// Of a CertificateValidationContext only the root provider and the
	// defaults of its boolean and enum fields are accepted: every other
	// field (trusted_ca, SAN matchers, SPKI and hash pins, CRLs, custom
	// validators, a verify depth) restricts or widens the callers the
	// server accepts in a way the mesh's SPIFFE verification does not.
	validationFields = tlsFieldPolicy{
		"ca_certificate_provider_instance": fieldAccepted,
	}
	tlsParamsFields = tlsFieldPolicy{
		"tls_minimum_protocol_version": fieldChecked,
		"tls_maximum_protocol_version": fieldChecked,
	}
)

type fieldTreatment uint8

const (
	fieldRefused fieldTreatment = iota
	fieldApplied
	fieldAccepted
	fieldReported
	fieldChecked
)

type tlsFieldPolicy map[protoreflect.Name]fieldTreatment

// check walks the fields set in msg: a refused one is an error naming
// it under prefix, a reported one is appended to unapplied under report.
func (p tlsFieldPolicy) check(msg proto.Message, prefix, report string, unapplied *[]string) error {
	var err error
	msg.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		switch p[fd.Name()] {
		case fieldRefused:
			err = ferr(prefix+"."+string(fd.Name()), "not supported on a Weft server: it would change who may connect, and Weft cannot apply it")
			return false
		case fieldReported:
			*unapplied = append(*unapplied, report+"."+string(fd.Name()))
		}
		return true
	})
	return err
}

// istioRootCA is the SDS secret name istiod gives the mesh's root bundle.
const istioRootCA = "ROOTCA"

// transportSocketTLS is the name Envoy registers the TLS transport socket
// under; "envoy.transport_sockets.raw_buffer" is plaintext.
const (
	transportSocketTLS = "envoy.transport_sockets.tls"
	transportSocketRaw = "envoy.transport_sockets.raw_buffer"
	rawBufferTypeURL   = "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
)

// translateDownstreamTLS translates a filter chain's transport_socket: nil
// for plaintext (no socket, or raw_buffer), else the TLS mode. Errors name
// the field under "transport_socket".
func translateDownstreamTLS(ts *corev3.TransportSocket, unapplied *[]string) (*DownstreamTLS, error) {
	if ts == nil {
		return nil, nil
	}
	const field = "transport_socket"
	tc := ts.GetTypedConfig()
	switch {
	case tc == nil && ts.GetName() == transportSocketRaw:
		return nil, nil
	case tc == nil:
		return nil, ferr(field+".typed_config", "missing (transport socket %q)", ts.GetName())
	case tc.GetTypeUrl() == rawBufferTypeURL:
		return nil, nil
	case !tc.MessageIs((*tlsv3.DownstreamTlsContext)(nil)):
		return nil, ferr(field+".typed_config", "transport socket %q (%s) is not supported; want a DownstreamTlsContext or raw_buffer", ts.GetName(), tc.GetTypeUrl())
	}
	dtc := &tlsv3.DownstreamTlsContext{}
	if err := tc.UnmarshalTo(dtc); err != nil {
		return nil, ferr(field+".typed_config", "not a DownstreamTlsContext: %v", err)
	}
	const p = field + ".typed_config"
	const report = "filter_chains.transport_socket"
	if err := downstreamTLSFields.check(dtc, p, report, unapplied); err != nil {
		return nil, err
	}
	if dtc.GetRequireSni().GetValue() {
		return nil, ferr(p+".require_sni", "true is not supported: a Weft server does not match server names")
	}
	if sp := dtc.GetOcspStaplePolicy(); sp != tlsv3.DownstreamTlsContext_LENIENT_STAPLING {
		return nil, ferr(p+".ocsp_staple_policy", "%v is not supported: Weft staples no OCSP response", sp)
	}
	out := &DownstreamTLS{RequireClientCert: dtc.GetRequireClientCertificate().GetValue()}
	ctc := dtc.GetCommonTlsContext()
	if ctc == nil {
		return nil, ferr(p+".common_tls_context", "missing")
	}
	const cp = p + ".common_tls_context"
	if err := commonTLSFields.check(ctc, cp, report, unapplied); err != nil {
		return nil, err
	}
	if tp := ctc.GetTlsParams(); tp != nil {
		if err := checkTLSParams(tp, cp+".tls_params"); err != nil {
			return nil, err
		}
	}
	// An SDS validation secret stands for the mesh's roots only under
	// istiod's name for them; any other secret is a CA Weft would not load,
	// and verifying with the mesh's bundle instead could let in callers it
	// refuses.
	for _, sds := range []struct {
		cfg   *tlsv3.SdsSecretConfig
		field string
	}{
		{ctc.GetValidationContextSdsSecretConfig(), cp + ".validation_context_sds_secret_config"},
		{ctc.GetCombinedValidationContext().GetValidationContextSdsSecretConfig(), cp + ".combined_validation_context.validation_context_sds_secret_config"},
	} {
		if sds.cfg != nil && sds.cfg.GetName() != istioRootCA {
			return nil, ferr(sds.field, "secret %q is not the mesh's root bundle (%q): Weft verifies callers with its own SPIFFE bundle and cannot load another", sds.cfg.GetName(), istioRootCA)
		}
	}
	var vc *tlsv3.CertificateValidationContext
	vfield := cp + ".validation_context"
	switch v := ctc.GetValidationContextType().(type) {
	case nil:
	case *tlsv3.CommonTlsContext_ValidationContext:
		vc = v.ValidationContext
		out.VerifyClient = true
	case *tlsv3.CommonTlsContext_CombinedValidationContext:
		vfield = cp + ".combined_validation_context"
		if err := combinedValidationFields.check(v.CombinedValidationContext, vfield, report, unapplied); err != nil {
			return nil, err
		}
		vc = v.CombinedValidationContext.GetDefaultValidationContext()
		vfield += ".default_validation_context"
		out.VerifyClient = true
	default: // an SDS secret or certificate provider: the mesh's bundle
		out.VerifyClient = true
	}
	if vc != nil {
		if err := validationFields.check(vc, vfield, report, unapplied); err != nil {
			return nil, err
		}
	}
	// Envoy and gRPC (gRFC A29) both refuse a context that requires a
	// client certificate but has nothing to verify it with.
	if out.RequireClientCert && !out.VerifyClient {
		return nil, ferr(p+".require_client_certificate", "true without a validation context in common_tls_context")
	}
	return out, nil
}

// checkTLSParams accepts the protocol range Weft's servers speak (TLS 1.2
// and 1.3): a floor at or below 1.2 and no ceiling below 1.3. Cipher suite,
// curve and signature lists would each turn some callers away, and are
// refused by the field check.
func checkTLSParams(tp *tlsv3.TlsParameters, field string) error {
	var none []string
	if err := tlsParamsFields.check(tp, field, "", &none); err != nil {
		return err
	}
	if v := tp.GetTlsMinimumProtocolVersion(); v > tlsv3.TlsParameters_TLSv1_2 {
		return ferr(field+".tls_minimum_protocol_version", "%v is not supported: Weft servers accept TLS 1.2 and 1.3", v)
	}
	if v := tp.GetTlsMaximumProtocolVersion(); v != tlsv3.TlsParameters_TLS_AUTO && v != tlsv3.TlsParameters_TLSv1_3 {
		return ferr(field+".tls_maximum_protocol_version", "%v is not supported: Weft servers accept TLS 1.2 and 1.3", v)
	}
	return nil
}

// String is the mode for logs: "plaintext" (nil), "mtls", "tls", or "tls
// (client certificate verified if presented)".
func (t *DownstreamTLS) String() string {
	switch {
	case t == nil:
		return "plaintext"
	case t.RequireClientCert:
		return "mtls"
	case t.VerifyClient:
		return "tls (client certificate verified if presented)"
	default:
		return "tls"
	}
}

var _ fmt.Stringer = (*DownstreamTLS)(nil)
