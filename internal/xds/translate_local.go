package xds

import (
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// defaultMaxDirectResponseBody is Envoy's limit on a direct response body
// when the RouteConfiguration sets max_direct_response_body_size_bytes
// to nothing.
const defaultMaxDirectResponseBody = 4096

// redirectCodes maps RedirectAction.response_code to the HTTP status.
var redirectCodes = map[routev3.RedirectAction_RedirectResponseCode]int{
	routev3.RedirectAction_MOVED_PERMANENTLY:  301,
	routev3.RedirectAction_FOUND:              302,
	routev3.RedirectAction_SEE_OTHER:          303,
	routev3.RedirectAction_TEMPORARY_REDIRECT: 307,
	routev3.RedirectAction_PERMANENT_REDIRECT: 308,
}

// translateLocalAction translates the actions answered without an
// upstream: redirect and direct_response. ok is false for other actions.
func translateLocalAction(r *routev3.Route, out *RouteAction) (ok bool, err error) {
	switch a := r.GetAction().(type) {
	case *routev3.Route_Redirect:
		rd, err := translateRedirect(a.Redirect)
		if err != nil {
			return true, prefixed("redirect", err)
		}
		out.Kind, out.Redirect = ActionRedirect, rd
	case *routev3.Route_DirectResponse:
		dr, err := translateDirectResponse(a.DirectResponse)
		if err != nil {
			return true, prefixed("direct_response", err)
		}
		out.Kind, out.DirectResponse = ActionDirectResponse, dr
	default:
		return false, nil
	}
	resp, err := headerMutation(r.GetResponseHeadersToAdd(), r.GetResponseHeadersToRemove(), "response_")
	if err != nil {
		return true, err
	}
	out.ResponseHeadersToAdd, out.ResponseHeadersToRemove = resp.Add, resp.Remove
	return true, nil
}

func translateRedirect(a *routev3.RedirectAction) (*Redirect, error) {
	out := &Redirect{Host: a.GetHostRedirect(), Port: a.GetPortRedirect(), StripQuery: a.GetStripQuery()}
	switch s := a.GetSchemeRewriteSpecifier().(type) {
	case *routev3.RedirectAction_HttpsRedirect:
		if s.HttpsRedirect {
			out.Scheme = "https"
		}
	case *routev3.RedirectAction_SchemeRedirect:
		out.Scheme = strings.ToLower(s.SchemeRedirect)
		if strings.ContainsAny(out.Scheme, ":/?#") {
			return nil, ferr("scheme_redirect", "invalid scheme %q", s.SchemeRedirect)
		}
	}
	if out.Port > 65535 {
		return nil, ferr("port_redirect", "%d is not a port", out.Port)
	}
	if strings.ContainsAny(out.Host, "/?#") {
		return nil, ferr("host_redirect", "invalid host %q", out.Host)
	}
	switch p := a.GetPathRewriteSpecifier().(type) {
	case *routev3.RedirectAction_PathRedirect:
		out.Path, out.HasPath = p.PathRedirect, true
		if !strings.HasPrefix(out.Path, "/") { // as Envoy's Utility::newUri
			out.Path = "/" + out.Path
		}
	case *routev3.RedirectAction_PrefixRewrite:
		out.PrefixRewrite = p.PrefixRewrite
	case *routev3.RedirectAction_RegexRewrite:
		rw, err := regexRewrite(p.RegexRewrite, "regex_rewrite")
		if err != nil {
			return nil, err
		}
		out.RegexRewrite = rw
	}
	code, ok := redirectCodes[a.GetResponseCode()]
	if !ok {
		return nil, ferr("response_code", "unknown %v", a.GetResponseCode())
	}
	out.Code = code
	return out, nil
}

func translateDirectResponse(a *routev3.DirectResponseAction) (*DirectResponse, error) {
	st := a.GetStatus()
	if st < 200 || st > 599 {
		return nil, ferr("status", "%d is not in [200, 600)", st)
	}
	out := &DirectResponse{Status: int(st)}
	if b := a.GetBody(); b != nil {
		switch s := b.GetSpecifier().(type) {
		case *corev3.DataSource_InlineString:
			out.Body = []byte(s.InlineString)
		case *corev3.DataSource_InlineBytes:
			out.Body = s.InlineBytes
		case *corev3.DataSource_Filename:
			return nil, ferr("body.filename", "not applied: a proxyless client reads no files named by the control plane; send inline_string or inline_bytes")
		case *corev3.DataSource_EnvironmentVariable:
			return nil, ferr("body.environment_variable", "not applied: send inline_string or inline_bytes")
		default:
			return nil, ferr("body.specifier", "unsupported %T", s)
		}
	}
	return out, nil
}

// maxDirectResponseBody is the route configuration's
// max_direct_response_body_size_bytes, 4 KiB when unset, as in Envoy.
func maxDirectResponseBody(rc *routev3.RouteConfiguration) int {
	if m := rc.GetMaxDirectResponseBodySizeBytes(); m != nil {
		return int(m.GetValue())
	}
	return defaultMaxDirectResponseBody
}
