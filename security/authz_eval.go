package security

import (
	"errors"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Request is what an authorization decision looks at. The HTTP middleware
// and gRPC interceptors fill it in; other callers may build their own. It is
// a plain value: Evaluate only reads it, so one Request may be evaluated by
// several goroutines as long as none modifies it.
type Request struct {
	// Method is the HTTP method; gRPC calls use "POST".
	Method string
	// Path is the request path as sent (escaped, optionally with a query,
	// which is ignored), or a gRPC full method "/pkg.Service/Method". It is
	// normalized with [NormalizePath] before matching; a path that cannot
	// be normalized is denied.
	Path string
	// Host is the HTTP Host (gRPC :authority), matched case-insensitively
	// with and without its port.
	Host string
	// Headers are the request headers, keyed canonically as in net/http.
	Headers http.Header
	// Port is the destination (local) port the request arrived on; 0 when
	// unknown, which no ports value matches.
	Port int
	// SourceID is the caller's verified SPIFFE ID; the zero ID for a
	// plaintext caller.
	SourceID spiffeid.ID
	// SourceIP is the caller's address; the zero Addr when unknown.
	SourceIP netip.Addr
}

// Decision is the outcome of evaluating a request; a plain comparable value.
type Decision struct {
	// Allow reports whether the request may proceed.
	Allow bool
	// Policy names the policy that decided ("namespace/name", or "#N" for
	// the unnamed N-th document): the matching DENY or ALLOW policy. It is
	// empty when no policy matched.
	Policy string
	// Reason is a short fixed phrase for logs; never show it to callers.
	Reason string
	// Audit reports whether an AUDIT policy matched; AuditPolicy names the
	// first that did.
	Audit       bool
	AuditPolicy string
}

// Decision reasons.
const (
	reasonNoPolicies  = "no ALLOW policies"
	reasonAllowed     = "matched ALLOW policy"
	reasonDenied      = "matched DENY policy"
	reasonNoAllow     = "no ALLOW policy matched"
	reasonInvalidPath = "path cannot be normalized"
)

// Evaluate decides r. A nil PolicySet allows every request.
func (p *PolicySet) Evaluate(r *Request) Decision {
	if p == nil {
		return Decision{Allow: true, Reason: reasonNoPolicies}
	}
	path, err := NormalizePath(r.Path)
	if err != nil {
		return Decision{Reason: reasonInvalidPath}
	}
	in := evalInput{r: r, path: path}
	in.principal, in.namespace = principalAndNamespace(r.SourceID)

	var d Decision
	for _, pol := range p.audit {
		if pol.matches(&in) {
			d.Audit, d.AuditPolicy = true, pol.name
			break
		}
	}
	for _, pol := range p.deny {
		if pol.matches(&in) {
			d.Policy, d.Reason = pol.name, reasonDenied
			return d
		}
	}
	if len(p.allow) == 0 {
		d.Allow, d.Reason = true, reasonNoPolicies
		return d
	}
	for _, pol := range p.allow {
		if pol.matches(&in) {
			d.Allow, d.Policy, d.Reason = true, pol.name, reasonAllowed
			return d
		}
	}
	d.Reason = reasonNoAllow
	return d
}

// Len returns the number of policies in the set.
func (p *PolicySet) Len() int {
	if p == nil {
		return 0
	}
	return len(p.allow) + len(p.deny) + len(p.audit)
}

// evalInput is a request with the derived values computed once.
type evalInput struct {
	r         *Request
	path      string
	principal string // "" when plaintext
	namespace string // "" when unknown
}

// principalAndNamespace returns Istio's principal for id (the ID without
// "spiffe://") and the namespace from a "/ns/<ns>/sa/<sa>" path.
func principalAndNamespace(id spiffeid.ID) (string, string) {
	if id.IsZero() {
		return "", ""
	}
	principal := strings.TrimPrefix(id.String(), "spiffe://")
	rest, ok := strings.CutPrefix(id.Path(), "/ns/")
	if !ok {
		return principal, ""
	}
	ns, _, _ := strings.Cut(rest, "/")
	return principal, ns
}

func (p *policy) matches(in *evalInput) bool {
	for _, r := range p.rules {
		if r.matches(in) {
			return true
		}
	}
	return false
}

func (r *rule) matches(in *evalInput) bool {
	if len(r.from) > 0 && !slices.ContainsFunc(r.from, func(s *sourceMatch) bool { return s.matches(in) }) {
		return false
	}
	if len(r.to) > 0 && !slices.ContainsFunc(r.to, func(o *operationMatch) bool { return o.matches(in) }) {
		return false
	}
	for _, c := range r.when {
		if !c.matches(in) {
			return false
		}
	}
	return true
}

// present matches a value that may be absent: positive lists never match an
// absent value; negative lists always do (it is not one of them).
func anyMatch(ms []strMatch, v string, present bool) bool {
	if !present {
		return false
	}
	for _, m := range ms {
		if m.match(v) {
			return true
		}
	}
	return false
}

func (s *sourceMatch) matches(in *evalInput) bool {
	hasID := in.principal != ""
	hasNS := in.namespace != ""
	if len(s.principals) > 0 && !anyMatch(s.principals, in.principal, hasID) {
		return false
	}
	if len(s.notPrincipals) > 0 && anyMatch(s.notPrincipals, in.principal, hasID) {
		return false
	}
	if len(s.namespaces) > 0 && !anyMatch(s.namespaces, in.namespace, hasNS) {
		return false
	}
	if len(s.notNamespaces) > 0 && anyMatch(s.notNamespaces, in.namespace, hasNS) {
		return false
	}
	if len(s.ipBlocks) > 0 && !containsIP(s.ipBlocks, in.r.SourceIP) {
		return false
	}
	if len(s.notIPBlocks) > 0 && containsIP(s.notIPBlocks, in.r.SourceIP) {
		return false
	}
	return true
}

func containsIP(blocks []netip.Prefix, ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	ip = ip.Unmap()
	for _, b := range blocks {
		if b.Contains(ip) {
			return true
		}
	}
	return false
}

func containsPort(ports []uint16, port int) bool {
	if port <= 0 || port > 65535 {
		return false
	}
	return slices.Contains(ports, uint16(port))
}

func (o *operationMatch) matches(in *evalInput) bool {
	r := in.r
	if len(o.hosts) > 0 && !hostMatch(o.hosts, r.Host) {
		return false
	}
	if len(o.notHosts) > 0 && hostMatch(o.notHosts, r.Host) {
		return false
	}
	if len(o.methods) > 0 && !anyMatch(o.methods, r.Method, true) {
		return false
	}
	if len(o.notMethods) > 0 && anyMatch(o.notMethods, r.Method, true) {
		return false
	}
	if len(o.paths) > 0 && !anyMatch(o.paths, in.path, true) {
		return false
	}
	if len(o.notPaths) > 0 && anyMatch(o.notPaths, in.path, true) {
		return false
	}
	if len(o.ports) > 0 && !containsPort(o.ports, r.Port) {
		return false
	}
	if len(o.notPorts) > 0 && containsPort(o.notPorts, r.Port) {
		return false
	}
	return true
}

// hostMatch matches host case-insensitively, with and without its port.
func hostMatch(ms []strMatch, host string) bool {
	if host == "" {
		return false
	}
	bare := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		bare = h
	}
	for _, m := range ms {
		if m.matchFold(host) || (bare != host && m.matchFold(bare)) {
			return true
		}
	}
	return false
}

