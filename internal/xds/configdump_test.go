package xds

import (
	"strings"
	"testing"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// dumpedCluster is one cluster of a ConfigDump as a tool reads it.
type dumpedCluster struct {
	status        string
	version       string
	eds           string // of the cluster in use
	failedVersion string
	failedMinRing uint64 // of the rejected cluster, as received
	details       string
	updated       bool
	attempted     bool
}

func readClusterDump(t *testing.T, c *Client) map[string]dumpedCluster {
	t.Helper()
	b, err := c.ConfigDump()
	if err != nil {
		t.Fatal(err)
	}
	var cd adminv3.ConfigDump
	if err := protojson.Unmarshal(b, &cd); err != nil {
		t.Fatalf("ConfigDump is not an envoy.admin.v3.ConfigDump: %v\n%s", err, b)
	}
	if n := len(cd.GetConfigs()); n != 4 {
		t.Fatalf("%d configs, want clusters, listeners, routes and endpoints", n)
	}
	var cds adminv3.ClustersConfigDump
	if err := cd.GetConfigs()[0].UnmarshalTo(&cds); err != nil {
		t.Fatalf("the first config is not a ClustersConfigDump (Envoy's order): %v", err)
	}
	out := map[string]dumpedCluster{}
	for _, dc := range cds.GetDynamicActiveClusters() {
		var active, failed clusterv3.Cluster
		if err := dc.GetCluster().UnmarshalTo(&active); err != nil {
			t.Fatal(err)
		}
		d := dumpedCluster{status: dc.GetClientStatus().String(), version: dc.GetVersionInfo(),
			eds: active.GetEdsClusterConfig().GetServiceName(), updated: dc.GetLastUpdated() != nil}
		if es := dc.GetErrorState(); es != nil {
			if err := es.GetFailedConfiguration().UnmarshalTo(&failed); err != nil {
				t.Fatal(err)
			}
			d.failedVersion, d.details, d.attempted = es.GetVersionInfo(), es.GetDetails(), es.GetLastUpdateAttempt() != nil
			d.failedMinRing = failed.GetRingHashLbConfig().GetMinimumRingSize().GetValue()
		}
		out[active.GetName()] = d
	}
	return out
}

// The config dump is Envoy's: a rejected version shows as received in
// error_state beside the version still in use ("error_state: Set if the
// last update failed, cleared after the next successful update";
// envoy.admin.v3.ClustersConfigDump.DynamicCluster), in both protocols.
func TestConfigDumpShowsWhatWasReceived(t *testing.T) {
	// A state-of-the-world version is the response's; a delta one is the
	// resource's own (go-control-plane sends a hash of it).
	for _, tt := range []struct {
		name               string
		opts               []Option
		v1, v2             string
		responseVersioning bool
	}{{"state of the world", nil, "1", "2", true}, {"delta", []Option{WithDelta()}, "", "", false}} {
		t.Run(tt.name, func(t *testing.T) {
			srv := xdstest.NewServer(t)
			srv.SetSnapshot(t, node, "1", xdstest.Cluster("a", "a-v1"), xdstest.Cluster("b", "b-v1"))
			c := newTestClient(t, srv.Bootstrap(node), append([]Option{fastBackoff()}, tt.opts...)...)
			aw, bw := newRecorder(), newRecorder()
			defer c.Watch(ClusterType, "a", aw)()
			defer c.Watch(ClusterType, "b", bw)()
			aw.next(t, "update")
			bw.next(t, "update")

			srv.SetSnapshot(t, node, "2", badCluster("a"), xdstest.Cluster("b", "b-v2"))
			aw.next(t, "error")
			bw.next(t, "update")
			got := readClusterDump(t, c)
			a, b := got["a"], got["b"]
			if !tt.responseVersioning {
				// Per-resource versions: the rejected one differs from the
				// one in use, and b's is its own.
				if a.version == "" || a.failedVersion == "" || a.failedVersion == a.version || b.version == "" {
					t.Errorf("delta versions: a in use %q, a rejected %q, b %q", a.version, a.failedVersion, b.version)
				}
				a.version, a.failedVersion, b.version = tt.v1, tt.v2, tt.v2
			}
			if a.status != "NACKED" || a.eds != "a-v1" || a.version != tt.v1 || !a.updated {
				t.Errorf("a: %+v, want NACKED, still a-v1 at version 1", a)
			}
			if a.failedVersion != tt.v2 || a.failedMinRing != 100 || !strings.Contains(a.details, "minimum_ring_size") || !a.attempted {
				t.Errorf("a's error_state: %+v, want version 2 as received (minimum_ring_size 100) and the reason", a)
			}
			if b.status != "ACKED" || b.eds != "b-v2" || b.version != tt.v2 || b.failedVersion != "" {
				t.Errorf("b: %+v, want ACKED b-v2 at version 2 without error_state", b)
			}

			srv.SetSnapshot(t, node, "3", xdstest.Cluster("a", "a-v3"), xdstest.Cluster("b", "b-v2"))
			aw.next(t, "update")
			if a := readClusterDump(t, c)["a"]; a.status != "ACKED" || a.eds != "a-v3" || a.failedVersion != "" || a.details != "" {
				t.Errorf("a after the fix: %+v, want ACKED a-v3, error_state cleared", a)
			}
		})
	}
}

// A resource whose nested extension this binary does not link shows as
// its type alone; the dump does not fail.
func TestConfigDumpUnknownExtension(t *testing.T) {
	b, err := protojsonMarshalLenient(t)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b, `"@type":"type.googleapis.com/example.Unknown"`) {
		t.Errorf("unknown extension rendered as %s", b)
	}
}

func protojsonMarshalLenient(t *testing.T) (string, error) {
	t.Helper()
	c := &clusterv3.Cluster{Name: "x", ClusterDiscoveryType: &clusterv3.Cluster_ClusterType{ClusterType: &clusterv3.Cluster_CustomClusterType{
		Name: "custom", TypedConfig: &anypb.Any{TypeUrl: "type.googleapis.com/example.Unknown", Value: []byte{0x0a, 0x01, 'x'}}}}}
	b, err := protojson.MarshalOptions{Resolver: lenientResolver{}}.Marshal(c)
	return strings.ReplaceAll(string(b), " ", ""), err
}
