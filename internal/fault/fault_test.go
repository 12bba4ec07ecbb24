package fault_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/internal/fault"
	"github.com/weftmesh/weft/internal/xds"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// seq is a Rand that returns its numbers in turn (then 0), and records
// the ranges asked for.
type seq struct {
	mu   sync.Mutex
	nums []uint32
	dens []uint32
}

func (s *seq) rand(n uint32) uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dens = append(s.dens, n)
	if len(s.nums) == 0 {
		return 0
	}
	v := s.nums[0]
	s.nums = s.nums[1:]
	return v
}

func all() xds.FaultPercent { return xds.FaultPercent{Numerator: 100, Denominator: 100} }

func policy(f *xds.Fault) *fault.Policy {
	return fault.Resolve([]fault.Filter{{Name: "fault", Default: f, Active: &fault.Counter{}}}, &xds.Route{}, nil)
}

func req(h ...string) *fault.Request {
	hdr := http.Header{}
	for i := 0; i+1 < len(h); i += 2 {
		hdr.Add(h[i], h[i+1])
	}
	return &fault.Request{Match: fault.RequestMatch{Method: "GET", Path: "/", Header: hdr}, Cluster: "c"}
}

// TestDecide holds the decision to Envoy's fault filter documentation and
// grpc-go's fault filter (gRFC A33): "x-envoy-fault-abort-request: HTTP
// status code to abort a request with ... must be in the range [200,
// 600)"; "x-envoy-fault-abort-grpc-request ... When this header is set,
// the HTTP response status code will be set to 200"; a percentage header's
// "maximum value is capped by the value of the numerator of percentage
// field", whose denominator it shares; and each fault draws a random
// number of its own.
func TestDecide(t *testing.T) {
	headerAbort := &xds.Fault{Abort: &xds.FaultAbort{Kind: xds.AbortFromHeader, Percent: all()}}
	headerDelay := &xds.Fault{Delay: &xds.FaultDelay{FromHeader: true, Percent: xds.FaultPercent{Numerator: 50, Denominator: 100}}}
	for _, tc := range []struct {
		name      string
		f         *xds.Fault
		req       *fault.Request
		nums      []uint32 // the Rand's answers, in order
		delay     bool     // want the delay waited (the config's delays are 1 ms)
		abort     *fault.Abort
		wantDraws []uint32 // the denominators drawn from, when checked
	}{
		{name: "http status 100%", f: &xds.Fault{Abort: &xds.FaultAbort{Kind: xds.AbortHTTPStatus, HTTPStatus: 503, Percent: all()}},
			req: req(), abort: &fault.Abort{HTTPStatus: 503, Code: codes.Unavailable}},
		{name: "http status 200 is UNKNOWN for gRPC", f: &xds.Fault{Abort: &xds.FaultAbort{Kind: xds.AbortHTTPStatus, HTTPStatus: 200, Percent: all()}},
			req: req(), abort: &fault.Abort{HTTPStatus: 200, Code: codes.Unknown}},
		{name: "http 404 is UNIMPLEMENTED", f: &xds.Fault{Abort: &xds.FaultAbort{Kind: xds.AbortHTTPStatus, HTTPStatus: 404, Percent: all()}},
			req: req(), abort: &fault.Abort{HTTPStatus: 404, Code: codes.Unimplemented}},
		{name: "grpc status", f: &xds.Fault{Abort: &xds.FaultAbort{Kind: xds.AbortGRPCStatus, GRPCStatus: 8, Percent: all()}},
			req: req(), abort: &fault.Abort{HTTPStatus: 200, Code: codes.ResourceExhausted, GRPC: true}},
		{name: "grpc status above 16 is UNKNOWN", f: &xds.Fault{Abort: &xds.FaultAbort{Kind: xds.AbortGRPCStatus, GRPCStatus: 17, Percent: all()}},
			req: req(), abort: &fault.Abort{HTTPStatus: 200, Code: codes.Unknown, GRPC: true}},
		{name: "50% drawn below", f: &xds.Fault{Abort: &xds.FaultAbort{Kind: xds.AbortHTTPStatus, HTTPStatus: 503, Percent: xds.FaultPercent{Numerator: 5000, Denominator: 10_000}}},
			req: req(), nums: []uint32{4999}, abort: &fault.Abort{HTTPStatus: 503, Code: codes.Unavailable}, wantDraws: []uint32{10_000}},
		{name: "50% drawn at", f: &xds.Fault{Abort: &xds.FaultAbort{Kind: xds.AbortHTTPStatus, HTTPStatus: 503, Percent: xds.FaultPercent{Numerator: 5000, Denominator: 10_000}}},
			req: req(), nums: []uint32{5000}},
		{name: "0% never draws", f: &xds.Fault{Abort: &xds.FaultAbort{Kind: xds.AbortHTTPStatus, HTTPStatus: 503}},
			req: req(), wantDraws: []uint32{}},
		{name: "header abort absent", f: headerAbort, req: req()},
		{name: "header abort http", f: headerAbort, req: req(fault.HeaderAbortHTTP, "429"), abort: &fault.Abort{HTTPStatus: 429, Code: codes.Unavailable}},
		{name: "header abort http wins over grpc", f: headerAbort, req: req(fault.HeaderAbortHTTP, "403", fault.HeaderAbortGRPC, "5"),
			abort: &fault.Abort{HTTPStatus: 403, Code: codes.PermissionDenied}},
		{name: "header abort grpc", f: headerAbort, req: req(fault.HeaderAbortGRPC, "5"), abort: &fault.Abort{HTTPStatus: 200, Code: codes.NotFound, GRPC: true}},
		{name: "header abort http 600 ignored", f: headerAbort, req: req(fault.HeaderAbortHTTP, "600")},
		{name: "header abort garbage ignored", f: headerAbort, req: req(fault.HeaderAbortHTTP, "five hundred")},
		{name: "header abort percentage lowers", f: headerAbort, req: req(fault.HeaderAbortGRPC, "5", fault.HeaderAbortPercentage, "30"),
			nums: []uint32{30}, wantDraws: []uint32{100}},
		{name: "header abort percentage capped", f: &xds.Fault{Abort: &xds.FaultAbort{Kind: xds.AbortFromHeader, Percent: xds.FaultPercent{Numerator: 10, Denominator: 100}}},
			req: req(fault.HeaderAbortGRPC, "5", fault.HeaderAbortPercentage, "90"), nums: []uint32{10}},
		{name: "header delay", f: headerDelay, req: req(fault.HeaderDelay, "1"), nums: []uint32{49}, delay: true},
		{name: "header delay missed", f: headerDelay, req: req(fault.HeaderDelay, "1"), nums: []uint32{50}},
		{name: "header delay percentage lowers", f: headerDelay, req: req(fault.HeaderDelay, "1", fault.HeaderDelayPercentage, "10"), nums: []uint32{10}},
		{name: "header delay absent", f: headerDelay, req: req(), wantDraws: []uint32{}},
		{name: "delay then abort, two draws", f: &xds.Fault{
			Delay: &xds.FaultDelay{Fixed: time.Millisecond, Percent: xds.FaultPercent{Numerator: 1, Denominator: 1_000_000}},
			Abort: &xds.FaultAbort{Kind: xds.AbortGRPCStatus, GRPCStatus: 14, Percent: xds.FaultPercent{Numerator: 1, Denominator: 100}}},
			req: req(), nums: []uint32{0, 0}, delay: true, abort: &fault.Abort{HTTPStatus: 200, Code: codes.Unavailable, GRPC: true},
			wantDraws: []uint32{1_000_000, 100}},
		{name: "upstream_cluster other", f: &xds.Fault{UpstreamCluster: "other", Abort: &xds.FaultAbort{Kind: xds.AbortHTTPStatus, HTTPStatus: 503, Percent: all()}}, req: req()},
		{name: "upstream_cluster same", f: &xds.Fault{UpstreamCluster: "c", Abort: &xds.FaultAbort{Kind: xds.AbortHTTPStatus, HTTPStatus: 503, Percent: all()}},
			req: req(), abort: &fault.Abort{HTTPStatus: 503, Code: codes.Unavailable}},
		{name: "headers unmatched", f: &xds.Fault{Headers: []xds.HeaderMatcher{xds.HeaderMatcher{Name: "x-chaos", Kind: xds.MatchExact, Value: "on"}.Compiled()},
			Abort: &xds.FaultAbort{Kind: xds.AbortHTTPStatus, HTTPStatus: 503, Percent: all()}}, req: req("x-chaos", "off")},
		{name: "headers matched", f: &xds.Fault{Headers: []xds.HeaderMatcher{xds.HeaderMatcher{Name: "x-chaos", Kind: xds.MatchExact, Value: "on"}.Compiled()},
			Abort: &xds.FaultAbort{Kind: xds.AbortHTTPStatus, HTTPStatus: 503, Percent: all()}}, req: req("x-chaos", "on"), abort: &fault.Abort{HTTPStatus: 503, Code: codes.Unavailable}},
		{name: "downstream_nodes", f: &xds.Fault{DownstreamNodes: []string{"a"}, Abort: &xds.FaultAbort{Kind: xds.AbortHTTPStatus, HTTPStatus: 503, Percent: all()}},
			req: req(fault.HeaderDownstreamNode, "b")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &seq{nums: tc.nums}
			start := time.Now()
			got, err := policy(tc.f).Inject(context.Background(), tc.req, s.rand)
			if err != nil {
				t.Fatal(err)
			}
			if (got == nil) != (tc.abort == nil) || got != nil && *got != *tc.abort {
				t.Errorf("abort = %+v, want %+v", got, tc.abort)
			}
			if took := time.Since(start); tc.delay && took < time.Millisecond {
				t.Errorf("took %v, want the 1 ms delay", took)
			}
			if tc.wantDraws != nil && !equal(s.dens, tc.wantDraws) {
				t.Errorf("drew from %v, want %v", s.dens, tc.wantDraws)
			}
		})
	}
}

