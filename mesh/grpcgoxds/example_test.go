package grpcgoxds_test

import (
	"context"
	"fmt"
	"os"

	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/mesh/grpcgoxds"
)

// A mesh whose xds:/// channels run grpc-go's own xDS client, for a side
// by side comparison with the mesh's. grpc-go reads its bootstrap from the
// environment, and so does the mesh here. The bootstrap names a control
// plane on a loopback port nobody serves: channels are lazy, so nothing is
// sent.
func Example() {
	os.Setenv("GRPC_XDS_BOOTSTRAP_CONFIG", `{
		"xds_servers": [{"server_uri": "127.0.0.1:9", "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
		"node": {"id": "example"}
	}`)
	defer os.Unsetenv("GRPC_XDS_BOOTSTRAP_CONFIG")
	m, err := mesh.New(context.Background(), mesh.WithGRPCGoXDS(grpcgoxds.New()))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()
	cc, err := m.DialGRPC("xds:///orders:50051")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cc.Close()
	fmt.Println("target:", cc.Target())
	// Output: target: xds:///orders:50051
}
