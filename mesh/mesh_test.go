package mesh_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/resilience"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// backends starts n real HTTP servers on 127.0.0.1 that count their requests.
func backends(t *testing.T, n int) (addrs []string, hits func() map[string]int) {
	t.Helper()
	var mu sync.Mutex
	counts := map[string]int{}
	for i := 0; i < n; i++ {
		var addr string
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			counts[addr]++
			mu.Unlock()
			fmt.Fprintf(w, "%s %s", addr, r.Host)
		}))
		addr = srv.Listener.Addr().String()
		t.Cleanup(srv.Close)
		addrs = append(addrs, addr)
	}
	return addrs, func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		out := map[string]int{}
		for k, v := range counts {
			out[k] = v
		}
		return out
	}
}

func newMesh(t *testing.T, opts ...mesh.Option) *mesh.Mesh {
	t.Helper()
	m, err := mesh.New(context.Background(), opts...)
	if err != nil {
		t.Fatalf("mesh.New: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func get(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d", url, resp.StatusCode)
	}
	return string(b)
}

func TestHTTPClientSpreadsOverStaticEndpoints(t *testing.T) {
	addrs, hits := backends(t, 3)
	m := newMesh(t, mesh.WithEndpoints("orders", addrs...))
	c := m.HTTPClient()
	for i := 0; i < 300; i++ {
		get(t, c, "http://orders/items")
	}
	got := hits()
	for _, a := range addrs {
		if n := got[a]; n < 80 || n > 120 {
			t.Errorf("backend %s got %d of 300 requests, want 80..120 (all: %v)", a, n, got)
		}
	}
}

func TestHTTPHostWithPortNamesTheService(t *testing.T) {
	addrs, _ := backends(t, 1)
	m := newMesh(t, mesh.WithEndpoints("orders", addrs...))
	body := get(t, m.HTTPClient(), "http://orders:8080/items")
	// The backend echoes its own address and the Host header it saw.
	if want := addrs[0] + " orders:8080"; body != want {
		t.Errorf("body = %q, want %q (endpoint address, Host as the caller wrote it)", body, want)
	}
}

func TestHTTPRequestIsNotMutated(t *testing.T) {
	addrs, _ := backends(t, 1)
	m := newMesh(t, mesh.WithEndpoints("orders", addrs...))
	req, _ := http.NewRequest("GET", "http://orders/items?q=1", nil)
	resp, err := m.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if req.URL.Host != "orders" || req.Host != "orders" || req.URL.String() != "http://orders/items?q=1" {
		t.Errorf("request changed: URL %q Host %q", req.URL, req.Host)
	}
	if resp.Request != req {
		t.Errorf("resp.Request is not the caller's request")
	}
}

func TestHTTPNonMeshHostPassesThrough(t *testing.T) {
	addrs, hits := backends(t, 2)
	m := newMesh(t, mesh.WithEndpoints("orders", addrs[0]))
	// addrs[1] is a plain host:port, not a mesh service.
	body := get(t, m.HTTPClient(), "http://"+addrs[1]+"/x")
	if want := addrs[1] + " " + addrs[1]; body != want {
		t.Errorf("body = %q, want %q", body, want)
	}
	if got := hits(); got[addrs[0]] != 0 {
		t.Errorf("the mesh service got %d requests meant for another host", got[addrs[0]])
	}
}

func TestHTTPTransportWrapsACallerTransport(t *testing.T) {
	addrs, _ := backends(t, 1)
	m := newMesh(t, mesh.WithEndpoints("orders", addrs...))
	var seen []string
	base := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		seen = append(seen, r.URL.Host)
		return http.DefaultTransport.RoundTrip(r)
	})
	c := &http.Client{Transport: m.Transport(base)}
	get(t, c, "http://orders/")
	if len(seen) != 1 || seen[0] != addrs[0] {
		t.Errorf("base transport saw hosts %v, want [%s]", seen, addrs[0])
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestHTTPAllEndpointsDownIsAnError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	m := newMesh(t, mesh.WithEndpoints("orders", dead))
	_, err = m.HTTPClient().Get("http://orders/")
	if err == nil {
		t.Fatal("GET to a service whose only endpoint is down succeeded")
	}
}

func TestHTTPDNSService(t *testing.T) {
	addrs, hits := backends(t, 1)
	m := newMesh(t, mesh.WithDNS("orders", addrs[0]))
	get(t, m.HTTPClient(), "http://orders/")
	if got := hits()[addrs[0]]; got != 1 {
		t.Errorf("backend got %d requests, want 1", got)
	}
}

