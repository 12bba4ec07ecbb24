package grpcgoxds_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/mesh/grpcgoxds"
)

// childEnv marks the process TestGRPCGoXDSFollowsTheEnvironmentsBootstrap
// starts.
const childEnv = "GRPCGOXDS_TEST_CHILD"

// grpc-go's xDS client, through its public API, on the bootstrap the
// environment holds, which the mesh reads too: a call goes where the
// control plane says. grpc-go reads the variables when its packages
// initialise, so the call is made by a copy of this test binary started
// with the control plane's bootstrap in its environment, as a service
// would be.
func TestGRPCGoXDSFollowsTheEnvironmentsBootstrap(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		callThroughGRPCGo(t)
		return
	}
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); gs.Serve(ln) }()
	t.Cleanup(func() { gs.Stop(); <-done })

	cp := xdstest.NewServer(t)
	const node = "grpcgoxds-test"
	cp.SetSnapshot(t, node, "1",
		xdstest.Listener("orders:50051", "orders-routes"),
		xdstest.RouteConfig("orders-routes", "*", "orders"),
		xdstest.Cluster("orders", ""),
		xdstest.Endpoints("orders", ln.Addr().String()))

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestGRPCGoXDSFollowsTheEnvironmentsBootstrap$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"=1", mesh.EnvBootstrap+"=", mesh.EnvBootstrapConfig+"="+string(cp.Bootstrap(node)))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the call through grpc-go's xDS client failed: %v\n%s", err, out)
	}
}

func callThroughGRPCGo(t *testing.T) {
	m, err := mesh.New(context.Background(), mesh.WithGRPCGoXDS(grpcgoxds.New()))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cc, err := m.DialGRPC("xds:///orders:50051")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("call through grpc-go's xDS client: %v", err)
	}
}

// A mesh whose bootstrap is not the environment's (WithBootstrap) would
// have grpc-go follow another control plane; it is refused, naming the
// variables.
func TestGRPCGoXDSRefusesABootstrapGRPCGoCannotRead(t *testing.T) {
	t.Setenv(mesh.EnvBootstrap, "")
	t.Setenv(mesh.EnvBootstrapConfig, "")
	bootstrap := []byte(`{"xds_servers": [{"server_uri": "127.0.0.1:9", "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}], "node": {"id": "n"}}`)
	m, err := mesh.New(context.Background(), mesh.WithBootstrap(bootstrap), mesh.WithGRPCGoXDS(grpcgoxds.New()))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	_, err = m.DialGRPC("xds:///orders:50051")
	if err == nil || !strings.Contains(err.Error(), mesh.EnvBootstrapConfig) {
		t.Errorf("DialGRPC = %v, want an error naming %s", err, mesh.EnvBootstrapConfig)
	}
}
