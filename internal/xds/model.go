package xds

import (
	"regexp"
	"time"

	"github.com/weftmesh/weft/internal/rbac"
	"github.com/weftmesh/weft/resolver"
)

// The model. Every type here is an immutable snapshot: the client builds a
// new value for each accepted resource version and never mutates one it has
// delivered, so the data path reads them from any goroutine without locks.

// ResourceType is one of the four xDS resource types the client watches.
// It is a value.
type ResourceType int

// The resource types, in the order LDS -> RDS -> CDS -> EDS a request
// flows through them.
const (
	ListenerType ResourceType = iota
	RouteConfigType
	ClusterType
	EndpointsType
	numTypes
)

// Type URLs of the v3 resources.
const (
	ListenerTypeURL    = "type.googleapis.com/envoy.config.listener.v3.Listener"
	RouteConfigTypeURL = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	ClusterTypeURL     = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EndpointsTypeURL   = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
)

// TypeURL returns the v3 type URL of t.
func (t ResourceType) TypeURL() string {
	switch t {
	case ListenerType:
		return ListenerTypeURL
	case RouteConfigType:
		return RouteConfigTypeURL
	case ClusterType:
		return ClusterTypeURL
	case EndpointsType:
		return EndpointsTypeURL
	}
	return ""
}

// String returns the xDS short name (LDS, RDS, CDS, EDS).
func (t ResourceType) String() string {
	switch t {
	case ListenerType:
		return "LDS"
	case RouteConfigType:
		return "RDS"
	case ClusterType:
		return "CDS"
	case EndpointsType:
		return "EDS"
	}
	return "unknown"
}

// allStateOfTheWorld reports whether a response of type t carries every
// subscribed resource, so that a missing one has been deleted (LDS and CDS).
func (t ResourceType) allStateOfTheWorld() bool { return t == ListenerType || t == ClusterType }

// Resource is a translated resource: *Listener, *RouteConfig, *Cluster or
// *Endpoints. Resources are immutable.
type Resource interface {
	// ResourceName is the xDS name the resource was delivered under.
	ResourceName() string
	// UnappliedFields lists, as dotted proto field paths, the fields the
	// resource sets that Weft does not apply.
	UnappliedFields() []string
}

// meta is what every resource carries besides its content.
type meta struct {
	Name string
	// Unapplied lists fields set in the resource that Weft ignores.
	Unapplied []string
}

// ResourceName implements Resource.
func (m *meta) ResourceName() string { return m.Name }

// UnappliedFields implements Resource.
func (m *meta) UnappliedFields() []string { return m.Unapplied }

func (m *meta) setUnapplied(f []string) { m.Unapplied = f }

// Listener is a client-side (API) Listener: it names the route
// configuration requests to it use, by RDS name or inline. A server-side
// (inbound) listener has Server set instead. Immutable once delivered; safe
// for concurrent reads.
type Listener struct {
	meta
	// Server is set for an inbound listener, and then the fields below
	// are unset.
	Server *ServerListener
	// RouteConfigName is the RDS resource to watch; "" when RouteConfig is
	// inline.
	RouteConfigName string
	RouteConfig     *RouteConfig
	// MaxStreamDuration is the HttpConnectionManager's default request
	// timeout (0 = none); a route's Timeout overrides it.
	MaxStreamDuration time.Duration
	// StatefulSession is the stateful session filter's cookie (gRFC A55),
	// nil when the filter is absent or has no session state.
	StatefulSession *SessionCookie
	// Faults are the fault injection filters (gRFC A33), in chain order.
	Faults []FaultFilter
}

// RouteConfig is a RouteConfiguration: virtual hosts chosen by Host. Immutable once
// delivered; safe for concurrent reads.
type RouteConfig struct {
	meta
	VirtualHosts []*VirtualHost
}

// VirtualHost is a set of domains and the ordered routes serving them.
type VirtualHost struct {
	Name    string
	Domains []string
	Routes  []*Route
	// domains precompiled for matching without allocations.
	domains []domainMatcher
}

