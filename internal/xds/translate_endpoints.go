package xds

import (
	"fmt"
	"net"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/weftmesh/weft/resolver"
)

// TranslateEndpoints validates a ClusterLoadAssignment. An error is a
// *ResourceError.
func TranslateEndpoints(la *endpointv3.ClusterLoadAssignment) (*Endpoints, error) {
	out, err := finish(translateEndpoints(la))(la, nil, endpointsApplied)
	if err != nil {
		return nil, resourceErr(EndpointsType, la.GetClusterName(), err)
	}
	return out, nil
}

func translateEndpoints(la *endpointv3.ClusterLoadAssignment) (*Endpoints, error) {
	out := &Endpoints{meta: meta{Name: la.GetClusterName()}}
	n := 0
	for _, l := range la.GetEndpoints() {
		n += len(l.GetLbEndpoints())
	}
	// One backing array for every endpoint keeps a 10,000-endpoint update
	// to a handful of allocations; Localities slice into it.
	all := make([]resolver.Endpoint, 0, n)
	seenLoc := make(map[resolver.Locality]bool, len(la.GetEndpoints()))
	seenAddr := make(map[string]bool, n)
	maxPrio := uint32(0)
	prios := make(map[uint32]bool)
	for i, l := range la.GetEndpoints() {
		f := fmt.Sprintf("endpoints[%d]", i)
		lp := l.GetLocality()
		if lp == nil {
			return nil, ferr(f+".locality", "missing")
		}
		loc := resolver.Locality{Region: lp.GetRegion(), Zone: lp.GetZone(), SubZone: lp.GetSubZone()}
		if seenLoc[loc] {
			return nil, ferr(f+".locality", "duplicate locality %q", loc.String())
		}
		seenLoc[loc] = true
		w := l.GetLoadBalancingWeight().GetValue()
		if w == 0 {
			return nil, ferr(f+".load_balancing_weight", "missing or 0")
		}
		prio := l.GetPriority()
		prios[prio] = true
		maxPrio = max(maxPrio, prio)
		start := len(all)
		for j, e := range l.GetLbEndpoints() {
			ef := func() string { return fmt.Sprintf("%s.lb_endpoints[%d]", f, j) } // built only on error
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			if sa == nil {
				return nil, ferr(ef()+".endpoint.address.socket_address", "missing")
			}
			if sa.GetPortValue() == 0 || sa.GetPortValue() > 65535 {
				return nil, ferr(ef()+".endpoint.address.socket_address.port_value", "%d is not a port", sa.GetPortValue())
			}
			addr := net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10))
			if seenAddr[addr] {
				return nil, ferr(ef()+".endpoint.address", "duplicate address %s", addr)
			}
			seenAddr[addr] = true
			ew := uint32(1)
			if lw := e.GetLoadBalancingWeight(); lw != nil {
				if lw.GetValue() == 0 {
					return nil, ferr(ef()+".load_balancing_weight", "0")
				}
				ew = lw.GetValue()
			}
			all = append(all, resolver.Endpoint{
				Addr: addr, Weight: ew, Locality: loc, Priority: prio, LocalityWeight: w,
				Health: health(e.GetHealthStatus()), Hostname: e.GetEndpoint().GetHostname(), HashKey: hashKey(e),
			})
		}
		out.Localities = append(out.Localities, LocalityEndpoints{Locality: loc, Priority: prio, Weight: w, Endpoints: all[start:len(all):len(all)]})
	}
	// Priorities must be 0..N with no gaps, or failover order is undefined.
	if len(prios) > 0 && int(maxPrio)+1 != len(prios) {
		return nil, ferr("endpoints.priority", "priorities are not contiguous from 0 (highest %d, %d distinct)", maxPrio, len(prios))
	}
	out.All = all
	return out, nil
}

// hashKey returns the endpoint's "hash_key" in its "envoy.lb" filter
// metadata, which places it on a consistent-hashing ring instead of its
// address. Envoy: "If the endpoint has a hash_key in its envoy.lb
// metadata, it is used as the key"; gRFC A76 has grpc-go read it the same
// way. A key that is not a string is ignored, as grpc-go ignores it.
func hashKey(e *endpointv3.LbEndpoint) string {
	return e.GetMetadata().GetFilterMetadata()["envoy.lb"].GetFields()["hash_key"].GetStringValue()
}

func health(h corev3.HealthStatus) resolver.Health {
	switch h {
	case corev3.HealthStatus_UNKNOWN:
		return resolver.HealthUnknown
	case corev3.HealthStatus_HEALTHY:
		return resolver.Healthy
	case corev3.HealthStatus_DRAINING:
		return resolver.Draining
	}
	// UNHEALTHY, TIMEOUT and DEGRADED do not serve, as in grpc-go.
	return resolver.Unhealthy
}
