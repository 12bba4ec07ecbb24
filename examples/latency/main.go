// Command latency compares load-balancing policies when one backend slows
// down, after Linkerd's "Beyond Round Robin" experiment, scaled down to
// loopback: eleven HTTP backends whose latency is Normal(5ms, 1ms), an
// open-loop constant-rate client, and one backend ten times slower for the
// middle half of a run. Each of Weft's policies runs through mesh.New;
// grpc-go's own round_robin, over gRPC backends with the same latency, is
// an outside reference. A first run with every backend healthy is the
// baseline.
//
// The policies run side by side, not one after another: each request goes
// to one policy's client, in random order, so every policy sees the same
// moments of the run. On a machine shared with other work a stall of the
// whole process is common, and run in turn one policy would take the blame
// for it. The backends sleep rather than compute, so the policies' traffic
// does not queue behind each other's.
//
//	go run ./examples/latency
//	go run ./examples/latency -rate 400 -duration 20s -policies p2c_ewma,round_robin
//
// Numbers from one machine, shared with other work, are noisy: read the
// table for orders of magnitude, and run it more than once.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	gresolver "google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/examples/internal/openloop"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/resilience"
)

// grpcRoundRobin names the outside reference: grpc-go's built-in
// round_robin over gRPC backends, with no Weft code on the path.
const grpcRoundRobin = "grpc_round_robin"

// requestCap bounds every request so that a run always ends, whatever a
// backend does. It is far above any latency the experiment produces, so it
// never shapes the results.
const requestCap = 10 * time.Second

func main() {
	if _, err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "latency example:", err)
		os.Exit(1)
	}
}

type options struct {
	rate       float64
	duration   time.Duration
	policies   []string
	baseline   bool
	backends   int
	mean, sd   time.Duration
	slowFactor float64
	timeout    time.Duration
}