// Route is one route: the first whose Match matches a request wins.
type Route struct {
	Name   string
	Match  RouteMatch
	Action RouteAction
	// Session is the route's StatefulSessionPerRoute; nil: the listener's.
	Session *RouteSession
	// FaultOverrides are the HTTPFault configs of the route's and its
	// virtual host's typed_per_filter_config, by filter name, the route's
	// winning; nil when neither has one.
	FaultOverrides map[string]*Fault
}

// PathMatchKind says how RouteMatch.Path is compared with a request path.
type PathMatchKind uint8

// Path match kinds.
const (
	PathPrefix PathMatchKind = iota
	PathExact
	PathRegex
)

// RouteMatch is a route's match criteria; all must hold.
type RouteMatch struct {
	Kind PathMatchKind
	// Path is the prefix or exact path, or the regex source for PathRegex.
	Path          string
	CaseSensitive bool
	Headers       []HeaderMatcher
	QueryParams   []QueryParamMatcher
	// FractionPerMillion, when HasFraction, is the share of requests (out
	// of 1,000,000) the route takes, drawn from Request.FractionSample.
	FractionPerMillion uint32
	HasFraction        bool

	regex *regexp.Regexp
}

// StringMatchKind is how a header or query value is compared; route and
// authorization matching share internal/rbac's.
type StringMatchKind = rbac.StringMatchKind

// String match kinds.
const (
	MatchExact    = rbac.MatchExact
	MatchPrefix   = rbac.MatchPrefix
	MatchSuffix   = rbac.MatchSuffix
	MatchContains = rbac.MatchContains
	MatchRegex    = rbac.MatchRegex
	MatchPresent  = rbac.MatchPresent
	MatchRange    = rbac.MatchRange
)

// HeaderMatcher matches one request header. Multiple values of a header are
// joined with "," before matching, as Envoy and grpc-go do. Routes, retry
// policies and RBAC share internal/rbac's.
type HeaderMatcher = rbac.HeaderMatcher

// QueryParamMatcher matches one query parameter. A parameter present
// several times matches when its first value matches.
type QueryParamMatcher struct {
	Name string
	// Kind is MatchExact, MatchPrefix, MatchSuffix, MatchContains,
	// MatchRegex or MatchPresent.
	Kind       StringMatchKind
	Value      string
	IgnoreCase bool

	regex *regexp.Regexp
}

// ActionKind is what a matched route does.
type ActionKind uint8

// Action kinds. A route whose action Weft does not implement is
// ActionUnsupported: it matches and fails the request, as grpc-go does,
// rather than letting a later route take the request.
const (
	ActionForward ActionKind = iota
	// ActionNonForwarding is the route action of inbound (server)
	// routes: the request is served here.
	ActionNonForwarding
	// ActionUnsupported is a route with an action Weft does not know
	// (filter_action, or none).
	ActionUnsupported
	// ActionRedirect answers with a redirect (RouteAction.Redirect); the
	// HTTP client answers it locally, gRPC fails the call as grpc-go does.
	ActionRedirect
	// ActionDirectResponse answers with a fixed status and body
	// (RouteAction.DirectResponse), as ActionRedirect.
	ActionDirectResponse
)

// Redirect is a route's redirect action (Envoy's RedirectAction). Empty
// fields keep the request's part of the URL.
type Redirect struct {
	// Scheme is scheme_redirect, or "https" for https_redirect.
	Scheme string
	// Host is host_redirect; it replaces the request's host and port.
	Host string
	// Port is port_redirect; 0 keeps the port.
	Port uint32
	// Path is path_redirect when HasPath; a query in it replaces the
	// request's and survives StripQuery.
	Path    string
	HasPath bool
	// PrefixRewrite replaces the matched prefix (the whole path for exact
	// and regex matches) when non-empty.
	PrefixRewrite string
	// RegexRewrite rewrites the path when non-nil; Substitution is in
	// Go's syntax (${1}), converted from Envoy's (\1).
	RegexRewrite *RegexRewrite
	// Code is the response status: 301 (the default), 302, 303, 307 or 308.
	Code       int
	StripQuery bool
}

