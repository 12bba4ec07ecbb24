package mesh_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/resilience"
	"github.com/weftmesh/weft/security"
)

// TestPlaintextClientToStrictServer: a plaintext mesh client calling a
// strict mTLS server gets an error saying the server requires mTLS, over
// HTTP/1, h2c and gRPC, and over HTTP it is a connect failure: retried on
// another endpoint, so a rollout of mTLS to some endpoints fails no
// request that a plaintext endpoint can serve.
func TestPlaintextClientToStrictServer(t *testing.T) {
	ca := newCA(t, shop)
	server := workloadAPI(t, ca, ordersID)
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", server.Addr())
	strict := newMesh(t)
	strictHTTP := serveWhoami(t, strict)
	strictGRPC := serveHealth(t, strict, &countingHealth{})
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", "")
	plainHTTP := serveWhoami(t, newMesh(t))

	for _, h2c := range []bool{false, true} {
		name := map[bool]string{false: "HTTP/1", true: "h2c"}[h2c]
		t.Run(name+" error", func(t *testing.T) {
			m := newMesh(t, mesh.WithEndpoints("orders", strictHTTP), mesh.WithHTTP2(h2c),
				mesh.WithRetryPolicy(resilience.RetryPolicy{NumRetries: -1}))
			resp, err := m.HTTPClient().Get("http://orders/")
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				t.Fatalf("got %d %q, want an error", resp.StatusCode, body)
			}
			if !strings.Contains(err.Error(), "the server requires mTLS") || !strings.Contains(err.Error(), strictHTTP) {
				t.Errorf("err = %v, want one saying the server %s requires mTLS", err, strictHTTP)
			}
			if !errors.Is(err, security.ErrMTLSRequired) {
				t.Errorf("err = %v, want errors.Is(err, security.ErrMTLSRequired)", err)
			}
		})
		t.Run(name+" rollout", func(t *testing.T) {
			// Half the endpoints upgraded to strict: every request
			// still succeeds, retried on the plaintext one.
			m := newMesh(t, mesh.WithEndpoints("orders", strictHTTP, plainHTTP), mesh.WithHTTP2(h2c))
			failed := 0
			for i := 0; i < 100; i++ {
				resp, err := m.HTTPClient().Get("http://orders/")
				if err != nil {
					failed++
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed++
				}
			}
			if failed != 0 {
				t.Errorf("%d of 100 requests failed, want 0", failed)
			}
		})
	}

	t.Run("gRPC", func(t *testing.T) {
		m := newMesh(t, mesh.WithEndpoints("inventory", strictGRPC))
		cc, err := m.DialGRPC("inventory")
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		if s := status.Convert(err); s.Code() != codes.Unavailable || !strings.Contains(s.Message(), "the server requires mTLS") {
			t.Errorf("status = %v, want Unavailable saying the server requires mTLS", err)
		}
	})
}
