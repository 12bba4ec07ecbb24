// Package route turns an xDS route into what the data path applies, once
// per route version, for HTTP requests and gRPC calls alike: the cluster a
// request goes to, its timeout, retry and hedge policies, its hash for
// consistent-hashing balancers, and its rewrites and header changes.
//
// One route means the same thing to both protocols; where they differ, the
// difference is Envoy's or grpc-go's and is written down here: retry_on
// names HTTP conditions for HTTP and gRPC status codes for gRPC; a route
// that sets no timeout gets Envoy's 15 s on HTTP and none on gRPC, as in
// grpc-go, whose streams may live long.
package route

import (
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
	"google.golang.org/grpc/codes"

	"github.com/weftmesh/weft/internal/xds"
	"github.com/weftmesh/weft/resilience"
)

// Plan is a route's action made ready for the hot path. It is immutable.
type Plan struct {
	Route *xds.Route
	// HTTP is the retry policy of an HTTP request; its Timeout is the
	// route's (negative: none; 0: resilience's default, Envoy's 15 s).
	HTTP resilience.RetryPolicy
	// HTTPHedge is the hedging of an HTTP request; nil for none.
	HTTPHedge *resilience.HedgePolicy
	// GRPC is the retry policy of a gRPC call; its Timeout is negative
	// when the route sets none.
	GRPC resilience.RetryPolicy
	// GRPCHedge is the hedging of a gRPC call; nil for none.
	GRPCHedge *resilience.HedgePolicy
	// Mutates is set when the route rewrites the request or changes its
	// headers, so that a request that needs no header copy gets none.
	Mutates bool
}

// New plans r. listenerTimeout is the listener's max_stream_duration (0:
// none), the timeout of a route that sets none. Where the route is silent,
// Envoy's defaults hold on HTTP: a 15 s route timeout covering all
// attempts, and no retries.
func New(r *xds.Route, listenerTimeout time.Duration) *Plan {
	a := &r.Action
	p := &Plan{Route: r, HTTP: resilience.RetryPolicy{NumRetries: -1}, GRPC: resilience.RetryPolicy{NumRetries: -1, Timeout: -1}}
	switch d, set := Timeout(a, listenerTimeout); {
	case set && d == 0:
		p.HTTP.Timeout = -1 // xDS: 0 disables the timeout
	case set:
		p.HTTP.Timeout, p.GRPC.Timeout = d, d
	}
	if rp := a.RetryPolicy; rp != nil {
		if on := HTTPRetryOn(rp.RetryOn); on != 0 {
			p.HTTP.RetryOn = on
			p.HTTP.NumRetries = numRetries(rp)
			p.HTTP.PerTryTimeout = rp.PerTryTimeout
			p.HTTP.BaseInterval, p.HTTP.MaxInterval = rp.BaseInterval, rp.MaxInterval
			for _, c := range rp.RetriableStatusCodes {
				p.HTTP.RetriableStatusCodes = append(p.HTTP.RetriableStatusCodes, int(c))
			}
		}
		for _, n := range rp.RetryOn {
			if c, ok := grpcRetryCodes[strings.TrimSpace(n)]; ok {
				p.GRPC.GRPCCodes = append(p.GRPC.GRPCCodes, c)
			}
		}
		// The gRPC retries read the HTTP conditions for per-try timeouts
		// only: an attempt that outlives its per-try timeout is retried
		// (or hedged) under 5xx, gateway-error and reset, as Envoy retries
		// it. With only HTTP conditions no status is retried (an empty,
		// non-nil GRPCCodes), but such a per-try timeout is.
		p.GRPC.RetryOn = p.HTTP.RetryOn
		if len(p.GRPC.GRPCCodes) == 0 && rp.PerTryTimeout > 0 &&
			p.HTTP.RetryOn&(resilience.Retry5xx|resilience.RetryGatewayError|resilience.RetryReset) != 0 {
			p.GRPC.GRPCCodes = []codes.Code{}
		}
		if p.GRPC.GRPCCodes != nil {
			p.GRPC.NumRetries = numRetries(rp)
			// The per-try timeout, which grpc-go ignores, applies as on HTTP.
			p.GRPC.PerTryTimeout = rp.PerTryTimeout
			p.GRPC.BaseInterval, p.GRPC.MaxInterval = rp.BaseInterval, rp.MaxInterval
			// As in grpc-go, a route's retry policy covers every method:
			// the control plane declared the calls safe to retry.
			p.GRPC.RetryNonIdempotent = true
		}
	}
	p.HTTPHedge = Hedge(a.HedgePolicy, p.HTTP)
	p.GRPCHedge = Hedge(a.HedgePolicy, p.GRPC)
	p.Mutates = a.PrefixRewrite != "" || a.RegexRewrite != nil || a.HostRewrite != "" ||
		len(a.RequestHeadersToAdd) > 0 || len(a.RequestHeadersToRemove) > 0
	return p
}

