//lint:file-ignore SA1019 control planes still send the deprecated source_ip and metadata matchers, and grpc-go reads them too

package xds

import (
	"crypto/x509"
	"fmt"
	"net/netip"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
)

// RBACAction is what a matching RBAC policy does.
type RBACAction uint8

// RBAC actions, as Envoy defines them.
const (
	// RBACAllow admits a request only when a policy matches it.
	RBACAllow RBACAction = iota
	// RBACDeny refuses a request when a policy matches it.
	RBACDeny
	// RBACLog admits every request; a match is only reported.
	RBACLog
)

func (a RBACAction) String() string {
	switch a {
	case RBACAllow:
		return "ALLOW"
	case RBACDeny:
		return "DENY"
	default:
		return "LOG"
	}
}

// RBAC is one envoy.filters.http.rbac filter of an inbound listener: the
// request is matched against named policies, each a set of permissions (what
// is asked) and principals (who asks); a policy matches when one of each
// matches. Immutable once translated; safe for concurrent use.
type RBAC struct {
	// FilterName is the HTTP filter's name, for logs and denials.
	FilterName string
	Action     RBACAction
	// Policies are sorted by name so evaluation and reports are stable.
	Policies []RBACPolicy
}

// RBACPolicy is one named policy.
type RBACPolicy struct {
	Name        string
	permissions []rbacMatcher
	principals  []rbacMatcher
}

// RBACInput is what RBAC evaluation reads about one request.
type RBACInput struct {
	// Host is the request's authority; Request is its method, path and
	// headers.
	Host    string
	Request *Request
	// Local and Remote are the connection's addresses.
	Local, Remote netip.AddrPort
	// PeerCert is the caller's verified leaf certificate; nil for a
	// plaintext or unauthenticated connection.
	PeerCert *x509.Certificate
	// ServerName is the TLS SNI the caller asked for ("" without TLS).
	ServerName string
}

// Allowed evaluates the filter: for ALLOW, whether a policy matches; for
// DENY, whether none does; LOG allows everything. matched names the policy
// that decided ("" when none matched).
func (r *RBAC) Allowed(in *RBACInput) (allowed bool, matched string) {
	for i := range r.Policies {
		p := &r.Policies[i]
		if anyMatch(p.permissions, in) && anyMatch(p.principals, in) {
			return r.Action != RBACDeny, p.Name
		}
	}
	return r.Action != RBACAllow, ""
}

func anyMatch(ms []rbacMatcher, in *RBACInput) bool {
	for _, m := range ms {
		if m.match(in) {
			return true
		}
	}
	return false
}

func allMatch(ms []rbacMatcher, in *RBACInput) bool {
	for _, m := range ms {
		if !m.match(in) {
			return false
		}
	}
	return true
}

// rbacMatcher is one compiled permission or principal.
type rbacMatcher interface{ match(*RBACInput) bool }

type (
	rbacAny  struct{}
	rbacNone struct{}
	rbacAnd  []rbacMatcher
	rbacOr   []rbacMatcher
	rbacNot  struct{ m rbacMatcher }
	// rbacHeader matches a request header (or pseudo-header).
	rbacHeader struct{ h HeaderMatcher }
	// rbacPath matches the path without the query string.
	rbacPath struct{ s StringMatcher }
	// rbacCIDR matches the local (destination) or remote address.
	rbacCIDR struct {
		prefix netip.Prefix
		local  bool
	}
	rbacPortRange struct{ lo, hi uint32 } // lo <= port < hi
	rbacSNI       struct{ s StringMatcher }
	// rbacAuthenticated matches a caller with a verified certificate,
	// and, when name is set, one of its names: URI SANs, then DNS SANs,
	// then the subject, as Envoy and grpc-go look.
	rbacAuthenticated struct{ name *StringMatcher }
)

func (rbacAny) match(*RBACInput) bool      { return true }
func (rbacNone) match(*RBACInput) bool     { return false }
func (m rbacAnd) match(in *RBACInput) bool { return allMatch(m, in) }
func (m rbacOr) match(in *RBACInput) bool  { return anyMatch(m, in) }
func (m rbacNot) match(in *RBACInput) bool { return !m.m.match(in) }

func (m rbacHeader) match(in *RBACInput) bool {
	if in.Request == nil {
		return false
	}
	return m.h.matches(in.Host, in.Request)
}

func (m rbacPath) match(in *RBACInput) bool {
	return in.Request != nil && m.s.Match(in.Request.Path)
}

func (m rbacCIDR) match(in *RBACInput) bool {
	a := in.Remote
	if m.local {
		a = in.Local
	}
	return a.IsValid() && m.prefix.Contains(a.Addr().Unmap())
}

func (m rbacPortRange) match(in *RBACInput) bool {
	p := uint32(in.Local.Port())
	return in.Local.IsValid() && m.lo <= p && p < m.hi
}

func (m rbacSNI) match(in *RBACInput) bool { return m.s.Match(in.ServerName) }

