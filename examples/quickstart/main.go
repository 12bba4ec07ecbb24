// Command quickstart shows Weft on one machine with nothing installed but
// Go: it starts three replicas of an HTTP service "orders" and three of a
// gRPC service "inventory" on 127.0.0.1, then sends traffic through a Weft
// mesh that knows them by name only (static discovery, no control plane),
// and prints how the requests were spread.
//
//	go run ./examples/quickstart
//	go run ./examples/quickstart -n 900 -policy round_robin
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/mesh"
)

func main() {
	n := flag.Int("n", 300, "requests per protocol")
	policy := flag.String("policy", "round_robin", "balancer policy (WEFT_LB_POLICY)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Stdout, *n, *policy); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// summary is what a run measured, for the test and the last line.
type summary struct {
	httpHits, grpcHits map[string]int
	failed             int
	elapsed            time.Duration
}

func run(ctx context.Context, out io.Writer, n int, policy string) error {
	_, err := story(ctx, out, n, policy)
	return err
}

func story(ctx context.Context, out io.Writer, n int, policy string) (*summary, error) {
	if n <= 0 {
		return nil, fmt.Errorf("-n must be positive, got %d", n)
	}
	fmt.Fprintf(out, "Weft quickstart: a client that knows its dependencies by name, no sidecar, no control plane.\n\n")

	// The servers' side: one mesh serves three replicas of each service.
	servers, err := mesh.New(ctx, mesh.WithServiceName("backends"))
	if err != nil {
		return nil, err
	}
	defer servers.Close()
	sctx, stopServers := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stopServers(); wg.Wait() }()

	var orders, inventory []string
	for i := 0; i < 3; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		addr := ln.Addr().String()
		orders = append(orders, addr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			servers.Serve(sctx, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(w, "%s", addr)
			}))
		}()

		gln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		gs, err := servers.NewGRPCServer()
		if err != nil {
			gln.Close()
			return nil, err
		}
		healthpb.RegisterHealthServer(gs, inventoryServer{})
		inventory = append(inventory, gln.Addr().String())
		wg.Add(1)
		go func() { defer wg.Done(); gs.Serve(gln) }()
		defer gs.Stop()
	}
	fmt.Fprintf(out, "Started orders (HTTP) on %s\n", strings.Join(orders, ", "))
	fmt.Fprintf(out, "Started inventory (gRPC) on %s\n\n", strings.Join(inventory, ", "))

	// The client's side: a mesh told where the services are, the way
	// WEFT_ENDPOINTS would tell it in production without a control plane.
	client, err := mesh.New(ctx,
		mesh.WithServiceName("frontend"),
		mesh.WithLBPolicy(policy),
		mesh.WithEndpoints("orders", orders...),
		mesh.WithEndpoints("inventory", inventory...),
	)
	if err != nil {
		return nil, err
	}
	defer client.Close()

	sum := &summary{httpHits: map[string]int{}, grpcHits: map[string]int{}}
	start := time.Now()

	fmt.Fprintf(out, "HTTP: %d × GET http://orders/items through m.HTTPClient() (%s)\n", n, policy)
	hc := client.HTTPClient()
	for i := 0; i < n; i++ {
		addr, err := getOnce(ctx, hc, "http://orders/items")
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			sum.failed++
			continue
		}
		sum.httpHits[addr]++
	}
	printSpread(out, orders, sum.httpHits, n)

	fmt.Fprintf(out, "\ngRPC: %d × Health.Check on DialGRPC(\"inventory\") (%s)\n", n, policy)
	cc, err := client.DialGRPC("inventory")
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	hcl := healthpb.NewHealthClient(cc)
	for i := 0; i < n; i++ {
		var p peer.Peer
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := hcl.Check(cctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p))
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			sum.failed++
			continue
		}
		sum.grpcHits[p.Addr.String()]++
	}
	printSpread(out, inventory, sum.grpcHits, n)

	sum.elapsed = time.Since(start)
	fmt.Fprintf(out, "\n%d of %d requests succeeded in %v; every replica of both services took its share.\n",
		2*n-sum.failed, 2*n, sum.elapsed.Round(time.Millisecond))
	if sum.failed > 0 {
		return sum, fmt.Errorf("%d requests failed", sum.failed)
	}
	return sum, nil
}

func getOnce(ctx context.Context, c *http.Client, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", errors.New(resp.Status)
	}
	return string(b), nil
}

func printSpread(out io.Writer, addrs []string, hits map[string]int, n int) {
	addrs = slices.Clone(addrs)
	slices.Sort(addrs)
	for _, a := range addrs {
		bar := strings.Repeat("█", hits[a]*40/max(n, 1))
		fmt.Fprintf(out, "  %-21s %-14s %4d  (%4.1f%%)\n", a, bar, hits[a], 100*float64(hits[a])/float64(n))
	}
}

// inventoryServer answers health checks: the smallest real gRPC service.
type inventoryServer struct {
	healthpb.UnimplementedHealthServer
}

func (inventoryServer) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func (inventoryServer) List(context.Context, *healthpb.HealthListRequest) (*healthpb.HealthListResponse, error) {
	return nil, status.Error(codes.Unimplemented, "inventory lists nothing")
}
