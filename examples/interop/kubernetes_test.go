package interop

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	securityapi "istio.io/api/security/v1beta1"
	networking "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	istioscheme "istio.io/client-go/pkg/clientset/versioned/scheme"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/intstr"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/security"
)

// manifests is every object of one directory under examples/kubernetes.
type manifests struct {
	deployments []*appsv1.Deployment
	services    []*corev1.Service
	configMaps  []*corev1.ConfigMap
	accounts    map[string]bool // namespace/name
	namespaces  map[string]bool
	vss         []*networking.VirtualService
	drs         []*networking.DestinationRule
	authz       []*securityv1.AuthorizationPolicy
	other       []*unstructured.Unstructured // kinds no scheme here knows
}

// decodeManifests reads every YAML document under dir with the
// Kubernetes and Istio API types; a document that does not decode (an
// unknown field, a wrong type) fails the test. Kinds neither scheme knows
// (SPIRE's ClusterSPIFFEID) are kept as unstructured objects.
func decodeManifests(t *testing.T, dir string) *manifests {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, istioscheme.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	// Strict: a misspelt field is an error, not silently dropped.
	dec := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
	m := &manifests{accounts: map[string]bool{}, namespaces: map[string]bool{}}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s (%v)", dir, err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
		for i := 0; ; i++ {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: document %d: %v", f, i, err)
			}
			if len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			obj, gvk, err := dec.Decode(doc, nil, nil)
			if runtime.IsNotRegisteredError(err) {
				u := &unstructured.Unstructured{}
				js, jerr := k8syaml.ToJSON(doc)
				if jerr != nil {
					t.Fatalf("%s: document %d: %v", f, i, jerr)
				}
				if err := u.UnmarshalJSON(js); err != nil {
					t.Fatalf("%s: document %d: %v", f, i, err)
				}
				m.other = append(m.other, u)
				continue
			}
			if err != nil {
				t.Fatalf("%s: document %d (%v): %v", f, i, gvk, err)
			}
			switch o := obj.(type) {
			case *appsv1.Deployment:
				m.deployments = append(m.deployments, o)
			case *corev1.Service:
				m.services = append(m.services, o)
			case *corev1.ConfigMap:
				m.configMaps = append(m.configMaps, o)
			case *corev1.ServiceAccount:
				m.accounts[o.Namespace+"/"+o.Name] = true
			case *corev1.Namespace:
				m.namespaces[o.Name] = true
			case *networking.VirtualService:
				m.vss = append(m.vss, o)
			case *networking.DestinationRule:
				m.drs = append(m.drs, o)
			case *securityv1.AuthorizationPolicy:
				m.authz = append(m.authz, o)
			case *securityv1.PeerAuthentication:
			default:
				t.Fatalf("%s: document %d: %v is not checked by this test; add it", f, i, gvk)
			}
		}
	}
	return m
}

func stripComments(doc []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(append(out, line...), '\n')
		}
	}
	return out
}

// TestKubernetesManifests parses examples/kubernetes with the API types and
// checks that the pieces fit: every Deployment is a Weft service with a
// bootstrap, identity and the objects it names, Services select pods and
// target ports they expose, Istio hosts and subsets exist, and the policy
// Weft reads from a ConfigMap is the one istiod gets.
func TestKubernetesManifests(t *testing.T) {
	for _, dir := range []string{"istio", "spire"} {
		t.Run(dir, func(t *testing.T) {
			m := decodeManifests(t, filepath.Join("..", "kubernetes", dir))
			if len(m.deployments) < 2 {
				t.Fatalf("%d Deployments, want two Weft services at least", len(m.deployments))
			}
			for _, d := range m.deployments {
				checkDeployment(t, m, d, dir)
			}
			for _, s := range m.services {
				checkService(t, m, s)
			}
			checkIstioObjects(t, m)
			if dir == "spire" {
				checkClusterSPIFFEID(t, m)
			}
		})
	}
}

func env(c corev1.Container, name string) (corev1.EnvVar, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e, true
		}
	}
	return corev1.EnvVar{}, false
}

