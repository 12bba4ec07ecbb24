// Command bootstrap writes the gRPC xDS bootstrap for istiod's proxyless
// mode from the pod's environment (POD_NAME, POD_NAMESPACE, INSTANCE_IP,
// ISTIO_META_CLUSTER_ID, ISTIO_VERSION, WEFT_ISTIO_XDS_ADDRESS,
// WEFT_ISTIO_CERT_DIR): the node id and metadata istiod reads, the
// "default" certificate provider its ISTIO_MUTUAL clusters name, and the
// inbound listener template. It is meant for an init container (see
// examples/kubernetes/spire) or an entrypoint that then runs the service
// with GRPC_XDS_BOOTSTRAP pointing at the file.
//
//	go run ./examples/bootstrap -out /etc/istio/proxy/grpc-bootstrap.json
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/weftmesh/weft/mesh"
)

func main() {
	out := flag.String("out", "", "file to write (stdout when empty)")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "bootstrap:", err)
		os.Exit(1)
	}
}

func run(out string) error {
	b, err := mesh.IstioBootstrapFromEnv().Bootstrap()
	if err != nil {
		return err
	}
	if out == "" {
		_, err = os.Stdout.Write(append(b, '\n'))
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	return os.WriteFile(out, append(b, '\n'), 0o644)
}
