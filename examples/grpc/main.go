// Command grpc shows a gRPC service on Weft: a server made by the mesh
// (NewGRPCServer) and a client that dials the service by name (DialGRPC),
// balanced by Weft's policy inside grpc-go.
//
//	go run ./examples/grpc
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/weftmesh/weft/mesh"
)

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "grpc example:", err)
		os.Exit(1)
	}
}

type inventory struct {
	healthpb.UnimplementedHealthServer
}

func (inventory) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func run(ctx context.Context, out io.Writer) error {
	server, err := mesh.New(ctx, mesh.WithServiceName("inventory"))
	if err != nil {
		return err
	}
	defer server.Close()
	var replicas []string
	for i := 0; i < 2; i++ {
		gs, err := server.NewGRPCServer()
		if err != nil {
			return err
		}
		healthpb.RegisterHealthServer(gs, inventory{})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		go gs.Serve(ln)
		defer gs.Stop()
		replicas = append(replicas, ln.Addr().String())
	}

	client, err := mesh.New(ctx, mesh.WithServiceName("frontend"),
		mesh.WithLBPolicy("least_request"), mesh.WithEndpoints("inventory", replicas...))
	if err != nil {
		return err
	}
	defer client.Close()
	cc, err := client.DialGRPC("inventory")
	if err != nil {
		return err
	}
	defer cc.Close()

	seen := map[string]int{}
	hc := healthpb.NewHealthClient(cc)
	for i := 0; i < 20; i++ {
		var p peer.Peer
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := hc.Check(cctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p))
		cancel()
		if err != nil {
			return err
		}
		seen[p.Addr.String()]++
	}
	slices.Sort(replicas)
	for _, r := range replicas {
		fmt.Fprintf(out, "replica %s served %d calls\n", r, seen[r])
	}
	fmt.Fprintf(out, "20 calls to DialGRPC(\"inventory\") over %d replicas (least_request)\n", len(seen))
	return nil
}
