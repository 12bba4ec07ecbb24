package balancer_test

import (
	"context"
	"net"
	"sync"
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
	"github.com/weftmesh/weft/resolver"
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
	return serveBackend(t, lis)
}

// serveBackend is startBackend on a listener of the caller's.
func serveBackend(t *testing.T, lis net.Listener) *backend {
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

// dialStatic returns a channel to the static service "svc" of eps,
// through Weft's gRPC resolver (so endpoints carry their priority and
// locality), balanced by serviceConfig; both close when the test ends.
func dialStatic(t *testing.T, serviceConfig string, eps ...resolver.Endpoint) *grpc.ClientConn {
	t.Helper()
	static := resolver.NewStatic(map[string][]resolver.Endpoint{"svc": eps})
	t.Cleanup(func() { static.Close() })
	cc, err := grpc.NewClient("weft-test:///svc",
		grpc.WithResolvers(resolver.NewGRPCBuilder("weft-test", static, nil)),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(serviceConfig))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// deadAddr returns a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().String()
}

// callsTo makes n calls (fail-fast, so a pick that fails fails the call)
// and returns what each backend served meanwhile.
func callsTo(t *testing.T, ctx context.Context, cc *grpc.ClientConn, n int, backends ...*backend) []int64 {
	t.Helper()
	before := make([]int64, len(backends))
	for i, b := range backends {
		before[i] = b.calls.Load()
	}
	client := healthpb.NewHealthClient(cc)
	for i := range n {
		if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("call %d of %d: %v", i, n, err)
		}
	}
	out := make([]int64, len(backends))
	for i, b := range backends {
		out[i] = b.calls.Load() - before[i]
	}
	return out
}

