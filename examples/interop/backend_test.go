package interop

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Request headers (HTTP) and metadata keys (gRPC) the backends act on, so
// that one route table can steer and test both protocols.
const (
	hdrSlow  = "x-slow"  // the backend answers after slowDelay
	hdrFlaky = "x-flaky" // the backend fails three attempts in four
	hdrFail  = "x-fail"  // the backend fails every attempt
)

// slowDelay is how long a slow request takes; the route timeout under test
// is far below it, so a request that returns early was cut by the client.
const slowDelay = 3 * time.Second

// behaviour is what an echo backend does with one request, shared by its
// HTTP and gRPC sides. It returns the HTTP status to fail with (0 = answer).
type behaviour struct {
	name     string
	attempts atomic.Int64 // requests carrying hdrFlaky
	failures atomic.Int64 // requests carrying hdrFail
}

func (b *behaviour) act(ctx context.Context, slow, flaky, fail bool) int {
	if slow {
		select {
		case <-time.After(slowDelay):
		case <-ctx.Done():
		}
	}
	if flaky && b.attempts.Add(1)%4 != 0 {
		return http.StatusServiceUnavailable
	}
	if fail {
		b.failures.Add(1)
		return http.StatusServiceUnavailable
	}
	return 0
}

// ServeHTTP answers with the backend's name.
func (b *behaviour) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if code := b.act(r.Context(), r.Header.Get(hdrSlow) != "", r.Header.Get(hdrFlaky) != "", r.Header.Get(hdrFail) != ""); code != 0 {
		http.Error(w, "flaky", code)
		return
	}
	io.WriteString(w, b.name)
}

// grpcEcho is grpc.testing.TestService: UnaryCall answers with the
// backend's name as server_id, EmptyCall and StreamingOutputCall send it
// as the x-server header.
type grpcEcho struct {
	testpb.UnimplementedTestServiceServer
	b *behaviour
}

func (g grpcEcho) act(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if g.b.act(ctx, len(md.Get(hdrSlow)) > 0, len(md.Get(hdrFlaky)) > 0, len(md.Get(hdrFail)) > 0) != 0 {
		return status.Error(codes.Unavailable, "flaky")
	}
	return nil
}

func (g grpcEcho) UnaryCall(ctx context.Context, _ *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	if err := g.act(ctx); err != nil {
		return nil, err
	}
	return &testpb.SimpleResponse{ServerId: g.b.name}, nil
}

func (g grpcEcho) EmptyCall(ctx context.Context, _ *testpb.Empty) (*testpb.Empty, error) {
	if err := g.act(ctx); err != nil {
		return nil, err
	}
	grpc.SetHeader(ctx, metadata.Pairs("x-server", g.b.name))
	return &testpb.Empty{}, nil
}

// StreamingOutputCall sends the backend's name as the x-server header,
// then one response: a stream through the same routes as UnaryCall.
func (g grpcEcho) StreamingOutputCall(_ *testpb.StreamingOutputCallRequest, s testpb.TestService_StreamingOutputCallServer) error {
	if err := g.act(s.Context()); err != nil {
		return err
	}
	if err := s.SetHeader(metadata.Pairs("x-server", g.b.name)); err != nil {
		return err
	}
	return s.Send(&testpb.StreamingOutputCallResponse{})
}

// echoBackend is one workload: an HTTP and a gRPC server on one loopback
// address, both answering with the workload's name.
type echoBackend struct {
	*behaviour
	ip                 string
	httpPort, grpcPort int
}

// startEchoBackend serves plain HTTP and gRPC on ip (any 127.0.0.0/8
// address) until the test ends.
func startEchoBackend(t *testing.T, name, ip string) *echoBackend {
	t.Helper()
	b := &echoBackend{behaviour: &behaviour{name: name}, ip: ip}
	hl := listenT(t, ip)
	gl := listenT(t, ip)
	b.httpPort, b.grpcPort = port(hl), port(gl)
	hs := &http.Server{Handler: b.behaviour, ReadHeaderTimeout: 5 * time.Second}
	gs := grpc.NewServer()
	testpb.RegisterTestServiceServer(gs, grpcEcho{b: b.behaviour})
	go hs.Serve(hl)
	go gs.Serve(gl)
	t.Cleanup(func() {
		hs.Close()
		gs.Stop()
	})
	return b
}

func listenT(t *testing.T, ip string) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func port(l net.Listener) int { return l.Addr().(*net.TCPAddr).Port }

// httpGet sends one GET and returns the status and body; an error is a
// transport failure.
func httpGet(ctx context.Context, c *http.Client, url string, hdr ...string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// grpcServerID makes one UnaryCall and returns the server_id.
func grpcServerID(ctx context.Context, cc grpc.ClientConnInterface, md ...string) (string, error) {
	if len(md) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, md...)
	}
	resp, err := testpb.NewTestServiceClient(cc).UnaryCall(ctx, &testpb.SimpleRequest{FillServerId: true})
	if err != nil {
		return "", err
	}
	return resp.GetServerId(), nil
}

// streamServer opens one StreamingOutputCall, reads it to its end and
// returns the x-server header.
func streamServer(ctx context.Context, cc grpc.ClientConnInterface, md ...string) (string, error) {
	if len(md) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, md...)
	}
	s, err := testpb.NewTestServiceClient(cc).StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{})
	if err != nil {
		return "", err
	}
	for {
		if _, err := s.Recv(); err == io.EOF {
			break
		} else if err != nil {
			return "", err
		}
	}
	hdr, err := s.Header()
	if err != nil {
		return "", err
	}
	if v := hdr.Get("x-server"); len(v) == 1 {
		return v[0], nil
	}
	return "", fmt.Errorf("x-server header: %v, want one value", hdr.Get("x-server"))
}

// counts tallies answers by backend name over n calls; a failed call
// fails the test at once, since a split is measured on successes only.
func counts(t *testing.T, n int, call func() (string, error)) map[string]int {
	t.Helper()
	got := map[string]int{}
	for i := range n {
		name, err := call()
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		got[name]++
	}
	return got
}

// eventually retries f until it succeeds or d passes: the first requests
// may race the control plane's first push.
func eventually(d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var errStatus = errors.New("unexpected status")

func statusErr(code int, body string) error {
	return fmt.Errorf("%w %d: %s", errStatus, code, body)
}
