//lint:file-ignore SA1019 the tests send the deprecated SAN matchers control planes still send

package xds

import (
	"crypto/x509"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	exprpb "google.golang.org/genproto/googleapis/api/expr/v1alpha1"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// Builders for the RBAC shapes istiod emits for AuthorizationPolicy.
func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func prefixSM(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s}}
}

func permPath(m *matcherv3.StringMatcher) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: m}}}}
}

func permMethod(m string) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: ":method",
		HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact(m)}}}}
}

func permAnd(ps ...*rbacv3.Permission) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: ps}}}
}

func permNot(p *rbacv3.Permission) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: p}}
}

var permAny = &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}

var principalAny = &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}

func principalName(m *matcherv3.StringMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: m}}}
}

func principalIP(p string, bits uint32) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: &corev3.CidrRange{AddressPrefix: p, PrefixLen: wrapperspb.UInt32(bits)}}}
}

func rbacRules(action rbacv3.RBAC_Action, pols map[string]*rbacv3.Policy) *rbacv3.RBAC {
	return &rbacv3.RBAC{Action: action, Policies: pols}
}

func cert(uris ...string) *x509.Certificate {
	c := &x509.Certificate{}
	for _, u := range uris {
		p, _ := url.Parse(u)
		c.URIs = append(c.URIs, p)
	}
	return c
}

func decodeServer(t *testing.T, l *listenerv3.Listener) *Listener {
	t.Helper()
	_, r, err := Decode(ListenerType, mustAny(t, l))
	if err != nil {
		t.Fatalf("Decode(server listener) = %v", err)
	}
	sl := r.(*Listener)
	if sl.Server == nil {
		t.Fatal("Decode: Server is nil for a listener with filter chains")
	}
	return sl
}

// The policies mirror Istio's AuthorizationPolicy examples as istiod
// translates them to RBAC: a DENY filter first, then an ALLOW filter.
func TestRBACIstioShapes(t *testing.T) {
	deny := xdstest.RBACFilter("deny", rbacRules(rbacv3.RBAC_DENY, map[string]*rbacv3.Policy{
		"ns[default]-policy[deny-admin]-rule[0]": {Permissions: []*rbacv3.Permission{permPath(prefixSM("/admin"))}, Principals: []*rbacv3.Principal{principalAny}},
		"ns[default]-policy[deny-delete]-rule[0]": {Permissions: []*rbacv3.Permission{permMethod("DELETE")},
			Principals: []*rbacv3.Principal{principalIP("10.0.0.0", 8)}},
	}))
	allow := xdstest.RBACFilter("allow", rbacRules(rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{
		"ns[default]-policy[frontend]-rule[0]": {
			Permissions: []*rbacv3.Permission{permAnd(permMethod("GET"), permNot(permPath(exact("/private"))))},
			Principals:  []*rbacv3.Principal{principalName(exact("spiffe://td/ns/default/sa/frontend"))},
		},
		"ns[default]-policy[health]-rule[0]": {Permissions: []*rbacv3.Permission{permPath(exact("/healthz"))}, Principals: []*rbacv3.Principal{principalAny}},
	}))
	l := decodeServer(t, xdstest.ServerListener("inbound", netip.MustParseAddrPort("0.0.0.0:8080"), nil,
		xdstest.FilterChain("main", xdstest.InboundRoutes("in"), deny, allow)))
	fc := l.Server.Select(ConnInfo{Local: netip.MustParseAddrPort("127.0.0.1:8080"), Remote: netip.MustParseAddrPort("127.0.0.1:5000")})
	if fc == nil || len(fc.RBAC) != 2 {
		t.Fatalf("Select = %+v, want the main chain with two RBAC filters", fc)
	}
	frontend := cert("spiffe://td/ns/default/sa/frontend")
	other := cert("spiffe://td/ns/default/sa/other")
	cases := []struct {
		name, method, path, remote string
		peer                       *x509.Certificate
		want                       bool
		policy                     string // the deciding policy of the failing filter, or of the ALLOW one
	}{
		{"frontend GET", "GET", "/items", "127.0.0.1:1", frontend, true, "ns[default]-policy[frontend]-rule[0]"},
		{"frontend POST: no ALLOW policy matches", "POST", "/items", "127.0.0.1:1", frontend, false, ""},
		{"notPaths /private", "GET", "/private", "127.0.0.1:1", frontend, false, ""},
		{"other identity", "GET", "/items", "127.0.0.1:1", other, false, ""},
		{"plaintext never matches a principal", "GET", "/items", "127.0.0.1:1", nil, false, ""},
		{"health from anyone", "GET", "/healthz", "127.0.0.1:1", nil, true, "ns[default]-policy[health]-rule[0]"},
		{"DENY before ALLOW", "GET", "/admin/x", "127.0.0.1:1", frontend, false, "ns[default]-policy[deny-admin]-rule[0]"},
		{"DELETE from 10/8 denied", "DELETE", "/items", "10.1.2.3:1", frontend, false, "ns[default]-policy[deny-delete]-rule[0]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := &Request{Method: c.method, Path: c.path, Header: http.Header{}}
			in := &RBACInput{Host: "orders", Request: req, PeerCert: c.peer,
				Local: netip.MustParseAddrPort("127.0.0.1:8080"), Remote: netip.MustParseAddrPort(c.remote)}
			allowed, policy := true, ""
			for _, r := range fc.RBAC {
				ok, p := r.Allowed(in)
				policy = p
				if !ok {
					allowed = false
					break
				}
			}
			if allowed != c.want || policy != c.policy {
				t.Errorf("allowed, policy = %v, %q; want %v, %q", allowed, policy, c.want, c.policy)
			}
		})
	}
}

