package mesh_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	v3orcapb "github.com/cncf/xds/go/xds/data/orca/v3"
	v3orcaservicepb "github.com/cncf/xds/go/xds/service/orca/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	cswrrv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/client_side_weighted_round_robin/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/orca"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
)

// orcaBackend serves the health service over gRPC and an HTTP handler on
// one port, through a mesh with WithBackendMetrics. perCall makes each
// call report util as its CPU utilization and qps 100 (gRFC A51's per-call
// report); otherwise calls report nothing and only the server's own
// figures (the out-of-band stream) carry the load.
type orcaBackend struct {
	healthpb.UnimplementedHealthServer
	name    string
	addr    string
	util    float64
	perCall bool
}

func (b *orcaBackend) record(ctx context.Context) {
	if !b.perCall {
		return
	}
	r := mesh.CallMetricsRecorderFromContext(ctx)
	r.SetCPUUtilization(b.util)
	r.SetQPS(100)
	r.SetNamedMetric("backend", 1)
}

func (b *orcaBackend) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	b.record(ctx)
	grpc.SetHeader(ctx, metadata.Pairs("x-backend", b.name))
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func (b *orcaBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.record(r.Context())
	w.Header().Set("X-Backend", b.name)
	io.WriteString(w, b.name)
}

func startORCABackend(t *testing.T, name string, util float64, perCall bool) *orcaBackend {
	t.Helper()
	b := &orcaBackend{name: name, util: util, perCall: perCall}
	server := orca.NewServerMetricsRecorder()
	server.SetCPUUtilization(util)
	server.SetQPS(100)
	m := newMesh(t, mesh.WithBackendMetrics(server))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = ln.Addr().String()
	rpcLn, httpLn := splitByPreface(t, ln)
	gs, err := m.NewGRPCServer()
	if err != nil {
		t.Fatal(err)
	}
	healthpb.RegisterHealthServer(gs, b)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- gs.Serve(rpcLn) }()
	go func() { done <- m.Serve(ctx, httpLn, b) }()
	t.Cleanup(func() { cancel(); gs.Stop(); <-done; <-done })
	return b
}

// TestBackendMetricsServer holds the server side of ORCA (gRFC A51): a
// call's recorded figures, over the server's own, reach a plain grpc-go
// client in the endpoint-load-metrics-bin trailer and an HTTP client in
// Envoy's endpoint-load-metrics header ("TEXT cpu_utilization=...,
// named_metrics.<name>=..."); the OpenRcaService streams the server's
// figures; a call that records nothing sends no report.
func TestBackendMetricsServer(t *testing.T) {
	b := startORCABackend(t, "b0", 0.25, true)
	cc, err := grpc.NewClient(b.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	t.Run("gRPC trailer", func(t *testing.T) {
		var tr metadata.MD
		if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Trailer(&tr)); err != nil {
			t.Fatal(err)
		}
		v := tr.Get("endpoint-load-metrics-bin")
		if len(v) != 1 {
			t.Fatalf("trailer %v: want one endpoint-load-metrics-bin", tr)
		}
		var r v3orcapb.OrcaLoadReport
		if err := proto.Unmarshal([]byte(v[0]), &r); err != nil {
			t.Fatal(err)
		}
		want := &v3orcapb.OrcaLoadReport{CpuUtilization: 0.25, RpsFractional: 100, NamedMetrics: map[string]float64{"backend": 1}}
		if !proto.Equal(&r, want) {
			t.Errorf("report %v, want %v", &r, want)
		}
	})
	t.Run("HTTP header", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+b.addr+"/", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		got := resp.Header.Get("Endpoint-Load-Metrics")
		if want := "TEXT cpu_utilization=0.25,rps_fractional=100,named_metrics.backend=1"; got != want {
			t.Errorf("endpoint-load-metrics %q, want %q", got, want)
		}
		r, err := balancer.ParseLoadMetricsHeader(got)
		if err != nil || r.CPUUtilization != 0.25 || r.QPS != 100 {
			t.Errorf("parsed %+v, %v", r, err)
		}
	})
	t.Run("out of band", func(t *testing.T) {
		s, err := v3orcaservicepb.NewOpenRcaServiceClient(cc).StreamCoreMetrics(ctx, &v3orcaservicepb.OrcaLoadReportRequest{})
		if err != nil {
			t.Fatal(err)
		}
		r, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if r.GetCpuUtilization() != 0.25 || r.GetRpsFractional() != 100 {
			t.Errorf("OOB report %v, want cpu 0.25 and rps 100", r)
		}
	})
	t.Run("HTTP without a recording", func(t *testing.T) {
		m := newMesh(t, mesh.WithBackendMetrics(nil))
		h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		if v := rec.Header().Get("Endpoint-Load-Metrics"); v != "" {
			t.Errorf("endpoint-load-metrics %q on a call that recorded nothing", v)
		}
		if mesh.CallMetricsRecorderFromContext(context.Background()) != nil {
			t.Error("a recorder outside any call")
		}
	})
}

