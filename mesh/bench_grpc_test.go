package mesh_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/xds"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/security/spiffetest"
)

// echoServer answers UnaryCall with a payload of the requested size.
type echoServer struct {
	testgrpc.UnimplementedBenchmarkServiceServer
}

func (echoServer) UnaryCall(_ context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{Payload: &testgrpc.Payload{Body: make([]byte, req.GetResponseSize())}}, nil
}

// serveGRPC serves the echo service on a loopback listener until b ends
// and returns its address.
func serveGRPC(b *testing.B, srv interface {
	grpc.ServiceRegistrar
	Serve(net.Listener) error
	Stop()
}) string {
	b.Helper()
	testgrpc.RegisterBenchmarkServiceServer(srv, echoServer{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	b.Cleanup(func() { srv.Stop(); <-done })
	return ln.Addr().String()
}

// grpcClients returns the paths compared, each already connected and
// answering: plain grpc-go to a plain server; grpc-go's own xds:///
// client, fed by an in-process go-control-plane server, to a plain server;
// Weft's DialGRPC("xds:///...") on the same control plane to the same
// plain server (weftXDS: the like-for-like row against grpc-go's xDS
// client); and Weft's DialGRPC of a mesh service from static endpoints to
// a Weft server (NewGRPCServer). Weft's clients have their retry and
// threshold interceptors and their balancer on the path; telemetry is
// no-op, as it is without OTEL_* variables.
func grpcClients(b *testing.B) (plain, xdsClient, weft, weftXDS testgrpc.BenchmarkServiceClient) {
	b.Helper()
	dial := func(cc *grpc.ClientConn, err error) testgrpc.BenchmarkServiceClient {
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cc.Close() })
		return testgrpc.NewBenchmarkServiceClient(cc)
	}
	plainAddr := serveGRPC(b, grpc.NewServer())
	srvMesh, err := mesh.New(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srvMesh.Close() })
	gs, err := srvMesh.NewGRPCServer()
	if err != nil {
		b.Fatal(err)
	}
	weftAddr := serveGRPC(b, gs)

	plain = dial(grpc.NewClient("passthrough:///"+plainAddr, grpc.WithTransportCredentials(insecure.NewCredentials())))

	cp := xdstest.NewServer(b)
	cp.SetSnapshot(b, "bench-grpc", "1",
		xdstest.Listener("echo:50051", "echo-routes"),
		xdstest.RouteConfig("echo-routes", "*", "echo"),
		xdstest.Cluster("echo", ""),
		xdstest.Endpoints("echo", plainAddr))
	res, err := xds.NewXDSResolverWithConfigForTesting(cp.Bootstrap("bench-grpc"))
	if err != nil {
		b.Fatal(err)
	}
	xdsClient = dial(grpc.NewClient("xds:///echo:50051", grpc.WithResolvers(res), grpc.WithTransportCredentials(insecure.NewCredentials())))

	cliMesh, err := mesh.New(context.Background(), mesh.WithEndpoints("echo", weftAddr))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cliMesh.Close() })
	weft = dial(cliMesh.DialGRPC("echo"))

	xdsMesh, err := mesh.New(context.Background(), mesh.WithBootstrap(cp.Bootstrap("bench-grpc")))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { xdsMesh.Close() })
	weftXDS = dial(xdsMesh.DialGRPC("xds:///echo:50051"))

	for _, c := range []testgrpc.BenchmarkServiceClient{plain, xdsClient, weft, weftXDS} {
		call(b, c, &testgrpc.SimpleRequest{}) // connect and resolve before timing
	}
	return plain, xdsClient, weft, weftXDS
}

func call(b *testing.B, c testgrpc.BenchmarkServiceClient, req *testgrpc.SimpleRequest) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.UnaryCall(ctx, req); err != nil {
		b.Fatal(err)
	}
}

// grpcPayloads are the request and response sizes compared.
var grpcPayloads = []struct {
	name string
	size int32
}{{"1B", 1}, {"1KiB", 1024}}

func payloadRequest(size int32) *testgrpc.SimpleRequest {
	return &testgrpc.SimpleRequest{ResponseSize: size, Payload: &testgrpc.Payload{Body: make([]byte, size)}}
}

