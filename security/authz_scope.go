package security

// Workload describes the service a policy file is loaded by, so that
// policies written for other workloads (Istio's metadata.namespace,
// spec.selector and spec.targetRefs) do not apply to it. One file can then
// hold a namespace's or a mesh's policies, as istiod serves them.
type Workload struct {
	// Namespace is the workload's namespace; "" means unknown, and then
	// namespaces, selectors and targetRefs are not checked.
	Namespace string
	// Service is the workload's service name, matched by targetRefs of
	// kind Service.
	Service string
	// Labels are the workload's labels, matched by spec.selector.
	Labels map[string]string
	// RootNamespace is the mesh's root namespace, whose policies apply to
	// every namespace; "" means Istio's default, istio-system.
	RootNamespace string
}

// DefaultRootNamespace is Istio's default root namespace.
const DefaultRootNamespace = "istio-system"

// For returns the policies of p that apply to w, by Istio's rules:
//   - a policy in the root namespace applies in every namespace, one in
//     another namespace only to workloads of that namespace, and one
//     without a namespace (a local file's) to the workload loading it;
//   - spec.selector applies it to workloads carrying all its matchLabels
//     (an empty selector, to all);
//   - spec.targetRefs apply it to the workload when one names its
//     Service; references to Gateways or ServiceEntries never apply to a
//     workload.
//
// With w's Namespace empty, For returns p unchanged: the file is taken as
// written for this workload.
func (p *PolicySet) For(w Workload) *PolicySet {
	if p == nil || w.Namespace == "" {
		return p
	}
	if w.RootNamespace == "" {
		w.RootNamespace = DefaultRootNamespace
	}
	filter := func(ps []*policy) []*policy {
		var out []*policy
		for _, pol := range ps {
			if pol.scope.appliesTo(&w) {
				out = append(out, pol)
			}
		}
		return out
	}
	var authn []*requestAuthn
	for _, ra := range p.authn {
		if ra.scope.appliesTo(&w) {
			authn = append(authn, ra)
		}
	}
	return (&PolicySet{allow: filter(p.allow), deny: filter(p.deny), audit: filter(p.audit), authn: authn}).compile()
}

func (s *policyScope) appliesTo(w *Workload) bool {
	switch s.namespace {
	case "", w.Namespace, w.RootNamespace:
	default:
		return false
	}
	if s.selector != nil {
		for k, v := range s.selector {
			if got, ok := w.Labels[k]; !ok || got != v {
				return false
			}
		}
		return true
	}
	if len(s.targetRefs) > 0 {
		for _, r := range s.targetRefs {
			if r.Kind == "Service" && (r.Group == "" || r.Group == "core") && r.Name == w.Service {
				return true
			}
		}
		return false
	}
	return true
}

// WithWorkload makes [WatchPolicyFile] keep only the policies that apply
// to w (see [PolicySet.For]).
func WithWorkload(w Workload) Option {
	return optionFunc(func(o *options) { o.workload = w })
}
