package mesh

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/weftmesh/weft/internal/xds"
	"github.com/weftmesh/weft/resilience"
	"github.com/weftmesh/weft/telemetry/admin"
)

// routes returns the route configurations the HTTP path follows, by URL
// host, sorted. The hosts map is copy on write and each hostState is
// immutable, so no lock is taken.
func (m *Mesh) routes() []admin.HostRoutes {
	out := []admin.HostRoutes{}
	if m.xds == nil {
		return out
	}
	for host, h := range *m.xds.hosts.Load() {
		hr := admin.HostRoutes{Host: host, Listener: h.name, State: "PENDING", VirtualHosts: []admin.VirtualHost{}}
		st := h.state.Load()
		switch {
		case st == nil:
		case !st.exists:
			hr.State = "NOT_FOUND"
		case st.routes == nil:
			hr.State = "ERROR"
		default:
			hr.State = "ACTIVE"
		}
		if st != nil && st.err != nil {
			hr.Error = st.err.Error()
		}
		if st != nil && st.routes != nil {
			hr.RouteConfig = st.routes.ResourceName()
			for _, vh := range st.routes.VirtualHosts {
				v := admin.VirtualHost{Name: vh.Name, Domains: vh.Domains, Routes: make([]admin.Route, 0, len(vh.Routes))}
				if v.Domains == nil {
					v.Domains = []string{}
				}
				for _, r := range vh.Routes {
					v.Routes = append(v.Routes, describeRoute(r, st.plans[r]))
				}
				hr.VirtualHosts = append(hr.VirtualHosts, v)
			}
		}
		out = append(out, hr)
	}
	slices.SortFunc(out, func(a, b admin.HostRoutes) int { return strings.Compare(a.Host, b.Host) })
	return out
}

func describeRoute(r *xds.Route, plan *routePlan) admin.Route {
	a := &r.Action
	e := admin.Route{Name: r.Name, Match: r.Match.String()}
	if a.Kind != xds.ActionForward {
		e.NonForwarding = true
		return e
	}
	e.Cluster = a.Cluster
	for _, w := range a.WeightedClusters {
		share := admin.WeightedShare{Name: w.Name, Weight: w.Weight}
		if a.TotalWeight > 0 {
			share.Percent = float64(w.Weight) * 100 / float64(a.TotalWeight)
		}
		e.WeightedClusters = append(e.WeightedClusters, share)
	}
	if plan != nil {
		switch t := plan.HTTP.Timeout; {
		case t < 0:
			e.Timeout = "off"
		case t == 0:
			e.Timeout = resilience.DefaultRouteTimeout.String()
		default:
			e.Timeout = t.String()
		}
		if plan.HTTP.NumRetries > 0 && a.RetryPolicy != nil {
			e.Retries = fmt.Sprintf("%d on %s", plan.HTTP.NumRetries, strings.Join(a.RetryPolicy.RetryOn, ","))
		}
	}
	var rw []string
	if a.PrefixRewrite != "" {
		rw = append(rw, "prefix → "+strconv.Quote(a.PrefixRewrite))
	}
	if a.RegexRewrite != nil {
		rw = append(rw, "path ~ "+strconv.Quote(a.RegexRewrite.Pattern.String())+" → "+strconv.Quote(a.RegexRewrite.Substitution))
	}
	switch {
	case a.HostRewrite != "":
		rw = append(rw, "host → "+strconv.Quote(a.HostRewrite))
	case a.HostRewriteHeader != "":
		rw = append(rw, "host → header "+strconv.Quote(a.HostRewriteHeader))
	case a.HostRewritePathRegex != nil:
		rw = append(rw, "host ← path ~ "+strconv.Quote(a.HostRewritePathRegex.Pattern.String())+" → "+strconv.Quote(a.HostRewritePathRegex.Substitution))
	case a.AutoHostRewrite:
		rw = append(rw, "host → the endpoint's hostname")
	}
	e.Rewrite = strings.Join(rw, "; ")
	var ms []string
	for _, m := range a.MirrorPolicies {
		ms = append(ms, fmt.Sprintf("%s %g%%", m.Cluster, float64(m.FractionPerMillion)/10_000))
	}
	e.Mirror = strings.Join(ms, ", ")
	return e
}
