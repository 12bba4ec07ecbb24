package security

import (
	"regexp"
	"strings"

	"github.com/weftmesh/weft/internal/jwt"
	"github.com/weftmesh/weft/internal/rbac"
)

// The policy file is evaluated by the engine that evaluates the control
// plane's RBAC filters (internal/rbac): each AuthorizationPolicy is
// translated into RBAC policies as istiod translates it for Envoy
// (pilot/pkg/security/authz), so a file and the same policies served by
// istiod decide every request alike.
//
//   - Each rule becomes one RBAC policy named after its AuthorizationPolicy,
//     with one permission per to.operation and one principal per
//     from.source; a rule without to (from) has the permission (principal)
//     "any". Its when conditions are ANDed into each: destination.port into
//     the permissions, the others into the principals.
//   - A field's values are ORed, its not-values become NOT(OR(...)), and
//     the fields of one source or operation are ANDed.
//   - AUDIT policies make a LOG filter, DENY ones a DENY filter and ALLOW
//     ones an ALLOW filter, run in that order; an ALLOW policy without
//     rules makes an ALLOW filter that matches nothing, denying all.

// compile translates the policies of p into its engine and returns p.
func (p *PolicySet) compile() *PolicySet {
	filter := func(a rbac.Action, ps []*policy) {
		if len(ps) == 0 {
			return
		}
		f := rbac.Filter{Action: a, Policies: []rbac.Policy{}}
		for _, pol := range ps {
			for _, r := range pol.rules {
				f.Policies = append(f.Policies, r.toRBAC(pol.name))
			}
		}
		p.engine.Filters = append(p.engine.Filters, f)
	}
	p.engine = rbac.Engine{}
	filter(rbac.Log, p.audit)
	filter(rbac.Deny, p.deny)
	filter(rbac.Allow, p.allow)
	p.compileAuthn()
	return p
}

func (r *rule) toRBAC(name string) rbac.Policy {
	var permConds, principalConds []rbac.Matcher
	for _, c := range r.when {
		if c.kind == condDestinationPort {
			permConds = append(permConds, c.toRBAC()...)
		} else {
			principalConds = append(principalConds, c.toRBAC()...)
		}
	}
	pol := rbac.Policy{Name: name}
	for _, o := range r.to {
		pol.Permissions = append(pol.Permissions, and(o.toRBAC(), permConds))
	}
	if len(r.to) == 0 {
		pol.Permissions = []rbac.Matcher{and(nil, permConds)}
	}
	for _, s := range r.from {
		pol.Principals = append(pol.Principals, and(s.toRBAC(), principalConds))
	}
	if len(r.from) == 0 {
		pol.Principals = []rbac.Matcher{and(nil, principalConds)}
	}
	return pol
}

// and is the AND of a and b, "any" when both are empty.
func and(a, b []rbac.Matcher) rbac.Matcher {
	ms := append(append([]rbac.Matcher{}, a...), b...)
	if len(ms) == 0 {
		return rbac.Any()
	}
	return rbac.And(ms...)
}

// field appends OR(values) and NOT(OR(notValues)) to ms, each only when
// set.
func field[T any](ms []rbac.Matcher, values, notValues []T, m func(T) rbac.Matcher) []rbac.Matcher {
	or := func(vs []T) rbac.Matcher {
		out := make([]rbac.Matcher, len(vs))
		for i, v := range vs {
			out[i] = m(v)
		}
		return rbac.Or(out...)
	}
	if len(values) > 0 {
		ms = append(ms, or(values))
	}
	if len(notValues) > 0 {
		ms = append(ms, rbac.Not(or(notValues)))
	}
	return ms
}

func (s *sourceMatch) toRBAC() []rbac.Matcher {
	var ms []rbac.Matcher
	ms = field(ms, s.principals, s.notPrincipals, principal)
	ms = field(ms, s.requestPrincipals, s.notRequestPrincipals, requestPrincipal)
	ms = field(ms, s.namespaces, s.notNamespaces, namespace)
	ms = field(ms, s.remoteIPBlocks, s.notRemoteIPBlocks, rbac.RemoteIP)
	ms = field(ms, s.ipBlocks, s.notIPBlocks, rbac.RemoteIP)
	return ms
}

