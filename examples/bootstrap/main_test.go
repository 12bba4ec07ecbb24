package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/weftmesh/weft/internal/xds"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestWritesAnIstioBootstrap(t *testing.T) {
	t.Setenv("POD_NAME", "orders-7f9c")
	t.Setenv("POD_NAMESPACE", "shop")
	t.Setenv("INSTANCE_IP", "10.1.2.3")
	t.Setenv("ISTIO_VERSION", "1.28.0")
	out := filepath.Join(t.TempDir(), "grpc-bootstrap.json")
	if err := run(out); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	b, err := xds.ParseBootstrap(raw)
	if err != nil {
		t.Fatalf("Weft cannot read the bootstrap it wrote: %v\n%s", err, raw)
	}
	if got, want := b.Node.ID, "sidecar~10.1.2.3~orders-7f9c.shop~shop.svc.cluster.local"; got != want {
		t.Errorf("node id = %q, want %q", got, want)
	}
	meta := b.Node.Metadata.AsMap()
	for k, want := range map[string]string{"GENERATOR": "grpc", "NAMESPACE": "shop", "INSTANCE_IPS": "10.1.2.3", "CLUSTER_ID": "Kubernetes", "ISTIO_VERSION": "1.28.0"} {
		if meta[k] != want {
			t.Errorf("metadata %s = %v, want %q", k, meta[k], want)
		}
	}
	if _, ok := b.CertificateProviders["default"]; !ok {
		t.Error(`no certificate provider named "default", which istiod's ISTIO_MUTUAL clusters name`)
	}
	if b.ServerListenerResourceNameTemplate != "xds.istio.io/grpc/lds/inbound/%s" {
		t.Errorf("server listener template = %q", b.ServerListenerResourceNameTemplate)
	}
	if b.Servers[0].URI != "unix:///etc/istio/proxy/XDS" {
		t.Errorf("xDS server = %q, want the pilot-agent's socket", b.Servers[0].URI)
	}
}

func TestNamesTheMissingVariable(t *testing.T) {
	t.Setenv("POD_NAME", "orders-7f9c")
	t.Setenv("POD_NAMESPACE", "")
	t.Setenv("INSTANCE_IP", "10.1.2.3")
	err := run("")
	if err == nil || !strings.Contains(err.Error(), "POD_NAMESPACE") {
		t.Errorf("err = %v, want one naming POD_NAMESPACE", err)
	}
}
