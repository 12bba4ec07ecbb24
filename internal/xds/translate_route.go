//lint:file-ignore SA1019 control planes still send these deprecated xDS fields, and grpc-go reads them too

package xds

import (
	"fmt"
	"math"
	"net/http"
	"regexp"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weftmesh/weft/internal/rbac"
)

// TranslateRouteConfig validates a RouteConfiguration and precompiles its
// matchers. An error is a *ResourceError.
func TranslateRouteConfig(rc *routev3.RouteConfiguration) (*RouteConfig, error) {
	out, err := finish(translateRouteConfig(rc))(rc, nil, routeConfigApplied)
	if err != nil {
		return nil, resourceErr(RouteConfigType, rc.GetName(), err)
	}
	return out, nil
}

func translateRouteConfig(rc *routev3.RouteConfiguration) (*RouteConfig, error) {
	out := &RouteConfig{meta: meta{Name: rc.GetName()}}
	maxBody := maxDirectResponseBody(rc)
	for i, vh := range rc.GetVirtualHosts() {
		f := fmt.Sprintf("virtual_hosts[%d]", i)
		v := &VirtualHost{Name: vh.GetName(), Domains: vh.GetDomains()}
		if len(v.Domains) == 0 {
			return nil, ferr(f+".domains", "empty")
		}
		for j, d := range v.Domains {
			if d == "" || (strings.Count(d, "*") > 1) || (strings.Contains(d, "*") && d != "*" && !strings.HasPrefix(d, "*") && !strings.HasSuffix(d, "*")) {
				return nil, ferr(fmt.Sprintf("%s.domains[%d]", f, j), "invalid domain %q", d)
			}
			v.domains = append(v.domains, compileDomain(d))
		}
		for j, r := range vh.GetRoutes() {
			rt, err := translateRoute(r)
			if err != nil {
				return nil, prefixed(fmt.Sprintf("%s.routes[%d]", f, j), err)
			}
			if rt != nil && rt.Action.DirectResponse != nil && len(rt.Action.DirectResponse.Body) > maxBody {
				return nil, ferr(fmt.Sprintf("%s.routes[%d].direct_response.body", f, j),
					"%d bytes, above max_direct_response_body_size_bytes (%d)", len(rt.Action.DirectResponse.Body), maxBody)
			}
			if rt != nil {
				if rt.Session, err = routeSessionOf(r, vh, fmt.Sprintf("%s.routes[%d]", f, j), f, out); err != nil {
					return nil, err
				}
				if err := routeFaultOverrides(r, vh, rt, fmt.Sprintf("%s.routes[%d]", f, j), f, out); err != nil {
					return nil, err
				}
				v.Routes = append(v.Routes, rt)
			}
		}
		if err := inheritVirtualHostPolicies(vh, v); err != nil {
			return nil, prefixed(f, err)
		}
		out.VirtualHosts = append(out.VirtualHosts, v)
	}
	if err := inheritRouteConfigPolicies(rc, out, rc.GetVirtualHosts()); err != nil {
		return nil, err
	}
	return out, nil
}

// compileRE2 compiles a safe_regex for whole-string matching, as Envoy's
// RE2 matchers match the whole value.
func compileRE2(m *matcherv3.RegexMatcher) (*regexp.Regexp, error) {
	return rbac.CompileRegex(m.GetRegex())
}

