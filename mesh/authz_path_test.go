package mesh_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/security"
)

// denyAdminPolicy is a policy file denying /admin and everything under it
// to everyone, and allowing the rest.
const denyAdminPolicy = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin", "/admin/*"]}}]
`

// writePolicy writes an authorization policy file and returns its path.
func writePolicy(t testing.TB, policy string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "authz.yaml")
	if err := os.WriteFile(p, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// inboundBootstrap returns cp's bootstrap with a server listener template,
// so the mesh's HTTP servers follow inbound listeners.
func inboundBootstrap(t testing.TB, cp *xdstest.Server) []byte {
	t.Helper()
	var bs map[string]any
	if err := json.Unmarshal(cp.Bootstrap(xdsNode), &bs); err != nil {
		t.Fatal(err)
	}
	bs["server_listener_resource_name_template"] = inboundTemplate
	b, err := json.Marshal(bs)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// inboundListener is an inbound listener named name whose one filter
// chain serves every request through rbac.
func inboundListener(name string, rbac ...*rbacv3.RBAC) *listenerv3.Listener {
	var filters []*hcmv3.HttpFilter
	for i, r := range rbac {
		filters = append(filters, xdstest.RBACFilter(fmt.Sprintf("rbac-%d", i), r))
	}
	return xdstest.ServerListener(name, netip.AddrPort{}, nil, xdstest.FilterChain("inbound", xdstest.InboundRoutes("inbound"), filters...))
}

// denyAdminRBAC is what istiod sends for denyAdminPolicy.
func denyAdminRBAC() *rbacv3.RBAC {
	prefix := &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{
		Path: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "/admin"}}}}}}
	return &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{
		"deny-admin": {Permissions: []*rbacv3.Permission{prefix}, Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}}}}}
}

// serveMeshHandler serves h through m on 127.0.0.1 and returns the address.
func serveMeshHandler(t *testing.T, m *mesh.Mesh, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Serve(ctx, ln, h) }()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

// rawRequest sends "<line>" and the given header lines over a new TCP
// connection exactly as written (net/http's client would clean the path),
// and returns the response's status and body.
func rawRequest(t *testing.T, addr, line string, headers ...string) (int, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	var b strings.Builder
	b.WriteString(line + "\r\nHost: svc\r\n")
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("Connection: close\r\n\r\n")
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatalf("writing %q: %v", line, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the response to %q: %v", line, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// adminMux is an application with an admin section, as a user would write
// it: a ServeMux with a handler at /admin/ (counting the calls that reach
// it) and one at / (answering with the path it was given).
func adminMux(adminCalls *atomic.Int64) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/admin/", func(w http.ResponseWriter, r *http.Request) {
		adminCalls.Add(1)
		fmt.Fprint(w, "admin ", r.URL.Path)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "root ", r.URL.Path)
	})
	return mux
}

// TestAuthorizationJudgesTheHandlersPath: with /admin denied, no spelling
// of a request line reaches the application's /admin/ handler, whether the
// policy comes from WEFT_AUTHZ_POLICY or from the control plane's inbound
// RBAC. A path that cannot be normalized unambiguously gets 400; any other
// reaches the handler as its normal form, the form authorization judged.
func TestAuthorizationJudgesTheHandlersPath(t *testing.T) {
	const (
		badRequest = http.StatusBadRequest
		forbidden  = http.StatusForbidden
		ok         = http.StatusOK
	)
	cases := []struct {
		name   string
		target string
		want   int
		body   string // for 200: what the handler at / saw
	}{
		{"encoded dot-dot", "/admin/%2e%2e/x", ok, "root /x"},
		{"encoded dot-dot, upper case", "/admin/%2E%2E/x", ok, "root /x"},
		{"dot-dot with encoded slash", "/admin/..%2Fx", badRequest, ""},
		{"dot-dot with encoded slash, lower case", "/admin/..%2fx", badRequest, ""},
		{"dot-dot with encoded backslash", "/admin/..%5Cx", badRequest, ""},
		{"dot-dot with encoded backslash, lower case", "/admin/..%5cx", badRequest, ""},
		{"dot-dot with backslash", `/admin/..\x`, badRequest, ""},
		{"half-encoded dot-dot", "/admin/.%2e/x", ok, "root /x"},
		{"other half-encoded dot-dot", "/admin/%2E./x", ok, "root /x"},
		{"absolute form, encoded dot-dot", "http://svc/admin/%2e%2e/x", ok, "root /x"},
		{"absolute form", "http://svc/admin/x", forbidden, ""},
		{"absolute form, another host", "http://other.example/admin/x", forbidden, ""},
		{"absolute form, encoded dot-dot into admin", "http://svc/x/%2e%2e/admin/x", forbidden, ""},
		{"encoded dot-dot out and back into admin", "/admin/%2e%2e/admin/x", forbidden, ""},
		{"double slash", "//admin/x", forbidden, ""},
		{"dot-dot", "/public/../admin/x", forbidden, ""},
		{"encoded letter", "/%61dmin/x", forbidden, ""},
		{"encoded slash", "/admin%2fx", badRequest, ""},
		{"encoded slash, upper case", "/admin%2Fx", badRequest, ""},
		{"dot segment", "/./admin/x", forbidden, ""},
		{"encoded dot segment", "/%2e/admin/x", forbidden, ""},
		{"trailing encoded dot-dot", "/admin/x/%2e%2e", forbidden, ""},
		{"double encoding", "/admin/%252e%252e/x", badRequest, ""},
		{"double-encoded slash", "/public/..%252Fadmin/x", badRequest, ""},
		{"encoded NUL", "/admin/%00", badRequest, ""},
		{"semicolon segment", "/admin/..;/x", forbidden, ""},
		{"bare admin", "/admin", forbidden, ""},
		{"admin with a query", "/admin/x?next=%2e%2e", forbidden, ""},
		{"public", "/public", ok, "root /public"},
		{"public, escaped", "/public/a%20b?q=%2e%2e", ok, "root /public/a b"},
	}
	run := func(t *testing.T, addr string, adminCalls *atomic.Int64) {
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				before := adminCalls.Load()
				got, body := rawRequest(t, addr, "GET "+c.target+" HTTP/1.1")
				if n := adminCalls.Load() - before; n != 0 {
					t.Errorf("GET %s reached the /admin/ handler (%d %q)", c.target, got, body)
				}
				if got != c.want {
					t.Errorf("GET %s = %d %q, want %d", c.target, got, body, c.want)
				}
				if c.want == ok && body != c.body {
					t.Errorf("GET %s: the handler answered %q, want %q", c.target, body, c.body)
				}
				if got == badRequest && body != "Bad Request\n" {
					t.Errorf("GET %s: 400 body %q, want the generic one", c.target, body)
				}
			})
		}
	}

	t.Run("policy file", func(t *testing.T) {
		var adminCalls atomic.Int64
		m := newMesh(t, mesh.WithAuthorizationPolicyFile(writePolicy(t, denyAdminPolicy)))
		run(t, serveMeshHandler(t, m, adminMux(&adminCalls)), &adminCalls)
	})
	t.Run("xDS RBAC", func(t *testing.T) {
		cp := xdstest.NewServer(t)
		m := newMesh(t, mesh.WithBootstrap(inboundBootstrap(t, cp)))
		var adminCalls atomic.Int64
		addr := serveMeshHandler(t, m, adminMux(&adminCalls))
		cp.SetSnapshot(t, xdsNode, "1", inboundListener(strings.ReplaceAll(inboundTemplate, "%s", addr), denyAdminRBAC()))
		waitStatus(t, addr, "GET /admin/x HTTP/1.1", forbidden)
		run(t, addr, &adminCalls)
	})
}

// waitStatus sends line until it gets want, for a policy that arrives
// asynchronously.
func waitStatus(t *testing.T, addr, line string, want int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, body := rawRequest(t, addr, line)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %d %q for 20s, want %d", line, got, body, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestForwardedClientCertNeverReachesRulesOrHandler: a caller's
// X-Forwarded-Client-Cert, however spelled, is gone before the policy's
// `when request.headers[...]` conditions, the xDS RBAC header matchers and
// the handler look at headers.
func TestForwardedClientCertNeverReachesRulesOrHandler(t *testing.T) {
	spellings := []string{
		"X-Forwarded-Client-Cert",
		"x-forwarded-client-cert",
		"X-FORWARDED-CLIENT-CERT",
		"x-Forwarded-client-CERT",
		"X_Forwarded_Client_Cert",
		"x_forwarded_client_cert",
	}
	const forged = `By=spiffe://shop.example/ns/shop/sa/orders;URI=spiffe://shop.example/ns/shop/sa/admin`
	// seen answers with the header names the handler got, so a forged
	// header under any key shows.
	seen := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var names []string
		for k, v := range r.Header {
			if strings.Contains(strings.ToLower(strings.ReplaceAll(k, "_", "-")), "forwarded-client-cert") ||
				strings.Contains(strings.Join(v, ","), "sa/admin") {
				names = append(names, k)
			}
		}
		sort.Strings(names)
		fmt.Fprint(w, "xfcc:", strings.Join(names, ","))
	})
	check := func(t *testing.T, addr string, want int) {
		t.Helper()
		for _, name := range spellings {
			got, body := rawRequest(t, addr, "GET /items HTTP/1.1", name+": "+forged)
			if got != want {
				t.Errorf("with %s: status %d %q, want %d", name, got, body, want)
			}
			if got == http.StatusOK && body != "xfcc:" {
				t.Errorf("with %s: the handler saw %q, want no such header", name, body)
			}
		}
		// Two spellings at once, one of them repeated.
		got, body := rawRequest(t, addr, "GET /items HTTP/1.1",
			"X-Forwarded-Client-Cert: "+forged, "x-forwarded-client-cert: "+forged, "X_Forwarded_Client_Cert: "+forged)
		if got != want || (got == http.StatusOK && body != "xfcc:") {
			t.Errorf("with several spellings: %d %q, want %d with no such header", got, body, want)
		}
	}

	t.Run("handler", func(t *testing.T) {
		check(t, serveMeshHandler(t, newMesh(t), seen), http.StatusOK)
	})
	t.Run("policy when request.headers", func(t *testing.T) {
		policy := writePolicy(t, `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: trust-xfcc}
spec:
  action: ALLOW
  rules:
  - when:
    - key: request.headers[x-forwarded-client-cert]
      values: ["*"]
`)
		check(t, serveMeshHandler(t, newMesh(t, mesh.WithAuthorizationPolicyFile(policy)), seen), http.StatusForbidden)
	})
	t.Run("xDS RBAC header matcher", func(t *testing.T) {
		cp := xdstest.NewServer(t)
		m := newMesh(t, mesh.WithBootstrap(inboundBootstrap(t, cp)))
		addr := serveMeshHandler(t, m, seen)
		present := &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: "x-forwarded-client-cert",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}}}
		allowXFCC := &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
			"trust-xfcc": {Permissions: []*rbacv3.Permission{present}, Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}}}}}
		cp.SetSnapshot(t, xdsNode, "1", inboundListener(strings.ReplaceAll(inboundTemplate, "%s", addr), allowXFCC))
		waitStatus(t, addr, "GET /items HTTP/1.1", http.StatusForbidden)
		check(t, addr, http.StatusForbidden)
	})
}

// allowPublicPolicy allows /public and what is under it, and nothing else.
const allowPublicPolicy = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-public}
spec:
  action: ALLOW
  rules:
  - to: [{operation: {paths: ["/public", "/public/*"]}}]
`

// handlerView is what the application's handler saw of one request.
type handlerView struct {
	ran                bool
	pattern            string // the ServeMux pattern that routed it
	path, escaped, uri string
}

type handlerViewKey struct{}

// fuzzLocalAddr is the server address the fuzzed requests claim to have
// arrived on; it names the xDS inbound listener.
var fuzzLocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 18080}

// FuzzAuthorizedPath sends any request line through a mesh's real server
// chain in front of a ServeMux, under three policies: a policy file
// denying /admin and /admin/*, a policy file allowing only /public and
// /public/*, and an xDS inbound listener whose RBAC denies the prefix
// /admin. Whenever the handler runs, the path it sees, as r.URL.Path and
// as ServeMux routes it (r.URL.EscapedPath, cleaned and unescaped), must
// miss the DENY rule, or match the ALLOW rule; ServeMux must never pick
// /admin/; and the policy evaluator's normalization of the escaped path
// must be r.URL.Path itself, so no second, different normalization
// exists. Seeds: testdata/fuzz/FuzzAuthorizedPath.
func FuzzAuthorizedPath(f *testing.F) {
	mux := http.NewServeMux()
	for _, pattern := range []string{"/admin/", "/public/", "/"} {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			v := r.Context().Value(handlerViewKey{}).(*handlerView)
			*v = handlerView{ran: true, pattern: r.Pattern, path: r.URL.Path, escaped: r.URL.EscapedPath(), uri: r.RequestURI}
		})
	}
	newFuzzMesh := func(opts ...mesh.Option) http.Handler {
		m, err := mesh.New(context.Background(), opts...)
		if err != nil {
			f.Fatalf("mesh.New: %v", err)
		}
		f.Cleanup(func() { m.Close() })
		return m.Handler(mux)
	}
	quiet := mesh.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	cp := xdstest.NewServer(f)
	cp.SetSnapshot(f, xdsNode, "1", inboundListener(strings.ReplaceAll(inboundTemplate, "%s", fuzzLocalAddr.String()), denyAdminRBAC()))
	under := func(prefix string) func(string) bool {
		return func(p string) bool { return p == prefix || strings.HasPrefix(p, prefix+"/") }
	}
	variants := []struct {
		name string
		h    http.Handler
		ok   func(path string) bool // whether the handler may see path
	}{
		{"DENY /admin/*", newFuzzMesh(quiet, mesh.WithAuthorizationPolicyFile(writePolicy(f, denyAdminPolicy))),
			func(p string) bool { return !under("/admin")(p) }},
		{"ALLOW only /public/*", newFuzzMesh(quiet, mesh.WithAuthorizationPolicyFile(writePolicy(f, allowPublicPolicy))),
			under("/public")},
		{"xDS RBAC DENY prefix /admin", newFuzzMesh(quiet, mesh.WithBootstrap(inboundBootstrap(f, cp))),
			func(p string) bool { return !strings.HasPrefix(p, "/admin") }},
	}

	serve := func(h http.Handler, method, target string) (int, handlerView, bool) {
		raw := method + " " + target + " HTTP/1.1\r\nHost: svc\r\n\r\n"
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			return 0, handlerView{}, false // net/http's server answers 400 itself
		}
		var v handlerView
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		ctx = context.WithValue(ctx, handlerViewKey{}, &v)
		ctx = context.WithValue(ctx, http.LocalAddrContextKey, net.Addr(fuzzLocalAddr))
		r = r.WithContext(ctx)
		r.RemoteAddr = "127.0.0.1:40000"
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code, v, true
	}
	// The control plane's listener arrives asynchronously.
	deadline := time.Now().Add(20 * time.Second)
	for code, _, _ := serve(variants[2].h, "GET", "/admin/x"); code != http.StatusForbidden; code, _, _ = serve(variants[2].h, "GET", "/admin/x") {
		if time.Now().After(deadline) {
			f.Fatalf("the xDS inbound listener did not apply within 20s: GET /admin/x = %d", code)
		}
		time.Sleep(20 * time.Millisecond)
	}

	f.Fuzz(func(t *testing.T, method, target string) {
		for _, vr := range variants {
			code, v, parsed := serve(vr.h, method, target)
			if !parsed || !v.ran {
				continue
			}
			if v.pattern == "/admin/" && !vr.ok("/admin/") {
				t.Errorf("%s: %s %q reached the /admin/ handler as %q (%d)", vr.name, method, target, v.path, code)
			}
			if !vr.ok(v.path) {
				t.Errorf("%s: %s %q reached the handler with r.URL.Path %q", vr.name, method, target, v.path)
			}
			if routed, ok := muxPath(v.escaped); !ok || routed != v.path {
				t.Errorf("%s: %s %q: the handler got path %q but escaped path %q, which ServeMux reads as %q (%v)",
					vr.name, method, target, v.path, v.escaped, routed, ok)
			}
			if norm, err := security.NormalizePath(v.escaped); err != nil || norm != v.path {
				t.Errorf("%s: %s %q: NormalizePath(%q) = %q, %v; want the handler's path %q",
					vr.name, method, target, v.escaped, norm, err, v.path)
			}
			if !strings.HasPrefix(v.uri, v.escaped) {
				t.Errorf("%s: %s %q: RequestURI %q does not start with the escaped path %q", vr.name, method, target, v.uri, v.escaped)
			}
		}
	})
}

// muxPath is the path ServeMux routes an escaped path on: cleaned (a
// trailing slash kept), then each segment unescaped. ok is false when a
// segment does not unescape or holds a "/" once unescaped.
func muxPath(escaped string) (string, bool) {
	cleaned := path.Clean(escaped)
	if strings.HasSuffix(escaped, "/") && cleaned != "/" {
		cleaned += "/"
	}
	if cleaned != escaped {
		return cleaned, false // ServeMux would redirect, not route
	}
	segs := strings.Split(cleaned, "/")
	for i, s := range segs {
		u, err := url.PathUnescape(s)
		if err != nil || strings.Contains(u, "/") {
			return "", false
		}
		segs[i] = u
	}
	return strings.Join(segs, "/"), true
}
