package mesh_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/mesh"
)

// A plaintext caller that is not a mesh (plain grpc-go) fails fast on a
// strict mTLS server, as a refused connection should: UNAVAILABLE at once,
// not DEADLINE_EXCEEDED after it has waited its whole deadline for a
// connection that keeps coming back.
func TestPlainGRPCClientToStrictServerFailsFast(t *testing.T) {
	ca := newCA(t, shop)
	server := workloadAPI(t, ca, ordersID)
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", server.Addr())
	addr := serveHealth(t, newMesh(t), &countingHealth{})
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("plain gRPC call to a strict server: %v, want UNAVAILABLE without waiting for the deadline", err)
	}
}

// mdHealth answers Check with SERVING and records whether the call's
// incoming metadata carried a forwarded client certificate.
type mdHealth struct {
	healthpb.UnimplementedHealthServer
	saw atomic.Bool
}

func (h *mdHealth) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	for k := range md {
		if strings.Contains(strings.ReplaceAll(k, "_", "-"), "forwarded-client-cert") {
			h.saw.Store(true)
		}
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

// gRPC servers strip x-forwarded-client-cert from incoming metadata as
// HTTP servers strip the header: a forged value reaches neither a policy's
// request.headers condition nor the handler.
func TestGRPCForwardedClientCertNeverReachesRulesOrHandler(t *testing.T) {
	const forged = `By=spiffe://shop.example/ns/shop/sa/orders;URI=spiffe://shop.example/ns/shop/sa/admin`
	call := func(t *testing.T, addr, key string) error {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, key, forged)
		_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	spellings := []string{"x-forwarded-client-cert", "X-Forwarded-Client-Cert", "x_forwarded_client_cert"}
	t.Run("handler", func(t *testing.T) {
		h := &mdHealth{}
		addr := serveHealth(t, newMesh(t), h)
		for _, k := range spellings {
			if err := call(t, addr, k); err != nil {
				t.Fatalf("%s: %v", k, err)
			}
			if h.saw.Load() {
				t.Errorf("with %s: the handler saw a forwarded client certificate", k)
			}
		}
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
		addr := serveHealth(t, newMesh(t, mesh.WithAuthorizationPolicyFile(policy)), &mdHealth{})
		for _, k := range spellings {
			if err := call(t, addr, k); status.Code(err) != codes.PermissionDenied {
				t.Errorf("with %s: %v, want PERMISSION_DENIED (the forged value must not satisfy the rule)", k, err)
			}
		}
	})
}
