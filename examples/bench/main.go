// Command bench measures what Weft costs, side by side with what it
// replaces, in one run on loopback, and prints the results as Markdown
// tables with the hardware they came from:
//
//  1. plain net/http against Weft's HTTP client and server (mesh.New,
//     HTTPClient, Serve), HTTP/1.1, h2c and HTTP/2 over TLS, 1 B and
//     1 KiB responses, 1, 8 and 64 concurrent callers, closed loop;
//  2. plain grpc-go against Weft's gRPC client and server (DialGRPC,
//     NewGRPCServer), and against grpc-go's own xds:/// client fed by the
//     same in-process go-control-plane server;
//  3. the full stack (SPIFFE mTLS, tracing at 1%, retries and
//     circuit-breaker thresholds armed, an authorization policy) against
//     the same traffic over plain TLS;
//  4. open-loop constant-rate load at several rates: added latency
//     quantiles, CPU per request (getrusage) as vCPU per 1,000 requests
//     per second, and the memory a client and server add;
//  5. xDS scale: initial sync and the propagation of one endpoint change
//     with 1 to 10,000 endpoints and with 1,000 clusters, and heap per
//     endpoint.
//
// Client and server run in one process, so CPU and memory figures cover
// both. The comparisons interleave their variants in short slices, so that
// every variant sees the same moments of the run: on a shared machine a
// stall would otherwise be blamed on whichever variant ran through it.
// Read ratios and differences; absolute figures belong to the machine.
//
//	go run ./examples/bench              # 4 to 10 minutes
//	go run ./examples/bench -short       # a few seconds: checks the harness
//	go run ./examples/bench -only grpc,xds -rates 1000,3000
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/security"
)

