//lint:file-ignore SA1019 control planes still send these deprecated xDS fields, and grpc-go reads them too

package xds

import (
	"fmt"
	"math"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	statefulsessionv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/stateful_session/v3"
	cookiev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/stateful_session/cookie/v3"
	commonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/common/v3"
	leastrequestv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"
	randomv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/random/v3"
	roundrobinv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	wrrlocalityv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/wrr_locality/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Zone-aware routing, slow start and stateful sessions: the fields Envoy
// has for them, translated and validated as gRFC A55 and Envoy's protos
// say. A bad value is a field error, so the resource is NACKed naming it.

// isStatefulSession reports whether an HTTP filter's config is the
// stateful session filter.
func isStatefulSession(a *anypb.Any) bool {
	return a.MessageIs((*statefulsessionv3.StatefulSession)(nil))
}

// translateStatefulSession reads a StatefulSession filter config. A filter
// with no session_state does nothing, as in Envoy: nil, no error. Fields
// Weft does not apply are returned as paths under the filter.
func translateStatefulSession(a *anypb.Any) (*SessionCookie, []string, error) {
	ss := &statefulsessionv3.StatefulSession{}
	if err := a.UnmarshalTo(ss); err != nil {
		return nil, nil, ferr("typed_config", "not a StatefulSession: %v", err)
	}
	return statefulSession(ss)
}

func statefulSession(ss *statefulsessionv3.StatefulSession) (*SessionCookie, []string, error) {
	var unapplied []string
	if ss.GetStrict() {
		unapplied = append(unapplied, "strict")
	}
	if ss.GetStatusOnStrictDestinationNotFound() != 0 {
		unapplied = append(unapplied, "status_on_strict_destination_not_found")
	}
	st := ss.GetSessionState()
	if st == nil {
		return nil, unapplied, nil
	}
	tc := st.GetTypedConfig()
	if !tc.MessageIs((*cookiev3.CookieBasedSessionState)(nil)) {
		return nil, nil, ferr("session_state.typed_config", "%q is not supported (want CookieBasedSessionState)", tc.GetTypeUrl())
	}
	cs := &cookiev3.CookieBasedSessionState{}
	if err := tc.UnmarshalTo(cs); err != nil {
		return nil, nil, ferr("session_state.typed_config", "%v", err)
	}
	const f = "session_state.typed_config.cookie"
	c := cs.GetCookie()
	out := &SessionCookie{Name: c.GetName(), Path: c.GetPath()}
	if out.Name == "" {
		return nil, nil, ferr(f+".name", "empty")
	}
	if !validCookieToken(out.Name) {
		return nil, nil, ferr(f+".name", "%q is not a cookie name", out.Name)
	}
	if out.Path == "" {
		out.Path = "/"
	}
	if !strings.HasPrefix(out.Path, "/") || strings.ContainsAny(out.Path, ";\x00\r\n") {
		return nil, nil, ferr(f+".path", "%q is not a cookie path", out.Path)
	}
	if d := c.GetTtl(); d != nil {
		v, err := duration(d)
		if err != nil {
			return nil, nil, prefixed(f+".ttl", err)
		}
		out.TTL = v
	}
	for i, attr := range c.GetAttributes() {
		if !validCookieToken(attr.GetName()) || strings.ContainsAny(attr.GetValue(), ";\x00\r\n") {
			return nil, nil, ferr(fmt.Sprintf("%s.attributes[%d]", f, i), "invalid attribute %q=%q", attr.GetName(), attr.GetValue())
		}
		out.Attributes = append(out.Attributes, CookieAttribute{Name: attr.GetName(), Value: attr.GetValue()})
	}
	return out, unapplied, nil
}

// validCookieToken reports whether s is an RFC 6265 token.
func validCookieToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?={}`, c) >= 0 {
			return false
		}
	}
	return true
}

// routeSession reads the StatefulSessionPerRoute configs of a route and its
// virtual host (the route's wins), found by type among
// typed_per_filter_config, bare or in a FilterConfig. Entries of other
// filters are returned as unapplied field names.
// Errors name fields under routeField and vhostField.
func routeSession(route, vhost map[string]*anypb.Any, routeField, vhostField string) (*RouteSession, []string, error) {
	var unapplied []string
	pick := func(m map[string]*anypb.Any, where, errWhere string) (*RouteSession, error) {
		var out *RouteSession
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			a := m[k]
			field := fmt.Sprintf("%s.typed_per_filter_config[%s]", where, k)
			errField := fmt.Sprintf("%s.typed_per_filter_config[%s]", errWhere, k)
			if a.MessageIs((*routev3.FilterConfig)(nil)) {
				fc := &routev3.FilterConfig{}
				if err := a.UnmarshalTo(fc); err != nil {
					return nil, ferr(errField, "%v", err)
				}
				if fc.GetDisabled() && fc.GetConfig() == nil {
					unapplied = append(unapplied, field)
					continue
				}
				a = fc.GetConfig()
			}
			if isFault(a) {
				continue // faultOverrides reads it
			}
			if a.MessageIs((*rbacfilterv3.RBACPerRoute)(nil)) {
				// A per-route RBAC override decides who may call the
				// route; skipping it would let in callers it refuses.
				return nil, ferr(errField, "RBACPerRoute (a per-route RBAC override) is not supported: it changes who is allowed in, so the resource is refused rather than applied in part")
			}
			if a.MessageIs((*jwtv3.PerRouteConfig)(nil)) {
				// A per-route jwt_authn override changes which tokens a
				// route requires, as RBACPerRoute changes who is let in.
				return nil, ferr(errField, "a per-route jwt_authn config is not supported: it changes which tokens are required, so the resource is refused rather than applied in part")
			}
			if !a.MessageIs((*statefulsessionv3.StatefulSessionPerRoute)(nil)) {
				unapplied = append(unapplied, field)
				continue
			}
			pr := &statefulsessionv3.StatefulSessionPerRoute{}
			if err := a.UnmarshalTo(pr); err != nil {
				return nil, ferr(errField, "%v", err)
			}
			if pr.GetDisabled() {
				out = &RouteSession{Disabled: true}
				continue
			}
			c, extra, err := statefulSession(pr.GetStatefulSession())
			if err != nil {
				return nil, prefixed(errField+".stateful_session", err)
			}
			for _, e := range extra {
				unapplied = append(unapplied, field+".stateful_session."+e)
			}
			if c == nil {
				// A per-route config without session state turns the
				// filter off for the route, as Envoy's does.
				out = &RouteSession{Disabled: true}
				continue
			}
			out = &RouteSession{Cookie: c}
		}
		return out, nil
	}
	vh, err := pick(vhost, "virtual_hosts", vhostField)
	if err != nil {
		return nil, nil, err
	}
	r, err := pick(route, "virtual_hosts.routes", routeField)
	if err != nil {
		return nil, nil, err
	}
	if r == nil {
		r = vh
	}
	return r, unapplied, nil
}

// legacyLBExtras reads zone_aware_lb_config from common_lb_config and
// slow_start_config from round_robin_lb_config or least_request_lb_config.
func legacyLBExtras(c *clusterv3.Cluster, out *Cluster) error {
	if z := c.GetCommonLbConfig().GetZoneAwareLbConfig(); z != nil {
		cfg, err := zoneAware(z.GetRoutingEnabled(), z.GetMinClusterSize(), z.GetFailTrafficOnPanic())
		if err != nil {
			return prefixed("common_lb_config.zone_aware_lb_config", err)
		}
		out.ZoneAware = cfg
	}
	var ss *clusterv3.Cluster_SlowStartConfig
	field := ""
	switch c.GetLbPolicy() {
	case clusterv3.Cluster_ROUND_ROBIN:
		ss, field = c.GetRoundRobinLbConfig().GetSlowStartConfig(), "round_robin_lb_config.slow_start_config"
	case clusterv3.Cluster_LEAST_REQUEST:
		ss, field = c.GetLeastRequestLbConfig().GetSlowStartConfig(), "least_request_lb_config.slow_start_config"
	}
	if ss != nil {
		cfg, err := slowStart(ss.GetSlowStartWindow(), ss.GetAggression().GetDefaultValue(), ss.GetAggression() != nil, ss.GetMinWeightPercent())
		if err != nil {
			return prefixed(field, err)
		}
		out.SlowStart = cfg
	}
	return nil
}

// typedLBExtras reads slow_start_config and locality_lb_config of a typed
// round_robin, least_request or random policy.
func typedLBExtras(a *anypb.Any, out *Cluster) error {
	var (
		ss  *commonv3.SlowStartConfig
		llb *commonv3.LocalityLbConfig
	)
	switch {
	case a.MessageIs((*roundrobinv3.RoundRobin)(nil)):
		rr := &roundrobinv3.RoundRobin{}
		if err := a.UnmarshalTo(rr); err != nil {
			return err
		}
		ss, llb = rr.GetSlowStartConfig(), rr.GetLocalityLbConfig()
	case a.MessageIs((*leastrequestv3.LeastRequest)(nil)):
		lr := &leastrequestv3.LeastRequest{}
		if err := a.UnmarshalTo(lr); err != nil {
			return err
		}
		ss, llb = lr.GetSlowStartConfig(), lr.GetLocalityLbConfig()
	case a.MessageIs((*randomv3.Random)(nil)):
		r := &randomv3.Random{}
		if err := a.UnmarshalTo(r); err != nil {
			return err
		}
		llb = r.GetLocalityLbConfig()
	case a.MessageIs((*wrrlocalityv3.WrrLocality)(nil)):
		// The child that knownPolicy chose: the first it knows.
		w := &wrrlocalityv3.WrrLocality{}
		if err := a.UnmarshalTo(w); err != nil {
			return err
		}
		for i, p := range w.GetEndpointPickingPolicy().GetPolicies() {
			tc := p.GetTypedExtensionConfig().GetTypedConfig()
			if ok, _ := knownPolicy(tc, &Cluster{}); ok {
				if err := typedLBExtras(tc, out); err != nil {
					return prefixed(fmt.Sprintf("endpoint_picking_policy.policies[%d]", i), err)
				}
				return nil
			}
		}
		return nil
	default:
		return nil
	}
	if ss != nil {
		cfg, err := slowStart(ss.GetSlowStartWindow(), ss.GetAggression().GetDefaultValue(), ss.GetAggression() != nil, ss.GetMinWeightPercent())
		if err != nil {
			return prefixed("slow_start_config", err)
		}
		out.SlowStart = cfg
	}
	if z := llb.GetZoneAwareLbConfig(); z != nil {
		cfg, err := zoneAware(z.GetRoutingEnabled(), z.GetMinClusterSize(), z.GetFailTrafficOnPanic())
		if err != nil {
			return prefixed("locality_lb_config.zone_aware_lb_config", err)
		}
		out.ZoneAware = cfg
		const f = "load_balancing_policy.policies.typed_extension_config.typed_config.locality_lb_config.zone_aware_lb_config."
		if z.GetForceLocalityDirectRouting() {
			out.Unapplied = append(out.Unapplied, f+"force_locality_direct_routing")
		}
		if z.GetForceLocalZone() != nil {
			out.Unapplied = append(out.Unapplied, f+"force_local_zone")
		}
		if z.GetLocalityBasis() != commonv3.LocalityLbConfig_ZoneAwareLbConfig_HEALTHY_HOSTS_NUM {
			out.Unapplied = append(out.Unapplied, f+"locality_basis")
		}
	}
	return nil
}

func zoneAware(routing *typev3.Percent, minSize *wrapperspb.UInt64Value, failOnPanic bool) (*ZoneAwareConfig, error) {
	cfg := &ZoneAwareConfig{RoutingEnabledPercent: 100, MinClusterSize: 6, FailTrafficOnPanic: failOnPanic}
	if routing != nil {
		v := routing.GetValue()
		if !(v >= 0 && v <= 100) {
			return nil, ferr("routing_enabled.value", "%v is not a percentage from 0 to 100", v)
		}
		cfg.RoutingEnabledPercent = v
	}
	if minSize != nil {
		cfg.MinClusterSize = minSize.GetValue()
	}
	return cfg, nil
}

func slowStart(window *durationpb.Duration, aggression float64, hasAggression bool, minWeight *typev3.Percent) (*SlowStartConfig, error) {
	if window == nil {
		return nil, nil // Envoy: no window, no slow start
	}
	w, err := duration(window)
	if err != nil {
		return nil, prefixed("slow_start_window", err)
	}
	if w == 0 {
		return nil, nil
	}
	cfg := &SlowStartConfig{Window: w, Aggression: 1, MinWeightPercent: 10}
	if hasAggression {
		if !(aggression > 0) || math.IsInf(aggression, 0) {
			return nil, ferr("aggression.default_value", "%v: must be a finite number above 0", aggression)
		}
		cfg.Aggression = aggression
	}
	if minWeight != nil {
		v := minWeight.GetValue()
		if !(v >= 0 && v <= 100) {
			return nil, ferr("min_weight_percent.value", "%v is not a percentage from 0 to 100", v)
		}
		cfg.MinWeightPercent = v
	}
	return cfg, nil
}

// routeSessionOf is routeSession for one route of a route configuration,
// noting other filters' per-route configs in out's unapplied fields.
func routeSessionOf(r *routev3.Route, vh *routev3.VirtualHost, routeField, vhostField string, out *RouteConfig) (*RouteSession, error) {
	if len(r.GetTypedPerFilterConfig())+len(vh.GetTypedPerFilterConfig()) == 0 {
		return nil, nil
	}
	s, unapplied, err := routeSession(r.GetTypedPerFilterConfig(), vh.GetTypedPerFilterConfig(), routeField, vhostField)
	if err != nil {
		return nil, err
	}
	out.Unapplied = append(out.Unapplied, unapplied...)
	return s, nil
}
