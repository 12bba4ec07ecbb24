package security_test

import (
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/security"
)

const policyHeader = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"

var (
	sleepID = spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/sleep")
	devID   = spiffeid.RequireFromString("spiffe://cluster.local/ns/dev/sa/tool")
	fooID   = spiffeid.RequireFromString("spiffe://cluster.local/ns/foo/sa/app")
	otherTD = spiffeid.RequireFromString("spiffe://other.example/ns/default/sa/sleep")
)

func mustParse(t testing.TB, y string) *security.PolicySet {
	t.Helper()
	p, err := security.ParseAuthorizationPolicies([]byte(y))
	if err != nil {
		t.Fatalf("ParseAuthorizationPolicies: %v\n%s", err, y)
	}
	return p
}

type check struct {
	name       string
	req        security.Request
	wantAllow  bool
	wantPolicy string // checked when not empty
}

func getReq(path string, id spiffeid.ID) security.Request {
	return security.Request{Method: "GET", Path: path, SourceID: id, Port: 8080, SourceIP: netip.MustParseAddr("10.0.0.7")}
}

func with(r security.Request, f func(*security.Request)) security.Request {
	f(&r)
	return r
}

// TestEvaluateIstioExamples mirrors the examples of Istio's
// AuthorizationPolicy reference and tasks.
func TestEvaluateIstioExamples(t *testing.T) {
	tests := []struct {
		name   string
		policy string
		checks []check
	}{
		{
			name: "allow by principal or namespace, and method and path",
			policy: policyHeader + `metadata:
  name: httpbin
  namespace: foo
spec:
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/sleep"]
    - source:
        namespaces: ["test"]
    to:
    - operation:
        methods: ["GET"]
        paths: ["/info*"]
    - operation:
        methods: ["POST"]
        paths: ["/data"]
`,
			checks: []check{
				{"sleep GET /info", getReq("/info", sleepID), true, "foo/httpbin"},
				{"sleep GET /info/sub", getReq("/info/sub", sleepID), true, ""},
				{"sleep POST /data", with(getReq("/data", sleepID), func(r *security.Request) { r.Method = "POST" }), true, ""},
				{"sleep GET /data", getReq("/data", sleepID), false, ""},
				{"test namespace", getReq("/info", spiffeid.RequireFromString("spiffe://cluster.local/ns/test/sa/x")), true, ""},
				{"other principal", getReq("/info", devID), false, ""},
				{"same path in another trust domain", getReq("/info", otherTD), false, ""},
				{"plaintext", getReq("/info", spiffeid.ID{}), false, ""},
			},
		},
		{
			name: "deny by method from a namespace",
			policy: policyHeader + `metadata: {name: deny-post-from-dev, namespace: foo}
spec:
  action: DENY
  rules:
  - from:
    - source:
        namespaces: ["dev"]
    to:
    - operation:
        methods: ["POST"]
`,
			checks: []check{
				{"dev POST", with(getReq("/x", devID), func(r *security.Request) { r.Method = "POST" }), false, "foo/deny-post-from-dev"},
				{"dev GET", getReq("/x", devID), true, ""},
				{"default POST", with(getReq("/x", sleepID), func(r *security.Request) { r.Method = "POST" }), true, ""},
				{"plaintext POST", with(getReq("/x", spiffeid.ID{}), func(r *security.Request) { r.Method = "POST" }), true, ""},
			},
		},
		{
			name: "deny everything but the health check (notPaths)",
			policy: policyHeader + `metadata: {name: only-healthz}
spec:
  action: DENY
  rules:
  - to:
    - operation:
        notPaths: ["/healthz"]
`,
			checks: []check{
				{"healthz", getReq("/healthz", sleepID), true, ""},
				{"healthz with query", getReq("/healthz?full=1", sleepID), true, ""},
				{"other", getReq("/api", sleepID), false, "only-healthz"},
			},
		},
		{
			name: "when on request headers",
			policy: policyHeader + `metadata: {name: version-header}
spec:
  action: ALLOW
  rules:
  - when:
    - key: request.headers[version]
      values: ["v1", "v2"]
    - key: request.headers[x-debug]
      notValues: ["*"]
`,
			checks: []check{
				{"v1", with(getReq("/", sleepID), func(r *security.Request) { r.Headers = http.Header{"Version": {"v1"}} }), true, ""},
				{"v3", with(getReq("/", sleepID), func(r *security.Request) { r.Headers = http.Header{"Version": {"v3"}} }), false, ""},
				{"missing", getReq("/", sleepID), false, ""},
				{"v2 with debug", with(getReq("/", sleepID), func(r *security.Request) {
					r.Headers = http.Header{"Version": {"v2"}, "X-Debug": {"1"}}
				}), false, ""},
			},
		},
		{
			name:   "allow nothing",
			policy: policyHeader + "metadata: {name: allow-nothing}\nspec: {}\n",
			checks: []check{
				{"any", getReq("/", sleepID), false, ""},
				{"plaintext", getReq("/", spiffeid.ID{}), false, ""},
			},
		},
		{
			name:   "deny all",
			policy: policyHeader + "metadata: {name: deny-all}\nspec:\n  action: DENY\n  rules: [{}]\n",
			checks: []check{{"any", getReq("/", sleepID), false, "deny-all"}},
		},
		{
			name:   "allow all",
			policy: policyHeader + "metadata: {name: allow-all}\nspec:\n  action: ALLOW\n  rules: [{}]\n",
			checks: []check{
				{"any", getReq("/", sleepID), true, "allow-all"},
				{"plaintext", getReq("/", spiffeid.ID{}), true, "allow-all"},
			},
		},
		{
			name: "deny wins over allow; default deny once an ALLOW exists",
			policy: policyHeader + `metadata: {name: allow-all}
spec:
  rules: [{}]
---
` + policyHeader + `metadata: {name: deny-admin}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin", "/admin/*"]}}]
`,
			checks: []check{
				{"normal path", getReq("/x", sleepID), true, "allow-all"},
				{"admin", getReq("/admin", sleepID), false, "deny-admin"},
				{"admin sub", getReq("/admin/users", sleepID), false, "deny-admin"},
			},
		},
		{
			name: "require mTLS: deny requests without a principal",
			policy: policyHeader + `metadata: {name: require-mtls}
spec:
  action: DENY
  rules:
  - from:
    - source:
        notPrincipals: ["*"]
`,
			checks: []check{
				{"plaintext", getReq("/", spiffeid.ID{}), false, "require-mtls"},
				{"mTLS", getReq("/", sleepID), true, ""},
			},
		},
		{
			name: "principal wildcards, notNamespaces and ipBlocks",
			policy: policyHeader + `metadata: {name: mixed}
spec:
  rules:
  - from:
    - source:
        principals: ["cluster.local/*"]
        notNamespaces: ["dev"]
        ipBlocks: ["10.0.0.0/8"]
        notIpBlocks: ["10.9.0.0/16"]
  - from:
    - source:
        principals: ["*/sa/app"]
`,
			checks: []check{
				{"default from 10/8", getReq("/", sleepID), true, "mixed"},
				{"dev namespace", getReq("/", devID), false, ""},
				{"outside ipBlocks", with(getReq("/", sleepID), func(r *security.Request) { r.SourceIP = netip.MustParseAddr("192.168.1.1") }), false, ""},
				{"in notIpBlocks", with(getReq("/", sleepID), func(r *security.Request) { r.SourceIP = netip.MustParseAddr("10.9.1.1") }), false, ""},
				{"IPv4-mapped IPv6", with(getReq("/", sleepID), func(r *security.Request) { r.SourceIP = netip.MustParseAddr("::ffff:10.0.0.7") }), true, ""},
				{"suffix wildcard, other trust domain", getReq("/", spiffeid.RequireFromString("spiffe://other.example/ns/x/sa/app")), true, ""},
				{"plaintext", getReq("/", spiffeid.ID{}), false, ""},
			},
		},
		{
			name: "hosts, ports and conditions on source and port",
			policy: policyHeader + `metadata: {name: ops}
spec:
  rules:
  - to:
    - operation:
        hosts: ["*.example.com"]
        notHosts: ["admin.example.com"]
        ports: ["8080"]
    when:
    - key: source.principal
      values: ["spiffe://cluster.local/ns/default/*"]
    - key: source.namespace
      notValues: ["dev"]
    - key: source.ip
      values: ["10.0.0.0/24"]
    - key: destination.port
      notValues: ["9090"]
`,
			checks: []check{
				{"match", with(getReq("/", sleepID), func(r *security.Request) { r.Host = "API.Example.com:8080" }), true, "ops"},
				{"excluded host", with(getReq("/", sleepID), func(r *security.Request) { r.Host = "admin.example.com" }), false, ""},
				{"other port", with(getReq("/", sleepID), func(r *security.Request) { r.Host = "api.example.com"; r.Port = 9090 }), false, ""},
				{"other namespace principal", with(getReq("/", fooID), func(r *security.Request) { r.Host = "api.example.com" }), false, ""},
				{"no host", getReq("/", sleepID), false, ""},
			},
		},
		{
			name: "audit marks without deciding",
			policy: policyHeader + `metadata: {name: audit-admin}
spec:
  action: AUDIT
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
`,
			checks: []check{
				{"audited", getReq("/admin", sleepID), true, ""},
				{"not audited", getReq("/x", sleepID), true, ""},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustParse(t, tt.policy)
			for _, c := range tt.checks {
				req := c.req
				d := p.Evaluate(&req)
				if d.Allow != c.wantAllow {
					t.Errorf("%s: Allow = %v (policy %q, reason %q), want %v", c.name, d.Allow, d.Policy, d.Reason, c.wantAllow)
				}
				if c.wantPolicy != "" && d.Policy != c.wantPolicy {
					t.Errorf("%s: Policy = %q, want %q", c.name, d.Policy, c.wantPolicy)
				}
			}
		})
	}
}

