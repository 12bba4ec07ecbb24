package mesh_test

// The chaos suite: each TestChaos* test injects one fault while a bounded
// load runs through the mesh, then checks the invariants that apply:
//
//   - no idempotent request fails while at least one healthy endpoint
//     exists;
//   - no non-idempotent request (POST without Idempotency-Key) is executed
//     twice, counted by the backends per request id;
//   - no request starts to an endpoint the control plane removed more than
//     one update ago (the mesh has acknowledged a later version);
//   - no plaintext leaves a strict-mTLS client.
//
// Each test logs one line,
//
//	CHAOS | fault | load | sent | failed | invariant |
//
// which is a row of the README's table:
//
//	go test -race -v -run Chaos ./mesh/ | grep CHAOS

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/resilience"
)

// requestIDHeader carries the load generator's id of a logical request, so
// backends can count how many times each one executed.
const requestIDHeader = "X-Chaos-Request-Id"

// ledger counts, across a test's backends, which backend executed which
// request id.
type ledger struct {
	mu   sync.Mutex
	runs map[string][]string // request id -> backends that executed it, in order
}

func newLedger() *ledger { return &ledger{runs: map[string][]string{}} }

func (l *ledger) record(id, backend string) {
	l.mu.Lock()
	l.runs[id] = append(l.runs[id], backend)
	l.mu.Unlock()
}

func (l *ledger) snapshot() map[string][]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string][]string, len(l.runs))
	for k, v := range l.runs {
		out[k] = slices.Clone(v)
	}
	return out
}

// chaosBackend is a real HTTP server on loopback that records every
// request id it executes. It can be killed like a crashing process.
type chaosBackend struct {
	name string
	addr string
	led  *ledger
	hits atomic.Int64
	// delay is how long the handler works on each request.
	delay atomic.Int64
	// closeEvery > 0 makes every n-th response close its connection
	// (Connection: close), which churns connections as servers that
	// cap requests per connection do.
	closeEvery int64

	// inflight counts requests inside the handler.
	inflight atomic.Int64

	srv    *http.Server
	ln     net.Listener
	served chan struct{}
	killed atomic.Bool
}

type backendOption func(*chaosBackend)

func closeEvery(n int64) backendOption { return func(b *chaosBackend) { b.closeEvery = n } }

func startChaosBackend(t *testing.T, name string, led *ledger, opts ...backendOption) *chaosBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &chaosBackend{name: name, addr: ln.Addr().String(), led: led, ln: ln, served: make(chan struct{})}
	for _, o := range opts {
		o(b)
	}
	b.srv = &http.Server{Handler: b, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(b.served)
		b.srv.Serve(ln)
	}()
	t.Cleanup(b.kill)
	return b
}

