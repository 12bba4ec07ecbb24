// Command hedging shows request hedging cutting tail latency, after Dean
// and Barroso's "The Tail at Scale", on loopback: a mesh service whose
// backends answer in about 5 ms but take twenty times longer on 1% of
// requests, called at a constant rate three ways: without hedging, with
// resilience.NewHedgeTransport sending a second attempt after a fixed delay
// (by default the 95th percentile a short unhedged calibration run
// observed), and with the hedge delay left to the transport's own running
// 95th percentile. It reports the latency quantiles and the extra load
// hedging costs, counted at the backends.
//
// The three clients run side by side, not one after another: each request
// goes to one of them, in random order, so all see the same moments of the
// run. On a machine shared with other work a stall of the whole process is
// common, and run in turn one client would take the blame for it. The
// backends sleep rather than compute, so one client's traffic does not
// queue behind another's.
//
//	go run ./examples/hedging
//	go run ./examples/hedging -rate 500 -duration 30s -delay 8ms
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
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/examples/internal/openloop"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/resilience"
)

// requestCap bounds every request so that a run always ends, whatever a
// backend does. It is far above any latency the experiment produces, so it
// never shapes the results.
const requestCap = 10 * time.Second

func main() {
	if _, err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "hedging example:", err)
		os.Exit(1)
	}
}

type options struct {
	rate       float64
	duration   time.Duration
	backends   int
	policy     string
	mean, sd   time.Duration
	slowShare  float64
	slowFactor float64
	delay      time.Duration
	calibrate  time.Duration
	adaptive   bool
}

func parseFlags(args []string, out io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("hedging", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Float64Var(&o.rate, "rate", 300, "requests per second to each client, sent at a constant rate whatever the latency")
	fs.DurationVar(&o.duration, "duration", 20*time.Second, "length of the run")
	fs.IntVar(&o.backends, "backends", 5, "number of backends")
	fs.StringVar(&o.policy, "policy", balancer.RoundRobin, "the mesh's load-balancing policy")
	fs.DurationVar(&o.mean, "mean", 5*time.Millisecond, "mean backend latency")
	fs.DurationVar(&o.sd, "sd", time.Millisecond, "standard deviation of backend latency")
	fs.Float64Var(&o.slowShare, "slow-share", 0.01, "share of responses that are slowed")
	fs.Float64Var(&o.slowFactor, "slow", 20, "how many times slower a slowed response is")
	fs.DurationVar(&o.delay, "delay", 0, "fixed hedge delay; 0 means the p95 of an unhedged calibration run")
	fs.DurationVar(&o.calibrate, "calibrate", 3*time.Second, "length of the calibration run, when -delay is 0")
	fs.BoolVar(&o.adaptive, "adaptive", true, "also run with the transport's own running p95 as the delay")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case o.rate <= 0 || o.duration <= 0:
		return o, errors.New("-rate and -duration must be positive")
	case o.rate*o.duration.Seconds() < 1:
		return o, errors.New("-rate × -duration is less than one request")
	case o.rate*o.duration.Seconds() > 1e6:
		return o, errors.New("-rate × -duration is over a million requests; keep runs short")
	case o.backends < 2:
		return o, errors.New("-backends must be at least 2, so a hedge can go elsewhere")
	case o.mean <= 0 || o.sd < 0 || o.slowFactor < 1 || o.delay < 0:
		return o, errors.New("-mean must be positive, -sd and -delay not negative, -slow at least 1")
	case o.delay == 0 && o.rate*o.calibrate.Seconds() < 1:
		return o, errors.New("-calibrate must give at least one request")
	case o.rate*o.calibrate.Seconds() > 1e6:
		return o, errors.New("-rate × -calibrate is over a million requests; keep runs short")
	case o.slowShare < 0 || o.slowShare > 1:
		return o, errors.New("-slow-share must be between 0 and 1")
	case balancer.Get(o.policy) == nil:
		return o, fmt.Errorf("unknown policy %q", o.policy)
	}
	return o, nil
}

// backend is one replica: Normal(mean, sd) latency, and on a random share of
// requests that latency times slowFactor, independently of everything else,
// the kind of hiccup (a GC pause, a flush, a noisy neighbour) hedging is for.
type backend struct {
	mean, sd   float64 // nanoseconds
	slowShare  float64
	slowFactor float64
	hits       [maxClients]atomic.Int64 // requests that reached the handler, by client
}

// maxClients is how many clients run side by side at most.
const maxClients = 3

// clientHeader carries the index of the client a request came from, so that
// backends can count each client's requests apart; a hedge carries its
// request's headers.
const clientHeader = "Example-Client"

func (b *backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	client, err := strconv.Atoi(r.Header.Get(clientHeader))
	if err != nil || client < 0 || client >= maxClients {
		http.Error(w, "bad "+clientHeader, http.StatusBadRequest)
		return
	}
	b.hits[client].Add(1)
	d := max(b.mean+rand.NormFloat64()*b.sd, 0)
	if rand.Float64() < b.slowShare {
		d *= b.slowFactor
	}
	t := time.NewTimer(time.Duration(d))
	defer t.Stop()
	// A hedge's loser is cancelled; stopping at once is what keeps its
	// cost to the backend small.
	select {
	case <-t.C:
		w.WriteHeader(http.StatusNoContent)
	case <-r.Context().Done():
	}
}

// result is one client's figures over a run.
type result struct {
	name     string
	requests int
	errors   int64
	hits     int64 // backend requests
	p50      time.Duration
	p95      time.Duration
	p99      time.Duration
	p999     time.Duration
	max      time.Duration
}

