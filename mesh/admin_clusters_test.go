package mesh_test

import (
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
)

// adminClusters reads the admin endpoint's /clusters.
func adminClusters(t *testing.T, admin string) map[string]mesh.ClusterStatus {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/clusters")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /clusters: status %d", resp.StatusCode)
	}
	var cs []mesh.ClusterStatus
	if err := json.NewDecoder(resp.Body).Decode(&cs); err != nil {
		t.Fatalf("GET /clusters: %v", err)
	}
	out := map[string]mesh.ClusterStatus{}
	for _, c := range cs {
		out[c.Service] = c
	}
	return out
}

// TestAdminClustersShowsTheXDSPolicy: an xDS cluster's lb_policy on
// /clusters is the policy its Cluster resource put in force, not "xds".
func TestAdminClustersShowsTheXDSPolicy(t *testing.T) {
	v1, v2 := startDualBackend(t, "v1"), startDualBackend(t, "v2")
	cp := xdstest.NewServer(t)
	res := ordersConfig(v1.addr, v2.addr, 100, 0)
	for _, r := range res {
		if c, ok := r.(*clusterv3.Cluster); ok && c.Name == "orders-v1" {
			c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
		}
	}
	cp.SetSnapshot(t, xdsNode, "1", res...)
	admin := freeAddr(t)
	m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)), mesh.WithAdminAddr(admin), mesh.WithLBPolicy("random"))
	waitListening(t, admin)
	sendHTTP(t, m.HTTPClient(), 3, false) // orders-v1
	sendHTTP(t, m.HTTPClient(), 3, true)  // orders-v2

	got := adminClusters(t, admin)
	for _, tc := range []struct{ cluster, want string }{
		{"orders-v1", "least_request"},
		{"orders-v2", "round_robin"}, // the resource's default, not the mesh's (random)
	} {
		t.Run(tc.cluster, func(t *testing.T) {
			c, ok := got[tc.cluster]
			if !ok {
				t.Fatalf("/clusters has no %s: %v", tc.cluster, got)
			}
			if c.Policy != tc.want {
				t.Errorf("%s lb_policy = %q, want %q", tc.cluster, c.Policy, tc.want)
			}
		})
	}
}

// TestAdminClustersStaticHealth: a static endpoint, which discovery gives
// no health, shows HEALTHY on /clusters once it has served, and UNKNOWN
// while it has never been tried or when its last request failed.
func TestAdminClustersStaticHealth(t *testing.T) {
	orders, _ := backends(t, 2)
	pair, _ := backends(t, 2)
	broken := startStatusServer(t, http.StatusInternalServerError)
	admin := freeAddr(t)
	m := newMesh(t, mesh.WithAdminAddr(admin),
		mesh.WithEndpoints("orders", orders...), mesh.WithEndpoints("pair", pair...),
		mesh.WithEndpoints("broken", broken))
	waitListening(t, admin)
	for range 6 {
		get(t, m.HTTPClient(), "http://orders/")
	}
	get(t, m.HTTPClient(), "http://pair/") // one of the two, never the other
	resp, err := m.HTTPClient().Get("http://broken/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	got := adminClusters(t, admin)
	for _, tc := range []struct {
		service string
		want    map[string]int // endpoints by health
	}{
		{"orders", map[string]int{"HEALTHY": 2}},
		{"pair", map[string]int{"HEALTHY": 1, "UNKNOWN": 1}},
		{"broken", map[string]int{"UNKNOWN": 1}},
	} {
		t.Run(tc.service, func(t *testing.T) {
			c, ok := got[tc.service]
			if !ok {
				t.Fatalf("/clusters has no %s: %+v", tc.service, got)
			}
			health := map[string]int{}
			for _, e := range c.Endpoints {
				health[e.Health]++
			}
			if !maps.Equal(health, tc.want) {
				t.Errorf("%s endpoints by health = %v, want %v (%+v)", tc.service, health, tc.want, c.Endpoints)
			}
		})
	}
}

// startStatusServer serves every request with status code.
func startStatusServer(t *testing.T, code int) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, http.StatusText(code), code)
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}
