//lint:file-ignore SA1019 control planes still send the cluster's deprecated protocol fields, which Envoy still reads

package xds

import (
	"fmt"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// HTTPProtocolOptionsKey is the typed_extension_protocol_options key of a
// cluster's upstream HTTP protocol options.
const HTTPProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// httpProtocolOptionsApplied is what Weft applies of HttpProtocolOptions:
// the choice of protocol. The per-protocol messages select it, so their
// presence is applied while each setting inside them (max_concurrent_streams
// and the like) is reported. HTTP/3 and the alternate protocols cache
// cannot be served; translateHTTPProtocol reports them whole, as the walk
// names nothing inside an empty message.
var httpProtocolOptionsApplied = walkInside(newFieldSet(
	"explicit_http_config.http_protocol_options",
	"explicit_http_config.http2_protocol_options",
	"explicit_http_config.http3_protocol_options",
	"use_downstream_protocol_config.http_protocol_options",
	"use_downstream_protocol_config.http2_protocol_options",
	"use_downstream_protocol_config.http3_protocol_options",
	"auto_config.http_protocol_options",
	"auto_config.http2_protocol_options",
	"auto_config.http3_protocol_options",
	"auto_config.alternate_protocols_cache_options"),
	"explicit_http_config.http_protocol_options",
	"explicit_http_config.http2_protocol_options",
	"use_downstream_protocol_config.http_protocol_options",
	"use_downstream_protocol_config.http2_protocol_options",
	"auto_config.http_protocol_options",
	"auto_config.http2_protocol_options")

// translateHTTPProtocol sets out.Protocol from the cluster's
// typed_extension_protocol_options, or else from its deprecated protocol
// fields, as Envoy reads them: the typed options win and the deprecated
// fields are then ignored. Other extensions' options are reported as not
// applied.
func translateHTTPProtocol(c *clusterv3.Cluster, out *Cluster) error {
	opts := c.GetTypedExtensionProtocolOptions()
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	typed := false
	for _, k := range keys {
		field := fmt.Sprintf("typed_extension_protocol_options[%s]", k)
		if k != HTTPProtocolOptionsKey {
			out.Unapplied = append(out.Unapplied, field)
			continue
		}
		a := opts[k]
		hpo := &httpv3.HttpProtocolOptions{}
		if !a.MessageIs(hpo) {
			return ferr(field, "not an %s: %q", HTTPProtocolOptionsKey, a.GetTypeUrl())
		}
		if err := a.UnmarshalTo(hpo); err != nil {
			return ferr(field, "%v", err)
		}
		p, unapplied, err := httpProtocol(hpo)
		if err != nil {
			return prefixed(field, err)
		}
		out.Protocol, typed = p, true
		for _, u := range unapplied {
			out.Unapplied = append(out.Unapplied, field+"."+u)
		}
		out.Unapplied = append(out.Unapplied, unappliedFields(a.GetValue(), hpo.ProtoReflect().Descriptor(), httpProtocolOptionsApplied, field+".")...)
	}
	deprecated := []struct {
		name string
		set  bool
	}{
		{"http_protocol_options", c.GetHttpProtocolOptions() != nil},
		{"http2_protocol_options", c.GetHttp2ProtocolOptions() != nil},
		{"protocol_selection", c.GetProtocolSelection() != clusterv3.Cluster_USE_CONFIGURED_PROTOCOL},
	}
	if typed {
		// Envoy ignores the deprecated fields next to the typed options.
		for _, f := range deprecated {
			if f.set {
				out.Unapplied = append(out.Unapplied, f.name)
			}
		}
		return nil
	}
	switch {
	case c.GetProtocolSelection() == clusterv3.Cluster_USE_DOWNSTREAM_PROTOCOL:
		out.Protocol = ProtocolDownstream
	case c.GetHttpProtocolOptions() != nil && c.GetHttp2ProtocolOptions() != nil:
		// Envoy's message: "Both HTTP1 and HTTP2 options may only be
		// configured with non-default 'protocol_selection' values".
		return ferr("http2_protocol_options", "set with http_protocol_options: both may only be set with protocol_selection USE_DOWNSTREAM_PROTOCOL")
	case c.GetHttp2ProtocolOptions() != nil:
		out.Protocol = ProtocolHTTP2
	case c.GetHttpProtocolOptions() != nil:
		out.Protocol = ProtocolHTTP1
	}
	return nil
}

// httpProtocol reads the protocol HttpProtocolOptions selects, and the
// fields, relative to it, that ask for HTTP/3. Envoy's validation requires
// the selection, so its absence is refused as Envoy refuses it.
func httpProtocol(o *httpv3.HttpProtocolOptions) (UpstreamProtocol, []string, error) {
	switch u := o.GetUpstreamProtocolOptions().(type) {
	case *httpv3.HttpProtocolOptions_ExplicitHttpConfig_:
		switch u.ExplicitHttpConfig.GetProtocolConfig().(type) {
		case *httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions:
			return ProtocolHTTP1, nil, nil
		case *httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions:
			return ProtocolHTTP2, nil, nil
		case *httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http3ProtocolOptions:
			// istiod may send it; HTTP/3 is not served, so the client's
			// own protocol applies and the field is reported.
			return ProtocolUnset, []string{"explicit_http_config.http3_protocol_options"}, nil
		}
		return 0, nil, ferr("explicit_http_config", "names no protocol: one of http_protocol_options, http2_protocol_options or http3_protocol_options is required")
	case *httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig:
		var un []string
		if u.UseDownstreamProtocolConfig.GetHttp3ProtocolOptions() != nil {
			un = append(un, "use_downstream_protocol_config.http3_protocol_options")
		}
		return ProtocolDownstream, un, nil
	case *httpv3.HttpProtocolOptions_AutoConfig:
		var un []string
		if u.AutoConfig.GetHttp3ProtocolOptions() != nil {
			un = append(un, "auto_config.http3_protocol_options")
		}
		if u.AutoConfig.GetAlternateProtocolsCacheOptions() != nil {
			un = append(un, "auto_config.alternate_protocols_cache_options")
		}
		return ProtocolAuto, un, nil
	}
	return 0, nil, ferr("upstream_protocol_options", "missing: one of explicit_http_config, use_downstream_protocol_config or auto_config is required")
}
