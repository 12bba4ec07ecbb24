package mesh_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	commonfaultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// Fault injection (gRFC A33, Envoy's HTTPFault filter) on Weft's HTTP
// client and Weft's gRPC channel, with grpc-go's xDS client as the oracle
// of what the gRPC side means, on the same resources.

const faultFilter = "envoy.filters.http.fault"

// faultListener is the row's listener with an HTTPFault filter (nil: one
// with no fault of its own, as istiod installs it) ahead of the router.
func faultListener(f *faultv3.HTTPFault) types.Resource {
	if f == nil {
		f = &faultv3.HTTPFault{}
	}
	return xdstest.APIListener(parityHost, xdstest.WithFault(xdstest.HCM("svc-routes", nil), faultFilter, f))
}

func percent(n uint32, d typev3.FractionalPercent_DenominatorType) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: n, Denominator: d}
}

func abortHTTP(st uint32, p *typev3.FractionalPercent) *faultv3.HTTPFault {
	return &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: st}, Percentage: p}}
}

func abortGRPC(c codes.Code, p *typev3.FractionalPercent) *faultv3.HTTPFault {
	return &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_GrpcStatus{GrpcStatus: uint32(c)}, Percentage: p}}
}

func delayFixed(d time.Duration, p *typev3.FractionalPercent) *faultv3.HTTPFault {
	return &faultv3.HTTPFault{Delay: &commonfaultv3.FaultDelay{
		FaultDelaySecifier: &commonfaultv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(d)}, Percentage: p}}
}

func perFilter(t *testing.T, f *faultv3.HTTPFault) map[string]*anypb.Any {
	a, err := anypb.New(f)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]*anypb.Any{faultFilter: a}
}

var hundred = percent(100, typev3.FractionalPercent_HUNDRED)

// faultOutcome is what one call saw: the gRPC code (for HTTP: OK for a
// 2xx that reached the backend), the HTTP status and body, whether the
// backend answered, and how long it took.
type faultOutcome struct {
	code    codes.Code
	status  int
	body    string
	backend bool
	took    time.Duration
	err     error
}

func (o faultOutcome) String() string {
	if o.status != 0 {
		return fmt.Sprintf("HTTP %d %q (backend %v, %v)", o.status, o.body, o.backend, o.took.Round(time.Millisecond))
	}
	return fmt.Sprintf("%v (backend %v, %v, %v)", o.code, o.backend, o.took.Round(time.Millisecond), o.err)
}

// faultCall makes one call within limit, with the header pairs hdr.
func faultCall(c *parityClient, limit time.Duration, hdr ...string) faultOutcome {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	start := time.Now()
	var o faultOutcome
	if c.hc != nil {
		if len(hdr) > 0 {
			ctx = metadata.AppendToOutgoingContext(ctx, hdr...)
		}
		var md metadata.MD
		_, o.err = c.hc.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&md))
		o.took, o.code = time.Since(start), status.Code(o.err)
		o.backend = len(md.Get("x-backend")) > 0
		return o
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+parityHost+"/items", nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := c.http.Do(req)
	o.took = time.Since(start)
	if err != nil {
		o.err, o.code = err, codes.Unavailable
		if errors.Is(err, context.DeadlineExceeded) {
			o.code = codes.DeadlineExceeded
		}
		return o
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	o.took = time.Since(start)
	o.status, o.body, o.backend = resp.StatusCode, string(b), resp.Header.Get("X-Backend") != ""
	if o.backend && resp.StatusCode == http.StatusOK {
		o.code = codes.OK
	} else {
		o.code = codes.Unknown
	}
	return o
}

// faultRow is a row of the fault table: its resources and its check.
type faultRow struct {
	name      string
	resources func(t *testing.T, e *parityEnv) []types.Resource
	run       func(t *testing.T, e *parityEnv)
}

