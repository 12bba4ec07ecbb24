// Package fault injects the faults of Envoy's HTTPFault filter (gRFC A33)
// into requests of both protocols: it decides, once per request, whether a
// route's fault filters delay it and whether they abort it, and with what.
// The HTTP client answers an abort with a response, as Envoy does; a gRPC
// call fails with the status. Either way the decision is made, and the
// delay waited out, after the route chose its cluster and before any
// endpoint is picked.
//
// The semantics are Envoy's, which grpc-go follows (see its
// xds/internal/httpfilter/fault): a route's override replaces the
// listener's config whole, the most specific one winning (weighted
// cluster, then route, then virtual host); the delay and the abort each
// draw their own random number; header-controlled faults read
// x-envoy-fault-* headers, whose percentages are capped by the config's;
// a filter with max_active_faults injects nothing while that many of its
// faults are active (delayed, or being aborted), across every route and
// both protocols.
package fault

import (
	"context"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/internal/localreply"
	"github.com/weftmesh/weft/internal/rbac"
	"github.com/weftmesh/weft/internal/xds"
)

// The headers a request controls header-triggered faults with (Envoy's
// names; gRPC metadata keys are these in lower case).
const (
	HeaderAbortHTTP       = "x-envoy-fault-abort-request"
	HeaderAbortGRPC       = "x-envoy-fault-abort-grpc-request"
	HeaderAbortPercentage = "x-envoy-fault-abort-request-percentage"
	HeaderDelay           = "x-envoy-fault-delay-request"
	HeaderDelayPercentage = "x-envoy-fault-delay-request-percentage"
	// HeaderDownstreamNode names the calling node for downstream_nodes.
	HeaderDownstreamNode = "x-envoy-downstream-service-node"
)

// AbortBody is the body of an HTTP response an abort synthesizes, Envoy's.
const AbortBody = "fault filter abort"

// Counter counts the active faults of one filter instance. It outlives
// listener versions: a new version of the same filter keeps counting
// the faults the old one started. Safe for concurrent use.
type Counter struct{ n atomic.Int64 }

// Active returns the number of faults active now.
func (c *Counter) Active() int64 { return c.n.Load() }

// Filter is a fault filter of a listener: its name, its config there (nil
// when the listener has none, so only routes can enable it), and its
// counter.
type Filter struct {
	Name    string
	Default *xds.Fault
	Active  *Counter
}

// Policy is the fault configs in force for a route and cluster, one per
// filter, in chain order. Nil means no fault can happen, and costs
// nothing. Immutable; safe for concurrent use.
type Policy struct {
	steps []step
}

type step struct {
	cfg    *xds.Fault
	active *Counter
}

// Resolve returns the policy of a route sending to the weighted cluster
// wc (nil for a single cluster): for each filter, the override of the
// cluster, else of the route (which already beat its virtual host's),
// else the listener's config. Nil when no filter can inject anything.
func Resolve(filters []Filter, r *xds.Route, wc *xds.WeightedCluster) *Policy {
	var p Policy
	for _, f := range filters {
		cfg := f.Default
		if o, ok := r.FaultOverrides[f.Name]; ok {
			cfg = o
		}
		if wc != nil {
			if o, ok := wc.FaultOverrides[f.Name]; ok {
				cfg = o
			}
		}
		if cfg == nil || cfg.Disabled || cfg.Delay == nil && cfg.Abort == nil ||
			cfg.HasMaxActiveFaults && cfg.MaxActiveFaults == 0 {
			continue
		}
		active := f.Active
		if active == nil {
			active = &Counter{}
		}
		p.steps = append(p.steps, step{cfg: cfg, active: active})
	}
	if len(p.steps) == 0 {
		return nil
	}
	return &p
}

// Rand returns a uniform number in [0, n); n > 0. Tests inject their own.
type Rand func(n uint32) uint32

// DefaultRand is math/rand/v2's.
func DefaultRand(n uint32) uint32 { return rand.Uint32N(n) }

