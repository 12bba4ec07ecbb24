package balancer_test

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/resolver"
)

// A Cluster with the weighted round-robin policy gives each endpoint its
// weight's share of every rotation.
func Example() {
	c := balancer.NewCluster(balancer.Get(balancer.WeightedRoundRobin), nil)
	defer c.Close()
	c.Update([]resolver.Endpoint{
		{Addr: "10.0.0.1:8080", Weight: 3},
		{Addr: "10.0.0.2:8080", Weight: 1},
		{Addr: "10.0.0.3:8080", Health: resolver.Unhealthy},
	})
	counts := map[string]int{}
	for range 8 { // two rotations
		r, err := c.Pick(balancer.PickInfo{})
		if err != nil {
			fmt.Println(err)
			return
		}
		counts[r.Endpoint.Addr]++
		// ... send the request, then report how it went.
		r.Finish(balancer.DoneInfo{Latency: 12 * time.Millisecond})
	}
	fmt.Println(counts)
	// Output: map[10.0.0.1:8080:6 10.0.0.2:8080:2]
}

// Requests with the same hash (from the route's hash policy, say of a
// session cookie) reach the same endpoint.
func Example_ringHash() {
	c := balancer.NewCluster(balancer.Get(balancer.RingHash), nil)
	defer c.Close()
	c.Update([]resolver.Endpoint{{Addr: "10.0.0.1:8080"}, {Addr: "10.0.0.2:8080"}, {Addr: "10.0.0.3:8080"}})
	pick := func(hash uint64) string {
		r, err := c.Pick(balancer.PickInfo{Hash: hash, HasHash: true})
		if err != nil {
			return err.Error()
		}
		defer r.Finish(balancer.DoneInfo{})
		return r.Endpoint.Addr
	}
	const session = 0x5eed
	first, again := pick(session), pick(session)
	fmt.Println(first == again)
	// Output: true
}

// A policy's settings come as JSON, in the shape of grpc-go's
// load-balancing configuration; the parsed value goes to NewCluster.
func ExampleConfigParser() {
	lr := balancer.Get(balancer.LeastRequest)
	parser := lr.(balancer.ConfigParser)
	cfg, err := parser.ParseConfig(json.RawMessage(`{"choiceCount": 3}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	c := balancer.NewCluster(lr, cfg)
	defer c.Close()
	c.Update([]resolver.Endpoint{{Addr: "10.0.0.1:8080"}})
	r, err := c.Pick(balancer.PickInfo{})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(r.Endpoint.Addr, r.Endpoint.InFlight())
	r.Finish(balancer.DoneInfo{})

	_, err = parser.ParseConfig(json.RawMessage(`{"choiceCount": 1}`))
	fmt.Println(err)
	// Output:
	// 10.0.0.1:8080 1
	// balancer: least_request: choiceCount 1: must be at least 2
}

// With no endpoint that may serve, picks fail with ErrNoHealthyEndpoint.
func ExampleErrNoHealthyEndpoint() {
	c := balancer.NewCluster(balancer.Get(balancer.P2CEWMA), nil)
	defer c.Close()
	c.Update([]resolver.Endpoint{{Addr: "10.0.0.1:8080", Health: resolver.Draining}})
	_, err := c.Pick(balancer.PickInfo{})
	fmt.Println(err)
	// Output: balancer: no healthy endpoint
}
