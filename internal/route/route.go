// Package route turns an xDS route into what the data path applies, once
// per route version, for HTTP requests and gRPC calls alike: the cluster a
// request goes to, its timeout, retry and hedge policies, its hash for
// consistent-hashing balancers, its rewrites and header changes, and the
// fault policy (internal/fault) of each cluster it may choose.
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

	"github.com/weftmesh/weft/internal/fault"
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
	// MutatesResponse is set when the route, or one of its weighted
	// clusters, changes response headers (see ResponseHeaders).
	MutatesResponse bool

	// faults is the fault policy of a single-cluster route, or of each
	// weighted cluster; nil entries inject nothing.
	faults []*fault.Policy
}

// New plans r. listenerTimeout is the listener's max_stream_duration (0:
// none), the timeout of a route that sets none; faults are the listener's
// fault filters, which the route's overrides refine. Where the route is
// silent, Envoy's defaults hold on HTTP: a 15 s route timeout covering all
// attempts, and no retries.
func New(r *xds.Route, listenerTimeout time.Duration, faults ...fault.Filter) *Plan {
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
	p.Mutates = a.PrefixRewrite != "" || a.RegexRewrite != nil || a.HostRewrite != "" || a.HostRewriteHeader != "" ||
		a.HostRewritePathRegex != nil || len(a.RequestHeaders) > 0 ||
		len(a.RequestHeadersToAdd) > 0 || len(a.RequestHeadersToRemove) > 0
	for _, w := range a.WeightedClusters {
		p.Mutates = p.Mutates || w.HostRewrite != "" || !w.RequestHeaders.Empty()
	}
	p.MutatesResponse = hasResponseHeaders(a)
	if len(faults) > 0 {
		if len(a.WeightedClusters) == 0 {
			if pol := fault.Resolve(faults, r, nil); pol != nil {
				p.faults = []*fault.Policy{pol}
			}
		} else {
			some := false
			p.faults = make([]*fault.Policy, len(a.WeightedClusters))
			for i := range a.WeightedClusters {
				p.faults[i] = fault.Resolve(faults, r, &a.WeightedClusters[i])
				some = some || p.faults[i] != nil
			}
			if !some {
				p.faults = nil
			}
		}
	}
	return p
}

// PickCluster chooses the cluster of one request, as [PickCluster] does,
// and returns the fault policy that applies to the request on its way
// there (nil: none).
func (p *Plan) PickCluster() (string, *fault.Policy) {
	a := &p.Route.Action
	name, i := pickCluster(a)
	if p.faults == nil {
		return name, nil
	}
	if i < 0 {
		i = 0
	}
	return name, p.faults[i]
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
	name, _ := pickCluster(a)
	return name
}