func (b *chaosBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := b.hits.Add(1)
	b.inflight.Add(1)
	defer b.inflight.Add(-1)
	if id := r.Header.Get(requestIDHeader); id != "" {
		b.led.record(id, b.name)
	}
	io.Copy(io.Discard, r.Body)
	if d := time.Duration(b.delay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	if b.closeEvery > 0 && n%b.closeEvery == 0 {
		w.Header().Set("Connection", "close")
	}
	io.WriteString(w, b.name)
}

// kill stops the backend as a crash would: the listener and every
// connection close at once, requests in flight included. Idempotent.
func (b *chaosBackend) kill() {
	if b.killed.Swap(true) {
		return
	}
	b.srv.Close()
	<-b.served
}

// load is a bounded request stream through a mesh client.
type load struct {
	c       *http.Client
	url     string
	workers int
	// max bounds the requests sent, whatever happens.
	max int64
	// postEvery makes every n-th request a POST without Idempotency-Key,
	// keyedEvery every n-th a POST with one (0: none).
	postEvery, keyedEvery int64
	// pace is each worker's pause between requests, which keeps the load
	// light on a shared 2-core machine.
	pace time.Duration
	// timeout bounds each request.
	timeout time.Duration
	// expect returns the status a request must get; nil means 200.
	expect func(path string) int
	// path returns the path of request n; nil means /items/<n>.
	path func(n int64) string
}

// loadRun is a running load and, once stopped, its outcome.
type loadRun struct {
	l          *load
	stop       chan struct{}
	wg         sync.WaitGroup
	seq        atomic.Int64
	sent       atomic.Int64
	failedIdem atomic.Int64
	failedPost atomic.Int64
	// refused counts idempotent failures where a retry was wanted but
	// the retry limits (max_retries, the retry budget) refused it.
	refused atomic.Int64

	mu      sync.Mutex
	started map[string]time.Time // request id -> when the client sent it
	errs    []string             // the first failures, for messages
}

func (l *load) describe() string {
	kinds := "GET"
	if l.postEvery > 0 {
		kinds += fmt.Sprintf(", 1/%d POST", l.postEvery)
	}
	if l.keyedEvery > 0 {
		kinds += fmt.Sprintf(", 1/%d POST with Idempotency-Key", l.keyedEvery)
	}
	return fmt.Sprintf("%d workers, %s", l.workers, kinds)
}

func (l *load) start(t *testing.T) *loadRun {
	t.Helper()
	if l.timeout == 0 {
		l.timeout = 10 * time.Second
	}
	if l.pace == 0 {
		l.pace = time.Millisecond
	}
	r := &loadRun{l: l, stop: make(chan struct{}), started: map[string]time.Time{}}
	for range l.workers {
		r.wg.Go(r.work)
	}
	t.Cleanup(r.halt)
	return r
}

func (r *loadRun) work() {
	l := r.l
	for {
		select {
		case <-r.stop:
			return
		default:
		}
		n := r.seq.Add(1)
		if n > l.max {
			return
		}
		method, kind, idempotent := "GET", "get", true
		switch {
		case l.postEvery > 0 && n%l.postEvery == 0:
			method, kind, idempotent = "POST", "post", false
		case l.keyedEvery > 0 && n%l.keyedEvery == 0:
			method, kind = "POST", "keyed"
		}
		path := "/items/" + strconv.FormatInt(n, 10)
		if l.path != nil {
			path = l.path(n)
		}
		id := kind + "-" + strconv.FormatInt(n, 10)
		ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
		var body io.Reader
		if method == "POST" {
			body = strings.NewReader("order " + id)
		}
		req, _ := http.NewRequestWithContext(ctx, method, l.url+path, body)
		req.Header.Set(requestIDHeader, id)
		if kind == "keyed" {
			req.Header.Set("Idempotency-Key", id)
		}
		want := http.StatusOK
		if l.expect != nil {
			want = l.expect(path)
		}
		r.mu.Lock()
		r.started[id] = time.Now()
		r.mu.Unlock()
		resp, err := l.c.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != want {
				err = fmt.Errorf("status %d, want %d", resp.StatusCode, want)
			}
		}
		cancel()
		r.sent.Add(1)
		if err != nil {
			if idempotent {
				r.failedIdem.Add(1)
				if errors.Is(err, resilience.ErrOverflow) || errors.Is(err, resilience.ErrBudgetExhausted) {
					r.refused.Add(1)
				}
			} else {
				r.failedPost.Add(1)
			}
			r.mu.Lock()
			if len(r.errs) < 5 || (idempotent && len(r.errs) < 10) {
				r.errs = append(r.errs, fmt.Sprintf("%s %s %s: %v", id, method, path, err))
			}
			r.mu.Unlock()
		}
		time.Sleep(l.pace)
	}
}