// TestFaultInjection holds fault injection on Weft's HTTP client and
// Weft's gRPC channel to grpc-go's xDS client, on the same resources.
// Envoy's fault filter documentation is the reference on HTTP: an abort
// is a local reply, "fault filter abort" with the configured status, and
// "x-envoy-fault-abort-grpc-request ... When this header is set, the HTTP
// response status code will be set to 200" (a grpc_status abort is
// likewise a 200 to a request that is not gRPC). On gRPC, gRFC A33: the
// call fails "before sending any traffic" with the gRPC status, or with
// the HTTP status mapped to a gRPC code; a delay comes "before sending any
// traffic for an RPC"; max_active_faults bounds the faults active at once.
func TestFaultInjection(t *testing.T) {
	rows := []faultRow{
		{name: "abort 100% with a gRPC status", resources: func(t *testing.T, e *parityEnv) []types.Resource {
			return []types.Resource{faultListener(abortGRPC(codes.ResourceExhausted, hundred)), parityRoutes(parityRoute("svc", nil, nil)),
				parityCluster("svc", nil), xdstest.Endpoints("svc", addrs(e.b...)...)}
		}, run: func(t *testing.T, e *parityEnv) {
			expectAll(t, e, 10, func(c *parityClient, o faultOutcome) string {
				if c.hc != nil {
					return check(o.code == codes.ResourceExhausted && !o.backend, "RESOURCE_EXHAUSTED before the backend")
				}
				return check(o.status == http.StatusOK && o.body == "fault filter abort" && !o.backend, `200 "fault filter abort" before the backend`)
			})
			// A stream is aborted as a unary call is, before it opens.
			for _, c := range e.clients[:2] {
				ctx, cancel := context.WithTimeout(context.Background(), callLimit)
				s, err := c.hc.Watch(ctx, &healthpb.HealthCheckRequest{})
				if err == nil {
					_, err = s.Recv()
				}
				cancel()
				if status.Code(err) != codes.ResourceExhausted {
					t.Errorf("%s: stream: %v, want RESOURCE_EXHAUSTED", c.name, err)
				}
			}
		}},
		{name: "abort 100% with an HTTP status", resources: func(t *testing.T, e *parityEnv) []types.Resource {
			return []types.Resource{faultListener(abortHTTP(403, hundred)), parityRoutes(parityRoute("svc", nil, nil)),
				parityCluster("svc", nil), xdstest.Endpoints("svc", addrs(e.b...)...)}
		}, run: func(t *testing.T, e *parityEnv) {
			expectAll(t, e, 10, func(c *parityClient, o faultOutcome) string {
				if c.hc != nil {
					return check(o.code == codes.PermissionDenied && !o.backend, "PERMISSION_DENIED (403 mapped) before the backend")
				}
				return check(o.status == http.StatusForbidden && o.body == "fault filter abort" && !o.backend, `403 "fault filter abort"`)
			})
		}},
		{name: "abort with status OK", resources: func(t *testing.T, e *parityEnv) []types.Resource {
			return []types.Resource{faultListener(abortGRPC(codes.OK, hundred)), parityRoutes(parityRoute("svc", nil, nil)),
				parityCluster("svc", nil), xdstest.Endpoints("svc", addrs(e.b...)...)}
		}, run: func(t *testing.T, e *parityEnv) {
			// gRFC A33: "as if it has immediately received trailing
			// metadata from the server with the status OK"; a unary call
			// then lacks its message, and fails as grpc-go's does.
			want := faultCall(e.client(grpcGo), callLimit).code
			expectAll(t, e, 3, func(c *parityClient, o faultOutcome) string {
				if c.hc != nil {
					return check(o.code == want && o.code != codes.OK && !o.backend, fmt.Sprintf("%v, as grpc-go", want))
				}
				return check(o.status == http.StatusOK && o.body == "fault filter abort" && !o.backend, `200 "fault filter abort"`)
			})
		}},
		{name: "abort 50%", resources: func(t *testing.T, e *parityEnv) []types.Resource {
			return []types.Resource{faultListener(abortHTTP(503, percent(5000, typev3.FractionalPercent_TEN_THOUSAND))),
				parityRoutes(parityRoute("svc", nil, nil)), parityCluster("svc", nil), xdstest.Endpoints("svc", addrs(e.b...)...)}
		}, run: runFaultFifty},
		{name: "header-triggered abort and delay", resources: func(t *testing.T, e *parityEnv) []types.Resource {
			f := &faultv3.HTTPFault{
				Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HeaderAbort_{}, Percentage: hundred},
				Delay: &commonfaultv3.FaultDelay{FaultDelaySecifier: &commonfaultv3.FaultDelay_HeaderDelay_{}, Percentage: hundred},
			}
			return []types.Resource{faultListener(f), parityRoutes(parityRoute("svc", nil, nil)),
				parityCluster("svc", nil), xdstest.Endpoints("svc", addrs(e.b...)...)}
		}, run: runFaultHeaders},
		{name: "fixed delay", resources: func(t *testing.T, e *parityEnv) []types.Resource {
			return []types.Resource{faultListener(delayFixed(400*time.Millisecond, hundred)), parityRoutes(parityRoute("svc", nil, nil)),
				parityCluster("svc", nil), xdstest.Endpoints("svc", addrs(e.b...)...)}
		}, run: runFaultDelay},
		{name: "delay outside the route timeout", resources: func(t *testing.T, e *parityEnv) []types.Resource {
			// Envoy's router starts the route's timeout when the request
			// reaches it, after the fault filter's delay, and grpc-go does
			// not count the delay against the route's max_stream_duration
			// either: a 600 ms delay on a 300 ms route timeout lets the
			// call through, on every client.
			return []types.Resource{faultListener(delayFixed(600*time.Millisecond, hundred)), parityRoutes(parityRoute("svc", nil, func(a *routev3.RouteAction) {
				a.Timeout = durationpb.New(300 * time.Millisecond)
				a.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(300 * time.Millisecond)}
			})), parityCluster("svc", nil), xdstest.Endpoints("svc", addrs(e.b...)...)}
		}, run: func(t *testing.T, e *parityEnv) {
			for _, c := range e.clients {
				if o := faultCall(c, callLimit); !o.backend || o.code != codes.OK || o.took < 600*time.Millisecond {
					t.Errorf("%s: %v; want OK after the 600 ms delay", c.name, o)
				}
			}
		}},
		{name: "max_active_faults", resources: func(t *testing.T, e *parityEnv) []types.Resource {
			f := delayFixed(4*time.Second, hundred)
			f.MaxActiveFaults = wrapperspb.UInt32(2)
			return []types.Resource{faultListener(f), parityRoutes(parityRoute("svc", nil, nil)),
				parityCluster("svc", nil), xdstest.Endpoints("svc", addrs(e.b...)...)}
		}, run: runMaxActiveFaults},
		{name: "per-route overrides", resources: func(t *testing.T, e *parityEnv) []types.Resource {
			// The listener aborts with 500; the virtual host overrides it
			// with 429, a route with 404, a weighted cluster with 401, and
			// a route with a config that injects nothing. Most specific
			// wins (Envoy; grpc-go's config selector).
			override := parityRoute("svc", []string{"x-variant", "route"}, nil)
			override.TypedPerFilterConfig = perFilter(t, abortHTTP(404, hundred))
			off := parityRoute("svc", []string{"x-variant", "off"}, nil)
			off.TypedPerFilterConfig = perFilter(t, &faultv3.HTTPFault{})
			weighted := parityRoute("svc", []string{"x-variant", "cluster"}, func(a *routev3.RouteAction) {
				a.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
					Clusters: []*routev3.WeightedCluster_ClusterWeight{{Name: "svc", Weight: wrapperspb.UInt32(1), TypedPerFilterConfig: perFilter(t, abortHTTP(401, hundred))}}}}
			})
			weighted.TypedPerFilterConfig = perFilter(t, abortHTTP(404, hundred))
			rc := parityRoutes(override, off, weighted, parityRoute("svc", nil, nil))
			rc.VirtualHosts[0].TypedPerFilterConfig = perFilter(t, abortHTTP(429, hundred))
			return []types.Resource{faultListener(abortHTTP(500, hundred)), rc, parityCluster("svc", nil), xdstest.Endpoints("svc", addrs(e.b...)...)}
		}, run: runFaultOverrides},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			e := newParityEnv(t, parityRow{name: row.name, backends: 1, resources: func(pe *parityEnv) []types.Resource { return row.resources(t, pe) }})
			row.run(t, e)
		})
	}
}