func main() {
	if _, err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// sections are the parts of a run, in the order they run and print.
var sections = []string{"http", "grpc", "full", "open", "sidecar", "memory", "xds"}

type options struct {
	short       bool
	warm        int           // memory: requests that warm each stack
	conns       int           // memory: idle keep-alive connections held to weigh one
	perVariant  time.Duration // closed loop: each variant's share of each case
	slice       time.Duration // closed loop: length of one turn
	rates       []float64
	rateTime    time.Duration // open loop: each variant's share of each rate
	sidecarRate float64       // sidecar: the open-loop rate
	sidecarTime time.Duration // sidecar: open-loop time of each variant, in ten turns
	endpoints   []int
	clusters    int
	xdsDelta    bool // xDS scale over incremental xDS
	only        map[string]bool
	cpuProfile  string
}

func parseFlags(args []string, out io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.BoolVar(&o.short, "short", false, "a run of a few seconds with small loads, to check the harness; its figures mean little")
	fs.DurationVar(&o.perVariant, "duration", time.Second, "closed loop: time each variant gets in each case")
	fs.DurationVar(&o.slice, "slice", 50*time.Millisecond, "closed loop: length of one variant's turn")
	rates := fs.String("rates", "500,2000,5000", "open loop: requests per second, comma-separated")
	fs.DurationVar(&o.rateTime, "rate-duration", 4*time.Second, "open loop: time each variant gets at each rate")
	fs.Float64Var(&o.sidecarRate, "sidecar-rate", 1000, "sidecar: open-loop requests per second (Istio publishes its figures at 1,000)")
	fs.DurationVar(&o.sidecarTime, "sidecar-duration", 10*time.Second, "sidecar: open-loop time each variant gets, in ten turns (the p99 needs the samples)")
	endpoints := fs.String("endpoints", "1,100,1000,10000", "xDS scale: endpoints in one cluster, comma-separated")
	fs.IntVar(&o.clusters, "clusters", 1000, "xDS scale: clusters of one endpoint each (0 = skip)")
	fs.BoolVar(&o.xdsDelta, "xds-delta", false, "xDS scale: the mesh speaks incremental (delta) xDS instead of state of the world")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the run to this file (go tool pprof -top bench <file>)")
	only := fs.String("only", strings.Join(sections, ","), "sections to run: "+strings.Join(sections, ", "))
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.short {
		// Shorter unless the flag was given.
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		short := map[string]string{"duration": "10ms", "slice": "5ms", "rates": "200,400", "rate-duration": "100ms",
			"endpoints": "1,100,1000,10000", "clusters": "50", "sidecar-rate": "200", "sidecar-duration": "200ms"}
		for name, v := range short {
			if !set[name] {
				if err := fs.Set(name, v); err != nil {
					return o, err
				}
			}
		}
	}
	o.warm, o.conns = 2000, 200
	if o.short {
		o.warm, o.conns = 200, 20
	}
	o.only = map[string]bool{}
	for s := range strings.SplitSeq(*only, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if !slices.Contains(sections, s) {
			return o, fmt.Errorf("-only: unknown section %q (have %s)", s, strings.Join(sections, ", "))
		}
		o.only[s] = true
	}
	for s := range strings.SplitSeq(*rates, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || r <= 0 || r > 50_000 {
			return o, fmt.Errorf("-rates: %q is not a rate between 0 and 50000", s)
		}
		o.rates = append(o.rates, r)
	}
	for s := range strings.SplitSeq(*endpoints, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 100_000 {
			return o, fmt.Errorf("-endpoints: %q is not a count between 1 and 100000", s)
		}
		o.endpoints = append(o.endpoints, n)
	}
	switch {
	case o.perVariant <= 0 || o.slice <= 0 || o.rateTime <= 0:
		return o, errors.New("-duration, -slice and -rate-duration must be positive")
	case o.sidecarRate <= 0 || o.sidecarRate > 50_000 || o.sidecarRate*o.sidecarTime.Seconds() < 20:
		return o, errors.New("-sidecar-rate must be between 0 and 50000, with at least 20 requests in -sidecar-duration")
	case o.clusters < 0 || o.clusters > 10_000:
		return o, errors.New("-clusters must be between 0 and 10000")
	case len(o.only) == 0:
		return o, errors.New("-only: no section")
	}
	for _, r := range o.rates {
		if r*o.rateTime.Seconds() < 2 {
			return o, fmt.Errorf("-rates %g × -rate-duration %v is less than two requests", r, o.rateTime)
		}
		if r*o.rateTime.Seconds() > 1e6 {
			return o, fmt.Errorf("-rates %g × -rate-duration %v is over a million requests; keep runs short", r, o.rateTime)
		}
	}
	return o, nil
}

// protocols are the HTTP protocols compared, by key of stacks.plainHTTP.
var protocols = []struct{ key, name, label string }{
	{"h1", "HTTP/1.1", "HTTP/1.1"},
	{"h2c", "h2c", "HTTP/2 cleartext (h2c)"},
	{"tls1", "HTTP/1.1 TLS", "HTTP/1.1 over TLS (plain: server TLS; Weft: SPIFFE mTLS)"},
	{"tls", "HTTP/2 TLS", "HTTP/2 over TLS (plain: server TLS; Weft: SPIFFE mTLS)"},
}

var concurrencies = []int{1, 8, 64}

// report is everything a run measured, for the tables and the tests.
type report struct {
	hardware string
	http     []httpRow
	grpc     []grpcRow
	full     []fullRow
	open     []openRow
	memory   []memoryRow
	sidecar  *sidecarReport
	xds      []scaleResult
	spans    int64 // spans the full stack exported
}

type httpRow struct {
	protocol    string
	size, conc  int
	plain, weft closedResult
}

type grpcRow struct {
	size, conc int
	// plain grpc-go, grpc-go xds, Weft DialGRPC(service), Weft DialGRPC(xds:///)
	r [4]closedResult
}

type fullRow struct {
	size, conc int
	// plain TLS, Weft mTLS only, Weft full stack
	r [3]closedResult
}

type openRow struct {
	rate        float64
	traffic     string
	sides       [2]string // "plain", "Weft"; the same stack twice for the noise floor
	plain, weft openResult
}

type memoryRow struct {
	stack string
	mem   memory
}

// fixtures are what every measurement shares: a control plane for the
// xDS clients, a self-signed certificate for the plain TLS sides, and the
// SPIFFE identities of Weft's sides.
type fixtures struct {
	cp                   *controlPlane
	cert                 tls.Certificate
	roots                *x509.CertPool
	clientSrc, serverSrc security.Source
}

// newEnv starts the fixtures in a new env, which the caller closes.
func newEnv(ctx context.Context) (*env, *fixtures, error) {
	e := &env{}
	f, err := e.start(ctx)
	if err != nil {
		e.close()
		return nil, nil, err
	}
	return e, f, nil
}

func (e *env) start(ctx context.Context) (*fixtures, error) {
	var err error
	if e.dir, err = os.MkdirTemp("", "weft-bench-"); err != nil {
		return nil, err
	}
	e.defer_(func() { os.RemoveAll(e.dir) })
	f := &fixtures{}
	if f.cp, err = startControlPlane(); err != nil {
		return nil, err
	}
	e.defer_(f.cp.close)
	if f.cert, f.roots, err = selfSignedCert(); err != nil {
		return nil, err
	}
	if f.clientSrc, f.serverSrc, err = e.identities(ctx); err != nil {
		return nil, fmt.Errorf("SPIFFE identities: %w", err)
	}
	return f, nil
}

func run(ctx context.Context, args []string, out io.Writer) (*report, error) {
	o, err := parseFlags(args, out)
	if err != nil {
		return nil, err
	}
	rep := &report{hardware: hardware()}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
		defer pprof.StopCPUProfile()
	}
	e, f, err := newEnv(ctx)
	if err != nil {
		return nil, err
	}
	defer e.close()

	fmt.Fprintf(out, "%s\n\n", rep.hardware)
	if o.only["memory"] {
		// First, while the process holds little else.
		if rep.memory, err = e.measureStackMemory(ctx, o.warm, f); err != nil {
			return rep, fmt.Errorf("memory: %w", err)
		}
		perConn, err := e.measureConnMemory(ctx, o.conns, f)
		if err != nil {
			return rep, fmt.Errorf("memory per connection: %w", err)
		}
		rep.memory = append(rep.memory, perConn...)
	}
	needStacks := o.only["http"] || o.only["grpc"] || o.only["full"] || o.only["open"] || o.only["sidecar"]
	var s *stacks
	if needStacks {
		if s, err = e.buildStacks(ctx, f); err != nil {
			return rep, fmt.Errorf("setting up: %w", err)
		}
		for _, v := range s.all() {
			for _, n := range sizes {
				if err := v.call(ctx, n); err != nil {
					return rep, fmt.Errorf("%s: first request: %w", v.name, err)
				}
			}
		}
	}
	if o.only["http"] {
		if err := measureHTTP(ctx, o, s, rep); err != nil {
			return rep, err
		}
		printHTTP(out, o, rep)
	}
	if o.only["grpc"] {
		if err := measureGRPC(ctx, o, s, rep); err != nil {
			return rep, err
		}
		printGRPC(out, o, rep)
	}
	if o.only["full"] {
		if err := measureFull(ctx, o, s, rep); err != nil {
			return rep, err
		}
		if err := s.flushSpans(ctx); err != nil {
			return rep, err
		}
		rep.spans = s.spans.spans.Load()
		printFull(out, o, rep)
	}
	if o.only["open"] {
		if err := measureOpen(ctx, o, s, rep); err != nil {
			return rep, err
		}
		printOpen(out, o, rep)
	}
	if o.only["sidecar"] {
		if rep.sidecar, err = measureSidecar(ctx, o, e, s, out); err != nil {
			return rep, fmt.Errorf("sidecar: %w", err)
		}
		printSidecar(out, o, rep.sidecar)
	}
	if o.only["memory"] {
		printMemory(out, o, rep)
	}
	if o.only["xds"] {
		if err := e.measureXDS(ctx, o, f.cp, rep); err != nil {
			return rep, err
		}
		printXDS(out, rep)
	}
	return rep, nil
}

