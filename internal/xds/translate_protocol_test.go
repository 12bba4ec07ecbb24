//lint:file-ignore SA1019 the cluster's deprecated protocol fields are what these cases send

package xds

import (
	"errors"
	"slices"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// TestTranslateHTTPProtocol: a cluster's upstream protocol comes from its
// typed HttpProtocolOptions, else from the deprecated cluster fields, as
// Envoy reads them; the settings inside the options, HTTP/3 and other
// extensions' options are reported as not applied; a malformed or
// incomplete HttpProtocolOptions is NACKed naming the field, as Envoy's
// validation refuses it.
func TestTranslateHTTPProtocol(t *testing.T) {
	const key = "typed_extension_protocol_options[envoy.extensions.upstreams.http.v3.HttpProtocolOptions]"
	mustAny := func(m proto.Message) *anypb.Any {
		a, err := anypb.New(m)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	typed := func(a *anypb.Any) func(*clusterv3.Cluster) {
		return func(c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions = map[string]*anypb.Any{HTTPProtocolOptionsKey: a}
		}
	}
	explicit := func(e *httpv3.HttpProtocolOptions_ExplicitHttpConfig) *httpv3.HttpProtocolOptions {
		return &httpv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: e}}
	}
	h2 := func(o *corev3.Http2ProtocolOptions) *httpv3.HttpProtocolOptions {
		return explicit(&httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: o}})
	}
	shorthand := func(p string) func(*clusterv3.Cluster) {
		return func(c *clusterv3.Cluster) { xdstest.UpstreamHTTP(c, p) }
	}
	tests := []struct {
		name      string
		edit      func(*clusterv3.Cluster)
		want      UpstreamProtocol
		unapplied []string
		wantField string
	}{
		{name: "unset", edit: func(*clusterv3.Cluster) {}, want: ProtocolUnset},
		{name: "explicit http1", edit: shorthand("http1"), want: ProtocolHTTP1},
		{name: "explicit http2", edit: shorthand("http2"), want: ProtocolHTTP2},
		{name: "auto", edit: shorthand("auto"), want: ProtocolAuto},
		{name: "use_downstream", edit: shorthand("use_downstream"), want: ProtocolDownstream},
		{name: "explicit http3 follows the client", edit: typed(mustAny(explicit(&httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http3ProtocolOptions{Http3ProtocolOptions: &corev3.Http3ProtocolOptions{}}}))),
			want: ProtocolUnset, unapplied: []string{key + ".explicit_http_config.http3_protocol_options"}},
		{name: "auto with http3", edit: typed(mustAny(&httpv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_AutoConfig{
			AutoConfig: &httpv3.HttpProtocolOptions_AutoHttpConfig{Http3ProtocolOptions: &corev3.Http3ProtocolOptions{},
				AlternateProtocolsCacheOptions: &corev3.AlternateProtocolsCacheOptions{Name: "cache"}}}})),
			want: ProtocolAuto, unapplied: []string{key + ".auto_config.alternate_protocols_cache_options", key + ".auto_config.http3_protocol_options"}},
		{
			// istiod's cluster for a port declared http2 under a
			// DestinationRule with connection pool settings.
			name: "istiod http2 with connection pool settings",
			edit: typed(mustAny(func() *httpv3.HttpProtocolOptions {
				o := h2(&corev3.Http2ProtocolOptions{MaxConcurrentStreams: wrapperspb.UInt32(1 << 30)})
				o.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(time.Hour),
					MaxRequestsPerConnection: wrapperspb.UInt32(100)}
				return o
			}())),
			want: ProtocolHTTP2, unapplied: []string{
				key + ".common_http_protocol_options.idle_timeout",
				key + ".common_http_protocol_options.max_requests_per_connection",
				key + ".explicit_http_config.http2_protocol_options.max_concurrent_streams"},
		},
		{name: "other extensions' options", edit: func(c *clusterv3.Cluster) {
			xdstest.UpstreamHTTP(c, "http2")
			c.TypedExtensionProtocolOptions["envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions"] = mustAny(wrapperspb.String("x"))
		}, want: ProtocolHTTP2, unapplied: []string{"typed_extension_protocol_options[envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions]"}},
		{name: "deprecated http2_protocol_options", edit: func(c *clusterv3.Cluster) {
			c.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{MaxConcurrentStreams: wrapperspb.UInt32(10)}
		}, want: ProtocolHTTP2, unapplied: []string{"http2_protocol_options.max_concurrent_streams"}},
		{name: "deprecated http_protocol_options", edit: func(c *clusterv3.Cluster) {
			c.HttpProtocolOptions = &corev3.Http1ProtocolOptions{}
		}, want: ProtocolHTTP1},
		{name: "deprecated protocol_selection", edit: func(c *clusterv3.Cluster) {
			c.HttpProtocolOptions, c.Http2ProtocolOptions = &corev3.Http1ProtocolOptions{}, &corev3.Http2ProtocolOptions{}
			c.ProtocolSelection = clusterv3.Cluster_USE_DOWNSTREAM_PROTOCOL
		}, want: ProtocolDownstream},
		{name: "typed options beat deprecated fields", edit: func(c *clusterv3.Cluster) {
			xdstest.UpstreamHTTP(c, "http1")
			c.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{}
		}, want: ProtocolHTTP1, unapplied: []string{"http2_protocol_options"}},
		{name: "wrong type", edit: typed(mustAny(&corev3.HttpProtocolOptions{})), wantField: key},
		{name: "undecodable", edit: typed(&anypb.Any{TypeUrl: "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
			Value: []byte{0xff}}), wantField: key},
		{name: "no protocol chosen", edit: typed(mustAny(&httpv3.HttpProtocolOptions{
			CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(time.Hour)}})),
			wantField: key + ".upstream_protocol_options"},
		{name: "explicit without protocol", edit: typed(mustAny(explicit(&httpv3.HttpProtocolOptions_ExplicitHttpConfig{}))), wantField: key + ".explicit_http_config"},
		{name: "deprecated http1 and http2", edit: func(c *clusterv3.Cluster) {
			c.HttpProtocolOptions, c.Http2ProtocolOptions = &corev3.Http1ProtocolOptions{}, &corev3.Http2ProtocolOptions{}
		}, wantField: "http2_protocol_options"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := xdstest.Cluster("svc", "")
			tt.edit(c)
			// Decode is the client's path: the resource's own bytes are
			// walked for unapplied fields.
			raw, err := proto.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			_, r, err := Decode(ClusterType, &anypb.Any{TypeUrl: ClusterTypeURL, Value: raw})
			if tt.wantField != "" {
				var re *ResourceError
				if !errors.As(err, &re) || re.Name != "svc" || re.Field != tt.wantField {
					t.Fatalf("Decode() error = %v, want a ResourceError on cluster svc, field %s", err, tt.wantField)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode() error = %v", err)
			}
			got := r.(*Cluster)
			if got.Protocol != tt.want {
				t.Errorf("protocol %v, want %v", got.Protocol, tt.want)
			}
			if !slices.Equal(got.Unapplied, tt.unapplied) {
				t.Errorf("unapplied %q, want %q", got.Unapplied, tt.unapplied)
			}
		})
	}
}

// TestAggregateHTTPProtocolUnapplied: an aggregate cluster's own protocol
// options are not read (its underlying clusters' are), and say so.
func TestAggregateHTTPProtocolUnapplied(t *testing.T) {
	c := xdstest.UpstreamHTTP(xdstest.AggregateCluster("agg", "a", "b"), "http2")
	got, err := TranslateCluster(c)
	if err != nil {
		t.Fatal(err)
	}
	if got.Protocol != ProtocolUnset || !slices.Equal(got.Unapplied, []string{"typed_extension_protocol_options"}) {
		t.Errorf("protocol %v, unapplied %q; want unset, [typed_extension_protocol_options]", got.Protocol, got.Unapplied)
	}
}