func translateRoute(r *routev3.Route) (*Route, error) {
	m := r.GetMatch()
	rt := &Route{Name: r.GetName()}
	rm := &rt.Match
	rm.CaseSensitive = m.GetCaseSensitive() == nil || m.GetCaseSensitive().GetValue()
	switch ps := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		rm.Kind, rm.Path = PathPrefix, ps.Prefix
	case *routev3.RouteMatch_Path:
		rm.Kind, rm.Path = PathExact, ps.Path
	case *routev3.RouteMatch_SafeRegex:
		re, err := compileRE2(ps.SafeRegex)
		if err != nil {
			return nil, &fieldError{field: "match.safe_regex.regex", err: err}
		}
		if !rm.CaseSensitive {
			re = regexp.MustCompile("(?i)" + re.String())
		}
		rm.Kind, rm.Path, rm.regex = PathRegex, ps.SafeRegex.GetRegex(), re
	case nil:
		return nil, ferr("match.path_specifier", "missing")
	default:
		// grpc-go skips routes whose path specifier it cannot evaluate;
		// doing the same keeps both protocols routing alike.
		return nil, nil
	}
	for i, h := range m.GetHeaders() {
		hm, err := translateHeaderMatcher(h)
		if err != nil {
			return nil, prefixed(fmt.Sprintf("match.headers[%d]", i), err)
		}
		rm.Headers = append(rm.Headers, hm)
	}
	for i, q := range m.GetQueryParameters() {
		qm, err := translateQueryMatcher(q)
		if err != nil {
			return nil, prefixed(fmt.Sprintf("match.query_parameters[%d]", i), err)
		}
		rm.QueryParams = append(rm.QueryParams, qm)
	}
	if rf := m.GetRuntimeFraction(); rf != nil {
		n, err := perMillion(rf.GetDefaultValue())
		if err != nil {
			return nil, prefixed("match.runtime_fraction.default_value", err)
		}
		rm.HasFraction, rm.FractionPerMillion = true, n
	}
	if err := translateAction(r, &rt.Action); err != nil {
		return nil, err
	}
	return rt, nil
}

func translateHeaderMatcher(h *routev3.HeaderMatcher) (HeaderMatcher, error) {
	out := HeaderMatcher{Name: h.GetName(), Invert: h.GetInvertMatch()}
	if out.Name == "" {
		return out, ferr("name", "empty")
	}
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_ExactMatch:
		out.Kind, out.Value = MatchExact, s.ExactMatch
	case *routev3.HeaderMatcher_PrefixMatch:
		out.Kind, out.Value = MatchPrefix, s.PrefixMatch
	case *routev3.HeaderMatcher_SuffixMatch:
		out.Kind, out.Value = MatchSuffix, s.SuffixMatch
	case *routev3.HeaderMatcher_ContainsMatch:
		out.Kind, out.Value = MatchContains, s.ContainsMatch
	case *routev3.HeaderMatcher_SafeRegexMatch:
		re, err := compileRE2(s.SafeRegexMatch)
		if err != nil {
			return out, &fieldError{field: "safe_regex_match.regex", err: err}
		}
		out.Kind, out.Value, out.Regex = MatchRegex, s.SafeRegexMatch.GetRegex(), re
	case *routev3.HeaderMatcher_PresentMatch:
		out.Kind, out.Present = MatchPresent, s.PresentMatch
	case *routev3.HeaderMatcher_RangeMatch:
		if s.RangeMatch.GetStart() > s.RangeMatch.GetEnd() {
			return out, ferr("range_match", "start %d > end %d", s.RangeMatch.GetStart(), s.RangeMatch.GetEnd())
		}
		out.Kind, out.RangeStart, out.RangeEnd = MatchRange, s.RangeMatch.GetStart(), s.RangeMatch.GetEnd()
	case *routev3.HeaderMatcher_StringMatch:
		sm, err := translateStringMatcher(s.StringMatch)
		if err != nil {
			return out, prefixed("string_match", err)
		}
		out.Kind, out.Value, out.IgnoreCase, out.Regex = sm.Kind, sm.Value, sm.IgnoreCase, sm.Regex
	case nil:
		// No specifier: Envoy treats the matcher as presence.
		out.Kind, out.Present = MatchPresent, true
	default:
		return out, ferr("header_match_specifier", "unsupported %T", s)
	}
	return out.Compiled(), nil
}