func measureHTTP(ctx context.Context, o options, s *stacks, rep *report) error {
	for _, p := range protocols {
		for _, n := range sizes {
			for _, c := range concurrencies {
				res, err := interleave(ctx, []variant{{name: "plain " + p.name, call: s.plainHTTP[p.key]}, {name: "Weft " + p.name, call: s.weftHTTP[p.key]}},
					n, c, o.perVariant, o.slice)
				if err != nil {
					return err
				}
				rep.http = append(rep.http, httpRow{protocol: p.name, size: n, conc: c, plain: res[0], weft: res[1]})
			}
		}
	}
	return nil
}

func measureGRPC(ctx context.Context, o options, s *stacks, rep *report) error {
	for _, n := range sizes {
		for _, c := range concurrencies {
			res, err := interleave(ctx, []variant{{name: "plain gRPC", call: s.plainGRPC}, {name: "grpc-go xds", call: s.grpcXDS},
				{name: "Weft gRPC", call: s.weftGRPC}, {name: "Weft gRPC xds", call: s.weftGRPCXDS}}, n, c, o.perVariant, o.slice)
			if err != nil {
				return err
			}
			rep.grpc = append(rep.grpc, grpcRow{size: n, conc: c, r: [4]closedResult(res)})
		}
	}
	return nil
}

