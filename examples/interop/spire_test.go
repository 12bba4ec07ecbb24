package interop

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/peer"

	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/security"
)

var spire = tool{
	name:    "spire",
	module:  "github.com/spiffe/spire",
	version: "v1.13.3",
	cmds:    []string{"github.com/spiffe/spire/cmd/spire-server", "github.com/spiffe/spire/cmd/spire-agent"},
	// One of SPIRE's dependencies is missing from the checksum database.
	env: []string{"GONOSUMDB=github.com/GoogleCloudPlatform/cloudsql-proxy", "CGO_ENABLED=1"},
}

// svidTTL is the SPIRE server's default X.509-SVID lifetime; the agent
// renews an SVID at half its life, so the test sees rotations every ~10 s.
const svidTTL = 20 * time.Second

const spireServerConf = `
server {
  bind_address = "127.0.0.1"
  bind_port = "%d"
  socket_path = "%s"
  trust_domain = "example.org"
  data_dir = "%s"
  log_level = "INFO"
  default_x509_svid_ttl = "%s"
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = "%s"
    }
  }
  KeyManager "memory" {
    plugin_data {}
  }
  NodeAttestor "join_token" {
    plugin_data {}
  }
}
`

const spireAgentConf = `
agent {
  data_dir = "%s"
  log_level = "INFO"
  server_address = "127.0.0.1"
  server_port = "%d"
  socket_path = "%s"
  trust_domain = "example.org"
  insecure_bootstrap = true
}
plugins {
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "memory" {
    plugin_data {}
  }
  WorkloadAttestor "unix" {
    plugin_data {}
  }
}
`