func parseFlags(args []string, out io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("latency", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Float64Var(&o.rate, "rate", 200, "requests per second to each policy, sent at a constant rate whatever the latency")
	fs.DurationVar(&o.duration, "duration", 12*time.Second, "length of each run (all-healthy, then one backend slow)")
	policies := fs.String("policies", strings.Join([]string{balancer.RoundRobin, balancer.LeastRequest, balancer.P2CEWMA, grpcRoundRobin}, ","),
		"comma-separated policies to compare: Weft policy names, and "+grpcRoundRobin+" for grpc-go's own")
	fs.BoolVar(&o.baseline, "baseline", true, "start with a run where every backend stays healthy")
	fs.IntVar(&o.backends, "backends", 11, "number of backends")
	fs.DurationVar(&o.mean, "mean", 5*time.Millisecond, "mean backend latency")
	fs.DurationVar(&o.sd, "sd", time.Millisecond, "standard deviation of backend latency")
	fs.Float64Var(&o.slowFactor, "slow", 10, "how many times slower the slow backend gets")
	fs.DurationVar(&o.timeout, "timeout", 25*time.Millisecond, "the latency counted as a success in the last column (requests are not cancelled)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	for p := range strings.SplitSeq(*policies, ",") {
		if p = strings.TrimSpace(p); p != "" {
			o.policies = append(o.policies, p)
		}
	}
	switch {
	case o.rate <= 0 || o.duration <= 0:
		return o, errors.New("-rate and -duration must be positive")
	case o.rate*o.duration.Seconds() < 1:
		return o, errors.New("-rate × -duration is less than one request")
	case o.rate*o.duration.Seconds() > 1e6:
		return o, errors.New("-rate × -duration is over a million requests; keep runs short")
	case len(o.policies) == 0 || len(o.policies) > maxClients:
		return o, fmt.Errorf("-policies: give 1 to %d policies", maxClients)
	case o.backends < 2:
		return o, errors.New("-backends must be at least 2")
	case o.mean <= 0 || o.sd < 0 || o.slowFactor < 1:
		return o, errors.New("-mean must be positive, -sd not negative, -slow at least 1")
	}
	for i, p := range o.policies {
		if slices.Contains(o.policies[:i], p) {
			return o, fmt.Errorf("-policies: %q twice", p)
		}
		if p != grpcRoundRobin && balancer.Get(p) == nil {
			return o, fmt.Errorf("unknown policy %q (have %s, %s)", p, strings.Join(balancer.Names(), ", "), grpcRoundRobin)
		}
	}
	return o, nil
}

// maxClients bounds the policies compared at once; backends count requests
// per client in fixed arrays.
const maxClients = 8

// clientHeader carries the index of the client a request came from, so that
// backends can count each policy's requests apart.
const clientHeader = "Example-Client"

// backend is one replica's latency model. The HTTP and gRPC servers of a
// replica share it, so both protocols see the same slowdown.
type backend struct {
	mean, sd   float64 // nanoseconds
	slowFactor float64
	// slowFrom and slowTo bound the slowdown, in nanoseconds of the
	// monotonic clock since epoch; equal when the replica is healthy.
	// Atomics, because handlers read them while the run sets them.
	slowFrom, slowTo atomic.Int64
	// hits and slowed count, by client, the requests that reached the
	// handler and those of them that were slowed.
	hits, slowed [maxClients]atomic.Int64
}

// epoch anchors the monotonic readings of the slow window: wall-clock steps
// must not move the window.
var epoch = time.Now()

// serve holds a request of client for the backend's latency, or until the
// caller gives up, so an abandoned request costs nothing more.
func (b *backend) serve(ctx context.Context, client int) error {
	b.hits[client].Add(1)
	d := max(b.mean+rand.NormFloat64()*b.sd, 0)
	if now := int64(time.Since(epoch)); now >= b.slowFrom.Load() && now < b.slowTo.Load() {
		d *= b.slowFactor
		b.slowed[client].Add(1)
	}
	t := time.NewTimer(time.Duration(d))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	client, err := strconv.Atoi(r.Header.Get(clientHeader))
	if err != nil || client < 0 || client >= maxClients {
		http.Error(w, "bad "+clientHeader, http.StatusBadRequest)
		return
	}
	if b.serve(r.Context(), client) != nil {
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// healthServer is a replica's gRPC face; only the grpc-go client calls it,
// so its requests are counted as that client's.
type healthServer struct {
	healthpb.UnimplementedHealthServer
	b      *backend
	client int
}

func (h healthServer) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if err := h.b.serve(ctx, h.client); err != nil {
		return nil, err
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

// result is one policy's figures over one run.
type result struct {
	name     string
	slow     bool
	requests int
	errors   int64
	hits     int64 // backend requests; equal to requests with retries off
	slowHits int64 // of which backend 0 served
	slowed   int64 // of which backend 0 served while slowed
	p50      time.Duration
	p99      time.Duration
	p999     time.Duration
	max      time.Duration
	under    float64 // share of requests answered under the timeout
}

func run(ctx context.Context, args []string, out io.Writer) ([]result, error) {
	o, err := parseFlags(args, out)
	if err != nil {
		return nil, err
	}
	backends := make([]*backend, o.backends)
	httpAddrs := make([]string, o.backends)
	for i := range backends {
		backends[i] = &backend{mean: float64(o.mean), sd: float64(o.sd), slowFactor: o.slowFactor}
		srv := httptest.NewServer(backends[i])
		defer srv.Close()
		httpAddrs[i] = srv.Listener.Addr().String()
	}

	clients := make([]client, 0, len(o.policies))
	defer func() {
		for _, c := range clients {
			c.close()
		}
	}()
	for i, p := range o.policies {
		var c client
		if p == grpcRoundRobin {
			c, err = grpcClient(i, backends)
		} else {
			c, err = meshClient(ctx, i, p, httpAddrs)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		c.name = p
		clients = append(clients, c)
	}

	fmt.Fprintf(out, "%d backends, latency Normal(%v, %v); %.0f req/s to each of %d policies for %v per run, open loop",
		o.backends, o.mean, o.sd, o.rate, len(clients), o.duration)
	fmt.Fprintf(out, "; backend 0 is %gx slower for the middle half of the second run\n\n", o.slowFactor)

	var results []result
	for _, slow := range []bool{false, true} {
		if !slow && !o.baseline {
			continue
		}
		if err := ctx.Err(); err != nil {
			return results, err
		}
		results = append(results, measure(ctx, o, backends, slow, clients)...)
	}
	printTable(out, o, results)
	return results, nil
}

// client sends requests through one policy.
type client struct {
	name  string
	send  func(context.Context) error
	close func()
}

// meshClient returns a client, number index, through a Weft mesh balancing
// with policy. Retries and ejection are off: the comparison is of the
// policy alone.
func meshClient(ctx context.Context, index int, policy string, addrs []string) (client, error) {
	m, err := mesh.New(ctx,
		mesh.WithServiceName("latency-client"),
		mesh.WithEndpoints("backend", addrs...),
		mesh.WithLBPolicy(policy),
		mesh.WithRetryPolicy(resilience.RetryPolicy{NumRetries: -1, Timeout: -1}),
		mesh.WithOutlierDetection(balancer.OutlierConfig{
			ConsecutiveErrors: -1,
			SuccessRate:       balancer.SuccessRateEjection{Disabled: true},
		}),
	)
	if err != nil {
		return client{}, err
	}
	hc := m.HTTPClient()
	id := strconv.Itoa(index)
	send := func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://backend/", nil)
		if err != nil {
			return err
		}
		req.Header.Set(clientHeader, id)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return err
		}
		if resp.StatusCode != http.StatusNoContent {
			return fmt.Errorf("status %s", resp.Status)
		}
		return nil
	}
	return client{send: send, close: func() { m.Close() }}, nil
}

// grpcClient starts a gRPC server per backend and returns a client, number
// index, through a plain grpc-go channel with its built-in round_robin, the
// addresses given by a manual resolver.
func grpcClient(index int, backends []*backend) (client, error) {
	var stops []func()
	stopAll := func() {
		for _, stop := range stops {
			stop()
		}
	}
	var addrs []gresolver.Address
	for _, b := range backends {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			stopAll()
			return client{}, err
		}
		gs := grpc.NewServer()
		healthpb.RegisterHealthServer(gs, healthServer{b: b, client: index})
		done := make(chan struct{})
		go func() { defer close(done); gs.Serve(ln) }()
		stops = append(stops, func() { gs.Stop(); <-done })
		addrs = append(addrs, gresolver.Address{Addr: ln.Addr().String()})
	}
	r := manual.NewBuilderWithScheme("latency")
	r.InitialState(gresolver.State{Addresses: addrs})
	cc, err := grpc.NewClient(r.Scheme()+":///backend",
		grpc.WithResolvers(r),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
	if err != nil {
		stopAll()
		return client{}, err
	}
	hc := healthpb.NewHealthClient(cc)
	send := func(ctx context.Context) error {
		_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	return client{send: send, close: func() { cc.Close(); stopAll() }}, nil
}

// measure sends rate × duration requests through each client at a constant
// overall rate, the clients' requests in random order, each from its own
// goroutine at its scheduled time, and times each from its release: a
// client that waited for slow answers before sending more would hide the
// very latency being measured (coordinated omission). With slow
// set, backend 0 is slowed for the middle half of the run.
func measure(ctx context.Context, o options, backends []*backend, slow bool, clients []client) []result {
	for _, b := range backends {
		for c := range clients {
			b.hits[c].Store(0)
			b.slowed[c].Store(0)
		}
	}
	runs := openloop.Run(ctx, len(clients), o.rate, o.duration, requestCap, func(start time.Time) {
		if slow {
			base := int64(start.Sub(epoch))
			backends[0].slowFrom.Store(base + int64(o.duration/4))
			backends[0].slowTo.Store(base + int64(3*o.duration/4))
		}
	}, func(ctx context.Context, c int) error { return clients[c].send(ctx) })
	backends[0].slowFrom.Store(0)
	backends[0].slowTo.Store(0)

	results := make([]result, len(clients))
	for c, run := range runs {
		n := len(run.Latencies)
		r := result{name: clients[c].name, slow: slow, requests: n, errors: run.Errors,
			slowHits: backends[0].hits[c].Load(), slowed: backends[0].slowed[c].Load()}
		for _, b := range backends {
			r.hits += b.hits[c].Load()
		}
		r.p50, r.p99, r.p999, r.max = run.Quantile(0.50), run.Quantile(0.99), run.Quantile(0.999), run.Max()
		under, _ := slices.BinarySearch(run.Latencies, o.timeout)
		r.under = float64(under) / float64(n)
		results[c] = r
	}
	return results
}

func printTable(out io.Writer, o options, results []result) {
	fmt.Fprintf(out, "| policy | backend 0 | requests | errors | to backend 0 | slowed | p50 | p99 | p99.9 | max | < %v |\n", o.timeout)
	fmt.Fprintln(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range results {
		slow := "healthy"
		if r.slow {
			slow = fmt.Sprintf("%gx slow, middle half", o.slowFactor)
		}
		fmt.Fprintf(out, "| %s | %s | %d | %d | %.1f%% | %d | %s | %s | %s | %s | %.2f%% |\n",
			r.name, slow, r.requests, r.errors, 100*float64(r.slowHits)/float64(max(r.hits, 1)), r.slowed,
			ms(r.p50), ms(r.p99), ms(r.p999), ms(r.max), 100*r.under)
	}
	find := func(name string, slow bool) *result {
		for i := range results {
			if results[i].name == name && results[i].slow == slow {
				return &results[i]
			}
		}
		return nil
	}
	fmt.Fprintln(out)
	ewma, rr := find(balancer.P2CEWMA, true), find(balancer.RoundRobin, true)
	if base := find(balancer.P2CEWMA, false); ewma != nil && base != nil {
		fmt.Fprintf(out, "p2c_ewma p99.9 with a slow backend is %.2fx its all-healthy p99.9.\n", ratio(ewma.p999, base.p999))
	}
	if ewma != nil && rr != nil {
		fmt.Fprintf(out, "round_robin p99 with a slow backend is %.2fx p2c_ewma's.\n", ratio(rr.p99, ewma.p99))
	}
}

func ratio(a, b time.Duration) float64 { return float64(a) / float64(max(b, 1)) }

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }
