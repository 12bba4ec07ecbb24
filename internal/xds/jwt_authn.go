package xds

import (
	"fmt"
	"slices"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/weftmesh/weft/internal/jwt"
	"github.com/weftmesh/weft/internal/rbac"
)

// JWTAuthn is the envoy.filters.http.jwt_authn filter of an inbound
// listener (what istiod makes of a RequestAuthentication): the token
// providers and, per request path, what they require. Validation itself
// is internal/jwt's; the verified payloads become the dynamic metadata
// the chain's RBAC filters read. Immutable once translated.
type JWTAuthn struct {
	FilterName string
	Providers  []*jwt.Provider
	Rules      []JWTRule
	// BypassCORSPreflight lets CORS preflight requests (OPTIONS with
	// Origin and Access-Control-Request-Method) through unchecked.
	BypassCORSPreflight bool
	// RBACBefore is the number of the chain's RBAC filters that precede
	// this filter: they run before any token is verified, as in Envoy.
	RBACBefore int
}

// JWTRule is one of the filter's rules: the first whose match matches a
// request says what it requires; none matching requires nothing.
type JWTRule struct {
	Match    RouteMatch
	Requires *jwt.Requirement // nil: no requirement
}

// Requirement returns what the filter requires of a request to host: nil
// when no rule matches, the rule's requirement says none, or the request
// is a CORS preflight the filter lets through.
func (a *JWTAuthn) Requirement(host string, r *Request) *jwt.Requirement {
	if a.BypassCORSPreflight && r.Method == "OPTIONS" && r.Header.Get("Origin") != "" && r.Header.Get("Access-Control-Request-Method") != "" {
		return nil
	}
	for i := range a.Rules {
		if a.Rules[i].Match.matches(host, r) {
			return a.Rules[i].Requires
		}
	}
	return nil
}

// translateJWTAuthn translates a jwt_authn filter. What would change which
// tokens are accepted and Weft cannot do (filter state rules, extracting
// without validation, a maximum lifetime, key sets from files) is an
// error: the listener is refused and the last good one stays. What only
// adds to the request for the application (claims or payloads copied into
// headers) is reported as not applied.
func translateJWTAuthn(name string, f *jwtv3.JwtAuthentication, unapplied *[]string) (*JWTAuthn, error) {
	if f.GetFilterStateRules() != nil {
		return nil, ferr("filter_state_rules", "not supported")
	}
	out := &JWTAuthn{FilterName: name, BypassCORSPreflight: f.GetBypassCorsPreflight()}
	names := make([]string, 0, len(f.GetProviders()))
	for n := range f.GetProviders() {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		p, err := translateJWTProvider(n, f.GetProviders()[n], unapplied)
		if err != nil {
			return nil, prefixed(fmt.Sprintf("providers[%s]", n), err)
		}
		out.Providers = append(out.Providers, p)
	}
	known := func(n string) bool { _, ok := f.GetProviders()[n]; return ok }
	reqs := map[string]*jwt.Requirement{}
	for n, r := range f.GetRequirementMap() {
		req, err := translateJWTRequirement(r, known, 0)
		if err != nil {
			return nil, prefixed(fmt.Sprintf("requirement_map[%s]", n), err)
		}
		reqs[n] = req
	}
	for i, r := range f.GetRules() {
		field := fmt.Sprintf("rules[%d]", i)
		rt, err := translateRoute(&routev3.Route{Match: r.GetMatch(), Action: &routev3.Route_NonForwardingAction{}})
		if err != nil {
			return nil, prefixed(field, err)
		}
		if rt == nil {
			return nil, ferr(field+".match", "path specifier %T is not supported", r.GetMatch().GetPathSpecifier())
		}
		rule := JWTRule{Match: rt.Match}
		switch rq := r.GetRequirementType().(type) {
		case *jwtv3.RequirementRule_Requires:
			req, err := translateJWTRequirement(rq.Requires, known, 0)
			if err != nil {
				return nil, prefixed(field+".requires", err)
			}
			rule.Requires = req
		case *jwtv3.RequirementRule_RequirementName:
			req, ok := reqs[rq.RequirementName]
			if !ok {
				return nil, ferr(field+".requirement_name", "%q is not in requirement_map", rq.RequirementName)
			}
			rule.Requires = req
		}
		out.Rules = append(out.Rules, rule)
	}
	return out, nil
}

