package mesh_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
)

// Parity of gRPC through Weft's own xDS client with grpc-go's xDS client
// (the oracle) and with Weft's HTTP path, on the same xDS resources from
// one in-process management server, against real backends on loopback.

// parityHost is the mesh service every row configures.
const parityHost = "svc:8080"

// parityBackend serves HTTP and gRPC (the health service's Check) on one
// loopback port and answers with its name (the x-backend header, or
// header metadata). Its behaviour can be switched while it serves: fail
// every call (UNAVAILABLE, or 503), delay every call, or stall every k-th
// call. It counts the arrivals of each protocol, attempts included.
//
// gRPC is served by a grpc.Server of its own on the connections that open
// with the HTTP/2 preface, not through ServeHTTP: grpc-go's handler
// transport sends headers before every status, which commits a call and
// keeps grpc-go's client from retrying it (gRFC A6), where a real server
// answers a failure trailers-only.
type parityBackend struct {
	name, addr string
	fail       atomic.Bool
	delay      atomic.Int64 // time.Duration, every call
	stall      atomic.Pointer[stallPlan]
	httpN      atomic.Int64
	rpcN       atomic.Int64
}

// stallPlan stalls the first attempt of every k-th call, numbered by the
// client in x-call, at whichever of the backends sharing the plan it
// reaches; the call's other attempts (hedges, retries) go through. Keyed
// by the call rather than by arrivals, stalls cannot line up with the
// round robin that alternates two backends in step, which would stall a
// call's hedge too.
type stallPlan struct {
	every int
	d     time.Duration
	seen  sync.Map // call numbers whose first attempt arrived
}

// behave applies the backend's behaviour to one arrival of call (its
// x-call number, "" when none): it waits as told, or until ctx ends, and
// reports whether the call is to fail.
func (b *parityBackend) behave(ctx context.Context, call string) (fail bool) {
	wait := time.Duration(b.delay.Load())
	if p := b.stall.Load(); p != nil && call != "" {
		if n, err := strconv.Atoi(call); err == nil && n%p.every == 0 {
			if _, again := p.seen.LoadOrStore(n, true); !again {
				wait += p.d
			}
		}
	}
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
	return b.fail.Load()
}

func (b *parityBackend) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	b.rpcN.Add(1)
	md, _ := metadata.FromIncomingContext(ctx)
	var call string
	if v := md.Get("x-call"); len(v) > 0 {
		call = v[0]
	}
	fail := b.behave(ctx, call)
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	if fail {
		return nil, status.Error(codes.Unavailable, b.name+" failing on purpose")
	}
	_ = grpc.SetHeader(ctx, metadata.Pairs("x-backend", b.name))
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func (b *parityBackend) List(context.Context, *healthpb.HealthListRequest) (*healthpb.HealthListResponse, error) {
	return &healthpb.HealthListResponse{}, nil
}

func (b *parityBackend) Watch(*healthpb.HealthCheckRequest, grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
	return status.Error(codes.Unimplemented, "no watch")
}

func (b *parityBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.httpN.Add(1)
	fail := b.behave(r.Context(), r.Header.Get("X-Call"))
	w.Header().Set("X-Backend", b.name)
	if r.Context().Err() != nil {
		// The caller's deadline, which Weft propagates, has passed.
		http.Error(w, "deadline passed", http.StatusGatewayTimeout)
		return
	}
	if fail {
		http.Error(w, b.name+" failing on purpose", http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, b.name)
}

func startParityBackend(t *testing.T, name string) *parityBackend {
	t.Helper()
	b := &parityBackend{name: name}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = ln.Addr().String()
	rpcLn, httpLn := splitByPreface(t, ln)
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, b)
	srv := newMesh(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- gs.Serve(rpcLn) }()
	go func() { done <- srv.Serve(ctx, httpLn, b) }()
	t.Cleanup(func() { cancel(); gs.Stop(); <-done; <-done })
	return b
}

// http2Preface opens every HTTP/2 connection; Weft's HTTP client speaks
// HTTP/1.1 to mesh backends, and gRPC HTTP/2 with prior knowledge.
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// splitByPreface hands ln's connections that open with the HTTP/2 preface
// to the first listener returned, and the others to the second.
func splitByPreface(t *testing.T, ln net.Listener) (h2, other *connQueue) {
	h2, other = newConnQueue(ln.Addr()), newConnQueue(ln.Addr())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, len(http2Preface))
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, err := io.ReadFull(c, buf)
				c.SetReadDeadline(time.Time{})
				pc := &prefixedConn{Conn: c, r: io.MultiReader(bytes.NewReader(buf[:n]), c)}
				switch {
				case err != nil && n == 0:
					c.Close()
				case string(buf[:n]) == http2Preface:
					h2.put(pc)
				default:
					other.put(pc)
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); h2.Close(); other.Close(); wg.Wait() })
	return h2, other
}

