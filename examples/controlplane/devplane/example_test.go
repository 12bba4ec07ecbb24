package devplane_test

import (
	"fmt"

	"github.com/weftmesh/weft/examples/controlplane/devplane"
)

func ExampleParse() {
	cfg, err := devplane.Parse([]byte(`
services:
  - name: orders
    port: 8080
    versions:
      v1: [127.0.0.1:8081, 127.0.0.1:8082]
      v2: [127.0.0.1:8083]
    split: {v1: 80, v2: 20}
    routes:
      - headers: [{name: x-canary, exact: "true"}]
        version: v2
`), "mesh.yaml")
	if err != nil {
		fmt.Println(err)
		return
	}
	res := cfg.Resources()
	for _, l := range res.Listeners {
		fmt.Println("listener", l.GetName())
	}
	for _, rc := range res.RouteConfigs {
		fmt.Println("route", rc.GetName(), len(rc.GetVirtualHosts()[0].GetRoutes()), "routes")
	}
	for _, c := range res.Clusters {
		fmt.Println("cluster", c.GetName())
	}
	for _, la := range res.Endpoints {
		fmt.Println("endpoints", la.GetClusterName(), len(la.GetEndpoints()[0].GetLbEndpoints()))
	}

	_, err = devplane.Parse([]byte("services:\n  - name: orders\n    prot: 8080\n"), "mesh.yaml")
	fmt.Println(err)
	// Output:
	// listener orders:8080
	// listener orders
	// route orders 2 routes
	// cluster orders-v1
	// cluster orders-v2
	// endpoints orders-v1 2
	// endpoints orders-v2 1
	// devplane: mesh.yaml:3: services[0]: unknown key "prot" (did you mean "port"? known: allowed_spiffe_ids, circuit_breakers, hash_policy, hedge, lb_config, lb_policy, name, outlier_detection, port, retry, routes, split, timeout, versions)
}