func TestEvaluateAudit(t *testing.T) {
	p := mustParse(t, policyHeader+`metadata: {name: audit-admin, namespace: ops}
spec:
  action: AUDIT
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
`)
	tests := []struct {
		path        string
		wantAudit   bool
		wantAuditBy string
	}{
		{"/admin/x", true, "ops/audit-admin"},
		{"/other", false, ""},
	}
	for _, tt := range tests {
		r := getReq(tt.path, sleepID)
		d := p.Evaluate(&r)
		if !d.Allow || d.Audit != tt.wantAudit || d.AuditPolicy != tt.wantAuditBy {
			t.Errorf("Evaluate(%s) = %+v, want allowed, Audit %v by %q", tt.path, d, tt.wantAudit, tt.wantAuditBy)
		}
	}
}

// TestEvaluatePathNormalization makes sure a DENY on /admin cannot be
// slipped past with another spelling of the same path.
func TestEvaluatePathNormalization(t *testing.T) {
	p := mustParse(t, policyHeader+`metadata: {name: deny-admin}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin", "/admin/*"]}}]
---
`+policyHeader+`metadata: {name: allow-all}
spec: {rules: [{}]}
`)
	denied := []string{
		"/admin", "//admin", "/a/../admin", "/./admin", "/%2Fadmin", "/%2fadmin", "/%5Cadmin", "/%5cadmin",
		"\\admin", "/%61dmin", "/admin/", "/admin/./x", "///admin//x", "/x/..%2Fadmin", "/x/%2E%2E/admin",
		"/../../admin", "/admin?x=1", "/%252Fadmin", "/adm%00in", "/%zzadmin", "admin",
	}
	for _, path := range denied {
		r := getReq(path, sleepID)
		if d := p.Evaluate(&r); d.Allow {
			t.Errorf("Evaluate(%q) allowed, want denied", path)
		}
	}
	allowed := []string{"/", "/administrator", "/x/admin", "/adminx/", "/a/b/../c"}
	for _, path := range allowed {
		r := getReq(path, sleepID)
		if d := p.Evaluate(&r); !d.Allow {
			t.Errorf("Evaluate(%q) denied (%s), want allowed", path, d.Reason)
		}
	}
}