// mountedAt returns the volume mounted at the directory holding path.
func mountedAt(c corev1.Container, spec corev1.PodSpec, path string) (corev1.Volume, bool) {
	for _, vm := range c.VolumeMounts {
		if strings.HasPrefix(path, strings.TrimSuffix(vm.MountPath, "/")+"/") {
			for _, v := range spec.Volumes {
				if v.Name == vm.Name {
					return v, true
				}
			}
		}
	}
	return corev1.Volume{}, false
}

func checkDeployment(t *testing.T, m *manifests, d *appsv1.Deployment, dir string) {
	name := d.Namespace + "/" + d.Name
	spec := d.Spec.Template.Spec
	if !m.namespaces[d.Namespace] {
		t.Errorf("%s: namespace %q is not among the manifests", name, d.Namespace)
	}
	if !m.accounts[d.Namespace+"/"+spec.ServiceAccountName] {
		t.Errorf("%s: service account %q (its SPIFFE identity) is not among the manifests", name, spec.ServiceAccountName)
	}
	sel, err := metaSelector(d)
	if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("%s: selector %v does not match its pod labels %v (%v)", name, d.Spec.Selector, d.Spec.Template.Labels, err)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%s: %d containers, want the service alone (no sidecar: Weft is proxyless)", name, len(spec.Containers))
	}
	c := spec.Containers[0]
	bs, ok := env(c, mesh.EnvBootstrap)
	if !ok || bs.Value == "" {
		t.Fatalf("%s: no %s: the service would run without istiod", name, mesh.EnvBootstrap)
	}
	if _, ok := env(c, "WEFT_SERVICE_NAME"); !ok {
		t.Errorf("%s: no WEFT_SERVICE_NAME", name)
	}
	switch dir {
	case "istio":
		// Istio's proxyless template runs istio-agent, which writes the
		// bootstrap and the certificate files Weft reads.
		if got := d.Spec.Template.Annotations["inject.istio.io/templates"]; got != "grpc-agent" {
			t.Errorf("%s: injection template %q, want grpc-agent", name, got)
		}
		if bs.Value != "/etc/istio/proxy/grpc-bootstrap.json" {
			t.Errorf("%s: %s=%q, not where istio-agent writes it", name, mesh.EnvBootstrap, bs.Value)
		}
		for _, v := range []string{"WEFT_SVID_CERT_FILE", "WEFT_SVID_KEY_FILE", "WEFT_BUNDLE_FILE"} {
			if e, ok := env(c, v); !ok || !strings.HasPrefix(e.Value, "/var/lib/istio/data/") {
				t.Errorf("%s: %s=%q, want a file istio-agent writes under /var/lib/istio/data", name, v, e.Value)
			}
		}
	case "spire":
		// The bootstrap comes from examples/bootstrap in an init
		// container, through a volume both mount.
		if len(spec.InitContainers) != 1 {
			t.Fatalf("%s: %d init containers, want the bootstrap writer", name, len(spec.InitContainers))
		}
		ic := spec.InitContainers[0]
		out := ""
		for i, a := range ic.Args {
			if a == "-out" && i+1 < len(ic.Args) {
				out = ic.Args[i+1]
			}
		}
		if out != bs.Value {
			t.Errorf("%s: the init container writes %q, the service reads %q", name, out, bs.Value)
		}
		v1, ok1 := mountedAt(ic, spec, out)
		v2, ok2 := mountedAt(c, spec, bs.Value)
		if !ok1 || !ok2 || v1.Name != v2.Name {
			t.Errorf("%s: the bootstrap file is not on a volume both containers mount", name)
		}
		// mesh.IstioBootstrapFromEnv reads these; the downward API gives them.
		for _, v := range []string{"POD_NAME", "POD_NAMESPACE", "INSTANCE_IP"} {
			if e, ok := env(ic, v); !ok || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil {
				t.Errorf("%s: init container's %s is not from the downward API", name, v)
			}
		}
		sock, ok := env(c, mesh.EnvSPIFFESocket)
		if !ok || !strings.HasPrefix(sock.Value, "unix://") {
			t.Fatalf("%s: %s=%q, want the agent's unix socket", name, mesh.EnvSPIFFESocket, sock.Value)
		}
		v, ok := mountedAt(c, spec, strings.TrimPrefix(sock.Value, "unix://"))
		if !ok || v.CSI == nil || v.CSI.Driver != "csi.spiffe.io" {
			t.Errorf("%s: the Workload API socket %q is not on a csi.spiffe.io volume", name, sock.Value)
		}
	}
	if p, ok := env(c, "WEFT_AUTHZ_POLICY"); ok {
		v, ok := mountedAt(c, spec, p.Value)
		if !ok || v.ConfigMap == nil {
			t.Fatalf("%s: WEFT_AUTHZ_POLICY=%q is not on a ConfigMap volume", name, p.Value)
		}
		checkPolicyConfigMap(t, m, name, v.ConfigMap.Name, filepath.Base(p.Value))
	}
	if pr := c.ReadinessProbe; pr != nil && pr.HTTPGet != nil {
		if !hasPort(c, pr.HTTPGet.Port) {
			t.Errorf("%s: readiness probe port %s is not a container port", name, pr.HTTPGet.Port.String())
		}
		if a, _ := env(c, "WEFT_ADMIN_ADDR"); strings.HasPrefix(a.Value, "127.0.0.1:") || strings.HasPrefix(a.Value, "localhost:") {
			t.Errorf("%s: WEFT_ADMIN_ADDR=%q is loopback, where the kubelet's probe cannot reach it", name, a.Value)
		}
	}
}

