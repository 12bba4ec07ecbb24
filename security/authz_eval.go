package security

import (
	"errors"
	"net/http"
	"net/netip"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/internal/jwt"
	"github.com/weftmesh/weft/internal/rbac"
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

	// auth are the tokens a RequestAuthenticator verified for the
	// request: what requestPrincipals and request.auth.* match.
	auth *jwt.Result
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
	in := rbac.Input{Method: r.Method, Path: path, Host: r.Host, Header: r.Headers, RemoteAddr: r.SourceIP, Metadata: r.auth.Metadata()}
	if i := strings.IndexByte(r.Path, '?'); i >= 0 {
		in.RawQuery, _, _ = strings.Cut(r.Path[i+1:], "#")
	}
	if r.Port > 0 && r.Port <= 65535 {
		in.LocalPort = uint16(r.Port)
	}
	if !r.SourceID.IsZero() {
		in.PeerID = r.SourceID.String()
	}
	d := p.engine.Evaluate(&in)
	out := Decision{Allow: d.Allow, Audit: d.Audit, AuditPolicy: d.AuditPolicy}
	switch {
	case !d.Allow && d.Action == rbac.Deny:
		out.Policy, out.Reason = d.Policy, reasonDenied
	case !d.Allow:
		out.Reason = reasonNoAllow
	case d.Matched:
		out.Policy, out.Reason = d.Policy, reasonAllowed
	default:
		out.Reason = reasonNoPolicies
	}
	return out
}

// Len returns the number of policies in the set.
func (p *PolicySet) Len() int {
	if p == nil {
		return 0
	}
	return len(p.allow) + len(p.deny) + len(p.audit)
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
