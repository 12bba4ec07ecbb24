// Package rbac is Weft's one authorization engine: the model of Envoy's
// RBAC HTTP filter (envoy.config.rbac.v3) and its evaluator.
//
// Both ways a policy reaches a server end here, as both end in Envoy's
// RBAC filter when istiod serves a sidecar: internal/xds translates the
// RBAC filters of an inbound listener, and package security translates
// Istio AuthorizationPolicy YAML the way istiod does (one policy per rule;
// a LOG filter for AUDIT, then DENY, then ALLOW). The same matchers decide
// both, so the two cannot drift apart. The package sees no protobufs.
//
// Everything here is immutable once built and safe for concurrent use.
// Evaluation does not allocate, except to join a header sent several
// times and to format a peer certificate's URI SANs.
package rbac

import (
	"crypto/x509"
	"net/http"
	"net/netip"
)

// Action is what a filter does with a matching policy.
type Action uint8

// Actions, as Envoy defines them.
const (
	// Allow admits a request only when a policy matches it.
	Allow Action = iota
	// Deny refuses a request when a policy matches it.
	Deny
	// Log admits every request; a match is only reported (Istio's AUDIT).
	Log
)

func (a Action) String() string {
	switch a {
	case Allow:
		return "ALLOW"
	case Deny:
		return "DENY"
	default:
		return "LOG"
	}
}

// Input is what evaluation reads about one HTTP request. It is a plain
// value; evaluation only reads it and never retains it.
type Input struct {
	// Method is the HTTP method (":method"); gRPC calls are "POST".
	Method string
	// Path is the request path without the query, as the caller
	// normalized it: url_path matchers and ":path" see exactly this.
	Path string
	// RawQuery is the query, appended to ":path" for header matchers.
	RawQuery string
	// Scheme answers a ":scheme" header matcher ("" = absent).
	Scheme string
	// Host is the authority (":authority", "host").
	Host string
	// Header are the request headers, keyed canonically as in net/http.
	Header http.Header
	// LocalAddr and LocalPort are the destination of the connection; the
	// zero values mean unknown, which no destination matcher matches.
	LocalAddr netip.Addr
	LocalPort uint16
	// RemoteAddr is the caller's address; the zero Addr when unknown. A
	// proxyless server has no proxy in front of it, so the direct remote
	// address is also the "remote" (original client) one.
	RemoteAddr netip.Addr
	// PeerCert is the caller's verified leaf certificate. Without one,
	// PeerID, the caller's verified SPIFFE ID ("spiffe://td/path"), stands
	// for a certificate whose only name is that URI SAN. Both empty: the
	// caller is not authenticated.
	PeerCert *x509.Certificate
	PeerID   string
	// ServerName is the TLS SNI the caller asked for ("" without TLS).
	ServerName string
	// Metadata is the request's dynamic metadata by filter name: what the
	// jwt_authn filter publishes of the tokens it verified (Istio's
	// request.auth.*). Nil when there is none.
	Metadata map[string]map[string]any
}

// Policy is one named RBAC policy: it matches a request when one of its
// permissions (what is asked) and one of its principals (who asks) match.
type Policy struct {
	Name        string
	Permissions []Matcher
	Principals  []Matcher
}

// Matches reports whether p matches in. Both sides are pure, so the order
// is only a matter of cost: principals are tried first unless that means
// formatting a certificate's names (see [AuthenticatedAs]), as most
// policies tell callers apart by who they are before what they ask.
func (p *Policy) Matches(in *Input) bool {
	if in.PeerCert == nil {
		return anyMatch(p.Principals, in) && anyMatch(p.Permissions, in)
	}
	return anyMatch(p.Permissions, in) && anyMatch(p.Principals, in)
}

// Filter is one RBAC filter: an action and its policies, tried in order.
type Filter struct {
	Action   Action
	Policies []Policy
}

// match returns the index of the first policy matching in, or -1.
func (f *Filter) match(in *Input) int {
	for i := range f.Policies {
		if f.Policies[i].Matches(in) {
			return i
		}
	}
	return -1
}

// Evaluate applies the filter alone: an ALLOW filter admits in when a
// policy matches, a DENY filter when none does; a LOG filter admits
// everything. matched names the first matching policy, "" when none did.
func (f *Filter) Evaluate(in *Input) (allowed bool, matched string) {
	if i := f.match(in); i >= 0 {
		return f.Action != Deny, f.Policies[i].Name
	}
	return f.Action != Allow, ""
}

// Engine is a chain of filters run in order, as Envoy runs the RBAC
// filters of an HTTP filter chain: the request must pass each. The zero
// Engine allows everything.
type Engine struct {
	Filters []Filter
}

// Decision is the outcome of [Engine.Evaluate]; a plain comparable value.
type Decision struct {
	// Allow reports whether every filter admitted the request.
	Allow bool
	// Action is the action of the filter that decided: the one that
	// refused, or for an admitted request the last ALLOW filter.
	Action Action
	// Matched reports whether a policy of that filter matched; Policy
	// names it. An admitted request with no match passed no ALLOW filter
	// because there was none; a refused one with no match found no ALLOW
	// policy for it.
	Matched bool
	Policy  string
	// Audit reports whether a LOG filter's policy matched; AuditPolicy
	// names the first that did.
	Audit       bool
	AuditPolicy string
}

// Evaluate runs the chain on in. LOG filters only mark the decision; the
// first DENY match or ALLOW miss refuses the request and ends the chain.
func (e *Engine) Evaluate(in *Input) Decision {
	d := Decision{Allow: true}
	for i := range e.Filters {
		f := &e.Filters[i]
		j := f.match(in)
		switch f.Action {
		case Log:
			if j >= 0 && !d.Audit {
				d.Audit, d.AuditPolicy = true, f.Policies[j].Name
			}
		case Deny:
			if j >= 0 {
				d.Allow, d.Action, d.Matched, d.Policy = false, Deny, true, f.Policies[j].Name
				return d
			}
		case Allow:
			if j < 0 {
				d.Allow, d.Action, d.Matched, d.Policy = false, Allow, false, ""
				return d
			}
			d.Action, d.Matched, d.Policy = Allow, true, f.Policies[j].Name
		}
	}
	return d
}
