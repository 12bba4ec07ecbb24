package mesh

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/weftmesh/weft/internal/xds"
	"github.com/weftmesh/weft/resilience"
)

// hostRoutes is one URL host the HTTP path has met with xDS, as /routes
// reports it: the listener it names and the routes in force.
type hostRoutes struct {
	Host        string `json:"host"`
	Listener    string `json:"listener"`
	RouteConfig string `json:"route_config,omitempty"`
	// State is PENDING (no answer yet), NOT_FOUND (the control plane does
	// not know the listener: requests pass through), ERROR or ACTIVE.
	State        string              `json:"state"`
	Error        string              `json:"error,omitempty"`
	VirtualHosts []virtualHostRoutes `json:"virtual_hosts"`
}

type virtualHostRoutes struct {
	Name    string       `json:"name"`
	Domains []string     `json:"domains"`
	Routes  []routeEntry `json:"routes"`
}

// routeEntry is one route, in the order they are matched.
type routeEntry struct {
	Name string `json:"name,omitempty"`
	// Match says in words what the route matches.
	Match            string          `json:"match"`
	Cluster          string          `json:"cluster,omitempty"`
	WeightedClusters []weightedShare `json:"weighted_clusters,omitempty"`
	// NonForwarding routes (redirects, direct responses) fail the
	// requests they match.
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

type weightedShare struct {
	Name    string  `json:"name"`
	Weight  uint32  `json:"weight"`
	Percent float64 `json:"percent"`
}

// routes returns the route configurations the HTTP path follows, by URL
// host, sorted. The hosts map is copy on write and each hostState is
// immutable, so no lock is taken.
func (m *Mesh) routes() []hostRoutes {
	out := []hostRoutes{}
	if m.xds == nil {
		return out
	}
	for host, h := range *m.xds.hosts.Load() {
		hr := hostRoutes{Host: host, Listener: h.name, State: "PENDING", VirtualHosts: []virtualHostRoutes{}}
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
				v := virtualHostRoutes{Name: vh.Name, Domains: vh.Domains, Routes: make([]routeEntry, 0, len(vh.Routes))}
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
	slices.SortFunc(out, func(a, b hostRoutes) int { return strings.Compare(a.Host, b.Host) })
	return out
}

func (m *Mesh) serveRoutes(w http.ResponseWriter, _ *http.Request) { writeJSON(w, m.routes()) }

func describeRoute(r *xds.Route, plan *routePlan) routeEntry {
	a := &r.Action
	e := routeEntry{Name: r.Name, Match: describeMatch(&r.Match)}
	if a.Kind != xds.ActionForward {
		e.NonForwarding = true
		return e
	}
	e.Cluster = a.Cluster
	for _, w := range a.WeightedClusters {
		share := weightedShare{Name: w.Name, Weight: w.Weight}
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

// describeMatch says what a route matches, the way an operator would
// write it down: every clause must hold.
func describeMatch(m *xds.RouteMatch) string {
	var parts []string
	switch m.Kind {
	case xds.PathPrefix:
		parts = append(parts, "prefix "+strconv.Quote(m.Path))
	case xds.PathExact:
		parts = append(parts, "path = "+strconv.Quote(m.Path))
	case xds.PathRegex:
		parts = append(parts, "path ~ "+strconv.Quote(m.Path))
	}
	if !m.CaseSensitive {
		parts[len(parts)-1] += " (any case)"
	}
	for _, h := range m.Headers {
		parts = append(parts, describeString("header", h.Name, h.Kind, h.Value, h.IgnoreCase, h.Present, h.Invert, h.RangeStart, h.RangeEnd))
	}
	for _, q := range m.QueryParams {
		parts = append(parts, describeString("query", q.Name, q.Kind, q.Value, q.IgnoreCase, true, false, 0, 0))
	}
	if m.HasFraction {
		parts = append(parts, "fraction "+strconv.FormatFloat(float64(m.FractionPerMillion)/10_000, 'f', -1, 64)+"%")
	}
	return strings.Join(parts, " and ")
}

func describeString(what, name string, kind xds.StringMatchKind, value string, ignoreCase, present, invert bool, start, end int64) string {
	s := what + " " + name
	switch kind {
	case xds.MatchExact:
		s += " = " + strconv.Quote(value)
	case xds.MatchPrefix:
		s += " starts with " + strconv.Quote(value)
	case xds.MatchSuffix:
		s += " ends with " + strconv.Quote(value)
	case xds.MatchContains:
		s += " contains " + strconv.Quote(value)
	case xds.MatchRegex:
		s += " ~ " + strconv.Quote(value)
	case xds.MatchPresent:
		if present {
			s += " present"
		} else {
			s += " absent"
		}
	case xds.MatchRange:
		s += fmt.Sprintf(" in [%d, %d)", start, end)
	}
	if ignoreCase {
		s += " (any case)"
	}
	if invert {
		s = "not " + s
	}
	return s
}