func translateStringMatcher(s *matcherv3.StringMatcher) (StringMatcher, error) {
	out := StringMatcher{IgnoreCase: s.GetIgnoreCase()}
	switch p := s.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		out.Kind, out.Value = MatchExact, p.Exact
	case *matcherv3.StringMatcher_Prefix:
		out.Kind, out.Value = MatchPrefix, p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		out.Kind, out.Value = MatchSuffix, p.Suffix
	case *matcherv3.StringMatcher_Contains:
		out.Kind, out.Value = MatchContains, p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := compileRE2(p.SafeRegex)
		if err != nil {
			return out, &fieldError{field: "safe_regex.regex", err: err}
		}
		out.Kind, out.Value, out.Regex = MatchRegex, p.SafeRegex.GetRegex(), re
	default:
		return out, ferr("match_pattern", "unsupported %T", p)
	}
	return out, nil
}

func translateQueryMatcher(q *routev3.QueryParameterMatcher) (QueryParamMatcher, error) {
	out := QueryParamMatcher{Name: q.GetName()}
	if out.Name == "" {
		return out, ferr("name", "empty")
	}
	switch s := q.GetQueryParameterMatchSpecifier().(type) {
	case *routev3.QueryParameterMatcher_StringMatch:
		sm, err := translateStringMatcher(s.StringMatch)
		if err != nil {
			return out, prefixed("string_match", err)
		}
		out.Kind, out.Value, out.IgnoreCase, out.regex = sm.Kind, sm.Value, sm.IgnoreCase, sm.Regex
	case *routev3.QueryParameterMatcher_PresentMatch:
		if !s.PresentMatch {
			return out, ferr("present_match", "false is not supported")
		}
		out.Kind = MatchPresent
	default:
		out.Kind = MatchPresent
	}
	return out, nil
}

// grpc-go's retry defaults (gRFC A44).
const (
	defaultRetryBase = 25 * time.Millisecond
	defaultRetries   = 1
)

