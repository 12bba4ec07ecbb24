package rbac

import (
	"fmt"
	"strconv"
	"strings"
)

// String says what s matches, for an operator: `= "x"`,
// `starts with "x"`, `~ "x"`.
func (s *StringMatcher) String() string {
	if s == nil {
		return "any"
	}
	var out string
	switch s.Kind {
	case MatchExact:
		out = "= " + strconv.Quote(s.Value)
	case MatchPrefix:
		out = "starts with " + strconv.Quote(s.Value)
	case MatchSuffix:
		out = "ends with " + strconv.Quote(s.Value)
	case MatchContains:
		out = "contains " + strconv.Quote(s.Value)
	case MatchRegex:
		out = "~ " + strconv.Quote(s.Value)
	default:
		out = "?" + strconv.Quote(s.Value)
	}
	if s.IgnoreCase {
		out += " (any case)"
	}
	return out
}

// String says in words what m matches, for the admin page: the rule
// that decided a request must be readable without the YAML at hand.
func (m Matcher) String() string {
	switch m.kind {
	case kindAny:
		return "any"
	case kindNone:
		return "none"
	case kindAnd, kindOr:
		sep := " and "
		if m.kind == kindOr {
			sep = " or "
		}
		parts := make([]string, 0, len(m.subs))
		for _, s := range m.subs {
			p := s.String()
			if len(s.subs) > 1 && (s.kind == kindAnd || s.kind == kindOr) {
				p = "(" + p + ")"
			}
			parts = append(parts, p)
		}
		return strings.Join(parts, sep)
	case kindNot:
		return "not (" + m.subs[0].String() + ")"
	case kindHeader:
		return m.header.String()
	case kindPath:
		return "path " + m.str.String()
	case kindHost:
		return "host " + m.str.String()
	case kindDestinationIP:
		return "destination " + m.prefix.String()
	case kindDestinationPort:
		if m.hi == m.lo+1 {
			return fmt.Sprintf("port %d", m.lo)
		}
		return fmt.Sprintf("ports [%d, %d)", m.lo, m.hi)
	case kindServerName:
		return "SNI " + m.str.String()
	case kindAuthenticated:
		if m.str == nil {
			return "authenticated"
		}
		return "principal " + m.str.String()
	case kindRemoteIP:
		return "source " + m.prefix.String()
	}
	return "?"
}

// String says what h matches: `header x-env = "prod" (any case)`,
// `not header x-debug present`, `header x-shard in [1, 10)`.
func (h *HeaderMatcher) String() string {
	s := "header " + h.Name + " " + h.Condition()
	if h.Invert {
		s = "not " + s
	}
	return s
}

// Condition says what h asks of its header's value, without the name and
// without the inversion: `present`, `= "x"`, `in [1, 5)`.
func (h *HeaderMatcher) Condition() string {
	switch h.Kind {
	case MatchPresent:
		if h.Present {
			return "present"
		}
		return "absent"
	case MatchRange:
		return fmt.Sprintf("in [%d, %d)", h.RangeStart, h.RangeEnd)
	}
	return (&StringMatcher{Kind: h.Kind, Value: h.Value, IgnoreCase: h.IgnoreCase}).String()
}

// String says in words what p matches: "<permissions> from
// <principals>", each side's alternatives joined by "or".
func (p *Policy) String() string {
	return or(p.Permissions) + " from " + or(p.Principals)
}

func or(ms []Matcher) string {
	if len(ms) == 0 {
		return "none"
	}
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = m.String()
		if len(ms) > 1 && len(m.subs) > 1 {
			parts[i] = "(" + parts[i] + ")"
		}
	}
	return strings.Join(parts, " or ")
}
