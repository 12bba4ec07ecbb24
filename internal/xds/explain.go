package xds

import (
	"fmt"
	"strconv"
	"strings"
)

// MismatchKind is the kind of route condition a request failed.
type MismatchKind uint8

// Mismatch kinds, in the order a route's conditions are checked.
const (
	Matched MismatchKind = iota
	MismatchPath
	MismatchHeader
	MismatchQuery
	// MismatchFraction: the request met every other condition, and the
	// route's runtime fraction, drawn per request, did not take it.
	MismatchFraction
)

// Mismatch is the first condition of a route match a request fails.
type Mismatch struct {
	Kind MismatchKind
	// Index is the failing header or query parameter matcher.
	Index int
}

// RouteVerdict is what one route made of a request.
type RouteVerdict struct {
	Route    *Route
	Mismatch Mismatch
	// Reason says in words why the route did not take the request; ""
	// when it did.
	Reason string
}

// ExplainFractionSample is the FractionSample Explain is meant to be
// given: the largest a request can draw, which every runtime fraction
// below 100% refuses. A route with a fraction is then reported with the
// share of requests it takes, and the walk goes on to the route that
// takes the rest, as the data path would for the requests that draw
// above the share.
const ExplainFractionSample = 999_999

// Explain walks the routes of the virtual host that host selects exactly
// as Match does (through the same matcher) and returns the virtual host,
// the verdict of each route up to and including the first that takes r,
// and that route (nil when none does). Unlike Match it allocates, to say
// why; it is for the admin endpoint, not the data path.
func (rc *RouteConfig) Explain(host string, r *Request) (vh *VirtualHost, verdicts []RouteVerdict, matched *Route) {
	vh = rc.MatchVirtualHost(host)
	if vh == nil {
		return nil, nil, nil
	}
	for _, rt := range vh.Routes {
		mm := rt.Match.mismatch(host, r)
		v := RouteVerdict{Route: rt, Mismatch: mm}
		if mm.Kind != Matched {
			v.Reason = rt.Match.explain(mm, host, r)
		}
		verdicts = append(verdicts, v)
		if mm.Kind == Matched {
			return vh, verdicts, rt
		}
	}
	return vh, verdicts, nil
}

// explain says in words why r failed m's condition mm.
func (m *RouteMatch) explain(mm Mismatch, host string, r *Request) string {
	switch mm.Kind {
	case MismatchPath:
		return fmt.Sprintf("path %q: want %s", r.Path, m.pathString())
	case MismatchHeader:
		h := &m.Headers[mm.Index]
		in := headerInput(host, r)
		got := "absent"
		if vs := r.Header.Values(h.Name); len(vs) > 0 {
			got = strconv.Quote(strings.Join(vs, ","))
		}
		switch strings.ToLower(h.Name) {
		case ":method":
			got = strconv.Quote(in.Method)
		case ":path":
			got = strconv.Quote(in.Path)
		case ":authority", "host":
			got = strconv.Quote(in.Host)
		case ":scheme":
			got = strconv.Quote(in.Scheme)
		}
		return fmt.Sprintf("header %s is %s: want %s", h.Name, got, headerString(h))
	case MismatchQuery:
		q := &m.QueryParams[mm.Index]
		return fmt.Sprintf("query %q: want %s", r.RawQuery, q.String())
	case MismatchFraction:
		return fmt.Sprintf("runtime fraction, drawn per request: the route takes %s of the requests it matches otherwise; the rest go on to the next route",
			percent(m.FractionPerMillion))
	}
	return ""
}

// headerString is what h asks of its header, the inversion in front.
func headerString(h *HeaderMatcher) string {
	if h.Invert {
		return "not " + h.Condition()
	}
	return h.Condition()
}

// StringMatcherString says what a string matcher accepts: `exact
// "spiffe://td/ns/a/sa/b"`.
func StringMatcherString(m *StringMatcher) string {
	s := m.String()
	if m.Kind == MatchExact {
		s = "exact " + strconv.Quote(m.Value)
		if m.IgnoreCase {
			s += " (any case)"
		}
	}
	return s
}
