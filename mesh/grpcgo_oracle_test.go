package mesh_test

import (
	"google.golang.org/grpc"
	gresolver "google.golang.org/grpc/resolver"
	"google.golang.org/grpc/xds"

	"github.com/weftmesh/weft/mesh"
)

// grpcGoOracle is grpc-go's own xDS client on each test's own bootstrap,
// the oracle of what an xDS configuration means. Package grpcgoxds, for
// users, goes through grpc-go's public API, which reads one bootstrap per
// process from the environment; these tests start a control plane each,
// so the oracle takes grpc-go's testing entry points, which accept a
// bootstrap per channel and per server.
type grpcGoOracle struct{}

var _ mesh.GRPCGoXDS = grpcGoOracle{}

func (grpcGoOracle) NewResolver(bootstrap []byte) (gresolver.Builder, error) {
	return xds.NewXDSResolverWithConfigForTesting(bootstrap)
}

func (grpcGoOracle) NewServer(bootstrap []byte, opts ...grpc.ServerOption) (mesh.GRPCServer, error) {
	srv, err := xds.NewGRPCServer(append([]grpc.ServerOption{xds.BootstrapContentsForTesting(bootstrap)}, opts...)...)
	if err != nil {
		return nil, err
	}
	return srv, nil
}
