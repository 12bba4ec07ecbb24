package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/xds"

	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/resilience"
	"github.com/weftmesh/weft/security"
	"github.com/weftmesh/weft/security/spiffetest"
)

// sizes are the response payloads compared: 1 B and 1 KiB.
var sizes = []int{1, 1024}

// payload is what the echo servers answer with, cut to the size asked.
var payload = make([]byte, 1024)

// echo answers GET /<n> with n bytes of payload.
func echo(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.Atoi(r.URL.Path[1:])
	if err != nil || n < 0 || n > len(payload) {
		http.Error(w, "bad size", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(n))
	w.Write(payload[:n])
}

// grpcEcho answers UnaryCall with a payload of the size asked.
type grpcEcho struct {
	testgrpc.UnimplementedBenchmarkServiceServer
}

func (grpcEcho) UnaryCall(_ context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	n := req.GetResponseSize()
	if n < 0 || int(n) > len(payload) {
		return nil, errors.New("bad size")
	}
	return &testgrpc.SimpleResponse{Payload: &testgrpc.Payload{Body: payload[:n]}}, nil
}

// caller sends one request asking for size bytes back, and checks the
// answer: a harness that counted failures as fast requests would lie.
type caller func(ctx context.Context, size int) error

// variant is one side of a comparison.
type variant struct {
	name string
	call caller
	// extCPU, when set, is the CPU time used so far by the variant's
	// processes other than this one (a sidecar's proxies), so that CPU per
	// request counts them.
	extCPU func() time.Duration
}

// ext is the variant's CPU time outside this process so far.
func (v variant) ext() time.Duration {
	if v.extCPU == nil {
		return 0
	}
	return v.extCPU()
}

func httpCaller(c *http.Client, base string) caller {
	urls := map[int]string{}
	for _, n := range sizes {
		urls[n] = base + "/" + strconv.Itoa(n)
	}
	return func(ctx context.Context, size int) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, urls[size], nil)
		if err != nil {
			return err
		}
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		got, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch {
		case err != nil:
			return err
		case resp.StatusCode != http.StatusOK:
			return fmt.Errorf("GET %s: %s", urls[size], resp.Status)
		case got != int64(size):
			return fmt.Errorf("GET %s: %d bytes, want %d", urls[size], got, size)
		}
		return nil
	}
}

func grpcCaller(cc *grpc.ClientConn) caller {
	c := testgrpc.NewBenchmarkServiceClient(cc)
	reqs := map[int]*testgrpc.SimpleRequest{}
	for _, n := range sizes {
		reqs[n] = &testgrpc.SimpleRequest{ResponseSize: int32(n), Payload: &testgrpc.Payload{Body: payload[:n]}}
	}
	return func(ctx context.Context, size int) error {
		resp, err := c.UnaryCall(ctx, reqs[size])
		if err != nil {
			return err
		}
		if got := len(resp.GetPayload().GetBody()); got != size {
			return fmt.Errorf("UnaryCall: %d bytes, want %d", got, size)
		}
		return nil
	}
}

// env owns everything a run starts, and stops it in reverse order.
type env struct {
	closers []func()
	dir     string // temporary files: the authorization policy
	// xdsDelta: the xDS scale meshes speak incremental xDS.
	xdsDelta bool
}

func (e *env) defer_(f func()) { e.closers = append(e.closers, f) }

func (e *env) close() {
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
	e.closers = nil
}

// listen opens a loopback listener.
func listen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

// plainHTTPServer serves echo with net/http alone: HTTP/1.1 and h2c in the
// clear, or HTTP/1.1 and HTTP/2 over TLS when cert is given.
func (e *env) plainHTTPServer(cert *tls.Certificate) (string, error) {
	return e.httpServer(http.HandlerFunc(echo), cert)
}

// httpServer serves h with net/http alone, as plainHTTPServer serves echo.
func (e *env) httpServer(h http.Handler, cert *tls.Certificate) (string, error) {
	ln, err := listen()
	if err != nil {
		return "", err
	}
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &p, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if cert != nil {
			srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*cert}}
			srv.Protocols = nil
			srv.ServeTLS(ln, "", "")
			return
		}
		srv.Serve(ln)
	}()
	e.defer_(func() { srv.Close(); <-done })
	return ln.Addr().String(), nil
}