func translateJWTProvider(name string, p *jwtv3.JwtProvider, unapplied *[]string) (*jwt.Provider, error) {
	out := &jwt.Provider{
		Name: name, Issuer: p.GetIssuer(), Audiences: p.GetAudiences(),
		Params: p.GetFromParams(), Cookies: p.GetFromCookies(), Forward: p.GetForward(),
		PayloadKey: p.GetPayloadInMetadata(), RequireExpiration: p.GetRequireExpiration(),
		SpaceDelimited: p.GetNormalizePayloadInMetadata().GetSpaceDelimitedClaims(),
		ClockSkew:      time.Duration(p.GetClockSkewSeconds()) * time.Second,
	}
	if out.ClockSkew == 0 {
		out.ClockSkew = jwt.DefaultClockSkew // Envoy's default for an unset (zero) value
	}
	if p.GetMaxLifetime() != nil {
		return nil, ferr("max_lifetime", "not supported")
	}
	if s := p.GetSubjects(); s != nil {
		sm, err := translateStringMatcher(s)
		if err != nil {
			return nil, prefixed("subjects", err)
		}
		out.Subject = sm.Match
	}
	for _, h := range p.GetFromHeaders() {
		out.Headers = append(out.Headers, jwt.HeaderLocation{Name: h.GetName(), Prefix: h.GetValuePrefix()})
	}
	switch src := p.GetJwksSourceSpecifier().(type) {
	case *jwtv3.JwtProvider_LocalJwks:
		switch ds := src.LocalJwks.GetSpecifier().(type) {
		case *corev3.DataSource_InlineString:
			out.JWKS = []byte(ds.InlineString)
		case *corev3.DataSource_InlineBytes:
			out.JWKS = ds.InlineBytes
		default:
			return nil, ferr("local_jwks", "%T is not supported; inline the key set", ds)
		}
	case *jwtv3.JwtProvider_RemoteJwks:
		// The key set is fetched from the URI directly: a proxyless
		// server has no sidecar cluster to send it through.
		u := src.RemoteJwks.GetHttpUri()
		out.JWKSURI = u.GetUri()
		out.FetchTimeout = u.GetTimeout().AsDuration()
		out.CacheDuration = src.RemoteJwks.GetCacheDuration().AsDuration()
	default:
		return nil, ferr("jwks_source_specifier", "not set")
	}
	if err := out.Validate(); err != nil {
		return nil, fmt.Errorf("%v", err)
	}
	for _, u := range jwtProviderUnapplied {
		if u.set(p) {
			*unapplied = append(*unapplied, "filter_chains.http_filters.jwt_authn.providers."+u.field)
		}
	}
	return out, nil
}

func translateJWTRequirement(r *jwtv3.JwtRequirement, known func(string) bool, depth int) (*jwt.Requirement, error) {
	if depth > maxRBACDepth {
		return nil, fmt.Errorf("requirements nested deeper than %d", maxRBACDepth)
	}
	list := func(field string, rs []*jwtv3.JwtRequirement) ([]jwt.Requirement, error) {
		if len(rs) == 0 {
			return nil, ferr(field, "empty")
		}
		out := make([]jwt.Requirement, 0, len(rs))
		for i, sub := range rs {
			s, err := translateJWTRequirement(sub, known, depth+1)
			if err != nil {
				return nil, prefixed(fmt.Sprintf("%s[%d]", field, i), err)
			}
			out = append(out, *s)
		}
		return out, nil
	}
	switch t := r.GetRequiresType().(type) {
	case *jwtv3.JwtRequirement_ProviderName:
		if !known(t.ProviderName) {
			return nil, ferr("provider_name", "unknown provider %q", t.ProviderName)
		}
		return &jwt.Requirement{Kind: jwt.RequireProvider, Provider: t.ProviderName}, nil
	case *jwtv3.JwtRequirement_ProviderAndAudiences:
		n := t.ProviderAndAudiences.GetProviderName()
		if !known(n) {
			return nil, ferr("provider_and_audiences.provider_name", "unknown provider %q", n)
		}
		return &jwt.Requirement{Kind: jwt.RequireProvider, Provider: n, Audiences: append([]string{}, t.ProviderAndAudiences.GetAudiences()...)}, nil
	case *jwtv3.JwtRequirement_RequiresAny:
		subs, err := list("requires_any.requirements", t.RequiresAny.GetRequirements())
		return &jwt.Requirement{Kind: jwt.RequireAny, Subs: subs}, err
	case *jwtv3.JwtRequirement_RequiresAll:
		subs, err := list("requires_all.requirements", t.RequiresAll.GetRequirements())
		return &jwt.Requirement{Kind: jwt.RequireAll, Subs: subs}, err
	case *jwtv3.JwtRequirement_AllowMissing:
		return &jwt.Requirement{Kind: jwt.AllowMissing}, nil
	case *jwtv3.JwtRequirement_AllowMissingOrFailed:
		return &jwt.Requirement{Kind: jwt.AllowMissingOrFailed}, nil
	case nil:
		return nil, nil
	default:
		return nil, ferr("requires_type", "%T is not supported", t)
	}
}

