package mesh

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// IstioBootstrap describes a pod in an Istio mesh, from which Bootstrap
// writes the gRPC xDS bootstrap istiod's proxyless mode expects: the node id
// and metadata istiod reads (GENERATOR: grpc above all: without it istiod
// rejects the listeners), the certificate provider named "default" that
// istiod's ISTIO_MUTUAL clusters refer to, and the inbound listener
// template. With it, a pod needs no hand-written JSON.
type IstioBootstrap struct {
	// XDSAddress is where xDS is served: the pilot-agent's socket
	// (unix:///etc/istio/proxy/XDS, the default) or istiod itself
	// (istiod.istio-system.svc:15010, plaintext).
	XDSAddress string
	// PodName, Namespace and PodIP identify the workload; all required.
	PodName, Namespace, PodIP string
	// ClusterID is the Kubernetes cluster's name in Istio; default
	// "Kubernetes".
	ClusterID string
	// DNSDomain is the namespace's DNS domain; default
	// "<namespace>.svc.cluster.local".
	DNSDomain string
	// IstioVersion is sent as ISTIO_VERSION; istiod tailors config to it.
	IstioVersion string
	// CertDir holds the workload certificate files the agent writes
	// (cert-chain.pem, key.pem, root-cert.pem); default
	// /var/lib/istio/data.
	CertDir string
}

// IstioBootstrapFromEnv reads a pod's description from the variables
// Istio's injection and the Kubernetes downward API set: POD_NAME,
// POD_NAMESPACE, INSTANCE_IP, ISTIO_META_CLUSTER_ID, ISTIO_VERSION and,
// for Weft, WEFT_ISTIO_XDS_ADDRESS and WEFT_ISTIO_CERT_DIR.
func IstioBootstrapFromEnv() IstioBootstrap {
	return IstioBootstrap{
		XDSAddress:   os.Getenv("WEFT_ISTIO_XDS_ADDRESS"),
		PodName:      os.Getenv("POD_NAME"),
		Namespace:    os.Getenv("POD_NAMESPACE"),
		PodIP:        os.Getenv("INSTANCE_IP"),
		ClusterID:    os.Getenv("ISTIO_META_CLUSTER_ID"),
		IstioVersion: os.Getenv("ISTIO_VERSION"),
		CertDir:      os.Getenv("WEFT_ISTIO_CERT_DIR"),
	}
}

// Bootstrap returns the bootstrap JSON, for GRPC_XDS_BOOTSTRAP or
// WithBootstrap. A missing required field is an error naming it.
func (b IstioBootstrap) Bootstrap() ([]byte, error) {
	for _, f := range []struct{ name, value string }{
		{"PodName (POD_NAME)", b.PodName}, {"Namespace (POD_NAMESPACE)", b.Namespace}, {"PodIP (INSTANCE_IP)", b.PodIP},
	} {
		if f.value == "" {
			return nil, fmt.Errorf("mesh: IstioBootstrap: %s is required", f.name)
		}
	}
	if strings.ContainsAny(b.PodName+b.Namespace, "~") {
		return nil, errors.New("mesh: IstioBootstrap: pod name and namespace cannot contain '~', the node id's separator")
	}
	addr := b.XDSAddress
	if addr == "" {
		addr = "unix:///etc/istio/proxy/XDS"
	}
	cluster := b.ClusterID
	if cluster == "" {
		cluster = "Kubernetes"
	}
	domain := b.DNSDomain
	if domain == "" {
		domain = b.Namespace + ".svc.cluster.local"
	}
	certs := b.CertDir
	if certs == "" {
		certs = "/var/lib/istio/data"
	}
	meta := map[string]any{
		"GENERATOR":     "grpc",
		"NAMESPACE":     b.Namespace,
		"INSTANCE_IPS":  b.PodIP,
		"CLUSTER_ID":    cluster,
		"ISTIO_VERSION": b.IstioVersion,
	}
	doc := map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      addr,
			"channel_creds":   []any{map[string]any{"type": "insecure"}},
			"server_features": []any{"xds_v3"},
		}},
		"node": map[string]any{
			// istiod parses the node id as type~ip~pod.namespace~domain.
			"id":       "sidecar~" + b.PodIP + "~" + b.PodName + "." + b.Namespace + "~" + domain,
			"metadata": meta,
			"locality": map[string]any{},
		},
		"certificate_providers": map[string]any{
			"default": map[string]any{
				"plugin_name": "file_watcher",
				"config": map[string]any{
					"certificate_file":    filepath.Join(certs, "cert-chain.pem"),
					"private_key_file":    filepath.Join(certs, "key.pem"),
					"ca_certificate_file": filepath.Join(certs, "root-cert.pem"),
					"refresh_interval":    "900s",
				},
			},
		},
		"server_listener_resource_name_template": "xds.istio.io/grpc/lds/inbound/%s",
	}
	return json.MarshalIndent(doc, "", "  ")
}