// TestGRPCServiceConfigFor runs a composed Builder, priority failover
// around round_robin, in a gRPC channel: the endpoints reach it with their
// priorities, so the two of priority 0 take every call and priority 1's
// none. Once released, the config makes no new channel; the channel made
// keeps working.
func TestGRPCServiceConfigFor(t *testing.T) {
	a, b, p1 := startBackend(t), startBackend(t), startBackend(t)
	sc, release := balancer.GRPCServiceConfigFor(balancer.NewPriorityLocality(balancer.Get(balancer.RoundRobin)))
	cc := dialStatic(t, sc,
		resolver.Endpoint{Addr: a.addr}, resolver.Endpoint{Addr: b.addr}, resolver.Endpoint{Addr: p1.addr, Priority: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Until both are connected, calls go to the one that is.
	for i := 0; a.calls.Load() == 0 || b.calls.Load() == 0; i++ {
		if i == 1000 {
			t.Fatal("priority 0's endpoints never both served a call")
		}
		callsTo(t, ctx, cc, 1)
	}
	if got := callsTo(t, ctx, cc, 100, a, b, p1); got[0] < 40 || got[1] < 40 || got[2] != 0 {
		t.Errorf("calls per endpoint %v (priorities 0, 0, 1), want priority 0's two sharing them all", got)
	}

	release()
	if cc2, err := grpc.NewClient("passthrough:///"+a.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(sc)); err == nil {
		cc2.Close()
		t.Error("a released config made a channel")
	}
	callsTo(t, ctx, cc, 10)
}

// TestGRPCFailedConnectionCountsUnhealthy: priority 0 has two endpoints,
// one of which nothing listens on. Its failed connection makes it an
// unhealthy endpoint to the policy, as an ejection would, so priority 0's
// health is 140 × 1/2 = 70%: it keeps 70% of the calls and priority 1
// takes 30% (±6 points over 1,000 calls wanted), where a channel that
// only knew its connected endpoints would keep them all in priority 0.
func TestGRPCFailedConnectionCountsUnhealthy(t *testing.T) {
	p0, p1 := startBackend(t), startBackend(t)
	sc, release := balancer.GRPCServiceConfigFor(balancer.NewPriorityLocality(balancer.Get(balancer.RoundRobin)))
	defer release()
	cc := dialStatic(t, sc,
		resolver.Endpoint{Addr: p0.addr}, resolver.Endpoint{Addr: deadAddr(t)}, resolver.Endpoint{Addr: p1.addr, Priority: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Priority 1 gets nothing until the dead endpoint's connection fails.
	for i := 0; p1.calls.Load() == 0; i++ {
		if i == 5000 {
			t.Fatal("priority 1 never served a call")
		}
		callsTo(t, ctx, cc, 1)
	}
	const n = 1000
	got := callsTo(t, ctx, cc, n, p0, p1)
	t.Logf("%d calls: priority 0 %d, priority 1 %d", n, got[0], got[1])
	if got[0] < 640 || got[0] > 760 || got[0]+got[1] != n {
		t.Errorf("priority 0 served %d and priority 1 %d of %d calls, want 70%% ± 6 and the rest", got[0], got[1], n)
	}
}

// TestGRPCPanicPicksReadyEndpoints: with three of four endpoints refusing
// connections, the only priority is in panic (25% healthy, under Envoy's
// 50% threshold) and random draws from all four; a pick that lands on an
// endpoint without a connection is redone, and after four such draws (a
// third of the picks) goes to the ready endpoint, so every fail-fast call
// succeeds.
func TestGRPCPanicPicksReadyEndpoints(t *testing.T) {
	live := startBackend(t)
	sc, release := balancer.GRPCServiceConfigFor(balancer.NewPriorityLocality(balancer.Get(balancer.Random)))
	defer release()
	cc := dialStatic(t, sc, resolver.Endpoint{Addr: deadAddr(t)}, resolver.Endpoint{Addr: live.addr},
		resolver.Endpoint{Addr: deadAddr(t)}, resolver.Endpoint{Addr: deadAddr(t)})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if got := callsTo(t, ctx, cc, 300, live); got[0] != 300 {
		t.Errorf("the live endpoint served %d of 300 calls", got[0])
	}
}

// TestGRPCPickOverride sends calls carrying a GRPCPick: an override to a
// READY endpoint takes every call and Picked reports it; an override that
// names no endpoint, or one Tried reports, leaves the policy to pick.
func TestGRPCPickOverride(t *testing.T) {
	bs := []*backend{startBackend(t), startBackend(t), startBackend(t)}
	var eps []resolver.Endpoint
	for _, b := range bs {
		eps = append(eps, resolver.Endpoint{Addr: b.addr})
	}
	cc := dialStatic(t, balancer.GRPCServiceConfig(balancer.RoundRobin), eps...)
	client := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	run := func(p func() *balancer.GRPCPick) ([]int64, map[string]int) {
		t.Helper()
		before := make([]int64, len(bs))
		for i, b := range bs {
			before[i] = b.calls.Load()
		}
		picked := map[string]int{}
		for range 60 {
			pick := p()
			if _, err := client.Check(balancer.ContextWithGRPCPick(ctx, pick), &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true)); err != nil {
				t.Fatal(err)
			}
			picked[pick.Picked()]++
		}
		out := make([]int64, len(bs))
		for i, b := range bs {
			out[i] = b.calls.Load() - before[i]
		}
		return out, picked
	}
	got, picked := run(func() *balancer.GRPCPick { return &balancer.GRPCPick{Override: bs[1].addr} })
	if got[1] != 60 || picked[bs[1].addr] != 60 {
		t.Errorf("override to %s: calls per backend %v, picked %v", bs[1].addr, got, picked)
	}
	got, picked = run(func() *balancer.GRPCPick { return &balancer.GRPCPick{Override: "127.0.0.1:1"} })
	if got[0] < 10 || got[1] < 10 || got[2] < 10 || len(picked) != 3 {
		t.Errorf("override to no endpoint: calls per backend %v, picked %v; want them spread", got, picked)
	}
	got, _ = run(func() *balancer.GRPCPick {
		return &balancer.GRPCPick{Override: bs[1].addr, Tried: triedSet{bs[1].addr: true}}
	})
	if got[1] != 0 {
		t.Errorf("override to a tried endpoint: calls per backend %v, want none to %s", got, bs[1].addr)
	}
}

// heldListener accepts no connection until released: a client's TCP
// connection completes in the kernel, but the server never answers its
// HTTP/2 preface, so the channel's SubConn stays CONNECTING meanwhile.
type heldListener struct {
	net.Listener
	release, closed chan struct{}
	once            sync.Once
}

func (l *heldListener) Accept() (net.Conn, error) {
	select {
	case <-l.release:
		return l.Listener.Accept()
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *heldListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// startHeldBackend is startBackend behind a heldListener; release lets it
// answer.
func startHeldBackend(t *testing.T) (*backend, func()) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	held := &heldListener{Listener: lis, release: make(chan struct{}), closed: make(chan struct{})}
	var once sync.Once
	return serveBackend(t, held), func() { once.Do(func() { close(held.release) }) }
}

// TestGRPCRetryWaitsForAnUntriedConnection: a retry whose only untried
// endpoint is still connecting waits for that connection rather than go
// back to the endpoint that just failed it, as Envoy's previous_hosts
// would send it there and connect. Going back would spend the retry on a
// known failure: right after a channel starts, every retry of a call
// hashed to a failing endpoint did, until its neighbour had connected.
func TestGRPCRetryWaitsForAnUntriedConnection(t *testing.T) {
	ready := startBackend(t)
	slow, release := startHeldBackend(t)
	defer release()
	cc := dialStatic(t, balancer.GRPCServiceConfig(balancer.RoundRobin),
		resolver.Endpoint{Addr: ready.addr}, resolver.Endpoint{Addr: slow.addr})
	client := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The channel is READY once one endpoint is; the other stays
	// connecting until released.
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Fatal(err)
	}
	if ready.calls.Load() != 1 {
		t.Fatalf("the first call went to the held backend, which cannot answer yet")
	}
	// The retry of a call that failed on the ready endpoint.
	time.AfterFunc(200*time.Millisecond, release)
	pick := &balancer.GRPCPick{Tried: triedSet{ready.addr: true}}
	if _, err := client.Check(balancer.ContextWithGRPCPick(ctx, pick), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	if got := pick.Picked(); got != slow.addr {
		t.Errorf("the retry went to %s, want %s, the untried endpoint, once connected", got, slow.addr)
	}
	if ready.calls.Load() != 1 || slow.calls.Load() != 1 {
		t.Errorf("calls: %d to the tried endpoint, %d to the untried one; want 1 and 1", ready.calls.Load(), slow.calls.Load())
	}
}
