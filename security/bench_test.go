package security_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/weftmesh/weft/security"
)

// policyWithRules returns one ALLOW policy of n rules in which only the
// last matches the benchmark's request, so every rule is tried.
func policyWithRules(n int) string {
	var b strings.Builder
	b.WriteString(policyHeader + "metadata: {name: deny-debug}\nspec:\n  action: DENY\n  rules:\n  - to: [{operation: {paths: [\"/debug/*\"]}}]\n---\n")
	b.WriteString(policyHeader + "metadata: {name: many}\nspec:\n  rules:\n")
	for i := 0; i < n-1; i++ {
		fmt.Fprintf(&b, "  - from: [{source: {principals: [\"cluster.local/ns/team%d/sa/*\"]}}]\n    to: [{operation: {methods: [GET], paths: [\"/svc%d/*\"]}}]\n", i, i)
	}
	b.WriteString("  - from: [{source: {principals: [\"cluster.local/ns/default/sa/sleep\"], ipBlocks: [10.0.0.0/8]}}]\n")
	b.WriteString("    to: [{operation: {methods: [GET], paths: [\"/info*\"], ports: ['8080']}}]\n")
	b.WriteString("    when: [{key: 'request.headers[x-team]', values: [blue]}]\n")
	return b.String()
}

func BenchmarkEvaluate(b *testing.B) {
	for _, n := range []int{1, 100} {
		for _, path := range []string{"/info/items", "//info/./items"} {
			b.Run(fmt.Sprintf("rules=%d/path=%s", n, path), func(b *testing.B) {
				p := mustParse(b, policyWithRules(n))
				r := security.Request{
					Method: "GET", Path: path, Port: 8080,
					Headers:  http.Header{"X-Team": {"blue"}},
					SourceID: sleepID, SourceIP: netip.MustParseAddr("10.1.2.3"),
				}
				if d := p.Evaluate(&r); !d.Allow {
					b.Fatalf("benchmark request denied: %+v", d)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					p.Evaluate(&r)
				}
			})
		}
	}
}

// benchServer starts an HTTP server on loopback, over SPIFFE mTLS when
// mtls is set, and returns its URL and a client for it.
func benchServer(b *testing.B, mtls, keepAlive bool) (string, *http.Client) {
	b.Helper()
	caS, caA := newCA(b, tdS), newCA(b, tdA)
	ln := listen(b)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	if !mtls {
		serveHTTP(b, ln, h)
		return "http://" + ln.Addr().String() + "/", httpClient(b, nil, keepAlive)
	}
	serverSrc := security.NewStaticSource(issue(b, caS, serverS), caS.Bundle(), caA.Bundle())
	clientSrc := security.NewStaticSource(issue(b, caA, clientA), caS.Bundle())
	serveHTTP(b, tls.NewListener(ln, security.ServerTLSConfig(serverSrc, security.AuthorizeMemberOf(tdA))), h)
	return "https://" + ln.Addr().String() + "/", httpClient(b, security.ClientTLSConfig(clientSrc, security.AuthorizeID(serverS)), keepAlive)
}

// BenchmarkNewConnection measures one request on a fresh connection: TCP
// connect, plus a full mTLS handshake (ECDSA P-256, TLS 1.3, no
// resumption) in the mtls case.
func BenchmarkNewConnection(b *testing.B) {
	for _, mode := range []string{"plaintext", "mtls"} {
		b.Run(mode, func(b *testing.B) {
			url, c := benchServer(b, mode == "mtls", false)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if code, _, err := get(c, url); err != nil || code != http.StatusOK {
					b.Fatalf("GET: %d %v", code, err)
				}
			}
		})
	}
}

// BenchmarkRequest measures the steady-state cost of a request on a kept-
// alive connection.
func BenchmarkRequest(b *testing.B) {
	for _, mode := range []string{"plaintext", "mtls"} {
		b.Run(mode, func(b *testing.B) {
			url, c := benchServer(b, mode == "mtls", true)
			if _, _, err := get(c, url); err != nil {
				b.Fatalf("warm-up GET: %v", err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if code, _, err := get(c, url); err != nil || code != http.StatusOK {
					b.Fatalf("GET: %d %v", code, err)
				}
			}
		})
	}
}

func BenchmarkNormalizePath(b *testing.B) {
	for _, p := range []string{"/api/v1/items/42", "/api//v1/./items/%2E%2E/items/42"} {
		b.Run(p, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := security.NormalizePath(p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