// startSPIRE runs a SPIRE server and a join-token agent and returns the
// agent's Workload API address and the server's API socket.
func startSPIRE(t *testing.T, bins map[string]string) (agentAddr, serverSock string) {
	t.Helper()
	// Unix socket paths are limited to ~100 bytes: a short directory.
	dir, err := os.MkdirTemp("", "spire")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serverPort := port(l)
	l.Close()
	serverSock = filepath.Join(dir, "server.sock")
	agentSock := filepath.Join(dir, "agent.sock")
	serverConf := filepath.Join(dir, "server.conf")
	agentConf := filepath.Join(dir, "agent.conf")
	os.WriteFile(serverConf, []byte(fmt.Sprintf(spireServerConf, serverPort, serverSock, filepath.Join(dir, "server"),
		svidTTL, filepath.Join(dir, "server", "datastore.sqlite3"))), 0o600)
	os.WriteFile(agentConf, []byte(fmt.Sprintf(spireAgentConf, filepath.Join(dir, "agent"), serverPort, agentSock)), 0o600)

	server := bins["spire-server"]
	process(t, server, "run", "-config", serverConf)
	if err := eventually(60*time.Second, func() error {
		_, err := runErr(server, "healthcheck", "-socketPath", serverSock)
		return err
	}); err != nil {
		t.Fatalf("spire-server never became healthy: %v", err)
	}
	out := run(t, server, "token", "generate", "-socketPath", serverSock, "-spiffeID", "spiffe://example.org/agent", "-ttl", "600")
	m := regexp.MustCompile(`Token: (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no join token in %q", out)
	}
	process(t, bins["spire-agent"], "run", "-config", agentConf, "-joinToken", m[1])
	if err := eventually(60*time.Second, func() error {
		_, err := runErr(bins["spire-agent"], "healthcheck", "-socketPath", agentSock)
		return err
	}); err != nil {
		t.Fatalf("spire-agent never became healthy: %v", err)
	}
	// Both services run in this process, so both entries select its uid;
	// each service picks its own SVID from the two the agent hands out.
	uid := strconv.Itoa(os.Getuid())
	for _, id := range []string{"spiffe://example.org/frontend", "spiffe://example.org/orders"} {
		run(t, server, "entry", "create", "-socketPath", serverSock, "-parentID", "spiffe://example.org/agent",
			"-spiffeID", id, "-selector", "unix:uid:"+uid, "-x509SVIDTTL", strconv.Itoa(int(svidTTL.Seconds())))
	}
	return "unix://" + agentSock, serverSock
}

func runErr(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// spireSource is go-spiffe's Workload API client on SPIRE's agent,
// presenting the SVID with the given ID.
func spireSource(t *testing.T, addr, id string) *workloadapi.X509Source {
	t.Helper()
	want := spiffeid.RequireFromString(id)
	pick := func(svids []*x509svid.SVID) *x509svid.SVID {
		for _, s := range svids {
			if s.ID == want {
				return s
			}
		}
		return svids[0]
	}
	var src *workloadapi.X509Source
	// The agent registers new entries on its next sync (every few seconds).
	err := eventually(60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(addr)),
			workloadapi.WithDefaultX509SVIDPicker(pick))
		if err != nil {
			return err
		}
		if svid, err := s.GetX509SVID(); err != nil || svid.ID != want {
			s.Close()
			return fmt.Errorf("SVID %v (%v), want %s", svid.ID, err, want)
		}
		src = s
		return nil
	})
	if err != nil {
		t.Fatalf("no SVID %s from the SPIRE agent: %v", id, err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// TestSPIRE: two Weft services, each with an SVID from a real SPIRE agent,
// talk mTLS over HTTP and gRPC while SPIRE rotates both SVIDs.
func TestSPIRE(t *testing.T) {
	bins := spire.binaries(t)
	agent, _ := startSPIRE(t, bins)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	t.Run("SPIFFE_ENDPOINT_SOCKET", func(t *testing.T) {
		// Weft's own Workload API client, configured as users do.
		t.Setenv(mesh.EnvSPIFFESocket, agent)
		m, err := mesh.New(ctx, mesh.WithServiceName("probe"))
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if m.ServerTLSConfig() == nil {
			t.Fatal("no mTLS with an SVID from SPIRE")
		}
	})

	policy := filepath.Join(t.TempDir(), "authz.yaml")
	os.WriteFile(policy, []byte(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: orders, namespace: default}
spec:
  action: ALLOW
  rules:
  - from: [{source: {principals: [example.org/frontend]}}]
`), 0o600)
	orders, err := mesh.New(ctx, mesh.WithServiceName("orders"),
		mesh.WithX509Source(spireSource(t, agent, "spiffe://example.org/orders")),
		mesh.WithAuthorizationPolicyFile(policy))
	if err != nil {
		t.Fatal(err)
	}
	defer orders.Close()
	var mu sync.Mutex
	clientSerials := map[string]bool{} // client certificates orders saw
	hl, gl := listenT(t, "127.0.0.1"), listenT(t, "127.0.0.1")
	go orders.Serve(ctx, hl, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := security.PeerID(r.Context())
		mu.Lock()
		clientSerials[r.TLS.PeerCertificates[0].SerialNumber.String()] = true
		mu.Unlock()
		fmt.Fprint(w, id)
	}))
	gs, err := orders.NewGRPCServer()
	if err != nil {
		t.Fatal(err)
	}
	testpb.RegisterTestServiceServer(gs, grpcEcho{b: &behaviour{name: "orders"}})
	go gs.Serve(gl)
	defer gs.Stop()

	frontendSrc := spireSource(t, agent, "spiffe://example.org/frontend")
	frontend, err := mesh.New(ctx, mesh.WithServiceName("frontend"), mesh.WithX509Source(frontendSrc),
		mesh.WithEndpoints("orders", hl.Addr().String()), mesh.WithEndpoints("orders-grpc", gl.Addr().String()))
	if err != nil {
		t.Fatal(err)
	}
	defer frontend.Close()
	cc, err := frontend.DialGRPC("orders-grpc")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()

	// A caller with no SVID is refused at the handshake.
	if code, _, err := httpGet(ctx, http.DefaultClient, "https://"+hl.Addr().String()+"/"); err == nil {
		t.Errorf("a caller without an SVID got %d", code)
	}

	serverSerials := map[string]bool{} // server certificates frontend saw
	ownSerials := map[string]bool{}    // frontend's own SVIDs, from the source
	requests := 0
	deadline := time.Now().Add(4 * svidTTL)
	for time.Now().Before(deadline) && (len(serverSerials) < 2 || len(clientSerials) < 2 || len(ownSerials) < 2) {
		// A new connection each time, so each request shows the
		// certificates in force now rather than at the first handshake.
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://orders/", nil)
		req.Close = true
		resp, err := frontend.HTTPClient().Do(req)
		if err != nil {
			t.Fatalf("request %d: %v", requests, err)
		}
		body := make([]byte, 64)
		n, _ := resp.Body.Read(body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body[:n]) != "spiffe://example.org/frontend" {
			t.Fatalf("request %d: %d %q, want orders to see spiffe://example.org/frontend", requests, resp.StatusCode, body[:n])
		}
		serverSerials[resp.TLS.PeerCertificates[0].SerialNumber.String()] = true
		var p peer.Peer
		if _, err := testpb.NewTestServiceClient(cc).UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.Peer(&p)); err != nil {
			t.Fatalf("gRPC call %d: %v", requests, err)
		}
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); !ok || spiffeOf(ti.State.PeerCertificates[0]) != "spiffe://example.org/orders" {
			t.Fatalf("gRPC call %d: peer %v, want spiffe://example.org/orders", requests, p.AuthInfo)
		}
		svid, _ := frontendSrc.GetX509SVID()
		ownSerials[svid.Certificates[0].SerialNumber.String()] = true
		requests++
		time.Sleep(250 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d HTTP requests and %d gRPC calls over mTLS, all succeeded; certificates seen: orders' %d, frontend's %d (by orders), frontend's own %d",
		requests, requests, len(serverSerials), len(clientSerials), len(ownSerials))
	if len(serverSerials) < 2 || len(clientSerials) < 2 {
		t.Errorf("no rotation seen within %v: orders presented %d certificates, frontend %d", 4*svidTTL, len(serverSerials), len(clientSerials))
	}
}

func spiffeOf(c *x509.Certificate) string {
	if len(c.URIs) == 0 {
		return ""
	}
	return c.URIs[0].String()
}
