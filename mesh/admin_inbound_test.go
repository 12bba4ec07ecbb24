package mesh_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/security"
	"github.com/weftmesh/weft/telemetry/admin"
)

const inboundPolicy = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: orders
  namespace: shop
spec:
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["shop.example/ns/shop/sa/frontend"]
    to:
    - operation:
        methods: ["GET"]
        paths: ["/items*", "/secret*"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: no-secrets
  namespace: shop
spec:
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/secret*"]
`

// The admin endpoint shows the server side: who this service is, the
// policy in force with its rules, and the decisions it made, denials with
// the policy that decided and the caller; and golden metrics both ways.
// inboundWithDenials starts a server "orders" with an identity, a policy
// file and an admin listener, and a client with its own admin listener,
// and sends it two allowed requests and two denied ones.
func inboundWithDenials(t *testing.T) (serverAdmin, clientAdmin, policy string) {
	t.Helper()
	ca := newCA(t, shop)
	server := workloadAPI(t, ca, ordersID)
	client := workloadAPI(t, ca, frontendID)
	policy = filepath.Join(t.TempDir(), "authz.yaml")
	if err := os.WriteFile(policy, []byte(inboundPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", server.Addr())
	t.Setenv("WEFT_AUTHZ_POLICY", policy)
	serverAdmin = freeAddr(t)
	addr := serveWhoami(t, newMesh(t, mesh.WithServiceName("orders"), mesh.WithAdminAddr(serverAdmin), mesh.WithWorkload(security.Workload{Namespace: "shop"})))
	t.Setenv("WEFT_AUTHZ_POLICY", "")
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", client.Addr())
	clientAdmin = freeAddr(t)
	c := newMesh(t, mesh.WithEndpoints("orders", addr), mesh.WithAdminAddr(clientAdmin)).HTTPClient()

	for _, tt := range []struct {
		path string
		want int
	}{{"/items/1", http.StatusOK}, {"/items/1", http.StatusOK}, {"/admin", http.StatusForbidden}, {"/secret/key", http.StatusForbidden}} {
		resp, err := c.Get("http://orders" + tt.path)
		if err != nil {
			t.Fatalf("GET %s: %v", tt.path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Fatalf("GET %s: status %d, want %d", tt.path, resp.StatusCode, tt.want)
		}
	}
	return serverAdmin, clientAdmin, policy
}

func TestAdminInboundShowsPolicyAndDecisions(t *testing.T) {
	adminAddr, clientAdmin, policy := inboundWithDenials(t)
	ac := adminClient(t)
	_, _, body := fetch(t, ac, "http://"+adminAddr+"/inbound")
	var in admin.Inbound
	if err := json.Unmarshal([]byte(body), &in); err != nil {
		t.Fatalf("/inbound: %v\n%s", err, body)
	}
	if in.Identity != ordersID.String() || in.MTLS != "strict" || in.PolicyFile != policy {
		t.Errorf("/inbound: identity %q, mtls %q, policy file %q; want %s, strict, %s", in.Identity, in.MTLS, in.PolicyFile, ordersID, policy)
	}
	rules := map[string]string{}
	for _, p := range in.Policies {
		rules[p.Action+" "+p.Name] = strings.Join(p.Rules, "; ")
	}
	if r := rules["ALLOW shop/orders"]; !strings.Contains(r, `principal = "spiffe://shop.example/ns/shop/sa/frontend"`) || !strings.Contains(r, `path starts with "/items"`) {
		t.Errorf("/inbound: ALLOW shop/orders rules = %q; all policies: %v", r, rules)
	}
	if r := rules["DENY shop/no-secrets"]; !strings.Contains(r, `path starts with "/secret"`) {
		t.Errorf("/inbound: DENY shop/no-secrets rules = %q; all policies: %v", r, rules)
	}
	// Istio's order: a DENY policy decides first; with ALLOW policies,
	// a request none allows is denied by no policy at all.
	if in.Allowed < 2 || in.Denied != 2 {
		t.Errorf("/inbound: %d allowed, %d denied; want at least 2 and 2", in.Allowed, in.Denied)
	}
	denials := map[string]admin.Decision{}
	for _, d := range in.Decisions {
		if !d.Allowed {
			denials[d.Path] = d
		}
	}
	for path, rule := range map[string]string{"/secret/key": "shop/no-secrets", "/admin": ""} {
		d, ok := denials[path]
		if !ok {
			t.Errorf("/inbound: no denial of %s among %+v", path, in.Decisions)
			continue
		}
		if d.Rule != rule || d.Peer != frontendID.String() || d.Method != "GET" || d.Engine != "policy" || d.Protocol != "http" || d.Time.IsZero() {
			t.Errorf("/inbound: denial of %s = %+v, want rule %q by %s", path, d, rule, frontendID)
		}
	}

	// Golden metrics: the server sees its caller per path, the client the
	// service it called. A 403 is an answer, not a failure.
	var golden []admin.GoldenStat
	_, _, body = fetch(t, ac, "http://"+adminAddr+"/stats/golden")
	if err := json.Unmarshal([]byte(body), &golden); err != nil {
		t.Fatalf("/stats/golden: %v\n%s", err, body)
	}
	found := false
	for _, g := range golden {
		if g.Direction == "inbound" && g.Route == "/items/1" && g.Caller == frontendID.String() {
			found = true
			if g.Requests != 2 || g.SuccessRate == nil || *g.SuccessRate != 1 || g.P50Ms == nil || g.P99Ms == nil || g.RPS <= 0 {
				t.Errorf("/stats/golden: inbound /items/1 = %+v", g)
			}
		}
	}
	if !found {
		t.Errorf("/stats/golden of the server lacks inbound /items/1 from %s:\n%s", frontendID, body)
	}
	_, _, body = fetch(t, ac, "http://"+clientAdmin+"/stats/golden")
	if err := json.Unmarshal([]byte(body), &golden); err != nil {
		t.Fatalf("/stats/golden: %v\n%s", err, body)
	}
	if len(golden) != 1 || golden[0].Direction != "outbound" || golden[0].Service != "orders" || golden[0].Requests != 4 || golden[0].Total != 4 {
		t.Errorf("/stats/golden of the client = %s, want one outbound series for orders with 4 requests", body)
	}
}

// Under an xDS inbound listener the page shows the listener's mTLS mode
// (PeerAuthentication STRICT: every chain requires a client certificate),
// its RBAC filters' policies in words, and the RBAC denials with the
// policy that decided.
func TestAdminInboundShowsTheXDSListener(t *testing.T) {
	ca := newCA(t, shop)
	cp := xdstest.NewServer(t)
	var bs map[string]any
	if err := json.Unmarshal(cp.Bootstrap(xdsNode), &bs); err != nil {
		t.Fatal(err)
	}
	bs["server_listener_resource_name_template"] = inboundTemplate
	bootstrap, _ := json.Marshal(bs)

	t.Setenv("SPIFFE_ENDPOINT_SOCKET", workloadAPI(t, ca, ordersID).Addr())
	adminAddr := freeAddr(t)
	addr := serveWhoami(t, newMesh(t, mesh.WithBootstrap(bootstrap), mesh.WithAdminAddr(adminAddr)))
	name := strings.ReplaceAll(inboundTemplate, "%s", addr)
	cp.SetSnapshot(t, xdsNode, "1", inboundRBAC(name, frontendID.String()))
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", workloadAPI(t, ca, frontendID).Addr())
	frontend := newMesh(t, mesh.WithEndpoints("orders", addr)).HTTPClient()
	if got := statusOf(t, frontend, "GET", "http://orders/items"); got != 200 {
		t.Fatalf("GET /items = %d, want 200", got)
	}
	if got := statusOf(t, frontend, "GET", "http://orders/admin/users"); got != 403 {
		t.Fatalf("GET /admin/users = %d, want 403", got)
	}

	_, _, body := fetch(t, adminClient(t), "http://"+adminAddr+"/inbound")
	var in admin.Inbound
	if err := json.Unmarshal([]byte(body), &in); err != nil {
		t.Fatalf("/inbound: %v\n%s", err, body)
	}
	if len(in.Listeners) != 1 {
		t.Fatalf("/inbound lists %d listeners, want 1:\n%s", len(in.Listeners), body)
	}
	l := in.Listeners[0]
	if l.Name != name || l.Address != addr || l.State != "ACTIVE" || l.Mode != "STRICT" || len(l.Chains) != 1 || l.Chains[0].MTLS != "STRICT" {
		t.Errorf("/inbound listener = %+v, want %s at %s, ACTIVE, STRICT, one STRICT chain", l, name, addr)
	}
	var rbac []string
	for _, c := range l.Chains {
		for _, p := range c.RBAC {
			rbac = append(rbac, p.Action+" "+p.Filter+" "+p.Name+": "+strings.Join(p.Rules, "; "))
		}
	}
	for _, want := range []string{`DENY deny deny-admin: path starts with "/admin" from any`,
		`ALLOW allow allow-caller: header :method = "GET" from principal = "` + frontendID.String() + `"`} {
		if !slices.Contains(rbac, want) {
			t.Errorf("/inbound RBAC lacks %q; it holds %q", want, rbac)
		}
	}
	var denial *admin.Decision
	for i, d := range in.Decisions {
		if !d.Allowed {
			denial = &in.Decisions[i]
		}
	}
	if denial == nil || denial.Rule != "deny-admin" || denial.Engine != "xds_rbac" || denial.Peer != frontendID.String() || denial.Path != "/admin/users" {
		t.Errorf("/inbound denial = %+v, want deny-admin by xDS RBAC of %s on /admin/users", denial, frontendID)
	}
}
