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
	switch m.Kind {
	case PathPrefix:
		parts = append(parts, "prefix "+strconv.Quote(m.Path))
	case PathExact:
		parts = append(parts, "path = "+strconv.Quote(m.Path))
	case PathRegex:
		parts = append(parts, "path ~ "+strconv.Quote(m.Path))
	}
	if !m.CaseSensitive && len(parts) > 0 {
		parts[len(parts)-1] += " (any case)"
	}
	for i := range m.Headers {
		parts = append(parts, m.Headers[i].String())
	}
	for _, q := range m.QueryParams {
		s := "query " + q.Name
		if q.Kind == MatchPresent {
			s += " present"
		} else {
			s += " " + (&rbac.StringMatcher{Kind: q.Kind, Value: q.Value, IgnoreCase: q.IgnoreCase}).String()
		}
		parts = append(parts, s)
	}
	if m.HasFraction {
		parts = append(parts, "fraction "+strconv.FormatFloat(float64(m.FractionPerMillion)/10_000, 'f', -1, 64)+"%")
	}
	return strings.Join(parts, " and ")
}