func check(ok bool, want string) string {
	if ok {
		return ""
	}
	return want
}

// expectAll makes n calls on each client and holds each outcome to want,
// which returns what was wanted when the outcome falls short.
func expectAll(t *testing.T, e *parityEnv, n int, want func(*parityClient, faultOutcome) string) {
	t.Helper()
	for _, c := range e.clients {
		before := c.arrivals(e.b[0])
		var last faultOutcome
		for i := range n {
			o := faultCall(c, callLimit)
			last = o
			if w := want(c, o); w != "" {
				t.Errorf("%s: call %d: %v; want %s", c.name, i, o, w)
				break
			}
		}
		if got := c.arrivals(e.b[0]) - before; got != 0 {
			t.Errorf("%s: %d calls reached the backend, want none", c.name, got)
		}
		t.Logf("%s: %v", c.name, last)
	}
}

// runFaultFifty: 400 calls with a 50% abort; each client's aborts fall
// within 40-60% (the binomial's standard deviation is 2.5%), and the
// calls not aborted are exactly those that reached the backend.
func runFaultFifty(t *testing.T, e *parityEnv) {
	const n = 400
	for _, c := range e.clients {
		before := c.arrivals(e.b[0])
		aborted, other := 0, 0
		for range n {
			o := faultCall(c, callLimit)
			switch {
			case o.backend && o.code == codes.OK:
			case !o.backend && (o.code == codes.Unavailable || o.status == http.StatusServiceUnavailable && o.body == "fault filter abort"):
				aborted++
			default:
				other++
				t.Errorf("%s: %v", c.name, o)
			}
		}
		reached := c.arrivals(e.b[0]) - before
		t.Logf("%s: %d of %d aborted, %d reached the backend", c.name, aborted, n, reached)
		if aborted < n*40/100 || aborted > n*60/100 {
			t.Errorf("%s: %d of %d calls aborted, want 40-60%%", c.name, aborted, n)
		}
		if reached != int64(n-aborted-other) {
			t.Errorf("%s: %d calls reached the backend, want the %d not aborted", c.name, reached, n-aborted-other)
		}
	}
}