// BenchmarkGRPCUnary measures one unary call at a time over loopback
// through plain grpc-go, grpc-go's xds:/// client, Weft's xds:/// client
// on the same control plane and server, and Weft's DialGRPC of a static
// mesh service.
func BenchmarkGRPCUnary(b *testing.B) {
	plain, xdsClient, weft, weftXDS := grpcClients(b)
	for _, p := range grpcPayloads {
		req := payloadRequest(p.size)
		for _, c := range []struct {
			name   string
			client testgrpc.BenchmarkServiceClient
		}{{"plain", plain}, {"grpc-xds", xdsClient}, {"weft-xds", weftXDS}, {"weft", weft}} {
			b.Run(p.name+"/"+c.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					call(b, c.client, req)
				}
			})
		}
	}
}

// BenchmarkGRPCUnaryInterleaved rotates the clients call by call in one
// loop, so that they see the same machine state, and reports each one's
// mean latency and the ratios weft-xds/grpc-xds (the like-for-like pair;
// the goal: at most 1.05), weft/grpc-xds and weft/plain.
func BenchmarkGRPCUnaryInterleaved(b *testing.B) {
	plain, xdsClient, weft, weftXDS := grpcClients(b)
	for _, p := range grpcPayloads {
		req := payloadRequest(p.size)
		b.Run(p.name, func(b *testing.B) {
			b.ReportAllocs()
			clients := []testgrpc.BenchmarkServiceClient{plain, xdsClient, weft, weftXDS}
			var spent [4]time.Duration
			n := 0
			for b.Loop() {
				// Rotate the order too, so no client always follows another.
				for k := range clients {
					i := (k + n) % len(clients)
					t0 := time.Now()
					call(b, clients[i], req)
					spent[i] += time.Since(t0)
				}
				n++
			}
			b.ReportMetric(float64(spent[0].Nanoseconds())/float64(n), "plain-ns/call")
			b.ReportMetric(float64(spent[1].Nanoseconds())/float64(n), "xds-ns/call")
			b.ReportMetric(float64(spent[2].Nanoseconds())/float64(n), "weft-ns/call")
			b.ReportMetric(float64(spent[3].Nanoseconds())/float64(n), "weft-xds-ns/call")
			b.ReportMetric(float64(spent[3])/float64(spent[1]), "weft-xds/xds")
			b.ReportMetric(float64(spent[2])/float64(spent[1]), "weft/xds")
			b.ReportMetric(float64(spent[2])/float64(spent[0]), "weft/plain")
		})
	}
}

// BenchmarkGRPCUnaryParallel is BenchmarkGRPCUnary with concurrent
// callers (GOMAXPROCS × -cpu goroutines; use -cpu 4,32 for 8 and 64 on two
// cores) sharing one channel each, 1 KiB payloads.
func BenchmarkGRPCUnaryParallel(b *testing.B) {
	plain, xdsClient, weft, weftXDS := grpcClients(b)
	req := payloadRequest(1024)
	for _, c := range []struct {
		name   string
		client testgrpc.BenchmarkServiceClient
	}{{"plain", plain}, {"grpc-xds", xdsClient}, {"weft-xds", weftXDS}, {"weft", weft}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					call(b, c.client, req)
				}
			})
		})
	}
}

// BenchmarkGRPCUnarySession is BenchmarkGRPCUnary's Weft row with cookie
// session affinity on (WithSessionAffinity) and every call carrying the
// cookie back, as a caller keeping its session does: the cost of reading
// the cookie and pinning the pick.
func BenchmarkGRPCUnarySession(b *testing.B) {
	srvMesh, err := mesh.New(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srvMesh.Close() })
	var addrs []string
	for range 3 {
		gs, err := srvMesh.NewGRPCServer()
		if err != nil {
			b.Fatal(err)
		}
		addrs = append(addrs, serveGRPC(b, gs))
	}
	cliMesh, err := mesh.New(context.Background(), mesh.WithEndpoints("echo", addrs...), mesh.WithSessionAffinity("sticky", 0))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cliMesh.Close() })
	cc, err := cliMesh.DialGRPC("echo")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cc.Close() })
	client := testgrpc.NewBenchmarkServiceClient(cc)
	var md metadata.MD
	if _, err := client.UnaryCall(context.Background(), payloadRequest(1), grpc.Header(&md)); err != nil {
		b.Fatal(err)
	}
	sc := md.Get("set-cookie")
	if len(sc) != 1 {
		b.Fatalf("the first call set cookies %q, want one", sc)
	}
	cookie, _, _ := strings.Cut(sc[0], ";")
	session := metadata.AppendToOutgoingContext(context.Background(), "cookie", cookie)
	for _, p := range grpcPayloads {
		req := payloadRequest(p.size)
		b.Run(p.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				// As call does, plus the header the cookie would come back in.
				ctx, cancel := context.WithTimeout(session, 10*time.Second)
				var md metadata.MD
				_, err := client.UnaryCall(ctx, req, grpc.Header(&md))
				cancel()
				if err != nil {
					b.Fatal(err)
				}
				if len(md.Get("set-cookie")) != 0 {
					b.Fatal("a call that carried its cookie was moved")
				}
			}
		})
	}
}

