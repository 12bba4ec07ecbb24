package mesh_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/weftmesh/weft/mesh"
)

// recBackend serves HTTP and gRPC (health's Check) on one loopback port
// and records every arrival as the backend saw it: Host or :authority,
// path (escaped, with the query) or method, headers or metadata, body.
// While hold is set, arrivals wait until release or until their caller
// gives up. Its answers carry the response headers in respond (HTTP
// headers, gRPC header metadata).
type recBackend struct {
	addr    string
	respond http.Header

	mu       sync.Mutex
	arrivals []arrival
	hold     chan struct{} // nil: answer at once
	waiting  int
}

// arrival is one request as a backend received it.
type arrival struct {
	grpc   bool
	host   string
	path   string
	header http.Header
	body   string
}

func startRecBackend(t *testing.T, respond http.Header) *recBackend {
	t.Helper()
	b := &recBackend{respond: respond}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = ln.Addr().String()
	rpcLn, httpLn := splitByPreface(t, ln)
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, recHealth{b})
	srv := newMesh(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- gs.Serve(rpcLn) }()
	go func() { done <- srv.Serve(ctx, httpLn, b) }()
	t.Cleanup(func() { b.release(); cancel(); gs.Stop(); <-done; <-done })
	return b
}

// holdAll makes arrivals wait until release.
func (b *recBackend) holdAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.hold == nil {
		b.hold = make(chan struct{})
	}
}

func (b *recBackend) release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.hold != nil {
		close(b.hold)
		b.hold = nil
	}
}

// record notes an arrival and waits while the backend holds.
func (b *recBackend) record(ctx context.Context, a arrival) {
	b.mu.Lock()
	b.arrivals = append(b.arrivals, a)
	hold := b.hold
	if hold != nil {
		b.waiting++
	}
	b.mu.Unlock()
	if hold == nil {
		return
	}
	select {
	case <-hold:
	case <-ctx.Done():
	}
	b.mu.Lock()
	b.waiting--
	b.mu.Unlock()
}

func (b *recBackend) seen() []arrival {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]arrival(nil), b.arrivals...)
}

// held returns the arrivals waiting on hold.
func (b *recBackend) held() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.waiting
}

func (b *recBackend) reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.arrivals = nil
}

func (b *recBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h := r.Header.Clone()
	h.Del(mesh.TimeoutHeader)
	b.record(r.Context(), arrival{host: r.Host, path: r.URL.RequestURI(), header: h, body: string(body)})
	for k, vs := range b.respond {
		w.Header()[k] = vs
	}
	io.WriteString(w, "main")
}

type recHealth struct{ b *recBackend }

func (h recHealth) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	hdr := http.Header{}
	for k, vs := range md {
		for _, v := range vs {
			hdr.Add(k, v)
		}
	}
	host := ""
	if v := md.Get(":authority"); len(v) > 0 {
		host = v[0]
	}
	method, _ := grpc.Method(ctx)
	h.b.record(ctx, arrival{grpc: true, host: host, path: method, header: hdr})
	if len(h.b.respond) > 0 {
		out := metadata.MD{}
		for k, vs := range h.b.respond {
			out.Append(k, vs...)
		}
		_ = grpc.SetHeader(ctx, out)
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func (recHealth) List(context.Context, *healthpb.HealthListRequest) (*healthpb.HealthListResponse, error) {
	return &healthpb.HealthListResponse{}, nil
}

func (recHealth) Watch(*healthpb.HealthCheckRequest, grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
	return nil
}