// plainHTTPClient is net/http's default transport with the idle pool
// Weft's base transport has (net/http keeps 2 idle connections per host by
// default, which would make the plain side churn connections at
// concurrency 64 and flatter Weft), speaking the protocol named by its key
// in protocols: "h1", "h2c", "tls1" (HTTP/1.1 over TLS) or "tls" (HTTP/2
// over TLS). roots verifies the server for the TLS ones.
func (e *env) plainHTTPClient(proto string, roots *x509.CertPool) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 256
	var p http.Protocols
	switch proto {
	case "h2c":
		p.SetUnencryptedHTTP2(true)
		t.Protocols = &p
	case "tls1":
		p.SetHTTP1(true)
		t.Protocols = &p
		t.ForceAttemptHTTP2 = false
	}
	if roots != nil {
		t.TLSClientConfig = &tls.Config{RootCAs: roots}
	}
	e.defer_(t.CloseIdleConnections)
	return &http.Client{Transport: t}
}

func (e *env) newMesh(ctx context.Context, opts ...mesh.Option) (*mesh.Mesh, error) {
	m, err := mesh.New(ctx, opts...)
	if err != nil {
		return nil, err
	}
	e.defer_(func() { m.Close() })
	return m, nil
}

// weftHTTPServer serves echo through m.Serve: the mesh's inbound chain, and
// mTLS when the mesh has an identity.
func (e *env) weftHTTPServer(m *mesh.Mesh) (string, error) {
	return e.meshServer(m, http.HandlerFunc(echo))
}

// meshServer serves h through m.Serve, as weftHTTPServer serves echo.
func (e *env) meshServer(m *mesh.Mesh, h http.Handler) (string, error) {
	ln, err := listen()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Serve(ctx, ln, h) }()
	e.defer_(func() { cancel(); <-done })
	return ln.Addr().String(), nil
}

// grpcServer serves the echo service on s.
func (e *env) grpcServer(s interface {
	grpc.ServiceRegistrar
	Serve(net.Listener) error
	Stop()
}) (string, error) {
	testgrpc.RegisterBenchmarkServiceServer(s, grpcEcho{})
	ln, err := listen()
	if err != nil {
		return "", err
	}
	done := make(chan struct{})
	go func() { defer close(done); s.Serve(ln) }()
	e.defer_(func() { s.Stop(); <-done })
	return ln.Addr().String(), nil
}

func (e *env) conn(cc *grpc.ClientConn, err error) (*grpc.ClientConn, error) {
	if err != nil {
		return nil, err
	}
	e.defer_(func() { cc.Close() })
	return cc, nil
}

// selfSignedCert is the plain TLS server's certificate: ECDSA P-256, as
// the SPIFFE SVIDs are, for 127.0.0.1.
func selfSignedCert() (tls.Certificate, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "bench"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool, nil
}

var (
	trustDomain = spiffeid.RequireTrustDomainFromString("bench.example")
	clientID    = spiffeid.RequireFromPath(trustDomain, "/ns/bench/sa/client")
	serverID    = spiffeid.RequireFromPath(trustDomain, "/ns/bench/sa/server")
)

// identities starts a development Workload API per identity (real X.509
// SVIDs from an in-memory CA) and opens go-spiffe sources on them.
func (e *env) identities(ctx context.Context) (client, server security.Source, err error) {
	ca, err := spiffetest.NewCA(trustDomain)
	if err != nil {
		return nil, nil, err
	}
	open := func(id spiffeid.ID) (security.Source, error) {
		api, err := spiffetest.StartWorkloadAPI(ca, id)
		if err != nil {
			return nil, err
		}
		e.defer_(func() { api.Close() })
		src, err := security.NewWorkloadAPISource(ctx, api.Addr())
		if err != nil {
			return nil, err
		}
		e.defer_(func() { src.Close() })
		return src, nil
	}
	if client, err = open(clientID); err != nil {
		return nil, nil, err
	}
	server, err = open(serverID)
	return client, server, err
}

// authzPolicy lets the client identity GET anything: every request is
// evaluated and allowed.
const authzPolicy = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: echo
spec:
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["bench.example/ns/bench/sa/client"]
    to:
    - operation:
        methods: ["GET"]
        paths: ["/*"]
