package security_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/security"
)

// rawGET sends a request line exactly as given, bypassing the client-side
// path cleaning of net/http, and returns the status code and body.
func rawGET(t *testing.T, addr, target string) (int, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n", target)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading response to %q: %v", target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAuthorizationHandler(t *testing.T) {
	p := mustParse(t, policyHeader+`metadata: {name: deny-admin, namespace: prod}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin", "/admin/*"]}}]
---
`+policyHeader+`metadata: {name: audit-all, namespace: prod}
spec: {action: AUDIT, rules: [{}]}
`)
	logger, records := newRecordLogger()
	// A raw handler without ServeMux, which would redirect unclean paths:
	// the policy alone must stop them.
	ln := listen(t)
	serveHTTP(t, ln, security.AuthorizationHandler(p, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "reached ", r.URL.Path)
	}), security.WithLogger(logger)))
	addr := ln.Addr().String()

	tests := []struct {
		target   string
		wantCode int
	}{
		{"/ok", http.StatusOK},
		{"/admin", http.StatusForbidden},
		{"//admin", http.StatusForbidden},
		{"/a/../admin", http.StatusForbidden},
		{"/%2Fadmin", http.StatusBadRequest},
		{"/%5Cadmin", http.StatusBadRequest},
		{"/x/..%2Fadmin/users", http.StatusBadRequest},
		{"/%61dmin", http.StatusForbidden},
		{"/admin?debug=1", http.StatusForbidden},
		{"/administrator", http.StatusOK},
	}
	for _, tt := range tests {
		code, body := rawGET(t, addr, tt.target)
		if code != tt.wantCode {
			t.Errorf("GET %s = %d %q, want %d", tt.target, code, body, tt.wantCode)
		}
		if code == http.StatusForbidden && (strings.Contains(body, "deny-admin") || strings.Contains(body, "policy")) {
			t.Errorf("GET %s: body %q leaks the decision", tt.target, body)
		}
	}
	msg := waitRecord(t, records, "request denied")
	for _, want := range []string{"policy=prod/deny-admin", "path=/admin"} {
		if !strings.Contains(msg, want) {
			t.Errorf("deny log %q lacks %q", msg, want)
		}
	}
	if msg := waitRecord(t, records, "request audited"); !strings.Contains(msg, "audit_policy=prod/audit-all") {
		t.Errorf("audit log %q lacks the audit policy", msg)
	}
}

// TestAuthorizationHandlerJudgesTheHandlersPath: a user of this package
// alone, wrapping a ServeMux, is protected too: no spelling of a path
// reaches the /admin/ handler past a DENY for /admin/*, and the handler
// receives the path the policy judged.
func TestAuthorizationHandlerJudgesTheHandlersPath(t *testing.T) {
	p := mustParse(t, policyHeader+`metadata: {name: deny-admin}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin", "/admin/*"]}}]
`)
	var adminCalls atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/admin/", func(w http.ResponseWriter, r *http.Request) {
		adminCalls.Add(1)
		fmt.Fprint(w, "admin ", r.URL.Path)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "root ", r.URL.Path, " ", r.RequestURI)
	})
	ln := listen(t)
	serveHTTP(t, ln, security.AuthorizationHandler(p, mux, security.WithLogger(discard())))
	addr := ln.Addr().String()

	tests := []struct {
		target   string
		wantCode int
		wantBody string
	}{
		{"/admin/%2e%2e/x", http.StatusOK, "root /x /x"},
		{"/admin/..%2Fx", http.StatusBadRequest, ""},
		{"/admin/..%5Cx", http.StatusBadRequest, ""},
		{`/admin/..\x`, http.StatusBadRequest, ""},
		{"/admin/.%2e/x", http.StatusOK, "root /x /x"},
		{"/admin/%2E./x?a=%2e", http.StatusOK, "root /x /x?a=%2e"},
		{"http://svc/admin/%2e%2e/x", http.StatusOK, "root /x /x"},
		{"http://svc/admin/x", http.StatusForbidden, ""},
		{"/admin/%2e%2e/admin/x", http.StatusForbidden, ""},
		{"/%61dmin/x", http.StatusForbidden, ""},
		{"/admin%2fx", http.StatusBadRequest, ""},
		{"/a%20b/%3F", http.StatusOK, "root /a b/? /a%20b/%3F"},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			before := adminCalls.Load()
			code, body := rawGET(t, addr, tt.target)
			if adminCalls.Load() != before {
				t.Errorf("GET %s reached the /admin/ handler: %d %q", tt.target, code, body)
			}
			if code != tt.wantCode || (tt.wantBody != "" && body != tt.wantBody) {
				t.Errorf("GET %s = %d %q, want %d %q", tt.target, code, body, tt.wantCode, tt.wantBody)
			}
		})
	}
}

