// Package resolver is Weft's service discovery: it turns a service name into
// a stream of endpoint sets.
//
// A [Discovery] watches services by name and delivers each new [State] to a
// [Watcher]. Weft ships static discovery ([NewStatic], fed by WEFT_ENDPOINTS
// or mesh.WithEndpoints), DNS discovery ([NewDNS]: A/AAAA or SRV records,
// re-resolved on an interval and on connection failure) and, under
// internal/xds, discovery from an xDS control plane's EDS. [NewGRPCBuilder]
// adapts any Discovery to grpc-go, so a gRPC channel and an HTTP client
// resolve a mesh service name the same way.
package resolver

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Health is an endpoint's health as discovery reports it. Only Healthy and
// HealthUnknown endpoints receive traffic, as in Envoy and grpc-go.
type Health uint8

const (
	// HealthUnknown: discovery has no health signal (static and DNS
	// endpoints). Such endpoints serve.
	HealthUnknown Health = iota
	// Healthy: discovery says the endpoint serves.
	Healthy
	// Unhealthy: discovery says the endpoint must not receive traffic.
	Unhealthy
	// Draining: the endpoint is going away; no new requests.
	Draining
)

// Serving reports whether an endpoint in this state may receive requests.
func (h Health) Serving() bool { return h == HealthUnknown || h == Healthy }

// String returns the name xDS uses for the state.
func (h Health) String() string {
	switch h {
	case Healthy:
		return "HEALTHY"
	case Unhealthy:
		return "UNHEALTHY"
	case Draining:
		return "DRAINING"
	default:
		return "UNKNOWN"
	}
}

// Locality is where an endpoint runs, in xDS terms.
type Locality struct {
	Region, Zone, SubZone string
}

// String renders the locality as region/zone/subzone, or "" when unset.
func (l Locality) String() string {
	if l == (Locality{}) {
		return ""
	}
	return l.Region + "/" + l.Zone + "/" + l.SubZone
}

// Endpoint is one address of a service. It is a value; discovery never
// mutates an Endpoint it has delivered.
type Endpoint struct {
	// Addr is host:port, where host is an IP address for every built-in
	// discovery except static entries that name a host.
	Addr string
	// Weight is the endpoint's load-balancing weight; 0 means 1.
	Weight uint32
	// Locality and Priority place the endpoint for locality-weighted
	// balancing and priority failover (0 is the most preferred priority).
	Locality Locality
	Priority uint32
	// LocalityWeight is the weight of the endpoint's locality; 0 means 1.
	LocalityWeight uint32
	Health         Health
	// Hostname is the endpoint's host name when discovery knows one: an
	// EDS endpoint's hostname, or the DNS name of an xDS LOGICAL_DNS
	// cluster. A route's auto_host_rewrite sends it as the Host.
	Hostname string
	// HashKey, when not empty, places the endpoint on a consistent-hashing
	// policy's ring or table instead of Addr (gRFC A76; the "hash_key" of
	// an EDS endpoint's "envoy.lb" metadata), so that an endpoint that
	// comes back at another address keeps its requests.
	HashKey string
}

// Key returns what consistent-hashing policies place the endpoint by:
// HashKey, or Addr when it has none.
func (e Endpoint) Key() string {
	if e.HashKey != "" {
		return e.HashKey
	}
	return e.Addr
}

// EffectiveWeight returns Weight, with 0 read as 1.
func (e Endpoint) EffectiveWeight() uint32 {
	if e.Weight == 0 {
		return 1
	}
	return e.Weight
}

// State is one complete endpoint set of a service. The Endpoints slice is
// immutable once delivered: watchers may keep it without copying.
type State struct {
	Endpoints []Endpoint
	// Err is set when discovery failed. Endpoints then holds the last good
	// set (possibly empty): a transient discovery failure does not take a
	// service's endpoints away.
	Err error
}

// A Watcher receives a service's endpoint sets. Calls for one watch are
// serialized and in order; OnUpdate must not block for long, because it
// holds up the watch that delivers it.
type Watcher interface {
	OnUpdate(State)
}

// WatcherFunc adapts a function to a Watcher.
type WatcherFunc func(State)

// OnUpdate calls f(s).
func (f WatcherFunc) OnUpdate(s State) { f(s) }

// Discovery finds the endpoints of services by name. Implementations are
// safe for concurrent use.
type Discovery interface {
	// Watch delivers the current endpoint set of service to w as soon as it
	// is known, then every change, until cancel is called. After cancel
	// returns, w is not called again. Watching a service the Discovery does
	// not know delivers a State with an error.
	Watch(service string, w Watcher) (cancel func())
	// ResolveNow hints that service's endpoints may be stale, for example
	// after a connection to one of them failed. It never blocks.
	ResolveNow(service string)
	// Close stops every watch and releases the Discovery's goroutines.
	// It is idempotent.
	Close() error
}

// SplitHostPort splits "host:port" like net.SplitHostPort but also accepts
// a bare host (port ""), which is how an HTTP URL without a port or a gRPC
// target without a port names a service.
func SplitHostPort(hostport string) (host, port string) {
	if strings.HasPrefix(hostport, "[") {
		if i := strings.LastIndex(hostport, "]"); i > 0 {
			host = hostport[1:i]
			if rest := hostport[i+1:]; strings.HasPrefix(rest, ":") {
				port = rest[1:]
			}
			return host, port
		}
		return hostport, ""
	}
	i := strings.LastIndexByte(hostport, ':')
	if i < 0 || strings.IndexByte(hostport[:i], ':') >= 0 { // no port, or a bare IPv6 address
		return hostport, ""
	}
	return hostport[:i], hostport[i+1:]
}

// validPort reports whether p is a decimal port in 1..65535.
func validPort(p string) bool {
	n, err := strconv.ParseUint(p, 10, 16)
	return err == nil && n > 0
}

// validHost reports whether h is an IP address or a DNS name made of the
// characters DNS allows.
func validHost(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '.', c == '_':
		default:
			return false
		}
	}
	return true
}

// ParseLocality parses a locality written region/zone/subzone; zone and
// subzone may be left out ("us-east1/us-east1-b"). Parts are non-empty
// and hold no spaces or the separators of WEFT_ENDPOINTS.
func ParseLocality(s string) (Locality, error) {
	parts := strings.Split(s, "/")
	if len(parts) > 3 {
		return Locality{}, fmt.Errorf("locality %q: want region[/zone[/subzone]]", s)
	}
	for _, p := range parts {
		if p == "" || strings.ContainsAny(p, " \t,;=@") {
			return Locality{}, fmt.Errorf("locality %q: want region[/zone[/subzone]] of non-empty names", s)
		}
	}
	var l Locality
	l.Region = parts[0]
	if len(parts) > 1 {
		l.Zone = parts[1]
	}
	if len(parts) > 2 {
		l.SubZone = parts[2]
	}
	return l, nil
}