func translateAction(r *routev3.Route, out *RouteAction) error {
	a := r.GetRoute()
	if local, err := translateLocalAction(r, out); local {
		return err
	}
	if a == nil {
		out.Kind = ActionUnsupported
		if r.GetNonForwardingAction() != nil {
			out.Kind = ActionNonForwarding
		}
		return nil
	}
	switch cs := a.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		if cs.Cluster == "" {
			return ferr("route.cluster", "empty")
		}
		out.Cluster = cs.Cluster
	case *routev3.RouteAction_WeightedClusters:
		var total uint64
		for i, c := range cs.WeightedClusters.GetClusters() {
			w := c.GetWeight().GetValue()
			if c.GetName() == "" {
				return ferr(fmt.Sprintf("route.weighted_clusters.clusters[%d].name", i), "empty")
			}
			if w == 0 {
				continue
			}
			total += uint64(w)
			wc := WeightedCluster{Name: c.GetName(), Weight: w, HostRewrite: c.GetHostRewriteLiteral()}
			f := fmt.Sprintf("route.weighted_clusters.clusters[%d]", i)
			var err error
			if wc.RequestHeaders, err = headerMutation(c.GetRequestHeadersToAdd(), c.GetRequestHeadersToRemove(), ""); err != nil {
				return prefixed(f, err)
			}
			if wc.ResponseHeaders, err = headerMutation(c.GetResponseHeadersToAdd(), c.GetResponseHeadersToRemove(), "response_"); err != nil {
				return prefixed(f, err)
			}
			out.WeightedClusters = append(out.WeightedClusters, wc)
		}
		if total == 0 {
			return ferr("route.weighted_clusters", "weights sum to 0")
		}
		if total > math.MaxUint32 {
			return ferr("route.weighted_clusters", "weights sum to %d, above the uint32 maximum", total)
		}
		out.TotalWeight = total
	default:
		return ferr("route.cluster_specifier", "unsupported %T", cs)
	}
	// Both bound the request, as in Envoy, where a zero disables either:
	// the shorter one set wins. grpc-go reads max_stream_duration alone,
	// and istiod sets both to the VirtualService's timeout.
	for _, t := range []struct {
		field string
		d     *durationpb.Duration
	}{{"route.timeout", a.GetTimeout()}, {"route.max_stream_duration.max_stream_duration", a.GetMaxStreamDuration().GetMaxStreamDuration()}} {
		if t.d == nil {
			continue
		}
		d, err := duration(t.d)
		if err != nil {
			return prefixed(t.field, err)
		}
		if !out.HasTimeout || d > 0 && (out.Timeout == 0 || d < out.Timeout) {
			out.Timeout = d
		}
		out.HasTimeout = true
	}
	out.HasMaxStreamDuration = a.GetMaxStreamDuration().GetMaxStreamDuration() != nil
	if rp := a.GetRetryPolicy(); rp != nil {
		p, err := translateRetry(rp)
		if err != nil {
			return prefixed("route.retry_policy", err)
		}
		out.RetryPolicy = p
	}
	if err := translateRouteResilience(a, out); err != nil {
		return err
	}
	for i, hp := range a.GetHashPolicy() {
		f := fmt.Sprintf("route.hash_policy[%d]", i)
		h := HashPolicy{Terminal: hp.GetTerminal()}
		switch p := hp.GetPolicySpecifier().(type) {
		case *routev3.RouteAction_HashPolicy_Header_:
			// Canonical, so hashing a request need not canonicalize it.
			h.Kind, h.Name = HashHeader, http.CanonicalHeaderKey(p.Header.GetHeaderName())
			if rw := p.Header.GetRegexRewrite(); rw != nil {
				var err error
				if h.Rewrite, err = regexRewrite(rw, f+".header.regex_rewrite"); err != nil {
					return err
				}
			}
		case *routev3.RouteAction_HashPolicy_FilterState_:
			if p.FilterState.GetKey() != "io.grpc.channel_id" {
				continue // grpc-go ignores other filter-state keys
			}
			h.Kind = HashChannelID
		case *routev3.RouteAction_HashPolicy_ConnectionProperties_:
			h.Kind = HashSourceIP
		case *routev3.RouteAction_HashPolicy_Cookie_:
			h.Kind, h.Name = HashCookie, p.Cookie.GetName()
		case *routev3.RouteAction_HashPolicy_QueryParameter_:
			h.Kind, h.Name = HashQueryParam, p.QueryParameter.GetName()
		default:
			continue
		}
		out.HashPolicies = append(out.HashPolicies, h)
	}
	out.PrefixRewrite = a.GetPrefixRewrite()
	if rw := a.GetRegexRewrite(); rw != nil {
		var err error
		if out.RegexRewrite, err = regexRewrite(rw, "route.regex_rewrite"); err != nil {
			return err
		}
	}
	switch hs := a.GetHostRewriteSpecifier().(type) {
	case *routev3.RouteAction_HostRewriteLiteral:
		out.HostRewrite = hs.HostRewriteLiteral
	case *routev3.RouteAction_HostRewriteHeader:
		if !modifiableHeader(hs.HostRewriteHeader) {
			return ferr("route.host_rewrite_header", "%q is not a header a request may carry", hs.HostRewriteHeader)
		}
		out.HostRewriteHeader = hs.HostRewriteHeader
	case *routev3.RouteAction_AutoHostRewrite:
		out.AutoHostRewrite = hs.AutoHostRewrite.GetValue()
	case *routev3.RouteAction_HostRewritePathRegex:
		var err error
		if out.HostRewritePathRegex, err = regexRewrite(hs.HostRewritePathRegex, "route.host_rewrite_path_regex"); err != nil {
			return err
		}
	}
	req, err := headerMutation(r.GetRequestHeadersToAdd(), r.GetRequestHeadersToRemove(), "")
	if err != nil {
		return err
	}
	resp, err := headerMutation(r.GetResponseHeadersToAdd(), r.GetResponseHeadersToRemove(), "response_")
	if err != nil {
		return err
	}
	out.RequestHeadersToAdd, out.RequestHeadersToRemove = req.Add, req.Remove
	out.ResponseHeadersToAdd, out.ResponseHeadersToRemove = resp.Add, resp.Remove
	for i, p := range a.GetRequestMirrorPolicies() {
		mp, err := translateMirror(p, fmt.Sprintf("route.request_mirror_policies[%d]", i))
		if err != nil {
			return err
		}
		if mp != nil {
			out.MirrorPolicies = append(out.MirrorPolicies, *mp)
		}
	}
	return nil
}

