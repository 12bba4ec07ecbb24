package rbac_test

import (
	"crypto/x509"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/xds"
	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/security"
)

// The two front ends of the one engine: an AuthorizationPolicy file
// (security) and the RBAC filters istiod sends for the same policies
// (internal/xds). TestFrontEndsAgree runs each case's requests through
// both and wants the same decision, naming the same policy, from each.

// Builders for the shapes istiod emits (pilot/pkg/security/authz/model).
func sm(kind, v string) *matcherv3.StringMatcher {
	switch kind {
	case "prefix":
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: v}}
	case "suffix":
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: v}}
	case "regex":
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: v}}}
	}
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v}}
}

func hdr(name, kind, v string) *routev3.HeaderMatcher {
	if kind == "present" {
		return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}
	}
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm(kind, v)}}
}

func hostHdr(kind, v string) *routev3.HeaderMatcher {
	h := hdr(":authority", kind, v)
	if s := h.GetStringMatch(); s != nil {
		s.IgnoreCase = true
	}
	return h
}

type (
	perm = *rbacv3.Permission
	prin = *rbacv3.Principal
)

func pAnd(ps ...perm) perm {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: ps}}}
}
func pOr(ps ...perm) perm {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: ps}}}
}
func pNot(p perm) perm { return &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: p}} }
func pAny() perm       { return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}} }
func pPort(p uint32) perm {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: p}}
}
func pHdr(h *routev3.HeaderMatcher) perm {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: h}}
}
func pPath(kind, v string) perm {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: sm(kind, v)}}}}
}

func iAnd(ps ...prin) prin {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: ps}}}
}
func iOr(ps ...prin) prin {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: ps}}}
}
func iNot(p prin) prin { return &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: p}} }
func iAny() prin       { return &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}} }
func iAuth(m *matcherv3.StringMatcher) prin {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: m}}}
}
func iHdr(h *routev3.HeaderMatcher) prin {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Header{Header: h}}
}
func iIP(cidr string) prin {
	p := netip.MustParsePrefix(cidr)
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: xdsCIDR(p)}}
}
func iRemoteIP(cidr string) prin {
	p := netip.MustParsePrefix(cidr)
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: xdsCIDR(p)}}
}

func xdsCIDR(p netip.Prefix) *corev3.CidrRange {
	return &corev3.CidrRange{AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))}
}

// ns is istiod's principal for a namespace.
func ns(n string) prin { return iAuth(sm("regex", ".*/ns/"+n+"/.*")) }

// policy is one istiod RBAC policy: one permission and one principal, as
// istiod makes for a rule with at most one to and one from.
func policy(p perm, i prin) *rbacv3.Policy {
	return &rbacv3.Policy{Permissions: []*rbacv3.Permission{p}, Principals: []*rbacv3.Principal{i}}
}

type filter struct {
	action   rbacv3.RBAC_Action
	policies map[string]*rbacv3.Policy
}

type request struct {
	name             string
	method, path     string
	host             string
	header           http.Header
	port             uint16
	peer             string // SPIFFE ID; "" for plaintext
	ip               string // remote address; "" = 10.0.0.7
	wantAllow        bool
	wantPolicy       string // "namespace/name" of the deciding policy, "" when none
	wantAuditsPolicy string
}

const (
	sleep   = "spiffe://cluster.local/ns/default/sa/sleep"
	devTool = "spiffe://cluster.local/ns/dev/sa/tool"
	header  = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
)

func get(name, path, peer string, allow bool, policy string) request {
	return request{name: name, method: "GET", path: path, port: 8080, peer: peer, wantAllow: allow, wantPolicy: policy}
}

func with(r request, f func(*request)) request {
	f(&r)
	return r
}

