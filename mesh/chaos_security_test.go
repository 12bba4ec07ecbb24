package mesh_test

import (
	"context"
	"crypto/x509"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"

	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/security/spiffetest"
)

// sniffer is a raw TCP listener in front of a backend: it reads the first
// bytes of every connection, records whether they are a TLS ClientHello,
// and forwards TLS connections to the backend. Plaintext goes no further.
type sniffer struct {
	ln        net.Listener
	target    string
	tls, rest atomic.Int64
	wg        sync.WaitGroup
	mu        sync.Mutex
	conns     map[net.Conn]struct{}
}

func startSniffer(t *testing.T, target string) *sniffer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sniffer{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *sniffer) track(c net.Conn, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
}

func (s *sniffer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.track(c, true)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.track(c, false)
			defer c.Close()
			// A TLS record header (type 22, handshake; version 3.x) whose
			// first handshake message is a ClientHello (type 1).
			head := make([]byte, 6)
			if _, err := io.ReadFull(c, head); err != nil {
				return
			}
			if head[0] != 0x16 || head[1] != 0x03 || head[5] != 0x01 {
				s.rest.Add(1)
				return
			}
			s.tls.Add(1)
			up, err := net.Dial("tcp", s.target)
			if err != nil {
				return
			}
			s.track(up, true)
			defer s.track(up, false)
			defer up.Close()
			if _, err := up.Write(head); err != nil {
				return
			}
			done := make(chan struct{})
			go func() {
				io.Copy(c, up)
				c.Close()
				close(done)
			}()
			io.Copy(up, c)
			up.Close()
			<-done
		}()
	}
}

// tlsWhoServer is a mesh server that records the serial numbers of the
// client certificates it sees and closes every 20th connection, so new
// handshakes keep happening while identities rotate.
type tlsWhoServer struct {
	addr    string
	mu      sync.Mutex
	serials map[string]*x509.Certificate
	n       atomic.Int64
}

func serveTLSWho(t *testing.T, m *mesh.Mesh) *tlsWhoServer {
	t.Helper()
	s := &tlsWhoServer{serials: map[string]*x509.Certificate{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- m.Serve(ctx, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
				leaf := r.TLS.PeerCertificates[0]
				s.mu.Lock()
				s.serials[leaf.SerialNumber.String()] = leaf
				s.mu.Unlock()
			}
			if s.n.Add(1)%20 == 0 {
				w.Header().Set("Connection", "close")
			}
			io.Copy(io.Discard, r.Body)
			io.WriteString(w, "ok")
		}))
	}()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

func (s *tlsWhoServer) seen() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.serials)
}

func (s *tlsWhoServer) saw(serial *big.Int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.serials[serial.String()]
	return ok
}

