package mesh_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/security"
	"github.com/weftmesh/weft/security/spiffetest"
)

// edgePolicy lets the frontend's SPIFFE ID call anything and anyone call
// /public/ and the gRPC health check: on a public server the first rule,
// naming a principal, can never match.
const edgePolicy = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: edge
spec:
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["shop.example/ns/shop/sa/frontend"]
  - to:
    - operation:
        paths: ["/public/*", "/grpc.health.v1.Health/Check"]
`

// webCert issues a web server certificate for 127.0.0.1 and localhost
// from webCA, a CA of the kind browsers trust (not the mesh's).
func webCert(t *testing.T, webCA *spiffetest.CA) tls.Certificate {
	t.Helper()
	chain, key, err := webCA.SignCertificate(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{chain[0].Raw}, PrivateKey: key, Leaf: chain[0]}
}

// writeKeyPair writes cert as PEM files in dir, each replaced by a rename
// as certbot and Kubernetes do, and returns their paths.
func writeKeyPair(t *testing.T, dir string, cert tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeRenamed(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}))
	writeRenamed(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	return certFile, keyFile
}

func writeRenamed(t *testing.T, name string, b []byte) {
	t.Helper()
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, name); err != nil {
		t.Fatal(err)
	}
}

// browser is a client as a browser is: no client certificate, trusting
// the web CA, HTTP/2 when the server offers it, a new connection per
// request (so that each sees the server's current certificate).
func browser(webCA *spiffetest.CA) *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(webCA.Root())
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
		DisableKeepAlives: true,
	}}
}

// serveOn runs m.Serve with opts on a loopback listener until the test
// ends, answering with the caller's SPIFFE ID or "anonymous".
func serveOn(t *testing.T, m *mesh.Mesh, opts ...mesh.ServerOption) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- m.Serve(ctx, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if id, ok := security.PeerID(r.Context()); ok {
				io.WriteString(w, id.String())
				return
			}
			io.WriteString(w, "anonymous")
		}), opts...)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

func TestEdgeServerTakesBrowsersWhileTheMeshPortStaysStrict(t *testing.T) {
	ca := newCA(t, shop)
	webCA := newCA(t, spiffeid.RequireTrustDomainFromString("web.example"))
	cert := webCert(t, webCA)
	certFile, keyFile := writeKeyPair(t, t.TempDir(), cert)
	policy := filepath.Join(t.TempDir(), "authz.yaml")
	if err := os.WriteFile(policy, []byte(edgePolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("WEFT_AUTHZ_POLICY", policy)
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", workloadAPI(t, ca, ordersID).Addr())
	var logs jsonLogs
	m := newMesh(t, logs.option()) // strict mTLS, the default with an identity
	meshAddr := serveOn(t, m)
	t.Setenv("WEFT_AUTHZ_POLICY", "")
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", workloadAPI(t, ca, frontendID).Addr())
	peer := newMesh(t, mesh.WithEndpoints("orders", meshAddr)).HTTPClient()

	for _, tt := range []struct {
		name   string
		opt    mesh.ServerOption
		scheme string
		mode   string
	}{
		{"public", mesh.Public(), "http", "public"},
		{"public TLS", mesh.PublicTLS(cert), "https", "public TLS"},
		{"public TLS files", mesh.PublicTLSFiles(certFile, keyFile), "https", "public TLS"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			addr := serveOn(t, m, tt.opt)
			b := browser(webCA)
			for _, c := range []struct {
				path       string
				wantStatus int
				wantBody   string
			}{
				// Allowed by the rule without a principal; no identity.
				{"/public/index.html", http.StatusOK, "anonymous"},
				// Only the principal rule allows it, and a public caller
				// has no principal.
				{"/private", http.StatusForbidden, ""},
			} {
				resp, err := b.Get(tt.scheme + "://" + addr + c.path)
				if err != nil {
					t.Fatalf("browser GET %s on the public port: %v", c.path, err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != c.wantStatus || (c.wantBody != "" && string(body) != c.wantBody) {
					t.Errorf("browser GET %s on the public port: %d %q, want %d %q", c.path, resp.StatusCode, body, c.wantStatus, c.wantBody)
				}
				if tt.scheme == "https" {
					if resp.ProtoMajor != 2 {
						t.Errorf("browser GET %s: %s, want HTTP/2 negotiated by ALPN", c.path, resp.Proto)
					}
					if got := resp.TLS.PeerCertificates[0].SerialNumber; got.Cmp(cert.Leaf.SerialNumber) != 0 {
						t.Errorf("public port presented certificate serial %v, want the web certificate's %v", got, cert.Leaf.SerialNumber)
					}
				}
			}
			found := false
			for _, rec := range logs.lines(t, "weft: public server: no client certificate asked for, no peer identity") {
				if rec["addr"] == addr {
					found = true
					if rec["transport"] != tt.mode || rec["protocol"] != "http" {
						t.Errorf("public server line %v: want transport %q, protocol http", rec, tt.mode)
					}
				}
			}
			if !found {
				t.Errorf("no public server line for %s; the log:\n%s", addr, logs.buf.String())
			}
		})
	}

	// The mesh port of the same process still demands a SPIFFE peer: a
	// browser that skips verifying the server is refused for want of a
	// client certificate, a plaintext client by the TLS server, and the
	// frontend's mesh is let in with its identity.
	insecureBrowser := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // the point is the client certificate
	}}
	if resp, err := insecureBrowser.Get("https://" + meshAddr + "/public/index.html"); err == nil {
		resp.Body.Close()
		t.Errorf("a client without a certificate reached the mesh port: %s", resp.Status)
	}
	plain := &http.Client{Timeout: 10 * time.Second}
	if resp, err := plain.Get("http://" + meshAddr + "/public/index.html"); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("a plaintext client reached the mesh port: %s %q", resp.Status, body)
		}
	}
	if got := get(t, peer, "http://orders/private"); got != frontendID.String() {
		t.Errorf("the frontend's mesh on the mesh port got %q, want its identity %s", got, frontendID)
	}
}

func TestPublicGRPCServerServesPlainTLSClients(t *testing.T) {
	ca := newCA(t, shop)
	webCA := newCA(t, spiffeid.RequireTrustDomainFromString("web.example"))
	cert := webCert(t, webCA)
	policy := filepath.Join(t.TempDir(), "authz.yaml")
	if err := os.WriteFile(policy, []byte(edgePolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("WEFT_AUTHZ_POLICY", policy)
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", workloadAPI(t, ca, ordersID).Addr())
	m := newMesh(t)

	serve := func(opts ...grpc.ServerOption) string {
		srv, err := m.NewGRPCServer(opts...)
		if err != nil {
			t.Fatal(err)
		}
		healthpb.RegisterHealthServer(srv, &peerRecorder{seen: make(chan spiffeid.ID, 1)})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(ln)
		t.Cleanup(srv.Stop)
		return ln.Addr().String()
	}
	public, meshPort := serve(mesh.PublicTLS(cert), grpc.MaxRecvMsgSize(1<<20)), serve()

	pool := x509.NewCertPool()
	pool.AddCert(webCA.Root())
	dial := func(addr string) healthpb.HealthClient {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "localhost"})))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return healthpb.NewHealthClient(cc)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	if _, err := dial(public).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("Check on the public gRPC server: %v", err)
	}
	// Watch is allowed only by the principal rule: denied without one.
	stream, err := dial(public).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("Watch on the public gRPC server: %v, want PermissionDenied", err)
	}
	// The mesh's own gRPC server refuses the same client.
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	defer cancelShort()
	if _, err := dial(meshPort).Check(short, &healthpb.HealthCheckRequest{}); err == nil {
		t.Error("a client without a certificate reached the mesh's gRPC server")
	}
}

func TestPublicTLSFilesServesARenewedCertificate(t *testing.T) {
	webCA := newCA(t, spiffeid.RequireTrustDomainFromString("web.example"))
	dir := t.TempDir()
	first := webCert(t, webCA)
	certFile, keyFile := writeKeyPair(t, dir, first)
	var logs jsonLogs
	m := newMesh(t, logs.option())
	addr := serveOn(t, m, mesh.PublicTLSFiles(certFile, keyFile))
	b := browser(webCA)
	serial := func() string {
		resp, err := b.Get("https://" + addr + "/")
		if err != nil {
			t.Fatalf("GET: %v", err)
		}
		resp.Body.Close()
		return resp.TLS.PeerCertificates[0].SerialNumber.String()
	}
	// waitSerial polls until the server presents want; the files are
	// checked at most once a second.
	waitSerial := func(want string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for got := serial(); got != want; got = serial() {
			if time.Now().After(deadline) {
				t.Fatalf("server presents serial %s, want %s", got, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitSerial(first.Leaf.SerialNumber.String())

	renewed := webCert(t, webCA)
	writeKeyPair(t, dir, renewed)
	waitSerial(renewed.Leaf.SerialNumber.String())
	logs.wait(t, "security: certificate reloaded", 1, 5*time.Second)

	// A broken renewal is logged, once, and the last good pair serves on.
	// The files are checked during handshakes, so the test keeps making
	// them.
	writeRenamed(t, keyFile, []byte("not a key"))
	deadline := time.Now().Add(15 * time.Second)
	for len(logs.lines(t, "security: keeping the last good certificate")) == 0 {
		if got := serial(); got != renewed.Leaf.SerialNumber.String() {
			t.Fatalf("after a broken renewal the server presents %s, want the last good %s", got, renewed.Leaf.SerialNumber)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no line about the broken renewal within 15s; the log:\n%s", logs.buf.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		serial() // past another check of the unchanged files
	}
	if n := len(logs.lines(t, "security: keeping the last good certificate")); n != 1 {
		t.Errorf("%d lines about the broken renewal, want 1", n)
	}
}

func TestPublicServerOptionsNameTheirError(t *testing.T) {
	m := newMesh(t)
	missing := filepath.Join(t.TempDir(), "missing.crt")
	for _, tt := range []struct {
		name string
		opt  mesh.ServerOption
		want []string
	}{
		{"missing files", mesh.PublicTLSFiles(missing, missing), []string{"PublicTLSFiles", missing}},
		{"empty file name", mesh.PublicTLSFiles("", ""), []string{"PublicTLSFiles", "empty"}},
		{"empty certificate", mesh.PublicTLS(tls.Certificate{}), []string{"PublicTLS", "no certificate"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			errs := []error{m.Serve(context.Background(), ln, http.NotFoundHandler(), tt.opt)}
			_, gerr := m.NewGRPCServer(tt.opt)
			errs = append(errs, gerr)
			for _, err := range errs {
				if err == nil {
					t.Fatal("no error")
				}
				for _, w := range tt.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
			}
			// Serve closed the listener it could not serve.
			if _, err := ln.Accept(); err == nil {
				t.Error("Serve left the listener open")
			}
		})
	}
}

// TestPublicServerDoesNotFollowTheInboundListener: under a server listener
// template, the control plane's listener for the public port's address
// (STRICT mTLS, RBAC allowing one SPIFFE ID) is the mesh port's
// configuration; the public server serves browsers regardless.
func TestPublicServerDoesNotFollowTheInboundListener(t *testing.T) {
	ca := newCA(t, shop)
	webCA := newCA(t, spiffeid.RequireTrustDomainFromString("web.example"))
	cp := xdstest.NewServer(t)
	var bs map[string]any
	if err := json.Unmarshal(cp.Bootstrap(xdsNode), &bs); err != nil {
		t.Fatal(err)
	}
	bs["server_listener_resource_name_template"] = inboundTemplate
	bootstrap, _ := json.Marshal(bs)
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", workloadAPI(t, ca, ordersID).Addr())
	var logs jsonLogs
	m := newMesh(t, mesh.WithBootstrap(bootstrap), logs.option())
	addr := serveOn(t, m, mesh.PublicTLS(webCert(t, webCA)))
	name := strings.ReplaceAll(inboundTemplate, "%s", addr)
	cp.SetSnapshot(t, xdsNode, "1", inboundRBAC(name, frontendID.String()))

	if got := statusOf(t, browser(webCA), "GET", "https://"+addr+"/items"); got != http.StatusOK {
		t.Errorf("browser GET on the public port under a STRICT inbound listener: %d, want 200", got)
	}
	rec := logs.wait(t, "weft: public server: no client certificate asked for, no peer identity", 1, time.Second)[0]
	if rec["inbound_listener"] != "not followed" {
		t.Errorf("public server line %v: want inbound_listener \"not followed\"", rec)
	}
}
