package xds

import "time"

// FaultFilter is one fault injection filter (Envoy's HTTPFault, gRFC A33)
// of a client listener's HTTP filter chain, in chain order.
type FaultFilter struct {
	// Name is the filter's name: routes override its config under it in
	// typed_per_filter_config.
	Name string
	// Config is the listener's config, the default of every route; it is
	// Disabled when the HttpFilter is, until a route enables it.
	Config *Fault
}

// Fault is an HTTPFault config, the listener's or a route's override,
// which replaces the listener's whole (Envoy's and grpc-go's rule).
type Fault struct {
	// Disabled turns the filter off: a route's FilterConfig with disabled
	// set, or a listener's HttpFilter with disabled set.
	Disabled bool
	// Delay and Abort are nil when the config has none.
	Delay *FaultDelay
	Abort *FaultAbort
	// MaxActiveFaults bounds the faults the filter has active at once
	// when HasMaxActiveFaults; 0 then injects none.
	MaxActiveFaults    uint32
	HasMaxActiveFaults bool
	// UpstreamCluster, when set, limits faults to requests routed to that
	// cluster.
	UpstreamCluster string
	// Headers, when set, limit faults to requests that match them all.
	Headers []HeaderMatcher
	// DownstreamNodes, when set, limit faults to requests whose
	// x-envoy-downstream-service-node header names one of them.
	DownstreamNodes []string
}

// FaultPercent is a FractionalPercent: Numerator out of Denominator, which
// is 100, 10,000 or 1,000,000. A numerator above the denominator means
// every request.
type FaultPercent struct {
	Numerator, Denominator uint32
}

// FaultDelay is a fault's delay: Fixed, or the request's
// x-envoy-fault-delay-request header when FromHeader.
type FaultDelay struct {
	Fixed      time.Duration
	FromHeader bool
	Percent    FaultPercent
}

// FaultAbortKind is where an abort's status comes from.
type FaultAbortKind uint8

// Abort kinds.
const (
	// AbortHTTPStatus aborts with HTTPStatus (200 to 599).
	AbortHTTPStatus FaultAbortKind = iota
	// AbortGRPCStatus aborts with GRPCStatus.
	AbortGRPCStatus
	// AbortFromHeader aborts with the status the request's
	// x-envoy-fault-abort-request (HTTP) or
	// x-envoy-fault-abort-grpc-request header names, the first winning.
	AbortFromHeader
)

// FaultAbort is a fault's abort.
type FaultAbort struct {
	Kind       FaultAbortKind
	HTTPStatus uint32
	GRPCStatus uint32
	Percent    FaultPercent
}