// Abort is an injected abort.
type Abort struct {
	// HTTPStatus is the status of the response that answers an HTTP
	// request: the configured one, or 200 for a gRPC status (Envoy sets
	// 200 then, and a gRPC client reads grpc-status).
	HTTPStatus int
	// Code is the status a gRPC call fails with: the gRPC status asked
	// for (above 16: UNKNOWN), or the HTTP status mapped as gRPC maps
	// HTTP statuses (grpc/doc/http-grpc-status-mapping.md).
	Code codes.Code
	// GRPC is set when a gRPC status was asked for rather than an HTTP one.
	GRPC bool
}

// Err returns the status error of a gRPC call the abort fails.
func (a *Abort) Err() error {
	return status.Error(a.Code, "RPC terminated due to fault injection")
}

// HTTPResponse returns the response that answers req, aborted: Envoy's
// local reply. A gRPC request (content-type application/grpc) gets a
// trailers-only gRPC answer carrying the status.
func (a *Abort) HTTPResponse(req *http.Request) *http.Response {
	h := http.Header{}
	body := AbortBody
	st := a.HTTPStatus
	if strings.HasPrefix(req.Header.Get("Content-Type"), "application/grpc") {
		st, body = http.StatusOK, ""
		h.Set("Content-Type", "application/grpc")
		h.Set("Grpc-Status", strconv.Itoa(int(a.Code)))
		h.Set("Grpc-Message", AbortBody)
	} else {
		h.Set("Content-Type", "text/plain")
	}
	return localreply.New(req, st, h, body)
}

// Request is what a decision reads of a request: the route-matching
// inputs (headers, and for header matchers the path and method), the
// authority, and the cluster the route chose. It holds values, not the
// caller's xds.Request, so that the caller's stays on its stack.
type Request struct {
	Match   RequestMatch
	Host    string
	Cluster string
}

// RequestMatch is the part of an xds.Request a fault's header matchers
// read.
type RequestMatch struct {
	Method, Path, RawQuery, Scheme string
	Header                         http.Header
}

// MatchOf copies the fields of r a decision reads.
func MatchOf(r *xds.Request) RequestMatch {
	return RequestMatch{Method: r.Method, Path: r.Path, RawQuery: r.RawQuery, Scheme: r.Scheme, Header: r.Header}
}

// Inject runs the policy on one request: for each filter in turn, unless
// it has max_active_faults of its faults active, it draws whether to
// delay and whether to abort; it waits out the delays (or until ctx ends,
// returning ctx's error) and returns the first abort, nil for none. A
// filter that aborts ends the chain, as in Envoy. A nil policy returns at
// once.
func (p *Policy) Inject(ctx context.Context, req *Request, rnd Rand) (*Abort, error) {
	if p == nil {
		return nil, nil
	}
	if rnd == nil {
		rnd = DefaultRand
	}
	for i := range p.steps {
		s := &p.steps[i]
		if !s.applies(req) {
			continue
		}
		delay, abort := s.decide(req.Match.Header, rnd)
		if delay == 0 && abort == nil {
			continue
		}
		if !s.acquire() {
			continue
		}
		err := wait(ctx, delay)
		s.active.n.Add(-1)
		if err != nil {
			return nil, err
		}
		if abort != nil {
			return abort, nil
		}
	}
	return nil, nil
}

// acquire counts a fault as active, unless the filter's bound is reached.
func (s *step) acquire() bool {
	n := s.active.n.Add(1)
	if s.cfg.HasMaxActiveFaults && n > int64(s.cfg.MaxActiveFaults) {
		s.active.n.Add(-1)
		return false
	}
	return true
}

// applies checks upstream_cluster, downstream_nodes and headers, which
// limit the requests a filter may fault.
func (s *step) applies(req *Request) bool {
	c := s.cfg
	if c.UpstreamCluster != "" && c.UpstreamCluster != req.Cluster {
		return false
	}
	if len(c.DownstreamNodes) > 0 && !slices.Contains(c.DownstreamNodes, req.Match.Header.Get(HeaderDownstreamNode)) {
		return false
	}
	if len(c.Headers) > 0 {
		m := &req.Match
		in := rbac.Input{Method: m.Method, Path: m.Path, RawQuery: m.RawQuery, Scheme: m.Scheme, Host: req.Host, Header: m.Header}
		for i := range c.Headers {
			if !c.Headers[i].Match(&in) {
				return false
			}
		}
	}
	return true
}