func TestAuthorizationHandlerUsesPeerID(t *testing.T) {
	caS, caA := newCA(t, tdS), newCA(t, tdA)
	p := mustParse(t, policyHeader+`metadata: {name: only-a}
spec:
  rules:
  - from: [{source: {principals: ["a.test/ns/default/*"]}}]
`)
	serverSrc := security.NewStaticSource(issue(t, caS, serverS), caS.Bundle(), caA.Bundle())
	ln := listen(t)
	pl := security.PermissiveListener(ln, security.ServerTLSConfig(serverSrc, nil))
	serveHTTP(t, pl, security.AuthorizationHandler(p, idHandler, security.WithLogger(discard())))
	addr := ln.Addr().String()

	other := spiffeid.RequireFromString("spiffe://a.test/ns/other/sa/x")
	tests := []struct {
		name     string
		client   *http.Client
		url      string
		wantCode int
	}{
		{"allowed principal", httpClient(t, security.ClientTLSConfig(security.NewStaticSource(issue(t, caA, clientA), caS.Bundle()), nil), false), "https://" + addr + "/", http.StatusOK},
		{"other namespace", httpClient(t, security.ClientTLSConfig(security.NewStaticSource(issue(t, caA, other), caS.Bundle()), nil), false), "https://" + addr + "/", http.StatusForbidden},
		{"plaintext", httpClient(t, nil, false), "http://" + addr + "/", http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body, err := get(tt.client, tt.url)
			if err != nil {
				t.Fatalf("GET: %v", err)
			}
			if code != tt.wantCode {
				t.Errorf("GET = %d %q, want %d", code, body, tt.wantCode)
			}
		})
	}
}

func TestGRPCInterceptors(t *testing.T) {
	caS, caA := newCA(t, tdS), newCA(t, tdA)
	p := mustParse(t, policyHeader+`metadata: {name: health}
spec:
  rules:
  - from: [{source: {principals: ["a.test/ns/default/sa/client"]}}]
    to: [{operation: {paths: ["/grpc.health.v1.Health/*"], methods: ["POST"]}}]
    when:
    - key: request.headers[x-team]
      values: ["blue"]
`)
	serverSrc := security.NewStaticSource(issue(t, caS, serverS), caS.Bundle(), caA.Bundle())
	addr := serveGRPC(t, credentials.NewTLS(security.ServerTLSConfig(serverSrc, nil)), &watchingHealth{healthServer{want: clientA}},
		grpc.UnaryInterceptor(security.UnaryServerInterceptor(p, security.WithLogger(discard()))),
		grpc.StreamInterceptor(security.StreamServerInterceptor(p, security.WithLogger(discard()))))

	other := spiffeid.RequireFromString("spiffe://a.test/ns/default/sa/other")
	tests := []struct {
		name string
		id   spiffeid.ID
		team string
		want codes.Code
	}{
		{"allowed", clientA, "blue", codes.OK},
		{"wrong header", clientA, "red", codes.PermissionDenied},
		{"other principal", other, "blue", codes.PermissionDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := security.NewStaticSource(issue(t, caA, tt.id), caS.Bundle())
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(security.ClientTLSConfig(src, security.AuthorizeID(serverS)))))
			if err != nil {
				t.Fatalf("grpc.NewClient: %v", err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			ctx = metadataCtx(ctx, "x-team", tt.team)
			client := healthgrpc.NewHealthClient(conn)

			_, err = client.Check(ctx, &healthgrpc.HealthCheckRequest{})
			if got := status.Code(err); got != tt.want {
				t.Errorf("Check: code %v (%v), want %v", got, err, tt.want)
			}
			if tt.want == codes.PermissionDenied && status.Convert(err).Message() != "permission denied" {
				t.Errorf("Check: message %q leaks detail", status.Convert(err).Message())
			}
			stream, err := client.Watch(ctx, &healthgrpc.HealthCheckRequest{})
			if err == nil {
				_, err = stream.Recv()
			}
			if got := status.Code(err); got != tt.want {
				t.Errorf("Watch: code %v (%v), want %v", got, err, tt.want)
			}
		})
	}
}