// translateMetadataMatcher translates an RBAC metadata matcher, which
// istiod writes for requestPrincipals and request.auth.* conditions: a
// path into the jwt_authn filter's verified payload ("payload", then the
// claim).
func translateMetadataMatcher(m *matcherv3.MetadataMatcher) (rbac.Matcher, error) {
	path := make([]string, 0, len(m.GetPath()))
	for i, s := range m.GetPath() {
		k := s.GetKey()
		if k == "" {
			return rbac.Matcher{}, ferr(fmt.Sprintf("path[%d].key", i), "empty")
		}
		path = append(path, k)
	}
	if len(path) == 0 {
		return rbac.Matcher{}, ferr("path", "empty")
	}
	v, err := translateValueMatcher(m.GetValue(), 0)
	if err != nil {
		return rbac.Matcher{}, prefixed("value", err)
	}
	return rbac.Metadata(m.GetFilter(), path, v, m.GetInvert()), nil
}

func translateValueMatcher(v *matcherv3.ValueMatcher, depth int) (rbac.ValueMatcher, error) {
	if depth > maxRBACDepth {
		return rbac.ValueMatcher{}, fmt.Errorf("value matchers nested deeper than %d", maxRBACDepth)
	}
	switch p := v.GetMatchPattern().(type) {
	case *matcherv3.ValueMatcher_NullMatch_:
		return rbac.ValueMatcher{Kind: rbac.ValueNull}, nil
	case *matcherv3.ValueMatcher_DoubleMatch:
		out := rbac.ValueMatcher{Kind: rbac.ValueDouble}
		switch d := p.DoubleMatch.GetMatchPattern().(type) {
		case *matcherv3.DoubleMatcher_Exact:
			out.Exact = d.Exact
		case *matcherv3.DoubleMatcher_Range:
			out.IsRange, out.Lo, out.Hi = true, d.Range.GetStart(), d.Range.GetEnd()
		default:
			return out, ferr("double_match", "not set")
		}
		return out, nil
	case *matcherv3.ValueMatcher_StringMatch:
		s, err := translateStringMatcher(p.StringMatch)
		if err != nil {
			return rbac.ValueMatcher{}, prefixed("string_match", err)
		}
		return rbac.ValueMatcher{Kind: rbac.ValueString, String: s}, nil
	case *matcherv3.ValueMatcher_BoolMatch:
		return rbac.ValueMatcher{Kind: rbac.ValueBool, Bool: p.BoolMatch}, nil
	case *matcherv3.ValueMatcher_PresentMatch:
		return rbac.ValueMatcher{Kind: rbac.ValuePresent, Present: p.PresentMatch}, nil
	case *matcherv3.ValueMatcher_ListMatch:
		one := p.ListMatch.GetOneOf()
		if one == nil {
			return rbac.ValueMatcher{}, ferr("list_match.one_of", "not set")
		}
		sub, err := translateValueMatcher(one, depth+1)
		if err != nil {
			return rbac.ValueMatcher{}, prefixed("list_match.one_of", err)
		}
		return rbac.ValueMatcher{Kind: rbac.ValueList, Subs: []rbac.ValueMatcher{sub}}, nil
	case *matcherv3.ValueMatcher_OrMatch:
		out := rbac.ValueMatcher{Kind: rbac.ValueOr}
		for i, s := range p.OrMatch.GetValueMatchers() {
			sub, err := translateValueMatcher(s, depth+1)
			if err != nil {
				return rbac.ValueMatcher{}, prefixed(fmt.Sprintf("or_match.value_matchers[%d]", i), err)
			}
			out.Subs = append(out.Subs, sub)
		}
		return out, nil
	default:
		return rbac.ValueMatcher{}, ferr("match_pattern", "unsupported %T", p)
	}
}
