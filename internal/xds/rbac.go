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

	"github.com/weftmesh/weft/internal/rbac"
)

// RBACAction is what a matching RBAC policy does.
type RBACAction = rbac.Action

// RBAC actions, as Envoy defines them.
const (
	// RBACAllow admits a request only when a policy matches it.
	RBACAllow = rbac.Allow
	// RBACDeny refuses a request when a policy matches it.
	RBACDeny = rbac.Deny
	// RBACLog admits every request; a match is only reported.
	RBACLog = rbac.Log
)

// RBAC is one envoy.filters.http.rbac filter of an inbound listener,
// translated into the model of internal/rbac, whose evaluator also serves
// the local AuthorizationPolicy file: the request is matched against named
// policies, each a set of permissions (what is asked) and principals (who
// asks); a policy matches when one of each matches. Policies are sorted by
// name so evaluation and reports are stable. Immutable once translated;
// safe for concurrent use.
type RBAC struct {
	// FilterName is the HTTP filter's name, for logs and denials.
	FilterName string
	rbac.Filter
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
	// Metadata is the dynamic metadata of the request: the payloads of
	// the tokens the jwt_authn filter verified.
	Metadata map[string]map[string]any
}

// Allowed evaluates the filter: for ALLOW, whether a policy matches; for
// DENY, whether none does; LOG allows everything. matched names the policy
// that decided ("" when none matched). in.Request's Path must be the
// normalized path the handler will see; a nil Request reads as a request
// with no method, path or headers.
func (r *RBAC) Allowed(in *RBACInput) (allowed bool, matched string) {
	x := rbac.Input{Host: in.Host, PeerCert: in.PeerCert, ServerName: in.ServerName, Metadata: in.Metadata}
	if q := in.Request; q != nil {
		x.Method, x.Path, x.RawQuery, x.Scheme, x.Header = q.Method, q.Path, q.RawQuery, q.Scheme, q.Header
	}
	if in.Local.IsValid() {
		x.LocalAddr, x.LocalPort = in.Local.Addr(), in.Local.Port()
	}
	if in.Remote.IsValid() {
		x.RemoteAddr = in.Remote.Addr()
	}
	return r.Evaluate(&x)
}

// translateRBACFilter translates an RBAC HTTP filter's config. A filter
// without rules enforces nothing (Envoy's meaning), and is returned as nil.
// Metadata matchers read what the chain's jwt_authn filter verified.
// What Weft cannot evaluate (CEL conditions, the matcher API) is an error rather than a guess: a policy evaluated wrongly is a
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
		pol := rbac.Policy{Name: n}
		for i, perm := range p.GetPermissions() {
			m, err := translatePermission(perm, 0)
			if err != nil {
				return nil, prefixed(fmt.Sprintf("%s.permissions[%d]", field, i), err)
			}
			pol.Permissions = append(pol.Permissions, m)
		}
		for i, prin := range p.GetPrincipals() {
			m, err := translatePrincipal(prin, 0)
			if err != nil {
				return nil, prefixed(fmt.Sprintf("%s.principals[%d]", field, i), err)
			}
			pol.Principals = append(pol.Principals, m)
		}
		out.Policies = append(out.Policies, pol)
	}
	return out, nil
}

// maxRBACDepth bounds the nesting of and/or/not rules, so a hostile or
// broken control plane cannot exhaust the stack.
const maxRBACDepth = 32

