package mesh_test

import (
	"context"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/goleak"

	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/resilience"
	"github.com/weftmesh/weft/security"
	"github.com/weftmesh/weft/security/spiffetest"
)

// A bootstrap that is valid JSON but unusable must fail New with an error
// naming the source and the field, never a panic from tearing down the
// half-built mesh, and leave no goroutine behind.
func TestNewRefusesUnusableBootstrap(t *testing.T) {
	tests := []struct {
		name      string
		bootstrap string
		wantField string
	}{
		{"no channel_creds", `{"xds_servers":[{"server_uri":"127.0.0.1:1"}]}`, "xds_servers[0].channel_creds"},
		{"empty channel_creds", `{"xds_servers":[{"server_uri":"127.0.0.1:1","channel_creds":[]}]}`, "xds_servers[0].channel_creds"},
		{"bogus channel_creds", `{"xds_servers":[{"server_uri":"127.0.0.1:1","channel_creds":[{"type":"bogus"}]}]}`, "xds_servers[0].channel_creds"},
		{"authority template", `{"xds_servers":[{"server_uri":"127.0.0.1:1","channel_creds":[{"type":"insecure"}]}],
			"authorities":{"a.example":{"client_listener_resource_name_template":"xdstp://b.example/x/%s"}}}`, `authorities["a.example"].client_listener_resource_name_template`},
		{"authority server creds", `{"xds_servers":[{"server_uri":"127.0.0.1:1","channel_creds":[{"type":"insecure"}]}],
			"authorities":{"a.example":{"xds_servers":[{"server_uri":"127.0.0.1:2","channel_creds":[{"type":"bogus"}]}]}}}`, `authorities["a.example"].xds_servers[0].channel_creds`},
		{"certificate provider", `{"xds_servers":[{"server_uri":"127.0.0.1:1","channel_creds":[{"type":"insecure"}]}],
			"certificate_providers":{"p":{}}}`, `certificate_providers["p"].plugin_name`},
	}
	for _, tt := range tests {
		for _, via := range []string{mesh.EnvBootstrapConfig, "WithBootstrap"} {
			t.Run(tt.name+"/"+via, func(t *testing.T) {
				defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
				var opts []mesh.Option
				if via == "WithBootstrap" {
					opts = append(opts, mesh.WithBootstrap([]byte(tt.bootstrap)))
				} else {
					t.Setenv(via, tt.bootstrap)
				}
				var (
					m   *mesh.Mesh
					err error
				)
				func() {
					defer func() {
						if p := recover(); p != nil {
							t.Fatalf("mesh.New panicked: %v", p)
						}
					}()
					m, err = mesh.New(context.Background(), opts...)
				}()
				if err == nil {
					m.Close()
					t.Fatalf("mesh.New accepted the bootstrap %s", tt.bootstrap)
				}
				for _, want := range []string{via, tt.wantField} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error = %q, want it to name %q", err, want)
					}
				}
			})
		}
	}
}

// A caller that reads each response to EOF and never closes the body, which
// plain net/http tolerates, must not hold a max_requests slot for ever:
// with a limit of 3, every one of 12 such requests must succeed, on the
// plain, retrying and hedging paths alike.
func TestMaxRequestsSlotFreedAtEOF(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	}))
	defer srv.Close()
	tests := []struct {
		name string
		opts []mesh.Option
	}{
		{"plain", nil},
		{"retry with timeouts", []mesh.Option{mesh.WithRetryPolicy(resilience.RetryPolicy{
			NumRetries: 2, PerTryTimeout: 10 * time.Second, Timeout: 20 * time.Second})}},
		{"hedging", []mesh.Option{mesh.WithHedging(resilience.HedgePolicy{Delay: 10 * time.Second})}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := append([]mesh.Option{mesh.WithEndpoints("orders", srv.Listener.Addr().String()),
				mesh.WithCircuitBreaker(resilience.Limits{MaxRequests: 3})}, tt.opts...)
			m := newMesh(t, opts...)
			c := m.HTTPClient()
			for i := range 12 {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				req, _ := http.NewRequestWithContext(ctx, "GET", "http://orders/items", nil)
				resp, err := c.Do(req)
				if err != nil {
					cancel()
					t.Fatalf("request %d of 12 over max_requests 3, bodies read to EOF and never closed: %v", i+1, err)
				}
				b, err := io.ReadAll(resp.Body) // and no Close
				cancel()
				if err != nil || string(b) != "hello" {
					t.Fatalf("request %d: body %q, %v; want hello", i+1, b, err)
				}
			}
		})
	}
}