// extra is the load hedging added: backend requests per client request,
// less one.
func (r result) extra() float64 { return float64(r.hits)/float64(r.requests) - 1 }

func run(ctx context.Context, args []string, out io.Writer) ([]result, error) {
	o, err := parseFlags(args, out)
	if err != nil {
		return nil, err
	}
	backends := make([]*backend, o.backends)
	addrs := make([]string, o.backends)
	for i := range backends {
		backends[i] = &backend{mean: float64(o.mean), sd: float64(o.sd), slowShare: o.slowShare, slowFactor: o.slowFactor}
		srv := httptest.NewServer(backends[i])
		defer srv.Close()
		addrs[i] = srv.Listener.Addr().String()
	}
	fmt.Fprintf(out, "%d backends (%s), latency Normal(%v, %v), %g%% of responses %gx slower; %.0f req/s to each client for %v, open loop\n",
		o.backends, o.policy, o.mean, o.sd, 100*o.slowShare, o.slowFactor, o.rate, o.duration)

	var clients []client
	defer func() {
		for _, c := range clients {
			c.close()
		}
	}()
	add := func(name string, hedge *resilience.HedgePolicy) error {
		c, err := newClient(ctx, len(clients), o.policy, addrs, hedge)
		if err != nil {
			return err
		}
		c.name = name
		clients = append(clients, c)
		return nil
	}
	if err := add("no hedging", nil); err != nil {
		return nil, err
	}
	delay, how := o.delay, "fixed"
	if delay == 0 {
		// The unhedged client calibrates alone first: its p95 is the fixed
		// delay, as "The Tail at Scale" suggests.
		cal := o
		cal.duration = o.calibrate
		r := measure(ctx, cal, backends, clients)[0]
		delay, how = r.p95, fmt.Sprintf("fixed, unhedged p95 over %v", o.calibrate)
	}
	fmt.Fprintf(out, "\n")
	if err := add(fmt.Sprintf("hedge after %s (%s)", ms(delay), how), &resilience.HedgePolicy{MaxAttempts: 2, Delay: delay}); err != nil {
		return nil, err
	}
	if o.adaptive {
		if err := add("hedge after running p95", &resilience.HedgePolicy{MaxAttempts: 2}); err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	results := measure(ctx, o, backends, clients)
	printTable(out, results)
	return results, nil
}

// client sends requests through its own mesh, hedged or not.
type client struct {
	name  string
	http  *http.Client
	id    string // its clientHeader value
	close func()
}

// newClient returns client number index, with its own mesh balancing the
// service "backend" over addrs, hedging under hedge when it is not nil.
// Retries and ejection are off so that hedging is the only thing that
// sends a request twice.
func newClient(ctx context.Context, index int, policy string, addrs []string, hedge *resilience.HedgePolicy) (client, error) {
	m, err := mesh.New(ctx,
		mesh.WithServiceName("hedging-client"),
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
	rt := m.Transport(nil)
	if hedge != nil {
		rt = resilience.NewHedgeTransport(rt, *hedge)
	}
	return client{http: &http.Client{Transport: rt}, id: strconv.Itoa(index), close: func() { m.Close() }}, nil
}

func (c client) get(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://backend/", nil)
	if err != nil {
		return err
	}
	req.Header.Set(clientHeader, c.id)
	resp, err := c.http.Do(req)
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

// measure sends rate × duration requests through each client, open-loop
// (see openloop), and counts what reached the backends.
func measure(ctx context.Context, o options, backends []*backend, clients []client) []result {
	for _, b := range backends {
		for c := range clients {
			b.hits[c].Store(0)
		}
	}
	runs := openloop.Run(ctx, len(clients), o.rate, o.duration, requestCap, nil,
		func(ctx context.Context, c int) error { return clients[c].get(ctx) })
	// A hedge's cancelled loser may still be on its way into a handler
	// when the winner returns; give those a moment to land, so the count
	// of backend requests is complete.
	time.Sleep(50 * time.Millisecond)

	results := make([]result, len(clients))
	for c, run := range runs {
		r := result{name: clients[c].name, requests: len(run.Latencies), errors: run.Errors}
		for _, b := range backends {
			r.hits += b.hits[c].Load()
		}
		r.p50, r.p95 = run.Quantile(0.50), run.Quantile(0.95)
		r.p99, r.p999, r.max = run.Quantile(0.99), run.Quantile(0.999), run.Max()
		results[c] = r
	}
	return results
}

func printTable(out io.Writer, results []result) {
	fmt.Fprintln(out, "| client | requests | errors | backend requests | extra load | p50 | p95 | p99 | p99.9 | max |")
	fmt.Fprintln(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range results {
		fmt.Fprintf(out, "| %s | %d | %d | %d | %+.1f%% | %s | %s | %s | %s | %s |\n",
			r.name, r.requests, r.errors, r.hits, 100*r.extra(), ms(r.p50), ms(r.p95), ms(r.p99), ms(r.p999), ms(r.max))
	}
	if len(results) < 2 {
		return
	}
	fmt.Fprintln(out)
	base := results[0]
	for _, r := range results[1:] {
		fmt.Fprintf(out, "%s: p99.9 %.2fx lower than without hedging, p99 %.2fx, for %+.1f%% backend requests.\n",
			r.name, ratio(base.p999, r.p999), ratio(base.p99, r.p99), 100*r.extra())
	}
}

func ratio(a, b time.Duration) float64 { return float64(a) / float64(max(b, 1)) }

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }
