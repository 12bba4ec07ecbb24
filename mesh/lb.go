package mesh

import (
	"errors"
	"fmt"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/internal/xds"
	"github.com/weftmesh/weft/resolver"
)

// Zone-aware routing and slow start: options and variables for services
// not configured by xDS, and their translation from an xDS cluster.

// The variables of zone-aware routing, slow start and session affinity.
const (
	EnvLocality         = "WEFT_LOCALITY"
	EnvSlowStartWindow  = "WEFT_SLOW_START_WINDOW"
	EnvSessionCookie    = "WEFT_SESSION_COOKIE"
	EnvSessionCookieTTL = "WEFT_SESSION_COOKIE_TTL"
)

// WithZoneAware turns on zone-aware routing for services not configured
// by xDS, whose endpoints carry localities (WEFT_ENDPOINTS entries written
// host:port@region/zone): requests stay in cfg.Local's locality while it
// holds its share of healthy endpoints, and spill over as Envoy's
// zone-aware balancing does (see balancer.NewPriorityLocality). It
// overrides WEFT_LOCALITY; cfg.Local also stands in for the caller's
// locality of xDS clusters that ask for zone-aware routing when the
// bootstrap node has none.
func WithZoneAware(cfg balancer.ZoneAwareConfig) Option {
	return optionFunc(func(c *config) error {
		if err := cfg.Validate(); err != nil {
			return fmt.Errorf("mesh: WithZoneAware: %w", err)
		}
		if cfg.Local == (resolver.Locality{}) {
			return errors.New("mesh: WithZoneAware: Local is empty")
		}
		c.zone = cfg
		return nil
	})
}

// WithClientSideWRR balances services not configured by xDS with gRFC
// A58's client_side_weighted_round_robin (see
// balancer.ClientSideWeightedRoundRobin) under cfg's settings, zero
// fields taking the defaults. It overrides WEFT_LB_POLICY; of it and
// WithLBPolicy, the later wins. (WEFT_LB_POLICY or WithLBPolicy can name
// the policy too, which then runs with its defaults.) Weights come from
// the ORCA reports that responses carry (a gRPC trailer, an HTTP
// endpoint-load-metrics header); out-of-band reports need an xDS cluster.
func WithClientSideWRR(cfg balancer.CSWRRConfig) Option {
	return optionFunc(func(c *config) error {
		b, err := balancer.NewClientSideWRR(cfg)
		if err != nil {
			return fmt.Errorf("mesh: WithClientSideWRR: %w", err)
		}
		c.lbPolicy, c.cswrr = balancer.ClientSideWeightedRoundRobin, b
		return nil
	})
}

// WithSlowStart ramps up the share of endpoints that join a service not
// configured by xDS over cfg.Window (see balancer.NewSlowStart), for the
// policies whose picks follow weights: round_robin,
// weighted_round_robin, least_request and random. It overrides
// WEFT_SLOW_START_WINDOW.
func WithSlowStart(cfg balancer.SlowStartConfig) Option {
	return optionFunc(func(c *config) error {
		if err := cfg.Validate(); err != nil {
			return fmt.Errorf("mesh: WithSlowStart: %w", err)
		}
		if err := checkDuration(cfg.Window, minDuration); err != nil {
			return fmt.Errorf("mesh: WithSlowStart: window %w", err)
		}
		c.slowStart = cfg
		c.slowStartSource = "WithSlowStart"
		return nil
	})
}

// lbFromEnv reads WEFT_LOCALITY, WEFT_SLOW_START_WINDOW, the hash source
// and the session cookie variables.
func lbFromEnv(getenv func(string) string, c *config) error {
	if v := getenv(EnvLocality); v != "" {
		l, err := resolver.ParseLocality(v)
		if err != nil {
			return &EnvError{Var: EnvLocality, Value: v, Err: err}
		}
		c.zone.Local = l
	}
	if v := getenv(EnvSlowStartWindow); v != "" {
		d, err := parseDuration(v, minDuration, "60s")
		if err != nil {
			return &EnvError{Var: EnvSlowStartWindow, Value: v, Err: err}
		}
		c.slowStart.Window = d
		c.slowStartSource = EnvSlowStartWindow
	}
	if err := hashFromEnv(getenv, c); err != nil {
		return err
	}
	return sessionFromEnv(getenv, c)
}