// Timeout is a route's bound on a request, of either protocol, as Envoy
// applies it: the route's timeout and its max_stream_duration (translation
// keeps the shorter) or, when the route sets no max_stream_duration, the
// listener's; the shorter one set wins and a zero disables only its own
// bound. set is false when none is set.
func Timeout(a *xds.RouteAction, listener time.Duration) (d time.Duration, set bool) {
	d, set = a.Timeout, a.HasTimeout
	if a.HasMaxStreamDuration || listener <= 0 {
		return d, set
	}
	if !set || d == 0 || listener < d {
		return listener, true
	}
	return d, true
}

func numRetries(rp *xds.RetryPolicy) int {
	if rp.NumRetries == 0 {
		return 1 // Envoy's and grpc-go's default when retry_on is set
	}
	return int(rp.NumRetries)
}

// grpcRetryCodes are the retry_on names that are gRPC status codes, the
// ones grpc-go retries on (gRFC A44).
var grpcRetryCodes = map[string]codes.Code{
	"cancelled":          codes.Canceled,
	"deadline-exceeded":  codes.DeadlineExceeded,
	"internal":           codes.Internal,
	"resource-exhausted": codes.ResourceExhausted,
	"unavailable":        codes.Unavailable,
}

// HTTPRetryOn reads a route's retry_on for the HTTP path. istiod's default
// policy mixes HTTP and gRPC conditions ("connect-failure,refused-stream,
// unavailable,cancelled,retriable-status-codes"); Envoy applies the gRPC
// ones only to gRPC responses, so they and other names Weft does not know
// are skipped rather than costing the route its whole retry policy.
// reset-before-request is read as the failures that happen before a
// request is sent.
func HTTPRetryOn(names []string) resilience.RetryOn {
	var on resilience.RetryOn
	for _, n := range names {
		if c, err := resilience.ParseRetryOn(n); err == nil {
			on |= c
		} else if strings.TrimSpace(n) == "reset-before-request" {
			on |= resilience.RetryConnectFailure | resilience.RetryRefusedStream
		}
	}
	return on
}

// Hedge turns a route's hedge_policy into Weft's, next to the route's
// retry policy p: with hedge_on_per_try_timeout, the per-try timeout is
// the hedging delay and the attempt that timed out keeps running; the
// retry policy's attempts bound the attempts in all. Nil when the route
// does not hedge.
func Hedge(hp *xds.HedgePolicy, p resilience.RetryPolicy) *resilience.HedgePolicy {
	if hp == nil {
		return nil
	}
	h := &resilience.HedgePolicy{
		InitialAttempts:      int(min(hp.InitialRequests, resilience.MaxAttempts)),
		AdditionalChance:     hp.AdditionalRequestChance,
		RetryOn:              p.RetryOn,
		RetriableStatusCodes: p.RetriableStatusCodes,
		// Without hedge_on_per_try_timeout only the initial attempts race;
		// a later attempt follows a failure.
		Delay: 24 * time.Hour,
	}
	if h.RetryOn == 0 {
		h.RetryOn = resilience.DefaultRetryOn
	}
	attempts := 1
	if p.NumRetries > 0 {
		attempts = min(p.NumRetries+1, resilience.MaxAttempts)
	}
	initial := h.InitialAttempts
	if h.AdditionalChance > 0 {
		initial++
	}
	h.MaxAttempts = max(attempts, initial)
	if hp.HedgeOnPerTryTimeout && p.PerTryTimeout > 0 {
		h.Delay = p.PerTryTimeout
	} else if h.InitialAttempts <= 1 && hp.AdditionalRequestChance == 0 {
		return nil // nothing would ever race
	}
	if h.MaxAttempts > resilience.MaxAttempts {
		h.MaxAttempts = resilience.MaxAttempts
	}
	return h
}