func TestServerListenerSelect(t *testing.T) {
	tlsChain := xdstest.FilterChain("tls", xdstest.InboundRoutes("a"))
	tlsChain.FilterChainMatch = &listenerv3.FilterChainMatch{TransportProtocol: "tls"}
	plainChain := xdstest.FilterChain("plain", xdstest.InboundRoutes("b"))
	plainChain.FilterChainMatch = &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer"}
	narrow := xdstest.FilterChain("narrow", xdstest.InboundRoutes("c"))
	narrow.FilterChainMatch = &listenerv3.FilterChainMatch{SourcePrefixRanges: []*corev3.CidrRange{
		{AddressPrefix: "192.168.1.0", PrefixLen: wrapperspb.UInt32(24)}}, TransportProtocol: "raw_buffer"}
	sni := xdstest.FilterChain("sni", xdstest.InboundRoutes("d"))
	sni.FilterChainMatch = &listenerv3.FilterChainMatch{ServerNames: []string{"x"}}
	otherPort := xdstest.FilterChain("port9", xdstest.InboundRoutes("e"))
	otherPort.FilterChainMatch = &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(9), TransportProtocol: "tls"}
	def := xdstest.FilterChain("default", xdstest.InboundRoutes("f"))
	l := decodeServer(t, xdstest.ServerListener("in", netip.MustParseAddrPort("[::]:8080"), def, tlsChain, plainChain, narrow, sni, otherPort))
	if got := l.Server.Address.String(); got != "[::]:8080" {
		t.Errorf("Address = %s", got)
	}
	cases := []struct {
		remote string
		port   uint16
		tls    bool
		want   string
	}{
		{"127.0.0.1:1", 8080, true, "tls"},
		{"127.0.0.1:1", 8080, false, "plain"},
		{"192.168.1.7:1", 8080, false, "narrow"}, // a source range is more specific
		{"192.168.1.7:1", 8080, true, "tls"},
		{"127.0.0.1:1", 9, true, "port9"}, // a destination port is the first criterion
	}
	for _, c := range cases {
		local := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), c.port)
		fc := l.Server.Select(ConnInfo{Local: local, Remote: netip.MustParseAddrPort(c.remote), TLS: c.tls})
		if fc == nil || fc.Name != c.want {
			t.Errorf("Select(%s -> %s, tls %v) = %v, want %s", c.remote, local, c.tls, fc, c.want)
		}
	}
	// Nothing but the unmatchable SNI chain: the default serves.
	only := decodeServer(t, xdstest.ServerListener("in", netip.MustParseAddrPort("[::]:8080"), def, sni))
	if fc := only.Server.Select(ConnInfo{Local: netip.MustParseAddrPort("127.0.0.1:8080"), Remote: netip.MustParseAddrPort("127.0.0.1:1")}); fc == nil || fc.Name != "default" {
		t.Errorf("Select with only an SNI chain = %v, want default", fc)
	}
	none := decodeServer(t, xdstest.ServerListener("in", netip.MustParseAddrPort("[::]:8080"), nil, sni))
	if fc := none.Server.Select(ConnInfo{Local: netip.MustParseAddrPort("127.0.0.1:8080"), Remote: netip.MustParseAddrPort("127.0.0.1:1")}); fc != nil {
		t.Errorf("Select without a default = %v, want nil", fc)
	}
}

