package interop

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	xdsgrpc "google.golang.org/grpc/xds"
	"istio.io/istio/pilot/test/xds"
	"istio.io/istio/security/pkg/pki/ca"
	pkiutil "istio.io/istio/security/pkg/pki/util"

	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/security"
)

// istioVersion is sent as ISTIO_VERSION in the node metadata; istiod
// tailors its output to the proxy's version.
const istioVersion = "1.29.0"

// istioConfig is what istiod is fed: one plaintext service with two
// versions routed by a VirtualService, a second name for the same two
// workloads balanced by a consistent hash on a header, and one mTLS
// service guarded by PeerAuthentication and an AuthorizationPolicy. Placeholders in braces
// are the backends' ports, known once they listen.
const istioConfig = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo.mesh.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 8080, name: http, protocol: HTTP}
  - {number: 7070, name: grpc, protocol: GRPC}
  workloadSelector: {labels: {app: echo}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: echo-v1, namespace: default, labels: {app: echo, version: v1}}
spec:
  address: 127.0.0.2
  labels: {app: echo, version: v1}
  ports: {http: {v1.http}, grpc: {v1.grpc}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: echo-v2, namespace: default, labels: {app: echo, version: v2}}
spec:
  address: 127.0.0.3
  labels: {app: echo, version: v2}
  ports: {http: {v2.http}, grpc: {v2.grpc}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: default}
spec:
  host: echo.mesh.local
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
    connectionPool: {http: {http2MaxRequests: 1000}}
    outlierDetection: {consecutive5xxErrors: 50, interval: 10s, baseEjectionTime: 30s}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo.mesh.local]
  http:
  - name: testers
    match: [{headers: {x-tester: {exact: "yes"}}}]
    route: [{destination: {host: echo.mesh.local, subset: v2}}]
  - name: by-uri
    match: [{uri: {prefix: /v2-only}}, {uri: {exact: /grpc.testing.TestService/EmptyCall}}]
    route: [{destination: {host: echo.mesh.local, subset: v2}}]
  - name: slow
    match: [{headers: {x-slow: {exact: "yes"}}}]
    timeout: 0.3s
    route: [{destination: {host: echo.mesh.local, subset: v1}}]
  - name: flaky
    match: [{headers: {x-flaky: {exact: "yes"}}}]
    retries: {attempts: 3, retryOn: "5xx,unavailable"}
    route: [{destination: {host: echo.mesh.local, subset: v1}}]
  - name: canary
    route:
    - {destination: {host: echo.mesh.local, subset: v1}, weight: 90}
    - {destination: {host: echo.mesh.local, subset: v2}, weight: 10}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: sticky, namespace: default}
spec:
  hosts: [sticky.mesh.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 8080, name: http, protocol: HTTP}
  - {number: 7070, name: grpc, protocol: GRPC}
  workloadSelector: {labels: {app: echo}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: sticky, namespace: default}
spec:
  host: sticky.mesh.local
  trafficPolicy:
    loadBalancer: {consistentHash: {httpHeaderName: x-user}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: secure, namespace: default}
spec:
  hosts: [secure.mesh.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 8080, name: http, protocol: HTTP}
  - {number: 7070, name: grpc, protocol: GRPC}
  workloadSelector: {labels: {app: secure}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: secure, namespace: default, labels: {app: secure}}
spec:
  address: 127.0.0.4
  labels: {app: secure}
  serviceAccount: secure
  ports: {http: {secure.http}, grpc: {secure.grpc}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: impostor, namespace: default}
spec:
  hosts: [impostor.mesh.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 8080, name: http, protocol: HTTP}
  - {number: 7070, name: grpc, protocol: GRPC}
  workloadSelector: {labels: {app: impostor}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: impostor, namespace: default, labels: {app: impostor}}
spec:
  address: 127.0.0.5
  labels: {app: impostor}
  serviceAccount: secure
  ports: {http: {impostor.http}, grpc: {impostor.grpc}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: secure, namespace: default}