// prefixedConn is a connection whose first bytes were read ahead.
type prefixedConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// connQueue is a net.Listener fed with connections by splitByPreface.
type connQueue struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (q *connQueue) put(c net.Conn) {
	select {
	case q.ch <- c:
	case <-q.done:
		c.Close()
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }

// parityClient is one of the three clients of a row: Weft's gRPC channel
// (xds:///), grpc-go's xDS channel, or Weft's HTTP client.
type parityClient struct {
	name string
	hc   healthpb.HealthClient // nil for HTTP
	http *http.Client
}

const (
	weftGRPC = "weft gRPC"
	grpcGo   = "grpc-go"
	weftHTTP = "weft HTTP"
)

// outcome is what one call saw. code is the gRPC status code; for HTTP,
// 200 is OK, 503 UNAVAILABLE, and 504 or an error from a deadline
// DEADLINE_EXCEEDED.
type outcome struct {
	backend    string
	code       codes.Code
	err        error
	setCookies []string
	took       time.Duration
}

// call makes one call with the header pairs hdr, within limit.
func (c *parityClient) call(limit time.Duration, hdr ...string) outcome {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	start := time.Now()
	var o outcome
	if c.hc != nil {
		if len(hdr) > 0 {
			ctx = metadata.AppendToOutgoingContext(ctx, hdr...)
		}
		var md metadata.MD
		_, o.err = c.hc.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&md))
		o.took, o.code = time.Since(start), status.Code(o.err)
		if v := md.Get("x-backend"); len(v) > 0 && o.err == nil {
			o.backend = v[0]
		}
		o.setCookies = md.Get("set-cookie")
		return o
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+parityHost+"/items", nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := c.http.Do(req)
	if err != nil {
		o.took, o.err, o.code = time.Since(start), err, codes.Unavailable
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
			o.code = codes.DeadlineExceeded
		}
		return o
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	o.took = time.Since(start)
	o.setCookies = resp.Header.Values("Set-Cookie")
	switch resp.StatusCode {
	case http.StatusOK:
		o.code, o.backend = codes.OK, resp.Header.Get("X-Backend")
	case http.StatusServiceUnavailable:
		o.code, o.err = codes.Unavailable, fmt.Errorf("status %d", resp.StatusCode)
	case http.StatusGatewayTimeout:
		o.code, o.err = codes.DeadlineExceeded, fmt.Errorf("status %d", resp.StatusCode)
	default:
		o.code, o.err = codes.Unknown, fmt.Errorf("status %d", resp.StatusCode)
	}
	return o
}

// parityEnv is one row's world: its control plane, backends, a closed
// loopback port, and the three clients, each on a mesh of its own so that
// no client's balancer state (ejections, sessions) helps another's.
type parityEnv struct {
	cp      *xdstest.Server
	b       []*parityBackend
	dead    string
	clients []*parityClient // weft gRPC, grpc-go, weft HTTP
}

func (e *parityEnv) client(name string) *parityClient {
	for _, c := range e.clients {
		if c.name == name {
			return c
		}
	}
	panic("no client " + name)
}

func (e *parityEnv) backend(name string) *parityBackend {
	for _, b := range e.b {
		if b.name == name {
			return b
		}
	}
	return nil
}

// arrivals returns the arrivals of c's protocol at b.
func (c *parityClient) arrivals(b *parityBackend) int64 {
	if c.hc != nil {
		return b.rpcN.Load()
	}
	return b.httpN.Load()
}

// Builders of the rows' resources.

func parityListener() types.Resource { return xdstest.Listener(parityHost, "svc-routes") }

func parityRoutes(routes ...*routev3.Route) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: "svc-routes", VirtualHosts: []*routev3.VirtualHost{{
		Name: "svc", Domains: []string{parityHost, "svc"}, Routes: routes,
	}}}
}

// parityRoute sends every call (or, with a header name and value, those
// carrying it) to cluster, with action changed by set.
func parityRoute(cluster string, header []string, set func(*routev3.RouteAction)) *routev3.Route {
	m := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
	if len(header) == 2 {
		m.Headers = []*routev3.HeaderMatcher{{Name: header[0], HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
			StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: header[1]}}}}}
	}
	a := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}
	if set != nil {
		set(a)
	}
	return &routev3.Route{Match: m, Action: &routev3.Route_Route{Route: a}}
}

func parityCluster(name string, set func(*clusterv3.Cluster)) *clusterv3.Cluster {
	c := xdstest.Cluster(name, "")
	if set != nil {
		set(c)
	}
	return c
}

// locality is one EDS locality: zone (region "r"), priority, endpoints.
type locality struct {
	zone     string
	priority uint32
	addrs    []string
}

