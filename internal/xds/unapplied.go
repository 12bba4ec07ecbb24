package xds

import (
	"fmt"
	"slices"
	"strings"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// fieldSet is the tree of proto fields translation applies: a leaf node is
// applied whole; an inner node has applied descendants, so the walk
// descends into it. Sets are built once and never mutated.
type fieldSet = *fieldNode

type fieldNode struct {
	leaf     bool
	children map[protoreflect.Name]*fieldNode
}

func newFieldSet(paths ...string) fieldSet {
	root := &fieldNode{children: map[protoreflect.Name]*fieldNode{}}
	for _, p := range paths {
		n := root
		for _, name := range strings.Split(p, ".") {
			c := n.children[protoreflect.Name(name)]
			if c == nil {
				c = &fieldNode{children: map[protoreflect.Name]*fieldNode{}}
				n.children[protoreflect.Name(name)] = c
			}
			n = c
		}
		n.leaf = true
	}
	return root
}

// walkInside makes the named paths of fs, leaves of it, inner nodes with
// nothing applied under them: the field's presence is applied (it selects
// something) while every field set inside it is reported.
func walkInside(fs fieldSet, paths ...string) fieldSet {
	for _, p := range paths {
		n := fs
		for _, name := range strings.Split(p, ".") {
			n = n.children[protoreflect.Name(name)]
		}
		n.leaf = false
	}
	return fs
}

// graft makes sub the applied set under field name of fs.
func graft(fs fieldSet, name protoreflect.Name, sub fieldSet) fieldSet {
	fs.children[name] = sub
	return fs
}

var (
	// A server listener's filter chains are walked by translateServerListener,
	// which reports what it skips.
	listenerApplied = newFieldSet("name", "api_listener.api_listener", "address", "filter_chains", "default_filter_chain")
	// HttpConnectionManager fields; http_filters are reported by
	// translateListener itself.
	hcmApplied = graft(newFieldSet("rds.route_config_name", "rds.config_source", "http_filters",
		"common_http_protocol_options.max_stream_duration", "stat_prefix", "codec_type"),
		"route_config", routeConfigApplied)
	routeConfigApplied = newFieldSet("name",
		"virtual_hosts.name", "virtual_hosts.domains",
		"virtual_hosts.routes.name",
		"virtual_hosts.routes.match.prefix", "virtual_hosts.routes.match.path",
		"virtual_hosts.routes.match.safe_regex.regex", "virtual_hosts.routes.match.case_sensitive",
		"virtual_hosts.routes.match.headers", "virtual_hosts.routes.match.query_parameters",
		"virtual_hosts.routes.match.runtime_fraction.default_value",
		"virtual_hosts.routes.route.cluster", "virtual_hosts.routes.non_forwarding_action",
		"virtual_hosts.routes.redirect", "virtual_hosts.routes.direct_response.status",
		"virtual_hosts.routes.direct_response.body.inline_string",
		"virtual_hosts.routes.direct_response.body.inline_bytes",
		"max_direct_response_body_size_bytes",
		"virtual_hosts.routes.route.weighted_clusters.clusters.name",
		"virtual_hosts.routes.route.weighted_clusters.clusters.weight",
		"virtual_hosts.routes.route.weighted_clusters.total_weight",
		"virtual_hosts.routes.route.timeout",
		"virtual_hosts.routes.route.max_stream_duration.max_stream_duration",
		"virtual_hosts.routes.route.retry_policy.retry_on",
		"virtual_hosts.routes.route.retry_policy.num_retries",
		"virtual_hosts.routes.route.retry_policy.per_try_timeout",
		"virtual_hosts.routes.route.retry_policy.retry_back_off",
		"virtual_hosts.routes.route.retry_policy.retriable_status_codes",
		"virtual_hosts.routes.route.retry_policy.rate_limited_retry_back_off",
		"virtual_hosts.routes.route.retry_policy.retriable_request_headers",
		"virtual_hosts.routes.route.retry_policy.retry_host_predicate",
		"virtual_hosts.routes.route.hedge_policy",
		"virtual_hosts.retry_policy.retry_on", "virtual_hosts.retry_policy.num_retries",
		"virtual_hosts.retry_policy.per_try_timeout", "virtual_hosts.retry_policy.retry_back_off",
		"virtual_hosts.retry_policy.retriable_status_codes",
		"virtual_hosts.retry_policy.rate_limited_retry_back_off",
		"virtual_hosts.retry_policy.retriable_request_headers",
		"virtual_hosts.retry_policy.retry_host_predicate",
		"virtual_hosts.hedge_policy",
		// Envoy's generated cookie (a cookie policy's ttl, path and
		// attributes) is not made: those are reported.
		"virtual_hosts.routes.route.hash_policy.header",
		"virtual_hosts.routes.route.hash_policy.cookie.name",
		"virtual_hosts.routes.route.hash_policy.query_parameter",
		"virtual_hosts.routes.route.hash_policy.connection_properties",
		"virtual_hosts.routes.route.hash_policy.filter_state",
		"virtual_hosts.routes.route.hash_policy.terminal",
		"virtual_hosts.routes.route.prefix_rewrite",
		"virtual_hosts.routes.route.regex_rewrite",
		"virtual_hosts.routes.route.host_rewrite_literal",
		"virtual_hosts.routes.route.host_rewrite_header", "virtual_hosts.routes.route.auto_host_rewrite",
		"virtual_hosts.routes.route.host_rewrite_path_regex",
		"virtual_hosts.routes.request_headers_to_add", "virtual_hosts.routes.request_headers_to_remove",
		"virtual_hosts.routes.response_headers_to_add", "virtual_hosts.routes.response_headers_to_remove",
		"virtual_hosts.request_headers_to_add", "virtual_hosts.request_headers_to_remove",
		"virtual_hosts.response_headers_to_add", "virtual_hosts.response_headers_to_remove",
		"request_headers_to_add", "request_headers_to_remove",
		"response_headers_to_add", "response_headers_to_remove",
		"most_specific_header_mutations_wins",
		"virtual_hosts.routes.route.weighted_clusters.clusters.request_headers_to_add",
		"virtual_hosts.routes.route.weighted_clusters.clusters.request_headers_to_remove",
		"virtual_hosts.routes.route.weighted_clusters.clusters.response_headers_to_add",
		"virtual_hosts.routes.route.weighted_clusters.clusters.response_headers_to_remove",
		"virtual_hosts.routes.route.weighted_clusters.clusters.host_rewrite_literal",
		// Mirror policies at the three levels; cluster_header,
		// trace_sampled, runtime_key and request_headers_mutations are
		// not applied and stay in the report.
		"virtual_hosts.routes.route.request_mirror_policies.cluster",
		"virtual_hosts.routes.route.request_mirror_policies.runtime_fraction.default_value",
		"virtual_hosts.routes.route.request_mirror_policies.disable_shadow_host_suffix_append",
		"virtual_hosts.routes.route.request_mirror_policies.host_rewrite_literal",
		"virtual_hosts.request_mirror_policies.cluster",
		"virtual_hosts.request_mirror_policies.runtime_fraction.default_value",
		"virtual_hosts.request_mirror_policies.disable_shadow_host_suffix_append",
		"virtual_hosts.request_mirror_policies.host_rewrite_literal",
		"request_mirror_policies.cluster",
		"request_mirror_policies.runtime_fraction.default_value",
		"request_mirror_policies.disable_shadow_host_suffix_append",
		"request_mirror_policies.host_rewrite_literal",
		// Reported entry by entry when not a stateful session's.
		"virtual_hosts.typed_per_filter_config", "virtual_hosts.routes.typed_per_filter_config",
		"virtual_hosts.routes.route.weighted_clusters.clusters.typed_per_filter_config",
	)
	// load_balancing_policy's typed configs are Any messages the walk
	// does not enter; the translation reports their unapplied fields
	// itself (ClientSideWeightedRoundRobin's
	// metric_names_for_computing_utilization, slow_start_config and
	// oob_reporting_config).
	// typed_extension_protocol_options is a map the walk does not enter:
	// translateHTTPProtocol reports what it does not apply. The deprecated
	// protocol messages select a protocol; their settings are reported.
	clusterFields = walkInside(newFieldSet("name", "type",
		"eds_cluster_config.eds_config", "eds_cluster_config.service_name",
		"lb_policy", "ring_hash_lb_config", "least_request_lb_config", "maglev_lb_config.table_size", "load_balancing_policy",
		"round_robin_lb_config.slow_start_config.slow_start_window",
		"round_robin_lb_config.slow_start_config.aggression.default_value",
		"round_robin_lb_config.slow_start_config.min_weight_percent",
		"common_lb_config.zone_aware_lb_config",
		"circuit_breakers.thresholds.priority",
		"circuit_breakers.thresholds.max_pending_requests", "circuit_breakers.thresholds.max_requests",
		"circuit_breakers.thresholds.max_retries", "circuit_breakers.thresholds.retry_budget",
		"outlier_detection.interval", "outlier_detection.base_ejection_time", "outlier_detection.max_ejection_time",
		"outlier_detection.max_ejection_percent", "outlier_detection.success_rate_stdev_factor",
		"outlier_detection.enforcing_success_rate", "outlier_detection.success_rate_minimum_hosts",
		"outlier_detection.success_rate_request_volume", "outlier_detection.failure_percentage_threshold",
		"outlier_detection.enforcing_failure_percentage", "outlier_detection.failure_percentage_minimum_hosts",
		"outlier_detection.failure_percentage_request_volume",
		"outlier_detection.consecutive_5xx", "outlier_detection.enforcing_consecutive_5xx",
		"outlier_detection.consecutive_gateway_failure", "outlier_detection.enforcing_consecutive_gateway_failure",
		"transport_socket", "lrs_server.self",
		"typed_extension_protocol_options", "http_protocol_options", "http2_protocol_options", "protocol_selection"),
		"http_protocol_options", "http2_protocol_options")
	// An aggregate cluster's own balancer balances its flattened
	// priorities, as in grpc-go; its thresholds, outlier detection and TLS
	// are not read (its first underlying cluster's apply).
	aggregateApplied = newFieldSet("name", "cluster_type.name", "cluster_type.typed_config",
		"lb_policy", "ring_hash_lb_config", "least_request_lb_config", "load_balancing_policy",
		"round_robin_lb_config.slow_start_config.slow_start_window",
		"round_robin_lb_config.slow_start_config.aggression.default_value",
		"round_robin_lb_config.slow_start_config.min_weight_percent",
		"common_lb_config.zone_aware_lb_config")
	// A STATIC or LOGICAL_DNS cluster's inline assignment is applied as an
	// EDS one is.
	clusterApplied   = graft(clusterFields, "load_assignment", endpointsApplied)
	endpointsApplied = newFieldSet("cluster_name",
		"endpoints.locality", "endpoints.load_balancing_weight", "endpoints.priority",
		"endpoints.lb_endpoints.endpoint.address.socket_address.address",
		"endpoints.lb_endpoints.endpoint.address.socket_address.port_value",
		"endpoints.lb_endpoints.health_status", "endpoints.lb_endpoints.load_balancing_weight",
		"endpoints.lb_endpoints.endpoint.hostname")
)

// jwtProviderUnapplied are the fields of a jwt_authn provider Weft does
// not apply; a provider is a map value, which the wire walk does not
// descend into, so translateJWTProvider reports them from this table.
// None changes which tokens are accepted: they copy claims into headers
// for the application, tune Envoy's caches and fetches, or name the
// cluster the JWKS is fetched through (Weft fetches the URI directly).
// Fields that would change the verdict are NACKed instead.
var jwtProviderUnapplied = []struct {
	field string
	set   func(*jwtv3.JwtProvider) bool
}{
	{"claim_to_headers", func(p *jwtv3.JwtProvider) bool { return len(p.GetClaimToHeaders()) > 0 }},
	{"forward_payload_header", func(p *jwtv3.JwtProvider) bool { return p.GetForwardPayloadHeader() != "" }},
	{"header_in_metadata", func(p *jwtv3.JwtProvider) bool { return p.GetHeaderInMetadata() != "" }},
	{"failed_status_in_metadata", func(p *jwtv3.JwtProvider) bool { return p.GetFailedStatusInMetadata() != "" }},
	{"jwt_cache_config", func(p *jwtv3.JwtProvider) bool { return p.GetJwtCacheConfig() != nil }},
	{"remote_jwks.http_uri.cluster", func(p *jwtv3.JwtProvider) bool { return p.GetRemoteJwks().GetHttpUri().GetCluster() != "" }},
	{"remote_jwks.async_fetch", func(p *jwtv3.JwtProvider) bool { return p.GetRemoteJwks().GetAsyncFetch() != nil }},
	{"remote_jwks.retry_policy", func(p *jwtv3.JwtProvider) bool { return p.GetRemoteJwks().GetRetryPolicy() != nil }},
}

// unappliedFields returns, sorted and without duplicates, the paths of the
// fields present in raw, a serialized message of type md, that fs does not
// apply, each prefixed by prefix. It reads the wire format rather than the
// decoded message: that costs no reflection and no allocation per field,
// which matters for a 10,000-endpoint assignment. Malformed bytes end the
// walk; Decode has already rejected them.
func unappliedFields(raw []byte, md protoreflect.MessageDescriptor, fs fieldSet, prefix string) []string {
	w := wireWalker{seen: map[string]struct{}{}}
	w.walk(raw, md, fs, make([]protoreflect.Name, 0, 32))
	if len(w.out) == 0 {
		return nil
	}
	slices.Sort(w.out)
	if prefix != "" {
		for i := range w.out {
			w.out[i] = prefix + w.out[i]
		}
	}
	return w.out
}

// unappliedOf is unappliedFields for a message, marshalling it when its
// bytes are not at hand.
func unappliedOf(m proto.Message, raw []byte, fs fieldSet) []string {
	if raw == nil {
		var err error
		if raw, err = proto.Marshal(m); err != nil {
			return nil
		}
	}
	return unappliedFields(raw, m.ProtoReflect().Descriptor(), fs, "")
}

type wireWalker struct {
	seen map[string]struct{}
	buf  []byte
	out  []string
}

// walk visits the fields of one message. stack is the path of names down
// to it; node nil means nothing under it is applied.
func (w *wireWalker) walk(b []byte, md protoreflect.MessageDescriptor, node *fieldNode, stack []protoreflect.Name) {
	fields := md.Fields()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return
		}
		b = b[n:]
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return
		}
		val := b[:n]
		b = b[n:]
		fd := fields.ByNumber(num)
		if fd == nil {
			w.report(stack, protoreflect.Name(fmt.Sprintf("<unknown field %d>", num)))
			continue
		}
		var child *fieldNode
		if node != nil {
			child = node.children[fd.Name()]
		}
		isMsg := fd.Message() != nil && !fd.IsMap() && typ == protowire.BytesType
		switch {
		case child != nil && child.leaf:
		case child != nil && isMsg:
			if v, n := protowire.ConsumeBytes(val); n >= 0 {
				w.walk(v, fd.Message(), child, append(stack, fd.Name()))
			}
		case isMsg && !fd.IsList() && !strings.HasPrefix(string(fd.Message().FullName()), "google.protobuf."):
			// Name the leaves of an ignored message: "policy.drop_overloads"
			// says more than "policy".
			if v, n := protowire.ConsumeBytes(val); n >= 0 {
				w.walk(v, fd.Message(), nil, append(stack, fd.Name()))
			}
		default:
			w.report(stack, fd.Name())
		}
	}
}

// report records stack.name once; the lookup with string(buf) does not
// allocate, so a field repeated in every endpoint costs one string.
func (w *wireWalker) report(stack []protoreflect.Name, name protoreflect.Name) {
	w.buf = w.buf[:0]
	for _, s := range stack {
		w.buf = append(w.buf, s...)
		w.buf = append(w.buf, '.')
	}
	w.buf = append(w.buf, name...)
	if _, ok := w.seen[string(w.buf)]; ok {
		return
	}
	p := string(w.buf)
	w.seen[p] = struct{}{}
	w.out = append(w.out, p)
}