spec:
  host: secure.mesh.local
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: impostor, namespace: default}
spec:
  host: impostor.mesh.local
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: secure, namespace: default}
spec:
  selector: {matchLabels: {app: secure}}
  mtls: {mode: STRICT}
` + denyPolicy

// denyPolicy is fed to istiod (which turns it into the RBAC filter of the
// secure workload's inbound listener, enforced by grpc-go's xDS server)
// and, as the same YAML, to the secure workload's HTTP side through
// WithAuthorizationPolicyFile: istiod's proxyless generator configures
// gRPC servers only.
const denyPolicy = `---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-denied, namespace: default}
spec:
  selector: {matchLabels: {app: secure}}
  action: DENY
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/denied]}}]
`

// istiod is the in-process discovery server and what talks to it.
type istiod struct {
	addr string // the gRPC xDS listener on 127.0.0.1
	ca   *ca.IstioCA
	ds   *xds.FakeDiscoveryServer
}

// startIstiod runs istiod's discovery server in-process, with its memory
// config store fed YAML and a fake Kubernetes API, serving xDS on a
// loopback TCP port, as Istio's own proxyless gRPC tests do.
func startIstiod(t *testing.T, config string) *istiod {
	t.Helper()
	ds := xds.NewFakeDiscoveryServer(t, xds.FakeOptions{
		ConfigString:    config,
		ListenerBuilder: func() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") },
	})
	// istiod's CA, as it runs inside istiod without Kubernetes: a
	// self-signed root in memory, signing workload CSRs.
	opts, err := ca.NewSelfSignedDebugIstioCAOptions("", 24*time.Hour, time.Hour, 24*time.Hour, "cluster.local", 2048)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.NewIstioCA(opts)
	if err != nil {
		t.Fatal(err)
	}
	return &istiod{addr: ds.Listener.Addr().String(), ca: c, ds: ds}
}

// streams counts the ADS streams istiod holds for the workload named
// name, by the user agent each client sends in its node ("weft" for
// Weft's, "gRPC Go" for grpc-go's).
func (d *istiod) streams(name string) map[string]int {
	got := map[string]int{}
	for _, c := range d.ds.Discovery.Clients() {
		if p := c.Proxy(); p != nil && p.ID == name+".default" {
			got[p.XdsNode.GetUserAgentName()]++
		}
	}
	return got
}

// workload is one pod's view of the mesh: its bootstrap (written by
// mesh.IstioBootstrap) and, when it has a service account, the files the
// istio-agent would write: cert-chain.pem, key.pem, root-cert.pem.
type workload struct {
	name, ip  string
	bootstrap []byte
	certDir   string
}

// newWorkload describes a pod named name at ip; sa, when set, gets a
// certificate issued by istiod's CA for spiffe://cluster.local/ns/default/sa/<sa>.
func (d *istiod) newWorkload(t *testing.T, name, ip, sa string) *workload {
	t.Helper()
	w := &workload{name: name, ip: ip, certDir: t.TempDir()}
	if sa != "" {
		id := "spiffe://cluster.local/ns/default/sa/" + sa
		csr, key, err := pkiutil.GenCSR(pkiutil.CertOptions{Host: id, ECSigAlg: pkiutil.EcdsaSigAlg})
		if err != nil {
			t.Fatal(err)
		}
		chain, err := d.ca.SignWithCertChain(csr, ca.CertOpts{SubjectIDs: []string{id}, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		for file, data := range map[string][]byte{
			"cert-chain.pem": []byte(strings.Join(chain, "")),
			"key.pem":        key,
			"root-cert.pem":  d.ca.GetCAKeyCertBundle().GetRootCertPem(),
		} {
			if err := os.WriteFile(filepath.Join(w.certDir, file), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	bs, err := mesh.IstioBootstrap{
		XDSAddress:   d.addr,
		PodName:      name,
		Namespace:    "default",
		PodIP:        ip,
		IstioVersion: istioVersion,
		CertDir:      w.certDir,
	}.Bootstrap()
	if err != nil {
		t.Fatal(err)
	}
	w.bootstrap = bs
	return w
}

// mesh starts a Weft mesh on the workload's bootstrap; with certificates,
// its identity comes from the same files grpc-go's certificate provider reads.
func (w *workload) mesh(t *testing.T, opts ...mesh.Option) *mesh.Mesh {
	t.Helper()
	opts = append([]mesh.Option{mesh.WithServiceName(w.name), mesh.WithBootstrap(w.bootstrap)}, opts...)
	if _, err := os.Stat(filepath.Join(w.certDir, "key.pem")); err == nil {
		src, err := security.NewFileSource(filepath.Join(w.certDir, "cert-chain.pem"),
			filepath.Join(w.certDir, "key.pem"), filepath.Join(w.certDir, "root-cert.pem"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { src.Close() })
		opts = append(opts, mesh.WithX509Source(src))
	}
	m, err := mesh.New(context.Background(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// grpcGo dials target with plain grpc-go: its xDS resolver on the
// workload's bootstrap and its xDS credentials, which take certificates
// from the bootstrap's "default" provider when istiod asks for TLS.
func (w *workload) grpcGo(t *testing.T, target string) *grpc.ClientConn {
	t.Helper()
	res, err := xdsgrpc.NewXDSResolverWithConfigForTesting(w.bootstrap)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(target, grpc.WithResolvers(res), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func weftGRPC(t *testing.T, m *mesh.Mesh, target string) *grpc.ClientConn {
	t.Helper()
	cc, err := m.DialGRPC(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func fill(config string, vars map[string]int) string {
	for k, v := range vars {
		config = strings.ReplaceAll(config, "{"+k+"}", strconv.Itoa(v))
	}
	return config
}

// The rows of TestIstiod, one subtest each: which client makes the calls.
// The two weft-grpc rows are Weft's gRPC client (mesh.DialGRPC) on Weft's
// own xDS client, the same client and ADS stream as weft-http; the
// grpc-go row is grpc-go's own xDS resolver and credentials on the same
// bootstrap, the oracle for what istiod's resources mean to a gRPC client.
const (
	rowHTTP = "weft-http" // mesh.HTTPClient
	// rowWeftXDS dials "xds:///host:port".
	rowWeftXDS = "weft-grpc-xds-target"
	// rowWeftPlain dials "host:port", which follows the same listener as
	// xds:///host:port because the mesh has a bootstrap.
	rowWeftPlain = "weft-grpc-plain-name"
	// rowGRPCGo dials "xds:///host:port" with grpc-go alone.
	rowGRPCGo = "grpc-go-oracle"
)

// grpcRow is one gRPC client of the table.
type grpcRow struct {
	name string
	cc   *grpc.ClientConn
}

// grpcRows dials hostPort as each gRPC row of the workload, whose mesh is m.
func (w *workload) grpcRows(t *testing.T, m *mesh.Mesh, hostPort string) []grpcRow {
	t.Helper()
	return []grpcRow{
		{rowWeftXDS, weftGRPC(t, m, "xds:///"+hostPort)},
		{rowWeftPlain, weftGRPC(t, m, hostPort)},
		{rowGRPCGo, w.grpcGo(t, "xds:///"+hostPort)},
	}
}

// TestIstiod runs Weft's HTTP and gRPC clients, and grpc-go's own xDS
// client beside them as the oracle, against the routes, clusters and
// policies istiod computes from Istio YAML. Each case has a subtest per
// client (the row constants above).
func TestIstiod(t *testing.T) {
	v1 := startEchoBackend(t, "v1", "127.0.0.2")
	v2 := startEchoBackend(t, "v2", "127.0.0.3")
	secureHTTP, secureGRPC := listenT(t, "127.0.0.4"), listenT(t, "127.0.0.4")
	impostorHTTP, impostorGRPC := listenT(t, "127.0.0.5"), listenT(t, "127.0.0.5")
	d := startIstiod(t, fill(istioConfig, map[string]int{
		"v1.http": v1.httpPort, "v1.grpc": v1.grpcPort,
		"v2.http": v2.httpPort, "v2.grpc": v2.grpcPort,
		"secure.http": port(secureHTTP), "secure.grpc": port(secureGRPC),
		"impostor.http": port(impostorHTTP), "impostor.grpc": port(impostorGRPC),
	}))

	client := d.newWorkload(t, "client", "127.0.0.10", "")
	cm := client.mesh(t)
	hc := cm.HTTPClient()
	const httpURL = "http://echo.mesh.local:8080"
	grpcClients := client.grpcRows(t, cm, "echo.mesh.local:7070")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	httpCall := func(path string, hdr ...string) (string, error) {
		code, body, err := httpGet(ctx, hc, httpURL+path, hdr...)
		if err == nil && code != http.StatusOK {
			err = statusErr(code, body)
		}
		return body, err
	}

	// The first requests wait for istiod's first push.
	if err := eventually(20*time.Second, func() error {
		_, err := httpCall("/")
		return err
	}); err != nil {
		t.Fatalf("Weft HTTP never reached echo through istiod: %v", err)
	}

	t.Run("split 90/10", func(t *testing.T) {
		const n = 1000
		type callRow struct {
			name string
			call func() (string, error)
		}
		rows := []callRow{{rowHTTP, func() (string, error) { return httpCall("/") }}}
		for _, g := range grpcClients {
			rows = append(rows, callRow{g.name, func() (string, error) { return grpcServerID(ctx, g.cc) }})
		}
		for _, r := range rows {
			t.Run(r.name, func(t *testing.T) {
				got := counts(t, n, r.call)
				pct := 100 * float64(got["v1"]) / n
				t.Logf("v1 %d, v2 %d of %d (v1 %.1f%%)", got["v1"], got["v2"], n, pct)
				if got["v1"]+got["v2"] != n || pct < 85 || pct > 95 {
					t.Errorf("v1 %.1f%% (%v), want 90±5%%", pct, got)
				}
			})
		}
	})

	t.Run("one ADS stream", func(t *testing.T) {
		// Every row has called istiod's routes by now. Weft's HTTP client
		// and both weft-grpc channels share the mesh's one xDS client;
		// the oracle's channel holds a stream of its own (grpc-go builds an
		// xDS client per resolver, so per grpcGo channel).
		got := d.streams("client")
		t.Logf("istiod's streams from client.default, by user agent: %v", got)
		if want := (map[string]int{"weft": 1, "gRPC Go": 1}); !maps.Equal(got, want) {
			t.Errorf("istiod holds streams %v from the client, want %v: one for the mesh's HTTP client and both weft-grpc channels, one for the oracle", got, want)
		}
	})

	t.Run("header and URI routes", func(t *testing.T) {
		t.Run(rowHTTP, func(t *testing.T) {
			for i := range 20 {
				if body, err := httpCall("/", "x-tester", "yes"); err != nil || body != "v2" {
					t.Fatalf("x-tester request %d: %q %v, want v2", i, body, err)
				}
				if body, err := httpCall("/v2-only/items"); err != nil || body != "v2" {
					t.Fatalf("/v2-only request %d: %q %v, want v2", i, body, err)
				}
			}
		})
		for _, g := range grpcClients {
			t.Run(g.name, func(t *testing.T) {
				for i := range 20 {
					id, err := grpcServerID(ctx, g.cc, "x-tester", "yes")
					if err != nil || id != "v2" {
						t.Fatalf("x-tester call %d: %q %v, want v2", i, id, err)
					}
					var hdr metadata.MD
					if _, err := testpb.NewTestServiceClient(g.cc).EmptyCall(ctx, &testpb.Empty{}, grpc.Header(&hdr)); err != nil {
						t.Fatalf("EmptyCall %d: %v", i, err)
					}
					if got := hdr.Get("x-server"); len(got) != 1 || got[0] != "v2" {
						t.Fatalf("EmptyCall %d (URI match on the method) went to %v, want v2", i, got)
					}
				}
			})
		}
	})

	t.Run("timeout", func(t *testing.T) {
		t.Run(rowHTTP, func(t *testing.T) {
			start := time.Now()
			code, _, err := httpGet(ctx, hc, httpURL+"/", hdrSlow, "yes")
			took := time.Since(start)
			t.Logf("%d %v after %v", code, err, took.Round(time.Millisecond))
			if err == nil && code != http.StatusGatewayTimeout || took >= slowDelay {
				t.Errorf("%d %v after %v, want a 504 or an error well before %v", code, err, took, slowDelay)
			}
		})
		for _, g := range grpcClients {
			t.Run(g.name, func(t *testing.T) {
				start := time.Now()
				_, err := grpcServerID(ctx, g.cc, hdrSlow, "yes")
				took := time.Since(start)
				t.Logf("%v after %v", status.Code(err), took.Round(time.Millisecond))
				if status.Code(err) != codes.DeadlineExceeded || took >= slowDelay {
					t.Errorf("%v after %v, want DeadlineExceeded well before %v", err, took, slowDelay)
				}
			})
		}
	})

	t.Run("server streams", func(t *testing.T) {
		// A stream follows the same route match as a unary call, and the
		// route's timeout (max_stream_duration for gRPC) bounds it.
		for _, g := range grpcClients {
			t.Run(g.name, func(t *testing.T) {
				for i := range 10 {
					if got, err := streamServer(ctx, g.cc, "x-tester", "yes"); err != nil || got != "v2" {
						t.Fatalf("x-tester stream %d: %q %v, want v2", i, got, err)
					}
				}
				start := time.Now()
				_, err := streamServer(ctx, g.cc, hdrSlow, "yes")
				took := time.Since(start)
				t.Logf("slow stream: %v after %v", status.Code(err), took.Round(time.Millisecond))
				if status.Code(err) != codes.DeadlineExceeded || took >= slowDelay {
					t.Errorf("slow stream: %v after %v, want DeadlineExceeded well before %v", err, took, slowDelay)
				}
			})
		}
	})

	t.Run("retries", func(t *testing.T) {
		// v1 fails three attempts in four; the route allows three retries,
		// so each request succeeds on its fourth attempt.
		const n = 10
		check := func(t *testing.T, call func(i int) error) {
			v1.attempts.Store(0) // each row starts on a failing attempt
			for i := range n {
				if err := call(i); err != nil {
					t.Fatalf("flaky call %d: %v", i, err)
				}
			}
			if got, want := v1.attempts.Load(), int64(4*n); got != want {
				t.Errorf("v1 saw %d attempts for %d calls, want %d (4 each)", got, n, want)
			}
		}
		t.Run(rowHTTP, func(t *testing.T) {
			check(t, func(int) error { _, err := httpCall("/", hdrFlaky, "yes"); return err })
		})
		for _, g := range grpcClients {
			t.Run(g.name, func(t *testing.T) {
				check(t, func(int) error { _, err := grpcServerID(ctx, g.cc, hdrFlaky, "yes"); return err })
			})
		}
	})

	t.Run("istiod default retries", func(t *testing.T) {
		// A route without retries gets istiod's default policy: retry_on
		// "connect-failure,refused-stream,unavailable,cancelled,
		// retriable-status-codes" with two retries and no status codes
		// listed. A gRPC UNAVAILABLE is retried twice; a plain HTTP 503
		// matches none of the conditions and is not retried.
		const n = 5
		check := func(t *testing.T, perCall int64, call func() error) {
			v1.failures.Store(0)
			v2.failures.Store(0)
			for i := range n {
				if err := call(); err == nil {
					t.Fatalf("call %d succeeded against a backend that fails every attempt", i)
				}
			}
			if got, want := v1.failures.Load()+v2.failures.Load(), perCall*n; got != want {
				t.Errorf("the backends saw %d attempts for %d calls, want %d (%d each)", got, n, want, perCall)
			}
		}
		t.Run(rowHTTP, func(t *testing.T) {
			check(t, 1, func() error { _, err := httpCall("/", hdrFail, "yes"); return err })
		})
		for _, g := range grpcClients {
			t.Run(g.name, func(t *testing.T) {
				check(t, 3, func() error {
					_, err := grpcServerID(ctx, g.cc, hdrFail, "yes")
					if err != nil && status.Code(err) != codes.Unavailable {
						t.Errorf("failed with %v, want UNAVAILABLE", err)
					}
					return err
				})
			})
		}
	})

	t.Run("consistent hash by header", func(t *testing.T) {
		// sticky.mesh.local is v1 and v2 in one cluster, balanced by a ring
		// hash on x-user: every call of one user lands on one backend, and
		// the users spread over both.
		const users, calls = 20, 5
		t.Run(rowHTTP, func(t *testing.T) {
			checkSticky(t, users, calls, func(user string) (string, error) {
				code, body, err := httpGet(ctx, hc, "http://sticky.mesh.local:8080/", "x-user", user)
				if err == nil && code != http.StatusOK {
					err = statusErr(code, body)
				}
				return body, err
			})
		})
		for _, g := range client.grpcRows(t, cm, "sticky.mesh.local:7070") {
			t.Run(g.name, func(t *testing.T) {
				checkSticky(t, users, calls, func(user string) (string, error) {
					return grpcServerID(ctx, g.cc, "x-user", user)
				})
			})
		}
	})

	t.Run("mTLS and authorization", func(t *testing.T) {
		testIstioMTLS(t, ctx, d, secureHTTP, secureGRPC, impostorHTTP, impostorGRPC)
	})
}

// checkSticky makes calls calls for each of users users through call and
// checks that each user's calls all reach one backend, and that the users
// reach more than one.
func checkSticky(t *testing.T, users, calls int, call func(user string) (string, error)) {
	t.Helper()
	seen := map[string]int{}
	for u := range users {
		user := fmt.Sprintf("user-%d", u)
		first := ""
		for i := range calls {
			got, err := call(user)
			if err != nil {
				t.Fatalf("%s call %d: %v", user, i, err)
			}
			if i == 0 {
				first = got
				seen[got]++
			} else if got != first {
				t.Fatalf("%s call %d reached %s, its first reached %s", user, i, got, first)
			}
		}
	}
	t.Logf("users by backend: %v", seen)
	if len(seen) < 2 {
		t.Errorf("all %d users reached %v, want them spread over v1 and v2", users, seen)
	}
}

// testIstioMTLS serves the secure workload with Weft (HTTP and gRPC) under
// an identity from istiod's CA, and calls it as an allowed caller, a
// denied caller, a caller without a certificate, and through a service
// whose endpoint presents the wrong identity.
func testIstioMTLS(t *testing.T, ctx context.Context, d *istiod, secureHTTP, secureGRPC, impostorHTTP, impostorGRPC net.Listener) {
	policy := filepath.Join(t.TempDir(), "authz.yaml")
	if err := os.WriteFile(policy, []byte(denyPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	serve := func(w *workload, hl, gl net.Listener, opts ...mesh.Option) {
		m := w.mesh(t, opts...)
		go m.Serve(ctx, hl, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			id, _ := security.PeerID(r.Context())
			fmt.Fprintf(rw, "%s sees %s", w.name, id)
		}))
		gs, err := m.NewGRPCServer()
		if err != nil {
			t.Fatal(err)
		}
		testpb.RegisterTestServiceServer(gs, grpcEcho{b: &behaviour{name: w.name}})
		go gs.Serve(gl)
		t.Cleanup(gs.Stop)
	}
	serve(d.newWorkload(t, "secure", "127.0.0.4", "secure"), secureHTTP, secureGRPC, mesh.WithAuthorizationPolicyFile(policy))
	serve(d.newWorkload(t, "impostor", "127.0.0.5", "impostor"), impostorHTTP, impostorGRPC)

	allowed := d.newWorkload(t, "allowed", "127.0.0.11", "allowed")
	denied := d.newWorkload(t, "denied", "127.0.0.12", "denied")
	const httpURL, grpcTarget = "http://secure.mesh.local:8080/", "secure.mesh.local:7070"

	am, dm := allowed.mesh(t), denied.mesh(t)
	clients := map[string][]grpcRow{
		"allowed": allowed.grpcRows(t, am, grpcTarget),
		"denied":  denied.grpcRows(t, dm, grpcTarget),
	}
	// The allowed caller's channels to impostor, dialled here rather than
	// in their subtest so that they live until the stream count at the end.
	toImpostor := allowed.grpcRows(t, am, "impostor.mesh.local:7070")

	t.Run("allowed caller", func(t *testing.T) {
		t.Run(rowHTTP, func(t *testing.T) {
			var body string
			err := eventually(20*time.Second, func() error {
				code, b, err := httpGet(ctx, am.HTTPClient(), httpURL)
				if err == nil && code != http.StatusOK {
					err = statusErr(code, b)
				}
				body = b
				return err
			})
			if err != nil || body != "secure sees spiffe://cluster.local/ns/default/sa/allowed" {
				t.Fatalf("%q %v", body, err)
			}
		})
		for _, g := range clients["allowed"] {
			t.Run(g.name, func(t *testing.T) {
				var id string
				// The xDS-managed server serves once istiod's inbound listener arrives.
				err := eventually(20*time.Second, func() (err error) {
					id, err = grpcServerID(ctx, g.cc)
					return err
				})
				if err != nil || id != "secure" {
					t.Fatalf("%q %v", id, err)
				}
			})
		}
	})

	t.Run("denied caller", func(t *testing.T) {
		t.Run(rowHTTP, func(t *testing.T) {
			code, body, err := httpGet(ctx, dm.HTTPClient(), httpURL)
			if err != nil || code != http.StatusForbidden {
				t.Errorf("as sa/denied: %d %q %v, want 403", code, body, err)
			}
		})
		for _, g := range clients["denied"] {
			t.Run(g.name, func(t *testing.T) {
				_, err := grpcServerID(ctx, g.cc)
				if status.Code(err) != codes.PermissionDenied {
					t.Errorf("as sa/denied: %v, want PermissionDenied from istiod's RBAC", err)
				}
			})
		}
	})

	t.Run("no client certificate", func(t *testing.T) {
		cc, err := grpc.NewClient(secureGRPC.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if _, err := grpcServerID(cctx, cc); err == nil {
			t.Error("a plaintext call reached the STRICT mTLS server")
		}
	})

	t.Run("wrong server identity", func(t *testing.T) {
		// istiod allows spiffe://cluster.local/ns/default/sa/secure for
		// impostor.mesh.local (its WorkloadEntry's service account); the
		// server presents sa/impostor.
		t.Run(rowHTTP, func(t *testing.T) {
			code, body, err := httpGet(ctx, am.HTTPClient(), "http://impostor.mesh.local:8080/")
			if err == nil {
				t.Errorf("reached an endpoint with the wrong identity: %d %q", code, body)
			} else {
				t.Logf("%v", err)
			}
		})
		for _, g := range toImpostor {
			t.Run(g.name, func(t *testing.T) {
				cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				defer cancel()
				if id, err := grpcServerID(cctx, g.cc); err == nil {
					t.Errorf("reached an endpoint with the wrong identity: %q", id)
				} else {
					t.Logf("%v", err)
				}
			})
		}
	})

	t.Run("one ADS stream", func(t *testing.T) {
		// The allowed caller's mesh serves its HTTP client and four gRPC
		// channels (two to secure, two to impostor) from one xDS client.
		// The two oracle channels (to secure and impostor) hold one each.
		got := d.streams("allowed")
		t.Logf("istiod's streams from allowed.default, by user agent: %v", got)
		if want := (map[string]int{"weft": 1, "gRPC Go": 2}); !maps.Equal(got, want) {
			t.Errorf("istiod holds streams %v from the allowed caller, want %v", got, want)
		}
		// Servers are not rows of this table: logged, not checked.
		t.Logf("istiod's streams from secure.default (a Weft HTTP and gRPC server), by user agent: %v", d.streams("secure"))
	})
}