// A Weft-Timeout too large for a time.Duration means "no tighter budget
// than the server's own", never an expired deadline from an overflow.
func TestTimeoutHeaderDoesNotOverflow(t *testing.T) {
	m := newMesh(t)
	type seen struct {
		err      error
		deadline time.Time
		has      bool
	}
	got := make(chan seen, 1)
	h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dl, ok := r.Context().Deadline()
		got <- seen{r.Context().Err(), dl, ok}
	}))
	for _, v := range []string{"9223372036855", "9300000000000", "18446744073709", "9223372036854775807", "99999999999999999999999"} {
		t.Run(v, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/", nil)
			req.Header.Set(mesh.TimeoutHeader, v)
			h.ServeHTTP(httptest.NewRecorder(), req)
			s := <-got
			if s.err != nil {
				t.Fatalf("%s: %s: the handler's context is done (%v), want a live one", mesh.TimeoutHeader, v, s.err)
			}
			if s.has && time.Until(s.deadline) < 24*time.Hour {
				t.Errorf("%s: %s: deadline in %v, want at least a day", mesh.TimeoutHeader, v, time.Until(s.deadline))
			}
		})
	}
	// A normal value still bounds the request.
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set(mesh.TimeoutHeader, "60000")
	h.ServeHTTP(httptest.NewRecorder(), req)
	if s := <-got; !s.has || time.Until(s.deadline) > time.Minute {
		t.Errorf("%s: 60000: deadline %v (set %v), want within a minute", mesh.TimeoutHeader, s.deadline, s.has)
	}
}

// writeSVIDFiles writes svid and ca's bundle as the PEM files the
// WEFT_SVID_* variables name.
func writeSVIDFiles(t *testing.T, svid *x509svid.SVID, ca *spiffetest.CA) (certFile, keyFile, bundleFile string) {
	t.Helper()
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	bundlePEM, err := ca.Bundle().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile, bundleFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "bundle.pem")
	for name, data := range map[string][]byte{certFile: certPEM, keyFile: keyPEM, bundleFile: bundlePEM} {
		if err := os.WriteFile(name, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile, bundleFile
}

// Every file New reads from a variable is bounded and must be a regular
// file: a FIFO with no writer, /dev/zero or an oversized file fails New at
// once with an error naming the variable, instead of hanging it or
// exhausting memory.
func TestNewRefusesUnboundedFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	sparse := func(size int64) string {
		f, err := os.CreateTemp(dir, "big")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		return f.Name()
	}
	big16, big1 := sparse(16<<20+1), sparse(1<<20+1)
	ca := newCA(t, shop)
	svid, err := ca.IssueX509SVID(ordersID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, bundleFile := writeSVIDFiles(t, svid, ca)
	svidEnv := func(cert, key, bundle string) map[string]string {
		return map[string]string{mesh.EnvSVIDCertFile: cert, mesh.EnvSVIDKeyFile: key, mesh.EnvBundleFile: bundle}
	}
	tests := []struct {
		name    string
		env     map[string]string
		wantVar string
		want    string
	}{
		{"bootstrap fifo", map[string]string{mesh.EnvBootstrap: fifo}, mesh.EnvBootstrap, "named pipe (FIFO) is not a regular file"},
		{"bootstrap dev zero", map[string]string{mesh.EnvBootstrap: "/dev/zero"}, mesh.EnvBootstrap, "device is not a regular file"},
		{"bootstrap too large", map[string]string{mesh.EnvBootstrap: big16}, mesh.EnvBootstrap, "larger than the limit of 16 MiB"},
		{"policy fifo", map[string]string{mesh.EnvAuthzPolicy: fifo}, mesh.EnvAuthzPolicy, "named pipe (FIFO) is not a regular file"},
		{"policy dev zero", map[string]string{mesh.EnvAuthzPolicy: "/dev/zero"}, mesh.EnvAuthzPolicy, "device is not a regular file"},
		{"policy too large", map[string]string{mesh.EnvAuthzPolicy: big16}, mesh.EnvAuthzPolicy, "larger than the limit of 16 MiB"},
		{"cert fifo", svidEnv(fifo, keyFile, bundleFile), mesh.EnvSVIDCertFile, "named pipe (FIFO) is not a regular file"},
		{"key dev zero", svidEnv(certFile, "/dev/zero", bundleFile), mesh.EnvSVIDKeyFile, "device is not a regular file"},
		{"bundle too large", svidEnv(certFile, keyFile, big1), mesh.EnvBundleFile, "larger than the limit of 1 MiB"},
		{"bundle fifo", svidEnv(certFile, keyFile, fifo), mesh.EnvBundleFile, "named pipe (FIFO) is not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			type result struct {
				m   *mesh.Mesh
				err error
			}
			ch := make(chan result, 1)
			go func() {
				m, err := mesh.New(context.Background())
				ch <- result{m, err}
			}()
			var r result
			select {
			case r = <-ch:
			case <-time.After(20 * time.Second):
				t.Fatal("mesh.New still blocked after 20s")
			}
			if r.err == nil {
				r.m.Close()
				t.Fatal("mesh.New succeeded, want an error")
			}
			if !strings.Contains(r.err.Error(), tt.wantVar+"=") || !strings.Contains(r.err.Error(), tt.want) {
				t.Errorf("mesh.New error = %q, want it to name %s and say %q", r.err, tt.wantVar, tt.want)
			}
		})
	}
}

