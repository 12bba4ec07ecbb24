package resolver_test

import (
	"fmt"

	"github.com/weftmesh/weft/resolver"
)

func ExampleParseEndpoints() {
	services, err := resolver.ParseEndpoints("orders=10.0.0.1:8080,10.0.0.2:8080;users=127.0.0.1:9000")
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, e := range services["orders"] {
		fmt.Println(e.Addr)
	}
	_, err = resolver.ParseEndpoints("orders=10.0.0.1")
	fmt.Println(err)
	// Output:
	// 10.0.0.1:8080
	// 10.0.0.2:8080
	// service "orders": endpoint "10.0.0.1": missing port
}

func ExampleStatic() {
	d := resolver.NewStatic(map[string][]resolver.Endpoint{"orders": {{Addr: "10.0.0.1:8080"}}})
	defer d.Close()
	cancel := d.Watch("orders", resolver.WatcherFunc(func(s resolver.State) {
		fmt.Println(len(s.Endpoints), "endpoint(s):", s.Endpoints[0].Addr)
	}))
	defer cancel()
	d.Update("orders", []resolver.Endpoint{{Addr: "10.0.0.2:8080"}, {Addr: "10.0.0.3:8080"}})
	// Output:
	// 1 endpoint(s): 10.0.0.1:8080
	// 2 endpoint(s): 10.0.0.2:8080
}
