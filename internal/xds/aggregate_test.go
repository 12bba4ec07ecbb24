package xds

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// Envoy: "Aggregate cluster loosely couples multiple clusters by
// referencing their name in the configuration. The fallback priority is
// defined implicitly by the ordering in the clusters list." grpc-go
// rejects an empty list; a list naming the cluster itself is a loop.
func TestTranslateAggregateCluster(t *testing.T) {
	withConfig := func(name string, cfg *anypb.Any) *clusterv3.Cluster {
		c := xdstest.AggregateCluster(name)
		c.GetClusterType().TypedConfig = cfg
		return c
	}
	otherMsg, _ := anypb.New(&clusterv3.Cluster{})
	tests := []struct {
		name      string
		in        *clusterv3.Cluster
		want      []string
		policy    string
		unapplied string
		wantErr   string
	}{
		{name: "two clusters", in: xdstest.AggregateCluster("agg", "primary", "secondary"), want: []string{"primary", "secondary"}, policy: "round_robin"},
		{name: "Envoy's CLUSTER_PROVIDED is round robin", in: func() *clusterv3.Cluster {
			c := xdstest.AggregateCluster("agg", "a")
			c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
			return c
		}(), want: []string{"a"}, policy: "round_robin"},
		{name: "its own lb_policy balances", in: func() *clusterv3.Cluster {
			c := xdstest.AggregateCluster("agg", "a")
			c.LbPolicy = clusterv3.Cluster_RING_HASH
			return c
		}(), want: []string{"a"}, policy: "ring_hash"},
		{name: "its own thresholds, outlier detection and TLS are not read", in: func() *clusterv3.Cluster {
			c := xdstest.AggregateCluster("agg", "a")
			c.OutlierDetection = &clusterv3.OutlierDetection{MaxEjectionPercent: wrapperspb.UInt32(10)}
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxRequests: wrapperspb.UInt32(1)}}}
			return c
		}(), want: []string{"a"}, policy: "round_robin", unapplied: "circuit_breakers.thresholds,outlier_detection.max_ejection_percent"},
		{name: "empty list", in: xdstest.AggregateCluster("agg"), wantErr: `CDS resource "agg": cluster_type.typed_config.clusters: empty`},
		{name: "names itself", in: xdstest.AggregateCluster("agg", "a", "agg"), wantErr: `cluster_type.typed_config.clusters[1]: the aggregate cluster "agg" names itself`},
		{name: "empty name", in: xdstest.AggregateCluster("agg", ""), wantErr: `cluster_type.typed_config.clusters[0]: empty cluster name`},
		{name: "unknown cluster type", in: func() *clusterv3.Cluster {
			c := xdstest.AggregateCluster("agg", "a")
			c.GetClusterType().Name = "envoy.clusters.redis"
			return c
		}(), wantErr: `cluster_type.name: unsupported cluster type "envoy.clusters.redis"`},
		{name: "wrong config message", in: withConfig("agg", otherMsg), wantErr: "cluster_type.typed_config: not an envoy.extensions.clusters.aggregate.v3.ClusterConfig"},
		{name: "no config", in: withConfig("agg", nil), wantErr: "cluster_type.typed_config: not an"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := TranslateCluster(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("TranslateCluster() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("TranslateCluster() error = %v", err)
			}
			if got.Kind != ClusterAggregate || !slices.Equal(got.AggregateClusters, tt.want) || got.LBPolicy != tt.policy {
				t.Errorf("got kind %v clusters %v policy %q, want AGGREGATE %v %q", got.Kind, got.AggregateClusters, got.LBPolicy, tt.want, tt.policy)
			}
			if u := strings.Join(got.Unapplied, ","); u != tt.unapplied {
				t.Errorf("unapplied fields %q, want %q", u, tt.unapplied)
			}
		})
	}
}

// aggRecorder records an Aggregate's reports as strings: "leaves a,b" or
// "error <text>".
type aggRecorder struct{ ch chan string }

func (r *aggRecorder) OnLeaves(root *Cluster, leaves []*Cluster) {
	var names []string
	for _, l := range leaves {
		names = append(names, l.Name)
	}
	r.ch <- "leaves " + strings.Join(names, ",")
}

func (r *aggRecorder) OnError(err error) { r.ch <- "error " + err.Error() }

// wait returns the first report matching want (a prefix), skipping others.
func (r *aggRecorder) wait(t *testing.T, want string) string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	var seen []string
	for {
		select {
		case got := <-r.ch:
			if strings.HasPrefix(got, want) {
				return got
			}
			seen = append(seen, got)
		case <-deadline:
			t.Fatalf("no report %q within 10s; saw %q", want, seen)
		}
	}
}

// subscribedClusters returns the CDS names the client follows.
func subscribedClusters(c *Client) []string {
	var out []string
	for _, s := range c.Dump() {
		if s.Type == ClusterType {
			out = append(out, s.Name)
		}
	}
	return out
}