// waitSeen waits until one of the servers has seen a client certificate
// with serial, which proves a handshake with it happened under load.
func waitSeen(t *testing.T, serial *big.Int, servers ...*tlsWhoServer) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, s := range servers {
			if s.saw(serial) {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no server saw the client certificate with serial %v within 20s", serial)
}

func TestChaosSVIDAndTrustBundleRotation(t *testing.T) {
	ca1 := newCA(t, shop)
	serverAPI := workloadAPI(t, ca1, ordersID)
	clientAPI := workloadAPI(t, ca1, frontendID)

	t.Setenv("SPIFFE_ENDPOINT_SOCKET", serverAPI.Addr())
	s1, s2 := serveTLSWho(t, newMesh(t)), serveTLSWho(t, newMesh(t))
	sn1, sn2 := startSniffer(t, s1.addr), startSniffer(t, s2.addr)
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", clientAPI.Addr())
	m := newMesh(t, mesh.WithEndpoints("orders", sn1.ln.Addr().String(), sn2.ln.Addr().String()))
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", "")

	l := &load{c: m.HTTPClient(), url: "http://orders", workers: 4, max: 20000, postEvery: 10}
	run := l.start(t)
	run.waitSent(t, 200)
	// Three rotations of both SVIDs (new keys, same CA).
	for range 3 {
		if _, err := serverAPI.Rotate(); err != nil {
			t.Fatal(err)
		}
		svid, err := clientAPI.Rotate()
		if err != nil {
			t.Fatal(err)
		}
		waitSeen(t, svid.Certificates[0].SerialNumber, s1, s2)
		run.waitSent(t, 100)
	}
	// Trust-bundle rotation to a new root: publish both roots, move both
	// sides to SVIDs from the new CA, then retire the old root.
	ca2, err := spiffetest.NewCA(shop)
	if err != nil {
		t.Fatal(err)
	}
	both := x509bundle.FromX509Authorities(shop, []*x509.Certificate{ca1.Root(), ca2.Root()})
	serverAPI.SetBundles(both)
	clientAPI.SetBundles(both)
	run.waitSent(t, 200)
	for _, side := range []struct {
		api *spiffetest.WorkloadAPI
	}{{serverAPI}, {clientAPI}} {
		svid, err := ca2.IssueX509SVID(side.api.ID(), 0)
		if err != nil {
			t.Fatal(err)
		}
		side.api.SetX509SVID(svid)
	}
	waitSeen(t, clientAPI.X509SVID().Certificates[0].SerialNumber, s1, s2)
	run.waitSent(t, 200)
	serverAPI.SetBundles(ca2.Bundle())
	clientAPI.SetBundles(ca2.Bundle())
	run.waitSent(t, 400)
	run.halt()

	run.checkNoFailure(t)
	if n := sn1.rest.Load() + sn2.rest.Load(); n > 0 {
		t.Errorf("%d connections from the strict-mTLS client did not open with a TLS ClientHello", n)
	}
	handshakes := sn1.tls.Load() + sn2.tls.Load()
	if handshakes < 10 {
		t.Errorf("only %d connections were made; the rotations were not exercised by new handshakes", handshakes)
	}
	t.Logf("%d connections, all opening with a TLS ClientHello; %d client certificates seen by the servers", handshakes, s1.seen()+s2.seen())
	report(t, "SVIDs rotated 3 times, then the trust bundle rotated to a new root (both roots, new SVIDs, old root retired)", l, run,
		"no request failed; every connection opened with a TLS ClientHello (no plaintext)")
}

const allowItems = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: orders
spec:
  action: ALLOW
  rules:
  - to:
    - operation:
        methods: ["GET", "POST"]
        paths: ["/items/*"]
`

func TestChaosBrokenAuthorizationPolicy(t *testing.T) {
	policy := filepath.Join(t.TempDir(), "authz.yaml")
	if err := os.WriteFile(policy, []byte(allowItems), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	srv := newMesh(t, mesh.WithAuthorizationPolicyFile(policy), mesh.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	addr := serveWhoami(t, srv)
	m := newMesh(t, mesh.WithEndpoints("orders", addr))

	l := &load{c: m.HTTPClient(), url: "http://orders", workers: 4, max: 20000, postEvery: 10,
		path: func(n int64) string {
			if n%4 == 0 {
				return "/admin"
			}
			return "/items/1"
		},
		expect: func(path string) int {
			if path == "/admin" {
				return http.StatusForbidden
			}
			return http.StatusOK
		}}
	run := l.start(t)
	run.waitSent(t, 200)
	// Half a file, as an editor or a config sync that died mid-write
	// leaves it: the YAML does not parse.
	if err := os.WriteFile(policy, []byte(allowItems[:len(allowItems)/2]+"\n  - [unclosed"), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(logs.String(), "keeping the last good authorization policies") {
		if time.Now().After(deadline) {
			t.Fatalf("the broken policy file was not reported within 15s; log:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	run.waitSent(t, 600)
	run.halt()
	run.checkNoFailure(t)

	// A good file again is applied: /admin is now allowed.
	if err := os.WriteFile(policy, []byte(strings.ReplaceAll(allowItems, `"/items/*"`, `"/items/*", "/admin"`)), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(15 * time.Second)
	for {
		resp, err := m.HTTPClient().Get("http://orders/admin")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the repaired policy file was not applied within 15s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	report(t, "authorization policy file replaced by a broken one (half-written YAML), then repaired", l, run,
		"every decision as the last good policy says (200 for /items/*, 403 for /admin); the error logged; the repair applied")
}
