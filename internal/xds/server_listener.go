package xds

import (
	"fmt"
	"net/netip"
	"slices"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// ServerListener is an inbound (server-side) Listener, named by the
// bootstrap's server_listener_resource_name_template: the filter chains
// that say, per connection, which route configuration and RBAC policies
// apply to the requests it carries. Immutable once delivered; safe for
// concurrent reads.
type ServerListener struct {
	// Address is the socket address the listener describes (may be
	// invalid when the control plane leaves it out).
	Address      netip.AddrPort
	FilterChains []*FilterChain
	// Default serves connections no filter chain matches; nil = refuse
	// them.
	Default *FilterChain
}

// FilterChain is one filter chain of an inbound listener, holding an
// HttpConnectionManager.
type FilterChain struct {
	Name  string
	Match FilterChainMatch
	// RouteConfigName is the RDS resource to watch; "" when RouteConfig
	// is inline.
	RouteConfigName string
	RouteConfig     *RouteConfig
	// RBAC are the chain's RBAC filters in order; a request must pass
	// each.
	RBAC []*RBAC
	// JWT is the chain's jwt_authn filter; nil when it has none.
	JWT *JWTAuthn
	// TLS is the chain's transport socket: nil serves plaintext, else the
	// connection must complete this TLS handshake.
	TLS *DownstreamTLS
}

// SourceType is FilterChainMatch.source_type.
type SourceType uint8

// Source types.
const (
	SourceAny SourceType = iota
	// SourceLocal: the caller's address is a local one (loopback, or
	// the same as the destination).
	SourceLocal
	SourceExternal
)

// FilterChainMatch is the subset of Envoy's FilterChainMatch Weft applies.
// Fields are matched most-specific-first in Envoy's order.
type FilterChainMatch struct {
	DestinationPort uint32 // 0 = any
	PrefixRanges    []netip.Prefix
	// TransportProtocol is "", "raw_buffer" (plaintext) or "tls".
	TransportProtocol string
	SourceType        SourceType
	SourcePrefixes    []netip.Prefix
	SourcePorts       []uint32
	// never is set for chains whose criteria Weft cannot evaluate
	// (server_names, application_protocols): such a chain never
	// matches, as in grpc-go.
	never bool
}

// ConnInfo is what filter chain selection reads about a connection.
type ConnInfo struct {
	Local, Remote netip.AddrPort
	TLS           bool
}

// Select returns the filter chain for a connection, Envoy's way: each
// criterion in turn keeps only the chains that match it most specifically,
// and a chain that does not set a criterion matches it least specifically.
// It returns the default chain when none matches, and nil when there is no
// default either.
func (l *ServerListener) Select(c ConnInfo) *FilterChain {
	// Keeping, criterion by criterion, the chains that score highest is
	// choosing the chain whose scores are lexicographically greatest; a
	// mismatch scores -1, so a winner with a mismatch means the most
	// specific chains failed a later criterion, and Envoy then falls back
	// to the default, not to a less specific chain. One pass, no
	// allocation: this runs on every inbound request.
	v := connView{c: c, local: c.Local.Addr().Unmap(), remote: c.Remote.Addr().Unmap()}
	v.isLocal = isLocal(v.local, v.remote)
	var best *FilterChain
	var bestScore [numCriteria]int
	for _, fc := range l.FilterChains {
		if fc.Match.never {
			continue
		}
		var s [numCriteria]int
		for i := range s {
			s[i] = v.score(i, &fc.Match)
		}
		if best == nil || lexGreater(s, bestScore) {
			best, bestScore = fc, s
		}
	}
	if best == nil || slices.Min(bestScore[:]) < 0 {
		return l.Default
	}
	return best
}

// numCriteria is the number of filter chain match criteria, in Envoy's
// order of precedence: destination port, destination prefix, transport
// protocol, source type, source prefix, source port.
const numCriteria = 6

// connView is a connection as filter chain criteria score it.
type connView struct {
	c             ConnInfo
	local, remote netip.Addr
	isLocal       bool
}

// score is how specifically m's criterion i matches the connection: -1
// for a mismatch, 0 when m does not set it, more for more specific.
func (v *connView) score(i int, m *FilterChainMatch) int {
	switch i {
	case 0:
		return portScore(m.DestinationPort != 0, m.DestinationPort, v.c.Local.Port())
	case 1:
		return prefixScore(m.PrefixRanges, v.local)
	case 2:
		switch m.TransportProtocol {
		case "":
			return 0
		case "tls":
			return boolScore(v.c.TLS)
		default: // raw_buffer
			return boolScore(!v.c.TLS)
		}
	case 3:
		switch m.SourceType {
		case SourceAny:
			return 0
		case SourceLocal:
			return boolScore(v.isLocal)
		default:
			return boolScore(!v.isLocal)
		}
	case 4:
		return prefixScore(m.SourcePrefixes, v.remote)
	default:
		if len(m.SourcePorts) == 0 {
			return 0
		}
		return boolScore(slices.Contains(m.SourcePorts, uint32(v.c.Remote.Port())))
	}
}

// lexGreater reports whether a is lexicographically greater than b; ties
// keep the earlier chain, as Envoy's listener order does.
func lexGreater(a, b [numCriteria]int) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] > b[i]
		}
	}
	return false
}