func metaSelector(d *appsv1.Deployment) (labels.Selector, error) {
	if d.Spec.Selector == nil {
		return nil, errors.New("no selector")
	}
	return labels.SelectorFromSet(d.Spec.Selector.MatchLabels), nil
}

func hasPort(c corev1.Container, p intstr.IntOrString) bool {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return true
		}
	}
	return false
}

// checkService: a Service selects at least one Deployment's pods, every
// port is named for its protocol (Istio needs http-/grpc- prefixes to pick
// the protocol) and targets a port every selected container exposes.
func checkService(t *testing.T, m *manifests, s *corev1.Service) {
	name := s.Namespace + "/" + s.Name
	sel := labels.SelectorFromSet(s.Spec.Selector)
	var selected []*appsv1.Deployment
	for _, d := range m.deployments {
		if d.Namespace == s.Namespace && sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			selected = append(selected, d)
		}
	}
	if len(selected) == 0 {
		t.Errorf("Service %s selects no Deployment", name)
	}
	for _, p := range s.Spec.Ports {
		if !strings.HasPrefix(p.Name, "http-") && !strings.HasPrefix(p.Name, "grpc-") {
			t.Errorf("Service %s port %q: name it http-... or grpc-... so istiod knows its protocol", name, p.Name)
		}
		for _, d := range selected {
			if !hasPort(d.Spec.Template.Spec.Containers[0], p.TargetPort) {
				t.Errorf("Service %s port %s targets %s, which %s does not expose", name, p.Name, p.TargetPort.String(), d.Name)
			}
		}
	}
}

// serviceByHost finds the Service an Istio host names (short, or FQDN).
func serviceByHost(m *manifests, ns, host string) *corev1.Service {
	for _, s := range m.services {
		if host == s.Name && ns == s.Namespace || host == s.Name+"."+s.Namespace+".svc.cluster.local" {
			return s
		}
	}
	return nil
}

