package rbac

import (
	"fmt"
	"net"
	"net/netip"
	"net/textproto"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// StringMatchKind is how a string is compared.
type StringMatchKind uint8

// String match kinds (envoy.type.matcher.v3.StringMatcher, plus the
// presence and range forms of a route's HeaderMatcher).
const (
	MatchExact StringMatchKind = iota
	MatchPrefix
	MatchSuffix
	MatchContains
	MatchRegex
	MatchPresent
	MatchRange
)

// StringMatcher is an envoy.type.matcher.v3.StringMatcher.
type StringMatcher struct {
	Kind       StringMatchKind
	Value      string
	IgnoreCase bool
	// Regex is the compiled pattern of MatchRegex, anchored at both ends
	// ([CompileRegex]).
	Regex *regexp.Regexp
}

// Match reports whether v matches the string matcher.
func (s *StringMatcher) Match(v string) bool {
	return MatchString(s.Kind, v, s.Value, s.IgnoreCase, s.Regex, 0, 0)
}

// CompileRegex compiles an RE2 pattern as Envoy's safe_regex uses it: the
// whole value must match.
func CompileRegex(expr string) (*regexp.Regexp, error) {
	re, err := regexp.Compile("^(?:" + expr + ")$")
	if err != nil {
		return nil, fmt.Errorf("invalid RE2 regex %q: %w", expr, err)
	}
	return re, nil
}

// MatchString compares v by kind with want (case-insensitively when
// ignoreCase, except for regexes), re (MatchRegex) or the integer range
// [lo, hi) (MatchRange); MatchPresent matches anything. It is the one
// string comparison of the module's route and authorization matching, and
// does not allocate.
func MatchString(kind StringMatchKind, v, want string, ignoreCase bool, re *regexp.Regexp, lo, hi int64) bool {
	switch kind {
	case MatchExact:
		if ignoreCase {
			return strings.EqualFold(v, want)
		}
		return v == want
	case MatchPrefix:
		if len(v) < len(want) {
			return false
		}
		if ignoreCase {
			return strings.EqualFold(v[:len(want)], want)
		}
		return v[:len(want)] == want
	case MatchSuffix:
		if len(v) < len(want) {
			return false
		}
		if ignoreCase {
			return strings.EqualFold(v[len(v)-len(want):], want)
		}
		return v[len(v)-len(want):] == want
	case MatchContains:
		if ignoreCase {
			return containsFold(v, want)
		}
		return strings.Contains(v, want)
	case MatchRegex:
		return re.MatchString(v)
	case MatchRange:
		n, err := strconv.ParseInt(v, 10, 64)
		return err == nil && n >= lo && n < hi
	case MatchPresent:
		return true
	}
	return false
}

// containsFold is strings.Contains under Unicode case folding, without
// allocating lowered copies.
func containsFold(s, sub string) bool {
	if sub == "" {
		return true
	}
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

// HeaderMatcher matches one request header (a route.v3.HeaderMatcher), in
// routes and in RBAC alike. Several values of a header are joined with ","
// before matching, as Envoy and grpc-go do. Build a Matcher from it with
// [Header].
type HeaderMatcher struct {
	Name string
	// Kind, Value, IgnoreCase and Regex compare the value.
	Kind       StringMatchKind
	Value      string
	IgnoreCase bool
	Regex      *regexp.Regexp
	// Present is the wanted presence for MatchPresent.
	Present bool
	// RangeStart and RangeEnd bound MatchRange: start <= v < end.
	RangeStart, RangeEnd int64
	Invert               bool

	key    string // canonical MIME key when not a pseudo-header
	pseudo pseudoHeader
}

type pseudoHeader uint8

const (
	notPseudo pseudoHeader = iota
	pseudoMethod
	pseudoPath
	pseudoAuthority
	pseudoScheme
)

// value returns the header's value, with several values joined by ",".
// Joining allocates; it happens only for repeated headers.
func (h *HeaderMatcher) value(in *Input) (string, bool) {
	switch h.pseudo {
	case pseudoMethod:
		return in.Method, true
	case pseudoPath:
		if in.RawQuery != "" {
			return in.Path + "?" + in.RawQuery, true
		}
		return in.Path, true
	case pseudoAuthority:
		return in.Host, true
	case pseudoScheme:
		return in.Scheme, in.Scheme != ""
	}
	vs := in.Header[h.key]
	switch len(vs) {
	case 0:
		return "", false
	case 1:
		return vs[0], true
	}
	return strings.Join(vs, ","), true
}

// Compiled returns h ready to match: its Name resolved to a pseudo-header
// or a canonical header key. A HeaderMatcher must be compiled before
// [HeaderMatcher.Match]; [Header] does it.
func (h HeaderMatcher) Compiled() HeaderMatcher {
	h.key, h.pseudo = "", notPseudo
	switch strings.ToLower(h.Name) {
	case ":method":
		h.pseudo = pseudoMethod
	case ":path":
		h.pseudo = pseudoPath
	case ":authority", "host":
		h.pseudo = pseudoAuthority
	case ":scheme":
		h.pseudo = pseudoScheme
	default:
		h.key = textproto.CanonicalMIMEHeaderKey(h.Name)
	}
	return h
}

// Match reports whether the request's header matches; route matching
// shares it with RBAC.
func (h *HeaderMatcher) Match(in *Input) bool {
	v, ok := h.value(in)
	var res bool
	if h.Kind == MatchPresent {
		res = ok == h.Present
	} else if !ok {
		// An absent header fails every matcher, inverted or not, as in
		// grpc-go and Envoy.
		return false
	} else {
		res = MatchString(h.Kind, v, h.Value, h.IgnoreCase, h.Regex, h.RangeStart, h.RangeEnd)
	}
	return res != h.Invert
}

type matcherKind uint8

const (
	kindAny matcherKind = iota
	kindNone
	kindAnd
	kindOr
	kindNot
	kindHeader
	kindPath
	kindHost
	kindDestinationIP
	kindDestinationPort
	kindServerName
	kindAuthenticated
	kindRemoteIP
	kindMetadata
)

// Matcher is one permission or principal of a policy (Envoy's Permission
// and Principal share it: each kind reads one part of the [Input]). The
// zero Matcher matches everything. Build one with the functions below.
type Matcher struct {
	kind   matcherKind
	subs   []Matcher      // and, or; not: subs[0]
	str    *StringMatcher // path, host, server name, principal name (nil: any)
	header *HeaderMatcher
	prefix netip.Prefix // destination or remote address
	lo, hi uint32       // destination port range [lo, hi)
	md     *metadataMatcher
}

// Any matches every request.
func Any() Matcher { return Matcher{kind: kindAny} }

// None matches no request.
func None() Matcher { return Matcher{kind: kindNone} }

// And matches when all ms match (and so when ms is empty).
func And(ms ...Matcher) Matcher {
	if len(ms) == 1 {
		return ms[0] // the same meaning, one step less to evaluate
	}
	return Matcher{kind: kindAnd, subs: ms}
}

// Or matches when one of ms matches (and so never when ms is empty).
func Or(ms ...Matcher) Matcher {
	if len(ms) == 1 {
		return ms[0]
	}
	return Matcher{kind: kindOr, subs: ms}
}

// Not matches when m does not.
func Not(m Matcher) Matcher { return Matcher{kind: kindNot, subs: []Matcher{m}} }

// Header matches a request header or one of the pseudo-headers ":method",
// ":path" (with the query), ":authority" (also "host") and ":scheme".
func Header(h HeaderMatcher) Matcher {
	h = h.Compiled()
	return Matcher{kind: kindHeader, header: &h}
}

// URLPath matches the path without its query (Envoy's url_path).
func URLPath(s StringMatcher) Matcher { return Matcher{kind: kindPath, str: &s} }

// Host matches the authority as sent or, when it has a port, the
// authority without it. Envoy has no such matcher; it serves the hosts of
// Weft's policy file, which have always matched either way, so a rule for
// "api.example.com" is not bypassed by "api.example.com:8080".
func Host(s StringMatcher) Matcher { return Matcher{kind: kindHost, str: &s} }

// DestinationIP matches the local address in p.
func DestinationIP(p netip.Prefix) Matcher {
	return Matcher{kind: kindDestinationIP, prefix: p}
}

// DestinationPorts matches a local port in [lo, hi).
func DestinationPorts(lo, hi uint32) Matcher {
	return Matcher{kind: kindDestinationPort, lo: lo, hi: hi}
}

// DestinationPort matches the local port p.
func DestinationPort(p uint32) Matcher { return DestinationPorts(p, p+1) }

// ServerName matches the TLS SNI (Envoy's requested_server_name).
func ServerName(s StringMatcher) Matcher { return Matcher{kind: kindServerName, str: &s} }

// Authenticated matches a caller with a verified identity.
func Authenticated() Matcher { return Matcher{kind: kindAuthenticated} }

// AuthenticatedAs matches a caller with a verified identity one of whose
// names matches s: the certificate's URI SANs, else its DNS SANs, else its
// subject, as Envoy and grpc-go look; or the SPIFFE ID of [Input.PeerID].
func AuthenticatedAs(s StringMatcher) Matcher {
	return Matcher{kind: kindAuthenticated, str: &s}
}

// RemoteIP matches the caller's address in p (Envoy's source_ip,
// direct_remote_ip and remote_ip alike: see [Input.RemoteAddr]).
func RemoteIP(p netip.Prefix) Matcher { return Matcher{kind: kindRemoteIP, prefix: p} }

func anyMatch(ms []Matcher, in *Input) bool {
	for i := range ms {
		if ms[i].match(in) {
			return true
		}
	}
	return false
}

// Match reports whether m matches in.
func (m *Matcher) Match(in *Input) bool { return m.match(in) }

func (m *Matcher) match(in *Input) bool {
	switch m.kind {
	case kindAny:
		return true
	case kindNone:
		return false
	case kindAnd:
		for i := range m.subs {
			if !m.subs[i].match(in) {
				return false
			}
		}
		return true
	case kindOr:
		return anyMatch(m.subs, in)
	case kindNot:
		return !m.subs[0].match(in)
	case kindHeader:
		return m.header.Match(in)
	case kindPath:
		return m.str.Match(in.Path)
	case kindHost:
		return matchHost(m.str, in.Host)
	case kindDestinationIP:
		return in.LocalAddr.IsValid() && m.prefix.Contains(in.LocalAddr.Unmap())
	case kindDestinationPort:
		p := uint32(in.LocalPort)
		return p != 0 && m.lo <= p && p < m.hi
	case kindServerName:
		return m.str.Match(in.ServerName)
	case kindAuthenticated:
		return matchPeer(m.str, in)
	case kindRemoteIP:
		return in.RemoteAddr.IsValid() && m.prefix.Contains(in.RemoteAddr.Unmap())
	case kindMetadata:
		return m.md.match(in)
	}
	return false
}

func matchHost(s *StringMatcher, host string) bool {
	if host == "" {
		return false
	}
	if s.Match(host) {
		return true
	}
	if strings.IndexByte(host, ':') < 0 {
		return false // no port; and SplitHostPort's error would allocate
	}
	bare, _, err := net.SplitHostPort(host)
	return err == nil && bare != host && s.Match(bare)
}

func matchPeer(name *StringMatcher, in *Input) bool {
	c := in.PeerCert
	if c == nil {
		return in.PeerID != "" && (name == nil || name.Match(in.PeerID))
	}
	if name == nil {
		return true
	}
	if len(c.URIs) > 0 {
		for _, u := range c.URIs {
			if name.Match(u.String()) {
				return true
			}
		}
		return false
	}
	if len(c.DNSNames) > 0 {
		return slices.ContainsFunc(c.DNSNames, name.Match)
	}
	return name.Match(c.Subject.String())
}