// headerMutation reads one level's header changes; prefix is "" for the
// request's fields and "response_" for the response's. As Envoy does, it
// refuses to add or remove pseudo-headers and Host: a route rewrites the
// host with host_rewrite_*.
func headerMutation(add []*corev3.HeaderValueOption, remove []string, prefix string) (HeaderMutation, error) {
	var m HeaderMutation
	for i, h := range add {
		f := fmt.Sprintf("%sheaders_to_add[%d]", prefix, i)
		if prefix == "" {
			f = "request_" + f
		}
		name := h.GetHeader().GetKey()
		if !modifiableHeader(name) {
			return m, ferr(f+".header.key", "%q may not be added", name)
		}
		o := HeaderValueOption{Name: name, Value: h.GetHeader().GetValue(), KeepEmpty: h.GetKeepEmptyValue()}
		if raw := h.GetHeader().GetRawValue(); len(raw) > 0 && o.Value == "" {
			o.Value = string(raw)
		}
		switch h.GetAppendAction() {
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			o.Action = AppendIfExistsOrAdd
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			o.Action = AddIfAbsent
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			o.Action = OverwriteIfExistsOrAdd
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			o.Action = OverwriteIfExists
		default:
			return m, ferr(f+".append_action", "unknown %v", h.GetAppendAction())
		}
		if ap := h.GetAppend(); ap != nil {
			// The deprecated field, when set, says append or overwrite;
			// Envoy refuses it beside append_action.
			if h.GetAppendAction() != corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
				return m, ferr(f+".append", "set beside append_action")
			}
			o.Action = AppendIfExistsOrAdd
			if !ap.GetValue() {
				o.Action = OverwriteIfExistsOrAdd
			}
		}
		m.Add = append(m.Add, o)
	}
	for i, name := range remove {
		if !modifiableHeader(name) {
			f := fmt.Sprintf("%sheaders_to_remove[%d]", prefix, i)
			if prefix == "" {
				f = "request_" + f
			}
			return m, ferr(f, "%q may not be removed", name)
		}
		m.Remove = append(m.Remove, name)
	}
	return m, nil
}

// modifiableHeader reports whether a route may add or remove a header:
// not a pseudo-header, not Host, not empty (Envoy's isModifiableHeader).
func modifiableHeader(name string) bool {
	return name != "" && name[0] != ':' && !strings.EqualFold(name, "host")
}

// translateMirror reads one request mirror policy; nil for one naming its
// cluster by cluster_header, which Weft does not apply (it stays in the
// unapplied report).
func translateMirror(p *routev3.RouteAction_RequestMirrorPolicy, field string) (*MirrorPolicy, error) {
	if p.GetCluster() != "" && p.GetClusterHeader() != "" {
		return nil, ferr(field, "both cluster and cluster_header set")
	}
	if p.GetCluster() == "" {
		if p.GetClusterHeader() != "" {
			return nil, nil
		}
		return nil, ferr(field+".cluster", "empty")
	}
	m := &MirrorPolicy{Cluster: p.GetCluster(), FractionPerMillion: 1_000_000,
		KeepHost: p.GetDisableShadowHostSuffixAppend() || p.GetHostRewriteLiteral() != "", HostRewrite: p.GetHostRewriteLiteral()}
	if rf := p.GetRuntimeFraction(); rf != nil {
		n, err := perMillion(rf.GetDefaultValue())
		if err != nil {
			return nil, prefixed(field+".runtime_fraction.default_value", err)
		}
		m.FractionPerMillion = n
	}
	return m, nil
}

