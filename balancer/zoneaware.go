package balancer

import (
	"fmt"
	"math"

	"github.com/weftmesh/weft/resolver"
)

// ZoneAwareConfig configures zone-aware routing ([WithZoneAware]), with the
// meaning of Envoy's zone_aware_lb_config. It is a plain value whose zero
// fields mean Envoy's defaults; Local must be set for routing to happen.
type ZoneAwareConfig struct {
	// Local is the caller's own locality: in xDS, the bootstrap node's.
	// It matches an endpoint's locality when region, zone and sub-zone
	// are all equal, as in Envoy. Zone-aware routing is off when it is
	// empty.
	Local resolver.Locality
	// RoutingEnabledPercent is the share of requests zone-aware routing
	// places; the others follow locality weights. Zero means 100; a
	// negative value means 0; above 100 is invalid.
	RoutingEnabledPercent float64
	// MinClusterSize is the number of healthy endpoints a priority needs
	// for zone-aware routing. Zero means 6.
	MinClusterSize uint64
	// FailTrafficOnPanic makes a priority in panic fail its share of
	// requests instead of spreading it over all its endpoints, healthy or
	// not (Envoy's fail_traffic_on_panic). It applies whether or not
	// Local is set.
	FailTrafficOnPanic bool
	// LocalWeights is how the caller's own service is spread over
	// localities (Envoy's "local cluster"), say instance counts. Nil means
	// the approximation NewPriorityLocality documents: the caller's
	// service is spread as the upstream's endpoints are.
	LocalWeights map[resolver.Locality]uint64
}

// Validate reports a setting that has no meaning, naming the field.
func (c ZoneAwareConfig) Validate() error {
	if p := c.RoutingEnabledPercent; p > 100 || math.IsNaN(p) {
		return fmt.Errorf("routing enabled percent %v: must be at most 100", p)
	}
	return nil
}

// A PriorityOption configures NewPriorityLocality.
type PriorityOption func(*plBuilder)

// WithZoneAware turns zone-aware routing on (see NewPriorityLocality).
// An invalid cfg (Validate) routes every request zone-aware.
func WithZoneAware(cfg ZoneAwareConfig) PriorityOption {
	return func(b *plBuilder) {
		z := &zoneAware{cfg: cfg, routing: 1, minSize: 6}
		switch p := cfg.RoutingEnabledPercent; {
		case p < 0:
			z.routing = 0
		case p > 0 && p <= 100:
			z.routing = p / 100
		}
		if cfg.MinClusterSize > 0 {
			z.minSize = cfg.MinClusterSize
		}
		b.zone = z
	}
}

// zoneAware is a ZoneAwareConfig with defaults filled in; immutable.
type zoneAware struct {
	cfg     ZoneAwareConfig
	routing float64 // fraction of requests routed zone-aware
	minSize uint64
}

// Envoy computes zone-aware shares in units of 1/10,000, rounding down.
const zoneScale = 10_000

// shares returns the share of each of p's localities under zone-aware
// routing, or nil when it does not apply to p. It follows Envoy's
// ZoneAwareLoadBalancerBase (regenerateLocalityRoutingStructures and
// tryChooseLocalLocalityHosts), with percentages in 1/10,000:
//
//	local_i    = 10000 × localWeight_i / Σ localWeight
//	upstream_i = 10000 × healthy_i / Σ healthy
//
// When upstream_local > 0 and upstream_local ≥ local_local, every request
// goes to the caller's locality. Otherwise the caller's locality takes
// upstream_local × 10000 / local_local of 10,000 requests, and the rest
// goes to the other localities in proportion to their residual capacity,
// upstream_i − local_i where positive (uniformly over localities with a
// healthy endpoint in the rounding corner where none has any).
func (z *zoneAware) shares(p *plPriority) []float64 {
	if z.cfg.Local == (resolver.Locality{}) || len(p.localities) < 2 || p.healthy < z.minSize || p.healthy == 0 {
		return nil
	}
	localW := make([]uint64, len(p.localities))
	var totalLocal uint64
	localIdx := -1
	for i, l := range p.localities {
		if l.key.locality == z.cfg.Local {
			localIdx = i
		}
		if z.cfg.LocalWeights == nil {
			// The approximation: callers are spread as the upstream's
			// endpoints are, healthy or not, so a locality's expected
			// share of callers is its share of endpoints.
			localW[i] = l.total
			totalLocal += l.total
		} else {
			localW[i] = z.cfg.LocalWeights[l.key.locality]
		}
	}
	if z.cfg.LocalWeights != nil {
		for _, w := range z.cfg.LocalWeights {
			totalLocal += w
		}
	}
	// Envoy needs the caller's own locality in the local cluster: without
	// it, there is nothing to be aware of.
	if totalLocal == 0 || (z.cfg.LocalWeights == nil && localIdx < 0) || (z.cfg.LocalWeights != nil && z.cfg.LocalWeights[z.cfg.Local] == 0) {
		return nil
	}
	localPct := make([]uint64, len(p.localities))
	upPct := make([]uint64, len(p.localities))
	for i, l := range p.localities {
		localPct[i] = zoneScale * localW[i] / totalLocal
		upPct[i] = zoneScale * l.healthy / p.healthy
	}
	out := make([]float64, len(p.localities))
	if localIdx >= 0 && upPct[localIdx] > 0 && upPct[localIdx] >= localPct[localIdx] {
		out[localIdx] = 1 // LocalityDirect
		return out
	}
	var direct uint64 // of 10,000 requests, those kept in the caller's locality
	if localIdx >= 0 && localPct[localIdx] > 0 {
		direct = min(upPct[localIdx]*zoneScale/localPct[localIdx], zoneScale)
	}
	var residual uint64
	res := make([]uint64, len(p.localities))
	for i := range p.localities {
		if i != localIdx && upPct[i] > localPct[i] {
			res[i] = upPct[i] - localPct[i]
			residual += res[i]
		}
	}
	spill := float64(zoneScale-direct) / zoneScale
	if localIdx >= 0 {
		out[localIdx] = float64(direct) / zoneScale
	}
	if residual == 0 {
		// Envoy draws a locality uniformly here; one without a healthy
		// endpoint would fail the request, so only those with one count.
		var withHealthy float64
		for _, l := range p.localities {
			if l.healthy > 0 {
				withHealthy++
			}
		}
		for i, l := range p.localities {
			if l.healthy > 0 {
				out[i] += spill / withHealthy
			}
		}
		return out
	}
	for i := range p.localities {
		out[i] += spill * float64(res[i]) / float64(residual)
	}
	return out
}
