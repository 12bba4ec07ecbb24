package xds

import (
	"fmt"
	"net/http"
	"net/netip"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// benchRBACChain is what istiod sends for the policies of security's
// BenchmarkEvaluate: a DENY filter for /debug, then an ALLOW filter of n
// policies of which only the last (by name) matches the benchmark's request.
func benchRBACChain(tb testing.TB, n int) *FilterChain {
	principalPrefix := func(p string) *rbacv3.Principal { return principalName(prefixSM(p)) }
	and := func(ps ...*rbacv3.Principal) *rbacv3.Principal {
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: ps}}}
	}
	port := &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 8080}}
	team := &rbacv3.Principal{Identifier: &rbacv3.Principal_Header{Header: &routev3.HeaderMatcher{Name: "x-team",
		HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("blue")}}}}
	deny := xdstest.RBACFilter("deny", rbacRules(rbacv3.RBAC_DENY, map[string]*rbacv3.Policy{
		"deny-debug": {Permissions: []*rbacv3.Permission{permPath(prefixSM("/debug/"))}, Principals: []*rbacv3.Principal{principalAny}},
	}))
	pols := map[string]*rbacv3.Policy{}
	for i := 0; i < n-1; i++ {
		pols[fmt.Sprintf("p%03d", i)] = &rbacv3.Policy{
			Permissions: []*rbacv3.Permission{permAnd(permMethod("GET"), permPath(prefixSM(fmt.Sprintf("/svc%d/", i))))},
			Principals:  []*rbacv3.Principal{principalPrefix(fmt.Sprintf("spiffe://cluster.local/ns/team%d/sa/", i))},
		}
	}
	pols["p999"] = &rbacv3.Policy{
		Permissions: []*rbacv3.Permission{permAnd(permMethod("GET"), permPath(prefixSM("/info")), port)},
		Principals: []*rbacv3.Principal{and(principalName(exact("spiffe://cluster.local/ns/default/sa/sleep")),
			&rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: &corev3.CidrRange{AddressPrefix: "10.0.0.0", PrefixLen: wrapperspb.UInt32(8)}}},
			team)},
	}
	allow := xdstest.RBACFilter("allow", rbacRules(rbacv3.RBAC_ALLOW, pols))
	_, r, err := Decode(ListenerType, mustAny(tb, xdstest.ServerListener("inbound", netip.MustParseAddrPort("0.0.0.0:8080"), nil,
		xdstest.FilterChain("main", xdstest.InboundRoutes("in"), deny, allow))))
	if err != nil {
		tb.Fatalf("Decode: %v", err)
	}
	return r.(*Listener).Server.FilterChains[0]
}

func BenchmarkRBAC(b *testing.B) {
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("policies=%d", n), func(b *testing.B) {
			fc := benchRBACChain(b, n)
			in := &RBACInput{Host: "orders", Request: &Request{Method: "GET", Path: "/info/items", Header: http.Header{"X-Team": {"blue"}}},
				PeerCert: cert("spiffe://cluster.local/ns/default/sa/sleep"),
				Local:    netip.MustParseAddrPort("10.0.0.1:8080"), Remote: netip.MustParseAddrPort("10.1.2.3:5000")}
			for _, f := range fc.RBAC {
				if ok, p := f.Allowed(in); !ok {
					b.Fatalf("filter %s denied the benchmark request (policy %q)", f.FilterName, p)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for _, f := range fc.RBAC {
					f.Allowed(in)
				}
			}
		})
	}
}