// decide draws a filter's delay and abort, each with a number of its own
// (gRFC A33, as Envoy).
func (s *step) decide(h http.Header, rnd Rand) (time.Duration, *Abort) {
	var delay time.Duration
	if d := s.cfg.Delay; d != nil {
		num := d.Percent.Numerator
		dur := d.Fixed
		if d.FromHeader {
			dur = 0
			if ms, ok := headerInt(h, HeaderDelay); ok && ms > 0 {
				dur = time.Duration(min(ms, int64(maxHeaderDelay/time.Millisecond))) * time.Millisecond
				num = capped(h, HeaderDelayPercentage, num)
			}
		}
		if dur > 0 && hit(num, d.Percent.Denominator, rnd) {
			delay = dur
		}
	}
	var abort *Abort
	if a := s.cfg.Abort; a != nil {
		num := a.Percent.Numerator
		var out Abort
		ok := false
		switch a.Kind {
		case xds.AbortHTTPStatus:
			out, ok = httpAbort(int64(a.HTTPStatus))
		case xds.AbortGRPCStatus:
			out, ok = grpcAbort(int64(a.GRPCStatus))
		case xds.AbortFromHeader:
			// The HTTP status header wins when both are sent (Envoy's and
			// grpc-go's order); an invalid value is ignored.
			if v, set := headerInt(h, HeaderAbortHTTP); set {
				out, ok = httpAbort(v)
			} else if v, set := headerInt(h, HeaderAbortGRPC); set {
				out, ok = grpcAbort(v)
			}
			num = capped(h, HeaderAbortPercentage, num)
		}
		if ok && hit(num, a.Percent.Denominator, rnd) {
			hitAbort := out // on the heap only when it fires
			abort = &hitAbort
		}
	}
	return delay, abort
}

// maxHeaderDelay bounds a header-controlled delay: a header is caller
// input, and a timer of years is no test of anything.
const maxHeaderDelay = time.Hour

// hit draws whether a request falls in num/den.
func hit(num, den uint32, rnd Rand) bool {
	if num == 0 || den == 0 {
		return false
	}
	if num >= den {
		return true
	}
	return rnd(den) < num
}

// capped reads a percentage header: a numerator of the config's
// denominator, no larger than the config's own numerator. Absent or
// invalid, the config's holds.
func capped(h http.Header, name string, num uint32) uint32 {
	if v, ok := headerInt(h, name); ok && v >= 0 && v < int64(num) {
		return uint32(v)
	}
	return num
}

// headerInt reads an integer header; several values: the first.
func headerInt(h http.Header, name string) (int64, bool) {
	vs := h.Values(name)
	if len(vs) == 0 {
		return 0, false
	}
	v, err := strconv.ParseInt(strings.TrimSpace(vs[0]), 10, 64)
	return v, err == nil
}

// httpAbort is an abort with an HTTP status; a status outside [200, 600)
// (from a header: configs with one are refused) aborts nothing.
func httpAbort(st int64) (Abort, bool) {
	if st < 200 || st >= 600 {
		return Abort{}, false
	}
	return Abort{HTTPStatus: int(st), Code: CodeFromHTTP(int(st))}, true
}

func grpcAbort(c int64) (Abort, bool) {
	if c < 0 {
		return Abort{}, false
	}
	code := codes.Code(c)
	if c > int64(codes.Unauthenticated) {
		code = codes.Unknown
	}
	return Abort{HTTPStatus: http.StatusOK, Code: code, GRPC: true}, true
}

// CodeFromHTTP maps an HTTP status to the gRPC code a gRPC client reads
// from a response without grpc-status (grpc/doc/http-grpc-status-mapping.md,
// as grpc-go's fault filter maps it): 200 too is UNKNOWN.
func CodeFromHTTP(st int) codes.Code {
	switch st {
	case http.StatusBadRequest:
		return codes.Internal
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusForbidden:
		return codes.PermissionDenied
	case http.StatusNotFound:
		return codes.Unimplemented
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return codes.Unavailable
	}
	return codes.Unknown
}

// wait waits d, or until ctx ends.
func wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
