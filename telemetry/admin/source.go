package admin

import "time"

// Source is what the admin endpoint shows: the mesh implements it. Every
// method returns plain values the caller may keep; none may block on the
// network, since each answers one request to the admin listener. Methods
// are called concurrently.
type Source interface {
	// Status is who the service is and how it runs, read at now.
	Status(now time.Time) Status
	// Ready's error is nil when the service can take traffic, else says
	// why not (the text of /readyz's 503). detail is more to say when
	// ready ("control plane: connected ..."), one line or "".
	Ready(now time.Time) (detail string, err error)
	// Requests is, per service and cluster, the requests sent to its
	// endpoints since it was first used: monotonic counters the page
	// turns into rates.
	Requests() map[string]uint64
	// Clusters is every service and cluster in use, sorted by name.
	Clusters() []Cluster
	// Routes is every host routed by xDS, sorted by host.
	Routes() []HostRoutes
	// Resources is Weft's view of the xDS resources: what was asked for,
	// its state, and what Weft made of it. withBodies false leaves
	// Resource.Resource out (an EDS resource can hold thousands of
	// endpoints the page does not show).
	Resources(withBodies bool) []Resource
	// ConfigDump is the xDS resources as received, as the JSON of
	// Envoy's envoy.admin.v3.ConfigDump; nil without a control plane.
	ConfigDump() ([]byte, error)
	// Inbound is the server side: identity, mTLS per listener, the
	// authorization policy in force and the recent decisions.
	Inbound() Inbound
	// Golden is the golden metrics per direction, route and caller, read
	// at now.
	Golden(now time.Time) []GoldenStat
}

// Status is who the service is and how it runs.
type Status struct {
	Service string `json:"service"`
	// Identity is the service's SPIFFE ID, "" without one.
	Identity string `json:"identity,omitempty"`
	// IdentityExpires is when the current SVID expires (RFC 3339).
	IdentityExpires string `json:"identity_expires,omitempty"`
	// MTLS is the mesh's mode: strict, permissive or disable.
	MTLS string `json:"mtls"`
	// LBPolicy is the default balancer of services outside xDS; each xDS
	// cluster's own is in Cluster.Policy.
	LBPolicy string `json:"lb_policy"`
	// XDS is whether a control plane is configured.
	XDS bool `json:"xds"`
	// ControlPlane is the xDS connection and the config's age, nil
	// without a control plane.
	ControlPlane *ControlPlane `json:"control_plane,omitempty"`
}

// ControlPlane is the control-plane connection as /readyz and the page
// show it.
type ControlPlane struct {
	State     string `json:"state"` // connected, reconnecting, never connected, idle
	Server    string `json:"server,omitempty"`
	Since     string `json:"since,omitempty"` // RFC 3339
	LastError string `json:"last_error,omitempty"`
	// ConfigAgeSeconds is how long ago the configuration in use was
	// accepted; absent when none ever was.
	ConfigAgeSeconds *float64 `json:"config_age_seconds,omitempty"`
	// Text says all of it in one line; Summary leaves out the server and
	// the error, for the page's header.
	Text    string `json:"text"`
	Summary string `json:"summary"`
	// Ready is false when no configuration ever arrived although the mesh
	// asked for one.
	Ready bool `json:"ready"`
}

// Stats is what /stats reports: who this service is and a monotonically
// increasing request count per service, from which the page computes
// rates between two samples. Counters rather than rates keep the mesh
// free of any timer or window: a reader picks its own interval.
type Stats struct {
	Status
	// NowUnixMs is when the counts were read, so a reader's rates do not
	// depend on its own polling jitter.
	NowUnixMs int64 `json:"now_unix_ms"`
	// Requests is, per service and cluster, the requests sent to its
	// endpoints since the service was first used (each attempt of a
	// retried request counts). An xDS cluster closed by the idle sweep
	// starts again from zero when it is used again.
	Requests map[string]uint64 `json:"requests"`
}

// Cluster is one service's live state, as /clusters reports it.
type Cluster struct {
	Service string `json:"service"`
	// Policy is the balancer in force: the mesh's default for a service
	// outside xDS, the cluster's own for an xDS cluster.
	Policy    string     `json:"lb_policy"`
	Error     string     `json:"discovery_error,omitempty"`
	Endpoints []Endpoint `json:"endpoints"`
}

// Endpoint is one endpoint's live state.
type Endpoint struct {
	Addr     string `json:"addr"`
	Weight   uint32 `json:"weight"`
	Locality string `json:"locality,omitempty"`
	Priority uint32 `json:"priority"`
	// Health is discovery's health for the endpoint; when discovery has
	// none (static and DNS endpoints), HEALTHY once the endpoint's last
	// request succeeded without an outlier ejection, UNKNOWN before.
	Health   string `json:"health"`
	InFlight int64  `json:"in_flight"`
	Ejected  bool   `json:"ejected"`
}

// HostRoutes is one URL host the client side has met with xDS, as
// /routes reports it: the listener it names and the routes in force.
type HostRoutes struct {
	Host        string `json:"host"`
	Listener    string `json:"listener"`
	RouteConfig string `json:"route_config,omitempty"`
	// State is PENDING (no answer yet), NOT_FOUND (the control plane does
	// not know the listener: requests pass through), ERROR or ACTIVE.
	State        string        `json:"state"`
	Error        string        `json:"error,omitempty"`
	VirtualHosts []VirtualHost `json:"virtual_hosts"`
}

// VirtualHost is one virtual host and its routes, in match order.
type VirtualHost struct {
	Name    string   `json:"name"`
	Domains []string `json:"domains"`
	Routes  []Route  `json:"routes"`
}

// Route is one route, in the order they are matched.
type Route struct {
	Name string `json:"name,omitempty"`
	// Match says in words what the route matches.
	Match            string          `json:"match"`
	Cluster          string          `json:"cluster,omitempty"`
	WeightedClusters []WeightedShare `json:"weighted_clusters,omitempty"`
	// NonForwarding routes (redirects, direct responses) do not reach a
	// cluster.
	NonForwarding bool `json:"non_forwarding,omitempty"`
	// Timeout bounds the whole request, all attempts: "off" when the
	// route disables it.
	Timeout string `json:"timeout,omitempty"`
	Retries string `json:"retries,omitempty"`
	Rewrite string `json:"rewrite,omitempty"`
	// Mirror names the clusters requests are copied to, with the share
	// copied.
	Mirror string `json:"mirror,omitempty"`
}

// WeightedShare is one cluster of a weighted split.
type WeightedShare struct {
	Name    string  `json:"name"`
	Weight  uint32  `json:"weight"`
	Percent float64 `json:"percent"`
}

// Resource is one xDS resource in Weft's view (/config_dump?format=weft).
type Resource struct {
	Type    string `json:"type"`
	Name    string `json:"name"`
	State   string `json:"state"` // REQUESTED, ACKED, NACKED, DOES_NOT_EXIST
	Version string `json:"version"`
	// LastNACK is why the latest version was rejected.
	LastNACK string `json:"last_nack,omitempty"`
	// Unapplied lists the fields received that Weft does not apply.
	Unapplied []string `json:"unapplied_fields,omitempty"`
	// Resource is Weft's model of the version in use.
	Resource any `json:"resource,omitempty"`
}