var frontEndCases = []struct {
	name    string
	yaml    string
	filters []filter
	reqs    []request
}{
	{
		name: "principals or namespaces, methods and paths",
		yaml: header + `metadata: {name: httpbin, namespace: foo}
spec:
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/default/sa/sleep"]}
    - source: {namespaces: ["test"]}
    to:
    - operation: {methods: ["GET"], paths: ["/info*"]}
    - operation: {methods: ["POST"], paths: ["/data"]}
`,
		filters: []filter{{rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{"ns[foo]-policy[httpbin]-rule[0]": {
			Permissions: []*rbacv3.Permission{
				pAnd(pOr(pHdr(hdr(":method", "exact", "GET"))), pOr(pPath("prefix", "/info"))),
				pAnd(pOr(pHdr(hdr(":method", "exact", "POST"))), pOr(pPath("exact", "/data"))),
			},
			Principals: []*rbacv3.Principal{
				iAnd(iOr(iAuth(sm("exact", sleep)))),
				iAnd(iOr(ns("test"))),
			},
		}}}},
		reqs: []request{
			get("sleep GET /info", "/info", sleep, true, "foo/httpbin"),
			get("sleep GET /info/sub, normalized", "//info/./sub", sleep, true, "foo/httpbin"),
			with(get("sleep POST /data", "/data", sleep, true, "foo/httpbin"), func(r *request) { r.method = "POST" }),
			get("sleep GET /data", "/data", sleep, false, ""),
			get("test namespace", "/info", "spiffe://cluster.local/ns/test/sa/x", true, "foo/httpbin"),
			get("other principal", "/info", devTool, false, ""),
			get("same path, other trust domain", "/info", "spiffe://other.example/ns/default/sa/sleep", false, ""),
			get("plaintext", "/info", "", false, ""),
			// istiod's namespace regex: any "/ns/<ns>/" in the ID, and
			// never an ID that ends after the namespace.
			get("namespace segment further in", "/info", "spiffe://cluster.local/team/ns/test/sa/x", true, "foo/httpbin"),
			get("namespace as the last segment", "/info", "spiffe://cluster.local/ns/test", false, ""),
		},
	},
	{
		name: "deny wins over allow; notPaths; an ALLOW without rules",
		yaml: header + `metadata: {name: deny-admin, namespace: foo}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin", "/admin/*"]}}]
  - from: [{source: {namespaces: ["dev"]}}]
    to: [{operation: {notPaths: ["/healthz"]}}]
---
` + header + `metadata: {name: allow-all, namespace: foo}
spec: {rules: [{}]}
---
` + header + `metadata: {name: allow-nothing, namespace: foo}
spec: {}
`,
		filters: []filter{
			{rbacv3.RBAC_DENY, map[string]*rbacv3.Policy{
				"ns[foo]-policy[deny-admin]-rule[0]": policy(pAnd(pOr(pPath("exact", "/admin"), pPath("prefix", "/admin/"))), iAnd(iAny())),
				"ns[foo]-policy[deny-admin]-rule[1]": policy(pAnd(pNot(pOr(pPath("exact", "/healthz")))), iAnd(iOr(ns("dev")))),
			}},
			{rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{"ns[foo]-policy[allow-all]-rule[0]": policy(pAnd(pAny()), iAnd(iAny()))}},
		},
		reqs: []request{
			get("normal path", "/x", sleep, true, "foo/allow-all"),
			get("admin", "/admin", sleep, false, "foo/deny-admin"),
			get("admin, encoded", "/%61dmin/users", "", false, "foo/deny-admin"),
			get("dev, not healthz", "/x", devTool, false, "foo/deny-admin"),
			get("dev, healthz", "/healthz", devTool, true, "foo/allow-all"),
		},
	},
	{
		name: "allow nothing",
		yaml: header + "metadata: {name: allow-nothing, namespace: foo}\nspec: {}\n",
		filters: []filter{
			{rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{}},
		},
		reqs: []request{
			get("mTLS", "/", sleep, false, ""),
			get("plaintext", "/", "", false, ""),
		},
	},
	{
		name: "require mTLS; principal wildcards; ipBlocks and remoteIpBlocks",
		yaml: header + `metadata: {name: require-mtls, namespace: foo}
spec:
  action: DENY
  rules:
  - from: [{source: {notPrincipals: ["*"]}}]
---
` + header + `metadata: {name: mixed, namespace: foo}
spec:
  rules:
  - from:
    - source:
        principals: ["cluster.local/*"]
        notNamespaces: ["dev"]
        ipBlocks: ["10.0.0.0/8"]
        notRemoteIpBlocks: ["10.9.0.0/16"]
  - from: [{source: {principals: ["*/sa/app"]}}]
`,
		filters: []filter{
			{rbacv3.RBAC_DENY, map[string]*rbacv3.Policy{
				"ns[foo]-policy[require-mtls]-rule[0]": policy(pAnd(pAny()), iAnd(iNot(iOr(iAuth(sm("regex", ".+")))))),
			}},
			{rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{
				"ns[foo]-policy[mixed]-rule[0]": policy(pAnd(pAny()), iAnd(
					iOr(iAuth(sm("prefix", "spiffe://cluster.local/"))),
					iNot(iOr(ns("dev"))),
					iNot(iOr(iRemoteIP("10.9.0.0/16"))),
					iOr(iIP("10.0.0.0/8")),
				)),
				"ns[foo]-policy[mixed]-rule[1]": policy(pAnd(pAny()), iAnd(iOr(iAuth(sm("regex", "spiffe://.*/sa/app"))))),
			}},
		},
		reqs: []request{
			get("plaintext", "/", "", false, "foo/require-mtls"),
			get("default from 10/8", "/", sleep, true, "foo/mixed"),
			get("dev namespace", "/", devTool, false, ""),
			with(get("outside ipBlocks", "/", sleep, false, ""), func(r *request) { r.ip = "192.168.1.1" }),
			with(get("in notRemoteIpBlocks", "/", sleep, false, ""), func(r *request) { r.ip = "10.9.1.1" }),
			with(get("IPv4-mapped IPv6", "/", sleep, true, "foo/mixed"), func(r *request) { r.ip = "::ffff:10.0.0.7" }),
			get("suffix wildcard, other trust domain", "/", "spiffe://other.example/ns/x/sa/app", true, "foo/mixed"),
		},
	},
	{
		name: "when: headers, pseudo-headers, source and destination",
		yaml: header + `metadata: {name: ops, namespace: foo}
spec:
  rules:
  - to: [{operation: {hosts: ["*.example.com"], notHosts: ["admin.example.com"], ports: ["8080"]}}]
    when:
    - {key: "request.headers[version]", values: ["v1", "v2*"]}
    - {key: "request.headers[x-debug]", notValues: ["*"]}
    - {key: "request.headers[:method]", values: ["GET"]}
    - {key: source.principal, values: ["spiffe://cluster.local/ns/default/*"]}
    - {key: source.namespace, notValues: ["dev"]}
    - {key: source.ip, values: ["10.0.0.0/24"]}
    - {key: remote.ip, notValues: ["10.0.0.9"]}
    - {key: destination.port, notValues: ["9090"]}
`,
		filters: []filter{{rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{"ns[foo]-policy[ops]-rule[0]": policy(
			pAnd(pOr(pHdr(hostHdr("suffix", ".example.com"))), pNot(pOr(pHdr(hostHdr("exact", "admin.example.com")))), pOr(pPort(8080)),
				pNot(pOr(pPort(9090)))),
			iAnd(iOr(iHdr(hdr("version", "exact", "v1")), iHdr(hdr("version", "prefix", "v2"))),
				iNot(iOr(iHdr(hdr("x-debug", "present", "")))),
				iOr(iHdr(hdr(":method", "exact", "GET"))),
				iOr(iAuth(sm("prefix", "spiffe://cluster.local/ns/default/"))),
				iNot(iOr(ns("dev"))),
				iOr(iIP("10.0.0.0/24")),
				iNot(iOr(iRemoteIP("10.0.0.9/32")))),
		)}}},
		reqs: func() []request {
			ok := request{name: "match", method: "GET", path: "/", host: "api.example.com", port: 8080, peer: sleep,
				header: http.Header{"Version": {"v1"}}, wantAllow: true, wantPolicy: "foo/ops"}
			no := func(name string, f func(*request)) request {
				return with(ok, func(r *request) { r.name, r.wantAllow, r.wantPolicy = name, false, ""; f(r) })
			}
			return []request{
				ok,
				with(ok, func(r *request) { r.name, r.header = "v2 prefix", http.Header{"Version": {"v2.1"}} }),
				with(ok, func(r *request) { r.name, r.host = "host case", "API.Example.COM" }),
				no("excluded host", func(r *request) { r.host = "admin.example.com" }),
				no("no host", func(r *request) { r.host = "" }),
				no("other port", func(r *request) { r.port = 9090 }),
				no("other method", func(r *request) { r.method = "POST" }),
				no("version v3", func(r *request) { r.header = http.Header{"Version": {"v3"}} }),
				no("no version", func(r *request) { r.header = nil }),
				no("debug header", func(r *request) { r.header = http.Header{"Version": {"v1"}, "X-Debug": {""}} }),
				// Envoy joins a repeated header with "," before matching.
				no("version sent twice", func(r *request) { r.header = http.Header{"Version": {"v1", "v3"}} }),
				no("other principal", func(r *request) { r.peer = "spiffe://cluster.local/ns/shop/sa/x" }),
				no("plaintext", func(r *request) { r.peer = "" }),
				no("outside source.ip", func(r *request) { r.ip = "10.0.1.7" }),
				no("remote.ip excluded", func(r *request) { r.ip = "10.0.0.9" }),
			}
		}(),
	},
	{
		// Envoy matches a header sent several times on its values joined
		// with ",", so one exact value no longer matches.
		name: "repeated header",
		yaml: header + `metadata: {name: v1-only, namespace: foo}
spec:
  rules:
  - when: [{key: "request.headers[version]", values: ["v1", "v1,v2"]}]
`,
		filters: []filter{{rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{"ns[foo]-policy[v1-only]-rule[0]": policy(
			pAnd(pAny()), iAnd(iOr(iHdr(hdr("version", "exact", "v1")), iHdr(hdr("version", "exact", "v1,v2")))))}}},
		reqs: []request{
			with(get("once", "/", sleep, true, "foo/v1-only"), func(r *request) { r.header = http.Header{"Version": {"v1"}} }),
			with(get("twice, joined value listed", "/", sleep, true, "foo/v1-only"), func(r *request) { r.header = http.Header{"Version": {"v1", "v2"}} }),
			with(get("twice, joined value not listed", "/", sleep, false, ""), func(r *request) { r.header = http.Header{"Version": {"v1", "v3"}} }),
		},
	},
	{
		name: "audit marks without deciding",
		yaml: header + `metadata: {name: audit-admin, namespace: ops}
spec:
  action: AUDIT
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
`,
		filters: []filter{{rbacv3.RBAC_LOG, map[string]*rbacv3.Policy{
			"ns[ops]-policy[audit-admin]-rule[0]": policy(pAnd(pOr(pPath("prefix", "/admin"))), iAnd(iAny())),
		}}},
		reqs: []request{
			with(get("audited", "/admin/x", sleep, true, ""), func(r *request) { r.wantAuditsPolicy = "ops/audit-admin" }),
			get("not audited", "/x", sleep, true, ""),
		},
	},
}