// runFaultHeaders: with header_abort and header_delay at 100%, a call
// without the headers is untouched; the headers abort it with their
// status or delay it by their milliseconds; a percentage header of 0
// turns the abort off.
func runFaultHeaders(t *testing.T, e *parityEnv) {
	for _, c := range e.clients {
		for _, tc := range []struct {
			hdr  []string
			want func(o faultOutcome) bool
			what string
		}{
			{nil, func(o faultOutcome) bool { return o.backend && o.code == codes.OK && o.took < 2*time.Second }, "untouched"},
			{[]string{"x-envoy-fault-abort-grpc-request", "14"}, func(o faultOutcome) bool {
				if c.hc != nil {
					return o.code == codes.Unavailable && !o.backend
				}
				return o.status == http.StatusOK && o.body == "fault filter abort" && !o.backend
			}, "aborted by the gRPC status header"},
			{[]string{"x-envoy-fault-abort-request", "404"}, func(o faultOutcome) bool {
				if c.hc != nil {
					return o.code == codes.Unimplemented && !o.backend
				}
				return o.status == http.StatusNotFound && !o.backend
			}, "aborted with 404 (UNIMPLEMENTED)"},
			{[]string{"x-envoy-fault-abort-request", "404", "x-envoy-fault-abort-request-percentage", "0"}, func(o faultOutcome) bool {
				return o.backend && o.code == codes.OK
			}, "not aborted at 0%"},
			{[]string{"x-envoy-fault-delay-request", "300"}, func(o faultOutcome) bool {
				return o.backend && o.code == codes.OK && o.took >= 300*time.Millisecond && o.took < 10*time.Second
			}, "delayed at least 300 ms"},
		} {
			o := faultCall(c, callLimit, tc.hdr...)
			if !tc.want(o) {
				t.Errorf("%s with %v: %v; want %s", c.name, tc.hdr, o, tc.what)
			}
		}
	}
}

// runFaultDelay: a 400 ms fixed delay holds each call at least that long
// before it reaches the backend; a call whose deadline falls within the
// delay ends with DEADLINE_EXCEEDED and never reaches the backend.
func runFaultDelay(t *testing.T, e *parityEnv) {
	for _, c := range e.clients {
		for i := range 3 {
			if o := faultCall(c, callLimit); !o.backend || o.code != codes.OK || o.took < 400*time.Millisecond || o.took > 10*time.Second {
				t.Errorf("%s: call %d: %v; want OK after 400 ms to 10 s", c.name, i, o)
			}
		}
		before := c.arrivals(e.b[0])
		o := faultCall(c, 100*time.Millisecond)
		if o.code != codes.DeadlineExceeded || o.took > 5*time.Second {
			t.Errorf("%s: call with a 100 ms deadline: %v; want DEADLINE_EXCEEDED", c.name, o)
		}
		time.Sleep(500 * time.Millisecond) // past the delay the deadline cut
		if got := c.arrivals(e.b[0]) - before; got != 0 {
			t.Errorf("%s: the call cut short during its delay reached the backend (%d arrivals)", c.name, got)
		}
	}
}