func checkIstioObjects(t *testing.T, m *manifests) {
	subsets := map[string]bool{} // host/subset
	for _, dr := range m.drs {
		s := serviceByHost(m, dr.Namespace, dr.Spec.Host)
		if s == nil {
			t.Errorf("DestinationRule %s: host %q is no Service here", dr.Name, dr.Spec.Host)
			continue
		}
		for _, sub := range dr.Spec.Subsets {
			sel := labels.SelectorFromSet(sub.Labels)
			found := false
			for _, d := range m.deployments {
				found = found || d.Namespace == s.Namespace && sel.Matches(labels.Set(d.Spec.Template.Labels)) &&
					labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels))
			}
			if !found {
				t.Errorf("DestinationRule %s: subset %s (%v) matches no pods of %s", dr.Name, sub.Name, sub.Labels, s.Name)
			}
			subsets[dr.Spec.Host+"/"+sub.Name] = true
		}
	}
	for _, vs := range m.vss {
		for _, h := range vs.Spec.Hosts {
			if serviceByHost(m, vs.Namespace, h) == nil {
				t.Errorf("VirtualService %s: host %q is no Service here", vs.Name, h)
			}
		}
		for _, r := range vs.Spec.Http {
			total := int32(0)
			for _, dst := range r.Route {
				total += dst.Weight
				d := dst.Destination
				if serviceByHost(m, vs.Namespace, d.Host) == nil {
					t.Errorf("VirtualService %s route %s: host %q is no Service here", vs.Name, r.Name, d.Host)
				}
				if d.Subset != "" && !subsets[d.Host+"/"+d.Subset] {
					t.Errorf("VirtualService %s route %s: subset %s of %s is in no DestinationRule", vs.Name, r.Name, d.Subset, d.Host)
				}
			}
			if len(r.Route) > 1 && total != 100 {
				t.Errorf("VirtualService %s route %s: weights add up to %d", vs.Name, r.Name, total)
			}
		}
	}
	for _, ap := range m.authz {
		for _, rule := range ap.Spec.Rules {
			for _, from := range rule.From {
				for _, p := range from.Source.Principals {
					// cluster.local/ns/<ns>/sa/<name>: the caller's account must exist.
					parts := strings.Split(p, "/")
					if len(parts) != 5 || parts[1] != "ns" || parts[3] != "sa" || !m.accounts[parts[2]+"/"+parts[4]] {
						t.Errorf("AuthorizationPolicy %s: principal %q names no service account here", ap.Name, p)
					}
				}
			}
		}
	}
}

// checkPolicyConfigMap: the file Weft's HTTP server reads parses with
// Weft's parser, and holds the same rules as the AuthorizationPolicy
// object istiod gets, so the gRPC and HTTP sides agree.
func checkPolicyConfigMap(t *testing.T, m *manifests, who, cmName, key string) {
	for _, cm := range m.configMaps {
		if cm.Name != cmName {
			continue
		}
		data, ok := cm.Data[key]
		if !ok {
			t.Fatalf("%s: ConfigMap %s has no key %s", who, cmName, key)
		}
		if _, err := security.ParseAuthorizationPolicies([]byte(data)); err != nil {
			t.Fatalf("%s: ConfigMap %s: Weft cannot parse the policy: %v", who, cmName, err)
		}
		dec := serializer.NewCodecFactory(istioscheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
		obj, _, err := dec.Decode([]byte(data), nil, nil)
		if err != nil {
			t.Fatalf("%s: ConfigMap %s: %v", who, cmName, err)
		}
		inFile := obj.(*securityv1.AuthorizationPolicy)
		for _, ap := range m.authz {
			if ap.Name == inFile.Name && ap.Namespace == inFile.Namespace {
				if ap.Spec.Action != inFile.Spec.Action || !slices.EqualFunc(ap.Spec.Rules, inFile.Spec.Rules, func(a, b *securityapi.Rule) bool { return proto.Equal(a, b) }) {
					t.Errorf("%s: the policy in ConfigMap %s differs from AuthorizationPolicy %s", who, cmName, ap.Name)
				}
				return
			}
		}
		t.Errorf("%s: ConfigMap %s holds policy %s, which istiod does not get", who, cmName, inFile.Name)
		return
	}
	t.Errorf("%s: ConfigMap %s is not among the manifests", who, cmName)
}

func checkClusterSPIFFEID(t *testing.T, m *manifests) {
	for _, u := range m.other {
		if u.GetKind() != "ClusterSPIFFEID" {
			t.Errorf("unchecked object %s %s", u.GetKind(), u.GetName())
			continue
		}
		tmpl, _, _ := unstructured.NestedString(u.Object, "spec", "spiffeIDTemplate")
		// istiod's SAN checks and principals expect Istio's identity shape.
		if !strings.Contains(tmpl, "/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}") {
			t.Errorf("ClusterSPIFFEID %s: template %q is not Istio's ns/<namespace>/sa/<account> shape", u.GetName(), tmpl)
		}
		return
	}
	t.Error("no ClusterSPIFFEID: SPIRE would issue no SVIDs to these pods")
}
