package mesh_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/resilience"
)

// TestCircuitBreakerOverflowAnswers holds a cluster's max_requests
// overflow to what a caller of Envoy sees, and a gRPC call's to grpc-go.
//
// Envoy answers a request its circuit breaker refuses itself: "503
// response code with x-envoy-overloaded header set" (Envoy's circuit
// breaking docs), and the router's local reply body for an upstream reset
// whose reason is overflow, "upstream connect error or disconnect/reset
// before headers. reset reason: overflow". The route's
// response_headers_to_add apply to that reply as to any local reply.
//
// grpc-go's cluster_impl picker fails a call over max_requests, unary or
// stream, with UNAVAILABLE ("max requests %d exceeded on service %s"); the oracle,
// grpc-go's own xDS client, runs beside Weft's gRPC path on the same
// resources.
func TestCircuitBreakerOverflowAnswers(t *testing.T) {
	e := &parityEnv{cp: xdstest.NewServer(t)}
	b := startParityBackend(t, "b0")
	e.b = []*parityBackend{b}
	b.delay.Store(int64(time.Minute)) // held until the caller gives up
	cluster := parityCluster("svc", func(c *clusterv3.Cluster) {
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			MaxRequests: wrapperspb.UInt32(1)}}}
	})
	rt := parityRoute("svc", nil, nil)
	rt.ResponseHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-route", Value: "svc"}}}
	e.cp.SetSnapshot(t, xdsNode, "1", parityListener(), parityRoutes(rt), cluster, xdstest.Endpoints("svc", b.addr))
	bs := e.cp.Bootstrap(xdsNode)
	e.clients = []*parityClient{
		{name: weftGRPC, hc: dialHealth(t, newMesh(t, mesh.WithBootstrap(bs)), "xds:///"+parityHost)},
		{name: grpcGo, hc: dialHealth(t, newMesh(t, mesh.WithBootstrap(bs), mesh.WithGRPCGoXDS(grpcGoOracle{})), "xds:///"+parityHost)},
		{name: weftHTTP, http: newMesh(t, mesh.WithBootstrap(bs)).HTTPClient()},
	}

	for _, c := range e.clients {
		t.Run(c.name, func(t *testing.T) {
			// Warm the channel's connection first: grpc-go counts a
			// call against max_requests only once it is picked.
			if c.hc != nil {
				b.delay.Store(0)
				if o := c.call(callLimit); o.err != nil {
					t.Fatalf("warm-up call: %v", o.err)
				}
				b.delay.Store(int64(time.Minute))
			}
			ctx, cancel := context.WithCancel(context.Background())
			held := make(chan outcome, 1)
			before := c.arrivals(b)
			go func() { held <- callCtx(ctx, c) }()
			defer func() { cancel(); <-held }()
			deadline := time.Now().Add(callLimit)
			for c.arrivals(b) == before && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if c.arrivals(b) == before {
				t.Fatal("the first call never reached the backend")
			}

			if c.hc != nil {
				ctx, cancel := context.WithTimeout(context.Background(), callLimit)
				defer cancel()
				_, err := c.hc.Check(ctx, &healthpb.HealthCheckRequest{})
				if got := status.Code(err); got != codes.Unavailable {
					t.Fatalf("a second call over max_requests 1: %v (%v); want UNAVAILABLE", got, err)
				}
				t.Logf("%s: %v", c.name, err)
				// A stream counts as a call: grpc-go's picker refuses it
				// too (the backend would answer UNIMPLEMENTED).
				s, err := c.hc.Watch(ctx, &healthpb.HealthCheckRequest{})
				if err == nil {
					_, err = s.Recv()
				}
				if got := status.Code(err); got != codes.Unavailable {
					t.Errorf("a stream over max_requests 1: %v (%v); want UNAVAILABLE", got, err)
				}
				return
			}

			for _, method := range []string{http.MethodGet, http.MethodHead} {
				req, _ := http.NewRequest(method, "http://"+parityHost+"/items", nil)
				resp, err := c.http.Do(req)
				if err != nil {
					t.Fatalf("%s over max_requests 1: %v; want Envoy's 503", method, err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				wantBody := "upstream connect error or disconnect/reset before headers. reset reason: overflow"
				if method == http.MethodHead {
					wantBody = ""
				}
				for _, check := range []struct{ what, got, want string }{
					{"status", resp.Status, "503 Service Unavailable"},
					{"x-envoy-overloaded", resp.Header.Get("x-envoy-overloaded"), "true"},
					{"x-route", resp.Header.Get("x-route"), "svc"},
					{"content-type", resp.Header.Get("Content-Type"), "text/plain"},
					{"body", string(body), wantBody},
				} {
					if check.got != check.want {
						t.Errorf("%s: %s = %q; want %q", method, check.what, check.got, check.want)
					}
				}
				lerr := mesh.LocalReplyError(resp)
				var oe *resilience.OverflowError
				var se *mesh.ServiceError
				if !errors.Is(lerr, resilience.ErrOverflow) || !errors.As(lerr, &oe) || oe.Threshold != resilience.ThresholdMaxRequests ||
					!errors.As(lerr, &se) || se.Service != "svc" {
					t.Errorf("%s: LocalReplyError = %v; want a *mesh.ServiceError for svc wrapping max_requests' *resilience.OverflowError", method, lerr)
				}
				if resp.Request == nil || resp.Request.URL != req.URL {
					t.Errorf("%s: resp.Request is not a copy of the caller's request", method)
				}
			}
		})
	}

	// An answer from the upstream is no local reply, even a 503.
	b.delay.Store(0)
	b.fail.Store(true)
	resp, err := e.client(weftHTTP).http.Get("http://" + parityHost + "/items")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || mesh.LocalReplyError(resp) != nil || resp.Header.Get("x-envoy-overloaded") != "" {
		t.Errorf("the upstream's own 503: status %d, LocalReplyError %v, x-envoy-overloaded %q; want 503, nil, none",
			resp.StatusCode, mesh.LocalReplyError(resp), resp.Header.Get("x-envoy-overloaded"))
	}
}

// callCtx makes one call of c's protocol under ctx.
func callCtx(ctx context.Context, c *parityClient) outcome {
	var o outcome
	if c.hc != nil {
		_, o.err = c.hc.Check(ctx, &healthpb.HealthCheckRequest{})
		o.code = status.Code(o.err)
		return o
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+parityHost+"/items", nil)
	resp, err := c.http.Do(req)
	if err != nil {
		o.err = err
		return o
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		o.err = errors.New(strings.TrimSpace(resp.Status))
	}
	return o
}