func parityEDS(cluster string, ls ...locality) *endpointv3.ClusterLoadAssignment {
	out := &endpointv3.ClusterLoadAssignment{ClusterName: cluster}
	for _, l := range ls {
		e := xdstest.Endpoints(cluster, l.addrs...).Endpoints[0]
		e.Locality.Zone, e.Priority = l.zone, l.priority
		out.Endpoints = append(out.Endpoints, e)
	}
	return out
}

func addrs(bs ...*parityBackend) []string {
	var out []string
	for _, b := range bs {
		out = append(out, b.addr)
	}
	return out
}

func retryPolicy(on string, n uint32, perTry time.Duration) *routev3.RetryPolicy {
	p := &routev3.RetryPolicy{RetryOn: on, NumRetries: wrapperspb.UInt32(n)}
	if perTry > 0 {
		p.PerTryTimeout = durationpb.New(perTry)
	}
	return p
}

// parityRow is one line of the table: the resources for the row's
// backends and closed port, and the checks, which return what each client
// measured.
type parityRow struct {
	name     string
	backends int
	// zone, when set, is the clients' locality in the bootstrap.
	zone      string
	resources func(e *parityEnv) []types.Resource
	run       func(t *testing.T, e *parityEnv) map[string]string
}

// TestGRPCParity holds gRPC through Weft's xDS client side by side with
// grpc-go's xDS client, the oracle, and with Weft's HTTP path, on the same
// resources: rows 1-5 compare all three; rows 6-10 are Weft features
// grpc-go lacks, held to the HTTP path, with grpc-go's result logged as
// the contrast. RBAC and PeerAuthentication belong to servers and are
// tested with them.
func TestGRPCParity(t *testing.T) {
	rows := []parityRow{
		{name: "ring hash by header", backends: 3, resources: func(e *parityEnv) []types.Resource {
			return []types.Resource{parityListener(),
				parityRoutes(parityRoute("svc", nil, func(a *routev3.RouteAction) {
					a.HashPolicy = []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
						Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: "x-user"}}}}
				})),
				parityCluster("svc", func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_RING_HASH }),
				xdstest.Endpoints("svc", addrs(e.b...)...)}
		}, run: runRingHash},
		{name: "priority failover", backends: 2, resources: func(e *parityEnv) []types.Resource {
			return []types.Resource{parityListener(), parityRoutes(parityRoute("svc", nil, nil)), parityCluster("svc", nil),
				parityEDS("svc", locality{zone: "p0", priority: 0, addrs: []string{e.dead}}, locality{zone: "p1", priority: 1, addrs: []string{e.b[1].addr}})}
		}, run: runPriority},
		{name: "outlier detection (failure percentage)", backends: 3, resources: func(e *parityEnv) []types.Resource {
			e.b[2].fail.Store(true)
			return []types.Resource{parityListener(), parityRoutes(parityRoute("svc", nil, nil)),
				parityCluster("svc", func(c *clusterv3.Cluster) {
					// Only the failure-percentage algorithm (gRFC A50): grpc-go
					// has no consecutive_5xx, whose Envoy default is on.
					c.OutlierDetection = &clusterv3.OutlierDetection{
						Interval:                       durationpb.New(500 * time.Millisecond),
						BaseEjectionTime:               durationpb.New(30 * time.Second),
						MaxEjectionPercent:             wrapperspb.UInt32(50),
						EnforcingConsecutive_5Xx:       wrapperspb.UInt32(0),
						EnforcingSuccessRate:           wrapperspb.UInt32(0),
						FailurePercentageThreshold:     wrapperspb.UInt32(50),
						EnforcingFailurePercentage:     wrapperspb.UInt32(100),
						FailurePercentageMinimumHosts:  wrapperspb.UInt32(3),
						FailurePercentageRequestVolume: wrapperspb.UInt32(3),
					}
				}),
				xdstest.Endpoints("svc", addrs(e.b...)...)}
		}, run: runOutlier},
		{name: "route timeout", backends: 1, resources: func(e *parityEnv) []types.Resource {
			e.b[0].delay.Store(int64(2 * time.Second))
			// istiod sets both; grpc-go reads only max_stream_duration.
			// Where they differ (x-variant: msd-below), both bound the
			// call, as in Envoy: the shorter wins. A route without a
			// max_stream_duration (x-variant: listener-msd) is bounded by
			// the listener's too, beside its timeout.
			limits := func(timeout, msd time.Duration) func(*routev3.RouteAction) {
				return func(a *routev3.RouteAction) {
					a.Timeout = durationpb.New(timeout)
					a.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(msd)}
				}
			}
			hcm := xdstest.HCM("svc-routes", nil)
			hcm.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{MaxStreamDuration: durationpb.New(300 * time.Millisecond)}
			return []types.Resource{xdstest.APIListener(parityHost, hcm), parityRoutes(
				parityRoute("svc", []string{"x-variant", "msd-below"}, limits(5*time.Second, 300*time.Millisecond)),
				parityRoute("svc", []string{"x-variant", "listener-msd"}, func(a *routev3.RouteAction) { a.Timeout = durationpb.New(5 * time.Second) }),
				parityRoute("svc", nil, limits(300*time.Millisecond, 300*time.Millisecond)),
			), parityCluster("svc", nil), xdstest.Endpoints("svc", addrs(e.b...)...)}
		}, run: runTimeout},
		{name: "retries on unavailable", backends: 2, resources: func(e *parityEnv) []types.Resource {
			e.b[1].fail.Store(true)
			return []types.Resource{parityListener(),
				parityRoutes(
					parityRoute("svc", []string{"x-variant", "no-retry"}, nil),
					parityRoute("svc", nil, func(a *routev3.RouteAction) { a.RetryPolicy = retryPolicy("unavailable,5xx", 3, 0) })),
				parityCluster("svc", nil), xdstest.Endpoints("svc", addrs(e.b...)...)}
		}, run: runRetries},
		{name: "per_try_timeout", backends: 2, resources: func(e *parityEnv) []types.Resource {
			e.b[1].delay.Store(int64(3 * time.Second))
			return []types.Resource{parityListener(), parityRoutes(parityRoute("svc", nil, func(a *routev3.RouteAction) {
				a.Timeout = durationpb.New(2 * time.Second)
				a.RetryPolicy = retryPolicy("unavailable,deadline-exceeded,5xx,reset", 2, 150*time.Millisecond)
			})), parityCluster("svc", nil), xdstest.Endpoints("svc", addrs(e.b...)...)}
		}, run: func(t *testing.T, e *parityEnv) map[string]string { return runPerTryTimeout(t, e, true) }},
		{name: "per_try_timeout under retry_on 5xx", backends: 2, resources: func(e *parityEnv) []types.Resource {
			// Envoy retries a per-try timeout under 5xx, gateway-error
			// and reset, for gRPC calls too; the HTTP path does.
			e.b[1].delay.Store(int64(3 * time.Second))
			return []types.Resource{parityListener(), parityRoutes(parityRoute("svc", nil, func(a *routev3.RouteAction) {
				a.Timeout = durationpb.New(2 * time.Second)
				a.RetryPolicy = retryPolicy("5xx", 2, 150*time.Millisecond)
			})), parityCluster("svc", nil), xdstest.Endpoints("svc", addrs(e.b...)...)}
		}, run: func(t *testing.T, e *parityEnv) map[string]string { return runPerTryTimeout(t, e, false) }},
		{name: "hedging from hedge_policy", backends: 2 * len(hedgeStreams), resources: func(e *parityEnv) []types.Resource {
			// Each stream has a route (chosen by x-stream) and a cluster of
			// two backends of its own, so that attempts are counted per
			// stream while the streams run side by side.
			res := []types.Resource{parityListener()}
			var routes []*routev3.Route
			for i, s := range hedgeStreams {
				bs := e.b[2*i : 2*i+2]
				plan := &stallPlan{every: 20, d: time.Second} // 5% of calls
				for _, b := range bs {
					b.stall.Store(plan)
				}
				routes = append(routes, parityRoute(s.name, []string{"x-stream", s.name}, func(a *routev3.RouteAction) {
					a.Timeout = durationpb.New(10 * time.Second)
					if s.hedged {
						a.RetryPolicy = retryPolicy("unavailable,5xx", 1, 100*time.Millisecond)
						a.HedgePolicy = &routev3.HedgePolicy{HedgeOnPerTryTimeout: true}
					}
				}))
				res = append(res, parityCluster(s.name, nil), xdstest.Endpoints(s.name, addrs(bs...)...))
			}
			return append(res, parityRoutes(routes...))
		}, run: runHedging},
		{name: "cookie session affinity", backends: 3, resources: func(e *parityEnv) []types.Resource {
			return []types.Resource{
				xdstest.APIListener(parityHost, xdstest.WithStatefulSession(xdstest.HCM("svc-routes", nil), xdstest.StatefulSession("sticky", "", time.Hour))),
				parityRoutes(parityRoute("svc", nil, nil)), parityCluster("svc", nil), xdstest.Endpoints("svc", addrs(e.b...)...)}
		}, run: runSession},
		{name: "zone-aware routing", backends: 2, zone: "a", resources: func(e *parityEnv) []types.Resource {
			return []types.Resource{parityListener(), parityRoutes(parityRoute("svc", nil, nil)),
				parityCluster("svc", func(c *clusterv3.Cluster) {
					c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{LocalityConfigSpecifier: &clusterv3.Cluster_CommonLbConfig_ZoneAwareLbConfig_{
						ZoneAwareLbConfig: &clusterv3.Cluster_CommonLbConfig_ZoneAwareLbConfig{MinClusterSize: wrapperspb.UInt64(1)}}}
				}),
				parityEDS("svc", locality{zone: "a", addrs: []string{e.b[0].addr}}, locality{zone: "b", addrs: []string{e.b[1].addr}})}
		}, run: runZoneAware},
	}

	var table [][]string
	for i, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			e := newParityEnv(t, row)
			start := time.Now()
			got := row.run(t, e)
			table = append(table, []string{fmt.Sprintf("%d. %s (%.1fs)", i+1, row.name, time.Since(start).Seconds()),
				got[weftGRPC], got[grpcGo], got[weftHTTP]})
		})
	}
	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "row\t"+weftGRPC+"\t"+grpcGo+"\t"+weftHTTP)
	for _, r := range table {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
	t.Logf("what each client measured (grpc-go in rows 6-10 is the contrast, not asserted):\n%s", sb.String())
}

