package interop

import (
	"context"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// istioFaultConfig is one plaintext service whose VirtualService injects
// faults: an abort (HTTP 503 to every request) on a header-matched route,
// and a fixed 200 ms delay on another; the last route has none. istiod
// installs Envoy's fault filter on every client listener and turns each
// route's fault into its typed_per_filter_config override.
const istioFaultConfig = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: faulty, namespace: default}
spec:
  hosts: [faulty.mesh.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 8080, name: http, protocol: HTTP}
  - {number: 7070, name: grpc, protocol: GRPC}
  workloadSelector: {labels: {app: faulty}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: faulty, namespace: default, labels: {app: faulty}}
spec:
  address: 127.0.0.20
  labels: {app: faulty}
  ports: {http: {faulty.http}, grpc: {faulty.grpc}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: faulty, namespace: default}
spec:
  hosts: [faulty.mesh.local]
  http:
  - name: abort
    match: [{headers: {x-fault: {exact: abort}}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
    route: [{destination: {host: faulty.mesh.local}}]
  - name: delay
    match: [{headers: {x-fault: {exact: delay}}}]
    fault: {delay: {fixedDelay: 200ms, percentage: {value: 100}}}
    route: [{destination: {host: faulty.mesh.local}}]
  - name: plain
    route: [{destination: {host: faulty.mesh.local}}]
`

// faultDelay is the VirtualService's fixedDelay.
const faultDelay = 200 * time.Millisecond

// TestIstiodFaults runs Weft's HTTP client, both Weft gRPC rows and
// grpc-go's own xDS client against istiod's translation of a
// VirtualService fault. HTTP gets Envoy's local reply (503, "fault filter
// abort"), with no request reaching the backend. istiod sends the
// httpStatus abort to gRPC clients too: grpc-go fails the call with the
// status gRPC maps 503 to, and Weft gRPC must fail it the same way.
func TestIstiodFaults(t *testing.T) {
	b := startEchoBackend(t, "faulty", "127.0.0.20")
	d := startIstiod(t, fill(istioFaultConfig, map[string]int{"faulty.http": b.httpPort, "faulty.grpc": b.grpcPort}))
	client := d.newWorkload(t, "fault-client", "127.0.0.21", "")
	cm := client.mesh(t)
	hc := cm.HTTPClient()
	const httpURL = "http://faulty.mesh.local:8080/"
	grpcClients := client.grpcRows(t, cm, "faulty.mesh.local:7070")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The first requests wait for istiod's first push.
	if err := eventually(20*time.Second, func() error {
		code, body, err := httpGet(ctx, hc, httpURL)
		if err == nil && code != http.StatusOK {
			err = statusErr(code, body)
		}
		return err
	}); err != nil {
		t.Fatalf("Weft HTTP never reached faulty through istiod: %v", err)
	}

	t.Run("abort", func(t *testing.T) {
		t.Run(rowHTTP, func(t *testing.T) {
			for i := range 10 {
				code, body, err := httpGet(ctx, hc, httpURL, "x-fault", "abort")
				if err != nil || code != http.StatusServiceUnavailable || body != "fault filter abort" {
					t.Fatalf("request %d: %d %q %v, want 503 %q", i, code, body, err, "fault filter abort")
				}
			}
		})
		// grpc-go, the oracle, first: the Weft rows must match it.
		var want codes.Code = 99
		for _, g := range []grpcRow{grpcClients[2], grpcClients[0], grpcClients[1]} {
			t.Run(g.name, func(t *testing.T) {
				for i := range 10 {
					id, err := grpcServerID(ctx, g.cc, "x-fault", "abort")
					got := status.Code(err)
					if g.name == rowGRPCGo && want == 99 {
						want = got
						t.Logf("grpc-go: %v", err)
					}
					if err == nil || got != want {
						t.Fatalf("call %d: %q %v, want %v (grpc-go's answer)", i, id, err, want)
					}
				}
			})
		}
		if want != codes.Unavailable {
			t.Errorf("grpc-go failed the aborted calls with %v; gRFC A33 maps 503 to UNAVAILABLE", want)
		}
	})

	t.Run("delay", func(t *testing.T) {
		type callRow struct {
			name string
			call func() (string, error)
		}
		rows := []callRow{{rowHTTP, func() (string, error) {
			code, body, err := httpGet(ctx, hc, httpURL, "x-fault", "delay")
			if err == nil && code != http.StatusOK {
				err = statusErr(code, body)
			}
			return body, err
		}}}
		for _, g := range grpcClients {
			rows = append(rows, callRow{g.name, func() (string, error) { return grpcServerID(ctx, g.cc, "x-fault", "delay") }})
		}
		for _, r := range rows {
			t.Run(r.name, func(t *testing.T) {
				for i := range 3 {
					start := time.Now()
					id, err := r.call()
					took := time.Since(start)
					if err != nil || id != "faulty" || took < faultDelay || took > 20*time.Second {
						t.Fatalf("call %d: %q %v after %v, want faulty after at least %v", i, id, err, took, faultDelay)
					}
					t.Logf("call %d: %v", i, took.Round(time.Millisecond))
				}
			})
		}
	})

	t.Run("no fault", func(t *testing.T) {
		// The route without a fault is untouched by the filter istiod
		// installs on the listener.
		t.Run(rowHTTP, func(t *testing.T) {
			if code, body, err := httpGet(ctx, hc, httpURL); err != nil || code != http.StatusOK || body != "faulty" {
				t.Fatalf("%d %q %v, want 200 faulty", code, body, err)
			}
		})
		for _, g := range grpcClients {
			t.Run(g.name, func(t *testing.T) {
				if id, err := grpcServerID(ctx, g.cc); err != nil || id != "faulty" {
					t.Fatalf("%q %v, want faulty", id, err)
				}
			})
		}
	})
}