// expiredSVID is an SVID for id from ca whose validity ended an hour ago.
func expiredSVID(t *testing.T, ca *spiffetest.CA, id spiffeid.ID) *x509svid.SVID {
	t.Helper()
	certs, key, err := ca.SignCertificate(&x509.Certificate{
		URIs:                  []*url.URL{id.URL()},
		NotBefore:             time.Now().Add(-2 * time.Hour),
		NotAfter:              time.Now().Add(-time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}
}

// New refuses an identity of its own that is already expired, or that no
// bundle of its own trust domain verifies, naming where it came from.
func TestNewRefusesBadOwnIdentity(t *testing.T) {
	ca, other := newCA(t, shop), newCA(t, otherDomain)
	good, err := ca.IssueX509SVID(ordersID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	expired := expiredSVID(t, ca, ordersID)
	// otherSameTD is a second CA that calls itself shop.example: a
	// bundle file of it has the right name and the wrong key.
	otherSameTD := newCA(t, shop)

	tests := []struct {
		name  string
		setup func(t *testing.T) []mesh.Option
		want  []string
	}{
		{"workload API expired SVID", func(t *testing.T) []mesh.Option {
			api := workloadAPI(t, ca, ordersID)
			api.SetX509SVID(expired)
			t.Setenv(mesh.EnvSPIFFESocket, api.Addr())
			return nil
		}, []string{mesh.EnvSPIFFESocket + "=", "Workload API", "SVID has expired", ordersID.String()}},
		{"workload API without own bundle", func(t *testing.T) []mesh.Option {
			api, err := spiffetest.StartWorkloadAPI(ca, ordersID, spiffetest.WithBundles(other.Bundle()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { api.Close() })
			t.Setenv(mesh.EnvSPIFFESocket, api.Addr())
			return nil
		}, []string{mesh.EnvSPIFFESocket + "=", "Workload API", "no trust bundle", `"shop.example"`}},
		{"files expired SVID", func(t *testing.T) []mesh.Option {
			cert, key, bundle := writeSVIDFiles(t, expired, ca)
			t.Setenv(mesh.EnvSVIDCertFile, cert)
			t.Setenv(mesh.EnvSVIDKeyFile, key)
			t.Setenv(mesh.EnvBundleFile, bundle)
			return nil
		}, []string{mesh.EnvSVIDCertFile + "=", "SVID has expired"}},
		{"files bundle of another CA", func(t *testing.T) []mesh.Option {
			cert, key, bundle := writeSVIDFiles(t, good, otherSameTD)
			t.Setenv(mesh.EnvSVIDCertFile, cert)
			t.Setenv(mesh.EnvSVIDKeyFile, key)
			t.Setenv(mesh.EnvBundleFile, bundle)
			return nil
		}, []string{mesh.EnvBundleFile + "=", "no trust bundle", "does not verify"}},
		{"option expired SVID", func(t *testing.T) []mesh.Option {
			return []mesh.Option{mesh.WithX509Source(security.NewStaticSource(expired, ca.Bundle()))}
		}, []string{"WithX509Source", "SVID has expired"}},
		{"option without own bundle", func(t *testing.T) []mesh.Option {
			return []mesh.Option{mesh.WithX509Source(security.NewStaticSource(good, other.Bundle()))}
		}, []string{"WithX509Source", "no trust bundle"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.setup(t)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			m, err := mesh.New(ctx, opts...)
			if err == nil {
				m.Close()
				t.Fatal("mesh.New accepted the identity, want an error")
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("mesh.New error = %q, want it to say %q", err, want)
				}
			}
		})
	}
}

// An identity that goes bad after New (a rotation to an expired SVID, a
// bundle without the service's own trust domain) makes /readyz answer 503
// with the reason, and a good one makes it ready again.
func TestReadyzReportsBadOwnIdentity(t *testing.T) {
	ca, other := newCA(t, shop), newCA(t, otherDomain)
	api := workloadAPI(t, ca, ordersID)
	t.Setenv(mesh.EnvSPIFFESocket, api.Addr())
	admin := freeAddr(t)
	newMesh(t, mesh.WithAdminAddr(admin))
	c := adminClient(t)
	readyURL := "http://" + admin + "/readyz"

	// waitReadyz polls /readyz until its answer has code and contains want.
	waitReadyz := func(t *testing.T, code int, want string) {
		t.Helper()
		var (
			got  int
			body string
		)
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			got, _, body = fetch(t, c, readyURL)
			if got == code && strings.Contains(body, want) {
				return
			}
		}
		t.Fatalf("/readyz = %d %q, want %d with %q", got, body, code, want)
	}
	waitReadyz(t, http.StatusOK, "ok")

	api.SetX509SVID(expiredSVID(t, ca, ordersID))
	waitReadyz(t, http.StatusServiceUnavailable, "SVID has expired")

	if _, err := api.Rotate(); err != nil {
		t.Fatal(err)
	}
	waitReadyz(t, http.StatusOK, "ok")

	api.SetBundles(other.Bundle())
	waitReadyz(t, http.StatusServiceUnavailable, `no trust bundle of this service's own trust domain verifies its SVID: the source has no bundle for trust domain "shop.example"`)

	api.SetBundles(ca.Bundle())
	waitReadyz(t, http.StatusOK, "ok")
}
