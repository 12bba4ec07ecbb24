package xds

import (
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"

	"google.golang.org/grpc/metadata"

	"github.com/weftmesh/weft/internal/rbac"
)

// Request is what route matching reads from a request. Match only reads
// it and never retains it; building one from an *http.Request copies
// strings and the header map reference only, so matching does not
// allocate. The caller must not modify Header during Match.
type Request struct {
	Method string
	// Path is the request path as sent, without the query.
	Path     string
	RawQuery string
	Header   http.Header
	// Scheme is "http" or "https"; it answers a ":scheme" header matcher.
	Scheme string
	// FractionSample is a number in [0, 1_000_000) drawn per request by
	// the caller; a route with a runtime fraction matches when it is below
	// the route's share. Taking it as input keeps matching deterministic.
	FractionSample uint32
}

// RequestFromHTTP returns the matching inputs of r, with its own
// FractionSample drawn, so that no caller can forget one and let every
// request take a runtime_fraction route.
func RequestFromHTTP(r *http.Request) Request {
	p := r.URL.RawPath
	if p == "" {
		p = r.URL.Path
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return Request{Method: r.Method, Path: p, RawQuery: r.URL.RawQuery, Header: r.Header, Scheme: scheme,
		FractionSample: rand.Uint32N(1_000_000)}
}

// RequestFromGRPC returns the matching inputs of a gRPC call, on the
// client (outgoing metadata) or the server (incoming), and the call's
// authority when the metadata carry one. The method is POST and the full
// method path ("/pkg.Service/Method") is :path, exactly as grpc-go
// dispatches it; the metadata are the headers, without pseudo-headers and
// without binary ("-bin") ones, whose values are not text a matcher can
// judge and which grpc-go's matchers never see either (gRFC A28);
// content-type is application/grpc when the metadata lack it (a client's
// outgoing metadata do). A FractionSample is drawn, as by RequestFromHTTP.
//
// The header may be shared between calls (see grpcNoMetadata), so it is
// read only, as Match treats it.
func RequestFromGRPC(fullMethod string, md metadata.MD, isTLS bool) (req Request, authority string) {
	scheme := "http"
	if isTLS {
		scheme = "https"
	}
	if len(md) == 0 {
		return Request{Method: http.MethodPost, Path: fullMethod, Header: grpcNoMetadata, Scheme: scheme, FractionSample: rand.Uint32N(1_000_000)}, ""
	}
	h := make(http.Header, len(md)+1)
	for k, vs := range md {
		switch {
		case k == ":authority":
			if len(vs) > 0 {
				authority = vs[0]
			}
			continue
		case strings.HasPrefix(k, ":"), strings.HasSuffix(k, "-bin"):
			continue
		}
		h[http.CanonicalHeaderKey(k)] = vs
	}
	if _, ok := h["Content-Type"]; !ok {
		h["Content-Type"] = grpcContentType
	}
	return Request{Method: http.MethodPost, Path: fullMethod, Header: h, Scheme: scheme, FractionSample: rand.Uint32N(1_000_000)}, authority
}

// grpcContentType is the content-type of a call whose metadata lack one,
// and grpcNoMetadata the whole header of a call with no metadata (most
// clients' outgoing calls): built once, so matching such a call copies
// nothing. Matching only reads them.
var (
	grpcContentType = []string{"application/grpc"}
	grpcNoMetadata  = http.Header{"Content-Type": grpcContentType}
)

// Match returns the first route of the virtual host that best matches host
// (see MatchVirtualHost) whose criteria r meets. It does not allocate
// (except to join a header sent several times) and is safe to call
// concurrently.
func (rc *RouteConfig) Match(host string, r *Request) (*Route, bool) {
	vh := rc.MatchVirtualHost(host)
	if vh == nil {
		return nil, false
	}
	for _, rt := range vh.Routes {
		if rt.Match.matches(host, r) {
			return rt, true
		}
	}
	return nil, false
}

type domainKind uint8

const (
	domainExact  domainKind = iota
	domainSuffix            // "*.example.com": matches any host ending in ".example.com"
	domainPrefix            // "example.*"
	domainAny               // "*"
)

type domainMatcher struct {
	kind domainKind
	// s is the domain without its wildcard, e.g. ".example.com".
	s string
}

func compileDomain(d string) domainMatcher {
	switch {
	case d == "*":
		return domainMatcher{kind: domainAny}
	case strings.HasPrefix(d, "*"):
		return domainMatcher{kind: domainSuffix, s: d[1:]}
	case strings.HasSuffix(d, "*"):
		return domainMatcher{kind: domainPrefix, s: d[:len(d)-1]}
	}
	return domainMatcher{kind: domainExact, s: d}
}

// match reports whether host matches and how specific the match is; a
// wildcard needs at least one character in its place, as in Envoy.
func (d domainMatcher) match(host string) bool {
	switch d.kind {
	case domainExact:
		return strings.EqualFold(host, d.s)
	case domainSuffix:
		return len(host) > len(d.s) && strings.EqualFold(host[len(host)-len(d.s):], d.s)
	case domainPrefix:
		return len(host) > len(d.s) && strings.EqualFold(host[:len(d.s)], d.s)
	}
	return true
}

// MatchVirtualHost returns the virtual host whose domains best match host,
// compared case-insensitively and including any port as written. As in
// Envoy and grpc-go, an exact domain beats a suffix wildcard ("*.b.com"),
// which beats a prefix wildcard ("b.*"), which beats "*"; among wildcards
// of one kind the longest wins, and among equals the first.
func (rc *RouteConfig) MatchVirtualHost(host string) *VirtualHost {
	var (
		best     *VirtualHost
		bestKind = domainAny + 1
		bestLen  = -1
	)
	for _, vh := range rc.VirtualHosts {
		for _, d := range vh.domains {
			if d.kind > bestKind || (d.kind == bestKind && len(d.s) <= bestLen) {
				continue
			}
			if d.match(host) {
				best, bestKind, bestLen = vh, d.kind, len(d.s)
			}
		}
	}
	return best
}

func (m *RouteMatch) matches(host string, r *Request) bool {
	return m.mismatch(host, r).Kind == Matched
}

// mismatch returns the first of m's conditions r fails, in the order
// Envoy checks them (path, headers, query parameters, runtime fraction),
// or Matched. It is the one implementation of route matching: Match takes
// the first route it passes, Explain says why each earlier one failed.
// It returns a small value and does not allocate.
func (m *RouteMatch) mismatch(host string, r *Request) Mismatch {
	switch m.Kind {
	case PathPrefix:
		if len(r.Path) < len(m.Path) {
			return Mismatch{Kind: MismatchPath}
		}
		if m.CaseSensitive {
			if r.Path[:len(m.Path)] != m.Path {
				return Mismatch{Kind: MismatchPath}
			}
		} else if !strings.EqualFold(r.Path[:len(m.Path)], m.Path) {
			return Mismatch{Kind: MismatchPath}
		}
	case PathExact:
		if m.CaseSensitive {
			if r.Path != m.Path {
				return Mismatch{Kind: MismatchPath}
			}
		} else if !strings.EqualFold(r.Path, m.Path) {
			return Mismatch{Kind: MismatchPath}
		}
	case PathRegex:
		if !m.regex.MatchString(r.Path) {
			return Mismatch{Kind: MismatchPath}
		}
	}
	if len(m.Headers) > 0 {
		in := headerInput(host, r)
		for i := range m.Headers {
			if !m.Headers[i].Match(&in) {
				return Mismatch{Kind: MismatchHeader, Index: i}
			}
		}
	}
	for i := range m.QueryParams {
		if !m.QueryParams[i].matches(r.RawQuery) {
			return Mismatch{Kind: MismatchQuery, Index: i}
		}
	}
	if m.HasFraction && r.FractionSample >= m.FractionPerMillion {
		return Mismatch{Kind: MismatchFraction}
	}
	return Mismatch{}
}

// headerInput is what a header matcher reads of r sent to host.
func headerInput(host string, r *Request) rbac.Input {
	return rbac.Input{Method: r.Method, Path: r.Path, RawQuery: r.RawQuery, Scheme: r.Scheme, Host: host, Header: r.Header}
}

// matches scans the raw query for the parameter without building a
// url.Values; only a percent-encoded value is decoded (and allocates).
func (q *QueryParamMatcher) matches(rawQuery string) bool {
	for rest := rawQuery; rest != ""; {
		var pair string
		pair, rest, _ = strings.Cut(rest, "&")
		k, v, _ := strings.Cut(pair, "=")
		if strings.ContainsAny(k, "%+") {
			dk, err := url.QueryUnescape(k)
			if err != nil {
				continue
			}
			k = dk
		}
		if k != q.Name {
			continue
		}
		if q.Kind == MatchPresent {
			return true
		}
		if strings.ContainsAny(v, "%+") {
			dv, err := url.QueryUnescape(v)
			if err != nil {
				return false
			}
			v = dv
		}
		return rbac.MatchString(q.Kind, v, q.Value, q.IgnoreCase, q.regex, 0, 0)
	}
	return false
}