func newParityEnv(t *testing.T, row parityRow) *parityEnv {
	t.Helper()
	e := &parityEnv{cp: xdstest.NewServer(t), dead: freeAddr(t)}
	for i := range row.backends {
		e.b = append(e.b, startParityBackend(t, fmt.Sprintf("b%d", i)))
	}
	e.cp.SetSnapshot(t, xdsNode, "1", row.resources(e)...)
	bs := e.cp.Bootstrap(xdsNode)
	if row.zone != "" {
		var v map[string]any
		if err := json.Unmarshal(bs, &v); err != nil {
			t.Fatal(err)
		}
		v["node"].(map[string]any)["locality"] = map[string]string{"region": "r", "zone": row.zone}
		bs, _ = json.Marshal(v)
	}
	e.clients = []*parityClient{
		{name: weftGRPC, hc: dialHealth(t, newMesh(t, mesh.WithBootstrap(bs)), "xds:///"+parityHost)},
		{name: grpcGo, hc: dialHealth(t, newMesh(t, mesh.WithBootstrap(bs), mesh.WithGRPCGoXDS(grpcGoOracle{})), "xds:///"+parityHost)},
		{name: weftHTTP, http: newMesh(t, mesh.WithBootstrap(bs)).HTTPClient()},
	}
	return e
}