// pickCluster is PickCluster that also returns the index of the weighted
// cluster chosen, -1 for a single cluster.
func pickCluster(a *xds.RouteAction) (string, int) {
	ws := a.WeightedClusters
	if len(ws) == 0 {
		return a.Cluster, -1
	}
	n := rand.Uint64N(a.TotalWeight)
	for i, w := range ws {
		if n < uint64(w.Weight) {
			return w.Name, i
		}
		n -= uint64(w.Weight)
	}
	return ws[len(ws)-1].Name, len(ws) - 1
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
// the outgoing copy of a request to cluster, whose URL it may change and
// whose Header it may replace but not modify.
//
// Path rewrites work on the path as sent (escaped), as Envoy's do and as
// routes are matched: "/old/a%2Fb" under prefix_rewrite "/new" becomes
// "/new/a%2Fb", not "/new/a/b". A prefix_rewrite replaces what the route
// matched: the prefix (in any case when the match ignores case) or, for an
// exact path match, the whole path.
//
// Header changes follow Envoy's order: the weighted cluster's own first,
// then the route's levels (see xds.RouteAction.RequestHeaders), each level
// removing before it adds. The Host is rewritten after them, as Envoy's
// route entry does: the weighted cluster's host_rewrite_literal, replaced
// by the route's host rewrite when it has one (host_rewrite_header reads
// the header as changed; host_rewrite_path_regex the path before its
// rewrite, without the query).
func (p *Plan) Rewrite(out *http.Request, cluster string) {
	a, r := &p.Route.Action, p.Route
	var origPath string // as sent, before the rewrite: host_rewrite_path_regex reads it
	if a.PrefixRewrite != "" || a.RegexRewrite != nil || a.HostRewritePathRegex != nil {
		origPath = out.URL.EscapedPath()
	}
	if a.PrefixRewrite != "" || a.RegexRewrite != nil {
		path := origPath
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
	var wc *xds.WeightedCluster
	for i := range a.WeightedClusters {
		if a.WeightedClusters[i].Name == cluster {
			wc = &a.WeightedClusters[i]
			break
		}
	}
	if len(a.RequestHeaders) > 0 || wc != nil && !wc.RequestHeaders.Empty() {
		h := out.Header.Clone()
		if h == nil {
			h = http.Header{}
		}
		if wc != nil {
			ApplyHeaders(h, wc.RequestHeaders)
		}
		for _, m := range a.RequestHeaders {
			ApplyHeaders(h, m)
		}
		out.Header = h
	}
	host := ""
	if wc != nil {
		host = wc.HostRewrite
	}
	switch {
	case a.HostRewrite != "":
		host = a.HostRewrite
	case a.HostRewriteHeader != "":
		if v := out.Header.Get(a.HostRewriteHeader); v != "" {
			host = v
		}
	case a.HostRewritePathRegex != nil:
		host = a.HostRewritePathRegex.Pattern.ReplaceAllString(origPath, a.HostRewritePathRegex.Substitution)
	}
	if host != "" {
		out.Host = host
	}
}

// ResponseHeaders applies a route's response header changes to h, the
// header of a response from cluster ("" for a local reply): the weighted
// cluster's own first, then the route's levels, as Envoy does.
func ResponseHeaders(h http.Header, a *xds.RouteAction, cluster string) {
	if cluster != "" && len(a.WeightedClusters) > 0 {
		for i := range a.WeightedClusters {
			if w := &a.WeightedClusters[i]; w.Name == cluster {
				ApplyHeaders(h, w.ResponseHeaders)
				break
			}
		}
	}
	for _, m := range a.ResponseHeaders {
		ApplyHeaders(h, m)
	}
}

// hasResponseHeaders reports whether ResponseHeaders may change anything;
// New keeps it as Plan.MutatesResponse.
func hasResponseHeaders(a *xds.RouteAction) bool {
	if len(a.ResponseHeaders) > 0 {
		return true
	}
	for _, w := range a.WeightedClusters {
		if !w.ResponseHeaders.Empty() {
			return true
		}
	}
	return false
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

// ApplyHeaders applies one level's header changes to h as Envoy's header
// parser does: the removals first, then each addition by its append
// action; an empty value is added only when the option keeps empty
// values.
func ApplyHeaders(h http.Header, m xds.HeaderMutation) {
	for _, name := range m.Remove {
		h.Del(name)
	}
	for _, o := range m.Add {
		if o.Value == "" && !o.KeepEmpty {
			continue
		}
		switch o.Action {
		case xds.AppendIfExistsOrAdd:
			h.Add(o.Name, o.Value)
		case xds.AddIfAbsent:
			if len(h.Values(o.Name)) == 0 {
				h.Add(o.Name, o.Value)
			}
		case xds.OverwriteIfExists:
			if len(h.Values(o.Name)) > 0 {
				h.Set(o.Name, o.Value)
			}
		case xds.OverwriteIfExistsOrAdd:
			h.Set(o.Name, o.Value)
		}
	}
}

// MirrorSampled draws whether a request is mirrored by m: each policy
// draws on its own, as Envoy's runtime_fraction does per policy.
func MirrorSampled(m *xds.MirrorPolicy) bool {
	return m.FractionPerMillion >= 1_000_000 || rand.Uint32N(1_000_000) < m.FractionPerMillion
}

// MirrorHost is the Host a mirrored copy carries: host_rewrite_literal
// when set, the request's Host unchanged under
// disable_shadow_host_suffix_append, and otherwise, as Envoy's shadow
// writer does, the host with "-shadow" appended before any port
// ("orders:8080" becomes "orders-shadow:8080").
func MirrorHost(m *xds.MirrorPolicy, host string) string {
	switch {
	case m.HostRewrite != "":
		return m.HostRewrite
	case m.KeepHost || host == "":
		return host
	}
	end := len(host)
	if strings.HasPrefix(host, "[") {
		if i := strings.LastIndex(host, "]:"); i >= 0 {
			end = i + 1
		}
	} else if i := strings.LastIndexByte(host, ':'); i >= 0 {
		end = i
	}
	return host[:end] + "-shadow" + host[end:]
}