// DirectResponse is a route's direct_response action.
type DirectResponse struct {
	Status int
	Body   []byte
}

// RouteAction is where and how a matched request is sent.
type RouteAction struct {
	Kind ActionKind
	// Redirect is set for ActionRedirect, DirectResponse for
	// ActionDirectResponse.
	Redirect       *Redirect
	DirectResponse *DirectResponse
	// Cluster is the single target; empty when WeightedClusters is set.
	Cluster          string
	WeightedClusters []WeightedCluster
	// TotalWeight is the sum of WeightedClusters' weights (> 0).
	TotalWeight uint64
	// Timeout is the request timeout: the shorter of the route's timeout
	// and max_stream_duration.max_stream_duration, a zero disabling
	// either; 0 means none, and HasTimeout false means the route set
	// neither (the listener's default holds).
	Timeout    time.Duration
	HasTimeout bool
	// HasMaxStreamDuration is true when the route sets
	// max_stream_duration.max_stream_duration, which then replaces the
	// listener's max_stream_duration; otherwise that one bounds the
	// request too, beside the route's timeout.
	HasMaxStreamDuration bool
	RetryPolicy          *RetryPolicy
	// HedgePolicy is the route's or its virtual host's hedge_policy; nil
	// for none.
	HedgePolicy  *HedgePolicy
	HashPolicies []HashPolicy

	PrefixRewrite string
	// RegexRewrite replaces the whole-path matches of Pattern with
	// Substitution when Pattern is non-nil.
	RegexRewrite *RegexRewrite
	// HostRewrite is host_rewrite_literal; HostRewriteHeader is
	// host_rewrite_header (the Host becomes that request header's value,
	// when the request has it); HostRewritePathRegex is
	// host_rewrite_path_regex (the Host becomes the path, without its
	// query, rewritten by it).
	HostRewrite          string
	HostRewriteHeader    string
	HostRewritePathRegex *RegexRewrite
	// AutoHostRewrite is auto_host_rewrite: the Host becomes the picked
	// endpoint's hostname, when it has one.
	AutoHostRewrite bool

	// The route's own header changes.
	RequestHeadersToAdd     []HeaderValueOption
	RequestHeadersToRemove  []string
	ResponseHeadersToAdd    []HeaderValueOption
	ResponseHeadersToRemove []string
	// RequestHeaders and ResponseHeaders are the header changes of every
	// level enclosing the route, its own included, in the order Envoy
	// evaluates them, each later level winning over an earlier one: the
	// route, its virtual host, then the route configuration, or the
	// other way round with most_specific_header_mutations_wins. A
	// weighted cluster's own come before all of them.
	RequestHeaders  []HeaderMutation
	ResponseHeaders []HeaderMutation

	// MirrorPolicies are the route's request_mirror_policies or, when it
	// has none, its virtual host's or, failing those, its route
	// configuration's: the most specific non-empty list, not merged.
	MirrorPolicies []MirrorPolicy
}

// WeightedCluster is one target of a weighted split.
type WeightedCluster struct {
	Name   string
	Weight uint32
	// FaultOverrides are the cluster's own HTTPFault overrides, by
	// filter name; they beat the route's.
	FaultOverrides map[string]*Fault
	// RequestHeaders and ResponseHeaders are the cluster's own header
	// changes, applied before the route's levels when it is chosen.
	RequestHeaders  HeaderMutation
	ResponseHeaders HeaderMutation
	// HostRewrite is the cluster's host_rewrite_literal; it wins over
	// the route's host rewrite.
	HostRewrite string
}

