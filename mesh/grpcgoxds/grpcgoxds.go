// Package grpcgoxds puts grpc-go's own xDS client behind a Mesh's gRPC,
// for comparison and migration:
//
//	m, err := mesh.New(ctx, mesh.WithGRPCGoXDS(grpcgoxds.New()))
//
// DialGRPC("xds:///...") then runs grpc-go's xDS resolver and balancers,
// and NewGRPCServer under a server listener template grpc-go's
// xDS-managed server.
//
// grpc-go's public API reads its bootstrap from GRPC_XDS_BOOTSTRAP or
// GRPC_XDS_BOOTSTRAP_CONFIG, once per process; it offers no supported way
// to hand it another. So the mesh's bootstrap must be the one those
// variables hold: a mesh configured with WithBootstrap, or whose variables
// changed after grpc-go read them, gets an error naming the variables from
// DialGRPC and NewGRPCServer instead of two control planes.
//
// The cost is written in mesh.WithGRPCGoXDS: one more ADS stream per
// channel and per server, which istio-agent (one stream per workload)
// answers by closing the previous one, and grpc-go's features instead of
// the mesh's. Without this package a binary carries no part of grpc-go's
// xDS client; importing it adds grpc-go's xDS packages.
package grpcgoxds

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"

	"google.golang.org/grpc"
	gresolver "google.golang.org/grpc/resolver"
	"google.golang.org/grpc/xds" // registers the "xds" resolver

	"github.com/weftmesh/weft/internal/fileutil"
	"github.com/weftmesh/weft/mesh"
)

// New returns grpc-go's xDS client, for mesh.WithGRPCGoXDS.
func New() mesh.GRPCGoXDS { return client{} }

type client struct{}

// NewResolver returns grpc-go's registered xDS resolver, once the mesh's
// bootstrap is known to be the one grpc-go reads.
func (client) NewResolver(bootstrap []byte) (gresolver.Builder, error) {
	if err := sameBootstrap(bootstrap); err != nil {
		return nil, err
	}
	b := gresolver.Get("xds")
	if b == nil {
		return nil, errors.New("grpcgoxds: grpc-go's xds resolver is not registered")
	}
	return b, nil
}

// NewServer returns grpc-go's xDS-managed server, once the mesh's
// bootstrap is known to be the one grpc-go reads.
func (client) NewServer(bootstrap []byte, opts ...grpc.ServerOption) (mesh.GRPCServer, error) {
	if err := sameBootstrap(bootstrap); err != nil {
		return nil, err
	}
	srv, err := xds.NewGRPCServer(opts...)
	if err != nil {
		return nil, err
	}
	return srv, nil
}

// sameBootstrap reports whether bootstrap is what grpc-go reads from the
// environment: GRPC_XDS_BOOTSTRAP's file, else GRPC_XDS_BOOTSTRAP_CONFIG,
// as grpc-go orders them.
func sameBootstrap(bootstrap []byte) error {
	var (
		env  []byte
		from string
	)
	if path := os.Getenv(mesh.EnvBootstrap); path != "" {
		b, err := fileutil.ReadFile(context.Background(), path, fileutil.MaxConfigFile)
		if err != nil {
			return fmt.Errorf("grpcgoxds: %s: %w", mesh.EnvBootstrap, err)
		}
		env, from = b, mesh.EnvBootstrap
	} else {
		env, from = []byte(os.Getenv(mesh.EnvBootstrapConfig)), mesh.EnvBootstrapConfig
	}
	if !bytes.Equal(env, bootstrap) {
		return fmt.Errorf("grpcgoxds: grpc-go's xDS client reads its bootstrap only from %s or %s, once per process, and %s does not hold the mesh's (set with WithBootstrap?): put the mesh's bootstrap there, or leave WithGRPCGoXDS out",
			mesh.EnvBootstrap, mesh.EnvBootstrapConfig, from)
	}
	return nil
}
