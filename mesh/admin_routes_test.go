package mesh_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
)

type routesJSON []struct {
	Host         string `json:"host"`
	Listener     string `json:"listener"`
	RouteConfig  string `json:"route_config"`
	State        string `json:"state"`
	Error        string `json:"error"`
	VirtualHosts []struct {
		Name    string   `json:"name"`
		Domains []string `json:"domains"`
		Routes  []struct {
			Match            string `json:"match"`
			Cluster          string `json:"cluster"`
			Timeout          string `json:"timeout"`
			WeightedClusters []struct {
				Name    string  `json:"name"`
				Weight  uint32  `json:"weight"`
				Percent float64 `json:"percent"`
			} `json:"weighted_clusters"`
		} `json:"routes"`
	} `json:"virtual_hosts"`
}

func TestAdminRoutesShowTheXDSRoutesAndSplits(t *testing.T) {
	v1, v2 := startDualBackend(t, "v1"), startDualBackend(t, "v2")
	cp := xdstest.NewServer(t)
	cp.SetSnapshot(t, xdsNode, "1", ordersConfig(v1.addr, v2.addr, 90, 10)...)
	admin := freeAddr(t)
	m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)), mesh.WithAdminAddr(admin))
	sendHTTP(t, m.HTTPClient(), 3, false)
	c := adminClient(t)

	code, h, body := fetch(t, c, "http://"+admin+"/routes")
	if code != http.StatusOK || h.Get("Content-Type") != "application/json" {
		t.Fatalf("/routes: status %d, Content-Type %q", code, h.Get("Content-Type"))
	}
	var got routesJSON
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("/routes: %v\n%s", err, body)
	}
	if len(got) != 1 {
		t.Fatalf("/routes has %d hosts, want orders:8080 alone:\n%s", len(got), body)
	}
	hr := got[0]
	if hr.Host != "orders:8080" || hr.Listener != "orders:8080" || hr.RouteConfig != "orders-routes" || hr.State != "ACTIVE" || hr.Error != "" {
		t.Errorf("host = %+v, want orders:8080 on listener orders:8080, route configuration orders-routes, ACTIVE", hr)
	}
	if len(hr.VirtualHosts) != 1 || hr.VirtualHosts[0].Name != "orders" || len(hr.VirtualHosts[0].Routes) != 2 ||
		strings.Join(hr.VirtualHosts[0].Domains, ",") != "orders:8080,orders" {
		t.Fatalf("virtual hosts = %+v, want orders (orders:8080, orders) with 2 routes", hr.VirtualHosts)
	}
	canary, split := hr.VirtualHosts[0].Routes[0], hr.VirtualHosts[0].Routes[1]
	if canary.Match != `prefix "/" and header x-canary = "true"` || canary.Cluster != "orders-v2" || len(canary.WeightedClusters) != 0 {
		t.Errorf("first route = %+v, want the x-canary header match to orders-v2", canary)
	}
	if canary.Timeout != "15s" {
		t.Errorf("first route's timeout = %q, want Envoy's default 15s", canary.Timeout)
	}
	if split.Match != `prefix "/"` || split.Cluster != "" || len(split.WeightedClusters) != 2 {
		t.Fatalf("second route = %+v, want a weighted split on prefix /", split)
	}
	for i, want := range []struct {
		name    string
		weight  uint32
		percent float64
	}{{"orders-v1", 90, 90}, {"orders-v2", 10, 10}} {
		w := split.WeightedClusters[i]
		if w.Name != want.name || w.Weight != want.weight || w.Percent != want.percent {
			t.Errorf("split[%d] = %+v, want %s weight %d (%v%%)", i, w, want.name, want.weight, want.percent)
		}
	}

	// The page polls Weft's view of the xDS state without the resources
	// themselves.
	_, _, dump := fetch(t, c, "http://"+admin+"/config_dump?format=weft&resources=false")
	if !strings.Contains(dump, `"ACKED"`) || !strings.Contains(dump, "orders-routes") || strings.Contains(dump, `"resource"`) {
		t.Errorf("/config_dump?format=weft&resources=false:\n%.2000s", dump)
	}
	if _, _, full := fetch(t, c, "http://"+admin+"/config_dump?format=weft"); !strings.Contains(full, `"resource"`) {
		t.Errorf("/config_dump?format=weft lost the resources:\n%.2000s", full)
	}

	// /config_dump is Envoy's ConfigDump: what reads Envoy's reads it,
	// down to the resources as the control plane sent them.
	_, _, envoy := fetch(t, c, "http://"+admin+"/config_dump")
	var cd adminv3.ConfigDump
	if err := protojson.Unmarshal([]byte(envoy), &cd); err != nil {
		t.Fatalf("/config_dump is not an envoy.admin.v3.ConfigDump: %v\n%.2000s", err, envoy)
	}
	var dumped []string
	for _, a := range cd.GetConfigs() {
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatalf("config %s: %v", a.GetTypeUrl(), err)
		}
		switch d := m.(type) {
		case *adminv3.ListenersConfigDump:
			for _, l := range d.GetDynamicListeners() {
				var lis listenerv3.Listener
				if err := l.GetActiveState().GetListener().UnmarshalTo(&lis); err != nil {
					t.Errorf("listener %s: %v", l.GetName(), err)
				}
				dumped = append(dumped, "LDS "+lis.GetName()+" "+l.GetClientStatus().String()+" "+l.GetActiveState().GetVersionInfo())
			}
		case *adminv3.RoutesConfigDump:
			for _, r := range d.GetDynamicRouteConfigs() {
				var rc routev3.RouteConfiguration
				if err := r.GetRouteConfig().UnmarshalTo(&rc); err != nil {
					t.Errorf("route config: %v", err)
				}
				if r.GetLastUpdated() == nil {
					t.Errorf("route config %s has no last_updated", rc.GetName())
				}
				dumped = append(dumped, "RDS "+rc.GetName()+" "+r.GetClientStatus().String()+" "+r.GetVersionInfo())
			}
		case *adminv3.ClustersConfigDump:
			for _, c := range d.GetDynamicActiveClusters() {
				var cl clusterv3.Cluster
				if err := c.GetCluster().UnmarshalTo(&cl); err != nil {
					t.Errorf("cluster: %v", err)
				}
				dumped = append(dumped, "CDS "+cl.GetName()+" "+c.GetClientStatus().String()+" "+c.GetVersionInfo())
			}
		}
	}
	for _, want := range []string{"LDS orders:8080 ACKED 1", "RDS orders-routes ACKED 1", "CDS orders-v1 ACKED 1"} {
		if !slices.Contains(dumped, want) {
			t.Errorf("/config_dump lacks %q; it holds %q", want, dumped)
		}
	}
}

