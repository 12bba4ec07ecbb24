package rbac

// ValueKind is what a [ValueMatcher] compares (envoy.type.matcher.v3.ValueMatcher).
type ValueKind uint8

// Value matcher kinds.
const (
	// ValueNull matches a JSON null.
	ValueNull ValueKind = iota
	// ValueDouble matches a number equal to Exact, or in [Lo, Hi) when
	// IsRange.
	ValueDouble
	// ValueString matches a string with String.
	ValueString
	// ValueBool matches the boolean Bool.
	ValueBool
	// ValuePresent matches any value when Present, an absent one when not.
	ValuePresent
	// ValueList matches a list one of whose elements matches Subs[0]
	// (Envoy's list_match.one_of).
	ValueList
	// ValueOr matches when one of Subs matches.
	ValueOr
)

// ValueMatcher matches one metadata value: Envoy's ValueMatcher over the
// JSON values a verified token's payload holds (string, float64, bool,
// nil, []any, map[string]any).
type ValueMatcher struct {
	Kind          ValueKind
	String        StringMatcher
	Bool, Present bool
	Exact, Lo, Hi float64
	IsRange       bool
	Subs          []ValueMatcher
}

// Match reports whether v (nil and absent alike for ValuePresent; use
// present to tell them apart) matches.
func (m *ValueMatcher) match(v any, present bool) bool {
	switch m.Kind {
	case ValuePresent:
		return present == m.Present
	case ValueNull:
		return present && v == nil
	case ValueDouble:
		f, ok := v.(float64)
		if !ok {
			return false
		}
		if m.IsRange {
			return m.Lo <= f && f < m.Hi
		}
		return f == m.Exact
	case ValueString:
		s, ok := v.(string)
		return ok && m.String.Match(s)
	case ValueBool:
		b, ok := v.(bool)
		return ok && b == m.Bool
	case ValueList:
		l, ok := v.([]any)
		if !ok || len(m.Subs) == 0 {
			return false
		}
		for _, e := range l {
			if m.Subs[0].match(e, true) {
				return true
			}
		}
		return false
	case ValueOr:
		for i := range m.Subs {
			if m.Subs[i].match(v, present) {
				return true
			}
		}
	}
	return false
}

// metadataMatcher is Envoy's MetadataMatcher: the value at Path under the
// filter's metadata, matched by Value, the result inverted by Invert.
type metadataMatcher struct {
	filter string
	path   []string
	value  ValueMatcher
	invert bool
}

// Metadata matches the request's dynamic metadata ([Input.Metadata]):
// the value at path in the metadata of filter. A request without it
// (no verified token, for the jwt_authn filter's) has no value there,
// which only an inverted or a present_match: false matcher matches.
func Metadata(filter string, path []string, value ValueMatcher, invert bool) Matcher {
	return Matcher{kind: kindMetadata, md: &metadataMatcher{filter: filter, path: path, value: value, invert: invert}}
}

func (m *metadataMatcher) match(in *Input) bool {
	v, ok := lookup(in.Metadata[m.filter], m.path)
	return m.value.match(v, ok) != m.invert
}

// lookup walks path down nested objects.
func lookup(root map[string]any, path []string) (any, bool) {
	if root == nil || len(path) == 0 {
		return nil, false
	}
	var cur any = root
	for _, k := range path {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = obj[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}