func (c *condition) matches(in *evalInput) bool {
	switch c.kind {
	case condHeader:
		vals := in.r.Headers[c.header]
		if len(c.values) > 0 && !slices.ContainsFunc(vals, func(v string) bool { return anyMatch(c.values, v, true) }) {
			return false
		}
		if len(c.notValues) > 0 && slices.ContainsFunc(vals, func(v string) bool { return anyMatch(c.notValues, v, true) }) {
			return false
		}
		return true
	case condSourceIP:
		if len(c.ips) > 0 && !containsIP(c.ips, in.r.SourceIP) {
			return false
		}
		return len(c.notIPs) == 0 || !containsIP(c.notIPs, in.r.SourceIP)
	case condSourceNamespace:
		ok := in.namespace != ""
		if len(c.values) > 0 && !anyMatch(c.values, in.namespace, ok) {
			return false
		}
		return len(c.notValues) == 0 || !anyMatch(c.notValues, in.namespace, ok)
	case condSourcePrincipal:
		ok := in.principal != ""
		if len(c.values) > 0 && !anyMatch(c.values, in.principal, ok) {
			return false
		}
		return len(c.notValues) == 0 || !anyMatch(c.notValues, in.principal, ok)
	case condDestinationPort:
		if len(c.ports) > 0 && !containsPort(c.ports, in.r.Port) {
			return false
		}
		return len(c.notPorts) == 0 || !containsPort(c.notPorts, in.r.Port)
	}
	return false
}

// maxPathLen bounds the paths NormalizePath and NormalizeRequest accept.
const maxPathLen = 64 << 10