func TestFrontEndsAgree(t *testing.T) {
	for _, c := range frontEndCases {
		t.Run(c.name, func(t *testing.T) {
			set, err := security.ParseAuthorizationPolicies([]byte(c.yaml))
			if err != nil {
				t.Fatalf("ParseAuthorizationPolicies: %v", err)
			}
			chain := decodeChain(t, c.filters)
			for _, r := range c.reqs {
				t.Run(r.name, func(t *testing.T) {
					want := outcome{r.wantAllow, r.wantPolicy, r.wantAuditsPolicy}
					if got := yamlOutcome(set, r); got != want {
						t.Errorf("policy file: got %+v, want %+v", got, want)
					}
					if got := xdsOutcome(t, chain, r); got != want {
						t.Errorf("xDS RBAC: got %+v, want %+v", got, want)
					}
				})
			}
		})
	}
}

// TestHostsWithPort holds the one place where the policy file keeps its
// own reading: its hosts match the authority with and without the port,
// where istiod's ":authority" matcher sees the port (istio/istio#44080).
// A DENY for "admin.example.com" thus also refuses "admin.example.com:80".
func TestHostsWithPort(t *testing.T) {
	set, err := security.ParseAuthorizationPolicies([]byte(header + `metadata: {name: deny-admin, namespace: foo}
spec:
  action: DENY
  rules: [{to: [{operation: {hosts: ["admin.example.com"]}}]}]
`))
	if err != nil {
		t.Fatal(err)
	}
	chain := decodeChain(t, []filter{{rbacv3.RBAC_DENY, map[string]*rbacv3.Policy{
		"ns[foo]-policy[deny-admin]-rule[0]": policy(pAnd(pOr(pHdr(hostHdr("exact", "admin.example.com")))), iAnd(iAny())),
	}}})
	for _, c := range []struct {
		host              string
		wantFile, wantXDS bool
	}{
		{"ADMIN.example.com", false, false},
		{"admin.example.com:80", false, true},
		{"other.example.com:80", true, true},
	} {
		r := request{method: "GET", path: "/", host: c.host, port: 8080}
		if got := yamlOutcome(set, r).allow; got != c.wantFile {
			t.Errorf("policy file, host %q: allow = %v, want %v", c.host, got, c.wantFile)
		}
		if got := xdsOutcome(t, chain, r).allow; got != c.wantXDS {
			t.Errorf("xDS RBAC, host %q: allow = %v, want %v", c.host, got, c.wantXDS)
		}
	}
}