// waitSent waits until n more requests have been sent, so every phase of
// a fault script runs under load; it fails the test after 30 s.
func (r *loadRun) waitSent(t *testing.T, n int64) {
	t.Helper()
	target := r.sent.Load() + n
	deadline := time.Now().Add(30 * time.Second)
	for r.sent.Load() < target {
		if r.seq.Load() > r.l.max {
			return // the load's bound is reached; nothing more will come
		}
		if time.Now().After(deadline) {
			t.Fatalf("load stalled: %d requests sent, waiting for %d", r.sent.Load(), target)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// halt stops the workers and waits for them; idempotent.
func (r *loadRun) halt() {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	r.wg.Wait()
}

func (r *loadRun) failed() int64 { return r.failedIdem.Load() + r.failedPost.Load() }

func (r *loadRun) startedAt(id string) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.started[id]
	return at, ok
}

// checkNoIdempotentFailure is the first invariant.
func (r *loadRun) checkNoIdempotentFailure(t *testing.T) {
	t.Helper()
	if n := r.failedIdem.Load(); n > 0 {
		r.mu.Lock()
		defer r.mu.Unlock()
		t.Errorf("%d idempotent requests failed with a healthy endpoint left; first: %v", n, r.errs)
	}
}

// checkNoFailure: where no endpoint is harmed, nothing may fail at all.
func (r *loadRun) checkNoFailure(t *testing.T) {
	t.Helper()
	if n := r.failed(); n > 0 {
		r.mu.Lock()
		defer r.mu.Unlock()
		t.Errorf("%d requests failed; first: %v", n, r.errs)
	}
}

// checkNoDuplicatePOST is the second invariant: a POST without an
// Idempotency-Key ran at most once, on whichever backend.
func checkNoDuplicatePOST(t *testing.T, led *ledger) (posts int) {
	t.Helper()
	for id, runs := range led.snapshot() {
		if !strings.HasPrefix(id, "post-") {
			continue
		}
		posts++
		if len(runs) > 1 {
			t.Errorf("non-idempotent request %s executed %d times (on %v)", id, len(runs), runs)
		}
	}
	return posts
}

// checkNotSentAfter is the third invariant: no request started after
// `after` (when the mesh acknowledged the update following the one that
// removed the backends) executed on a removed backend.
func checkNotSentAfter(t *testing.T, r *loadRun, led *ledger, after time.Time, removed ...string) (late int) {
	t.Helper()
	for id, runs := range led.snapshot() {
		at, ok := r.startedAt(id)
		if !ok || at.Before(after) {
			continue
		}
		late++
		for _, b := range runs {
			if slices.Contains(removed, b) {
				t.Errorf("request %s started %v after the next update was acknowledged, yet reached removed endpoint %s",
					id, at.Sub(after), b)
			}
		}
	}
	return late
}

// report logs the test's row of the README table.
func report(t *testing.T, fault string, l *load, r *loadRun, invariant string) {
	t.Helper()
	failed := fmt.Sprint(r.failed())
	if r.failed() > 0 {
		failed = fmt.Sprintf("%d (%d idempotent, %d POST without key)", r.failed(), r.failedIdem.Load(), r.failedPost.Load())
		if n := r.refused.Load(); n > 0 {
			failed = fmt.Sprintf("%d (%d idempotent, all refused by the retry limits; %d POST without key)", r.failed(), n, r.failedPost.Load())
			if n != r.failedIdem.Load() {
				failed = fmt.Sprintf("%d (%d idempotent, %d of them refused by the retry limits; %d POST without key)", r.failed(), r.failedIdem.Load(), n, r.failedPost.Load())
			}
		}
	}
	verdict := "holds"
	if t.Failed() {
		verdict = "VIOLATED"
	}
	t.Logf("CHAOS | %s | %s | %d | %s | %s: %s |", fault, l.describe(), r.sent.Load(), failed, invariant, verdict)
}

// chaosRoutes is the control plane's view of "orders:8080": one route to
// cluster "orders" with Istio's default retry policy (two retries on
// connection failures, resets and gateway errors).
func chaosRoutes(endpoints ...string) []types.Resource {
	rc := xdstest.RouteConfig("orders-routes", "orders:8080", "orders")
	rc.VirtualHosts[0].Routes[0].GetRoute().RetryPolicy = &routev3.RetryPolicy{
		RetryOn:    "connect-failure,refused-stream,reset,gateway-error",
		NumRetries: wrapperspb.UInt32(2),
	}
	return []types.Resource{
		xdstest.Listener("orders:8080", "orders-routes"), rc,
		xdstest.Cluster("orders", ""), xdstest.Endpoints("orders", endpoints...),
	}
}

// waitACK waits until the mesh acknowledges version of the endpoints
// resource (an EDS request carrying it and no error) and returns when the
// control plane saw it.
func waitACK(t *testing.T, cp *xdstest.Server, version string, within time.Duration) time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	_, err := cp.WaitRequest(ctx, func(r *discoveryv3.DiscoveryRequest) bool {
		return strings.HasSuffix(r.GetTypeUrl(), "ClusterLoadAssignment") && r.GetVersionInfo() == version && r.GetErrorDetail() == nil
	})
	if err != nil {
		t.Fatalf("the mesh did not acknowledge endpoints version %s within %v: %v", version, within, err)
	}
	return time.Now()
}

// waitServedBy waits until a request through c reaches one of the named
// backends (the body is the backend's name).
func waitServedBy(t *testing.T, c *http.Client, url string, within time.Duration, names ...string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		resp, err := c.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if slices.Contains(names, string(b)) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no request reached %v within %v (last error %v)", names, within, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestChaosControlPlaneKilledAndRestarted(t *testing.T) {
	led := newLedger()
	a, b, c := startChaosBackend(t, "a", led), startChaosBackend(t, "b", led), startChaosBackend(t, "c", led)
	cp := xdstest.NewServer(t)
	cp.SetSnapshot(t, xdsNode, "1", chaosRoutes(a.addr, b.addr)...)
	m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)))
	waitServedBy(t, m.HTTPClient(), "http://orders:8080/", 10*time.Second, "a", "b")

	l := &load{c: m.HTTPClient(), url: "http://orders:8080", workers: 4, max: 20000, postEvery: 10}
	run := l.start(t)
	run.waitSent(t, 200)
	cp.Stop()
	// While the control plane is away the mesh serves its last good
	// config, and the next version waits in the control plane's cache.
	cp.SetSnapshot(t, xdsNode, "2", chaosRoutes(b.addr, c.addr)...)
	run.waitSent(t, 500)
	t0 := time.Now()
	cp.Restart(t)
	waitACK(t, cp, "2", 30*time.Second)
	t.Logf("restart to ACK: %v", time.Since(t0))
	cp.SetSnapshot(t, xdsNode, "3", chaosRoutes(c.addr, b.addr)...)
	acked := waitACK(t, cp, "3", 10*time.Second)
	run.waitSent(t, 300)
	run.halt()

	run.checkNoFailure(t)
	checkNoDuplicatePOST(t, led)
	if late := checkNotSentAfter(t, run, led, acked, "a"); late == 0 {
		t.Error("no request started after the removal was acknowledged; the check proves nothing")
	}
	if c.hits.Load() == 0 {
		t.Error("the endpoint added while the control plane was away never served")
	}
	report(t, "control plane killed, config changed while away, restarted", l, run,
		"no request failed; no POST executed twice; removed endpoint unused after the next ACK")
}