func (o *operationMatch) toRBAC() []rbac.Matcher {
	var ms []rbac.Matcher
	ms = field(ms, o.hosts, o.notHosts, host)
	ms = field(ms, o.methods, o.notMethods, header(":method"))
	ms = field(ms, o.paths, o.notPaths, path)
	ms = field(ms, o.ports, o.notPorts, port)
	return ms
}

func (c *condition) toRBAC() []rbac.Matcher {
	switch c.kind {
	case condHeader:
		return field(nil, c.values, c.notValues, header(c.header))
	case condSourceIP:
		return field(nil, c.ips, c.notIPs, rbac.RemoteIP)
	case condSourceNamespace:
		return field(nil, c.values, c.notValues, namespace)
	case condSourcePrincipal:
		return field(nil, c.values, c.notValues, principal)
	case condDestinationPort:
		return field(nil, c.ports, c.notPorts, port)
	case condRequestPrincipal:
		return field(nil, c.raw, c.notRaw, requestPrincipal)
	case condJWTClaim:
		return claimField(c.claim, c.values, c.notValues)
	}
	return []rbac.Matcher{rbac.None()} // unreachable: compileCondition knows every kind
}

// anyValue is istiod's reading of a lone "*" in a string field: any
// non-empty value.
var anyValue = rbac.StringMatcher{Kind: rbac.MatchRegex, Value: ".+", Regex: regexp.MustCompile(`^(?:.+)$`)}

// stringMatcher is istiod's StringMatcher for an Istio string value.
func stringMatcher(m strMatch, ignoreCase bool) rbac.StringMatcher {
	switch m.kind {
	case matchAny:
		return anyValue
	case matchPrefix:
		return rbac.StringMatcher{Kind: rbac.MatchPrefix, Value: m.s, IgnoreCase: ignoreCase}
	case matchSuffix:
		return rbac.StringMatcher{Kind: rbac.MatchSuffix, Value: m.s, IgnoreCase: ignoreCase}
	}
	return rbac.StringMatcher{Kind: rbac.MatchExact, Value: m.s, IgnoreCase: ignoreCase}
}

// header matches a request header (or pseudo-header) as istiod's
// HeaderMatcher does: "*" is presence.
func header(name string) func(strMatch) rbac.Matcher {
	return func(m strMatch) rbac.Matcher {
		if m.kind == matchAny {
			return rbac.Header(rbac.HeaderMatcher{Name: name, Kind: rbac.MatchPresent, Present: true})
		}
		sm := stringMatcher(m, false)
		return rbac.Header(rbac.HeaderMatcher{Name: name, Kind: sm.Kind, Value: sm.Value})
	}
}

// host matches the authority case-insensitively, with and without its
// port; "*" is presence, as in istiod.
func host(m strMatch) rbac.Matcher {
	if m.kind == matchAny {
		return header(":authority")(m)
	}
	return rbac.Host(stringMatcher(m, true))
}

func path(m strMatch) rbac.Matcher { return rbac.URLPath(stringMatcher(m, false)) }

func port(p uint16) rbac.Matcher { return rbac.DestinationPort(uint32(p)) }

// principal matches the caller's SPIFFE ID; m is Istio's principal, the
// ID without "spiffe://". As in istiod, a suffix match keeps the scheme
// with a regex.
func principal(m strMatch) rbac.Matcher {
	const scheme = "spiffe://"
	switch m.kind {
	case matchAny:
		return rbac.AuthenticatedAs(anyValue)
	case matchSuffix:
		return rbac.AuthenticatedAs(regexMatcher(regexp.QuoteMeta(scheme) + ".*" + regexp.QuoteMeta(m.s)))
	}
	m.s = scheme + m.s
	return rbac.AuthenticatedAs(stringMatcher(m, false))
}

// namespace matches a caller whose SPIFFE ID has the path segments
// "/ns/<namespace>/", istiod's regex ".*/ns/<namespace>/.*".
func namespace(m strMatch) rbac.Matcher {
	var ns string
	switch m.kind {
	case matchAny:
		ns = ".*"
	case matchPrefix:
		ns = regexp.QuoteMeta(m.s) + ".*"
	case matchSuffix:
		ns = ".*" + regexp.QuoteMeta(m.s)
	default:
		ns = regexp.QuoteMeta(m.s)
	}
	return rbac.AuthenticatedAs(regexMatcher(".*/ns/" + ns + "/.*"))
}