// callLimit bounds every call the rows make whose deadline is not the
// point of the row.
const callLimit = 20 * time.Second

// runRingHash: 30 users, 4 calls each, on every client: each user's calls
// stick to one backend and the users spread over at least 2 of 3.
func runRingHash(t *testing.T, e *parityEnv) map[string]string {
	const users, per = 30, 4
	mapping := map[string][]string{} // client -> backend of each user
	got := map[string]string{}
	for _, c := range e.clients {
		spread := map[string]int{}
		for u := range users {
			seen := map[string]bool{}
			for range per {
				o := c.call(callLimit, "x-user", fmt.Sprintf("user-%d", u))
				if o.err != nil {
					t.Fatalf("%s: user %d: %v", c.name, u, o.err)
				}
				seen[o.backend] = true
			}
			if len(seen) != 1 {
				t.Errorf("%s: user-%d's calls reached %d backends, want 1", c.name, u, len(seen))
			}
			for b := range seen {
				mapping[c.name] = append(mapping[c.name], b)
				spread[b]++
			}
		}
		if len(spread) < 2 {
			t.Errorf("%s: %d users all on %v, want them spread over at least 2 backends", c.name, users, spread)
		}
		got[c.name] = fmt.Sprintf("sticky; users per backend %v", sortedCounts(spread))
	}
	same := func(a, b string) int {
		n := 0
		for i := range users {
			if mapping[a][i] == mapping[b][i] {
				n++
			}
		}
		return n
	}
	// The ring is Envoy's and grpc-go's (endpoint addr's i-th entry at
	// xxhash64("addr_i")), and the header's hash is xxhash64 of its value
	// on every path: a user lands on the same backend whichever client
	// calls.
	for _, c := range []string{weftGRPC, weftHTTP} {
		if n := same(c, grpcGo); n != users {
			t.Errorf("%s maps %d of %d users to the backend grpc-go maps them to, want all", c, n, users)
		}
	}
	t.Logf("users mapped to the same backend as grpc-go: weft gRPC %d of %d, weft HTTP %d of %d", same(weftGRPC, grpcGo), users, same(weftHTTP, grpcGo), users)
	return got
}

// sortedCounts prints counts by key, sorted.
func sortedCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s:%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