// Cluster chooses the cluster of one request: the route's single cluster,
// or one of its weighted clusters by weight.
func (p *Plan) Cluster() string { return PickCluster(&p.Route.Action) }

// PickCluster chooses a cluster of a route action: its single cluster, or
// one of its weighted clusters by weight.
func PickCluster(a *xds.RouteAction) string {
	ws := a.WeightedClusters
	if len(ws) == 0 {
		return a.Cluster
	}
	n := rand.Uint64N(a.TotalWeight)
	for _, w := range ws {
		if n < uint64(w.Weight) {
			return w.Name
		}
		n -= uint64(w.Weight)
	}
	return ws[len(ws)-1].Name
}

// Client is what hash policies may hash about the client itself rather
// than the request. A zero Client hashes nothing.
type Client struct {
	// ID is the client's own random hash, for filter_state hash policies
	// on "io.grpc.channel_id": a gRPC channel's, as grpc-go draws one per
	// channel, or an HTTP transport's, the HTTP client's counterpart, so
	// that all of one client's requests stick to one endpoint.
	ID uint64
	// SourceIP is xxhash64 of the source IP's text, as Envoy hashes it,
	// for connection_properties.source_ip; valid when HasSourceIP.
	SourceIP    uint64
	HasSourceIP bool
}

// NewClient returns a Client with a random ID, and sourceIP (an IP
// address as text, or "" for none) for source-IP policies.
func NewClient(sourceIP string) Client {
	c := Client{ID: rand.Uint64()}
	if sourceIP != "" {
		c.SourceIP, c.HasSourceIP = xxhash.Sum64String(sourceIP), true
	}
	return c
}

// HTTPHash computes the route's hash policies over an HTTP request sent
// by client c, for consistent-hashing balancers, combining them as Envoy
// does.
func HTTPHash(req *http.Request, policies []xds.HashPolicy, c Client) (uint64, bool) {
	var hash uint64
	found := false
	for _, p := range policies {
		var h uint64
		switch p.Kind {
		case xds.HashHeader:
			vs := headerValues(req.Header, p.Name)
			if len(vs) == 0 {
				continue
			}
			h = hashValue(p, strings.Join(vs, ","))
		case xds.HashCookie:
			ck, err := req.Cookie(p.Name)
			if err != nil {
				continue
			}
			h = hashValue(p, ck.Value)
		case xds.HashQueryParam:
			q := req.URL.Query()
			if !q.Has(p.Name) {
				continue
			}
			h = hashValue(p, q.Get(p.Name))
		case xds.HashChannelID:
			h = c.ID
		case xds.HashSourceIP:
			if !c.HasSourceIP {
				continue
			}
			h = c.SourceIP
		default:
			continue
		}
		hash = combine(hash, h)
		found = true
		if p.Terminal {
			break
		}
	}
	return hash, found
}