func TestServerListenerErrors(t *testing.T) {
	withFilter := func(f *hcmv3.HttpFilter) *listenerv3.Listener {
		return xdstest.ServerListener("in", netip.MustParseAddrPort("0.0.0.0:1"), nil, xdstest.FilterChain("c", xdstest.InboundRoutes("r"), f))
	}
	unknown := &hcmv3.HttpFilter{Name: "ext_authz", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &emptypb.Empty{})}}
	cel := xdstest.RBACFilter("rbac", rbacRules(rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{
		"p": {Permissions: []*rbacv3.Permission{permAny}, Principals: []*rbacv3.Principal{principalAny}, Condition: &exprpb.Expr{}},
	}))
	badCIDR := xdstest.RBACFilter("rbac", rbacRules(rbacv3.RBAC_DENY, map[string]*rbacv3.Policy{
		"p": {Permissions: []*rbacv3.Permission{permAny}, Principals: []*rbacv3.Principal{principalIP("10.0.0.0", 33)}},
	}))
	deep := permAny
	for range maxRBACDepth + 2 {
		deep = permNot(deep)
	}
	tooDeep := xdstest.RBACFilter("rbac", rbacRules(rbacv3.RBAC_DENY, map[string]*rbacv3.Policy{
		"p": {Permissions: []*rbacv3.Permission{deep}, Principals: []*rbacv3.Principal{principalAny}},
	}))
	dup := xdstest.ServerListener("in", netip.MustParseAddrPort("0.0.0.0:1"), nil,
		xdstest.FilterChain("a", xdstest.InboundRoutes("r")), xdstest.FilterChain("b", xdstest.InboundRoutes("r")))
	empty := xdstest.ServerListener("in", netip.MustParseAddrPort("0.0.0.0:1"), nil)
	empty.FilterChains = []*listenerv3.FilterChain{}
	cases := []struct {
		name  string
		l     *listenerv3.Listener
		field string
	}{
		{"unknown filter", withFilter(unknown), "filter_chains[0].filters[0].typed_config.http_filters[0]"},
		{"CEL condition", withFilter(cel), "filter_chains[0].filters[0].typed_config.http_filters[0].typed_config.rules.policies[p].condition"},
		{"bad CIDR", withFilter(badCIDR), "filter_chains[0].filters[0].typed_config.http_filters[0].typed_config.rules.policies[p].principals[0].direct_remote_ip.prefix_len"},
		{"too deep", withFilter(tooDeep), "filter_chains[0].filters[0].typed_config.http_filters[0].typed_config.rules.policies[p].permissions[0]"},
		{"duplicate match", dup, "filter_chains[1].filter_chain_match"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			re := decodeErr(t, ListenerType, c.l)
			if !strings.HasPrefix(re.Field, c.field) || re.Name != "in" {
				t.Errorf("error field %q (resource %q), want prefix %q: %v", re.Field, re.Name, c.field, re)
			}
		})
	}
	if re := decodeErr(t, ListenerType, empty); !strings.Contains(re.Error(), "neither a client nor a server listener") {
		t.Errorf("empty listener: %v", re)
	}
}

func TestServerListenerOptionalFilterReported(t *testing.T) {
	opt := &hcmv3.HttpFilter{Name: "fault", IsOptional: true, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: &anypb.Any{TypeUrl: "type.googleapis.com/some.Filter"}}}
	noRules := &hcmv3.HttpFilter{Name: "empty-rbac", ConfigType: xdstest.RBACFilter("x", nil).ConfigType}
	l := decodeServer(t, xdstest.ServerListener("in", netip.MustParseAddrPort("0.0.0.0:1"), nil,
		xdstest.FilterChain("c", xdstest.InboundRoutes("r"), opt, noRules)))
	if !slices.Contains(l.UnappliedFields(), "filter_chains.http_filters[fault]") {
		t.Errorf("unapplied = %v, want the optional filter", l.UnappliedFields())
	}
	if fc := l.Server.FilterChains[0]; len(fc.RBAC) != 0 {
		t.Errorf("an RBAC filter without rules enforces nothing; got %d filters", len(fc.RBAC))
	}
	if rt, ok := l.Server.FilterChains[0].RouteConfig.Match("any", &Request{Path: "/x"}); !ok || rt.Action.Kind != ActionNonForwarding {
		t.Errorf("inbound route = %v %v, want a non-forwarding match", rt, ok)
	}
}