func (m rbacAuthenticated) match(in *RBACInput) bool {
	c := in.PeerCert
	if c == nil {
		return false
	}
	if m.name == nil {
		return true
	}
	if len(c.URIs) > 0 {
		for _, u := range c.URIs {
			if m.name.Match(u.String()) {
				return true
			}
		}
		return false
	}
	if len(c.DNSNames) > 0 {
		return slices.ContainsFunc(c.DNSNames, m.name.Match)
	}
	return m.name.Match(c.Subject.String())
}

// translateRBACFilter translates an RBAC HTTP filter's config. A filter
// without rules enforces nothing (Envoy's meaning), and is returned as nil.
// What Weft cannot evaluate (CEL conditions, the matcher API, dynamic
// metadata) is an error rather than a guess: a policy evaluated wrongly is a
// hole, so the listener is rejected and the last good one stays.
func translateRBACFilter(name string, f *rbacfilterv3.RBAC) (*RBAC, error) {
	if f.GetMatcher() != nil {
		return nil, ferr("matcher", "the matcher API is not supported; use rules")
	}
	rules := f.GetRules()
	if rules == nil {
		return nil, nil
	}
	out := &RBAC{FilterName: name}
	switch rules.GetAction() {
	case rbacv3.RBAC_ALLOW:
		out.Action = RBACAllow
	case rbacv3.RBAC_DENY:
		out.Action = RBACDeny
	case rbacv3.RBAC_LOG:
		out.Action = RBACLog
	default:
		return nil, ferr("rules.action", "unknown action %v", rules.GetAction())
	}
	names := make([]string, 0, len(rules.GetPolicies()))
	for n := range rules.GetPolicies() {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		p := rules.GetPolicies()[n]
		field := fmt.Sprintf("rules.policies[%s]", n)
		if p.GetCondition() != nil || p.GetCheckedCondition() != nil {
			return nil, ferr(field+".condition", "CEL conditions are not supported")
		}
		pol := RBACPolicy{Name: n}
		for i, perm := range p.GetPermissions() {
			m, err := translatePermission(perm, 0)
			if err != nil {
				return nil, prefixed(fmt.Sprintf("%s.permissions[%d]", field, i), err)
			}
			pol.permissions = append(pol.permissions, m)
		}
		for i, prin := range p.GetPrincipals() {
			m, err := translatePrincipal(prin, 0)
			if err != nil {
				return nil, prefixed(fmt.Sprintf("%s.principals[%d]", field, i), err)
			}
			pol.principals = append(pol.principals, m)
		}
		out.Policies = append(out.Policies, pol)
	}
	return out, nil
}

// maxRBACDepth bounds the nesting of and/or/not rules, so a hostile or
// broken control plane cannot exhaust the stack.
const maxRBACDepth = 32

func translatePermission(p *rbacv3.Permission, depth int) (rbacMatcher, error) {
	if depth > maxRBACDepth {
		return nil, fmt.Errorf("rules nested deeper than %d", maxRBACDepth)
	}
	set := func(field string, rs []*rbacv3.Permission) ([]rbacMatcher, error) {
		var ms []rbacMatcher
		for i, r := range rs {
			m, err := translatePermission(r, depth+1)
			if err != nil {
				return nil, prefixed(fmt.Sprintf("%s[%d]", field, i), err)
			}
			ms = append(ms, m)
		}
		return ms, nil
	}
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_Any:
		if !r.Any {
			return nil, ferr("any", "false")
		}
		return rbacAny{}, nil
	case *rbacv3.Permission_AndRules:
		ms, err := set("and_rules.rules", r.AndRules.GetRules())
		return rbacAnd(ms), err
	case *rbacv3.Permission_OrRules:
		ms, err := set("or_rules.rules", r.OrRules.GetRules())
		return rbacOr(ms), err
	case *rbacv3.Permission_NotRule:
		m, err := translatePermission(r.NotRule, depth+1)
		if err != nil {
			return nil, prefixed("not_rule", err)
		}
		return rbacNot{m}, nil
	case *rbacv3.Permission_Header:
		h, err := translateHeaderMatcher(r.Header)
		if err != nil {
			return nil, prefixed("header", err)
		}
		return rbacHeader{h}, nil
	case *rbacv3.Permission_UrlPath:
		s, err := translateStringMatcher(r.UrlPath.GetPath())
		if err != nil {
			return nil, prefixed("url_path.path", err)
		}
		return rbacPath{s}, nil
	case *rbacv3.Permission_DestinationIp:
		pf, err := cidr(r.DestinationIp)
		if err != nil {
			return nil, prefixed("destination_ip", err)
		}
		return rbacCIDR{prefix: pf, local: true}, nil
	case *rbacv3.Permission_DestinationPort:
		return rbacPortRange{lo: r.DestinationPort, hi: r.DestinationPort + 1}, nil
	case *rbacv3.Permission_DestinationPortRange:
		lo, hi := r.DestinationPortRange.GetStart(), r.DestinationPortRange.GetEnd()
		if lo < 0 || hi < lo {
			return nil, ferr("destination_port_range", "bad range [%d, %d)", lo, hi)
		}
		return rbacPortRange{lo: uint32(lo), hi: uint32(hi)}, nil
	case *rbacv3.Permission_RequestedServerName:
		s, err := translateStringMatcher(r.RequestedServerName)
		if err != nil {
			return nil, prefixed("requested_server_name", err)
		}
		return rbacSNI{s}, nil
	case *rbacv3.Permission_Metadata:
		return metadataMatcher(r.Metadata.GetInvert()), nil
	case nil:
		return nil, ferr("rule", "not set")
	default:
		return nil, ferr("rule", "unsupported %T", r)
	}
}