func translatePermission(p *rbacv3.Permission, depth int) (rbac.Matcher, error) {
	if depth > maxRBACDepth {
		return rbac.Matcher{}, fmt.Errorf("rules nested deeper than %d", maxRBACDepth)
	}
	set := func(field string, rs []*rbacv3.Permission) ([]rbac.Matcher, error) {
		var ms []rbac.Matcher
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
			return rbac.Matcher{}, ferr("any", "false")
		}
		return rbac.Any(), nil
	case *rbacv3.Permission_AndRules:
		ms, err := set("and_rules.rules", r.AndRules.GetRules())
		return rbac.And(ms...), err
	case *rbacv3.Permission_OrRules:
		ms, err := set("or_rules.rules", r.OrRules.GetRules())
		return rbac.Or(ms...), err
	case *rbacv3.Permission_NotRule:
		m, err := translatePermission(r.NotRule, depth+1)
		if err != nil {
			return rbac.Matcher{}, prefixed("not_rule", err)
		}
		return rbac.Not(m), nil
	case *rbacv3.Permission_Header:
		h, err := translateHeaderMatcher(r.Header)
		if err != nil {
			return rbac.Matcher{}, prefixed("header", err)
		}
		return rbac.Header(h), nil
	case *rbacv3.Permission_UrlPath:
		s, err := translateStringMatcher(r.UrlPath.GetPath())
		if err != nil {
			return rbac.Matcher{}, prefixed("url_path.path", err)
		}
		return rbac.URLPath(s), nil
	case *rbacv3.Permission_DestinationIp:
		pf, err := cidr(r.DestinationIp)
		if err != nil {
			return rbac.Matcher{}, prefixed("destination_ip", err)
		}
		return rbac.DestinationIP(pf), nil
	case *rbacv3.Permission_DestinationPort:
		return rbac.DestinationPort(r.DestinationPort), nil
	case *rbacv3.Permission_DestinationPortRange:
		lo, hi := r.DestinationPortRange.GetStart(), r.DestinationPortRange.GetEnd()
		if lo < 0 || hi < lo {
			return rbac.Matcher{}, ferr("destination_port_range", "bad range [%d, %d)", lo, hi)
		}
		return rbac.DestinationPorts(uint32(lo), uint32(hi)), nil
	case *rbacv3.Permission_RequestedServerName:
		s, err := translateStringMatcher(r.RequestedServerName)
		if err != nil {
			return rbac.Matcher{}, prefixed("requested_server_name", err)
		}
		return rbac.ServerName(s), nil
	case *rbacv3.Permission_Metadata:
		m, err := translateMetadataMatcher(r.Metadata)
		if err != nil {
			return rbac.Matcher{}, prefixed("metadata", err)
		}
		return m, nil
	case nil:
		return rbac.Matcher{}, ferr("rule", "not set")
	default:
		return rbac.Matcher{}, ferr("rule", "unsupported %T", r)
	}
}

func translatePrincipal(p *rbacv3.Principal, depth int) (rbac.Matcher, error) {
	if depth > maxRBACDepth {
		return rbac.Matcher{}, fmt.Errorf("rules nested deeper than %d", maxRBACDepth)
	}
	set := func(field string, ids []*rbacv3.Principal) ([]rbac.Matcher, error) {
		var ms []rbac.Matcher
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
			return rbac.Matcher{}, ferr("any", "false")
		}
		return rbac.Any(), nil
	case *rbacv3.Principal_AndIds:
		ms, err := set("and_ids.ids", id.AndIds.GetIds())
		return rbac.And(ms...), err
	case *rbacv3.Principal_OrIds:
		ms, err := set("or_ids.ids", id.OrIds.GetIds())
		return rbac.Or(ms...), err
	case *rbacv3.Principal_NotId:
		m, err := translatePrincipal(id.NotId, depth+1)
		if err != nil {
			return rbac.Matcher{}, prefixed("not_id", err)
		}
		return rbac.Not(m), nil
	case *rbacv3.Principal_Authenticated_:
		if id.Authenticated.GetPrincipalName() == nil {
			return rbac.Authenticated(), nil
		}
		s, err := translateStringMatcher(id.Authenticated.GetPrincipalName())
		if err != nil {
			return rbac.Matcher{}, prefixed("authenticated.principal_name", err)
		}
		return rbac.AuthenticatedAs(s), nil
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
			return rbac.Matcher{}, prefixed("header", err)
		}
		return rbac.Header(h), nil
	case *rbacv3.Principal_UrlPath:
		s, err := translateStringMatcher(id.UrlPath.GetPath())
		if err != nil {
			return rbac.Matcher{}, prefixed("url_path.path", err)
		}
		return rbac.URLPath(s), nil
	case *rbacv3.Principal_Metadata:
		m, err := translateMetadataMatcher(id.Metadata)
		if err != nil {
			return rbac.Matcher{}, prefixed("metadata", err)
		}
		return m, nil
	case nil:
		return rbac.Matcher{}, ferr("identifier", "not set")
	default:
		return rbac.Matcher{}, ferr("identifier", "unsupported %T", id)
	}
}

func remoteCIDR(field string, c *corev3.CidrRange) (rbac.Matcher, error) {
	pf, err := cidr(c)
	if err != nil {
		return rbac.Matcher{}, prefixed(field, err)
	}
	return rbac.RemoteIP(pf), nil
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