func TestListenAndServeDrainsOnCancel(t *testing.T) {
	m := newMesh(t)
	addr := freeAddr(t)
	release := make(chan struct{})
	started := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		io.WriteString(w, "done")
	})
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- m.ListenAndServe(ctx, addr, h) }()
	waitListening(t, addr)

	got := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/slow")
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(b)
	}()
	<-started
	cancel()
	time.Sleep(50 * time.Millisecond) // let Shutdown close the listener
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("the listener still accepts after the context ended")
	}
	close(release)
	if body := <-got; body != "done" {
		t.Errorf("in-flight request: got %q, want it to complete with \"done\"", body)
	}
	if err := <-served; err != nil {
		t.Errorf("ListenAndServe returned %v after a graceful stop, want nil", err)
	}
}

func TestHTTP2Cleartext(t *testing.T) {
	server := newMesh(t)
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- server.ListenAndServe(ctx, addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, r.Proto)
		}))
	}()
	defer func() { cancel(); <-served }()
	waitListening(t, addr)

	client := newMesh(t, mesh.WithEndpoints("orders", addr), mesh.WithHTTP2(true))
	if got := get(t, client.HTTPClient(), "http://orders/"); got != "HTTP/2.0" {
		t.Errorf("h2c client: server saw %q, want HTTP/2.0", got)
	}
	plain := newMesh(t, mesh.WithEndpoints("orders", addr))
	if got := get(t, plain.HTTPClient(), "http://orders/"); got != "HTTP/1.1" {
		t.Errorf("default client: server saw %q, want HTTP/1.1", got)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			c.Close()
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s", addr)
}

// countingHealth is a real gRPC service that counts the calls it serves.
type countingHealth struct {
	healthpb.UnimplementedHealthServer
	mu sync.Mutex
	n  int
}

func (h *countingHealth) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	h.mu.Lock()
	h.n++
	h.mu.Unlock()
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func grpcBackends(t *testing.T, m *mesh.Mesh, n int) ([]string, []*countingHealth) {
	t.Helper()
	var addrs []string
	var counters []*countingHealth
	for i := 0; i < n; i++ {
		h := &countingHealth{}
		addrs = append(addrs, serveHealth(t, m, h))
		counters = append(counters, h)
	}
	return addrs, counters
}

