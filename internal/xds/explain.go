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
		return fmt.Sprintf("query %q: want %s", r.RawQuery, queryString(q))
	case MismatchFraction:
		return fmt.Sprintf("runtime fraction, drawn per request: the route takes %s of the requests it matches otherwise; the rest go on to the next route",
			percent(m.FractionPerMillion))
	}
	return ""
}

func percent(perMillion uint32) string {
	return strconv.FormatFloat(float64(perMillion)/10_000, 'f', -1, 64) + "%"
}

func (m *RouteMatch) pathString() string {
	var s string
	switch m.Kind {
	case PathPrefix:
		s = "prefix " + strconv.Quote(m.Path)
	case PathExact:
		s = "path = " + strconv.Quote(m.Path)
	case PathRegex:
		s = "path ~ " + strconv.Quote(m.Path)
	}
	if !m.CaseSensitive && m.Kind != PathRegex {
		s += " (any case)"
	}
	return s
}

func headerString(h *HeaderMatcher) string {
	s := valueString(h.Kind, h.Value, h.IgnoreCase, h.Present, h.RangeStart, h.RangeEnd)
	if h.Invert {
		s = "not " + s
	}
	return s
}

func queryString(q *QueryParamMatcher) string {
	if q.Kind == MatchPresent {
		return q.Name + " present"
	}
	return q.Name + " " + valueString(q.Kind, q.Value, q.IgnoreCase, true, 0, 0)
}

func valueString(kind StringMatchKind, value string, ignoreCase, present bool, start, end int64) string {
	var s string
	switch kind {
	case MatchExact:
		s = "= " + strconv.Quote(value)
	case MatchPrefix:
		s = "starts with " + strconv.Quote(value)
	case MatchSuffix:
		s = "ends with " + strconv.Quote(value)
	case MatchContains:
		s = "contains " + strconv.Quote(value)
	case MatchRegex:
		s = "~ " + strconv.Quote(value)
	case MatchPresent:
		if present {
			s = "present"
		} else {
			s = "absent"
		}
	case MatchRange:
		s = fmt.Sprintf("in [%d, %d)", start, end)
	}
	if ignoreCase {
		s += " (any case)"
	}
	return s
}

// StringMatcherString says what a string matcher accepts: `exact
// "spiffe://td/ns/a/sa/b"`.
func StringMatcherString(m *StringMatcher) string {
	s := valueString(m.Kind, m.Value, m.IgnoreCase, true, 0, 0)
	if m.Kind == MatchExact {
		s = "exact " + strconv.Quote(m.Value)
		if m.IgnoreCase {
			s += " (any case)"
		}
	}
	return s
}