func TestChaosEveryXDSServerDownThenBack(t *testing.T) {
	led := newLedger()
	a, b := startChaosBackend(t, "a", led), startChaosBackend(t, "b", led)
	primary, fallback := xdstest.NewServer(t), xdstest.NewServer(t)
	for _, cp := range []*xdstest.Server{primary, fallback} {
		cp.SetSnapshot(t, xdsNode, "1", chaosRoutes(a.addr)...)
	}
	m := newMesh(t, mesh.WithBootstrap(primary.Bootstrap(xdsNode, fallback.Addr)))
	waitServedBy(t, m.HTTPClient(), "http://orders:8080/", 10*time.Second, "a")

	l := &load{c: m.HTTPClient(), url: "http://orders:8080", workers: 4, max: 20000, postEvery: 10}
	run := l.start(t)
	run.waitSent(t, 200)
	primary.Stop()
	fallback.Stop()
	run.waitSent(t, 800) // a while with no control plane at all
	for _, cp := range []*xdstest.Server{primary, fallback} {
		cp.SetSnapshot(t, xdsNode, "2", chaosRoutes(b.addr)...)
	}
	fallback.Restart(t)
	primary.Restart(t)
	waitServedBy(t, m.HTTPClient(), "http://orders:8080/", 30*time.Second, "b")
	run.waitSent(t, 200)
	run.halt()

	run.checkNoFailure(t)
	checkNoDuplicatePOST(t, led)
	report(t, "every xDS server in the bootstrap (primary and fallback) down, then back", l, run,
		"no request failed; last good config served; new config applied once back")
}