func measureFull(ctx context.Context, o options, s *stacks, rep *report) error {
	for _, c := range concurrencies {
		res, err := interleave(ctx, []variant{{name: "plain TLS", call: s.plainHTTP["tls"]}, {name: "Weft mTLS", call: s.weftHTTP["tls"]},
			{name: "Weft full stack", call: s.weftFull}}, 1024, c, o.perVariant, o.slice)
		if err != nil {
			return err
		}
		rep.full = append(rep.full, fullRow{size: 1024, conc: c, r: [3]closedResult(res)})
	}
	return nil
}

// openTraffic are the open-loop pairs: plain, then Weft. The first pair
// is plain net/http against itself: what it "adds" is the noise floor of
// the machine, against which the other pairs' differences are read.
func openTraffic(s *stacks) []struct {
	name        string
	sides       [2]string
	plain, weft caller
} {
	pw := [2]string{"plain", "Weft"}
	return []struct {
		name        string
		sides       [2]string
		plain, weft caller
	}{
		{"HTTP/1.1: net/http vs net/http (noise floor)", [2]string{"plain", "plain again"}, s.plainHTTP["h1"], s.plainHTTP["h1"]},
		{"HTTP/1.1: net/http vs Weft", pw, s.plainHTTP["h1"], s.weftHTTP["h1"]},
		{"HTTP/2 TLS: net/http TLS vs Weft full stack", pw, s.plainHTTP["tls"], s.weftFull},
		{"gRPC: grpc-go vs Weft", pw, s.plainGRPC, s.weftGRPC},
	}
}

func measureOpen(ctx context.Context, o options, s *stacks, rep *report) error {
	for _, rate := range o.rates {
		for _, t := range openTraffic(s) {
			res, err := openPair(ctx, t.plain, t.weft, 1024, rate, o.rateTime)
			if err != nil {
				return err
			}
			// Failures are reported, not fatal: past what the machine can
			// serve, requests pile up and Weft's thresholds (1,024 in flight
			// by default, as Envoy's) fail the excess fast, by design.
			rep.open = append(rep.open, openRow{rate: rate, traffic: t.name, sides: t.sides, plain: res[0], weft: res[1]})
		}
	}
	return nil
}

// measureStackMemory builds a plain TLS client and server, then a Weft
// full-stack client and server, each warmed by n requests from 8 callers,
// and reports the heap and RSS each added.
func (e *env) measureStackMemory(ctx context.Context, n int, f *fixtures) ([]memoryRow, error) {
	warm := func(call caller) error {
		return forEach(n, 8, func(int) error { return call(ctx, 1024) })
	}
	m0 := measureMemory()
	addr, err := e.plainHTTPServer(&f.cert)
	if err != nil {
		return nil, err
	}
	if err := warm(httpCaller(e.plainHTTPClient("tls", f.roots), "https://"+addr)); err != nil {
		return nil, err
	}
	m1 := measureMemory()
	full, _, err := e.fullStack(ctx, f.clientSrc, f.serverSrc, &countingExporter{})
	if err != nil {
		return nil, err
	}
	if err := warm(full); err != nil {
		return nil, err
	}
	m2 := measureMemory()
	plain := memory{heap: m1.heap - m0.heap, rss: m1.rss - m0.rss}
	weft := memory{heap: m2.heap - m1.heap, rss: m2.rss - m1.rss}
	return []memoryRow{
		{"net/http TLS client and server", plain},
		{"Weft full stack client and server", weft},
		{"added by Weft", memory{heap: weft.heap - plain.heap, rss: weft.rss - plain.rss}},
	}, nil
}