// perMillion reads a FractionalPercent as a share of 1,000,000, capped at
// all of them.
func perMillion(f *typev3.FractionalPercent) (uint32, error) {
	n := uint64(f.GetNumerator())
	switch f.GetDenominator() {
	case typev3.FractionalPercent_HUNDRED:
		n *= 10_000
	case typev3.FractionalPercent_TEN_THOUSAND:
		n *= 100
	case typev3.FractionalPercent_MILLION:
	default:
		return 0, ferr("denominator", "unknown %v", f.GetDenominator())
	}
	return uint32(min(n, 1_000_000)), nil
}

// inheritRouteConfigPolicies gives every forwarding route the header
// changes and mirror policies of the levels that enclose it.
//
// Envoy evaluates header mutations "from most specific (i.e. route entry
// level) to least specific (i.e. route configuration level). Later header
// mutations may override earlier mutations. This order can be reversed by
// setting [most_specific_header_mutations_wins] to true." A weighted
// cluster's come first in either order. Mirror policies are not merged:
// "the most specific non-empty one becomes the mirror policies".
func inheritRouteConfigPolicies(rc *routev3.RouteConfiguration, out *RouteConfig, vhs []*routev3.VirtualHost) error {
	rcReq, err := headerMutation(rc.GetRequestHeadersToAdd(), rc.GetRequestHeadersToRemove(), "")
	if err != nil {
		return err
	}
	rcResp, err := headerMutation(rc.GetResponseHeadersToAdd(), rc.GetResponseHeadersToRemove(), "response_")
	if err != nil {
		return err
	}
	rcMirrors, err := mirrorPolicies(rc.GetRequestMirrorPolicies(), "request_mirror_policies")
	if err != nil {
		return err
	}
	ascend := rc.GetMostSpecificHeaderMutationsWins()
	for i, v := range out.VirtualHosts {
		vh := vhs[i]
		f := fmt.Sprintf("virtual_hosts[%d]", i)
		vhReq, err := headerMutation(vh.GetRequestHeadersToAdd(), vh.GetRequestHeadersToRemove(), "")
		if err != nil {
			return prefixed(f, err)
		}
		vhResp, err := headerMutation(vh.GetResponseHeadersToAdd(), vh.GetResponseHeadersToRemove(), "response_")
		if err != nil {
			return prefixed(f, err)
		}
		vhMirrors, err := mirrorPolicies(vh.GetRequestMirrorPolicies(), f+".request_mirror_policies")
		if err != nil {
			return err
		}
		for _, r := range v.Routes {
			a := &r.Action
			a.RequestHeaders = levels(ascend, HeaderMutation{a.RequestHeadersToAdd, a.RequestHeadersToRemove}, vhReq, rcReq)
			a.ResponseHeaders = levels(ascend, HeaderMutation{a.ResponseHeadersToAdd, a.ResponseHeadersToRemove}, vhResp, rcResp)
			if a.Kind != ActionForward || len(a.MirrorPolicies) > 0 {
				continue
			}
			if a.MirrorPolicies = vhMirrors; len(a.MirrorPolicies) == 0 {
				a.MirrorPolicies = rcMirrors
			}
		}
	}
	return nil
}

func mirrorPolicies(ps []*routev3.RouteAction_RequestMirrorPolicy, field string) ([]MirrorPolicy, error) {
	var out []MirrorPolicy
	for i, p := range ps {
		mp, err := translateMirror(p, fmt.Sprintf("%s[%d]", field, i))
		if err != nil {
			return nil, err
		}
		if mp != nil {
			out = append(out, *mp)
		}
	}
	return out, nil
}

// levels lists the non-empty header mutations in the order Envoy
// evaluates them: most specific first, unless ascend.
func levels(ascend bool, route, vhost, rc HeaderMutation) []HeaderMutation {
	ls := []HeaderMutation{route, vhost, rc}
	if ascend {
		ls[0], ls[2] = ls[2], ls[0]
	}
	var out []HeaderMutation
	for _, l := range ls {
		if !l.Empty() {
			out = append(out, l)
		}
	}
	return out
}