func translatePrincipal(p *rbacv3.Principal, depth int) (rbacMatcher, error) {
	if depth > maxRBACDepth {
		return nil, fmt.Errorf("rules nested deeper than %d", maxRBACDepth)
	}
	set := func(field string, ids []*rbacv3.Principal) ([]rbacMatcher, error) {
		var ms []rbacMatcher
		for i, id := range ids {
			m, err := translatePrincipal(id, depth+1)
			if err != nil {
				return nil, prefixed(fmt.Sprintf("%s[%d]", field, i), err)
			}
			ms = append(ms, m)
		}
		return ms, nil
	}
	switch id := p.GetIdentifier().(type) {
	case *rbacv3.Principal_Any:
		if !id.Any {
			return nil, ferr("any", "false")
		}
		return rbacAny{}, nil
	case *rbacv3.Principal_AndIds:
		ms, err := set("and_ids.ids", id.AndIds.GetIds())
		return rbacAnd(ms), err
	case *rbacv3.Principal_OrIds:
		ms, err := set("or_ids.ids", id.OrIds.GetIds())
		return rbacOr(ms), err
	case *rbacv3.Principal_NotId:
		m, err := translatePrincipal(id.NotId, depth+1)
		if err != nil {
			return nil, prefixed("not_id", err)
		}
		return rbacNot{m}, nil
	case *rbacv3.Principal_Authenticated_:
		if id.Authenticated.GetPrincipalName() == nil {
			return rbacAuthenticated{}, nil
		}
		s, err := translateStringMatcher(id.Authenticated.GetPrincipalName())
		if err != nil {
			return nil, prefixed("authenticated.principal_name", err)
		}
		return rbacAuthenticated{name: &s}, nil
	case *rbacv3.Principal_SourceIp:
		return remoteCIDR("source_ip", id.SourceIp)
	case *rbacv3.Principal_DirectRemoteIp:
		return remoteCIDR("direct_remote_ip", id.DirectRemoteIp)
	case *rbacv3.Principal_RemoteIp:
		// No proxies sit between a proxyless caller and this server, so
		// the remote address is the direct one.
		return remoteCIDR("remote_ip", id.RemoteIp)
	case *rbacv3.Principal_Header:
		h, err := translateHeaderMatcher(id.Header)
		if err != nil {
			return nil, prefixed("header", err)
		}
		return rbacHeader{h}, nil
	case *rbacv3.Principal_UrlPath:
		s, err := translateStringMatcher(id.UrlPath.GetPath())
		if err != nil {
			return nil, prefixed("url_path.path", err)
		}
		return rbacPath{s}, nil
	case *rbacv3.Principal_Metadata:
		return metadataMatcher(id.Metadata.GetInvert()), nil
	case nil:
		return nil, ferr("identifier", "not set")
	default:
		return nil, ferr("identifier", "unsupported %T", id)
	}
}

// metadataMatcher stands for a dynamic-metadata match. A proxyless server
// has no filter that writes dynamic metadata, so the match is always false
// (and its inversion always true), which is also grpc-go's reading.
func metadataMatcher(invert bool) rbacMatcher {
	if invert {
		return rbacAny{}
	}
	return rbacNone{}
}

func remoteCIDR(field string, c *corev3.CidrRange) (rbacMatcher, error) {
	pf, err := cidr(c)
	if err != nil {
		return nil, prefixed(field, err)
	}
	return rbacCIDR{prefix: pf}, nil
}

// cidr translates a CidrRange; a prefix length beyond the address's bits
// is an error, as Envoy makes it.
func cidr(c *corev3.CidrRange) (netip.Prefix, error) {
	a, err := netip.ParseAddr(c.GetAddressPrefix())
	if err != nil {
		return netip.Prefix{}, ferr("address_prefix", "%v", err)
	}
	a = a.Unmap()
	bits := int(c.GetPrefixLen().GetValue())
	if c.GetPrefixLen() == nil {
		bits = a.BitLen()
	}
	if bits > a.BitLen() {
		return netip.Prefix{}, ferr("prefix_len", "%d is more than the %d bits of %s", bits, a.BitLen(), a)
	}
	return a.Prefix(bits)
}
