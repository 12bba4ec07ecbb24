package mesh_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
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