// selectSequential is filter chain selection written as Envoy documents
// it: each criterion in turn keeps only the candidates that match it most
// specifically. Select must agree with it.
func selectSequential(l *ServerListener, c ConnInfo) *FilterChain {
	var cands []*FilterChain
	for _, fc := range l.FilterChains {
		if !fc.Match.never {
			cands = append(cands, fc)
		}
	}
	v := connView{c: c, local: c.Local.Addr().Unmap(), remote: c.Remote.Addr().Unmap()}
	v.isLocal = isLocal(v.local, v.remote)
	for i := range numCriteria {
		best, kept := -1, []*FilterChain(nil)
		for _, fc := range cands {
			s := v.score(i, &fc.Match)
			switch {
			case s < 0:
			case s > best:
				best, kept = s, []*FilterChain{fc}
			case s == best:
				kept = append(kept, fc)
			}
		}
		if cands = kept; len(cands) == 0 {
			return l.Default
		}
	}
	return cands[0]
}

// randomListener makes a listener of up to 8 chains whose criteria are
// drawn from small sets, so that chains often overlap and tie.
func randomListener(r *rand.Rand) *ServerListener {
	pick := func(n int) int { return r.IntN(n) }
	prefixes := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("0.0.0.0/0")}
	l := &ServerListener{}
	for i := range 1 + pick(8) {
		m := FilterChainMatch{never: pick(10) == 0}
		if pick(2) == 0 {
			m.DestinationPort = uint32(8080 + pick(2))
		}
		for range pick(3) {
			m.PrefixRanges = append(m.PrefixRanges, prefixes[pick(len(prefixes))])
		}
		m.TransportProtocol = []string{"", "tls", "raw_buffer"}[pick(3)]
		m.SourceType = SourceType(pick(3))
		for range pick(3) {
			m.SourcePrefixes = append(m.SourcePrefixes, prefixes[pick(len(prefixes))])
		}
		if pick(3) == 0 {
			m.SourcePorts = []uint32{uint32(40000 + pick(2))}
		}
		l.FilterChains = append(l.FilterChains, &FilterChain{Name: fmt.Sprint("chain-", i), Match: m})
	}
	if pick(2) == 0 {
		l.Default = &FilterChain{Name: "default"}
	}
	return l
}

// TestSelectMatchesEnvoysSequentialRule compares Select, which chooses in
// one pass, with the criterion-by-criterion rule on random listeners and
// connections.
func TestSelectMatchesEnvoysSequentialRule(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	addrs := []string{"10.1.2.3", "10.2.0.1", "127.0.0.1", "192.168.1.1"}
	for i := range 20000 {
		l := randomListener(r)
		c := ConnInfo{
			Local:  netip.AddrPortFrom(netip.MustParseAddr(addrs[r.IntN(len(addrs))]), uint16(8080+r.IntN(2))),
			Remote: netip.AddrPortFrom(netip.MustParseAddr(addrs[r.IntN(len(addrs))]), uint16(40000+r.IntN(2))),
			TLS:    r.IntN(2) == 0,
		}
		if got, want := l.Select(c), selectSequential(l, c); got != want {
			name := func(fc *FilterChain) string {
				if fc == nil {
					return "<nil>"
				}
				return fc.Name
			}
			t.Fatalf("case %d: Select(%+v) = %s, the sequential rule gives %s; chains:\n%+v", i, c, name(got), name(want), l.FilterChains)
		}
	}
}

// BenchmarkSelect measures filter chain selection, which runs on every
// inbound request, on a listener shaped like istiod's inbound one: per
// port chains for mTLS and plaintext, and a catch-all.
func BenchmarkSelect(b *testing.B) {
	l := &ServerListener{Default: &FilterChain{Name: "default"}}
	for _, port := range []uint32{8080, 8081, 9090, 15006} {
		l.FilterChains = append(l.FilterChains,
			&FilterChain{Name: fmt.Sprint(port, "-tls"), Match: FilterChainMatch{DestinationPort: port, TransportProtocol: "tls"}},
			&FilterChain{Name: fmt.Sprint(port, "-plain"), Match: FilterChainMatch{DestinationPort: port, TransportProtocol: "raw_buffer"}})
	}
	l.FilterChains = append(l.FilterChains, &FilterChain{Name: "catch-all", Match: FilterChainMatch{PrefixRanges: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}}})
	c := ConnInfo{Local: netip.MustParseAddrPort("10.0.0.5:9090"), Remote: netip.MustParseAddrPort("10.0.0.9:40000"), TLS: true}
	b.ReportAllocs()
	for b.Loop() {
		if fc := l.Select(c); fc == nil || fc.Name != "9090-tls" {
			b.Fatalf("selected %v", fc)
		}
	}
}