func equal(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestResolve: the most specific config wins (weighted cluster, then
// route, then the listener's), a disabled one or max_active_faults 0
// turns the filter off, and nothing to inject is a nil policy.
func TestResolve(t *testing.T) {
	abort := func(st uint32) *xds.Fault {
		return &xds.Fault{Abort: &xds.FaultAbort{Kind: xds.AbortHTTPStatus, HTTPStatus: st, Percent: all()}}
	}
	fs := []fault.Filter{{Name: "f", Default: abort(500), Active: &fault.Counter{}}}
	wc := &xds.WeightedCluster{Name: "v2", FaultOverrides: map[string]*xds.Fault{"f": abort(502)}}
	route := &xds.Route{FaultOverrides: map[string]*xds.Fault{"f": abort(501)}}
	for _, tc := range []struct {
		name string
		r    *xds.Route
		wc   *xds.WeightedCluster
		want int // 0: nil policy
	}{
		{"listener", &xds.Route{}, nil, 500},
		{"route beats listener", route, nil, 501},
		{"cluster beats route", route, wc, 502},
		{"other filter's override", &xds.Route{FaultOverrides: map[string]*xds.Fault{"g": abort(599)}}, nil, 500},
		{"disabled", &xds.Route{FaultOverrides: map[string]*xds.Fault{"f": {Disabled: true}}}, nil, 0},
		{"max_active_faults 0", &xds.Route{FaultOverrides: map[string]*xds.Fault{"f": {MaxActiveFaults: 0, HasMaxActiveFaults: true, Abort: abort(503).Abort}}}, nil, 0},
		{"empty", &xds.Route{FaultOverrides: map[string]*xds.Fault{"f": {}}}, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := fault.Resolve(fs, tc.r, tc.wc)
			if tc.want == 0 {
				if p != nil {
					t.Fatalf("policy %+v, want nil", p)
				}
				return
			}
			a, _ := p.Inject(context.Background(), req(), nil)
			if a == nil || a.HTTPStatus != tc.want {
				t.Errorf("abort %+v, want status %d", a, tc.want)
			}
		})
	}
	if a, err := (*fault.Policy)(nil).Inject(context.Background(), req(), nil); a != nil || err != nil {
		t.Errorf("nil policy: %v, %v", a, err)
	}
}

// TestMaxActiveFaults: with max_active_faults 2, two delayed requests are
// the filter's active faults, and a third is neither delayed nor aborted
// (Envoy: faults_overflow); when they end, faults come back. The counter
// is the filter's, shared by every policy resolved from it.
func TestMaxActiveFaults(t *testing.T) {
	c := &fault.Counter{}
	f := &xds.Fault{MaxActiveFaults: 2, HasMaxActiveFaults: true,
		Delay: &xds.FaultDelay{Fixed: time.Hour, Percent: all()},
		Abort: &xds.FaultAbort{Kind: xds.AbortHTTPStatus, HTTPStatus: 503, Percent: all()}}
	fs := []fault.Filter{{Name: "f", Default: f, Active: c}}
	p1, p2 := fault.Resolve(fs, &xds.Route{}, nil), fault.Resolve(fs, &xds.Route{Name: "other"}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, p := range []*fault.Policy{p1, p2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := p.Inject(ctx, req(), nil)
			errs <- err
		}()
	}
	for deadline := time.Now().Add(10 * time.Second); c.Active() < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d active faults after 10 s, want 2", c.Active())
		}
	}
	if a, err := p1.Inject(context.Background(), req(), nil); a != nil || err != nil {
		t.Errorf("third request: abort %v, err %v; want no fault at all", a, err)
	}
	cancel() // the delays honour their context
	wg.Wait()
	for range 2 {
		if err := <-errs; !errors.Is(err, context.Canceled) {
			t.Errorf("delayed request ended with %v, want context.Canceled", err)
		}
	}
	if c.Active() != 0 {
		t.Errorf("%d active after the delays ended, want 0", c.Active())
	}
	f.Delay = nil
	if a, _ := p1.Inject(context.Background(), req(), nil); a == nil {
		t.Error("after the delays ended, no abort: the counter leaked")
	}
}

