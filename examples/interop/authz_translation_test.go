package interop

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/anypb"
	securityapi "istio.io/api/security/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	authzmodel "istio.io/istio/pilot/pkg/security/authz/model"
	"k8s.io/apimachinery/pkg/types"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/weftmesh/weft/internal/xds"
	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/security"
)

// translationPolicies exercise every field Weft's policy file accepts.
const translationPolicies = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-admin, namespace: foo}
spec:
  action: AUDIT
  rules: [{to: [{operation: {paths: ["/admin*"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: foo}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin", "/admin/*"], notMethods: ["HEAD"]}}]
  - from: [{source: {namespaces: ["dev", "qa-*"], notIpBlocks: ["10.9.0.0/16"]}}]
    to: [{operation: {notPaths: ["/healthz"]}}]
  - from: [{source: {notPrincipals: ["*"]}}]
    to: [{operation: {ports: ["9090"]}}]
  - when: [{key: "request.headers[x-debug]", values: ["*"]}, {key: remote.ip, values: ["192.168.0.0/16"]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow, namespace: foo}
spec:
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/default/sa/sleep", "*/sa/app"]}
    - source: {namespaces: ["test"], ipBlocks: ["10.0.0.0/8"], notRemoteIpBlocks: ["10.0.0.9"]}
    to:
    - operation: {methods: ["GET", "HEAD"], paths: ["/info*", "*.json"], hosts: ["*.example.com"], notHosts: ["admin.*"]}
    - operation: {methods: ["POST"], paths: ["/data"], ports: ["8080"]}
    when:
    - {key: "request.headers[version]", values: ["v1", "v2*"]}
    - {key: source.namespace, notValues: ["blocked"]}
    - {key: destination.port, values: ["8080", "8443"]}
    - {key: source.ip, notValues: ["10.1.0.0/16"]}
    - {key: source.principal, notValues: ["cluster.local/ns/default/sa/banned"]}
  - to: [{operation: {paths: ["/healthz"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: foo}
spec: {}
`

// TestIstiodTranslationDecidesAsPolicyFile feeds the policies to istiod's
// own translation (pilot/pkg/security/authz/model, as for a proxyless
// workload), runs the RBAC it produces through Weft's xDS path, and wants,
// for every request of a cross product of methods, paths, hosts, callers,
// addresses, ports and headers, the decision Weft's policy file makes.
func TestIstiodTranslationDecidesAsPolicyFile(t *testing.T) {
	set, err := security.ParseAuthorizationPolicies([]byte(translationPolicies))
	if err != nil {
		t.Fatal(err)
	}
	chain := istiodChain(t, translationPolicies)

	methods := []string{"GET", "HEAD", "POST"}
	paths := []string{"/", "/info", "/info/x", "/a.json", "/admin", "/admin/x", "//admin/./x", "/data", "/healthz"}
	hosts := []string{"", "api.example.com", "API.EXAMPLE.COM", "admin.example.com", "other.org"}
	peers := []string{"", "spiffe://cluster.local/ns/default/sa/sleep", "spiffe://other.td/ns/x/sa/app",
		"spiffe://cluster.local/ns/test/sa/x", "spiffe://cluster.local/ns/dev/sa/x", "spiffe://cluster.local/ns/qa-1/sa/x",
		"spiffe://cluster.local/ns/blocked/sa/x", "spiffe://cluster.local/ns/default/sa/banned", "spiffe://cluster.local/x/ns/test/y"}
	ips := []string{"10.0.0.7", "10.0.0.9", "10.1.2.3", "10.9.1.1", "192.168.1.1"}
	ports := []uint16{8080, 8443, 9090}
	headers := []http.Header{nil, {"Version": {"v1"}}, {"Version": {"v2.5"}}, {"Version": {"v1", "v3"}}, {"Version": {"v1"}, "X-Debug": {"1"}}}
	n, allowed := 0, 0
	for _, method := range methods {
		for _, path := range paths {
			for _, host := range hosts {
				for _, peer := range peers {
					for _, ip := range ips {
						for _, port := range ports {
							for _, h := range headers {
								file := fileDecision(set, method, path, host, peer, ip, port, h)
								viaIstiod := xdsDecision(t, chain, method, path, host, peer, ip, port, h)
								if file != viaIstiod {
									t.Fatalf("%s %s host %q from %q at %s to :%d, headers %v: policy file %+v, istiod's RBAC %+v",
										method, path, host, peer, ip, port, h, file, viaIstiod)
								}
								n++
								if file.allow {
									allowed++
								}
							}
						}
					}
				}
			}
		}
	}
	t.Logf("%d requests, %d allowed, decided alike", n, allowed)
}

type translationDecision struct{ allow, audit bool }

func fileDecision(set *security.PolicySet, method, path, host, peer, ip string, port uint16, h http.Header) translationDecision {
	r := security.Request{Method: method, Path: path, Host: host, Headers: h, Port: int(port), SourceIP: netip.MustParseAddr(ip)}
	if peer != "" {
		r.SourceID = spiffeid.RequireFromString(peer)
	}
	d := set.Evaluate(&r)
	return translationDecision{d.Allow, d.Audit}
}

// xdsDecision runs the chain as Weft's inbound server does.
func xdsDecision(t *testing.T, chain []*xds.RBAC, method, path, host, peer, ip string, port uint16, h http.Header) translationDecision {
	p, err := security.NormalizePath(path)
	if err != nil {
		t.Fatal(err)
	}
	in := &xds.RBACInput{Host: host, Request: &xds.Request{Method: method, Path: p, Header: h},
		Local: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), port), Remote: netip.AddrPortFrom(netip.MustParseAddr(ip), 5000)}
	if peer != "" {
		u, _ := url.Parse(peer)
		in.PeerCert = &x509.Certificate{URIs: []*url.URL{u}}
	}
	d := translationDecision{allow: true}
	for _, f := range chain {
		ok, matched := f.Allowed(in)
		if f.Action == xds.RBACLog {
			d.audit = d.audit || matched != ""
			continue
		}
		if !ok {
			d.allow = false
			break
		}
	}
	return d
}

// istiodChain translates docs with istiod's model into the LOG, DENY and
// ALLOW RBAC filters istiod's builder emits, and decodes them with Weft's
// xDS client code.
func istiodChain(t *testing.T, docs string) []*xds.RBAC {
	actions := []struct {
		istio securityapi.AuthorizationPolicy_Action
		rbac  rbacv3.RBAC_Action
	}{
		{securityapi.AuthorizationPolicy_AUDIT, rbacv3.RBAC_LOG},
		{securityapi.AuthorizationPolicy_DENY, rbacv3.RBAC_DENY},
		{securityapi.AuthorizationPolicy_ALLOW, rbacv3.RBAC_ALLOW},
	}
	rules := map[rbacv3.RBAC_Action]*rbacv3.RBAC{}
	for _, doc := range strings.Split(docs, "\n---\n") {
		js, err := k8syaml.ToJSON([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		ap := &securityv1.AuthorizationPolicy{}
		if err := json.Unmarshal(js, ap); err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
		for _, a := range actions {
			if ap.Spec.Action != a.istio {
				continue
			}
			r := rules[a.rbac]
			if r == nil {
				r = &rbacv3.RBAC{Action: a.rbac, Policies: map[string]*rbacv3.Policy{}}
				rules[a.rbac] = r
			}
			for i, rule := range ap.Spec.Rules {
				m, err := authzmodel.New(types.NamespacedName{Namespace: ap.Namespace, Name: ap.Name}, rule)
				if err != nil {
					t.Fatalf("%s rule %d: %v", ap.Name, i, err)
				}
				p, err := m.Generate(false, true, a.rbac)
				if err != nil {
					t.Fatalf("%s rule %d: %v", ap.Name, i, err)
				}
				r.Policies[fmt.Sprintf("ns[%s]-policy[%s]-rule[%d]", ap.Namespace, ap.Name, i)] = p
			}
		}
	}
	var filters []*hcmv3.HttpFilter
	for _, a := range actions {
		if r := rules[a.rbac]; r != nil {
			filters = append(filters, xdstest.RBACFilter("istio_authz_"+a.rbac.String(), r))
		}
	}
	l := xdstest.ServerListener("inbound", netip.MustParseAddrPort("0.0.0.0:8080"), nil,
		xdstest.FilterChain("main", xdstest.InboundRoutes("in"), filters...))
	a, err := anypb.New(l)
	if err != nil {
		t.Fatal(err)
	}
	_, res, err := xds.Decode(xds.ListenerType, a)
	if err != nil {
		t.Fatalf("Decode of istiod's RBAC: %v", err)
	}
	return res.(*xds.Listener).Server.FilterChains[0].RBAC
}