// serveHealth serves h on a loopback listener with a server of m until the
// test ends, and returns its address.
func serveHealth(t *testing.T, m *mesh.Mesh, h healthpb.HealthServer) string {
	t.Helper()
	srv, err := m.NewGRPCServer()
	if err != nil {
		t.Fatal(err)
	}
	healthpb.RegisterHealthServer(srv, h)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

func TestDialGRPCSpreadsOverStaticEndpoints(t *testing.T) {
	serverMesh := newMesh(t)
	addrs, counters := grpcBackends(t, serverMesh, 3)
	m := newMesh(t, mesh.WithEndpoints("inventory", addrs...))
	cc, err := m.DialGRPC("inventory")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Wait until every backend is connected, so the count measures the
	// policy rather than connection set-up order.
	for i := 0; i < 300 && !allServed(counters); i++ {
		if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("warm-up call %d: %v", i, err)
		}
	}
	base := snapshot(counters)
	for i := 0; i < 300; i++ {
		if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	now := snapshot(counters)
	for i := range counters {
		if n := now[i] - base[i]; n < 80 || n > 120 {
			t.Errorf("backend %s got %d of 300 calls, want 80..120", addrs[i], n)
		}
	}
}

func TestDialGRPCPlainTargetFallsBackToDNS(t *testing.T) {
	serverMesh := newMesh(t)
	addrs, counters := grpcBackends(t, serverMesh, 1)
	m := newMesh(t) // no static services: the target is resolved by DNS
	cc, err := m.DialGRPC(addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	if got := snapshot(counters)[0]; got != 1 {
		t.Errorf("backend served %d calls, want 1", got)
	}
}

func TestDialGRPCXDSNeedsABootstrap(t *testing.T) {
	m := newMesh(t)
	_, err := m.DialGRPC("xds:///orders:50051")
	if err == nil || !strings.Contains(err.Error(), "GRPC_XDS_BOOTSTRAP") {
		t.Errorf("DialGRPC(xds:///...) without a bootstrap: err = %v, want one naming GRPC_XDS_BOOTSTRAP", err)
	}
}

func TestDialGRPCOtherSchemesPassThrough(t *testing.T) {
	serverMesh := newMesh(t)
	addrs, _ := grpcBackends(t, serverMesh, 1)
	m := newMesh(t)
	cc, err := m.DialGRPC("passthrough:///"+addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
}

func allServed(cs []*countingHealth) bool {
	for _, n := range snapshot(cs) {
		if n == 0 {
			return false
		}
	}
	return true
}

func snapshot(cs []*countingHealth) []int {
	out := make([]int, len(cs))
	for i, c := range cs {
		c.mu.Lock()
		out[i] = c.n
		c.mu.Unlock()
	}
	return out
}

func TestNewRejectsBadEnvironment(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "bootstrap.json")
	os.WriteFile(good, []byte(`{"xds_servers":[{"server_uri":"127.0.0.1:1","channel_creds":[{"type":"insecure"}]}]}`), 0o600)
	notJSON := filepath.Join(dir, "bad.json")
	os.WriteFile(notJSON, []byte(`{"xds_servers": [`), 0o600)

	tests := []struct {
		name, variable, value string
	}{
		{"empty endpoints", "WEFT_ENDPOINTS", ""},
		{"endpoints without =", "WEFT_ENDPOINTS", "orders"},
		{"service without endpoints", "WEFT_ENDPOINTS", "orders="},
		{"endpoint without port", "WEFT_ENDPOINTS", "orders=10.0.0.1"},
		{"endpoint with a bad port", "WEFT_ENDPOINTS", "orders=10.0.0.1:99999"},
		{"service listed twice", "WEFT_ENDPOINTS", "orders=10.0.0.1:80;orders=10.0.0.2:80"},
		{"unknown balancer", "WEFT_LB_POLICY", "fastest"},
		{"bad mTLS mode", "WEFT_MTLS", "sometimes"},
		{"workload label without =", "WEFT_WORKLOAD_LABELS", "app=orders,v2"},
		{"workload label twice", "WEFT_WORKLOAD_LABELS", "app=orders,app=billing"},
		{"missing bootstrap file", "GRPC_XDS_BOOTSTRAP", filepath.Join(dir, "missing.json")},
		{"bootstrap file is not JSON", "GRPC_XDS_BOOTSTRAP", notJSON},
		{"inline bootstrap is not JSON", "GRPC_XDS_BOOTSTRAP_CONFIG", "{"},
		{"inline bootstrap without servers", "GRPC_XDS_BOOTSTRAP_CONFIG", `{"xds_servers":[]}`},
		{"bad DNS name", "WEFT_DNS", "orders=not a host:80"},
		{"bad admin address", "WEFT_ADMIN_ADDR", "localhost"},
		{"bad HTTP protocol", "WEFT_HTTP_PROTOCOL", "spdy"},
		{"bad shutdown timeout", "WEFT_SHUTDOWN_TIMEOUT", "soon"},
		{"bad DNS refresh", "WEFT_DNS_REFRESH", "-1s"},
		{"unknown retry condition", "WEFT_RETRY_ON", "5xx,sometimes"},
		{"too many retries", "WEFT_RETRIES", "9"},
		{"bad per-try timeout", "WEFT_PER_TRY_TIMEOUT", "fast"},
		{"bad route timeout", "WEFT_TIMEOUT", "0s"},
		{"bad outlier threshold", "WEFT_OUTLIER_CONSECUTIVE_ERRORS", "-2"},
		{"bad delta xDS switch", "WEFT_XDS_DELTA", "sometimes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(tt.variable, tt.value)
			m, err := mesh.New(context.Background())
			if err == nil {
				m.Close()
				t.Fatalf("%s=%q: New succeeded, want an error", tt.variable, tt.value)
			}
			if !strings.Contains(err.Error(), tt.variable) {
				t.Errorf("%s=%q: error %q does not name the variable", tt.variable, tt.value, err)
			}
			var envErr *mesh.EnvError
			if !errors.As(err, &envErr) || envErr.Var != tt.variable {
				t.Errorf("error %v is not an *EnvError for %s", err, tt.variable)
			}
		})
	}

	t.Run("a good bootstrap file is accepted", func(t *testing.T) {
		t.Setenv("GRPC_XDS_BOOTSTRAP", good)
		m, err := mesh.New(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		m.Close()
	})
}

func TestOptionsOverrideTheEnvironment(t *testing.T) {
	addrs, hits := backends(t, 2)
	t.Setenv("WEFT_ENDPOINTS", "orders="+addrs[0])
	t.Setenv("WEFT_LB_POLICY", "round_robin")
	m := newMesh(t, mesh.WithEndpoints("orders", addrs[1]))
	get(t, m.HTTPClient(), "http://orders/")
	if got := hits(); got[addrs[1]] != 1 || got[addrs[0]] != 0 {
		t.Errorf("hits = %v, want the option's endpoint only", got)
	}
}

func TestBadOptionsAreErrors(t *testing.T) {
	tests := []struct {
		name string
		opt  mesh.Option
		want string
	}{
		{"endpoint without port", mesh.WithEndpoints("orders", "10.0.0.1"), "WithEndpoints"},
		{"no endpoints", mesh.WithEndpoints("orders"), "WithEndpoints"},
		{"unknown balancer", mesh.WithLBPolicy("fastest"), "WithLBPolicy"},
		{"bad bootstrap", mesh.WithBootstrap([]byte("nope")), "WithBootstrap"},
		{"bad DNS name", mesh.WithDNS("orders", "a b"), "WithDNS"},
		{"empty service name", mesh.WithServiceName(""), "WithServiceName"},
		{"bad admin address", mesh.WithAdminAddr("nowhere"), "WithAdminAddr"},
		{"zero shutdown timeout", mesh.WithShutdownTimeout(0), "WithShutdownTimeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := mesh.New(context.Background(), tt.opt)
			if err == nil {
				m.Close()
				t.Fatal("New succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not name %s", err, tt.want)
			}
		})
	}
}

func TestAdminEndpoint(t *testing.T) {
	addrs, _ := backends(t, 2)
	admin := freeAddr(t)
	m := newMesh(t, mesh.WithEndpoints("orders", addrs...), mesh.WithAdminAddr(admin))
	get(t, m.HTTPClient(), "http://orders/")
	if got := get(t, http.DefaultClient, "http://"+admin+"/healthz"); got != "ok\n" {
		t.Errorf("/healthz = %q", got)
	}
	body := get(t, http.DefaultClient, "http://"+admin+"/clusters")
	for _, want := range append([]string{`"service": "orders"`, `"lb_policy": "round_robin"`}, addrs...) {
		if !strings.Contains(body, want) {
			t.Errorf("/clusters does not show %s:\n%s", want, body)
		}
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestCloseIsIdempotentAndStopsServers(t *testing.T) {
	m, err := mesh.New(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	served := make(chan error, 1)
	go func() { served <- m.ListenAndServe(context.Background(), addr, http.NotFoundHandler()) }()
	waitListening(t, addr)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("ListenAndServe after Close returned %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ListenAndServe still running after Close")
	}
}

func TestRequestsToMeshServicesFailAfterClose(t *testing.T) {
	addrs, hits := backends(t, 1)
	m, err := mesh.New(context.Background(), mesh.WithEndpoints("orders", addrs...))
	if err != nil {
		t.Fatal(err)
	}
	c := m.HTTPClient()
	m.Close()
	if _, err := c.Get("http://orders/"); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("GET after Close: err = %v, want the mesh-is-closed error", err)
	}
	if got := hits()[addrs[0]]; got != 0 {
		t.Errorf("backend got %d requests after Close", got)
	}
}

func TestRetriesAvoidAFailingEndpoint(t *testing.T) {
	addrs, hits := backends(t, 2)
	var failed atomic.Int64
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		failed.Add(1)
		http.Error(w, "always failing", http.StatusServiceUnavailable)
	}))
	defer broken.Close()
	m := newMesh(t, mesh.WithEndpoints("orders", append(addrs, broken.Listener.Addr().String())...))
	c := m.HTTPClient()
	for i := 0; i < 300; i++ {
		get(t, c, "http://orders/items") // fails the test on any non-200
	}
	if failed.Load() == 0 {
		t.Error("the failing endpoint was never picked; the test proves nothing")
	}
	// Outlier detection ejects it after five consecutive errors (Envoy's
	// default), so it sees a handful of the 300 requests, not a third.
	if n := failed.Load(); n > 10 {
		t.Errorf("the failing endpoint received %d requests; outlier detection should have ejected it after 5", n)
	}
	got := hits()
	if got[addrs[0]]+got[addrs[1]] != 300 {
		t.Errorf("healthy endpoints served %v, want 300 in all", got)
	}
}