// outcome is what both front ends must agree on.
type outcome struct {
	allow  bool
	policy string // "namespace/name"
	audit  string
}

func yamlOutcome(set *security.PolicySet, r request) outcome {
	req := security.Request{Method: r.method, Path: r.path, Host: r.host, Headers: r.header, Port: int(r.port),
		SourceIP: netip.MustParseAddr(ip(r))}
	if r.peer != "" {
		req.SourceID = spiffeid.RequireFromString(r.peer)
	}
	d := set.Evaluate(&req)
	return outcome{d.Allow, d.Policy, d.AuditPolicy}
}

// xdsOutcome runs the chain as mesh's inbound server does, on the path it
// normalized.
func xdsOutcome(t testing.TB, chain []*xds.RBAC, r request) outcome {
	p, err := security.NormalizePath(r.path)
	if err != nil {
		t.Fatalf("NormalizePath(%q): %v", r.path, err)
	}
	in := &xds.RBACInput{Host: r.host, Request: &xds.Request{Method: r.method, Path: p, Header: r.header},
		Local:  netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), r.port),
		Remote: netip.AddrPortFrom(netip.MustParseAddr(ip(r)), 5000)}
	if r.peer != "" {
		u, _ := url.Parse(r.peer)
		in.PeerCert = &x509.Certificate{URIs: []*url.URL{u}}
	}
	out := outcome{allow: true}
	for _, f := range chain {
		allowed, matched := f.Allowed(in)
		switch {
		case f.Action == xds.RBACLog:
			if matched != "" && out.audit == "" {
				out.audit = istioName(t, matched)
			}
			continue
		case matched != "":
			out.policy = istioName(t, matched)
		default:
			out.policy = ""
		}
		if !allowed {
			out.allow = false
			return out
		}
	}
	return out
}

