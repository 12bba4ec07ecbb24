package mesh_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/goleak"

	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/resilience"
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