// measureConnMemory weighs one idle keep-alive connection, its client
// and server ends together: conns requests held at the server until all
// have arrived open conns connections, which then stay in the client's
// pool; the live heap they add, over conns, is one connection's. Plain
// net/http over TLS against Weft's default, HTTP/1.1 over SPIFFE mTLS.
func (e *env) measureConnMemory(ctx context.Context, conns int, f *fixtures) ([]memoryRow, error) {
	weigh := func(serve func(http.Handler) (string, error), call func(addr string) caller) (memory, error) {
		var arrived atomic.Int64
		all := make(chan struct{})
		hold := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if arrived.Add(1) == int64(conns) {
				close(all)
			}
			select {
			case <-all:
			case <-time.After(requestCap):
			case <-r.Context().Done():
			}
			w.Header().Set("Content-Length", "1")
			w.Write(payload[:1])
		})
		addr, err := serve(hold)
		if err != nil {
			return memory{}, err
		}
		c := call(addr)
		// One request first: what a client and server cost before their
		// first connection is not a connection's.
		arrived.Add(-1)
		if err := c(ctx, 1); err != nil {
			return memory{}, err
		}
		m0 := measureMemory()
		if err := forEach(conns, conns, func(int) error { return c(ctx, 1) }); err != nil {
			return memory{}, err
		}
		m1 := measureMemory()
		n := int64(conns - 1) // the first connection was open already
		return memory{heap: (m1.heap - m0.heap) / n, rss: (m1.rss - m0.rss) / n}, nil
	}
	plain, err := weigh(func(h http.Handler) (string, error) { return e.httpServer(h, &f.cert) },
		func(addr string) caller { return httpCaller(e.plainHTTPClient("tls1", f.roots), "https://"+addr) })
	if err != nil {
		return nil, err
	}
	weft, err := weigh(func(h http.Handler) (string, error) {
		srv, err := e.newMesh(ctx, mesh.WithServiceName("bench-server"), mesh.WithX509Source(f.serverSrc))
		if err != nil {
			return "", err
		}
		return e.meshServer(srv, h)
	}, func(addr string) caller {
		cli, err := e.newMesh(ctx, mesh.WithServiceName("bench-client"), mesh.WithX509Source(f.clientSrc), mesh.WithEndpoints("held", addr))
		if err != nil {
			return func(context.Context, int) error { return err }
		}
		return httpCaller(cli.HTTPClient(), "http://held")
	})
	if err != nil {
		return nil, err
	}
	label := fmt.Sprintf("per idle connection (%d held), HTTP/1.1: ", conns)
	return []memoryRow{
		{label + "net/http TLS", plain},
		{label + "Weft SPIFFE mTLS", weft},
		{label + "added by Weft", memory{heap: weft.heap - plain.heap, rss: weft.rss - plain.rss}},
	}, nil
}

func (e *env) measureXDS(ctx context.Context, o options, cp *controlPlane, rep *report) error {
	e.xdsDelta = o.xdsDelta
	a, err := e.namedBackend("A")
	if err != nil {
		return err
	}
	b, err := e.namedBackend("B")
	if err != nil {
		return err
	}
	// One unmeasured run first: the first mesh of the process also pays
	// for one-time set-up (gRPC's and go-control-plane's registries, type
	// caches), which would otherwise count as the first row's heap.
	if _, err := e.scaleEndpointsRun(ctx, cp, a, b, 1); err != nil {
		return fmt.Errorf("xDS scale: %w", err)
	}
	for _, n := range o.endpoints {
		r, err := e.scaleEndpointsRun(ctx, cp, a, b, n)
		if err != nil {
			return fmt.Errorf("xDS scale: %w", err)
		}
		rep.xds = append(rep.xds, r)
	}
	if o.clusters > 0 {
		r, err := e.scaleClustersRun(ctx, cp, a, b, o.clusters)
		if err != nil {
			return fmt.Errorf("xDS scale: %w", err)
		}
		rep.xds = append(rep.xds, r)
	}
	return nil
}

// hardware describes the machine: CPU model, cores, Go version.
func hardware() string {
	model := "unknown CPU"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	return fmt.Sprintf("Hardware: %s, %d vCPUs (GOMAXPROCS %d), %s %s/%s. Client and server in one process, on loopback.",
		model, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