// GRPCHash hashes a gRPC call from client c by the route's hash policies,
// combined as HTTPHash combines them: headers from the call's metadata
// (gRFC A42), the channel id, as grpc-go does, and the source IP, which
// grpc-go ignores but Weft's HTTP path hashes, so that a route means the
// same on both. Cookies and query parameters have nothing to hash on a
// gRPC call, and grpc-go ignores them too.
func GRPCHash(hdr http.Header, policies []xds.HashPolicy, c Client) (uint64, bool) {
	var hash uint64
	found := false
	for _, p := range policies {
		var h uint64
		switch p.Kind {
		case xds.HashHeader:
			vs := headerValues(hdr, p.Name)
			if len(vs) == 0 {
				continue
			}
			h = hashValue(p, strings.Join(vs, ","))
		case xds.HashChannelID:
			h = c.ID
		case xds.HashSourceIP:
			if !c.HasSourceIP {
				continue
			}
			h = c.SourceIP
		default:
			continue
		}
		hash = combine(hash, h)
		found = true
		if p.Terminal {
			break
		}
	}
	return hash, found
}

// headerValues is h.Values(name) without canonicalizing a name that
// already is canonical, as translation makes hash policies' header names:
// canonicalizing a lower-case name, as control planes write them, costs
// an allocation per request.
func headerValues(h http.Header, name string) []string {
	if vs, ok := h[name]; ok {
		return vs
	}
	return h.Values(name)
}

func hashValue(p xds.HashPolicy, v string) uint64 {
	if p.Rewrite != nil {
		v = p.Rewrite.Pattern.ReplaceAllString(v, p.Rewrite.Substitution)
	}
	return xxhash.Sum64String(v)
}

// combine folds the next policy's hash into the running one, as Envoy does.
func combine(hash, h uint64) uint64 { return (hash<<1 | hash>>63) ^ h }

// Rewrite applies the route's rewrites and request header changes to out,
// the outgoing copy of a request, whose URL it may change and whose
// Header it may replace but not modify.
//
// Path rewrites work on the path as sent (escaped), as Envoy's do and as
// routes are matched: "/old/a%2Fb" under prefix_rewrite "/new" becomes
// "/new/a%2Fb", not "/new/a/b". A prefix_rewrite replaces what the route
// matched: the prefix (in any case when the match ignores case) or, for an
// exact path match, the whole path.
func (p *Plan) Rewrite(out *http.Request) {
	a, r := &p.Route.Action, p.Route
	if a.PrefixRewrite != "" || a.RegexRewrite != nil {
		path := out.URL.EscapedPath()
		if a.PrefixRewrite != "" {
			switch m := &r.Match; m.Kind {
			case xds.PathPrefix:
				if n := len(m.Path); len(path) >= n && (path[:n] == m.Path || !m.CaseSensitive && strings.EqualFold(path[:n], m.Path)) {
					path = a.PrefixRewrite + path[n:]
				}
			case xds.PathExact:
				path = a.PrefixRewrite
			}
		}
		if a.RegexRewrite != nil {
			path = a.RegexRewrite.Pattern.ReplaceAllString(path, a.RegexRewrite.Substitution)
		}
		setEscapedPath(out.URL, path)
	}
	if a.HostRewrite != "" {
		out.Host = a.HostRewrite
	}
	if len(a.RequestHeadersToAdd)+len(a.RequestHeadersToRemove) > 0 {
		out.Header = out.Header.Clone()
		if out.Header == nil {
			out.Header = http.Header{}
		}
		ApplyHeaders(out.Header, a.RequestHeadersToAdd, a.RequestHeadersToRemove)
	}
}

// setEscapedPath sets u's path from its escaped form, keeping the escapes
// (an encoded slash stays one) when they are valid.
func setEscapedPath(u *url.URL, escaped string) {
	if p, err := url.PathUnescape(escaped); err == nil {
		u.Path, u.RawPath = p, escaped
		if u.EscapedPath() != escaped {
			u.RawPath = "" // escapes url would write the same way
		}
		return
	}
	u.Path, u.RawPath = escaped, ""
}

// ApplyHeaders removes, then adds or sets, header values.
func ApplyHeaders(h http.Header, add []xds.HeaderValueOption, remove []string) {
	for _, name := range remove {
		h.Del(name)
	}
	for _, o := range add {
		if o.Append {
			h.Add(o.Name, o.Value)
		} else {
			h.Set(o.Name, o.Value)
		}
	}
}
