// Package grpcgoxds puts grpc-go's own xDS client behind a Mesh's gRPC,
// for comparison and migration:
//
//	m, err := mesh.New(ctx, mesh.WithGRPCGoXDS(grpcgoxds.New()))
//
// DialGRPC("xds:///...") then runs grpc-go's xDS resolver and balancers,
// and NewGRPCServer under a server listener template grpc-go's
// xDS-managed server, on the bootstrap the mesh read (from
// GRPC_XDS_BOOTSTRAP, GRPC_XDS_BOOTSTRAP_CONFIG or WithBootstrap).
//
// The cost is written in mesh.WithGRPCGoXDS: one more ADS stream per
// channel and per server, which istio-agent (one stream per workload)
// answers by closing the previous one, and grpc-go's features instead of
// the mesh's. Without this package a binary carries no part of grpc-go's
// xDS client; importing it adds grpc-go's xDS packages.
package grpcgoxds

import (
	"google.golang.org/grpc"
	gresolver "google.golang.org/grpc/resolver"
	"google.golang.org/grpc/xds"

	"github.com/weftmesh/weft/mesh"
)

// New returns grpc-go's xDS client, for mesh.WithGRPCGoXDS.
func New() mesh.GRPCGoXDS { return client{} }

type client struct{}

// NewResolver builds grpc-go's xDS resolver on the mesh's bootstrap.
// grpc-go reads GRPC_XDS_BOOTSTRAP once per process; handing it the
// bootstrap the mesh read keeps gRPC and HTTP on one control plane,
// whether the bootstrap came from a variable or an option. These are
// grpc-go's only per-channel and per-server bootstrap hooks.
func (client) NewResolver(bootstrap []byte) (gresolver.Builder, error) {
	return xds.NewXDSResolverWithConfigForTesting(bootstrap)
}

// NewServer builds grpc-go's xDS-managed server on the mesh's bootstrap.
func (client) NewServer(bootstrap []byte, opts ...grpc.ServerOption) (mesh.GRPCServer, error) {
	srv, err := xds.NewGRPCServer(append([]grpc.ServerOption{xds.BootstrapContentsForTesting(bootstrap)}, opts...)...)
	if err != nil {
		return nil, err
	}
	return srv, nil
}