// chain returns aggregate clusters c0 -> c1 -> ... -> c{n-1}, the last
// one an EDS cluster.
func chain(n int) []types.Resource {
	var out []types.Resource
	for i := range n - 1 {
		out = append(out, xdstest.AggregateCluster(fmt.Sprintf("c%d", i), fmt.Sprintf("c%d", i+1)))
	}
	return append(out, xdstest.Cluster(fmt.Sprintf("c%d", n-1), ""))
}

// TestAggregateResolution follows aggregate graphs from a management
// server, as grpc-go's dependency manager does: depth-first leaves, each
// at its first place; a loop, a graph deeper than 16, or a missing
// cluster fail it with the culprit named.
func TestAggregateResolution(t *testing.T) {
	tests := []struct {
		name      string
		resources []types.Resource
		root      string
		want      string
	}{
		{name: "flat", root: "agg", resources: []types.Resource{
			xdstest.AggregateCluster("agg", "a", "b"), xdstest.Cluster("a", ""), xdstest.LogicalDNSCluster("b", "localhost", 80)},
			want: "leaves a,b"},
		{name: "nested, deduplicated", root: "agg", resources: []types.Resource{
			xdstest.AggregateCluster("agg", "x", "c", "y"), xdstest.AggregateCluster("x", "a", "b"), xdstest.AggregateCluster("y", "b", "d"),
			xdstest.Cluster("a", ""), xdstest.Cluster("b", ""), xdstest.Cluster("c", ""), xdstest.StaticCluster("d", "127.0.0.1:1")},
			want: "leaves a,b,c,d"},
		{name: "loop", root: "agg", resources: []types.Resource{
			xdstest.AggregateCluster("agg", "a", "x"), xdstest.Cluster("a", ""), xdstest.AggregateCluster("x", "y"), xdstest.AggregateCluster("y", "agg")},
			want: `error aggregate cluster "agg": the graph loops: agg -> x -> y -> agg`},
		{name: "depth 16 is the limit", root: "c0", resources: chain(16), want: "leaves c15"},
		{name: "deeper than 16", root: "c0", resources: chain(17),
			want: `error aggregate cluster "c0": the graph exceeds the maximum depth of 16 at "c16"`},
		{name: "underlying cluster missing", root: "agg", resources: []types.Resource{
			xdstest.AggregateCluster("agg", "a", "gone"), xdstest.Cluster("a", "")},
			want: `error aggregate cluster "agg": underlying cluster "gone" (agg): does not exist`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := xdstest.NewServer(t)
			srv.SetSnapshot(t, node, "1", tt.resources...)
			c := newTestClient(t, srv.Bootstrap(node), fastBackoff(), WithResourceTimeout(time.Second))
			root := newRecorder()
			defer c.Watch(ClusterType, tt.root, root)()
			rc := root.next(t, "update").res.(*Cluster)
			rec := &aggRecorder{ch: make(chan string, 100)}
			a := NewAggregate(c, rec)
			defer a.Close()
			a.Update(rc)
			if got := rec.wait(t, tt.want[:6]); !strings.HasPrefix(got, tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestAggregateSubscriptions: the client subscribes to the clusters the
// graph reaches and drops those an update takes out of it.
func TestAggregateSubscriptions(t *testing.T) {
	srv := xdstest.NewServer(t)
	srv.SetSnapshot(t, node, "1", xdstest.AggregateCluster("agg", "x", "b"), xdstest.AggregateCluster("x", "a"),
		xdstest.Cluster("a", ""), xdstest.Cluster("b", ""))
	c := newTestClient(t, srv.Bootstrap(node), fastBackoff())
	root := newRecorder()
	cancel := c.Watch(ClusterType, "agg", root)
	rec := &aggRecorder{ch: make(chan string, 100)}
	a := NewAggregate(c, rec)
	a.Update(root.next(t, "update").res.(*Cluster))
	rec.wait(t, "leaves a,b")
	if got, want := subscribedClusters(c), []string{"a", "agg", "b", "x"}; !slices.Equal(got, want) {
		t.Errorf("subscribed %v, want %v", got, want)
	}

	// The aggregate drops x (and with it a) and adds d.
	srv.SetSnapshot(t, node, "2", xdstest.AggregateCluster("agg", "b", "d"), xdstest.AggregateCluster("x", "a"),
		xdstest.Cluster("a", ""), xdstest.Cluster("b", ""), xdstest.Cluster("d", ""))
	a.Update(root.next(t, "update").res.(*Cluster))
	rec.wait(t, "leaves b,d")
	if got, want := subscribedClusters(c), []string{"agg", "b", "d"}; !slices.Equal(got, want) {
		t.Errorf("after the update, subscribed %v, want %v", got, want)
	}
	// The request that adds d carries the removals (see Watch).
	if _, err := srv.WaitRequest(ctxT(t), func(r *discoveryv3.DiscoveryRequest) bool {
		return r.GetTypeUrl() == ClusterTypeURL && slices.Equal(r.GetResourceNames(), []string{"agg", "b", "d"})
	}); err != nil {
		t.Errorf("no CDS request for exactly agg, b, d: %v", err)
	}

	a.Close()
	cancel()
	if got := subscribedClusters(c); len(got) != 0 {
		t.Errorf("after Close, subscribed %v, want none", got)
	}
}