// TestHTTPResponse: Envoy's local reply, "fault filter abort" with the
// status; a gRPC request gets a trailers-only answer.
func TestHTTPResponse(t *testing.T) {
	r, _ := http.NewRequest(http.MethodGet, "http://orders/x", nil)
	resp := (&fault.Abort{HTTPStatus: 503, Code: codes.Unavailable}).HTTPResponse(r)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 503 || string(body) != fault.AbortBody || resp.Request != r {
		t.Errorf("got %d %q, want 503 %q", resp.StatusCode, body, fault.AbortBody)
	}
	head, _ := http.NewRequest(http.MethodHead, "http://orders/x", nil)
	resp = (&fault.Abort{HTTPStatus: 503}).HTTPResponse(head)
	if body, _ := io.ReadAll(resp.Body); resp.StatusCode != 503 || len(body) != 0 {
		t.Errorf("HEAD: %d with a %d-byte body, want 503 and none", resp.StatusCode, len(body))
	}
	r.Header.Set("Content-Type", "application/grpc+proto")
	resp = (&fault.Abort{HTTPStatus: 200, Code: codes.ResourceExhausted, GRPC: true}).HTTPResponse(r)
	if resp.StatusCode != 200 || resp.Header.Get("Grpc-Status") != "8" {
		t.Errorf("gRPC request: %d grpc-status %q, want 200 and 8", resp.StatusCode, resp.Header.Get("Grpc-Status"))
	}
	if st := status.Convert((&fault.Abort{Code: codes.Unavailable}).Err()); st.Code() != codes.Unavailable {
		t.Errorf("Err() code %v", st.Code())
	}
}

// BenchmarkInject: a request a 1% abort and a 1% delay leave alone, the
// common case of a fault config: no allocation.
func BenchmarkInject(b *testing.B) {
	p := policy(&xds.Fault{
		Delay: &xds.FaultDelay{Fixed: time.Second, Percent: xds.FaultPercent{Numerator: 1, Denominator: 100}},
		Abort: &xds.FaultAbort{Kind: xds.AbortHTTPStatus, HTTPStatus: 503, Percent: xds.FaultPercent{Numerator: 1, Denominator: 100}},
	})
	r := req("x-other", "v")
	miss := func(uint32) uint32 { return 99 }
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if a, _ := p.Inject(ctx, r, miss); a != nil {
			b.Fatal("aborted")
		}
	}
}