`

// countingExporter is the span exporter of the full stack: it counts what
// the batcher hands it and keeps nothing, so that the run measures the
// mesh's tracing, not an exporter's network.
type countingExporter struct{ spans atomic.Int64 }

func (c *countingExporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	c.spans.Add(int64(len(spans)))
	return nil
}

func (c *countingExporter) Shutdown(context.Context) error { return nil }

// stacks are every client and server compared, built once per run.
type stacks struct {
	// Closed-loop HTTP, by protocol: "h1", "h2c", "tls".
	plainHTTP, weftHTTP map[string]caller
	// The full stack, against plain TLS (plainHTTP["tls"]).
	weftFull   caller
	spans      *countingExporter
	flushSpans func(context.Context) error
	// gRPC.
	plainGRPC, weftGRPC, weftGRPCXDS, grpcXDS caller
}

// fullStackOptions are the options of the full stack's client (server
// false) or server: SPIFFE mTLS, tracing at 1% into an exporter that only
// counts, retries (Weft's default of two) and Envoy-style circuit-breaker
// thresholds on the client, an authorization policy on the server.
func (e *env) fullStackOptions(tp *sdktrace.TracerProvider, src security.Source, server bool) ([]mesh.Option, error) {
	opts := []mesh.Option{mesh.WithX509Source(src), mesh.WithTracerProvider(tp)}
	if server {
		path := filepath.Join(e.dir, "authz.yaml")
		if err := os.WriteFile(path, []byte(authzPolicy), 0o600); err != nil {
			return nil, err
		}
		return append(opts, mesh.WithServiceName("bench-server"), mesh.WithAuthorizationPolicyFile(path)), nil
	}
	// HTTP/2, as the plain TLS side it is compared with.
	return append(opts, mesh.WithServiceName("bench-client"), mesh.WithHTTP2(true),
		mesh.WithCircuitBreaker(resilience.Limits{MaxRequests: 1000, MaxPendingRequests: 1000, MaxRetries: 3})), nil
}

// newTracerProvider samples 1% of new traces (and follows the caller's
// decision) into exp.
func newTracerProvider(exp sdktrace.SpanExporter) *sdktrace.TracerProvider {
	return sdktrace.NewTracerProvider(
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.01))),
		sdktrace.WithBatcher(exp))
}

// fullStack starts a Weft server and client with every feature on (see
// fullStackOptions), their spans going to exp, and returns the client and
// a function that flushes the spans batched so far.
func (e *env) fullStack(ctx context.Context, clientSrc, serverSrc security.Source, exp sdktrace.SpanExporter) (caller, func(context.Context) error, error) {
	tp := newTracerProvider(exp)
	e.defer_(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tp.Shutdown(sctx)
	})
	opts, err := e.fullStackOptions(tp, serverSrc, true)
	if err != nil {
		return nil, nil, err
	}
	srv, err := e.newMesh(ctx, opts...)
	if err != nil {
		return nil, nil, err
	}
	addr, err := e.weftHTTPServer(srv)
	if err != nil {
		return nil, nil, err
	}
	if opts, err = e.fullStackOptions(tp, clientSrc, false); err != nil {
		return nil, nil, err
	}
	cli, err := e.newMesh(ctx, append(opts, mesh.WithEndpoints("echo", addr))...)
	if err != nil {
		return nil, nil, err
	}
	return httpCaller(cli.HTTPClient(), "http://echo"), tp.ForceFlush, nil
}

// buildStacks starts every server and client. Weft's are built with
// mesh.New; the plain ones with net/http and grpc-go alone. f.cp serves the
// xDS configurations of the gRPC xDS clients.
func (e *env) buildStacks(ctx context.Context, f *fixtures) (*stacks, error) {
	s := &stacks{plainHTTP: map[string]caller{}, weftHTTP: map[string]caller{}}
	// Plain net/http.
	plainAddr, err := e.plainHTTPServer(nil)
	if err != nil {
		return nil, err
	}
	plainTLSAddr, err := e.plainHTTPServer(&f.cert)
	if err != nil {
		return nil, err
	}
	s.plainHTTP["h1"] = httpCaller(e.plainHTTPClient("h1", nil), "http://"+plainAddr)
	s.plainHTTP["h2c"] = httpCaller(e.plainHTTPClient("h2c", nil), "http://"+plainAddr)
	s.plainHTTP["tls1"] = httpCaller(e.plainHTTPClient("tls1", f.roots), "https://"+plainTLSAddr)
	s.plainHTTP["tls"] = httpCaller(e.plainHTTPClient("tls", f.roots), "https://"+plainTLSAddr)

	// Weft, defaults: no identity, no-op telemetry, retries and thresholds
	// on the client as every mesh service has them.
	srvMesh, err := e.newMesh(ctx, mesh.WithServiceName("bench-server"))
	if err != nil {
		return nil, err
	}
	weftAddr, err := e.weftHTTPServer(srvMesh)
	if err != nil {
		return nil, err
	}
	h1, err := e.newMesh(ctx, mesh.WithServiceName("bench-client"), mesh.WithEndpoints("echo", weftAddr))
	if err != nil {
		return nil, err
	}
	s.weftHTTP["h1"] = httpCaller(h1.HTTPClient(), "http://echo")
	h2c, err := e.newMesh(ctx, mesh.WithServiceName("bench-client"), mesh.WithEndpoints("echo", weftAddr), mesh.WithHTTP2(true))
	if err != nil {
		return nil, err
	}
	s.weftHTTP["h2c"] = httpCaller(h2c.HTTPClient(), "http://echo")

	// Weft with SPIFFE mTLS and nothing else added.
	srvTLS, err := e.newMesh(ctx, mesh.WithServiceName("bench-server"), mesh.WithX509Source(f.serverSrc))
	if err != nil {
		return nil, err
	}
	weftTLSAddr, err := e.weftHTTPServer(srvTLS)
	if err != nil {
		return nil, err
	}
	// HTTP/1.1 over mTLS is the default; WithHTTP2 makes it HTTP/2.
	for key, http2 := range map[string]bool{"tls1": false, "tls": true} {
		cli, err := e.newMesh(ctx, mesh.WithServiceName("bench-client"), mesh.WithX509Source(f.clientSrc),
			mesh.WithEndpoints("echo", weftTLSAddr), mesh.WithHTTP2(http2))
		if err != nil {
			return nil, err
		}
		s.weftHTTP[key] = httpCaller(cli.HTTPClient(), "http://echo")
	}

	// The full stack.
	s.spans = &countingExporter{}
	if s.weftFull, s.flushSpans, err = e.fullStack(ctx, f.clientSrc, f.serverSrc, s.spans); err != nil {
		return nil, err
	}

	// gRPC: plain grpc-go both ends; Weft both ends; grpc-go's xDS client
	// to the plain server; Weft's DialGRPC("xds:///...") to Weft's server.
	plainGRPCAddr, err := e.grpcServer(grpc.NewServer())
	if err != nil {
		return nil, err
	}
	gs, err := srvMesh.NewGRPCServer()
	if err != nil {
		return nil, err
	}
	weftGRPCAddr, err := e.grpcServer(gs)
	if err != nil {
		return nil, err
	}
	f.cp.setSnapshot(grpcNode, xdsConfig{version: "1",
		listeners: resourceList(listener("echo-plain:50051", "echo-plain"), listener("echo-weft:50051", "echo-weft")),
		routes:    resourceList(routeConfig("echo-plain", "echo-plain"), routeConfig("echo-weft", "echo-weft")),
		clusters:  resourceList(cluster("echo-plain"), cluster("echo-weft")),
		endpoints: resourceList(endpoints("echo-plain", plainGRPCAddr), endpoints("echo-weft", weftGRPCAddr)),
	})
	bootstrap := f.cp.bootstrap(grpcNode)

	cc, err := e.conn(grpc.NewClient("passthrough:///"+plainGRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err != nil {
		return nil, err
	}
	s.plainGRPC = grpcCaller(cc)
	res, err := xds.NewXDSResolverWithConfigForTesting(bootstrap)
	if err != nil {
		return nil, err
	}
	if cc, err = e.conn(grpc.NewClient("xds:///echo-plain:50051", grpc.WithResolvers(res), grpc.WithTransportCredentials(insecure.NewCredentials()))); err != nil {
		return nil, err
	}
	s.grpcXDS = grpcCaller(cc)
	grpcMesh, err := e.newMesh(ctx, mesh.WithServiceName("bench-client"), mesh.WithEndpoints("echo-grpc", weftGRPCAddr), mesh.WithBootstrap(bootstrap))
	if err != nil {
		return nil, err
	}
	if cc, err = e.conn(grpcMesh.DialGRPC("echo-grpc")); err != nil {
		return nil, err
	}
	s.weftGRPC = grpcCaller(cc)
	if cc, err = e.conn(grpcMesh.DialGRPC("xds:///echo-weft:50051")); err != nil {
		return nil, err
	}
	s.weftGRPCXDS = grpcCaller(cc)
	return s, nil
}

// all lists every caller with a name, for warming up and checking.
func (s *stacks) all() []variant {
	var out []variant
	for _, p := range protocols {
		out = append(out, variant{name: "plain " + p.name, call: s.plainHTTP[p.key]}, variant{name: "Weft " + p.name, call: s.weftHTTP[p.key]})
	}
	return append(out,
		variant{name: "Weft full stack", call: s.weftFull},
		variant{name: "plain gRPC", call: s.plainGRPC}, variant{name: "grpc-go xds", call: s.grpcXDS},
		variant{name: "Weft gRPC", call: s.weftGRPC}, variant{name: "Weft gRPC xds", call: s.weftGRPCXDS})
}