// TestORCAWeightedRoundRobin holds gRFC A58's weighted round robin on
// Weft's gRPC and HTTP paths beside grpc-go's xDS client, the oracle, on
// the same ClientSideWeightedRoundRobin cluster. Three backends report
// CPU utilization 0.2, 0.4 and 0.8 at 100 qps, so their weights,
// qps/utilization, are 500, 250 and 125: shares of 4/7, 2/7 and 1/7,
// where round robin would give a third each. The blackout is shortened
// so that the weights apply within the test.
func TestORCAWeightedRoundRobin(t *testing.T) {
	utils := []float64{0.2, 0.4, 0.8}
	want := []float64{4.0 / 7, 2.0 / 7, 1.0 / 7}
	for _, row := range []struct {
		name string
		oob  bool
		// asserted are the clients held to the shares; HTTP has no
		// out-of-band reports, so it runs round robin there (logged).
		asserted []string
	}{
		{name: "per-call reports", asserted: []string{weftGRPC, grpcGo, weftHTTP}},
		{name: "out-of-band reports", oob: true, asserted: []string{weftGRPC, grpcGo}},
	} {
		t.Run(row.name, func(t *testing.T) {
			var bs []*orcaBackend
			for i, u := range utils {
				bs = append(bs, startORCABackend(t, fmt.Sprintf("b%d", i), u, !row.oob))
			}
			var eps []string
			for _, b := range bs {
				eps = append(eps, b.addr)
			}
			cp := xdstest.NewServer(t)
			policy := &cswrrv3.ClientSideWeightedRoundRobin{
				EnableOobLoadReport:    wrapperspb.Bool(row.oob),
				OobReportingPeriod:     durationpb.New(time.Second),
				BlackoutPeriod:         durationpb.New(100 * time.Millisecond),
				WeightUpdatePeriod:     durationpb.New(100 * time.Millisecond),
				WeightExpirationPeriod: durationpb.New(time.Minute),
			}
			res := []types.Resource{parityListener(), parityRoutes(parityRoute("svc", nil, nil)),
				parityCluster("svc", func(c *clusterv3.Cluster) { c.LoadBalancingPolicy = xdstest.LBPolicy(policy) }),
				xdstest.Endpoints("svc", eps...)}
			cp.SetSnapshot(t, xdsNode, "1", res...)
			bsJSON := cp.Bootstrap(xdsNode)
			clients := []*parityClient{
				{name: weftGRPC, hc: dialHealth(t, newMesh(t, mesh.WithBootstrap(bsJSON)), "xds:///"+parityHost)},
				{name: grpcGo, hc: dialHealth(t, newMesh(t, mesh.WithBootstrap(bsJSON), mesh.WithGRPCGoXDS(grpcGoOracle{})), "xds:///"+parityHost)},
				{name: weftHTTP, http: newMesh(t, mesh.WithBootstrap(bsJSON)).HTTPClient()},
			}
			var table []string
			for _, c := range clients {
				shares := orcaShares(t, c, bs)
				line := fmt.Sprintf("%s: shares %.3f %.3f %.3f (want %.3f %.3f %.3f)", c.name, shares[0], shares[1], shares[2], want[0], want[1], want[2])
				table = append(table, line)
				if !strings.Contains(strings.Join(row.asserted, "|"), c.name) {
					continue
				}
				// Generous: the weights are in force within a second, and
				// the shares are measured over 700 calls after that.
				for i := range want {
					if d := shares[i] - want[i]; d < -0.08 || d > 0.08 {
						t.Errorf("%s: b%d's share %.3f, want %.3f ± 0.08 (round robin gives 0.333)", c.name, i, shares[i], want[i])
					}
				}
			}
			t.Logf("%s:\n%s", row.name, strings.Join(table, "\n"))
		})
	}
}