// checkSlowStart refuses slow start with a policy that ignores weights.
func (c *config) checkSlowStart() error {
	if c.slowStart.Window > 0 && !balancer.SupportsSlowStart(c.lbPolicy) {
		return fmt.Errorf("mesh: %s: slow start applies to round_robin, weighted_round_robin, least_request and random, not %s",
			c.slowStartSource, c.lbPolicy)
	}
	return nil
}

// servicePolicy is the balancer of services not configured by xDS, for
// HTTP requests and, through balancer.GRPCServiceConfigFor, gRPC channels
// alike: the chosen policy (with slow start) inside priority and locality
// failover (zone-aware when the caller's locality is known) inside outlier
// detection.
func (c *config) servicePolicy() balancer.Builder {
	var opts []balancer.PriorityOption
	if c.zone.Local != (resolver.Locality{}) {
		opts = append(opts, balancer.WithZoneAware(c.zone))
	}
	policy := balancer.Get(c.lbPolicy)
	if c.cswrr != nil {
		policy = c.cswrr
	}
	b := balancer.NewSlowStart(policy, c.slowStart)
	return balancer.NewOutlierDetection(balancer.NewPriorityLocality(b, opts...), c.outlier)
}

// priorityLocality wraps an xDS cluster's policy in slow start and
// priority/locality failover, zone-aware when the cluster asks for it.
// The caller's locality is the bootstrap node's, else WEFT_LOCALITY's.
// The node tells the control plane "envoy.lb.does_not_support_overprovisioning",
// as grpc-go does, and the failover is grpc-go's to match: a priority or
// locality serves while any of its endpoints is healthy, whatever EDS's
// overprovisioning_factor says (which is reported as not applied).
func (x *xdsPath) priorityLocality(c *xds.Cluster, b balancer.Builder) balancer.Builder {
	if ss := c.SlowStart; ss != nil {
		minPct := ss.MinWeightPercent
		if minPct == 0 {
			minPct = -1 // xDS's 0 is no floor; the balancer's 0 is 10%
		}
		b = balancer.NewSlowStart(b, balancer.SlowStartConfig{Window: ss.Window, Aggression: ss.Aggression, MinWeightPercent: minPct})
	}
	z := c.ZoneAware
	if z == nil {
		return balancer.NewPriorityLocality(b, balancer.WithoutOverprovisioning())
	}
	cfg := balancer.ZoneAwareConfig{Local: x.locality, RoutingEnabledPercent: z.RoutingEnabledPercent,
		MinClusterSize: max(z.MinClusterSize, 1), FailTrafficOnPanic: z.FailTrafficOnPanic}
	if cfg.Local == (resolver.Locality{}) {
		cfg.Local = x.m.cfg.zone.Local
	}
	if cfg.RoutingEnabledPercent == 0 {
		cfg.RoutingEnabledPercent = -1 // xDS's 0 is none; the balancer's 0 is 100%
	}
	return balancer.NewPriorityLocality(b, balancer.WithoutOverprovisioning(), balancer.WithZoneAware(cfg))
}

// lbExtras prints a cluster's zone-aware and slow start configs, to tell
// when they change.
func lbExtras(c *xds.Cluster) string { return fmt.Sprint(c.ZoneAware, c.SlowStart) }

// noteSession records that some listener or route has a stateful session.
func (x *xdsPath) noteSession(has bool) {
	if has && !x.sessions.Load() {
		x.sessions.Store(true)
	}
}
