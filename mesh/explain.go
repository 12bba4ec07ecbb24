package mesh

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/weftmesh/weft/internal/route"
	"github.com/weftmesh/weft/internal/xds"
	"github.com/weftmesh/weft/resilience"
)

// /explain answers what the mesh would do with a request, without sending
// it: the listener, virtual host and route that match and why the routes
// before did not, the clusters and their state, the policies that would
// apply and the identity the server must prove. It reads the same state
// and calls the same matcher (xds.RouteConfig.Explain, which shares
// Match's code) as the data path.

// Explanation is /explain's answer.
type Explanation struct {
	Request ExplainRequest `json:"request"`
	// Source is where the mesh learns about the host: "xds", "static"
	// (WEFT_ENDPOINTS), "dns" (WEFT_DNS) or "passthrough" (not a mesh
	// service: the request would leave untouched).
	Source      string `json:"source"`
	Passthrough bool   `json:"passthrough"`
	// Reason says why the request passes through, or fails before any
	// route (the listener's error).
	Reason string `json:"reason,omitempty"`

	Listener    string              `json:"listener,omitempty"`
	RouteConfig string              `json:"route_config,omitempty"`
	VirtualHost *ExplainVirtualHost `json:"virtual_host,omitempty"`
	// Routes are the routes tried, in order, each with why it did not
	// match; the last one is the route that matched, when one did.
	Routes []ExplainRoute `json:"routes,omitempty"`
	// Route is the route that matched; nil when none did, and then
	// NoRoute says what the request would get.
	Route   *ExplainRoute `json:"route,omitempty"`
	NoRoute string        `json:"no_route,omitempty"`

	// Clusters are the route's targets with their weights (one with
	// weight 0 for a single cluster), their policy and endpoints.
	Clusters []ExplainCluster `json:"clusters,omitempty"`
	Timeout  string           `json:"timeout,omitempty"`
	Retry    *ExplainRetry    `json:"retry,omitempty"`
	Hedge    *ExplainHedge    `json:"hedge,omitempty"`
	// HashPolicy lists what consistent-hashing balancers hash, in order.
	HashPolicy []string `json:"hash_policy,omitempty"`
	// Session is the stateful session (cookie affinity) in force.
	Session string `json:"session,omitempty"`
}

// ExplainRequest echoes the request explained.
type ExplainRequest struct {
	Protocol  string              `json:"protocol"`
	Method    string              `json:"method"`
	Authority string              `json:"authority"`
	Path      string              `json:"path"`
	Query     string              `json:"query,omitempty"`
	Headers   map[string][]string `json:"headers,omitempty"`
}

// ExplainVirtualHost is the virtual host the authority selected.
type ExplainVirtualHost struct {
	Name    string   `json:"name"`
	Domains []string `json:"domains"`
}