// grpcServerRow is one server of BenchmarkGRPCServer and the client
// calling it.
type grpcServerRow struct {
	name   string
	client testgrpc.BenchmarkServiceClient
}

// grpcServerRows are BenchmarkGRPCServer's servers, each with a plain
// grpc-go client connected and answered: a plain grpc.NewServer and a
// Weft NewGRPCServer (defaults: no policy, no admin, telemetry no-op),
// insecure, then both with SPIFFE mTLS, where every call's interceptors
// may ask for the caller's SPIFFE ID.
func grpcServerRows(b *testing.B) []grpcServerRow {
	b.Helper()
	insecureClient := func(addr string) testgrpc.BenchmarkServiceClient {
		cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cc.Close() })
		return testgrpc.NewBenchmarkServiceClient(cc)
	}
	plainMesh, err := mesh.New(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { plainMesh.Close() })
	gs, err := plainMesh.NewGRPCServer()
	if err != nil {
		b.Fatal(err)
	}
	rows := []grpcServerRow{
		{"plaintext/grpc", insecureClient(serveGRPC(b, grpc.NewServer()))},
		{"plaintext/weft", insecureClient(serveGRPC(b, gs))},
	}

	ca, err := spiffetest.NewCA(shop)
	if err != nil {
		b.Fatal(err)
	}
	api, err := spiffetest.StartWorkloadAPI(ca, ordersID)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { api.Close() })
	b.Setenv("SPIFFE_ENDPOINT_SOCKET", api.Addr())
	mtlsMesh, err := mesh.New(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { mtlsMesh.Close() })
	tc := mtlsMesh.ServerTLSConfig()
	if tc == nil {
		b.Fatal("a mesh with an identity has no server TLS config")
	}
	mgs, err := mtlsMesh.NewGRPCServer()
	if err != nil {
		b.Fatal(err)
	}
	svid, err := ca.IssueX509SVID(frontendID, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	mtlsClient := func(addr string) testgrpc.BenchmarkServiceClient {
		cfg := tlsconfig.MTLSClientConfig(svid, ca.Bundle(), tlsconfig.AuthorizeID(ordersID))
		cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cc.Close() })
		return testgrpc.NewBenchmarkServiceClient(cc)
	}
	rows = append(rows,
		grpcServerRow{"mtls/grpc", mtlsClient(serveGRPC(b, grpc.NewServer(grpc.Creds(credentials.NewTLS(tc.Clone())))))},
		grpcServerRow{"mtls/weft", mtlsClient(serveGRPC(b, mgs))})
	for _, r := range rows {
		call(b, r.client, payloadRequest(1)) // connect before timing
	}
	return rows
}

// BenchmarkGRPCServer isolates the server side: the same plain grpc-go
// client calls each of grpcServerRows' servers with 1 B payloads, so the
// rows differ only by the server.
func BenchmarkGRPCServer(b *testing.B) {
	rows := grpcServerRows(b)
	req := payloadRequest(1)
	for _, r := range rows {
		b.Run(r.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				call(b, r.client, req)
			}
		})
	}
}

// BenchmarkGRPCServerInterleaved rotates BenchmarkGRPCServer's rows call
// by call in one loop, so that they see the same machine state, and
// reports each one's mean latency and the ratios weft/grpc, plaintext and
// mTLS (the goal: at most 1.05).
func BenchmarkGRPCServerInterleaved(b *testing.B) {
	rows := grpcServerRows(b)
	req := payloadRequest(1)
	b.ReportAllocs()
	spent := make([]time.Duration, len(rows))
	n := 0
	for b.Loop() {
		// Rotate the order too, so no server always follows another.
		for k := range rows {
			i := (k + n) % len(rows)
			t0 := time.Now()
			call(b, rows[i].client, req)
			spent[i] += time.Since(t0)
		}
		n++
	}
	for i, r := range rows {
		b.ReportMetric(float64(spent[i].Nanoseconds())/float64(n), strings.ReplaceAll(r.name, "/", "-")+"-ns/call")
	}
	b.ReportMetric(float64(spent[1])/float64(spent[0]), "plaintext-weft/grpc")
	b.ReportMetric(float64(spent[3])/float64(spent[2]), "mtls-weft/grpc")
}