// NormalizePath returns the canonical form of a request path that
// authorization rules are matched against, so that one resource cannot be
// reached under spellings a rule does not anticipate. It drops any query or
// fragment, decodes every percent-escape once, merges repeated slashes and
// resolves "." and ".." segments (".." never climbs above the root). A
// trailing slash is kept; an empty path is "/".
//
// It fails, and callers must refuse the request, on what cannot be
// normalized without guessing what the application behind it will make of
// it: a path that does not start with "/", an encoded slash or backslash
// (%2F, %5C in any case), a raw backslash, a NUL byte (raw or %00), a
// malformed escape, an escape still present after one decoding (double
// encoding such as %252e), and a path longer than 64 KiB. The result is a
// decoded path, not a request target: a "?" or "#" in it came from %3F or
// %23 and is part of the path.
//
// [NormalizeRequest] applies the same rule to an HTTP request and hands the
// handler the result, so that what authorization judges is what the handler
// sees: NormalizePath of the normalized request's escaped path is its
// r.URL.Path.
//
// "//admin", "/a/../admin", "/a/%2e%2e/admin" and "/%61dmin" all normalize
// to "/admin"; "/a/..%2Fadmin" and "/a\..\admin" fail.
func NormalizePath(p string) (string, error) {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	if p == "" {
		return "/", nil
	}
	return normalizeEscapedPath(p)
}

// normalizeEscapedPath is the one normalization behind NormalizePath and
// NormalizeRequest; p is an escaped path without a query.
func normalizeEscapedPath(p string) (string, error) {
	switch {
	case len(p) > maxPathLen:
		return "", errors.New("security: path too long")
	case p == "" || p[0] != '/':
		return "", errors.New("security: path does not start with /")
	}
	if isNormalPath(p) {
		return p, nil
	}
	decoded, err := percentDecode(p)
	if err != nil {
		return "", err
	}
	return cleanPath(decoded), nil
}

// isNormalPath reports whether p (starting with "/") is already in the
// form NormalizePath produces, without allocating.
func isNormalPath(p string) bool {
	if p[0] != '/' {
		return false
	}
	segStart := 1
	for i := 1; i <= len(p); i++ {
		if i < len(p) {
			switch p[i] {
			case '%', '\\', 0:
				return false
			case '/':
			default:
				continue
			}
		}
		seg := p[segStart:i]
		if i < len(p) && seg == "" {
			return false // "//"
		}
		if seg == "." || seg == ".." {
			return false
		}
		segStart = i + 1
	}
	return true
}

// percentDecode decodes every escape of p once. It refuses what would make
// the decoded path ambiguous: an encoded slash or backslash (a segment
// boundary to some servers and not to others), a raw backslash (a
// separator on Windows and to some proxies), NUL, a malformed escape, and
// an escape left after decoding (decoded again by someone downstream).
func percentDecode(p string) (string, error) {
	if !strings.Contains(p, "%") {
		if strings.IndexByte(p, 0) >= 0 {
			return "", errors.New("security: NUL in path")
		}
		if strings.IndexByte(p, '\\') >= 0 {
			return "", errors.New("security: backslash in path")
		}
		return p, nil
	}
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch c {
		case '%':
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return "", errors.New("security: malformed percent-escape in path")
			}
			c = unhex(p[i+1])<<4 | unhex(p[i+2])
			i += 2
			if c == '/' || c == '\\' {
				return "", errors.New("security: encoded slash or backslash in path")
			}
		case '\\':
			return "", errors.New("security: backslash in path")
		}
		if c == 0 {
			return "", errors.New("security: NUL in path")
		}
		b.WriteByte(c)
	}
	out := b.String()
	for i := 0; i+2 < len(out); i++ {
		if out[i] == '%' && isHex(out[i+1]) && isHex(out[i+2]) {
			return "", errors.New("security: doubly percent-encoded path")
		}
	}
	return out, nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// cleanPath merges slashes and resolves dot segments of p, which starts
// with "/", keeping a trailing slash (or one implied by a final "." or
// "..").
func cleanPath(p string) string {
	parts := strings.Split(p[1:], "/")
	last := parts[len(parts)-1]
	segs := parts[:0] // filtered in place: len(segs) never exceeds the index read
	for _, seg := range parts {
		switch seg {
		case "", ".":
		case "..":
			if len(segs) > 0 {
				segs = segs[:len(segs)-1]
			}
		default:
			segs = append(segs, seg)
		}
	}
	if len(segs) == 0 {
		return "/"
	}
	out := "/" + strings.Join(segs, "/")
	switch last {
	case "", ".", "..":
		out += "/"
	}
	return out
}
