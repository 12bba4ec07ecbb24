package security

// PolicyDescription is one AuthorizationPolicy of a PolicySet in words,
// for an operator's page: its name, action, and each rule as the RBAC
// engine matches it ("<operations> from <sources>").
type PolicyDescription struct {
	// Name is "namespace/name", or "#N" for the unnamed N-th document.
	Name string
	// Action is AUDIT, DENY or ALLOW.
	Action string
	// Rules are the policy's rules; an ALLOW policy with none matches no
	// request, so it denies every request no other ALLOW policy allows.
	Rules []string
}

// Describe returns the policies of s in evaluation order: AUDIT, DENY,
// then ALLOW. A nil or empty set has none.
func (s *PolicySet) Describe() []PolicyDescription {
	if s == nil {
		return nil
	}
	var out []PolicyDescription
	for _, g := range []struct {
		action string
		ps     []*policy
	}{{"AUDIT", s.audit}, {"DENY", s.deny}, {"ALLOW", s.allow}} {
		for _, p := range g.ps {
			d := PolicyDescription{Name: p.name, Action: g.action, Rules: []string{}}
			for _, r := range p.rules {
				rp := r.toRBAC(p.name)
				d.Rules = append(d.Rules, rp.String())
			}
			out = append(out, d)
		}
	}
	return out
}