// runMaxActiveFaults: max_active_faults 2 and a 4 s delay on every call:
// with two calls in their delay, a third is not delayed; the two still
// take their 4 s.
func runMaxActiveFaults(t *testing.T, e *parityEnv) {
	const delayed = 2
	for _, c := range e.clients {
		outs := make([]faultOutcome, delayed)
		var wg sync.WaitGroup
		for i := range delayed {
			wg.Add(1)
			go func() {
				defer wg.Done()
				outs[i] = faultCall(c, callLimit)
			}()
		}
		// The two calls need only match their route to be in their delay;
		// a second is generous for that on a loaded machine, and short of
		// their 4 s.
		time.Sleep(time.Second)
		third := faultCall(c, callLimit)
		wg.Wait()
		if !third.backend || third.code != codes.OK || third.took > 2500*time.Millisecond {
			t.Errorf("%s: the call past max_active_faults: %v; want it undelayed (well under the 4 s delay)", c.name, third)
		}
		for i, o := range outs {
			if !o.backend || o.code != codes.OK || o.took < 4*time.Second {
				t.Errorf("%s: delayed call %d: %v; want OK after at least 4 s", c.name, i, o)
			}
		}
		t.Logf("%s: delayed %v and %v; the third took %v", c.name, outs[0].took.Round(time.Millisecond), outs[1].took.Round(time.Millisecond), third.took.Round(time.Millisecond))
	}
}

// runFaultOverrides: each route sees its most specific fault config.
func runFaultOverrides(t *testing.T, e *parityEnv) {
	for _, c := range e.clients {
		for _, tc := range []struct {
			variant string
			status  int
			code    codes.Code
		}{
			{"route", 404, codes.Unimplemented},
			{"cluster", 401, codes.Unauthenticated},
			{"", 429, codes.Unavailable}, // the virtual host's, over the listener's 500
			{"off", 0, codes.OK},
		} {
			var hdr []string
			if tc.variant != "" {
				hdr = []string{"x-variant", tc.variant}
			}
			o := faultCall(c, callLimit, hdr...)
			var ok bool
			switch {
			case tc.status == 0:
				ok = o.backend && o.code == codes.OK
			case c.hc != nil:
				ok = o.code == tc.code && !o.backend
			default:
				ok = o.status == tc.status && !o.backend
			}
			if !ok {
				t.Errorf("%s: x-variant %q: %v; want HTTP %d / %v", c.name, tc.variant, o, tc.status, tc.code)
			}
		}
	}
}

// TestFaultConfigUpdates: a listener's fault follows the control plane;
// a malformed one is NACKed naming the listener and the field, and the
// last good config keeps serving (the abort stays in force); the next
// good one takes effect. On Weft HTTP and Weft gRPC, which share the
// listener through one xDS client.
func TestFaultConfigUpdates(t *testing.T) {
	e := newParityEnv(t, parityRow{name: "updates", backends: 1, resources: func(e *parityEnv) []types.Resource {
		return []types.Resource{faultListener(abortHTTP(503, hundred)), parityRoutes(parityRoute("svc", nil, nil)),
			parityCluster("svc", nil), xdstest.Endpoints("svc", addrs(e.b...)...)}
	}})
	rest := []types.Resource{parityRoutes(parityRoute("svc", nil, nil)), parityCluster("svc", nil), xdstest.Endpoints("svc", addrs(e.b...)...)}
	clients := []*parityClient{e.client(weftHTTP), e.client(weftGRPC)}
	aborted := func(c *parityClient, o faultOutcome) bool {
		if c.hc != nil {
			return o.code == codes.Unavailable && !o.backend
		}
		return o.status == http.StatusServiceUnavailable && o.body == "fault filter abort"
	}
	for _, c := range clients {
		if o := faultCall(c, callLimit); !aborted(c, o) {
			t.Fatalf("%s: %v; want the listener's abort", c.name, o)
		}
	}

	e.cp.SetSnapshot(t, xdsNode, "2", append(rest, faultListener(&faultv3.HTTPFault{Abort: &faultv3.FaultAbort{Percentage: hundred}}))...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nack, err := e.cp.WaitRequest(ctx, func(r *discoveryv3.DiscoveryRequest) bool {
		return r.GetErrorDetail() != nil && strings.HasSuffix(r.GetTypeUrl(), "Listener")
	})
	if err != nil {
		t.Fatalf("no NACK of the malformed fault: %v", err)
	}
	msg := nack.GetErrorDetail().GetMessage()
	if !strings.Contains(msg, parityHost) || !strings.Contains(msg, "http_filters[0].typed_config.abort") {
		t.Errorf("NACK %q does not name the listener and the field", msg)
	}
	for _, c := range clients {
		if o := faultCall(c, callLimit); !aborted(c, o) {
			t.Errorf("%s after the NACK: %v; want the last good config's abort", c.name, o)
		}
	}

	e.cp.SetSnapshot(t, xdsNode, "3", append(rest, faultListener(nil))...)
	for _, c := range clients {
		start := time.Now()
		for o := faultCall(c, callLimit); !o.backend || o.code != codes.OK; o = faultCall(c, callLimit) {
			if time.Since(start) > 15*time.Second {
				t.Fatalf("%s: still %v 15 s after the fault was removed", c.name, o)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