func regexMatcher(expr string) rbac.StringMatcher {
	re, err := rbac.CompileRegex(expr)
	if err != nil {
		panic(err) // every caller quotes what it did not write
	}
	return rbac.StringMatcher{Kind: rbac.MatchRegex, Value: expr, Regex: re}
}

// jwtPayload is where the jwt_authn filter publishes a verified payload,
// the path istiod's metadata matchers start with.
var jwtPayload = []string{"payload"}

// jwtClaim matches the verified payload's claim at path with v, as
// istiod's MetadataStringMatcherForJWTClaim.
func jwtClaim(path []string, v rbac.ValueMatcher) rbac.Matcher {
	return rbac.Metadata(jwt.FilterName, append(append([]string{}, jwtPayload...), path...), v, false)
}

func stringValue(s rbac.StringMatcher) rbac.ValueMatcher {
	return rbac.ValueMatcher{Kind: rbac.ValueString, String: s}
}

// requestPrincipal is istiod's requestPrincipalGenerator for one value
// "<iss>/<sub>": the issuer is what precedes the last "/", since an
// issuer may be a URL; "*" in either part, or around the whole value,
// widens it as istiod widens it.
func requestPrincipal(value string) rbac.Matcher {
	idx := strings.LastIndex(value, "/")
	found := idx >= 0
	iss, sub := value, ""
	if found {
		iss, sub = value[:idx], value[idx+1:]
	}
	exact := func(s string) rbac.StringMatcher { return rbac.StringMatcher{Kind: rbac.MatchExact, Value: s} }
	var mi, ms rbac.StringMatcher
	switch {
	case value == "*":
		mi, ms = anyValue, anyValue
	case strings.HasPrefix(value, "*"):
		if found {
			if iss == "*" {
				mi = anyValue
			} else {
				mi = rbac.StringMatcher{Kind: rbac.MatchSuffix, Value: strings.TrimPrefix(iss, "*")}
			}
			ms = exact(sub)
		} else {
			mi = anyValue
			ms = rbac.StringMatcher{Kind: rbac.MatchSuffix, Value: strings.TrimPrefix(value, "*")}
		}
	case strings.HasSuffix(value, "*"):
		if found {
			mi = exact(iss)
			if sub == "*" {
				ms = anyValue
			} else {
				ms = rbac.StringMatcher{Kind: rbac.MatchPrefix, Value: strings.TrimSuffix(sub, "*")}
			}
		} else {
			mi = rbac.StringMatcher{Kind: rbac.MatchPrefix, Value: strings.TrimSuffix(value, "*")}
			ms = anyValue
		}
	default:
		mi, ms = exact(iss), exact(sub)
	}
	return rbac.And(jwtClaim([]string{"iss"}, stringValue(mi)), jwtClaim([]string{"sub"}, stringValue(ms)))
}

// claimField is istiod's requestClaimGenerator (and its audiences and
// presenter generators): the claim, a list holding one of values or a
// value itself (MetadataListValueMatcher with useExtendedJwt); notValues
// the negation of the same.
func claimField(path []string, values, notValues []strMatch) []rbac.Matcher {
	m := func(vs []strMatch) rbac.Matcher {
		or := rbac.ValueMatcher{Kind: rbac.ValueOr}
		for _, v := range vs {
			or.Subs = append(or.Subs, stringValue(stringMatcher(v, false)))
		}
		if len(or.Subs) == 1 {
			or = or.Subs[0]
		}
		list := rbac.ValueMatcher{Kind: rbac.ValueList, Subs: []rbac.ValueMatcher{or}}
		return jwtClaim(path, rbac.ValueMatcher{Kind: rbac.ValueOr, Subs: []rbac.ValueMatcher{list, or}})
	}
	var ms []rbac.Matcher
	if len(values) > 0 {
		ms = append(ms, m(values))
	}
	if len(notValues) > 0 {
		ms = append(ms, rbac.Not(m(notValues)))
	}
	return ms
}
