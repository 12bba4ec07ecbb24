package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/security"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// issue runs the tool as `go run ./examples/svid` would, and returns the
// variables its export lines name.
func issue(t *testing.T, args ...string) map[string]string {
	t.Helper()
	c, err := parseFlags(args, io.Discard)
	if err != nil {
		t.Fatalf("parseFlags(%q): %v", args, err)
	}
	var out bytes.Buffer
	if err := run(c, &out); err != nil {
		t.Fatalf("run(%q): %v", args, err)
	}
	env := map[string]string{}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if !ok || !strings.HasPrefix(line, "export ") {
			t.Fatalf("output line %q is not an export line:\n%s", line, out.String())
		}
		env[k] = v
	}
	for _, k := range []string{"WEFT_SVID_CERT_FILE", "WEFT_SVID_KEY_FILE", "WEFT_BUNDLE_FILE"} {
		if _, err := os.Stat(env[k]); err != nil {
			t.Fatalf("%s=%q: %v\n%s", k, env[k], err, out.String())
		}
	}
	return env
}

// service is one mesh built from the tool's files, serving its caller's
// SPIFFE ID on a loopback port.
type service struct {
	m    *mesh.Mesh
	addr string
}

// newService sets the tool's variables and calls mesh.New, as a service
// started after `eval $(go run ./examples/svid ...)` would.
func newService(t *testing.T, ctx context.Context, env map[string]string, opts ...mesh.Option) *service {
	t.Helper()
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", "")
	for k, v := range env {
		t.Setenv(k, v)
	}
	m, err := mesh.New(ctx, opts...)
	if err != nil {
		t.Fatalf("mesh.New with %v: %v", env, err)
	}
	t.Cleanup(func() { m.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() {
		served <- m.Serve(sctx, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			caller, _ := security.PeerID(r.Context())
			fmt.Fprintf(w, "hello %s", caller)
		}))
	}()
	t.Cleanup(func() { cancel(); <-served })
	return &service{m: m, addr: ln.Addr().String()}
}

// get calls service name at addr through from's mesh.
func get(ctx context.Context, from *mesh.Mesh, name string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+name+"/", nil)
	if err != nil {
		return "", err
	}
	resp, err := from.HTTPClient().Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return fmt.Sprintf("%d %s", resp.StatusCode, body), err
}

// Two services issued from one -ca directory accept each other's SVIDs:
// each calls the other over mTLS and is seen by its SPIFFE ID.
func TestTwoServicesShareTheCA(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	caDir := filepath.Join(dir, "ca")
	ordersEnv := issue(t, "-ca", caDir, "-out", filepath.Join(dir, "orders"), "-id", "spiffe://example.org/ns/default/sa/orders")
	caPEM, err := os.ReadFile(filepath.Join(caDir, caCertFile))
	if err != nil {
		t.Fatalf("the CA was not kept in -ca: %v", err)
	}
	frontendEnv := issue(t, "-ca", caDir, "-out", filepath.Join(dir, "frontend"), "-id", "spiffe://example.org/ns/default/sa/frontend", "-ttl", "1h")
	if again, _ := os.ReadFile(filepath.Join(caDir, caCertFile)); !bytes.Equal(again, caPEM) {
		t.Fatal("the second run replaced the CA in -ca instead of reusing it")
	}

	orders := newService(t, ctx, ordersEnv)
	frontend := newService(t, ctx, frontendEnv, mesh.WithEndpoints("orders", orders.addr))
	ordersClient := newService(t, ctx, ordersEnv, mesh.WithEndpoints("frontend", frontend.addr))

	for _, tc := range []struct {
		name string
		from *mesh.Mesh
		to   string
		want string
	}{
		{"frontend calls orders", frontend.m, "orders", "200 hello spiffe://example.org/ns/default/sa/frontend"},
		{"orders calls frontend", ordersClient.m, "frontend", "200 hello spiffe://example.org/ns/default/sa/orders"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := get(ctx, tc.from, tc.to)
			if err != nil {
				t.Fatalf("GET http://%s/: %v", tc.to, err)
			}
			if got != tc.want {
				t.Errorf("GET http://%s/ = %q, want %q", tc.to, got, tc.want)
			}
		})
	}
}

// Without -ca each run makes its own CA, so the two services do not trust
// each other: the handshake fails and the handler never runs.
func TestSeparateCAsDoNotTrustEachOther(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ordersEnv := issue(t, "-out", filepath.Join(dir, "orders"), "-id", "spiffe://example.org/ns/default/sa/orders")
	strangerEnv := issue(t, "-out", filepath.Join(dir, "stranger"), "-id", "spiffe://example.org/ns/default/sa/stranger")
	orders := newService(t, ctx, ordersEnv)
	stranger := newService(t, ctx, strangerEnv, mesh.WithEndpoints("orders", orders.addr))
	got, err := get(ctx, stranger.m, "orders")
	if want := "unknown authority"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("GET http://orders/ from another CA's SVID = %q, %v; want an error containing %q", got, err, want)
	}
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	caDir := filepath.Join(dir, "ca")
	issue(t, "-ca", caDir, "-out", filepath.Join(dir, "a"), "-id", "spiffe://example.org/ns/default/sa/a")
	halfCA := filepath.Join(dir, "half")
	if err := os.MkdirAll(halfCA, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(halfCA, caCertFile), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no -out", []string{"-id", "spiffe://example.org/ns/default/sa/a"}, "svid: -out is required"},
		{"no -id", []string{"-out", out}, "svid: -id is required"},
		{"zero -ttl", []string{"-out", out, "-id", "spiffe://example.org/ns/default/sa/a", "-ttl", "0s"}, "svid: -ttl 0s: must be positive"},
		{"not a SPIFFE ID", []string{"-out", out, "-id", "https://example.org/a"}, `svid: -id "https://example.org/a": `},
		{"no path", []string{"-out", out, "-id", "spiffe://example.org"}, "a workload's ID needs a path"},
		{"another trust domain", []string{"-ca", caDir, "-out", out, "-id", "spiffe://other.org/ns/default/sa/a"}, `is the CA of trust domain "example.org", not of "other.org"`},
		{"CA without its key", []string{"-ca", halfCA, "-out", out, "-id", "spiffe://example.org/ns/default/sa/a"}, "svid: -ca: open " + filepath.Join(halfCA, caKeyFile)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseFlags(tc.args, io.Discard)
			if err == nil {
				err = run(c, io.Discard)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