// FuzzSelect checks Select against the criterion-by-criterion rule on
// listeners drawn from seed and connections the fuzzer chooses.
func FuzzSelect(f *testing.F) {
	f.Add(uint64(1), []byte{10, 1, 2, 3}, uint16(8080), []byte{127, 0, 0, 1}, uint16(40000), true)
	f.Add(uint64(7), []byte{192, 168, 1, 1}, uint16(8081), []byte{10, 2, 0, 1}, uint16(40001), false)
	f.Fuzz(func(t *testing.T, seed uint64, local []byte, lport uint16, remote []byte, rport uint16, tls bool) {
		addr := func(b []byte) netip.Addr {
			var a4 [4]byte
			copy(a4[:], b)
			return netip.AddrFrom4(a4)
		}
		l := randomListener(rand.New(rand.NewPCG(seed, seed>>7)))
		c := ConnInfo{Local: netip.AddrPortFrom(addr(local), lport), Remote: netip.AddrPortFrom(addr(remote), rport), TLS: tls}
		if got, want := l.Select(c), selectSequential(l, c); got != want {
			t.Fatalf("Select(%+v) = %v, the sequential rule gives %v", c, got, want)
		}
	})
}

// TestServerListenerRefusesUnappliedRestrictions: a setting of the
// server's TLS or a per-route RBAC override that would turn callers away,
// and that Weft does not apply, NACKs the resource naming the field,
// rather than being reported and skipped.
func TestServerListenerRefusesUnappliedRestrictions(t *testing.T) {
	withTLS := func(d *tlsv3.DownstreamTlsContext) *listenerv3.Listener {
		fc := xdstest.FilterChain("c", xdstest.InboundRoutes("r"))
		fc.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls",
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, d)}}
		return xdstest.ServerListener("in", netip.MustParseAddrPort("0.0.0.0:1"), nil, fc)
	}
	vc := func(v *tlsv3.CertificateValidationContext) *tlsv3.DownstreamTlsContext {
		return &tlsv3.DownstreamTlsContext{RequireClientCertificate: wrapperspb.Bool(true),
			CommonTlsContext: &tlsv3.CommonTlsContext{ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: v}}}
	}
	params := func(p *tlsv3.TlsParameters) *tlsv3.DownstreamTlsContext {
		return &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{TlsParams: p}}
	}
	withPerRoute := func(cfg *anypb.Any) *listenerv3.Listener {
		rc := xdstest.InboundRoutes("r")
		rc.VirtualHosts[0].Routes[0].TypedPerFilterConfig = map[string]*anypb.Any{"rbac": cfg}
		return xdstest.ServerListener("in", netip.MustParseAddrPort("0.0.0.0:1"), nil,
			xdstest.FilterChain("c", rc, xdstest.RBACFilter("rbac", rbacRules(rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{
				"p": {Permissions: []*rbacv3.Permission{permAny}, Principals: []*rbacv3.Principal{principalName(exact("spiffe://td/a"))}},
			}))))
	}
	denyAll := &rbacfilterv3.RBACPerRoute{Rbac: &rbacfilterv3.RBAC{Rules: rbacRules(rbacv3.RBAC_DENY, map[string]*rbacv3.Policy{
		"all": {Permissions: []*rbacv3.Permission{permAny}, Principals: []*rbacv3.Principal{principalAny}}})}}
	const tlsField = "filter_chains[0].transport_socket.typed_config."
	const vcField = tlsField + "common_tls_context.validation_context."
	const routeField = "filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0].typed_per_filter_config[rbac]"
	cases := []struct {
		name  string
		l     *listenerv3.Listener
		field string
	}{
		{"SAN matchers", withTLS(vc(&tlsv3.CertificateValidationContext{MatchSubjectAltNames: []*matcherv3.StringMatcher{exact("spiffe://td/a")}})),
			vcField + "match_subject_alt_names"},
		{"typed SAN matchers", withTLS(vc(&tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{
			{SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: exact("spiffe://td/a")}}})), vcField + "match_typed_subject_alt_names"},
		{"SPKI pins", withTLS(vc(&tlsv3.CertificateValidationContext{VerifyCertificateSpki: []string{"x"}})), vcField + "verify_certificate_spki"},
		{"certificate hash pins", withTLS(vc(&tlsv3.CertificateValidationContext{VerifyCertificateHash: []string{"ab"}})), vcField + "verify_certificate_hash"},
		{"CRL", withTLS(vc(&tlsv3.CertificateValidationContext{Crl: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "x"}}})), vcField + "crl"},
		{"custom validator", withTLS(vc(&tlsv3.CertificateValidationContext{CustomValidatorConfig: &corev3.TypedExtensionConfig{Name: "v"}})), vcField + "custom_validator_config"},
		{"inline CA", withTLS(vc(&tlsv3.CertificateValidationContext{TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "x"}}})), vcField + "trusted_ca"},
		{"combined SAN matchers", withTLS(&tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
			CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{DefaultValidationContext: &tlsv3.CertificateValidationContext{
				MatchSubjectAltNames: []*matcherv3.StringMatcher{exact("spiffe://td/a")}}}}}}),
			tlsField + "common_tls_context.combined_validation_context.default_validation_context.match_subject_alt_names"},
		{"SDS validation", withTLS(&tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
			ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "v"}}}}), tlsField + "common_tls_context.validation_context_sds_secret_config"},
		{"TLS 1.3 minimum", withTLS(params(&tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3})), tlsField + "common_tls_context.tls_params.tls_minimum_protocol_version"},
		{"TLS 1.1 maximum", withTLS(params(&tlsv3.TlsParameters{TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_1})), tlsField + "common_tls_context.tls_params.tls_maximum_protocol_version"},
		{"cipher suites", withTLS(params(&tlsv3.TlsParameters{CipherSuites: []string{"ECDHE-RSA-AES128-GCM-SHA256"}})), tlsField + "common_tls_context.tls_params.cipher_suites"},
		{"require SNI", withTLS(&tlsv3.DownstreamTlsContext{RequireSni: wrapperspb.Bool(true)}), tlsField + "require_sni"},
		{"unknown transport socket", withTLS(nil), "filter_chains[0].transport_socket.typed_config"},
		{"RBACPerRoute", withPerRoute(mustAny(t, denyAll)), routeField},
		{"RBACPerRoute in a FilterConfig", withPerRoute(mustAny(t, &routev3.FilterConfig{Config: mustAny(t, denyAll)})), routeField},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := c.l
			if c.name == "unknown transport socket" {
				l.FilterChains[0].TransportSocket.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, &emptypb.Empty{})}
			}
			re := decodeErr(t, ListenerType, l)
			if re.Field != c.field || re.Name != "in" {
				t.Errorf("error field %q (resource %q), want %q: %v", re.Field, re.Name, c.field, re)
			}
		})
	}

	// An RDS route configuration carrying an override is refused too.
	rc := xdstest.InboundRoutes("r")
	rc.VirtualHosts[0].TypedPerFilterConfig = map[string]*anypb.Any{"rbac": mustAny(t, denyAll)}
	if re := decodeErr(t, RouteConfigType, rc); re.Field != "virtual_hosts[0].typed_per_filter_config[rbac]" {
		t.Errorf("RDS with RBACPerRoute: error field %q, want virtual_hosts[0].typed_per_filter_config[rbac]: %v", re.Field, re)
	}

	// What Weft applies or replaces, or what only makes it stricter, is
	// accepted: Istio's proxyless inbound TLS context.
	istio := &tlsv3.DownstreamTlsContext{RequireClientCertificate: wrapperspb.Bool(true), CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{InstanceName: "default", CertificateName: "default"},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext: &tlsv3.CertificateValidationContext{CaCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{InstanceName: "default", CertificateName: "ROOTCA"}}}},
		TlsParams:     &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2},
		AlpnProtocols: []string{"h2"},
	}}
	if l := decodeServer(t, withTLS(istio)); slices.Contains(l.UnappliedFields(), "filter_chains.transport_socket") {
		t.Errorf("unapplied = %v: the transport socket is applied, not skipped", l.UnappliedFields())
	}
}
