package xds

import "time"

// The model of zone-aware routing, slow start and cookie session affinity.
// Values, immutable once delivered, like the rest of the model.

// ZoneAwareConfig is a cluster's zone_aware_lb_config (from
// common_lb_config, or the locality_lb_config of a typed round_robin or
// least_request policy), with Envoy's defaults applied.
type ZoneAwareConfig struct {
	// RoutingEnabledPercent is routing_enabled, 0 to 100 (default 100).
	RoutingEnabledPercent float64
	// MinClusterSize is min_cluster_size (default 6).
	MinClusterSize     uint64
	FailTrafficOnPanic bool
}

// SlowStartConfig is a round_robin or least_request slow_start_config.
type SlowStartConfig struct {
	// Window is slow_start_window, positive.
	Window time.Duration
	// Aggression is aggression.default_value, above 0 (default 1).
	Aggression float64
	// MinWeightPercent is min_weight_percent, 0 to 100 (default 10).
	MinWeightPercent float64
}

// SessionCookie is the cookie of a stateful session filter with
// CookieBasedSessionState (gRFC A55).
type SessionCookie struct {
	// Name is the cookie's name, never empty.
	Name string
	// Path is the cookie's path, "/" when the configuration has none.
	Path string
	// TTL is the cookie's lifetime (Max-Age); 0 means a session cookie.
	TTL time.Duration
	// Attributes are extra cookie attributes, in order.
	Attributes []CookieAttribute
}

// CookieAttribute is one extra attribute of a session cookie.
type CookieAttribute struct{ Name, Value string }

// RouteSession is a route's StatefulSessionPerRoute, merged from the
// virtual host's and the route's typed_per_filter_config (the route's
// wins).
type RouteSession struct {
	// Disabled turns session affinity off for the route.
	Disabled bool
	// Cookie replaces the listener's cookie when not Disabled; nil keeps
	// the listener's.
	Cookie *SessionCookie
}