// RetryPolicy is a route's retry policy with grpc-go's defaults applied.
type RetryPolicy struct {
	// RetryOn is retry_on split on commas, as written.
	RetryOn              []string
	NumRetries           uint32
	PerTryTimeout        time.Duration
	BaseInterval         time.Duration
	MaxInterval          time.Duration
	RetriableStatusCodes []uint32
	// ResetHeaders and MaxResetInterval are rate_limited_retry_back_off:
	// headers whose value, when a response carries one, replaces the
	// back-off (values above MaxResetInterval are ignored).
	ResetHeaders     []ResetHeader
	MaxResetInterval time.Duration
	// RetriableRequestHeaders, when set, limit retries to requests that
	// match one of them.
	RetriableRequestHeaders []HeaderMatcher
	// PreviousHosts is the previous_hosts retry host predicate. Weft's
	// retries avoid the endpoints already tried whether it is set or not.
	PreviousHosts bool
}

// HashPolicyKind is what a hash policy hashes.
type HashPolicyKind uint8

// Hash policy kinds.
const (
	HashHeader HashPolicyKind = iota
	HashChannelID
	HashSourceIP
	HashCookie
	HashQueryParam
)

// HashPolicy is one entry of a route's hash_policy.
type HashPolicy struct {
	Kind HashPolicyKind
	// Name is the header (in canonical form), cookie or query parameter
	// name.
	Name     string
	Terminal bool
	// Rewrite, when non-nil, rewrites the header value before hashing.
	Rewrite *RegexRewrite
}

// RegexRewrite is a RegexMatchAndSubstitute.
type RegexRewrite struct {
	Pattern      *regexp.Regexp
	Substitution string
}

// AppendAction is how a HeaderValueOption meets a header already present
// (HeaderValueOption.append_action in Envoy).
type AppendAction uint8

// Append actions.
const (
	// AppendIfExistsOrAdd adds the value beside any already there.
	AppendIfExistsOrAdd AppendAction = iota
	// AddIfAbsent adds the value only when the header is absent.
	AddIfAbsent
	// OverwriteIfExistsOrAdd replaces any values with this one.
	OverwriteIfExistsOrAdd
	// OverwriteIfExists replaces the values of a header that is present,
	// and adds none otherwise.
	OverwriteIfExists
)

// HeaderValueOption is a header to add, as its Action says. An empty
// Value is added only with KeepEmpty, as in Envoy.
type HeaderValueOption struct {
	Name, Value string
	Action      AppendAction
	KeepEmpty   bool
}

// HeaderMutation is one level's header changes (a route's, a virtual
// host's, a route configuration's or a weighted cluster's): the removals
// first, then the additions in order, as Envoy evaluates a level.
type HeaderMutation struct {
	Add    []HeaderValueOption
	Remove []string
}

// Empty reports whether m changes nothing.
func (m HeaderMutation) Empty() bool { return len(m.Add) == 0 && len(m.Remove) == 0 }

// MirrorPolicy is one of a route's request_mirror_policies: a copy of each
// request it samples goes to Cluster, and its answer is discarded.
type MirrorPolicy struct {
	Cluster string
	// FractionPerMillion is runtime_fraction's default_value: the share
	// of requests mirrored, out of 1,000,000 (all when unset).
	FractionPerMillion uint32
	// KeepHost is disable_shadow_host_suffix_append: the copy keeps the
	// request's Host rather than gaining Envoy's "-shadow" suffix.
	KeepHost bool
	// HostRewrite is host_rewrite_literal: the copy's Host, as sent (it
	// implies KeepHost).
	HostRewrite string
}

// ClusterKind is a cluster's discovery type.
type ClusterKind uint8

// Cluster kinds.
const (
	ClusterEDS ClusterKind = iota
	ClusterLogicalDNS
	ClusterStatic
	// ClusterAggregate is an aggregate cluster (envoy.clusters.aggregate,
	// gRFC A37): a prioritized list of other clusters.
	ClusterAggregate
)

// String returns the Envoy name of the kind.
func (k ClusterKind) String() string {
	switch k {
	case ClusterEDS:
		return "EDS"
	case ClusterLogicalDNS:
		return "LOGICAL_DNS"
	case ClusterStatic:
		return "STATIC"
	case ClusterAggregate:
		return "AGGREGATE"
	}
	return "unknown"
}

