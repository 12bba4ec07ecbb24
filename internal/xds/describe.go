package xds

import (
	"strconv"
	"strings"

	"github.com/weftmesh/weft/internal/rbac"
)

// String says what m matches, the way an operator would write it down
// (every clause must hold): `prefix "/api" and header x-canary = "true"`.
func (m *RouteMatch) String() string {
	var parts []string
	if p := m.pathString(); p != "" {
		parts = append(parts, p)
	}
	for i := range m.Headers {
		parts = append(parts, m.Headers[i].String())
	}
	for i := range m.QueryParams {
		parts = append(parts, "query "+m.QueryParams[i].String())
	}
	if m.HasFraction {
		parts = append(parts, "fraction "+percent(m.FractionPerMillion))
	}
	return strings.Join(parts, " and ")
}

// String says what q asks of the request's query: `v starts with "2"`,
// `debug present`.
func (q *QueryParamMatcher) String() string {
	if q.Kind == MatchPresent {
		return q.Name + " present"
	}
	return q.Name + " " + (&rbac.StringMatcher{Kind: q.Kind, Value: q.Value, IgnoreCase: q.IgnoreCase}).String()
}

// pathString says what m asks of the path. case_sensitive applies to
// prefix and exact paths only, as in Envoy, not to a regex.
func (m *RouteMatch) pathString() string {
	var s string
	switch m.Kind {
	case PathPrefix:
		s = "prefix " + strconv.Quote(m.Path)
	case PathExact:
		s = "path = " + strconv.Quote(m.Path)
	case PathRegex:
		return "path ~ " + strconv.Quote(m.Path)
	default:
		return ""
	}
	if !m.CaseSensitive {
		s += " (any case)"
	}
	return s
}

func percent(perMillion uint32) string {
	return strconv.FormatFloat(float64(perMillion)/10_000, 'f', -1, 64) + "%"
}