func boolScore(ok bool) int {
	if ok {
		return 1
	}
	return -1
}

func portScore(set bool, want uint32, got uint16) int {
	if !set {
		return 0
	}
	return boolScore(want == uint32(got))
}

// prefixScore is 0 when no ranges are set, -1 when a is in none of them,
// and 1 + the longest matching prefix length otherwise.
func prefixScore(ranges []netip.Prefix, a netip.Addr) int {
	if len(ranges) == 0 {
		return 0
	}
	best := -1
	for _, p := range ranges {
		if p.Contains(a) && p.Bits()+1 > best {
			best = p.Bits() + 1
		}
	}
	return best
}

func isLocal(local, remote netip.Addr) bool {
	return remote.IsLoopback() || remote == local
}

// translateServerListener translates a Listener with filter chains. The
// network filter of every chain must be the HttpConnectionManager; its
// HTTP filters may be RBAC and jwt_authn (applied), the router (last), and filters marked
// optional (skipped, and reported). Any other filter rejects the listener:
// an inbound filter Weft would skip could be a security control.
func translateServerListener(l *listenerv3.Listener, out *Listener) error {
	sl := &ServerListener{}
	if sa := l.GetAddress().GetSocketAddress(); sa != nil {
		if a, err := netip.ParseAddr(sa.GetAddress()); err == nil {
			sl.Address = netip.AddrPortFrom(a, uint16(sa.GetPortValue()))
		}
	}
	seen := map[string]int{}
	for i, fc := range l.GetFilterChains() {
		field := fmt.Sprintf("filter_chains[%d]", i)
		c, err := translateFilterChain(fc, out)
		if err != nil {
			return prefixed(field, err)
		}
		// Two chains with one match are ambiguous: Envoy rejects them.
		key := fmt.Sprint(fc.GetFilterChainMatch())
		if j, dup := seen[key]; dup {
			return ferr(field+".filter_chain_match", "same match as filter_chains[%d]", j)
		}
		seen[key] = i
		sl.FilterChains = append(sl.FilterChains, c)
	}
	if d := l.GetDefaultFilterChain(); d != nil {
		c, err := translateFilterChain(d, out)
		if err != nil {
			return prefixed("default_filter_chain", err)
		}
		sl.Default = c
	}
	if len(sl.FilterChains) == 0 && sl.Default == nil {
		return ferr("filter_chains", "empty, and no default_filter_chain")
	}
	out.Server = sl
	return nil
}