// TestChaosConfigBurst pushes 1,000 versions, each a different endpoint
// set drawn from three healthy backends, as fast as the control plane
// takes them, while requests flow.
func TestChaosConfigBurst(t *testing.T) {
	led := newLedger()
	bs := []*chaosBackend{startChaosBackend(t, "a", led), startChaosBackend(t, "b", led), startChaosBackend(t, "c", led)}
	sets := [][]string{{bs[0].addr, bs[1].addr}, {bs[1].addr, bs[2].addr}, {bs[0].addr, bs[2].addr}, {bs[2].addr, bs[1].addr, bs[0].addr}, {bs[1].addr}}
	cp := xdstest.NewServer(t)
	cp.SetSnapshot(t, xdsNode, "1", chaosRoutes(sets[0]...)...)
	m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)))
	waitServedBy(t, m.HTTPClient(), "http://orders:8080/", 10*time.Second, "a", "b")

	l := &load{c: m.HTTPClient(), url: "http://orders:8080", workers: 4, max: 20000, postEvery: 10}
	run := l.start(t)
	run.waitSent(t, 100)
	const versions = 1000
	start := time.Now()
	// Paced at one version every 3 ms (about 3 s in all) when the
	// control plane keeps up; each waits for the previous one otherwise.
	for v := 2; v < versions-1; v++ {
		cp.SetSnapshot(t, xdsNode, strconv.Itoa(v), chaosRoutes(sets[v%len(sets)]...)...)
		if wait := time.Until(start.Add(time.Duration(v) * 3 * time.Millisecond)); wait > 0 {
			time.Sleep(wait)
		}
	}
	// The last two versions leave "a" out: once the mesh acknowledges
	// the last, no new request may reach it.
	cp.SetSnapshot(t, xdsNode, strconv.Itoa(versions-1), chaosRoutes(bs[1].addr)...)
	cp.SetSnapshot(t, xdsNode, strconv.Itoa(versions), chaosRoutes(bs[2].addr, bs[1].addr)...)
	pushed := time.Since(start)
	acked := waitACK(t, cp, strconv.Itoa(versions), 30*time.Second)
	applied := map[string]bool{}
	for _, r := range cp.Requests() {
		if strings.HasSuffix(r.GetTypeUrl(), "ClusterLoadAssignment") && r.GetErrorDetail() == nil && r.GetVersionInfo() != "" {
			applied[r.GetVersionInfo()] = true
		}
	}
	// The snapshot cache answers each request with the latest version,
	// so a client that is busy applying one skips those pushed meanwhile.
	t.Logf("pushed %d versions in %v; the last acknowledged %v after the first; %d endpoint versions received and acknowledged",
		versions-1, pushed.Round(time.Millisecond), acked.Sub(start).Round(time.Millisecond), len(applied))
	run.waitSent(t, 300)
	run.halt()

	run.checkNoFailure(t)
	checkNoDuplicatePOST(t, led)
	if late := checkNotSentAfter(t, run, led, acked, "a"); late == 0 {
		t.Error("no request started after the last version was acknowledged; the check proves nothing")
	}
	report(t, fmt.Sprintf("burst of %d config versions (pushed in %.1f s)", versions-1, pushed.Seconds()), l, run,
		"no request failed; no POST executed twice; endpoint removed in v999 unused after the v1000 ACK")
}

// hugeEndpoints is a load assignment of n endpoints: live at priority 0,
// and n-len(live) addresses nobody listens on at priority 1, which only
// failover would use. All are loopback addresses, distinct, never dialed
// while the live ones are healthy.
func hugeEndpoints(n int, live ...string) *endpointv3.ClusterLoadAssignment {
	la := xdstest.Endpoints("orders", live...)
	taken := map[string]bool{}
	for _, a := range live {
		taken[a] = true
	}
	var idle []string
	for _, host := range []string{"127.0.0.1", "::1"} {
		for port := 1; port <= 65535 && len(idle) < n-len(live); port++ {
			a := net.JoinHostPort(host, strconv.Itoa(port))
			if !taken[a] {
				idle = append(idle, a)
			}
		}
	}
	failover := xdstest.Endpoints("orders", idle...).Endpoints[0]
	failover.Locality.Zone, failover.Priority = "failover", 1
	la.Endpoints = append(la.Endpoints, failover)
	return la
}