// runPriority: priority 0 holds only a closed port, priority 1 a live
// backend: every gRPC call succeeds there, as grpc-go's fail over, on
// the failed connection. Weft's HTTP path keeps priority 0: as in Envoy,
// an endpoint EDS calls healthy stays healthy, without active health
// checks or outlier detection, whatever its connections do, so its
// requests fail; that is shown, not asserted. Then EDS puts a live
// backend in priority 0, and the calls of every client go to it.
func runPriority(t *testing.T, e *parityEnv) map[string]string {
	const n = 20
	got := map[string]string{}
	for _, c := range e.clients {
		onP1 := 0
		for i := range n {
			o := c.call(callLimit)
			if o.err == nil && o.backend == "b1" {
				onP1++
			} else if c.name != weftHTTP {
				t.Errorf("%s: call %d with priority 0 dead: backend %q, err %v; want b1", c.name, i, o.backend, o.err)
			}
		}
		got[c.name] = fmt.Sprintf("p0 dead: %d/%d ok on p1", onP1, n)
	}
	e.cp.SetSnapshot(t, xdsNode, "2", parityListener(), parityRoutes(parityRoute("svc", nil, nil)), parityCluster("svc", nil),
		parityEDS("svc", locality{zone: "p0", priority: 0, addrs: []string{e.b[0].addr}}, locality{zone: "p1", priority: 1, addrs: []string{e.b[1].addr}}))
	for _, c := range e.clients {
		start := time.Now()
		for c.call(callLimit).backend != "b0" {
			if time.Since(start) > 15*time.Second {
				t.Fatalf("%s: calls did not move to the live priority 0 within 15 s", c.name)
			}
			time.Sleep(5 * time.Millisecond)
		}
		moved := time.Since(start)
		toP0 := 0
		for range n {
			if o := c.call(callLimit); o.err == nil && o.backend == "b0" {
				toP0++
			}
		}
		if toP0 != n {
			t.Errorf("%s: with priority 0 live, %d of %d calls reached it, want all", c.name, toP0, n)
		}
		got[c.name] += fmt.Sprintf("; p0 live: %d/%d to p0 (moved in %v)", toP0, n, moved.Round(time.Millisecond))
	}
	return got
}

// runOutlier: one of three backends fails every call; calls go round
// robin until the failure-percentage algorithm ejects it, after which 60
// calls in a row all succeed without reaching it. Bounded by 20 s and
// 4000 calls per client.
func runOutlier(t *testing.T, e *parityEnv) map[string]string {
	bad := e.b[2]
	got := map[string]string{}
	for _, c := range e.clients {
		start, failed, calls := time.Now(), 0, 0
		// window counts the calls since the last failure or arrival at the
		// failing backend.
		window := 0
		for window < 30 {
			// Paced, so that the detector's 500 ms interval runs within the
			// count on a fast machine: unpaced, 4,000 calls can end first.
			if calls == 10000 || time.Since(start) > 20*time.Second {
				t.Fatalf("%s: the failing backend was not ejected after %d calls, %v (%d failed)", c.name, calls, time.Since(start), failed)
			}
			time.Sleep(time.Millisecond)
			before := c.arrivals(bad)
			o := c.call(callLimit)
			calls++
			window++
			if o.err != nil {
				failed++
				window = 0
			}
			if c.arrivals(bad) != before {
				window = 0
			}
		}
		took := time.Since(start)
		before := c.arrivals(bad)
		ok := 0
		for range 60 {
			if o := c.call(callLimit); o.err == nil {
				ok++
			}
		}
		if ok != 60 || c.arrivals(bad) != before {
			t.Errorf("%s: after ejection %d of 60 calls succeeded and %d reached the failing backend, want 60 and 0", c.name, ok, c.arrivals(bad)-before)
		}
		got[c.name] = fmt.Sprintf("ejected within %v (%d of %d calls failed); then %d/60 ok", took.Round(10*time.Millisecond), failed, calls-30, ok)
	}
	return got
}

// runTimeout: the backend takes 2 s; the route's 300 ms ends every call
// with DEADLINE_EXCEEDED (HTTP: 504 or a deadline error) well before, as
// does a 300 ms max_stream_duration, the route's or the listener's, under
// a 5 s timeout. Each client's calls go side by side.
func runTimeout(t *testing.T, e *parityEnv) map[string]string {
	variants := [][]string{nil, nil, {"x-variant", "msd-below"}, {"x-variant", "msd-below"}, {"x-variant", "listener-msd"}, {"x-variant", "listener-msd"}}
	got := map[string]string{}
	for _, c := range e.clients {
		out := make([]outcome, len(variants))
		var wg sync.WaitGroup
		for i, hdr := range variants {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out[i] = c.call(callLimit, hdr...)
			}()
		}
		wg.Wait()
		var slowest time.Duration
		cut := 0
		for i, o := range out {
			if o.code == codes.DeadlineExceeded && o.took <= 1500*time.Millisecond {
				cut++
			} else {
				t.Errorf("%s: call %d (%v) ended after %v with %v (%v), want DEADLINE_EXCEEDED well before 2 s", c.name, i, variants[i], o.took, o.code, o.err)
			}
			slowest = max(slowest, o.took)
		}
		got[c.name] = fmt.Sprintf("%d/%d DEADLINE_EXCEEDED < 1.5 s, slowest %v", cut, len(variants), slowest.Round(time.Millisecond))
	}
	return got
}