func TestAdminRoutesWithoutAControlPlaneIsEmpty(t *testing.T) {
	admin := freeAddr(t)
	newMesh(t, mesh.WithAdminAddr(admin))
	c := adminClient(t)
	if code, _, body := fetch(t, c, "http://"+admin+"/routes"); code != http.StatusOK || strings.TrimSpace(body) != "[]" {
		t.Errorf("/routes without xDS: status %d, body %q, want []", code, body)
	}
	if code, _, body := fetch(t, c, "http://"+admin+"/config_dump?format=weft"); code != http.StatusOK || strings.TrimSpace(body) != "[]" {
		t.Errorf("/config_dump?format=weft without xDS: status %d, body %q, want []", code, body)
	}
	var cd adminv3.ConfigDump
	if code, _, body := fetch(t, c, "http://"+admin+"/config_dump"); code != http.StatusOK || protojson.Unmarshal([]byte(body), &cd) != nil || len(cd.GetConfigs()) != 0 {
		t.Errorf("/config_dump without xDS: status %d, body %q, want an empty ConfigDump", code, body)
	}
}

// /routes names a route's mirror clusters with the share copied.
func TestAdminRoutesShowMirrors(t *testing.T) {
	main, shadow := startRecBackend(t, nil), startRecBackend(t, nil)
	cp := xdstest.NewServer(t)
	cp.SetSnapshot(t, xdsNode, "1", mirrorResources(main.addr, shadow.addr)...)
	admin := freeAddr(t)
	m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)), mesh.WithAdminAddr(admin))
	if resp, err := m.HTTPClient().Get("http://" + parityHost + "/"); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	_, _, body := fetch(t, adminClient(t), "http://"+admin+"/routes")
	var got []struct {
		VirtualHosts []struct {
			Routes []struct {
				Mirror string `json:"mirror"`
			} `json:"routes"`
		} `json:"virtual_hosts"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil || len(got) != 1 || len(got[0].VirtualHosts) != 1 || len(got[0].VirtualHosts[0].Routes) != 2 {
		t.Fatalf("/routes: %v\n%s", err, body)
	}
	rs := got[0].VirtualHosts[0].Routes
	if rs[0].Mirror != "shadow 25%" || rs[1].Mirror != "shadow 100%" {
		t.Errorf("mirrors = %q, %q; want \"shadow 25%%\", \"shadow 100%%\"", rs[0].Mirror, rs[1].Mirror)
	}
}