// Cluster is a Cluster resource. Immutable once
// delivered; safe for concurrent reads.
type Cluster struct {
	meta
	Kind ClusterKind
	// EDSServiceName is the EDS resource to watch for ClusterEDS: the
	// cluster name when eds_service_name is empty.
	EDSServiceName string
	// DNSHostPort is the address of a LOGICAL_DNS cluster.
	DNSHostPort string
	// StaticEndpoints is the inline load assignment of a STATIC cluster.
	StaticEndpoints *Endpoints
	// AggregateClusters are an aggregate cluster's underlying clusters,
	// highest priority first, as listed (never empty, never the cluster
	// itself). ResolveAggregate follows them down to the leaf clusters.
	AggregateClusters []string
	// LBPolicy names the balancer (round_robin, ring_hash, maglev, random,
	// least_request, or a custom policy's type name); LBConfig is its
	// configuration: RingHashConfig, MaglevConfig, LeastRequestConfig,
	// ClientSideWRRConfig, a custom policy's JSON, or nil.
	LBPolicy string
	LBConfig any
	// CircuitBreaker holds the DEFAULT-priority thresholds.
	CircuitBreaker   CircuitBreaker
	OutlierDetection *OutlierDetection
	// TLS is the upstream TLS configuration, nil for plaintext.
	TLS *UpstreamTLS
	// ZoneAware and SlowStart are nil when the cluster does not ask.
	ZoneAware *ZoneAwareConfig
	SlowStart *SlowStartConfig
	// ReportLoad is set by lrs_server {self: {}}: the cluster's load goes
	// over LRS to the management server that sent the cluster (the only
	// source grpc-go supports too). See Client.ReportLoad.
	ReportLoad bool
	// LoadService is the cluster_service_name of its load reports: the
	// eds_service_name as written, empty when unset, as grpc-go sends it.
	LoadService string
	// Protocol is the HTTP protocol the cluster asks its HTTP requests to
	// reach its endpoints with (Envoy's upstream HttpProtocolOptions).
	// gRPC channels speak HTTP/2 whatever it says, as grpc-go does.
	Protocol UpstreamProtocol
}

// UpstreamProtocol is a cluster's choice of HTTP protocol to its
// endpoints, as Envoy's upstream HttpProtocolOptions make it.
type UpstreamProtocol uint8

// The protocols a cluster may ask for.
const (
	// ProtocolUnset: the cluster says nothing (or asks for what cannot be
	// served, HTTP/3), so the client's own setting applies.
	ProtocolUnset UpstreamProtocol = iota
	// ProtocolHTTP1 is HTTP/1.1 (explicit_http_config.http_protocol_options).
	ProtocolHTTP1
	// ProtocolHTTP2 is HTTP/2 (explicit_http_config.http2_protocol_options,
	// or the cluster's deprecated http2_protocol_options): h2c with prior
	// knowledge in the clear, h2 alone offered by ALPN over TLS.
	ProtocolHTTP2
	// ProtocolAuto (auto_config) lets ALPN choose over TLS, offering h2
	// and http/1.1; in the clear it is HTTP/1.1, as in Envoy.
	ProtocolAuto
	// ProtocolDownstream (use_downstream_protocol_config, or the deprecated
	// protocol_selection USE_DOWNSTREAM_PROTOCOL) is the protocol the
	// request arrived with; a client's own request has none, so the
	// client's own setting applies.
	ProtocolDownstream
)

// String names p as Envoy's configuration does.
func (p UpstreamProtocol) String() string {
	switch p {
	case ProtocolUnset:
		return "unset"
	case ProtocolHTTP1:
		return "http1"
	case ProtocolHTTP2:
		return "http2"
	case ProtocolAuto:
		return "auto"
	case ProtocolDownstream:
		return "use_downstream"
	}
	return "unknown"
}

// RingHashConfig configures ring_hash.
type RingHashConfig struct{ MinRingSize, MaxRingSize uint64 }

