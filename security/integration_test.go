package security_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/security"
	"github.com/weftmesh/weft/security/spiffetest"
)

// idHandler replies with the caller's SPIFFE ID, or "plaintext".
var idHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if id, ok := security.PeerIDFromTLS(r.TLS); ok {
		fmt.Fprint(w, id)
		return
	}
	fmt.Fprint(w, "plaintext")
})

// serveHTTP serves h on ln until the test ends.
func serveHTTP(t testing.TB, ln net.Listener, h http.Handler) {
	t.Helper()
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		_ = srv.Close()
		<-done
	})
}

func httpClient(t testing.TB, cfg *tls.Config, keepAlive bool) *http.Client {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: !keepAlive, MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

func get(c *http.Client, url string) (int, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func TestHTTPHandlerSeesPeerID(t *testing.T) {
	caS, caA := newCA(t, tdS), newCA(t, tdA)
	serverSrc := security.NewStaticSource(issue(t, caS, serverS), caS.Bundle(), caA.Bundle())
	clientSrc := security.NewStaticSource(issue(t, caA, clientA), caS.Bundle())
	ln := listen(t)
	serveHTTP(t, tls.NewListener(ln, security.ServerTLSConfig(serverSrc, security.AuthorizeMemberOf(tdA))), idHandler)

	c := httpClient(t, security.ClientTLSConfig(clientSrc, security.AuthorizeID(serverS)), true)
	code, body, err := get(c, "https://"+ln.Addr().String()+"/")
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	if code != http.StatusOK || body != clientA.String() {
		t.Errorf("GET = %d %q, want 200 %q", code, body, clientA)
	}
}

// healthServer answers Check with SERVING only when PeerID(ctx) inside the
// method is the expected caller, and puts the ID in the error otherwise.
type healthServer struct {
	healthgrpc.UnimplementedHealthServer
	want spiffeid.ID
}

func (h *healthServer) Check(ctx context.Context, _ *healthgrpc.HealthCheckRequest) (*healthgrpc.HealthCheckResponse, error) {
	id, ok := security.PeerID(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no peer ID")
	}
	if id != h.want {
		return nil, status.Errorf(codes.PermissionDenied, "peer ID %s", id)
	}
	return &healthgrpc.HealthCheckResponse{Status: healthgrpc.HealthCheckResponse_SERVING}, nil
}

func serveGRPC(t testing.TB, creds credentials.TransportCredentials, svc healthgrpc.HealthServer, opts ...grpc.ServerOption) string {
	t.Helper()
	ln := listen(t)
	srv := grpc.NewServer(append(opts, grpc.Creds(creds))...)
	healthgrpc.RegisterHealthServer(srv, svc)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return ln.Addr().String()
}

func grpcCheck(t testing.TB, addr string, creds credentials.TransportCredentials) error {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = healthgrpc.NewHealthClient(conn).Check(ctx, &healthgrpc.HealthCheckRequest{})
	return err
}

func TestGRPCPeerID(t *testing.T) {
	caS, caA, caB := newCA(t, tdS), newCA(t, tdA), newCA(t, tdB)
	serverSrc := security.NewStaticSource(issue(t, caS, serverS), caS.Bundle(), caA.Bundle())
	addr := serveGRPC(t, credentials.NewTLS(security.ServerTLSConfig(serverSrc, nil)), &healthServer{want: clientA})

	good := security.NewStaticSource(issue(t, caA, clientA), caS.Bundle())
	if err := grpcCheck(t, addr, credentials.NewTLS(security.ClientTLSConfig(good, security.AuthorizeID(serverS)))); err != nil {
		t.Errorf("Check from %s: %v, want success", clientA, err)
	}
	foreign := security.NewStaticSource(issue(t, caB, clientB), caS.Bundle())
	if err := grpcCheck(t, addr, credentials.NewTLS(security.ClientTLSConfig(foreign, nil))); status.Code(err) != codes.Unavailable {
		t.Errorf("Check from untrusted %s: %v, want Unavailable (handshake refused)", clientB, err)
	}
}

// TestRotationUnderLoad rotates both sides' SVIDs through real Workload API
// servers every 150ms for 2s while clients open new mTLS connections; no
// request may fail, and the server must have seen several client
// certificates.
func TestRotationUnderLoad(t *testing.T) {
	ca := newCA(t, tdS)
	clientID := spiffeid.RequireFromString("spiffe://server.test/ns/prod/sa/client")
	serverAPI, err := spiffetest.StartWorkloadAPI(ca, serverS, spiffetest.WithTTL(time.Minute))
	if err != nil {
		t.Fatalf("StartWorkloadAPI: %v", err)
	}
	defer serverAPI.Close()
	clientAPI, err := spiffetest.StartWorkloadAPI(ca, clientID, spiffetest.WithTTL(time.Minute))
	if err != nil {
		t.Fatalf("StartWorkloadAPI: %v", err)
	}
	defer clientAPI.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	serverSrc, err := security.NewWorkloadAPISource(ctx, serverAPI.Addr())
	if err != nil {
		t.Fatalf("NewWorkloadAPISource: %v", err)
	}
	defer serverSrc.Close()
	clientSrc, err := security.NewWorkloadAPISource(ctx, clientAPI.Addr())
	if err != nil {
		t.Fatalf("NewWorkloadAPISource: %v", err)
	}
	defer clientSrc.Close()

	var mu sync.Mutex
	serials := map[string]bool{}
	ln := listen(t)
	serveHTTP(t, tls.NewListener(ln, security.ServerTLSConfig(serverSrc, security.AuthorizeID(clientID))),
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			serials[r.TLS.PeerCertificates[0].SerialNumber.String()] = true
			mu.Unlock()
			idHandler.ServeHTTP(w, r)
		}))
	c := httpClient(t, security.ClientTLSConfig(clientSrc, security.AuthorizeID(serverS)), false)
	url := "https://" + ln.Addr().String() + "/"

	const (
		duration = 2 * time.Second
		interval = 150 * time.Millisecond
		workers  = 4
		maxReqs  = 5000 // per worker
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < maxReqs; i++ {
				select {
				case <-stop:
					return
				default:
				}
				code, body, err := get(c, url)
				if err == nil && (code != http.StatusOK || body != clientID.String()) {
					err = fmt.Errorf("got %d %q", code, body)
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				ok.Add(1)
			}
		}()
	}
	rotations := 0
	deadline := time.After(duration)
	tick := time.NewTicker(interval)
loop:
	for i := 0; i < int(duration/interval)+1; i++ {
		select {
		case <-deadline:
			break loop
		case <-tick.C:
		}
		if _, err := serverAPI.Rotate(); err != nil {
			t.Errorf("Rotate server: %v", err)
		}
		if _, err := clientAPI.Rotate(); err != nil {
			t.Errorf("Rotate client: %v", err)
		}
		rotations++
	}
	tick.Stop()
	close(stop)
	wg.Wait()

	mu.Lock()
	seen := len(serials)
	mu.Unlock()
	t.Logf("%d rotations, %d requests, %d failures, %d client certificates seen", rotations, ok.Load(), failed.Load(), seen)
	if n := failed.Load(); n != 0 {
		t.Errorf("%d requests failed (first: %v), want 0", n, firstErr.Load())
	}
	if ok.Load() == 0 {
		t.Error("no request succeeded")
	}
	if seen < 3 {
		t.Errorf("server saw %d distinct client certificates, want at least 3 (rotation not observed)", seen)
	}
}