// runRetries: of two backends one fails every call; retry_on
// "unavailable,5xx" with 3 retries lets none of 40 calls fail. The same
// calls on a route without a retry policy fail about half the time (round
// robin), which shows the retries are what saves them.
func runRetries(t *testing.T, e *parityEnv) map[string]string {
	const n = 40
	got := map[string]string{}
	for _, c := range e.clients {
		failed, plainFailed := 0, 0
		for i := range n {
			if o := c.call(callLimit); o.err != nil {
				failed++
				t.Logf("%s: call %d: %v", c.name, i, o.err)
			}
		}
		for range n {
			if o := c.call(callLimit, "x-variant", "no-retry"); o.err != nil {
				plainFailed++
			}
		}
		if failed != 0 {
			t.Errorf("%s: %d of %d calls failed with retries, want 0", c.name, failed, n)
		}
		if plainFailed < n/4 {
			t.Errorf("%s: without retries only %d of %d calls failed, want about half", c.name, plainFailed, n)
		}
		got[c.name] = fmt.Sprintf("%d/%d failed (no retry: %d/%d)", failed, n, plainFailed, n)
	}
	return got
}

// runPerTryTimeout: of two backends one takes 3 s; with a 150 ms
// per_try_timeout and two retries every Weft call succeeds, by the other
// backend. grpc-go ignores per_try_timeout: its calls to the slow backend
// last until the slow answer (no deadline: grpc-go reads only
// max_stream_duration), shown, not asserted, when contrast is set.
func runPerTryTimeout(t *testing.T, e *parityEnv, contrast bool) map[string]string {
	const n = 12
	got := map[string]string{}
	for _, name := range []string{weftGRPC, weftHTTP} {
		c := e.client(name)
		failed := 0
		var slowest time.Duration
		for i := range n {
			o := c.call(callLimit)
			if o.err != nil {
				failed++
				t.Errorf("%s: call %d: %v after %v", c.name, i, o.err, o.took)
			}
			slowest = max(slowest, o.took)
		}
		got[name] = fmt.Sprintf("%d/%d ok, slowest %v", n-failed, n, slowest.Round(time.Millisecond))
	}
	if !contrast {
		got[grpcGo] = "(as above)"
		return got
	}
	// grpc-go, as contrast: a few calls side by side, so the slow ones
	// cost 3 s once.
	c := e.client(grpcGo)
	// Both backends connected first: until the slow one has seen a call.
	for base, i := e.b[1].rpcN.Load(), 0; i < 20 && e.b[1].rpcN.Load() == base; i++ {
		c.call(300 * time.Millisecond)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	ok, slow := 0, 0
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := c.call(callLimit)
			mu.Lock()
			defer mu.Unlock()
			if o.err == nil {
				ok++
			}
			if o.took > time.Second {
				slow++
			}
		}()
	}
	wg.Wait()
	got[grpcGo] = fmt.Sprintf("%d/6 ok, %d took > 1 s (ignores per_try_timeout)", ok, slow)
	return got
}

// hedgeStreams are the hedging row's streams of 200 sequential calls,
// run side by side: each client on the hedged route and on the same route
// without hedging.
var hedgeStreams = []struct {
	name   string
	client string
	hedged bool
}{
	{"grpc-hedged", weftGRPC, true}, {"grpc-plain", weftGRPC, false},
	{"http-hedged", weftHTTP, true}, {"http-plain", weftHTTP, false},
	{"grpcgo-hedged", grpcGo, true},
}