func TestNormalizePath(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{"", "/", false},
		{"/", "/", false},
		{"/a/b", "/a/b", false},
		{"/a/b/", "/a/b/", false},
		{"//admin", "/admin", false},
		{"/a/../admin", "/admin", false},
		{"/%2Fadmin", "", true},
		{"/%2fadmin", "", true},
		{"/%5Cadmin", "", true},
		{"/%5cadmin", "", true},
		{"\\admin", "", true},
		{"/a\\..\\admin", "", true},
		{"/a/%2e%2e/admin", "/admin", false},
		{"/a/.%2E/admin", "/admin", false},
		{"/a/%2E./admin/", "/admin/", false},
		{"/%61dmin", "/admin", false},
		{"/a%3Fb", "/a?b", false},
		{"/a/./b/.", "/a/b/", false},
		{"/a/b/..", "/a/", false},
		{"/..", "/", false},
		{"/a%20b", "/a b", false},
		{"/p?q=/../x", "/p", false},
		{"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Check", false},
		{"/%", "", true},
		{"/%2", "", true},
		{"/%G0", "", true},
		{"/%252F", "", true},
		{"/a%00", "", true},
		{"a/b", "", true},
		{"*", "", true},
		{"%2Fa", "", true},
		{"/a%25zz", "/a%zz", false},
		{"/" + strings.Repeat("a", 64<<10), "", true},
	}
	for _, tt := range tests {
		got, err := security.NormalizePath(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("NormalizePath(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseAuthorizationPoliciesErrors(t *testing.T) {
	ok := policyHeader + "metadata: {name: ok}\nspec: {rules: [{}]}\n"
	tests := []struct {
		name string
		yaml string
		want []string // substrings of the error
	}{
		{"unknown field", ok + "---\n" + policyHeader + "metadata: {name: bad}\nspec:\n  rules:\n  - from: [{source: {principal: [x]}}]\n", []string{"document 2", "principal"}},
		{"bad CIDR", policyHeader + "metadata: {name: n, namespace: ns}\nspec:\n  rules:\n  - from: [{source: {ipBlocks: [10.0.0.0/33]}}]\n", []string{"document 1 (ns/n)", "spec.rules[0].from[0].source.ipBlocks[0]", "10.0.0.0/33"}},
		{"bad port", policyHeader + "spec:\n  rules:\n  - to: [{operation: {ports: [http]}}]\n", []string{"document 1", "spec.rules[0].to[0].operation.ports[0]"}},
		{"port zero", policyHeader + "spec:\n  rules:\n  - to: [{operation: {ports: ['0']}}]\n", []string{"ports[0]"}},
		{"wildcard in the middle", policyHeader + "spec:\n  rules:\n  - to: [{operation: {paths: [/a*b]}}]\n", []string{"paths[0]", "middle"}},
		{"two wildcards", policyHeader + "spec:\n  rules:\n  - from: [{source: {principals: ['*a*']}}]\n", []string{"principals[0]", "more than one wildcard"}},
		{"path template", policyHeader + "spec:\n  rules:\n  - to: [{operation: {paths: ['/a/{*}']}}]\n", []string{"paths[0]", "templates"}},
		{"relative path", policyHeader + "spec:\n  rules:\n  - to: [{operation: {notPaths: [admin]}}]\n", []string{"notPaths[0]"}},
		{"empty value", policyHeader + "spec:\n  rules:\n  - to: [{operation: {methods: ['']}}]\n", []string{"methods[0]", "empty"}},
		{"custom action", policyHeader + "spec: {action: CUSTOM, provider: {name: x}}\n", []string{"spec.action", "CUSTOM"}},
		{"unknown action", policyHeader + "spec: {action: MAYBE}\n", []string{"spec.action", "MAYBE"}},
		{"service accounts", policyHeader + "spec:\n  rules:\n  - from: [{source: {serviceAccounts: ['a']}}]\n", []string{"serviceAccounts", "not supported"}},
		{"empty request principal", policyHeader + "spec:\n  rules:\n  - from: [{source: {requestPrincipals: ['']}}]\n", []string{"requestPrincipals[0]", "empty"}},
		{"bad claim key", policyHeader + "spec:\n  rules:\n  - when: [{key: 'request.auth.claims.iss', values: [x]}]\n", []string{"when[0].key", "request.auth.claims"}},
		{"claim key without a name", policyHeader + "spec:\n  rules:\n  - when: [{key: 'request.auth.claims[]', values: [x]}]\n", []string{"when[0].key"}},
		{"condition without values", policyHeader + "spec:\n  rules:\n  - when: [{key: source.ip}]\n", []string{"when[0].values"}},
		{"bad condition IP", policyHeader + "spec:\n  rules:\n  - when: [{key: source.ip, values: [nope]}]\n", []string{"when[0].values[0]"}},
		{"bad header key", policyHeader + "spec:\n  rules:\n  - when: [{key: 'request.headers[]', values: [x]}]\n", []string{"when[0].key"}},
		{"empty source", policyHeader + "spec:\n  rules:\n  - from: [{source: {}}]\n", []string{"from[0].source: must not be empty"}},
		{"missing operation", policyHeader + "spec:\n  rules:\n  - to: [{}]\n", []string{"to[0].operation: must be set"}},
		{"wrong kind", "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nspec: {}\n", []string{"document 1", "kind"}},
		{"wrong apiVersion", "apiVersion: v1\nkind: AuthorizationPolicy\n", []string{"apiVersion"}},
		{"not YAML", "spec: [\n", []string{"document 1"}},
		{"third document", ok + "---\n" + ok + "---\n" + policyHeader + "spec: {action: nope}\n", []string{"document 3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := security.ParseAuthorizationPolicies([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("ParseAuthorizationPolicies = nil error, want one containing %q", tt.want)
			}
			if !strings.HasPrefix(err.Error(), "security: ") {
				t.Errorf("error %q lacks the security: prefix", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error = %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestParseAuthorizationPoliciesAccepts(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		wantLen int
	}{
		{"empty input", "", 0},
		{"only separators and comments", "---\n# nothing\n---\n", 0},
		{"v1beta1 with selector, labels and status", `apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: p
  namespace: ns
  labels: {app: x}
  annotations: {a: b}
spec:
  selector:
    matchLabels: {app: httpbin}
  rules:
  - to: [{operation: {ports: [8080]}}]
status: {}
`, 1},
		{"three documents", policyHeader + "spec: {}\n---\n" + policyHeader + "spec: {action: DENY}\n---\n" + policyHeader + "spec: {action: AUDIT}\n", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustParse(t, tt.yaml)
			if got := p.Len(); got != tt.wantLen {
				t.Errorf("Len() = %d, want %d", got, tt.wantLen)
			}
		})
	}
	var nilSet *security.PolicySet
	r := getReq("/", spiffeid.ID{})
	if d := nilSet.Evaluate(&r); !d.Allow {
		t.Error("nil PolicySet denied a request, want allow")
	}
}

func TestPolicySetForWorkload(t *testing.T) {
	const docs = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-wide, namespace: istio-system}
spec: {action: DENY, rules: [{to: [{operation: {paths: ["/mesh-deny"]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ns-wide, namespace: shop}
spec: {action: DENY, rules: [{to: [{operation: {paths: ["/ns-deny"]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: orders-v2-only, namespace: shop}
spec:
  selector: {matchLabels: {app: orders, version: v2}}
  action: DENY
  rules: [{to: [{operation: {paths: ["/v2-deny"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: orders-service, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: orders}]
  action: DENY
  rules: [{to: [{operation: {paths: ["/svc-deny"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: gateway, namespace: shop}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: orders}]
  action: DENY
  rules: [{to: [{operation: {paths: ["/gw-deny"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other-ns, namespace: billing}
spec: {action: DENY, rules: [{to: [{operation: {paths: ["/billing-deny"]}}]}]}
`
	set := mustParse(t, docs)
	denied := func(s *security.PolicySet, path string) bool {
		r := getReq(path, spiffeid.ID{})
		return !s.Evaluate(&r).Allow
	}
	paths := []string{"/mesh-deny", "/ns-deny", "/v2-deny", "/svc-deny", "/gw-deny", "/billing-deny"}
	cases := []struct {
		name string
		w    security.Workload
		deny []string
	}{
		{"unknown namespace: the whole file applies", security.Workload{}, paths},
		{"orders v1", security.Workload{Namespace: "shop", Service: "orders", Labels: map[string]string{"app": "orders", "version": "v1"}},
			[]string{"/mesh-deny", "/ns-deny", "/svc-deny"}},
		{"orders v2", security.Workload{Namespace: "shop", Service: "orders", Labels: map[string]string{"app": "orders", "version": "v2"}},
			[]string{"/mesh-deny", "/ns-deny", "/v2-deny", "/svc-deny"}},
		{"billing", security.Workload{Namespace: "billing", Service: "billing"}, []string{"/mesh-deny", "/billing-deny"}},
		{"another root namespace", security.Workload{Namespace: "billing", RootNamespace: "mesh-root"}, []string{"/billing-deny"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := set.For(c.w)
			for _, p := range paths {
				if got, want := denied(s, p), slices.Contains(c.deny, p); got != want {
					t.Errorf("%s denied = %v, want %v", p, got, want)
				}
			}
		})
	}
	for _, bad := range []struct{ name, spec, want string }{
		{"selector and targetRefs", "{selector: {matchLabels: {a: b}}, targetRefs: [{kind: Service, name: x}]}", "spec.selector"},
		{"targetRef without a name", "{targetRefs: [{kind: Service}]}", "spec.targetRefs[0]"},
		{"targetRef in another namespace", "{targetRefs: [{kind: Service, name: x, namespace: other}]}", "spec.targetRefs[0].namespace"},
		{"unknown selector field", "{selector: {matchExpressions: []}}", "matchExpressions"},
	} {
		t.Run(bad.name, func(t *testing.T) {
			_, err := security.ParseAuthorizationPolicies([]byte("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: shop}\nspec: " + bad.spec + "\n"))
			if err == nil || !strings.Contains(err.Error(), bad.want) {
				t.Errorf("error = %v, want one naming %s", err, bad.want)
			}
		})
	}
}
