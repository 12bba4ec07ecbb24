package xds

import (
	"errors"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// TestTranslateLocalActions holds redirect and direct_response routes to
// Envoy's route.v3 semantics: RedirectAction's response_code defaults to
// MOVED_PERMANENTLY, https_redirect is scheme_redirect "https", and a
// direct response's status is in [200, 600) with a body of at most
// max_direct_response_body_size_bytes (4096 by default). What cannot be
// applied is refused with the field named.
func TestTranslateLocalActions(t *testing.T) {
	redirect := func(a *routev3.RedirectAction) func(*routev3.Route) {
		return func(r *routev3.Route) { r.Action = &routev3.Route_Redirect{Redirect: a} }
	}
	direct := func(status uint32, body *corev3.DataSource) func(*routev3.Route) {
		return func(r *routev3.Route) {
			r.Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: status, Body: body}}
		}
	}
	tests := []struct {
		name      string
		edit      func(*routev3.Route)
		maxBody   uint32 // 0: unset
		want      RouteAction
		wantField string // a NACK naming this field
	}{
		{name: "redirect defaults to 301", edit: redirect(&routev3.RedirectAction{HostRedirect: "new"}),
			want: RouteAction{Kind: ActionRedirect, Redirect: &Redirect{Host: "new", Code: 301}}},
		{name: "https redirect, port, strip query, 308", edit: redirect(&routev3.RedirectAction{
			SchemeRewriteSpecifier: &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true},
			PortRedirect:           8443, StripQuery: true, ResponseCode: routev3.RedirectAction_PERMANENT_REDIRECT}),
			want: RouteAction{Kind: ActionRedirect, Redirect: &Redirect{Scheme: "https", Port: 8443, StripQuery: true, Code: 308}}},
		{name: "scheme redirect, path, 302", edit: redirect(&routev3.RedirectAction{
			SchemeRewriteSpecifier: &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: "HTTP"},
			PathRewriteSpecifier:   &routev3.RedirectAction_PathRedirect{PathRedirect: "/new?x=1"},
			ResponseCode:           routev3.RedirectAction_FOUND}),
			want: RouteAction{Kind: ActionRedirect, Redirect: &Redirect{Scheme: "http", Path: "/new?x=1", HasPath: true, Code: 302}}},
		{name: "prefix rewrite, 303", edit: redirect(&routev3.RedirectAction{
			PathRewriteSpecifier: &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: "/v2/"},
			ResponseCode:         routev3.RedirectAction_SEE_OTHER}),
			want: RouteAction{Kind: ActionRedirect, Redirect: &Redirect{PrefixRewrite: "/v2/", Code: 303}}},
		{name: "regex rewrite, 307, Envoy's \\1 becomes Go's ${1}", edit: redirect(&routev3.RedirectAction{
			PathRewriteSpecifier: &routev3.RedirectAction_RegexRewrite{RegexRewrite: &matcherv3.RegexMatchAndSubstitute{
				Pattern: &matcherv3.RegexMatcher{Regex: "^/(a)/(b)$"}, Substitution: `/\2/\1/$x\\`}},
			ResponseCode: routev3.RedirectAction_TEMPORARY_REDIRECT}),
			want: RouteAction{Kind: ActionRedirect, Redirect: &Redirect{Code: 307,
				RegexRewrite: &RegexRewrite{Substitution: `/${2}/${1}/$$x\`}}}},
		{name: "unknown response code", edit: redirect(&routev3.RedirectAction{ResponseCode: 42}),
			wantField: "virtual_hosts[0].routes[0].redirect.response_code"},
		{name: "bad regex", edit: redirect(&routev3.RedirectAction{
			PathRewriteSpecifier: &routev3.RedirectAction_RegexRewrite{RegexRewrite: &matcherv3.RegexMatchAndSubstitute{
				Pattern: &matcherv3.RegexMatcher{Regex: "("}}}}),
			wantField: "virtual_hosts[0].routes[0].redirect.regex_rewrite.pattern.regex"},
		{name: "relative path redirect gets its slash", edit: redirect(&routev3.RedirectAction{
			PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "x"}}),
			want: RouteAction{Kind: ActionRedirect, Redirect: &Redirect{Path: "/x", HasPath: true, Code: 301}}},
		{name: "host with a path", edit: redirect(&routev3.RedirectAction{HostRedirect: "a/b"}),
			wantField: "virtual_hosts[0].routes[0].redirect.host_redirect"},
		{name: "port out of range", edit: redirect(&routev3.RedirectAction{PortRedirect: 70000}),
			wantField: "virtual_hosts[0].routes[0].redirect.port_redirect"},
		{name: "direct response 503 with a body", edit: direct(503, &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "down"}}),
			want: RouteAction{Kind: ActionDirectResponse, DirectResponse: &DirectResponse{Status: 503, Body: []byte("down")}}},
		{name: "direct response bytes", edit: direct(200, &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte("ok")}}),
			want: RouteAction{Kind: ActionDirectResponse, DirectResponse: &DirectResponse{Status: 200, Body: []byte("ok")}}},
		{name: "direct response without a body", edit: direct(204, nil),
			want: RouteAction{Kind: ActionDirectResponse, DirectResponse: &DirectResponse{Status: 204}}},
		{name: "direct response status below 200", edit: direct(100, nil),
			wantField: "virtual_hosts[0].routes[0].direct_response.status"},
		{name: "direct response status 600", edit: direct(600, nil),
			wantField: "virtual_hosts[0].routes[0].direct_response.status"},
		{name: "direct response body from a file", edit: direct(200, &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: "/etc/passwd"}}),
			wantField: "virtual_hosts[0].routes[0].direct_response.body.filename"},
		{name: "direct response body above 4096 bytes", edit: direct(200, &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: strings.Repeat("x", 4097)}}),
			wantField: "virtual_hosts[0].routes[0].direct_response.body"},
		{name: "direct response body within a raised limit", maxBody: 5000,
			edit: direct(200, &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: strings.Repeat("x", 4097)}}),
			want: RouteAction{Kind: ActionDirectResponse, DirectResponse: &DirectResponse{Status: 200, Body: []byte(strings.Repeat("x", 4097))}}},
		{name: "direct response body above a lowered limit", maxBody: 2,
			edit:      direct(200, &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "abc"}}),
			wantField: "virtual_hosts[0].routes[0].direct_response.body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := xdstest.RouteConfig("r", "*", "c")
			tt.edit(rc.VirtualHosts[0].Routes[0])
			if tt.maxBody > 0 {
				rc.MaxDirectResponseBodySizeBytes = wrapperspb.UInt32(tt.maxBody)
			}
			out, err := TranslateRouteConfig(rc)
			if tt.wantField != "" {
				var re *ResourceError
				if !errors.As(err, &re) || re.Field != tt.wantField {
					t.Fatalf("error = %v; want a NACK naming %s", err, tt.wantField)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := out.VirtualHosts[0].Routes[0].Action
			if got.Kind != tt.want.Kind {
				t.Errorf("Kind = %v; want %v", got.Kind, tt.want.Kind)
			}
			if w := tt.want.Redirect; w != nil {
				g := got.Redirect
				if g == nil {
					t.Fatal("Redirect = nil")
				}
				if (g.RegexRewrite == nil) != (w.RegexRewrite == nil) || g.RegexRewrite != nil && g.RegexRewrite.Substitution != w.RegexRewrite.Substitution {
					t.Errorf("RegexRewrite = %+v; want substitution %+v", g.RegexRewrite, w.RegexRewrite)
				}
				gc, wc := *g, *w
				gc.RegexRewrite, wc.RegexRewrite = nil, nil
				if gc != wc {
					t.Errorf("Redirect = %+v; want %+v", gc, wc)
				}
			}
			if w := tt.want.DirectResponse; w != nil {
				g := got.DirectResponse
				if g == nil || g.Status != w.Status || string(g.Body) != string(w.Body) {
					t.Errorf("DirectResponse = %+v; want %+v", g, w)
				}
			}
			if u := out.UnappliedFields(); len(u) > 0 {
				t.Errorf("unapplied fields %v; want none", u)
			}
		})
	}
}