// runHedging: every backend stalls 1 s on 5% of its arrivals. With
// hedge_on_per_try_timeout and a 100 ms per_try_timeout, a call whose
// attempt stalls is answered by a second attempt to the other backend:
// the p99 of 200 sequential calls is at least 3x lower than on the same
// route without hedging, for at most 15% extra attempts (counted at the
// stream's backends).
func runHedging(t *testing.T, e *parityEnv) map[string]string {
	const n = 200
	type result struct {
		p99      time.Duration
		extra    float64
		failed   int
		timedOut bool
	}
	results := make([]result, len(hedgeStreams))
	var wg sync.WaitGroup
	for i, s := range hedgeStreams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := e.client(s.client)
			bs := e.b[2*i : 2*i+2]
			var lat []time.Duration
			start := time.Now()
			for k := range n {
				if time.Since(start) > 60*time.Second {
					results[i].timedOut = true
					break
				}
				// Calls 10, 30, ..., 190 stall on their first attempt.
				o := c.call(callLimit, "x-stream", s.name, "x-call", strconv.Itoa(k+10))
				if o.err != nil {
					results[i].failed++
				}
				lat = append(lat, o.took)
			}
			slices.Sort(lat)
			results[i].p99 = lat[int(math.Ceil(0.99*float64(len(lat))))-1]
			attempts := c.arrivals(bs[0]) + c.arrivals(bs[1])
			results[i].extra = float64(attempts-int64(len(lat))) / float64(len(lat))
		}()
	}
	wg.Wait()
	got := map[string]string{}
	for i, s := range hedgeStreams {
		r := results[i]
		if r.timedOut || r.failed > 0 {
			t.Errorf("%s: %d calls failed (stopped at 60 s: %v)", s.name, r.failed, r.timedOut)
		}
		line := fmt.Sprintf("p99 %v, +%.1f%% attempts", r.p99.Round(time.Millisecond), 100*r.extra)
		if !s.hedged {
			continue
		}
		if s.client == grpcGo {
			got[grpcGo] = line + " (ignores hedge_policy)"
			continue
		}
		plain := results[i+1]
		ratio := float64(plain.p99) / float64(r.p99)
		got[s.client] = fmt.Sprintf("%s; unhedged p99 %v: %.1fx", line, plain.p99.Round(time.Millisecond), ratio)
		if ratio < 3 {
			t.Errorf("%s: hedged p99 %v against %v unhedged: %.1fx lower, want at least 3x", s.client, r.p99, plain.p99, ratio)
		}
		if r.extra > 0.15 {
			t.Errorf("%s: hedging sent %.1f%% extra attempts, want at most 15%%", s.client, 100*r.extra)
		}
	}
	return got
}

// runSession: the first call gets a cookie from the stateful session
// filter; 30 calls carrying it all reach the backend it names, as HTTP
// requests do. grpc-go has no cookie affinity (gRFC A55 is not in it):
// shown, not asserted.
func runSession(t *testing.T, e *parityEnv) map[string]string {
	const n = 30
	got := map[string]string{}
	for _, c := range e.clients {
		first := c.call(callLimit)
		if first.err != nil {
			if c.name == grpcGo {
				t.Logf("grpc-go on a listener with a stateful session filter: %v", first.err)
				got[grpcGo] = "fails: " + status.Code(first.err).String() + " (no stateful_session filter)"
				continue
			}
			t.Fatalf("%s: first call: %v", c.name, first.err)
		}
		var cookie string
		for _, v := range first.setCookies {
			if ck, err := http.ParseSetCookie(v); err == nil && ck.Name == "sticky" {
				cookie = ck.Name + "=" + ck.Value
			}
		}
		seen := map[string]int{}
		for range n {
			var hdr []string
			if cookie != "" {
				hdr = []string{"cookie", cookie}
			}
			if o := c.call(callLimit, hdr...); o.err == nil {
				seen[o.backend]++
			}
		}
		got[c.name] = fmt.Sprintf("cookie set: %v; %d calls: %s", cookie != "", n, sortedCounts(seen))
		if c.name == grpcGo {
			continue
		}
		if cookie == "" {
			t.Errorf("%s: the first call set no sticky cookie: %q", c.name, first.setCookies)
			continue
		}
		_, v, _ := strings.Cut(cookie, "=")
		want := e.backend(first.backend)
		if want == nil || decodeCookie(t, v) != want.addr || seen[first.backend] != n {
			t.Errorf("%s: cookie %s names %s; first call on %s; %d calls with it reached %v, want all on that backend",
				c.name, cookie, decodeCookie(t, v), first.backend, n, seen)
		}
	}
	return got
}

// runZoneAware: the clients are in zone a (the bootstrap's locality); the
// cluster has one backend in zone a and one in zone b, and zone-aware
// routing keeps every call in zone a, as Envoy's formula gives with
// equal shares. grpc-go splits by locality weight: shown, not asserted.
func runZoneAware(t *testing.T, e *parityEnv) map[string]string {
	const n = 40
	got := map[string]string{}
	for _, c := range e.clients {
		seen := map[string]int{}
		for i := range n {
			o := c.call(callLimit)
			if o.err != nil {
				t.Errorf("%s: call %d: %v", c.name, i, o.err)
			}
			seen[o.backend]++
		}
		got[c.name] = "zone a " + fmt.Sprint(seen["b0"]) + ", zone b " + fmt.Sprint(seen["b1"])
		if c.name != grpcGo && seen["b0"] != n {
			t.Errorf("%s: %d of %d calls stayed in the caller's zone, want all: %v", c.name, seen["b0"], n, seen)
		}
	}
	return got
}