func translateFilterChain(fc *listenerv3.FilterChain, out *Listener) (*FilterChain, error) {
	c := &FilterChain{Name: fc.GetName()}
	if err := translateChainMatch(fc.GetFilterChainMatch(), &c.Match); err != nil {
		return nil, prefixed("filter_chain_match", err)
	}
	tlsMode, err := translateDownstreamTLS(fc.GetTransportSocket(), &out.Unapplied)
	if err != nil {
		return nil, err
	}
	c.TLS = tlsMode
	filters := fc.GetFilters()
	if len(filters) != 1 {
		return nil, ferr("filters", "%d network filters; want exactly one HttpConnectionManager", len(filters))
	}
	hcm := &hcmv3.HttpConnectionManager{}
	if err := filters[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
		return nil, ferr("filters[0].typed_config", "not an HttpConnectionManager: %v", err)
	}
	const hp = "filters[0].typed_config"
	name, rc, err := translateRouteSpecifier(hcm, hp)
	if err != nil {
		return nil, err
	}
	c.RouteConfigName, c.RouteConfig = name, rc
	hf := hcm.GetHttpFilters()
	if len(hf) == 0 || !hf[len(hf)-1].GetTypedConfig().MessageIs((*routerv3.Router)(nil)) {
		return nil, ferr(hp+".http_filters", "the router filter must be last")
	}
	for i, f := range hf[:len(hf)-1] {
		field := fmt.Sprintf("%s.http_filters[%d]", hp, i)
		tc := f.GetTypedConfig()
		switch {
		case tc.MessageIs((*rbacfilterv3.RBAC)(nil)):
			cfg := &rbacfilterv3.RBAC{}
			if err := tc.UnmarshalTo(cfg); err != nil {
				return nil, ferr(field+".typed_config", "%v", err)
			}
			r, err := translateRBACFilter(f.GetName(), cfg)
			if err != nil {
				return nil, prefixed(field+".typed_config", err)
			}
			if r != nil {
				c.RBAC = append(c.RBAC, r)
			}
		case tc.MessageIs((*jwtv3.JwtAuthentication)(nil)):
			if c.JWT != nil {
				return nil, ferr(field, "a second jwt_authn filter %q; one is supported", f.GetName())
			}
			cfg := &jwtv3.JwtAuthentication{}
			if err := tc.UnmarshalTo(cfg); err != nil {
				return nil, ferr(field+".typed_config", "%v", err)
			}
			a, err := translateJWTAuthn(f.GetName(), cfg, &out.Unapplied)
			if err != nil {
				return nil, prefixed(field+".typed_config", err)
			}
			a.RBACBefore = len(c.RBAC)
			c.JWT = a
		case tc.MessageIs((*routerv3.Router)(nil)):
			return nil, ferr(field, "router filter %q is not last", f.GetName())
		case f.GetIsOptional():
			out.Unapplied = append(out.Unapplied, fmt.Sprintf("filter_chains.http_filters[%s]", f.GetName()))
		default:
			return nil, ferr(field, "filter %q (%s) is not supported on a server and not optional", f.GetName(), tc.GetTypeUrl())
		}
	}
	return c, nil
}

func translateChainMatch(m *listenerv3.FilterChainMatch, out *FilterChainMatch) error {
	if m == nil {
		return nil
	}
	out.DestinationPort = m.GetDestinationPort().GetValue()
	for i, r := range m.GetPrefixRanges() {
		p, err := cidr(r)
		if err != nil {
			return prefixed(fmt.Sprintf("prefix_ranges[%d]", i), err)
		}
		out.PrefixRanges = append(out.PrefixRanges, p)
	}
	for i, r := range m.GetSourcePrefixRanges() {
		p, err := cidr(r)
		if err != nil {
			return prefixed(fmt.Sprintf("source_prefix_ranges[%d]", i), err)
		}
		out.SourcePrefixes = append(out.SourcePrefixes, p)
	}
	out.SourcePorts = m.GetSourcePorts()
	switch m.GetSourceType() {
	case listenerv3.FilterChainMatch_ANY:
	case listenerv3.FilterChainMatch_SAME_IP_OR_LOOPBACK:
		out.SourceType = SourceLocal
	case listenerv3.FilterChainMatch_EXTERNAL:
		out.SourceType = SourceExternal
	default:
		return ferr("source_type", "unknown %v", m.GetSourceType())
	}
	switch tp := m.GetTransportProtocol(); tp {
	case "", "raw_buffer", "tls":
		out.TransportProtocol = tp
	default:
		out.never = true
	}
	if len(m.GetServerNames()) > 0 || len(m.GetApplicationProtocols()) > 0 || len(m.GetDirectSourcePrefixRanges()) > 0 {
		out.never = true
	}
	return nil
}
