package route

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/weftmesh/weft/internal/localreply"
	"github.com/weftmesh/weft/internal/xds"
)

// Local is the response Envoy's router gives by itself for a redirect or
// direct-response route, with no upstream contacted; nil for a route of
// another kind. Its Request is req. The caller closes req's body.
//
// A redirect carries only a Location header, computed as Envoy computes
// it from the request: the request's scheme, host, port, path and query,
// with the redirect's replacements. When the scheme changes and the port
// is the old scheme's default (http and :80, https and :443), the port is
// dropped; host_redirect replaces the host and its port; port_redirect
// replaces the port. path_redirect replaces the path, and a query in it
// replaces the request's; otherwise prefix_rewrite replaces the matched
// prefix (the whole path for exact and regex matches) and regex_rewrite
// rewrites the path. strip_query drops the request's query.
//
// A direct response carries the route's status and body, with
// Content-Type text/plain when there is a body, as Envoy's local replies
// have; a HEAD request gets no body.
func Local(r *xds.Route, req *http.Request) *http.Response {
	hdr := http.Header{}
	switch a := &r.Action; a.Kind {
	case xds.ActionRedirect:
		hdr.Set("Location", RedirectLocation(r, req))
		return localreply.New(req, a.Redirect.Code, hdr, "")
	case xds.ActionDirectResponse:
		if len(a.DirectResponse.Body) > 0 {
			hdr.Set("Content-Type", "text/plain")
		}
		return localreply.New(req, a.DirectResponse.Status, hdr, string(a.DirectResponse.Body))
	}
	return nil
}

// RedirectLocation is the Location of a redirect route's answer to req
// (see Local).
func RedirectLocation(r *xds.Route, req *http.Request) string {
	rd := r.Action.Redirect
	reqScheme := req.URL.Scheme
	if reqScheme == "" {
		reqScheme = "http"
	}
	scheme := reqScheme
	if rd.Scheme != "" {
		scheme = rd.Scheme
	}
	port := ""
	if rd.Port != 0 {
		port = ":" + strconv.FormatUint(uint64(rd.Port), 10)
	}
	host := rd.Host
	if host == "" {
		host = req.Host
		if host == "" {
			host = req.URL.Host
		}
		host = requestHost(host, scheme, reqScheme, port != "")
	}

	path := req.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	query, hasQuery := req.URL.RawQuery, req.URL.RawQuery != "" || req.URL.ForceQuery
	if rd.StripQuery {
		query, hasQuery = "", false
	}
	switch {
	case rd.HasPath:
		path = rd.Path
		if i := strings.IndexByte(path, '?'); i >= 0 {
			// The redirect's own query wins and is never stripped.
			path, query, hasQuery = path[:i], path[i+1:], true
		}
	case rd.PrefixRewrite != "":
		if r.Match.Kind == xds.PathPrefix && len(r.Match.Path) <= len(path) {
			path = rd.PrefixRewrite + path[len(r.Match.Path):]
		} else {
			path = rd.PrefixRewrite
		}
	case rd.RegexRewrite != nil:
		path = rd.RegexRewrite.Pattern.ReplaceAllString(path, rd.RegexRewrite.Substitution)
	}
	loc := scheme + "://" + host + port + path
	if hasQuery {
		loc += "?" + query
	}
	return loc
}

// requestHost is the request's host (with its port) as Envoy keeps it in
// a redirect: the port goes when the redirect sets another, or when the
// scheme changes and the port is the old scheme's default.
func requestHost(host, scheme, reqScheme string, newPort bool) string {
	end := -1
	if strings.HasPrefix(host, "[") {
		if i := strings.LastIndex(host, "]:"); i >= 0 {
			end = i + 1
		}
	} else {
		end = strings.LastIndexByte(host, ':')
	}
	if end < 0 {
		return host
	}
	p := host[end:]
	drop := newPort
	if scheme != reqScheme {
		drop = drop || reqScheme == "https" && p == ":443" || reqScheme == "http" && p == ":80"
	}
	if drop {
		return host[:end]
	}
	return host
}
