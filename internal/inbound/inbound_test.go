package inbound_test

import (
	"crypto/x509"
	"errors"
	"net/netip"
	"net/url"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/inbound"
	"github.com/weftmesh/weft/internal/xds"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func decode(t *testing.T, l *listenerv3.Listener) *xds.ServerListener {
	t.Helper()
	a, err := anypb.New(l)
	if err != nil {
		t.Fatal(err)
	}
	_, r, err := xds.Decode(xds.ListenerType, a)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	return r.(*xds.Listener).Server
}

// TestDecide: one PERMISSIVE listener with a per-port chain closed to
// everyone, every outcome in Envoy's order (chain, transport, route,
// RBAC), and the enforcing verdicts recorded (LOG filters not).
func TestDecide(t *testing.T) {
	exact := func(s string) *matcherv3.StringMatcher {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
	}
	anyone := &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
	caller := &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: exact("spiffe://td/caller")}}}
	everything := &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}
	rc := &routev3.RouteConfiguration{Name: "in", VirtualHosts: []*routev3.VirtualHost{{Name: "in", Domains: []string{"*"}, Routes: []*routev3.Route{
		{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/svc.Fwd/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"}}}},
		{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/svc."}},
			Action: &routev3.Route_NonForwardingAction{NonForwardingAction: &routev3.NonForwardingAction{}}},
	}}}}
	logAll := xdstest.RBACFilter("log", &rbacv3.RBAC{Action: rbacv3.RBAC_LOG, Policies: map[string]*rbacv3.Policy{
		"log": {Permissions: []*rbacv3.Permission{everything}, Principals: []*rbacv3.Principal{anyone}}}})
	deny := xdstest.RBACFilter("deny", &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{
		"deny-drop": {Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: exact("/svc.Admin/Drop")}}}}},
			Principals: []*rbacv3.Principal{anyone}}}})
	allow := xdstest.RBACFilter("allow", &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
		"allow-caller": {Permissions: []*rbacv3.Permission{everything}, Principals: []*rbacv3.Principal{caller}}}})
	chains := xdstest.PeerAuthentication("PERMISSIVE", rc, logAll, deny, allow)
	closed := xdstest.FilterChain("closed", rc, xdstest.RBACFilter("deny-all", &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW}))
	closed.FilterChainMatch = &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(9000)}
	l := decode(t, xdstest.ServerListener("in", netip.MustParseAddrPort("0.0.0.0:8080"), nil, append(chains, closed)...))

	u, _ := url.Parse("spiffe://td/caller")
	callerCert := &x509.Certificate{URIs: []*url.URL{u}}
	local, remote := netip.MustParseAddrPort("10.0.0.1:8080"), netip.MustParseAddrPort("10.0.0.2:40000")
	req := func(path string, tls bool, cert *x509.Certificate) *inbound.Request {
		r, host := xds.RequestFromGRPC(path, metadata.Pairs(":authority", "orders:8080", "x-user", "a"), tls)
		return &inbound.Request{Conn: xds.ConnInfo{Local: local, Remote: remote, TLS: tls}, Host: host, Req: &r, PeerCert: cert}
	}
	onPort := func(r *inbound.Request, port uint16) *inbound.Request {
		r.Conn.Local = netip.AddrPortFrom(local.Addr(), port)
		return r
	}
	for _, c := range []struct {
		name     string
		r        *inbound.Request
		want     inbound.Outcome
		policy   string
		recorded int
	}{
		{"mTLS caller allowed", req("/svc.Orders/Get", true, callerCert), inbound.Allowed, "", 2},
		{"DENY by method path", req("/svc.Admin/Drop", true, callerCert), inbound.Denied, "deny-drop", 1},
		{"ALLOW: plaintext has no principal", req("/svc.Orders/Get", false, nil), inbound.Denied, "", 2},
		{"TLS without the client certificate the chain requires", req("/svc.Orders/Get", true, nil), inbound.TransportMismatch, "", 0},
		{"no route", req("/other.Svc/Get", true, callerCert), inbound.NoRoute, "", 0},
		{"route that forwards", req("/svc.Fwd/Get", true, callerCert), inbound.NotNonForwarding, "", 0},
		{"per-port chain", onPort(req("/svc.Orders/Get", true, callerCert), 9000), inbound.Denied, "", 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := 0
			d := inbound.Decide(l, nil, c.r, func(bool, string) { n++ })
			if d.Outcome != c.want || d.Policy != c.policy || n != c.recorded {
				t.Errorf("Decide = outcome %v policy %q with %d verdicts recorded, want %v %q %d", d.Outcome, d.Policy, n, c.want, c.policy, c.recorded)
			}
		})
	}

	// A chain naming its routes over RDS waits for them.
	rdsOnly := &xds.ServerListener{FilterChains: []*xds.FilterChain{{Name: "rds", RouteConfigName: "in"}}}
	if d := inbound.Decide(rdsOnly, nil, req("/svc.Orders/Get", false, nil), nil); d.Outcome != inbound.RoutesPending {
		t.Errorf("RDS routes not arrived: outcome %v, want RoutesPending", d.Outcome)
	}
	if d := inbound.Decide(rdsOnly, map[string]*xds.RouteConfig{"in": l.FilterChains[0].RouteConfig}, req("/svc.Orders/Get", false, nil), nil); d.Outcome != inbound.Allowed {
		t.Errorf("RDS routes arrived: outcome %v, want Allowed", d.Outcome)
	}

	// Connections: the chain for each, or none.
	noDefault := decode(t, xdstest.ServerListener("in", netip.AddrPort{}, nil, closed))
	if _, err := inbound.Chain(noDefault, xds.ConnInfo{Local: local, Remote: remote}); !errors.Is(err, inbound.ErrNoFilterChain) {
		t.Errorf("Chain without a match: %v, want ErrNoFilterChain", err)
	}
	if fc, err := inbound.Chain(l, xds.ConnInfo{Local: local, Remote: remote, TLS: true}); err != nil || fc.TLS.String() != "mtls" {
		t.Errorf("Chain for a TLS connection = %v %v, want the mtls chain", fc, err)
	}
}