// watchingHealth adds a Watch that sends one SERVING and ends.
type watchingHealth struct{ healthServer }

func (w *watchingHealth) Watch(_ *healthgrpc.HealthCheckRequest, s grpc.ServerStreamingServer[healthgrpc.HealthCheckResponse]) error {
	return s.Send(&healthgrpc.HealthCheckResponse{Status: healthgrpc.HealthCheckResponse_SERVING})
}

func TestWatchPolicyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "authz.yaml")
	denyAdmin := policyHeader + "metadata: {name: v1}\nspec:\n  action: DENY\n  rules: [{to: [{operation: {paths: [/admin]}}]}]\n"
	denyAPI := policyHeader + "metadata: {name: v2}\nspec:\n  action: DENY\n  rules: [{to: [{operation: {paths: [/api]}}]}]\n"
	writeAtomic(t, path, []byte(denyAdmin))
	logger, records := newRecordLogger()
	w, err := security.WatchPolicyFile(path, security.WithPollInterval(10*time.Millisecond), security.WithLogger(logger))
	if err != nil {
		t.Fatalf("WatchPolicyFile: %v", err)
	}
	defer w.Close()

	allowed := func(path string) bool {
		r := getReq(path, sleepID)
		return w.Evaluate(&r).Allow
	}
	if allowed("/admin") || !allowed("/api") {
		t.Fatalf("initial policy: /admin allowed %v, /api allowed %v; want false, true", allowed("/admin"), allowed("/api"))
	}

	writeAtomic(t, path, []byte(denyAPI))
	waitPolicy(t, w, "v2")
	if !allowed("/admin") || allowed("/api") {
		t.Errorf("after reload: /admin allowed %v, /api allowed %v; want true, false", allowed("/admin"), allowed("/api"))
	}

	writeAtomic(t, path, []byte(policyHeader+"spec: {action: NOPE}\n"))
	msg := waitRecord(t, records, "keeping the last good authorization policies")
	if !strings.Contains(msg, "document 1") || !strings.Contains(msg, "spec.action") {
		t.Errorf("log %q does not name the document and field", msg)
	}
	if allowed("/api") {
		t.Error("after a bad file: /api allowed, want the last good policy (deny) kept")
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	waitRecord(t, records, "reading policy file")
	if allowed("/api") {
		t.Error("after removing the file: /api allowed, want the last good policy kept")
	}

	writeAtomic(t, path, []byte(denyAdmin))
	waitPolicy(t, w, "v1")
	for i := 0; i < 2; i++ {
		if err := w.Close(); err != nil {
			t.Errorf("Close #%d: %v", i+1, err)
		}
	}

	if _, err := security.WatchPolicyFile(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("WatchPolicyFile(missing) = nil error, want error")
	}
}

// waitPolicy waits, for at most 5s and 100 reloads, until the policy named
// name decides a request to its denied path.
func waitPolicy(t *testing.T, w *security.PolicyWatcher, name string) {
	t.Helper()
	probe := map[string]string{"v1": "/admin", "v2": "/api"}[name]
	timeout := time.After(5 * time.Second)
	for i := 0; i < 100; i++ {
		r := getReq(probe, sleepID)
		if d := w.Evaluate(&r); d.Policy == name {
			return
		}
		select {
		case <-w.Updated():
		case <-timeout:
			t.Fatalf("policy %s not in force after 5s", name)
		}
	}
	t.Fatalf("policy %s not in force after 100 reloads", name)
}
