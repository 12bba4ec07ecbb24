package xdstest_test

import (
	"context"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// fetch asks srv for one cluster over a fresh ADS stream and returns the
// response.
func fetch(t *testing.T, addr, name string) (*discoveryv3.DiscoveryResponse, error) {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{
		Node: xdstest.Node("n"), TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster", ResourceNames: []string{name},
	}); err != nil {
		return nil, err
	}
	return stream.Recv()
}

func TestServerServesStopsAndRestarts(t *testing.T) {
	srv := xdstest.NewServer(t)
	// Two clusters: a client asking for only one of them is still answered.
	srv.SetSnapshot(t, "n", "v1", xdstest.Cluster("a", ""), xdstest.Cluster("b", ""))
	resp, err := fetch(t, srv.Addr, "a")
	if err != nil {
		t.Fatalf("fetch: %v", err)
	}
	if resp.GetVersionInfo() != "v1" || len(resp.GetResources()) != 1 {
		t.Errorf("got version %q with %d resources, want v1 with 1", resp.GetVersionInfo(), len(resp.GetResources()))
	}
	if got := len(srv.Requests()); got != 1 {
		t.Errorf("recorded %d requests, want 1", got)
	}

	srv.Stop()
	srv.Stop() // idempotent
	if _, err := fetch(t, srv.Addr, "a"); err == nil {
		t.Error("fetch from a stopped server succeeded")
	}
	srv.SetSnapshot(t, "n", "v2", xdstest.Cluster("a", ""))
	srv.Restart(t)
	resp, err = fetch(t, srv.Addr, "a")
	if err != nil || resp.GetVersionInfo() != "v2" {
		t.Errorf("after restart on %s: got %v, %v; want version v2", srv.Addr, resp.GetVersionInfo(), err)
	}
}

func TestBootstrapJSON(t *testing.T) {
	got := string(xdstest.BootstrapJSON("n", "a:1", "b:2"))
	want := `{"node":{"id":"n"},"xds_servers":[{"server_uri":"a:1","channel_creds":[{"type":"insecure"}],"server_features":["xds_v3"]},{"server_uri":"b:2","channel_creds":[{"type":"insecure"}],"server_features":["xds_v3"]}]}`
	if got != want {
		t.Errorf("BootstrapJSON:\n got %s\nwant %s", got, want)
	}
}

func TestServerServesDelta(t *testing.T) {
	srv := xdstest.NewServer(t)
	srv.SetSnapshot(t, "n", "v1", xdstest.Cluster("a", ""), xdstest.Cluster("b", ""))
	cc, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: xdstest.Node("n"),
		TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster", ResourceNamesSubscribe: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetResources()) != 1 || resp.GetResources()[0].GetName() != "a" {
		t.Errorf("got %v, want cluster a alone", resp.GetResources())
	}
	reqs, resps := srv.DeltaRequests(), srv.DeltaResponses()
	if len(reqs) != 1 || reqs[0].GetNode().GetId() != "n" || len(resps) != 1 || resps[0].GetNonce() != resp.GetNonce() {
		t.Errorf("recorded %d requests and %d responses, want the one of each sent", len(reqs), len(resps))
	}
	if len(srv.Requests()) != 0 {
		t.Errorf("recorded %d state-of-the-world requests, want 0", len(srv.Requests()))
	}
}
