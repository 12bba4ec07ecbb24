package route_test

import (
	"io"
	"net/http"
	"regexp"
	"testing"

	"github.com/weftmesh/weft/internal/route"
	"github.com/weftmesh/weft/internal/xds"
)

// TestRedirectLocation follows Envoy's RouteEntryImplBase::newUri: the
// request's port is dropped when port_redirect replaces it, when
// host_redirect replaces host and port, or when the scheme changes and the
// port is the old scheme's default; prefix_rewrite replaces the matched
// prefix, or the whole path of an exact match; a query in path_redirect
// wins over the request's and over strip_query.
func TestRedirectLocation(t *testing.T) {
	prefix := xds.RouteMatch{Kind: xds.PathPrefix, Path: "/old/"}
	exact := xds.RouteMatch{Kind: xds.PathExact, Path: "/exact"}
	tests := []struct {
		name  string
		match xds.RouteMatch
		rd    xds.Redirect
		url   string
		want  string
	}{
		{"nothing replaced", prefix, xds.Redirect{}, "http://a:8080/old/x?q=1", "http://a:8080/old/x?q=1"},
		{"https drops :80", prefix, xds.Redirect{Scheme: "https"}, "http://a:80/old/x", "https://a/old/x"},
		{"https keeps another port", prefix, xds.Redirect{Scheme: "https"}, "http://a:8080/old/x", "https://a:8080/old/x"},
		{"http drops :443", prefix, xds.Redirect{Scheme: "http"}, "https://a:443/old/x", "http://a/old/x"},
		{"same scheme keeps :80", prefix, xds.Redirect{Scheme: "http"}, "http://a:80/old/x", "http://a:80/old/x"},
		{"port replaces port", prefix, xds.Redirect{Port: 9090}, "http://a:8080/old/x", "http://a:9090/old/x"},
		{"port on an IPv6 host", prefix, xds.Redirect{Port: 9090}, "http://[::1]:8080/old/x", "http://[::1]:9090/old/x"},
		{"host replaces host and port", prefix, xds.Redirect{Host: "b"}, "http://a:8080/old/x", "http://b/old/x"},
		{"host and port", prefix, xds.Redirect{Host: "b", Port: 81}, "http://a:8080/old/x", "http://b:81/old/x"},
		{"prefix rewrite", prefix, xds.Redirect{PrefixRewrite: "/new/"}, "http://a/old/x/y?q=1", "http://a/new/x/y?q=1"},
		{"prefix rewrite of an exact match", exact, xds.Redirect{PrefixRewrite: "/replaced"}, "http://a/exact?q=1", "http://a/replaced?q=1"},
		{"prefix rewrite keeps escapes", prefix, xds.Redirect{PrefixRewrite: "/new/"}, "http://a/old/a%2Fb", "http://a/new/a%2Fb"},
		{"regex rewrite", prefix, xds.Redirect{RegexRewrite: &xds.RegexRewrite{
			Pattern: regexp.MustCompile("^/old/(.*)$"), Substitution: "/r/${1}"}}, "http://a/old/x?q=1", "http://a/r/x?q=1"},
		{"path keeps the query", prefix, xds.Redirect{Path: "/p", HasPath: true}, "http://a/old/x?q=1", "http://a/p?q=1"},
		{"path's query wins", prefix, xds.Redirect{Path: "/p?x=1", HasPath: true}, "http://a/old/x?q=1", "http://a/p?x=1"},
		{"path's query survives strip_query", prefix, xds.Redirect{Path: "/p?x=1", HasPath: true, StripQuery: true}, "http://a/old/x?q=1", "http://a/p?x=1"},
		{"strip query", prefix, xds.Redirect{StripQuery: true}, "http://a/old/x?q=1", "http://a/old/x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rd := tt.rd
			rd.Code = 301
			r := &xds.Route{Match: tt.match, Action: xds.RouteAction{Kind: xds.ActionRedirect, Redirect: &rd}}
			req, _ := http.NewRequest("GET", tt.url, nil)
			if got := route.RedirectLocation(r, req); got != tt.want {
				t.Errorf("Location = %q; want %q", got, tt.want)
			}
		})
	}
}

// TestLocalResponse: a direct response has its status and body, text/plain
// when there is a body, none for HEAD; a forwarding route has no local
// response.
func TestLocalResponse(t *testing.T) {
	dr := &xds.Route{Action: xds.RouteAction{Kind: xds.ActionDirectResponse, DirectResponse: &xds.DirectResponse{Status: 503, Body: []byte("down")}}}
	tests := []struct {
		name, method string
		r            *xds.Route
		wantNil      bool
		wantCode     int
		wantBody     string
		wantType     string
	}{
		{"direct response", "GET", dr, false, 503, "down", "text/plain"},
		{"direct response to HEAD", "HEAD", dr, false, 503, "", "text/plain"},
		{"empty direct response", "GET", &xds.Route{Action: xds.RouteAction{Kind: xds.ActionDirectResponse, DirectResponse: &xds.DirectResponse{Status: 204}}}, false, 204, "", ""},
		{"forward", "GET", &xds.Route{Action: xds.RouteAction{Kind: xds.ActionForward, Cluster: "c"}}, true, 0, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, "http://a/", nil)
			resp := route.Local(tt.r, req)
			if tt.wantNil {
				if resp != nil {
					t.Errorf("Local = %+v; want nil", resp)
				}
				return
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantCode || string(body) != tt.wantBody || resp.Header.Get("Content-Type") != tt.wantType || resp.Request != req {
				t.Errorf("Local = %d %q type %q (request kept: %v); want %d %q type %q",
					resp.StatusCode, body, resp.Header.Get("Content-Type"), resp.Request == req, tt.wantCode, tt.wantBody, tt.wantType)
			}
		})
	}
}
