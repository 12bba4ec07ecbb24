package xds

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/security/spiffetest"
)

// tlsPKI is a test CA, PEM files in a directory, and what the TLS
// management server saw of its clients.
type tlsPKI struct {
	ca  *spiffetest.CA
	dir string
}

func newTLSPKI(t *testing.T, td string) *tlsPKI {
	t.Helper()
	ca, err := spiffetest.NewCA(spiffeid.RequireTrustDomainFromString(td))
	if err != nil {
		t.Fatal(err)
	}
	p := &tlsPKI{ca: ca, dir: t.TempDir()}
	p.write(t, "ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Root().Raw}))
	return p
}

// write replaces file name in p.dir atomically, as a rotation does.
func (p *tlsPKI) write(t *testing.T, name string, b []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// issue signs a certificate for cn (client) or 127.0.0.1 (server).
func (p *tlsPKI) issue(t *testing.T, cn string, server bool) tls.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: cn}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	chain, key, err := p.ca.SignCertificate(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{chain[0].Raw}, PrivateKey: key, Leaf: chain[0]}
}

// writeClient writes cn's certificate and key as client.pem and key.pem.
func (p *tlsPKI) writeClient(t *testing.T, cn string) {
	t.Helper()
	c := p.issue(t, cn, false)
	der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	p.write(t, "client.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}))
	p.write(t, "key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// serve starts a management server behind TLS that requires a client
// certificate from p's CA and sends the common name of each client it
// accepts on seen.
func (p *tlsPKI) serve(t *testing.T, seen chan<- string) *xdstest.Server {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(p.ca.Root())
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{p.issue(t, "control-plane", true)},
		ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			select {
			case seen <- cs.PeerCertificates[0].Subject.CommonName:
			default:
			}
			return nil
		},
	}
	return xdstest.NewServerWith(t, grpc.Creds(credentials.NewTLS(cfg)))
}

// tlsBootstrap is a bootstrap naming addr with "tls" channel_creds whose
// config is cfg.
func tlsBootstrap(addr string, cfg map[string]any) []byte {
	b, _ := json.Marshal(map[string]any{"node": map[string]any{"id": node},
		"xds_servers": []any{map[string]any{"server_uri": addr, "channel_creds": []any{map[string]any{"type": "tls", "config": cfg}}}}})
	return b
}

// TestControlPlaneMTLS: gRFC A65's "tls" channel credentials with the
// file_watcher provider's files: the client verifies the control plane
// with ca_certificate_file and presents certificate_file; a server that
// requires a client certificate refuses a client without one, and a
// client refuses a server its CA did not sign.
func TestControlPlaneMTLS(t *testing.T) {
	tests := []struct {
		name    string
		cfg     func(p, other *tlsPKI) map[string]any
		wantErr bool
	}{
		{name: "mutual TLS", cfg: func(p, _ *tlsPKI) map[string]any {
			return map[string]any{"ca_certificate_file": filepath.Join(p.dir, "ca.pem"),
				"certificate_file": filepath.Join(p.dir, "client.pem"), "private_key_file": filepath.Join(p.dir, "key.pem")}
		}},
		{name: "no client certificate", wantErr: true, cfg: func(p, _ *tlsPKI) map[string]any {
			return map[string]any{"ca_certificate_file": filepath.Join(p.dir, "ca.pem")}
		}},
		{name: "server of another CA", wantErr: true, cfg: func(p, other *tlsPKI) map[string]any {
			return map[string]any{"ca_certificate_file": filepath.Join(other.dir, "ca.pem"),
				"certificate_file": filepath.Join(p.dir, "client.pem"), "private_key_file": filepath.Join(p.dir, "key.pem")}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, other := newTLSPKI(t, "cp.example"), newTLSPKI(t, "other.example")
			p.writeClient(t, "client-1")
			seen := make(chan string, 10)
			srv := p.serve(t, seen)
			srv.SetSnapshot(t, node, "1", xdstest.Cluster("orders", ""))
			c := newTestClient(t, tlsBootstrap(srv.Addr, tt.cfg(p, other)), fastBackoff())
			r := newRecorder()
			defer c.Watch(ClusterType, "orders", r)()
			if tt.wantErr {
				r.next(t, "error")
				if opened, _ := srv.Streams(); opened != 0 {
					t.Errorf("%d streams opened, want none", opened)
				}
				return
			}
			r.next(t, "update")
			if cn := <-seen; cn != "client-1" {
				t.Errorf("the server saw client %q, want client-1", cn)
			}
		})
	}
}

// TestControlPlaneMTLSReload: a certificate rotated on disk is presented
// from the first connection after refresh_interval.
func TestControlPlaneMTLSReload(t *testing.T) {
	p := newTLSPKI(t, "cp.example")
	p.writeClient(t, "client-1")
	seen := make(chan string, 100)
	srv := p.serve(t, seen)
	srv.SetSnapshot(t, node, "1", xdstest.Cluster("orders", ""))
	c := newTestClient(t, tlsBootstrap(srv.Addr, map[string]any{"ca_certificate_file": filepath.Join(p.dir, "ca.pem"),
		"certificate_file": filepath.Join(p.dir, "client.pem"), "private_key_file": filepath.Join(p.dir, "key.pem"),
		"refresh_interval": "0.05s"}), fastBackoff())
	r := newRecorder()
	defer c.Watch(ClusterType, "orders", r)()
	r.next(t, "update")
	if cn := <-seen; cn != "client-1" {
		t.Fatalf("first connection from %q, want client-1", cn)
	}
	p.writeClient(t, "client-2")
	time.Sleep(100 * time.Millisecond) // past refresh_interval
	srv.Stop()
	srv.Restart(t)
	deadline := time.After(10 * time.Second)
	for {
		select {
		case cn := <-seen:
			if cn == "client-2" {
				return
			}
		case <-deadline:
			t.Fatal("no connection with the rotated certificate within 10 s")
		}
	}
}

// TestControlPlaneTLSBootstrapErrors: a "tls" config that cannot be used
// is refused when the client starts, naming the bootstrap field and the
// file.
func TestControlPlaneTLSBootstrapErrors(t *testing.T) {
	p := newTLSPKI(t, "cp.example")
	p.writeClient(t, "client-1")
	notPEM := p.write(t, "not.pem", []byte("hello"))
	missing := filepath.Join(p.dir, "missing.pem")
	good := map[string]any{"ca_certificate_file": filepath.Join(p.dir, "ca.pem"),
		"certificate_file": filepath.Join(p.dir, "client.pem"), "private_key_file": filepath.Join(p.dir, "key.pem")}
	with := func(k string, v any) map[string]any {
		out := map[string]any{}
		for a, b := range good {
			out[a] = b
		}
		if v == nil {
			delete(out, k)
		} else {
			out[k] = v
		}
		return out
	}
	authority := func(cfg map[string]any) []byte {
		var v map[string]any
		_ = json.Unmarshal(xdstest.BootstrapJSON(node, "127.0.0.1:1"), &v)
		var a map[string]any
		_ = json.Unmarshal(tlsBootstrap("127.0.0.1:2", cfg), &a)
		v["authorities"] = map[string]any{"a": map[string]any{"xds_servers": a["xds_servers"]}}
		b, _ := json.Marshal(v)
		return b
	}
	tests := []struct {
		name      string
		bootstrap []byte
		want      string
	}{
		{"certificate file missing", tlsBootstrap("x", with("certificate_file", missing)),
			`xds_servers[0]: channel_creds (tls).config.certificate_file "` + missing + `": open`},
		{"key file missing", tlsBootstrap("x", with("private_key_file", missing)),
			`xds_servers[0]: channel_creds (tls).config.private_key_file "` + missing + `": open`},
		{"CA file missing", tlsBootstrap("x", with("ca_certificate_file", missing)),
			`channel_creds (tls).config.ca_certificate_file "` + missing + `": open`},
		{"CA file not PEM", tlsBootstrap("x", with("ca_certificate_file", notPEM)),
			`channel_creds (tls).config.ca_certificate_file "` + notPEM + `": no PEM certificate`},
		{"certificate not PEM", tlsBootstrap("x", with("certificate_file", notPEM)),
			`certificate_file "` + notPEM + `" and private_key_file`},
		{"key without certificate", tlsBootstrap("x", with("certificate_file", nil)),
			`xds_servers[0].channel_creds[0].config: certificate_file and private_key_file must be set together`},
		{"bad refresh_interval", tlsBootstrap("x", with("refresh_interval", "soon")),
			`xds_servers[0].channel_creds[0].config.refresh_interval: "soon" is not a duration`},
		{"negative refresh_interval", tlsBootstrap("x", with("refresh_interval", "-5s")),
			`.refresh_interval: "-5s" is not a positive duration`},
		{"an authority's server", authority(with("certificate_file", missing)),
			`authorities["a"]: xds_servers[0]: channel_creds (tls).config.certificate_file "` + missing + `"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := ParseBootstrap(tt.bootstrap)
			if err == nil {
				var c *Client
				c, err = New(b)
				if err == nil {
					c.Close()
				}
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}
