package balancer_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	gresolver "google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/weftmesh/weft/balancer"
)

// backend is a real gRPC server on loopback serving the health service,
// counting the calls it receives.
type backend struct {
	addr  string
	calls atomic.Int64
}

func startBackend(t *testing.T) *backend {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{addr: lis.Addr().String()}
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		b.calls.Add(1)
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return b
}

// TestGRPC runs every policy inside a real gRPC channel, registered with
// grpc-go as "weft_" + name, against three backends, and checks that each
// backend receives calls.
func TestGRPC(t *testing.T) {
	backends := []*backend{startBackend(t), startBackend(t), startBackend(t)}
	for _, name := range allPolicies {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			before := make([]int64, len(backends))
			var addrs []gresolver.Address
			for i, b := range backends {
				before[i] = b.calls.Load()
				addrs = append(addrs, gresolver.Address{Addr: b.addr})
			}
			r := manual.NewBuilderWithScheme("weft-test")
			r.InitialState(gresolver.State{Addresses: addrs})
			cc, err := grpc.NewClient(r.Scheme()+":///backends",
				grpc.WithResolvers(r),
				grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithDefaultServiceConfig(balancer.GRPCServiceConfig(name)))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			client := healthpb.NewHealthClient(cc)
			const calls = 300
			for range calls {
				if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true)); err != nil {
					t.Fatalf("Check: %v", err)
				}
			}
			// Every policy spreads keyless calls (the hashing ones draw a
			// random hash for each), at least a tenth to each backend, but
			// p2c_ewma follows measured latency, which loopback noise may
			// tilt: there it is enough that each backend gets calls.
			least := int64(calls / 10)
			if name == balancer.P2CEWMA {
				least = 1
			}
			var total int64
			for i, b := range backends {
				got := b.calls.Load() - before[i]
				total += got
				if got < least {
					t.Errorf("backend %s got %d of %d calls, want at least %d", b.addr, got, calls, least)
				}
			}
			if total != calls {
				t.Errorf("backends got %d calls, want %d", total, calls)
			}
		})
	}
}