func TestNonIdempotentRequestsAreNotRetried(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		io.Copy(io.Discard, r.Body)
		http.Error(w, "failed after doing the work", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	m := newMesh(t, mesh.WithEndpoints("orders", srv.Listener.Addr().String()))
	resp, err := m.HTTPClient().Post("http://orders/charge", "text/plain", strings.NewReader("pay 10"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n := calls.Load(); n != 1 {
		t.Errorf("a failing POST reached the backend %d times, want exactly 1", n)
	}
	calls.Store(0)
	resp, err = m.HTTPClient().Get("http://orders/items")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n := calls.Load(); n != 3 {
		t.Errorf("a failing GET reached the backend %d times, want 3 (two retries)", n)
	}
}

// A request entering a service with a deadline leaves for the next hop with
// what is left of it: B sees a deadline no later than A's.
func TestDeadlinePropagatesAcrossHops(t *testing.T) {
	deadlines := make(chan time.Time, 2)
	serve := func(m *mesh.Mesh, h http.HandlerFunc) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- m.Serve(ctx, ln, h) }()
		t.Cleanup(func() { cancel(); <-done })
		return ln.Addr().String()
	}
	var reachedA, sentToB, reachedB time.Time
	bAddr := serve(newMesh(t), func(w http.ResponseWriter, r *http.Request) {
		reachedB = time.Now()
		d, _ := r.Context().Deadline()
		deadlines <- d
	})
	a := newMesh(t, mesh.WithEndpoints("b", bAddr))
	aAddr := serve(newMesh(t), func(w http.ResponseWriter, r *http.Request) {
		reachedA = time.Now()
		d, ok := r.Context().Deadline()
		if !ok {
			http.Error(w, "no deadline reached A", http.StatusInternalServerError)
			return
		}
		deadlines <- d
		time.Sleep(20 * time.Millisecond) // time spent in A comes off B's budget
		req, _ := http.NewRequestWithContext(r.Context(), "GET", "http://b/", nil)
		sentToB = time.Now()
		resp, err := a.HTTPClient().Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		resp.Body.Close()
	})
	client := newMesh(t, mesh.WithEndpoints("a", aAddr))
	ctx, cancel := context.WithTimeout(context.Background(), 800*time.Millisecond)
	defer cancel()
	start := time.Now()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://a/", nil)
	resp, err := client.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	// The budget travels as whole milliseconds and, as with grpc-timeout,
	// a hop's own transit is not subtracted: B may gain at most the time
	// from A's send to B's receipt (measured, so a loaded machine does not
	// fail the test), plus the millisecond the rounding may add.
	dA, dB := <-deadlines, <-deadlines
	transit := reachedB.Sub(sentToB) + time.Millisecond
	if left, most := dA.Sub(start), 800*time.Millisecond+reachedA.Sub(start)+time.Millisecond; left > most || left < 400*time.Millisecond {
		t.Errorf("A's deadline is %v after the call started, want about 800ms and at most %v", left, most)
	}
	if gain := dB.Sub(dA); gain > transit {
		t.Errorf("B's deadline is %v later than A's, more than the %v transit", gain, transit)
	}
}

// Envoy's max_requests on a mesh service: past the limit a request is
// answered at once, as Envoy answers it, with 503 and x-envoy-overloaded,
// instead of queueing; LocalReplyError gives Go callers
// resilience.ErrOverflow.
func TestMaxRequestsFailsFast(t *testing.T) {
	release := make(chan struct{})
	var inHandler atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inHandler.Add(1)
		defer inHandler.Add(-1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	m := newMesh(t, mesh.WithEndpoints("orders", srv.Listener.Addr().String()),
		mesh.WithCircuitBreaker(resilience.Limits{MaxRequests: 2}))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for i := 0; i < 2; i++ {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://orders/slow", nil)
			if resp, err := m.HTTPClient().Do(req); err == nil {
				resp.Body.Close()
			}
		})
	}
	// Both slots are taken once both requests wait in the handler.
	for i := 0; i < 500 && inHandler.Load() < 2; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if inHandler.Load() < 2 {
		t.Fatal("the two slow requests never reached the backend")
	}
	tctx, tcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer tcancel()
	req, _ := http.NewRequestWithContext(tctx, "GET", "http://orders/third", nil)
	start := time.Now()
	resp, err := m.HTTPClient().Do(req)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("a third request over MaxRequests 2: %v; want Envoy's 503", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("X-Envoy-Overloaded") != "true" {
		t.Errorf("a third request over MaxRequests 2: %s, x-envoy-overloaded %q; want 503 and true", resp.Status, resp.Header.Get("X-Envoy-Overloaded"))
	}
	if err := mesh.LocalReplyError(resp); !errors.Is(err, resilience.ErrOverflow) {
		t.Errorf("LocalReplyError = %v, want resilience.ErrOverflow", err)
	}
	if took > 50*time.Millisecond {
		t.Errorf("the overflowing request took %v, want a fast failure", took)
	}
}
