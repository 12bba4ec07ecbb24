package interop

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// istioLBConfig is what TestIstiodLoadBalancing feeds istiod: three
// workloads (a, b, c) in three localities, and one service over them for
// each DestinationRule load-balancing setting. Placeholders in braces are
// the backends' ports.
var istioLBConfig = `
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: lb-a, namespace: default, labels: {app: lb}}
spec:
  address: 127.0.0.21
  labels: {app: lb}
  locality: r1/z1
  ports: {http: {a.http}, grpc: {a.grpc}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: lb-b, namespace: default, labels: {app: lb}}
spec:
  address: 127.0.0.22
  labels: {app: lb}
  locality: r1/z2
  ports: {http: {b.http}, grpc: {b.grpc}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: lb-c, namespace: default, labels: {app: lb}}
spec:
  address: 127.0.0.23
  labels: {app: lb}
  locality: r2/z3
  ports: {http: {c.http}, grpc: {c.grpc}}
` + lbService("by-header", "{consistentHash: {httpHeaderName: x-user}}", "") +
	lbService("by-cookie", "{consistentHash: {httpCookie: {name: session, ttl: 3600s}}}", "") +
	lbService("by-source", "{consistentHash: {useSourceIp: true}}", "") +
	lbService("maglev", "{consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 65537}}}", "") +
	lbService("locality", "{localityLbSetting: {enabled: true}}", "outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}")

// lbService is a ServiceEntry named name.mesh.local over the lb workloads
// and its DestinationRule with loadBalancer lb and, when set, more of the
// traffic policy.
func lbService(name, lb, more string) string {
	policy := "loadBalancer: " + lb
	if more != "" {
		policy += "\n    " + more
	}
	return `---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ` + name + `, namespace: default}
spec:
  hosts: [` + name + `.mesh.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 8080, name: http, protocol: HTTP}
  - {number: 7070, name: grpc, protocol: GRPC}
  workloadSelector: {labels: {app: lb}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ` + name + `, namespace: default}
spec:
  host: ` + name + `.mesh.local
  trafficPolicy:
    ` + policy + `
`
}

