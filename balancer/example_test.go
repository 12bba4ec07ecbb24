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

// Outlier detection wraps any policy: an endpoint that fails
// ConsecutiveErrors requests in a row is ejected at once, for
// BaseEjectionTime, and the policy picks among the others meanwhile.
func ExampleNewOutlierDetection() {
	b := balancer.NewOutlierDetection(balancer.Get(balancer.RoundRobin), balancer.OutlierConfig{
		ConsecutiveErrors: 3,
		BaseEjectionTime:  time.Minute,
	})
	c := balancer.NewCluster(b, nil)
	defer c.Close()
	c.Update([]resolver.Endpoint{{Addr: "10.0.0.1:8080"}, {Addr: "10.0.0.2:8080"}})
	for range 10 {
		r, err := c.Pick(balancer.PickInfo{})
		if err != nil {
			fmt.Println(err)
			return
		}
		d := balancer.DoneInfo{Outcome: balancer.Success}
		if r.Endpoint.Addr == "10.0.0.2:8080" {
			d.Outcome = balancer.GatewayError // say, HTTP 503
		}
		r.Finish(d)
	}
	for _, e := range c.Endpoints() {
		fmt.Println(e.Addr, "ejected:", e.Ejected())
	}
	// Output:
	// 10.0.0.1:8080 ejected: false
	// 10.0.0.2:8080 ejected: true
}

// With priorities, traffic stays in priority 0 while at least 1/1.4 of its
// endpoints are healthy, and spills to priority 1 in proportion below
// that: here one of P0's two endpoints is unhealthy, so P0's health is
// 1.4 × 1/2 = 70% and P1 takes the other 30%.
func ExampleNewPriorityLocality() {
	c := balancer.NewCluster(balancer.NewPriorityLocality(balancer.Get(balancer.RoundRobin)), nil)
	defer c.Close()
	c.Update([]resolver.Endpoint{
		{Addr: "10.0.0.1:8080", Priority: 0},
		{Addr: "10.0.0.2:8080", Priority: 0, Health: resolver.Unhealthy},
		{Addr: "10.1.0.1:8080", Priority: 1},
	})
	counts := map[string]int{}
	const picks = 100_000
	for i := range picks {
		// A request with a hash (here its number) is placed by the hash,
		// so this example's counts are the same on every run.
		r, err := c.Pick(balancer.PickInfo{Hash: uint64(i), HasHash: true})
		if err != nil {
			fmt.Println(err)
			return
		}
		counts[r.Endpoint.Addr]++
		r.Finish(balancer.DoneInfo{})
	}
	fmt.Printf("P0 %.0f%%, P1 %.0f%%\n", 100*float64(counts["10.0.0.1:8080"])/picks, 100*float64(counts["10.1.0.1:8080"])/picks)
	// Output: P0 70%, P1 30%
}

// A backend's ORCA report in Envoy's endpoint-load-metrics header, as
// client_side_weighted_round_robin reads it from an HTTP response.
func ExampleParseLoadMetricsHeader() {
	r, err := balancer.ParseLoadMetricsHeader("TEXT cpu_utilization=0.3,rps_fractional=120,named_metrics.queue=4")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(r.CPUUtilization, r.QPS, r.NamedMetrics["queue"])
	_, err = balancer.ParseLoadMetricsHeader("TEXT cpu_utilization=-1")
	fmt.Println(err)
	// Output:
	// 0.3 120 4
	// balancer: Endpoint-Load-Metrics: orca: cpu_utilization -1 is not a finite non-negative number
}
