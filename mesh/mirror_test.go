package mesh_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/telemetry"
)

// mirrorResources routes svc:8080 to the cluster "main" and mirrors to
// "shadow": every request, or a quarter of those with x-case: quarter.
func mirrorResources(main, shadow string) []types.Resource {
	mirror := func(percent uint32) func(*routev3.RouteAction) {
		return func(a *routev3.RouteAction) {
			p := &routev3.RouteAction_RequestMirrorPolicy{Cluster: "shadow"}
			if percent < 100 {
				p.RuntimeFraction = &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{
					Numerator: percent, Denominator: typev3.FractionalPercent_HUNDRED}}
			}
			a.RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{p}
		}
	}
	return []types.Resource{parityListener(),
		parityRoutes(parityRoute("main", []string{"x-case", "quarter"}, mirror(25)), parityRoute("main", nil, mirror(100))),
		parityCluster("main", nil), xdstest.Endpoints("main", main),
		parityCluster("shadow", nil), xdstest.Endpoints("shadow", shadow)}
}

// waitUntil polls cond for up to 20 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRequestMirroring holds request_mirror_policies to Envoy's shadowing
// (route.v3.RouteAction.RequestMirrorPolicy): "The current implementation
// is 'fire and forget,' meaning Envoy will not wait for the shadow cluster
// to respond before returning the response from the primary cluster" and
// "During shadowing, the host/authority header is altered such that
// -shadow is appended ... For example, cluster1 becomes cluster1-shadow";
// Envoy's shadow writer puts the suffix before a port (svc:8080 becomes
// svc-shadow:8080). runtime_fraction samples the requests mirrored.
//
// Weft adds bounds Envoy leaves to its buffers: a body is mirrored only
// when it can be replayed (GetBody, or a known length of at most 64 KiB),
// and at most 64 copies are in flight to a mirror cluster; the rest are
// counted in weft.client.mirrors, not sent.
func TestRequestMirroring(t *testing.T) {
	main, shadow := startRecBackend(t, nil), startRecBackend(t, nil)
	cp := xdstest.NewServer(t)
	cp.SetSnapshot(t, xdsNode, "1", mirrorResources(main.addr, shadow.addr)...)
	metrics, withMetrics := newMetricReader(t)
	m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)), withMetrics)
	c := m.HTTPClient()
	mirrorCounts := func() map[string]int64 {
		return metrics.values(t, telemetry.MetricMirrors, string(telemetry.AttrMirrorResult))
	}
	do := func(t *testing.T, req *http.Request) {
		t.Helper()
		ctx, cancel := context.WithTimeout(req.Context(), 10*time.Second)
		defer cancel()
		resp, err := c.Do(req.WithContext(ctx))
		if err != nil {
			t.Fatalf("%s %s: %v", req.Method, req.URL, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "main" {
			t.Fatalf("%s %s: %s %q; want 200 from the main cluster", req.Method, req.URL, resp.Status, b)
		}
	}

	t.Run("bodies", func(t *testing.T) {
		small := strings.Repeat("s", 1000)
		large := strings.Repeat("L", 100<<10)
		withLength := func(body string, length int64) *http.Request {
			req, _ := http.NewRequest("POST", "http://"+parityHost+"/body", io.NopCloser(strings.NewReader(body)))
			req.ContentLength = length // no GetBody: the mesh buffers it or skips the copy
			return req
		}
		get, _ := http.NewRequest("GET", "http://"+parityHost+"/get?q=1", nil)
		replayable, _ := http.NewRequest("PUT", "http://"+parityHost+"/replayable", strings.NewReader(large))
		tests := []struct {
			name     string
			req      *http.Request
			body     string
			mirrored bool
		}{
			{"no body", get, "", true},
			{"GetBody, above 64 KiB", replayable, large, true},
			{"known length within 64 KiB", withLength(small, int64(len(small))), small, true},
			{"known length above 64 KiB", withLength(large, int64(len(large))), large, false},
			{"unknown length", withLength(small, -1), small, false},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				main.reset()
				shadow.reset()
				before := mirrorCounts()
				do(t, tt.req)
				got := main.seen()
				if len(got) != 1 || got[0].body != tt.body || got[0].host != parityHost {
					t.Fatalf("main cluster saw %d requests (host %q, %d body bytes); want 1 with host %q and the %d bytes sent",
						len(got), first(got).host, len(first(got).body), parityHost, len(tt.body))
				}
				if !tt.mirrored {
					waitUntil(t, "the skipped copy to be counted", func() bool { return mirrorCounts()["skipped"] == before["skipped"]+1 })
					if n := len(shadow.seen()); n != 0 {
						t.Errorf("shadow cluster saw %d copies; want none", n)
					}
					return
				}
				waitUntil(t, "the copy", func() bool { return len(shadow.seen()) == 1 })
				s := shadow.seen()[0]
				if s.host != "svc-shadow:8080" || s.path != got[0].path || s.body != tt.body {
					t.Errorf("copy: host %q, path %q, %d body bytes; want svc-shadow:8080, %q, %d bytes", s.host, s.path, len(s.body), got[0].path, len(tt.body))
				}
				waitUntil(t, "the copy to be counted", func() bool { return mirrorCounts()["sent"] == before["sent"]+1 })
			})
		}
	})

	t.Run("mirrorPercentage", func(t *testing.T) {
		shadow.reset()
		const n = 400
		before := mirrorCounts()["sent"]
		for range n {
			req, _ := http.NewRequest("GET", "http://"+parityHost+"/quarter", nil)
			req.Header.Set("x-case", "quarter")
			do(t, req)
		}
		// 25% of 400: 100 expected, a standard deviation of about 8.7.
		// The copies are on their way after the last answer; wait until
		// the count has settled.
		last, stable := -1, 0
		waitUntil(t, "the copies to settle", func() bool {
			n := len(shadow.seen())
			if n == last && int(mirrorCounts()["sent"]-before) == n {
				stable++
			} else {
				stable = 0
			}
			last = n
			return stable >= 20
		})
		if got := len(shadow.seen()); got < 50 || got > 150 {
			t.Errorf("%d of %d requests mirrored at 25%%; want about 100", got, n)
		}
	})

	t.Run("slow mirror, bounded budget", func(t *testing.T) {
		shadow.reset()
		shadow.holdAll()
		defer shadow.release()
		before := mirrorCounts()
		// Every main request completes while its copy is held: nothing
		// on the main path waits on the mirror.
		const n = 120
		for i := range n {
			req, _ := http.NewRequest("GET", fmt.Sprintf("http://%s/slow/%d", parityHost, i), nil)
			do(t, req)
		}
		waitUntil(t, "64 copies held at the mirror", func() bool { return shadow.held() == 64 })
		if got := mirrorCounts()["dropped"] - before["dropped"]; got != n-64 {
			t.Errorf("%d copies dropped; want %d (%d requests, 64 in flight)", got, n-64, n)
		}
		shadow.release()
		waitUntil(t, "the held copies to be counted as sent", func() bool { return mirrorCounts()["sent"]-before["sent"] == 64 })
		if got := len(shadow.seen()); got != 64 {
			t.Errorf("mirror saw %d copies; want 64", got)
		}
	})

	t.Run("gRPC", func(t *testing.T) {
		// grpc-go's xDS client does not read request_mirror_policies: its
		// calls are not mirrored, the contrast. Weft's gRPC path mirrors
		// unary calls as its HTTP path mirrors requests.
		for _, tc := range []struct {
			name   string
			opts   []mesh.Option
			copies int
		}{
			{weftGRPC, nil, 10},
			{grpcGo, []mesh.Option{mesh.WithGRPCGoXDS(grpcGoOracle{})}, 0},
		} {
			t.Run(tc.name, func(t *testing.T) {
				shadow.reset()
				main.reset()
				hc := dialHealth(t, newMesh(t, append(tc.opts, mesh.WithBootstrap(cp.Bootstrap(xdsNode)))...), "xds:///"+parityHost)
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				for i := range 10 {
					// The copy must not write into the call's header,
					// trailer or peer, which the caller owns once the
					// call returns (the race detector watches).
					var hdr, trl metadata.MD
					var p peer.Peer
					if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: fmt.Sprint(i)},
						grpc.Header(&hdr), grpc.Trailer(&trl), grpc.Peer(&p)); err != nil {
						t.Fatalf("call %d: %v", i, err)
					}
					hdr, trl, p = nil, nil, peer.Peer{} // the caller reuses them
					_, _, _ = hdr, trl, p
				}
				if tc.copies == 0 {
					time.Sleep(200 * time.Millisecond) // copies would have arrived by now
				}
				waitUntil(t, "the copies", func() bool { return len(shadow.seen()) >= tc.copies })
				got := shadow.seen()
				if len(got) != tc.copies {
					t.Fatalf("mirror saw %d calls; want %d", len(got), tc.copies)
				}
				for _, a := range got {
					if !a.grpc || a.host != "svc-shadow:8080" || a.path != "/grpc.health.v1.Health/Check" {
						t.Errorf("copy: gRPC %v, :authority %q, method %q; want a gRPC call to svc-shadow:8080 on /grpc.health.v1.Health/Check", a.grpc, a.host, a.path)
					}
				}
			})
		}
	})
}

// TestMirrorsEndAtClose: copies held by a slow mirror end when the mesh
// closes, and Close waits for their goroutines (goleak checks that none is
// left).
func TestMirrorsEndAtClose(t *testing.T) {
	main, shadow := startRecBackend(t, nil), startRecBackend(t, nil)
	cp := xdstest.NewServer(t)
	cp.SetSnapshot(t, xdsNode, "1", mirrorResources(main.addr, shadow.addr)...)
	m, err := mesh.New(context.Background(), mesh.WithBootstrap(cp.Bootstrap(xdsNode)))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	shadow.holdAll()
	defer shadow.release()
	for i := range 5 {
		resp, err := m.HTTPClient().Post("http://"+parityHost+"/close", "text/plain", bytes.NewReader([]byte(fmt.Sprint(i))))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	waitUntil(t, "5 copies held", func() bool { return shadow.held() == 5 })
	closed := make(chan error, 1)
	go func() { closed <- m.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Close did not return while copies were held by the mirror")
	}
	waitUntil(t, "the held copies to be cancelled", func() bool { return shadow.held() == 0 })
}

func first(as []arrival) arrival {
	if len(as) == 0 {
		return arrival{}
	}
	return as[0]
}