// ClientSideWRRConfig configures client_side_weighted_round_robin (gRFC
// A58), from Envoy's ClientSideWeightedRoundRobin with its defaults
// filled in: every field is as the policy should run.
type ClientSideWRRConfig struct {
	EnableOOBLoadReport     bool
	OOBReportingPeriod      time.Duration // default 10s
	BlackoutPeriod          time.Duration // default 10s; 0 is none
	WeightExpirationPeriod  time.Duration // default 3m
	WeightUpdatePeriod      time.Duration // default 1s, at least 100ms
	ErrorUtilizationPenalty float64       // default 1
}

// MaglevConfig configures maglev.
type MaglevConfig struct {
	// TableSize is a prime no larger than 5000011 (default 65537).
	TableSize uint64
}

// LeastRequestConfig configures least_request.
type LeastRequestConfig struct {
	ChoiceCount uint32
	// ActiveRequestBias is the exponent of in-flight requests in the
	// weighted choice, weight/(active+1)^bias; Envoy's default is 1.
	ActiveRequestBias float64
}

// CircuitBreaker is a cluster's thresholds; the defaults are Envoy's.
// max_connections is not among them: it is reported as not applied, on
// both protocols. grpc-go ignores it, a gRPC channel holding one HTTP/2
// connection per endpoint; an HTTP client's connections are what its
// transport pools per endpoint, and max_requests and
// max_pending_requests, which are applied, bound the concurrency that
// the connections carry.
type CircuitBreaker struct {
	MaxPendingRequests, MaxRequests, MaxRetries uint32
	// RetryBudget holds the thresholds' retry_budget when HasRetryBudget.
	RetryBudget    RetryBudget
	HasRetryBudget bool
}

// OutlierDetection is a cluster's outlier detection config (gRFC A50) with
// defaults applied. A nil SuccessRate or FailurePercentage disables that
// algorithm.
type OutlierDetection struct {
	Interval           time.Duration
	BaseEjectionTime   time.Duration
	MaxEjectionTime    time.Duration
	MaxEjectionPercent uint32
	// Consecutive5xx and ConsecutiveGatewayFailure are Envoy's
	// consecutive-error ejections (0: off). grpc-go does not read them;
	// Weft's HTTP path does, with Envoy's defaults (5 and enforced for
	// 5xx; gateway failures enforced only when asked).
	Consecutive5xx            uint32
	ConsecutiveGatewayFailure uint32
	SuccessRate               *SuccessRateEjection
	FailurePercentage         *FailurePercentageEjection
}

// SuccessRateEjection is the success-rate algorithm's parameters.
type SuccessRateEjection struct {
	StdevFactor, EnforcementPercentage, MinimumHosts, RequestVolume uint32
}

// FailurePercentageEjection is the failure-percentage algorithm's
// parameters.
type FailurePercentageEjection struct {
	Threshold, EnforcementPercentage, MinimumHosts, RequestVolume uint32
}

// UpstreamTLS is a cluster's UpstreamTlsContext, reduced to what a
// proxyless client applies.
type UpstreamTLS struct {
	SNI string
	// RootProviderInstance and IdentityProviderInstance name bootstrap
	// certificate_providers.
	RootProviderInstance     string
	IdentityProviderInstance string
	// SANMatchers are the allowed server identities; empty = any.
	SANMatchers []StringMatcher
}

// StringMatcher is an envoy.type.matcher.v3.StringMatcher.
type StringMatcher = rbac.StringMatcher

// Endpoints is a ClusterLoadAssignment. Immutable once
// delivered; safe for concurrent reads.
type Endpoints struct {
	meta
	Localities []LocalityEndpoints
	// All is every endpoint of every locality, flattened, with Locality,
	// Priority and LocalityWeight filled in: the form resolver.State takes.
	All []resolver.Endpoint
}

// LocalityEndpoints is one locality of a load assignment.
type LocalityEndpoints struct {
	Locality  resolver.Locality
	Priority  uint32
	Weight    uint32
	Endpoints []resolver.Endpoint
}