func ip(r request) string {
	if r.ip == "" {
		return "10.0.0.7"
	}
	return r.ip
}

var istiodName = regexp.MustCompile(`^ns\[(.*)\]-policy\[(.*)\]-rule\[\d+\]$`)

// istioName turns istiod's RBAC policy name into the AuthorizationPolicy's.
func istioName(t testing.TB, rbacName string) string {
	m := istiodName.FindStringSubmatch(rbacName)
	if m == nil {
		t.Fatalf("RBAC policy name %q is not istiod's", rbacName)
	}
	return m[1] + "/" + m[2]
}

func decodeChain(t testing.TB, fs []filter) []*xds.RBAC {
	var hfs []*hcmv3.HttpFilter
	for i, f := range fs {
		hfs = append(hfs, xdstest.RBACFilter("rbac-"+string(rune('a'+i)), &rbacv3.RBAC{Action: f.action, Policies: f.policies}))
	}
	l := xdstest.ServerListener("inbound", netip.MustParseAddrPort("0.0.0.0:8080"), nil,
		xdstest.FilterChain("main", xdstest.InboundRoutes("in"), hfs...))
	a, err := anypb.New(l)
	if err != nil {
		t.Fatal(err)
	}
	_, res, err := xds.Decode(xds.ListenerType, a)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	chain := res.(*xds.Listener).Server.FilterChains[0].RBAC
	if len(chain) != len(fs) {
		t.Fatalf("decoded %d RBAC filters, want %d", len(chain), len(fs))
	}
	return chain
}

// FuzzFrontEndsAgree sends arbitrary requests through both front ends of
// every case and wants the same decision from each.
func FuzzFrontEndsAgree(f *testing.F) {
	for _, c := range frontEndCases {
		for _, r := range c.reqs {
			f.Add(r.method, r.path, r.host, r.header.Get("Version"), r.header.Get("X-Debug"), r.peer, ip(r), r.port)
		}
	}
	type parsed struct {
		set   *security.PolicySet
		chain []*xds.RBAC
	}
	var cases []parsed
	for _, c := range frontEndCases {
		set, err := security.ParseAuthorizationPolicies([]byte(c.yaml))
		if err != nil {
			f.Fatalf("%s: %v", c.name, err)
		}
		cases = append(cases, parsed{set, decodeChain(f, c.filters)})
	}
	f.Fuzz(func(t *testing.T, method, path, host, version, debug, peer, addr string, port uint16) {
		if _, err := security.NormalizePath(path); err != nil {
			return // refused before authorization on both paths
		}
		if strings.Contains(host, ":") {
			return // hosts with a port: the one difference, see TestHostsWithPort
		}
		if _, err := spiffeid.FromString(peer); err != nil && peer != "" {
			return
		}
		if _, err := url.Parse(peer); err != nil {
			return
		}
		if _, err := netip.ParseAddr(addr); err != nil {
			return
		}
		r := request{method: method, path: path, host: host, port: port, peer: peer, ip: addr, header: http.Header{}}
		if version != "" {
			r.header["Version"] = []string{version}
		}
		if debug != "" {
			r.header["X-Debug"] = []string{debug}
		}
		for i, c := range cases {
			y, x := yamlOutcome(c.set, r), xdsOutcome(t, c.chain, r)
			if y != x {
				t.Errorf("case %q: policy file %+v, xDS RBAC %+v for %+v", frontEndCases[i].name, y, x, r)
			}
		}
	})
}