// ExplainRoute is one route and what it made of the request.
type ExplainRoute struct {
	Name    string `json:"name,omitempty"`
	Match   string `json:"match"`
	Matched bool   `json:"matched"`
	// Failed is the kind of condition that failed: "path", "header",
	// "query" or "fraction"; Reason says it in words.
	Failed string `json:"failed,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Action is "forward", "redirect", "direct_response",
	// "non_forwarding" or "unsupported".
	Action string `json:"action,omitempty"`
}

// ExplainCluster is a cluster a request may go to.
type ExplainCluster struct {
	Name    string  `json:"name"`
	Weight  uint32  `json:"weight,omitempty"`
	Percent float64 `json:"percent"`
	// Discovery is EDS, LOGICAL_DNS or STATIC for xDS clusters, static
	// or dns for the mesh's own.
	Discovery        string         `json:"discovery,omitempty"`
	LBPolicy         string         `json:"lb_policy"`
	CircuitBreakers  map[string]any `json:"circuit_breakers"`
	OutlierDetection map[string]any `json:"outlier_detection"`
	// MTLS says how the connection is secured and which server
	// identities are accepted.
	MTLS      ExplainMTLS      `json:"mtls"`
	Endpoints []EndpointStatus `json:"endpoints"`
	Error     string           `json:"error,omitempty"`
}

// ExplainMTLS is the transport security of a cluster.
type ExplainMTLS struct {
	// Mode is "mutual TLS" or "plaintext", or "refused" when the cluster
	// asks for TLS this mesh cannot give.
	Mode string `json:"mode"`
	// ServerIdentities are the SAN matchers the server's SPIFFE ID must
	// meet (any one of them).
	ServerIdentities []string `json:"server_identities,omitempty"`
	Error            string   `json:"error,omitempty"`
}

// ExplainRetry is the retry policy in force.
type ExplainRetry struct {
	NumRetries    int      `json:"num_retries"`
	RetryOn       string   `json:"retry_on,omitempty"`
	GRPCCodes     []string `json:"grpc_codes,omitempty"`
	PerTryTimeout string   `json:"per_try_timeout,omitempty"`
	StatusCodes   []int    `json:"retriable_status_codes,omitempty"`
}

// ExplainHedge is the hedging policy in force.
type ExplainHedge struct {
	InitialAttempts  int     `json:"initial_attempts"`
	MaxAttempts      int     `json:"max_attempts"`
	AdditionalChance float64 `json:"additional_chance,omitempty"`
	// Delay is the wait before a further attempt; "after a failure" when
	// only the initial attempts race.
	Delay string `json:"delay"`
}

// explainWait bounds how long /explain waits for the control plane to
// answer for a host or cluster it was not following yet.
const explainWait = 5 * time.Second

// serveExplain answers /explain?url=http://orders:8080/items&header=k:v
// and /explain?grpc=orders:50051/pkg.Svc/Method&header=k:v.
func (m *Mesh) serveExplain(w http.ResponseWriter, r *http.Request) {
	req, err := parseExplain(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), explainWait)
	defer cancel()
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(m.explain(ctx, req))
}

// parseExplain reads /explain's query into the request it describes.
func parseExplain(q url.Values) (ExplainRequest, error) {
	var er ExplainRequest
	for k := range q {
		switch k {
		case "url", "grpc", "header", "method":
		default:
			return er, fmt.Errorf("explain: unknown parameter %q (want url or grpc, header, method)", k)
		}
	}
	switch u, g := q.Get("url"), q.Get("grpc"); {
	case u != "" && g != "":
		return er, fmt.Errorf("explain: give url or grpc, not both")
	case u != "":
		pu, err := url.Parse(u)
		if err != nil || pu.Host == "" || (pu.Scheme != "http" && pu.Scheme != "https") {
			return er, fmt.Errorf("explain: url=%q: want an absolute http URL such as http://orders:8080/items", u)
		}
		er.Protocol, er.Method, er.Authority, er.Path, er.Query = "http", http.MethodGet, pu.Host, pu.EscapedPath(), pu.RawQuery
		if er.Path == "" {
			er.Path = "/"
		}
		if v := q.Get("method"); v != "" {
			er.Method = strings.ToUpper(v)
		}
	case g != "":
		authority, method, ok := strings.Cut(g, "/")
		if !ok || authority == "" || strings.Count(method, "/") != 1 || strings.HasPrefix(method, "/") || strings.HasSuffix(method, "/") {
			return er, fmt.Errorf("explain: grpc=%q: want authority/package.Service/Method, such as orders:50051/pkg.Orders/Get", g)
		}
		if q.Has("method") {
			return er, fmt.Errorf("explain: method= is for url=; a gRPC call is a POST of its method path")
		}
		er.Protocol, er.Method, er.Authority, er.Path = "grpc", "/"+method, authority, "/"+method
	default:
		return er, fmt.Errorf("explain: want url=http://service:port/path or grpc=service:port/package.Service/Method")
	}
	for _, h := range q["header"] {
		k, v, ok := strings.Cut(h, ":")
		if !ok || strings.TrimSpace(k) == "" {
			return er, fmt.Errorf("explain: header=%q: want name:value", h)
		}
		if er.Headers == nil {
			er.Headers = map[string][]string{}
		}
		k = strings.ToLower(strings.TrimSpace(k))
		er.Headers[k] = append(er.Headers[k], strings.TrimSpace(v))
	}
	return er, nil
}

// matchRequest is the request the route matcher sees, built as the data
// path builds it (xds.RequestFromHTTP, xds.RequestFromGRPC), with the
// highest fraction draw so that a runtime fraction is reported as one.
func (er *ExplainRequest) matchRequest() xds.Request {
	var req xds.Request
	if er.Protocol == "grpc" {
		md := metadata.MD{}
		for k, vs := range er.Headers {
			md[k] = vs
		}
		req, _ = xds.RequestFromGRPC(er.Path, md, false)
	} else {
		hr := &http.Request{Method: er.Method, URL: &url.URL{Path: er.Path, RawQuery: er.Query}, Header: http.Header{}}
		if p, err := url.PathUnescape(er.Path); err == nil {
			hr.URL.Path, hr.URL.RawPath = p, er.Path
		}
		for k, vs := range er.Headers {
			hr.Header[http.CanonicalHeaderKey(k)] = vs
		}
		req = xds.RequestFromHTTP(hr)
	}
	req.FractionSample = xds.ExplainFractionSample
	return req
}

func (m *Mesh) explain(ctx context.Context, er ExplainRequest) *Explanation {
	e := &Explanation{Request: er}
	if svc, isMesh, err := m.lookup(er.Authority); isMesh {
		e.Source = "dns"
		if m.static != nil && m.static.Has(svc.nameOr(er.Authority)) {
			e.Source = "static"
		}
		if err != nil {
			e.Reason = err.Error()
			return e
		}
		m.explainMeshService(e, svc)
		return e
	}
	if m.xds == nil {
		e.Source, e.Passthrough = "passthrough", true
		e.Reason = "not a mesh service (no WEFT_ENDPOINTS or WEFT_DNS entry, and no control plane): the request leaves as sent"
		return e
	}
	m.explainXDS(ctx, e)
	return e
}

// nameOr is the service's name, or def for a nil service.
func (s *service) nameOr(def string) string {
	if s == nil {
		return def
	}
	return s.name
}

// explainMeshService explains a service outside xDS: the mesh's own
// policies hold.
func (m *Mesh) explainMeshService(e *Explanation, svc *service) {
	c := m.explainCluster(svc, nil)
	c.Discovery, c.LBPolicy, c.Percent = e.Source, m.cfg.lbPolicy, 100
	c.CircuitBreakers = explainLimits(svc)
	if m.serviceLimits().MaxRetries <= 0 {
		// Without a max_retries of their own, mesh services bound
		// retries by a budget instead.
		c.CircuitBreakers["max_retries"] = "retry budget (20% of requests + 10/s)"
	}
	e.Clusters = []ExplainCluster{c}
	p := m.cfg.retry
	if e.Request.Protocol == "grpc" {
		e.Timeout = timeoutString(p.Timeout, 0)
	} else {
		e.Timeout = timeoutString(p.Timeout, resilience.DefaultRouteTimeout)
	}
	e.Retry = explainRetry(p)
	e.Hedge = explainHedge(m.cfg.hedge)
}

// explainLimits is what svc's thresholds enforce: the counters the data
// path takes, not a second reading of the configuration.
func explainLimits(svc *service) map[string]any {
	out := map[string]any{}
	r := svc.res.Load()
	if r == nil || r.thresholds == nil {
		return out
	}
	l := r.thresholds.Limits()
	for _, x := range []struct {
		name string
		v    int64
	}{{resilience.ThresholdMaxRequests, l.MaxRequests}, {resilience.ThresholdMaxPendingRequests, l.MaxPendingRequests}, {resilience.ThresholdMaxRetries, l.MaxRetries}} {
		if x.v < 0 {
			out[x.name] = "unlimited"
		} else {
			out[x.name] = x.v
		}
	}
	return out
}

// explainXDS follows the host's listener, as a request would, and walks
// its routes.
func (m *Mesh) explainXDS(ctx context.Context, e *Explanation) {
	x := m.xds
	e.Source = "xds"
	h := x.host(e.Request.Authority)
	if h == nil {
		e.Passthrough, e.Source = true, "passthrough"
		e.Reason = fmt.Sprintf("the mesh follows %d hosts already, its bound; further unknown hosts pass through", maxXDSHosts)
		return
	}
	e.Listener = h.name
	if err := h.wait(ctx); err != nil {
		e.Reason = "no answer from the control plane yet: " + err.Error()
		return
	}
	st := h.state.Load()
	switch {
	case !st.exists:
		e.Passthrough, e.Source = true, "passthrough"
		e.Reason = fmt.Sprintf("the control plane has no listener %q: not a mesh service, the request leaves as sent", h.name)
		return
	case st.routes == nil:
		e.Reason = st.err.Error()
		return
	}
	e.RouteConfig = st.routes.ResourceName()
	req := e.Request.matchRequest()
	vh, verdicts, matched := st.routes.Explain(e.Request.Authority, &req)
	if vh == nil {
		e.NoRoute = fmt.Sprintf("no virtual host of %q has a domain matching %q: the request fails (%v)", e.RouteConfig, e.Request.Authority, ErrNoRoute)
		return
	}
	e.VirtualHost = &ExplainVirtualHost{Name: vh.Name, Domains: vh.Domains}
	for _, v := range verdicts {
		er := ExplainRoute{Name: v.Route.Name, Match: v.Route.Match.String(), Matched: v.Mismatch.Kind == xds.Matched, Reason: v.Reason}
		er.Failed = mismatchName(v.Mismatch.Kind)
		if er.Matched {
			er.Action = actionName(v.Route.Action.Kind)
		}
		e.Routes = append(e.Routes, er)
	}
	if matched == nil {
		e.NoRoute = fmt.Sprintf("no route of virtual host %q matches: the request fails (%v)", vh.Name, ErrNoRoute)
		if e.Request.Protocol == "grpc" {
			e.NoRoute = fmt.Sprintf("no route of virtual host %q matches: the call fails with UNAVAILABLE", vh.Name)
		}
		return
	}
	last := e.Routes[len(e.Routes)-1]
	e.Route = &last
	a := &matched.Action
	switch a.Kind {
	case xds.ActionForward:
	case xds.ActionRedirect, xds.ActionDirectResponse:
		if e.Request.Protocol == "grpc" {
			e.NoRoute = "the route answers in the process (" + last.Action + "), which fails a gRPC call with UNAVAILABLE, as in grpc-go"
		} else {
			e.NoRoute = "the route answers in the process (" + last.Action + "); no upstream is contacted"
		}
		return
	default:
		e.NoRoute = "the route's action is not one Weft forwards: the request fails"
		return
	}
	plan := st.plans[matched]
	if plan == nil {
		plan = &routePlan{Plan: route.New(matched, st.defaultTimeout)}
	}
	targets := a.WeightedClusters
	if len(targets) == 0 {
		targets = []xds.WeightedCluster{{Name: a.Cluster}}
	}
	for _, t := range targets {
		svc := x.cluster(t.Name)
		if svc == nil {
			continue // closing
		}
		select {
		case <-svc.ready:
		case <-ctx.Done():
		}
		c := m.explainCluster(svc, svc.cds.Load())
		c.Weight = t.Weight
		c.Percent = 100
		if a.TotalWeight > 0 && len(a.WeightedClusters) > 0 {
			c.Percent = float64(t.Weight) * 100 / float64(a.TotalWeight)
		}
		e.Clusters = append(e.Clusters, c)
	}
	p, hp := plan.HTTP, plan.HTTPHedge
	def := resilience.DefaultRouteTimeout
	if e.Request.Protocol == "grpc" {
		p, hp, def = plan.GRPC, plan.GRPCHedge, 0
	}
	e.Timeout = timeoutString(p.Timeout, def)
	e.Retry = explainRetry(p)
	e.Hedge = explainHedge(hp)
	for _, hpol := range a.HashPolicies {
		e.HashPolicy = append(e.HashPolicy, hashPolicyString(hpol))
	}
	if sc := xdsSession(h.session.Load(), matched); sc != nil {
		e.Session = fmt.Sprintf("cookie %q (path %s)", sc.Name, sc.Path)
	}
}

func mismatchName(k xds.MismatchKind) string {
	switch k {
	case xds.MismatchPath:
		return "path"
	case xds.MismatchHeader:
		return "header"
	case xds.MismatchQuery:
		return "query"
	case xds.MismatchFraction:
		return "fraction"
	}
	return ""
}

func actionName(k xds.ActionKind) string {
	switch k {
	case xds.ActionForward:
		return "forward"
	case xds.ActionNonForwarding:
		return "non_forwarding"
	case xds.ActionRedirect:
		return "redirect"
	case xds.ActionDirectResponse:
		return "direct_response"
	}
	return "unsupported"
}

// explainCluster is a cluster's policy and live state; c is its CDS
// resource, nil outside xDS.
func (m *Mesh) explainCluster(svc *service, c *xds.Cluster) ExplainCluster {
	out := ExplainCluster{Name: svc.name, Endpoints: []EndpointStatus{}}
	if p := svc.policy.Load(); p != nil {
		out.LBPolicy = p.name
	}
	if p := svc.lastErr.Load(); p != nil {
		out.Error = (*p).Error()
	}
	for _, ep := range svc.balancer().Endpoints() {
		out.Endpoints = append(out.Endpoints, EndpointStatus{Addr: ep.Addr, Weight: ep.EffectiveWeight(), Locality: ep.Locality.String(),
			Priority: ep.Priority, Health: endpointHealth(ep), InFlight: ep.InFlight(), Ejected: ep.Ejected()})
	}
	out.MTLS = ExplainMTLS{Mode: "plaintext"}
	if m.id != nil {
		out.MTLS = ExplainMTLS{Mode: "mutual TLS", ServerIdentities: []string{"any member of trust domain " + m.id.td.String()}}
	}
	if c == nil {
		return out
	}
	out.Discovery = c.Kind.String()
	cb := c.CircuitBreaker
	out.CircuitBreakers = explainLimits(svc)
	if cb.HasRetryBudget {
		out.CircuitBreakers["retry_budget"] = map[string]any{"budget_percent": cb.RetryBudget.BudgetPercent, "min_retry_concurrency": cb.RetryBudget.MinRetryConcurrency}
		delete(out.CircuitBreakers, "max_retries")
	}
	out.OutlierDetection = explainOutlier(c.OutlierDetection)
	if c.TLS != nil {
		out.MTLS = ExplainMTLS{Mode: "mutual TLS"}
		if up := svc.upstream.Load(); up != nil && up.err != nil {
			out.MTLS = ExplainMTLS{Mode: "refused", Error: up.err.Error()}
		}
		for _, s := range c.TLS.SANMatchers {
			out.MTLS.ServerIdentities = append(out.MTLS.ServerIdentities, xds.StringMatcherString(&s))
		}
		if len(out.MTLS.ServerIdentities) == 0 && m.id != nil {
			out.MTLS.ServerIdentities = []string{"any member of trust domain " + m.id.td.String()}
		}
	}
	return out
}

// timeoutString is a route timeout as /routes shows it: "off" when
// disabled, def when unset (0 there: none).
func timeoutString(d, def time.Duration) string {
	switch {
	case d < 0, d == 0 && def == 0:
		return "off"
	case d == 0:
		return def.String()
	}
	return d.String()
}

func explainRetry(p resilience.RetryPolicy) *ExplainRetry {
	if p.NumRetries <= 0 {
		return nil
	}
	r := &ExplainRetry{NumRetries: p.NumRetries, StatusCodes: p.RetriableStatusCodes}
	on := p.RetryOn
	if on == 0 && p.GRPCCodes == nil {
		on = resilience.DefaultRetryOn
	}
	if on != 0 {
		r.RetryOn = on.String()
	}
	for _, c := range p.GRPCCodes {
		r.GRPCCodes = append(r.GRPCCodes, c.String())
	}
	if p.PerTryTimeout > 0 {
		r.PerTryTimeout = p.PerTryTimeout.String()
	}
	return r
}

func explainHedge(h *resilience.HedgePolicy) *ExplainHedge {
	if h == nil {
		return nil
	}
	out := &ExplainHedge{InitialAttempts: max(h.InitialAttempts, 1), MaxAttempts: h.MaxAttempts, AdditionalChance: h.AdditionalChance}
	switch {
	case h.Delay >= 24*time.Hour:
		out.Delay = "after a failure"
	case h.Delay == 0:
		out.Delay = "p95 of recent latencies"
	default:
		out.Delay = h.Delay.String()
	}
	return out
}

func hashPolicyString(p xds.HashPolicy) string {
	var s string
	switch p.Kind {
	case xds.HashHeader:
		s = "header " + p.Name
	case xds.HashCookie:
		s = "cookie " + p.Name
	case xds.HashQueryParam:
		s = "query " + p.Name
	case xds.HashChannelID:
		s = "channel id"
	case xds.HashSourceIP:
		s = "source ip"
	}
	if p.Rewrite != nil {
		s += " rewritten " + strconv.Quote(p.Rewrite.Pattern.String()) + " → " + strconv.Quote(p.Rewrite.Substitution)
	}
	if p.Terminal {
		s += " (terminal)"
	}
	return s
}

// explainOutlier is a cluster's outlier detection with Envoy's field
// names; nil when the cluster has none.
func explainOutlier(od *xds.OutlierDetection) map[string]any {
	if od == nil {
		return nil
	}
	out := map[string]any{
		"interval": od.Interval.String(), "base_ejection_time": od.BaseEjectionTime.String(), "max_ejection_time": od.MaxEjectionTime.String(),
		"max_ejection_percent": od.MaxEjectionPercent, "consecutive_5xx": od.Consecutive5xx, "consecutive_gateway_failure": od.ConsecutiveGatewayFailure,
	}
	if sr := od.SuccessRate; sr != nil {
		out["success_rate"] = map[string]any{"stdev_factor": sr.StdevFactor, "enforcement_percentage": sr.EnforcementPercentage,
			"minimum_hosts": sr.MinimumHosts, "request_volume": sr.RequestVolume}
	}
	if fp := od.FailurePercentage; fp != nil {
		out["failure_percentage"] = map[string]any{"threshold": fp.Threshold, "enforcement_percentage": fp.EnforcementPercentage,
			"minimum_hosts": fp.MinimumHosts, "request_volume": fp.RequestVolume}
	}
	return out
}