func heapAfterGC() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func TestChaosHundredThousandEndpoints(t *testing.T) {
	const n = 100_000
	led := newLedger()
	a, b := startChaosBackend(t, "a", led), startChaosBackend(t, "b", led)
	c, d := startChaosBackend(t, "c", led), startChaosBackend(t, "d", led)
	cp := xdstest.NewServer(t)
	cp.SetSnapshot(t, xdsNode, "1", chaosRoutes(a.addr, b.addr)...)
	m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)))
	waitServedBy(t, m.HTTPClient(), "http://orders:8080/", 10*time.Second, "a", "b")
	heapBefore := heapAfterGC()

	l := &load{c: m.HTTPClient(), url: "http://orders:8080", workers: 4, max: 20000, postEvery: 10}
	run := l.start(t)
	run.waitSent(t, 100)
	huge := chaosRoutes()
	huge[3] = hugeEndpoints(n, c.addr, d.addr)
	start := time.Now()
	cp.SetSnapshot(t, xdsNode, "2", huge...)
	waitACK(t, cp, "2", 120*time.Second)
	applied := time.Since(start)
	waitServedBy(t, m.HTTPClient(), "http://orders:8080/", 10*time.Second, "c", "d")
	var held int
	for _, cs := range m.Clusters() {
		if cs.Service == "orders" {
			held = len(cs.Endpoints)
		}
	}
	heapHuge := heapAfterGC()
	run.waitSent(t, 200)
	// Version 3 shrinks the cluster back to c and d: the update after the
	// one that removed a and b, and the test that the memory is released.
	cp.SetSnapshot(t, xdsNode, "3", chaosRoutes(d.addr, c.addr)...)
	acked := waitACK(t, cp, "3", 60*time.Second)
	run.waitSent(t, 200)
	run.halt()
	heapAfter := heapAfterGC()

	if held != n {
		t.Errorf("the mesh held %d endpoints for orders after the update, want %d", held, n)
	}
	mib := func(b uint64) float64 { return float64(b) / (1 << 20) }
	grown := int64(heapHuge) - int64(heapBefore)
	// The heap is the whole process: the in-process control plane holds
	// its own copy of the snapshot too.
	t.Logf("100,000 endpoints: acknowledged %v after the push; process heap after GC %.1f MiB before, %.1f MiB holding them, %.1f MiB after shrinking to 2",
		applied.Round(time.Millisecond), mib(heapBefore), mib(heapHuge), mib(heapAfter))
	// Bounds, not benchmarks: over 1 KiB an endpoint would mean copies
	// per version or per request; not giving most of it back after the
	// shrink would mean something still holds the old assignment.
	if limit := int64(n) << 10; grown > limit {
		t.Errorf("heap grew by %d MiB holding %d endpoints, want under %d MiB", grown>>20, n, limit>>20)
	}
	if kept := int64(heapAfter) - int64(heapBefore); kept > grown/2 && kept > 8<<20 {
		t.Errorf("after shrinking to 2 endpoints the heap is still %d MiB above where it started (it grew %d MiB)", kept>>20, grown>>20)
	}
	run.checkNoFailure(t)
	checkNoDuplicatePOST(t, led)
	if late := checkNotSentAfter(t, run, led, acked, "a", "b"); late == 0 {
		t.Error("no request started after the second update was acknowledged; the check proves nothing")
	}
	if c.hits.Load()+d.hits.Load() == 0 {
		t.Error("the endpoints of the 100,000-endpoint update never served")
	}
	report(t, fmt.Sprintf("one EDS update of 100,000 endpoints, then back to 2 (heap +%d MiB while held)", grown>>20), l, run,
		"no request failed; all 100,000 endpoints held; replaced endpoints unused after the next ACK; memory given back")
}