func translateRetry(rp *routev3.RetryPolicy) (*RetryPolicy, error) {
	p := &RetryPolicy{NumRetries: defaultRetries, BaseInterval: defaultRetryBase, MaxInterval: 10 * defaultRetryBase}
	for _, s := range strings.Split(rp.GetRetryOn(), ",") {
		if s = strings.TrimSpace(s); s != "" {
			p.RetryOn = append(p.RetryOn, s)
		}
	}
	if n := rp.GetNumRetries(); n != nil {
		if n.GetValue() == 0 {
			return nil, ferr("num_retries", "0 is not allowed")
		}
		p.NumRetries = n.GetValue()
	}
	if t := rp.GetPerTryTimeout(); t != nil {
		d, err := duration(t)
		if err != nil {
			return nil, prefixed("per_try_timeout", err)
		}
		p.PerTryTimeout = d
	}
	if b := rp.GetRetryBackOff(); b != nil {
		base, err := duration(b.GetBaseInterval())
		if err != nil {
			return nil, prefixed("retry_back_off.base_interval", err)
		}
		if base == 0 {
			return nil, ferr("retry_back_off.base_interval", "must be positive")
		}
		p.BaseInterval, p.MaxInterval = base, 10*base
		if m := b.GetMaxInterval(); m != nil {
			max, err := duration(m)
			if err != nil {
				return nil, prefixed("retry_back_off.max_interval", err)
			}
			if max < base {
				return nil, ferr("retry_back_off.max_interval", "%v is below base_interval %v", max, base)
			}
			p.MaxInterval = max
		}
	}
	for i, c := range rp.GetRetriableStatusCodes() {
		if c < 100 || c > 599 {
			return nil, ferr(fmt.Sprintf("retriable_status_codes[%d]", i), "%d is not an HTTP status", c)
		}
	}
	p.RetriableStatusCodes = rp.GetRetriableStatusCodes()
	if err := translateRetryExtras(rp, p); err != nil {
		return nil, err
	}
	return p, nil
}

// regexRewrite compiles a RegexMatchAndSubstitute. Envoy's substitution is
// RE2's rewrite string, where \1 is the first group and \\ a backslash;
// Go's regexp expands $1 instead, and would send "\1" as written. The
// substitution is converted once here ("$" escaped as "$$"), and one that
// RE2 would refuse (another escape, a group the pattern lacks) is NACKed.
func regexRewrite(rw *matcherv3.RegexMatchAndSubstitute, field string) (*RegexRewrite, error) {
	re, err := regexp.Compile(rw.GetPattern().GetRegex())
	if err != nil {
		return nil, ferr(field+".pattern.regex", "%v", err)
	}
	sub, err := goSubstitution(rw.GetSubstitution(), re.NumSubexp())
	if err != nil {
		return nil, ferr(field+".substitution", "%v", err)
	}
	return &RegexRewrite{Pattern: re, Substitution: sub}, nil
}

// goSubstitution turns an RE2 rewrite string into a regexp.Expand template.
func goSubstitution(s string, groups int) (string, error) {
	if !strings.ContainsAny(s, `\$`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '$':
			b.WriteString("$$")
		case '\\':
			if i+1 == len(s) {
				return "", fmt.Errorf("%q ends in a lone backslash", s)
			}
			i++
			switch n := s[i]; {
			case n == '\\':
				b.WriteByte('\\')
			case n >= '0' && n <= '9':
				if int(n-'0') > groups {
					return "", fmt.Errorf("%q refers to group %c; the pattern has %d", s, n, groups)
				}
				b.WriteString("${" + string(n) + "}")
			default:
				return "", fmt.Errorf("%q has the escape \\%c; only \\0-\\9 and \\\\ are allowed", s, n)
			}
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}
