package devplane_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weftmesh/weft/examples/controlplane/devplane"
	"github.com/weftmesh/weft/internal/xds"
)

const small = "services:\n  - {name: orders, port: 8080, versions: {v1: [127.0.0.1:8081]}}\n"

// TestServeAnswersAnyNodeAndLogsANackOnce drives a raw ADS stream: any
// node id gets the snapshot, a partial subscription is answered, and a
// NACK repeated with the same error is logged once.
func TestServeAnswersAnyNodeAndLogsANackOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rec := newRecorder()
	srv := devplane.New(devplane.WithLogger(slog.New(rec)))
	defer srv.Close()
	version, err := srv.Apply(mustParse(t, full))
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveCtx, stopServe := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(serveCtx, lis) }()

	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	for _, node := range []string{"a", "some-other-node"} {
		stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		req := &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: xds.ListenerTypeURL, ResourceNames: []string{"users"}}
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetVersionInfo() != version || len(resp.GetResources()) != 1 {
			t.Errorf("node %s: version %q with %d resources, want %s with 1", node, resp.GetVersionInfo(), len(resp.GetResources()), version)
		}
		if node != "a" {
			continue
		}
		for range 2 {
			nack := &discoveryv3.DiscoveryRequest{Node: req.Node, TypeUrl: xds.ListenerTypeURL, ResourceNames: req.ResourceNames,
				ResponseNonce: resp.GetNonce(), ErrorDetail: &status.Status{Code: 3, Message: "listener users: bad"}}
			if err := stream.Send(nack); err != nil {
				t.Fatal(err)
			}
			if resp, err = stream.Recv(); err != nil {
				t.Fatal(err)
			}
		}
	}
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if rec.wait(wctx, "listener users: bad") == "" {
		t.Fatal("the NACK was not logged")
	}
	rec.mu.Lock()
	n := strings.Count(strings.Join(rec.lines, "\n"), "listener users: bad")
	rec.mu.Unlock()
	if n != 1 {
		t.Errorf("the same NACK was logged %d times, want once", n)
	}

	stopServe()
	if err := <-served; err != nil {
		t.Errorf("Serve after its context ended: %v, want nil", err)
	}
}

func TestCloseIsIdempotentAndFinal(t *testing.T) {
	srv := devplane.New(devplane.WithLogger(discardLogger()))
	if _, err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := srv.Apply(mustParse(t, small)); !errors.Is(err, devplane.ErrClosed) {
		t.Errorf("Apply after Close: %v, want ErrClosed", err)
	}
	if _, err := srv.Start("127.0.0.1:0"); !errors.Is(err, devplane.ErrClosed) {
		t.Errorf("Start after Close: %v, want ErrClosed", err)
	}
}

func TestWatchFileNeedsAGoodFirstLoad(t *testing.T) {
	srv := devplane.New(devplane.WithLogger(discardLogger()))
	defer srv.Close()
	path := filepath.Join(t.TempDir(), "mesh.yaml")
	if err := os.WriteFile(path, []byte("services:\n  - name: orders\n    port: 8080\n    oops: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := srv.WatchFile(context.Background(), path, time.Second)
	var pe *devplane.ParseError
	if !errors.As(err, &pe) || pe.Line != 4 {
		t.Errorf("WatchFile on a bad file: %v, want a ParseError at line 4", err)
	}
	if srv.Version() != "" {
		t.Errorf("a config was applied: %s", srv.Version())
	}
}

func TestWriteBootstrap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bootstrap.json")
	if err := devplane.WriteBootstrap(path, "127.0.0.1:18000", "n1"); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := xds.ParseBootstrap(data)
	if err != nil {
		t.Fatalf("ParseBootstrap: %v", err)
	}
	if len(b.Servers) != 1 || b.Servers[0].URI != "127.0.0.1:18000" || b.Servers[0].CredsType != "insecure" || b.Node.ID != "n1" {
		t.Errorf("bootstrap = %+v", b)
	}
}