func TestPermissiveListener(t *testing.T) {
	caS, caA := newCA(t, tdS), newCA(t, tdA)
	serverSrc := security.NewStaticSource(issue(t, caS, serverS), caS.Bundle(), caA.Bundle())
	clientSrc := security.NewStaticSource(issue(t, caA, clientA), caS.Bundle())
	ln := listen(t)
	pl := security.PermissiveListener(ln, security.ServerTLSConfig(serverSrc, nil), security.WithPeekTimeout(2*time.Second))
	serveHTTP(t, pl, idHandler)
	addr := ln.Addr().String()

	// A client that connects and sends nothing must not hold up others.
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer idle.Close()

	tests := []struct {
		name   string
		client *http.Client
		url    string
		want   string
	}{
		{"plaintext", httpClient(t, nil, true), "http://" + addr + "/", "plaintext"},
		{"mutual TLS", httpClient(t, security.ClientTLSConfig(clientSrc, security.AuthorizeID(serverS)), true), "https://" + addr + "/", clientA.String()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			code, body, err := get(tt.client, tt.url)
			if err != nil {
				t.Fatalf("GET: %v", err)
			}
			if code != http.StatusOK || body != tt.want {
				t.Errorf("GET = %d %q, want 200 %q", code, body, tt.want)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("GET took %s behind an idle connection, want well under the 2s peek timeout", d)
			}
		})
	}

	// The idle connection is dropped after the peek timeout.
	_ = idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("read on idle connection = %v, want EOF (dropped after the peek timeout)", err)
	}

	// A TLS client without a certificate is still refused in permissive mode.
	noCert := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
	if _, _, err := get(httpClient(t, noCert, false), "https://"+addr+"/"); err == nil {
		t.Error("TLS GET without a client certificate succeeded, want refusal")
	}
}

func TestPermissiveListenerClose(t *testing.T) {
	ln := listen(t)
	pl := security.PermissiveListener(ln, &tls.Config{}, security.WithPeekTimeout(time.Minute))
	pending, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer pending.Close()
	if _, err := pending.Write([]byte("G")); err != nil {
		t.Fatalf("write: %v", err)
	}
	accepted := make(chan error, 1)
	go func() {
		c, err := pl.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	if err := <-accepted; err != nil {
		t.Fatalf("Accept: %v", err)
	}
	// A connection still being inspected is dropped by Close, which must
	// not wait for the minute-long peek timeout.
	waiting, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer waiting.Close()
	start := time.Now()
	for i := 0; i < 3; i++ {
		if err := pl.Close(); err != nil {
			t.Errorf("Close #%d: %v", i+1, err)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %s, want prompt", d)
	}
	if _, err := pl.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close = %v, want net.ErrClosed", err)
	}
}

func TestPermissiveCredentialsGRPC(t *testing.T) {
	caS, caA := newCA(t, tdS), newCA(t, tdA)
	serverSrc := security.NewStaticSource(issue(t, caS, serverS), caS.Bundle(), caA.Bundle())
	clientSrc := security.NewStaticSource(issue(t, caA, clientA), caS.Bundle())
	addr := serveGRPC(t, security.PermissiveCredentials(security.ServerTLSConfig(serverSrc, nil)), &healthServer{want: clientA})

	if err := grpcCheck(t, addr, credentials.NewTLS(security.ClientTLSConfig(clientSrc, security.AuthorizeID(serverS)))); err != nil {
		t.Errorf("mTLS Check: %v, want success", err)
	}
	if err := grpcCheck(t, addr, insecure.NewCredentials()); status.Code(err) != codes.Unauthenticated {
		t.Errorf("plaintext Check: %v, want Unauthenticated from the method (no peer ID)", err)
	}
}