// orcaShares warms c up until its weights can be in force (reports from
// every backend, then the blackout and a weight update), then returns the
// share of 700 calls each backend took.
func orcaShares(t *testing.T, c *parityClient, bs []*orcaBackend) []float64 {
	t.Helper()
	for i := range 30 {
		if o := c.call(callLimit); o.err != nil {
			t.Fatalf("%s: warm-up call %d: %v", c.name, i, o.err)
		}
	}
	time.Sleep(time.Second) // the blackout (100ms) and a few updates (100ms)
	for range 30 {
		c.call(callLimit)
	}
	const n = 700
	counts := map[string]int{}
	for i := range n {
		o := c.call(callLimit)
		if o.err != nil {
			t.Fatalf("%s: call %d: %v", c.name, i, o.err)
		}
		counts[o.backend]++
	}
	out := make([]float64, len(bs))
	for i, b := range bs {
		out[i] = float64(counts[b.name]) / n
	}
	return out
}

// TestORCAWeightedRoundRobinWithoutXDS: the policy runs on services not
// configured by xDS, on both protocols, with WithClientSideWRR's settings
// (here no blackout) or by name through WithLBPolicy (and
// WEFT_LB_POLICY), with its defaults.
func TestORCAWeightedRoundRobinWithoutXDS(t *testing.T) {
	utils := []float64{0.2, 0.4, 0.8}
	want := []float64{4.0 / 7, 2.0 / 7, 1.0 / 7}
	var bs []*orcaBackend
	var eps []string
	for i, u := range utils {
		b := startORCABackend(t, fmt.Sprintf("b%d", i), u, true)
		bs, eps = append(bs, b), append(eps, b.addr)
	}
	opts := []mesh.Option{mesh.WithEndpoints(parityHost, eps...),
		mesh.WithClientSideWRR(balancer.CSWRRConfig{BlackoutPeriod: -1, WeightUpdatePeriod: 100 * time.Millisecond})}
	clients := []*parityClient{
		{name: weftGRPC, hc: dialHealth(t, newMesh(t, opts...), parityHost)},
		{name: weftHTTP, http: newMesh(t, opts...).HTTPClient()},
	}
	for _, c := range clients {
		shares := orcaShares(t, c, bs)
		for i := range want {
			if d := shares[i] - want[i]; d < -0.08 || d > 0.08 {
				t.Errorf("%s: b%d's share %.3f, want %.3f ± 0.08", c.name, i, shares[i], want[i])
			}
		}
		t.Logf("%s: shares %.3f %.3f %.3f", c.name, shares[0], shares[1], shares[2])
	}
	if _, err := mesh.New(context.Background(), mesh.WithClientSideWRR(balancer.CSWRRConfig{ErrorUtilizationPenalty: -1})); err == nil ||
		!strings.Contains(err.Error(), "ErrorUtilizationPenalty") {
		t.Errorf("a negative penalty: error %v, want one naming ErrorUtilizationPenalty", err)
	}
	m := newMesh(t, mesh.WithLBPolicy(balancer.ClientSideWeightedRoundRobin), mesh.WithEndpoints(parityHost, eps...))
	c := &parityClient{name: weftHTTP, http: m.HTTPClient()}
	if o := c.call(callLimit); o.err != nil {
		t.Errorf("by name, with the defaults: %v", o.err)
	}
}