// TestIstiodLoadBalancing runs the DestinationRule load-balancing settings
// through istiod's proxyless generator to Weft's HTTP client, Weft's gRPC
// channels and grpc-go's xDS client:
//   - consistentHash.httpHeaderName: a ring hash on the header; every
//     client keeps each user on one backend;
//   - consistentHash.httpCookie: a ring hash on the cookie; Weft's HTTP
//     client keeps each user on one backend (gRPC calls carry no cookies,
//     and grpc-go ignores cookie hash policies: logged);
//   - consistentHash.useSourceIp: a hash on the client's own address
//     (INSTANCE_IPS): every Weft call, HTTP or gRPC, goes to one backend,
//     the same; grpc-go ignores the policy (logged);
//   - consistentHash.maglev: lb_policy MAGLEV; Weft keeps each user on one
//     backend on both protocols; grpc-go NACKs the cluster (logged);
//   - outlierDetection with localityLbSetting: istiod's proxyless
//     generator sends no outlier_detection (gRPC's CDS is TLS, balancer
//     and max_requests), but a DestinationRule with outlierDetection turns
//     on locality failover: EDS puts the client's own locality (r1/z1) in
//     priority 0, r1/z2 in 1 and r2/z3 in 2. Every client sends every
//     call to a, the backend in r1/z1; when a stops, the gRPC clients
//     move to b, in r1/z2.
func TestIstiodLoadBalancing(t *testing.T) {
	a, stopA := startStoppableEcho(t, "a", "127.0.0.21")
	b := startEchoBackend(t, "b", "127.0.0.22")
	c := startEchoBackend(t, "c", "127.0.0.23")
	d := startIstiod(t, fill(istioLBConfig, map[string]int{
		"a.http": a.httpPort, "a.grpc": a.grpcPort,
		"b.http": b.httpPort, "b.grpc": b.grpcPort,
		"c.http": c.httpPort, "c.grpc": c.grpcPort,
	}))
	client := d.newWorkload(t, "lbclient", "127.0.0.30", "")
	client.bootstrap = withNodeLocality(t, client.bootstrap, "r1", "z1")
	cm := client.mesh(t)
	hc := cm.HTTPClient()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// lbRow is one client of a case: call sends one request to service
	// with the header pairs hdr and returns the backend's name.
	type lbRow struct {
		name string
		call func(hdr ...string) (string, error)
	}
	rows := func(service string) []lbRow {
		out := []lbRow{{rowHTTP, func(hdr ...string) (string, error) {
			code, body, err := httpGet(ctx, hc, "http://"+service+".mesh.local:8080/", hdr...)
			if err == nil && code != http.StatusOK {
				err = statusErr(code, body)
			}
			return body, err
		}}}
		for _, g := range client.grpcRows(t, cm, service+".mesh.local:7070") {
			out = append(out, lbRow{g.name, func(hdr ...string) (string, error) {
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				return grpcServerID(cctx, g.cc, hdr...)
			}})
		}
		return out
	}
	// The first requests wait for istiod's first push.
	if err := eventually(20*time.Second, func() error {
		_, err := rows("by-header")[0].call("x-user", "warm")
		return err
	}); err != nil {
		t.Fatalf("Weft HTTP never reached by-header through istiod: %v", err)
	}

	const users, calls = 20, 4
	t.Run("consistentHash httpHeaderName", func(t *testing.T) {
		for _, r := range rows("by-header") {
			t.Run(r.name, func(t *testing.T) {
				checkSticky(t, users, calls, func(user string) (string, error) { return r.call("x-user", user) })
			})
		}
	})

	t.Run("consistentHash httpCookie", func(t *testing.T) {
		for _, r := range rows("by-cookie") {
			t.Run(r.name, func(t *testing.T) {
				if r.name != rowHTTP {
					// Not asserted: a gRPC call has no cookie jar, and
					// grpc-go and Weft ignore cookie hash policies on it.
					got, err := spread(10, func() (string, error) { return r.call("cookie", "session=user-1") })
					t.Logf("cookie hash on gRPC (ignored, as in grpc-go): %v %v", got, err)
					return
				}
				checkSticky(t, users, calls, func(user string) (string, error) { return r.call("cookie", "session="+user) })
			})
		}
	})

	t.Run("consistentHash useSourceIp", func(t *testing.T) {
		seen := map[string]string{}
		for _, r := range rows("by-source") {
			t.Run(r.name, func(t *testing.T) {
				got, err := spread(30, func() (string, error) { return r.call() })
				if r.name == rowGRPCGo {
					t.Logf("grpc-go ignores source_ip hash policies: %v %v", got, err)
					return
				}
				if err != nil || len(got) != 1 {
					t.Fatalf("calls reached %v (%v), want one backend: one process has one source IP", got, err)
				}
				for k := range got {
					seen[r.name] = k
				}
			})
		}
		t.Logf("backend by client: %v", seen)
		first := ""
		for name, b := range seen {
			if first == "" {
				first = b
			} else if b != first {
				t.Errorf("%s reached %s, another Weft client %s: the same source IP must hash alike", name, b, first)
			}
		}
	})

	t.Run("consistentHash maglev", func(t *testing.T) {
		for _, r := range rows("maglev") {
			t.Run(r.name, func(t *testing.T) {
				if r.name == rowGRPCGo {
					_, err := r.call("x-user", "user-1")
					t.Logf("grpc-go NACKs lb_policy MAGLEV: %v", err)
					return
				}
				checkSticky(t, users, calls, func(user string) (string, error) { return r.call("x-user", user) })
			})
		}
	})

	t.Run("outlierDetection and localityLbSetting", func(t *testing.T) {
		locality := rows("locality")
		for _, r := range locality {
			t.Run(r.name, func(t *testing.T) {
				got, err := spread(40, func() (string, error) { return r.call() })
				if err != nil || len(got) != 1 || got["a"] != 40 {
					t.Errorf("calls reached %v (%v), want all 40 on a, the client's locality r1/z1", got, err)
				}
			})
		}
		// a stops: gRPC channels see its connection fail and move to
		// priority 1, b in r1/z2, not c in another region, as grpc-go
		// does. The HTTP path has no outlier detection from istiod's
		// proxyless generator to eject a, so, like Envoy without it, it
		// keeps picking a, and its retries on connect-failure (istiod's
		// default retry policy) stay in priority 0, as Envoy's do: with
		// a the only endpoint there, they go back to a and the calls
		// fail, never reaching b or c, which the load gives nothing.
		stopA()
		for _, r := range locality {
			t.Run(r.name+" after a stops", func(t *testing.T) {
				if r.name == rowHTTP {
					const n = 20
					reached, failed := map[string]int{}, 0
					for range n {
						got, err := r.call()
						if err != nil {
							failed++
							continue
						}
						reached[got]++
					}
					if len(reached) != 0 {
						t.Errorf("HTTP calls reached %v with a stopped, want every retry kept in priority 0 (r1/z1)", reached)
					}
					t.Logf("HTTP without outlier detection: %d of %d calls failed in priority 0", failed, n)
					return
				}
				if err := eventually(20*time.Second, func() error {
					if got, err := r.call(); err != nil || got != "b" {
						return fmt.Errorf("reached %q: %v", got, err)
					}
					return nil
				}); err != nil {
					t.Fatalf("calls never moved to b: %v", err)
				}
				if got, err := spread(20, func() (string, error) { return r.call() }); err != nil || got["b"] != 20 {
					t.Errorf("calls reached %v (%v), want all 20 on b, priority 1 (r1/z2)", got, err)
				}
			})
		}
	})
}

// startStoppableEcho is startEchoBackend with a stop function, which the
// test may call before it ends.
func startStoppableEcho(t *testing.T, name, ip string) (*echoBackend, func()) {
	t.Helper()
	b := &echoBackend{behaviour: &behaviour{name: name}, ip: ip}
	hl, gl := listenT(t, ip), listenT(t, ip)
	b.httpPort, b.grpcPort = port(hl), port(gl)
	hs := &http.Server{Handler: b.behaviour, ReadHeaderTimeout: 5 * time.Second}
	gs := grpc.NewServer()
	testpb.RegisterTestServiceServer(gs, grpcEcho{b: b.behaviour})
	go hs.Serve(hl)
	go gs.Serve(gl)
	var once sync.Once
	stop := func() { once.Do(func() { hs.Close(); gs.Stop() }) }
	t.Cleanup(stop)
	return b, stop
}

// spread makes n calls and counts them by backend; it stops at the first
// error.
func spread(n int, call func() (string, error)) (map[string]int, error) {
	got := map[string]int{}
	for range n {
		name, err := call()
		if err != nil {
			return got, err
		}
		got[name]++
	}
	return got, nil
}

// withNodeLocality sets the bootstrap node's locality, from which istiod
// orders localities into priorities for the workload.
func withNodeLocality(t *testing.T, bootstrap []byte, region, zone string) []byte {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(bootstrap, &v); err != nil {
		t.Fatal(err)
	}
	v["node"].(map[string]any)["locality"] = map[string]string{"region": region, "zone": zone}
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
