package mesh

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/internal/xds"
	"github.com/weftmesh/weft/security"
	"github.com/weftmesh/weft/telemetry/admin"
)

// Decisions for the admin page are recorded where they are made: the
// policy file's by countedPolicy, the xDS RBAC filters' by the record
// callback of inbound.Decide, for HTTP and gRPC alike. A denial is always
// recorded; an allowed request costs an atomic add and a clock read, and
// is recorded only when the log samples it (admin.DecisionLog.Allow).

// sampleDecision counts a decision and reports whether to record it.
func (m *Mesh) sampleDecision(allowed bool) bool {
	if allowed {
		return m.decisions.Allow()
	}
	return m.decisions.Deny()
}

// recordDecision records one decision of the policy file.
func (m *Mesh) recordDecision(engine, protocol string, allowed bool, rule string, r *security.Request) {
	if m.decisions == nil || !m.sampleDecision(allowed) {
		return
	}
	m.record(engine, protocol, allowed, rule, r.Method, r.Path, r.SourceID, r.SourceIP)
}

// recordXDSDecision records one verdict of an xDS RBAC filter.
func (m *Mesh) recordXDSDecision(ctx context.Context, protocol string, allowed bool, policy, method, path string, remote netip.AddrPort) {
	if m.decisions == nil || !m.sampleDecision(allowed) {
		return
	}
	id, _ := security.PeerID(ctx)
	m.record("xds_rbac", protocol, allowed, policy, method, path, id, remote.Addr())
}

// record keeps a decision; the peer is the caller's SPIFFE ID when it
// has one, else its address.
func (m *Mesh) record(engine, protocol string, allowed bool, rule, method, path string, id spiffeid.ID, ip netip.Addr) {
	peer := id.String()
	if id.IsZero() {
		peer = ""
		if ip.IsValid() {
			peer = ip.String()
		}
	}
	m.decisions.Record(admin.Decision{Allowed: allowed, Engine: engine, Rule: rule, Peer: peer, Protocol: protocol,
		Method: method, Path: path})
}

// Inbound is the server side for the admin page: who this service is to
// its callers, the TLS mode and RBAC of each xDS inbound listener, the
// policy file in force and the recent decisions.
func (a adminSource) Inbound() admin.Inbound {
	m := a.m
	in := admin.Inbound{MTLS: m.mtlsMode().String(), Identity: a.Status(time.Now()).Identity}
	if m.inbound != nil {
		in.Listeners = m.inbound.describe()
	}
	if m.authz != nil {
		st := m.authz.Status()
		in.PolicyFile = st.Path
		if st.Err != nil {
			in.PolicyError = st.Err.Error()
		}
		for _, p := range m.authz.Policies().Describe() {
			in.Policies = append(in.Policies, admin.Policy{Name: p.Name, Action: p.Action, Rules: p.Rules})
		}
	}
	in.Allowed, in.Denied, in.Decisions = m.decisions.Snapshot()
	return in
}

// describe lists the inbound listeners the servers follow, by address.
func (in *inboundXDS) describe() []admin.InboundListener {
	out := []admin.InboundListener{}
	for addr, l := range *in.listeners.Load() {
		il := admin.InboundListener{Name: l.name, Address: addr, State: "PENDING"}
		if st := l.state.Load(); st != nil {
			switch {
			case st.err != nil:
				il.State, il.Error = "ERROR", st.err.Error()
			case !st.exists:
				il.State = "NOT_FOUND"
			default:
				il.State = "ACTIVE"
			}
			if st.listener != nil {
				il.Mode = listenerMode(st.listener)
				for _, fc := range st.listener.FilterChains {
					il.Chains = append(il.Chains, describeChain(fc, false))
				}
				if fc := st.listener.Default; fc != nil {
					il.Chains = append(il.Chains, describeChain(fc, true))
				}
			}
		}
		out = append(out, il)
	}
	slices.SortFunc(out, func(a, b admin.InboundListener) int { return strings.Compare(a.Address, b.Address) })
	return out
}

// chainMode is the transport a filter chain requires, in Istio's words
// where they fit: STRICT (mutual TLS), TLS (server-side only) or
// PLAINTEXT.
func chainMode(fc *xds.FilterChain) string {
	switch {
	case fc.TLS == nil:
		return "PLAINTEXT"
	case fc.TLS.RequireClientCert:
		return "STRICT"
	}
	return "TLS"
}

// listenerMode sums a listener's chains up as PeerAuthentication would:
// STRICT when every chain requires mutual TLS, DISABLE when none speaks
// TLS, PERMISSIVE when both kinds are served.
func listenerMode(l *xds.ServerListener) string {
	chains := append(slices.Clone(l.FilterChains), l.Default)
	tls, plain := 0, 0
	for _, fc := range chains {
		switch {
		case fc == nil:
		case fc.TLS == nil:
			plain++
		default:
			tls++
		}
	}
	switch {
	case tls > 0 && plain > 0:
		return "PERMISSIVE"
	case plain > 0:
		return "DISABLE"
	case tls > 0:
		for _, fc := range chains {
			if fc != nil && !fc.TLS.RequireClientCert {
				return "TLS"
			}
		}
		return "STRICT"
	}
	return ""
}

func describeChain(fc *xds.FilterChain, isDefault bool) admin.InboundChain {
	c := admin.InboundChain{Name: fc.Name, MTLS: chainMode(fc), RouteConfig: fc.RouteConfigName, Match: describeChainMatch(&fc.Match)}
	if isDefault {
		c.Match = "default (no other chain matches)"
	}
	if fc.RouteConfig != nil {
		c.RouteConfig = fc.RouteConfig.ResourceName()
	}
	for _, f := range fc.RBAC {
		for i := range f.Policies {
			p := &f.Policies[i]
			c.RBAC = append(c.RBAC, admin.Policy{Name: p.Name, Action: f.Action.String(), Filter: f.FilterName, Rules: []string{p.String()}})
		}
		if len(f.Policies) == 0 {
			c.RBAC = append(c.RBAC, admin.Policy{Name: "(no policy)", Action: f.Action.String(), Filter: f.FilterName, Rules: []string{}})
		}
	}
	return c
}

func describeChainMatch(m *xds.FilterChainMatch) string {
	var parts []string
	if m.DestinationPort != 0 {
		parts = append(parts, fmt.Sprintf("port %d", m.DestinationPort))
	}
	for _, p := range m.PrefixRanges {
		parts = append(parts, "destination "+p.String())
	}
	if m.TransportProtocol != "" {
		parts = append(parts, "transport "+m.TransportProtocol)
	}
	switch m.SourceType {
	case xds.SourceLocal:
		parts = append(parts, "local source")
	case xds.SourceExternal:
		parts = append(parts, "external source")
	}
	for _, p := range m.SourcePrefixes {
		parts = append(parts, "source "+p.String())
	}
	for _, p := range m.SourcePorts {
		parts = append(parts, fmt.Sprintf("source port %d", p))
	}
	if len(parts) == 0 {
		return "any connection"
	}
	return strings.Join(parts, " and ")
}
