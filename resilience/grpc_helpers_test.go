package resilience_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// healthBackend is a real gRPC server on loopback whose Check method
// behaves as the test says, given the 1-based number of the call.
type healthBackend struct {
	healthpb.UnimplementedHealthServer
	hits  atomic.Int64
	check func(ctx context.Context, n int64) error
}

func (h *healthBackend) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if err := h.check(ctx, h.hits.Add(1)); err != nil {
		return nil, err
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

const checkMethod = "/grpc.health.v1.Health/Check"

// newHealthBackend starts the server and returns a client connected to it
// through the given dial options.
func newHealthBackend(t testing.TB, check func(context.Context, int64) error, sopts []grpc.ServerOption, dopts ...grpc.DialOption) (*healthBackend, healthpb.HealthClient) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &healthBackend{check: check}
	srv := grpc.NewServer(sopts...)
	healthpb.RegisterHealthServer(srv, h)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient(ln.Addr().String(), append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, dopts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return h, healthpb.NewHealthClient(cc)
}
