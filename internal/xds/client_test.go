package xds

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/xds/xdstest"
)

const node = "test-node"

type event struct {
	kind string // "update", "error", "dne"
	res  Resource
	err  error
	at   time.Time
}

// recorder is a Watcher that queues what it is told.
type recorder struct{ ch chan event }

func newRecorder() *recorder { return &recorder{ch: make(chan event, 1000)} }

func (r *recorder) OnUpdate(res Resource) { r.ch <- event{kind: "update", res: res, at: time.Now()} }
func (r *recorder) OnError(err error)     { r.ch <- event{kind: "error", err: err, at: time.Now()} }
func (r *recorder) OnDoesNotExist()       { r.ch <- event{kind: "dne", at: time.Now()} }

// next returns the next event of kind, skipping others, or fails.
func (r *recorder) next(t *testing.T, kind string) event {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case e := <-r.ch:
			if e.kind == kind {
				return e
			}
		case <-deadline:
			t.Fatalf("no %s event within 10s", kind)
		}
	}
}

// none fails if an event of kind arrives within d.
func (r *recorder) none(t *testing.T, kind string, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case e := <-r.ch:
			if e.kind == kind {
				t.Fatalf("unexpected %s event: %+v", kind, e)
			}
		case <-deadline:
			return
		}
	}
}

func fastBackoff() Option {
	return WithBackoff(func() backoff.BackOff { return backoff.NewConstantBackOff(50 * time.Millisecond) })
}

// newOfflineClient returns a client whose only server no longer listens,
// for tests that inject responses with handleResponse or
// handleDeltaResponse.
func newOfflineClient(t *testing.T, opts ...Option) *Client {
	t.Helper()
	dead := xdstest.NewServer(t)
	addr := dead.Addr
	dead.Stop()
	return newTestClient(t, xdstest.BootstrapJSON(node, addr), append([]Option{fastBackoff()}, opts...)...)
}

func newTestClient(t *testing.T, bootstrap []byte, opts ...Option) *Client {
	t.Helper()
	b, err := ParseBootstrap(bootstrap)
	if err != nil {
		t.Fatalf("ParseBootstrap() error = %v", err)
	}
	c, err := New(b, opts...)
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestClientLDSToEDS(t *testing.T) {
	srv := xdstest.NewServer(t)
	srv.SetSnapshot(t, node, "1",
		xdstest.Listener("orders:8080", "orders-rc"),
		xdstest.RouteConfig("orders-rc", "orders:8080", "orders"),
		xdstest.Cluster("orders", "orders-eds"),
		xdstest.Endpoints("orders-eds", "127.0.0.1:9001", "127.0.0.1:9002"))
	c := newTestClient(t, srv.Bootstrap(node), fastBackoff())

	lw, rw, cw, ew := newRecorder(), newRecorder(), newRecorder(), newRecorder()
	defer c.Watch(ListenerType, "orders:8080", lw)()
	l := lw.next(t, "update").res.(*Listener)
	defer c.Watch(RouteConfigType, l.RouteConfigName, rw)()
	rc := rw.next(t, "update").res.(*RouteConfig)
	route, ok := rc.Match("orders:8080", &Request{Path: "/items"})
	if !ok {
		t.Fatalf("route config %q has no route for orders:8080/items", rc.Name)
	}
	defer c.Watch(ClusterType, route.Action.Cluster, cw)()
	cl := cw.next(t, "update").res.(*Cluster)
	if cl.Kind != ClusterEDS || cl.LBPolicy != "round_robin" {
		t.Errorf("cluster: got kind %v lb %q, want EDS round_robin", cl.Kind, cl.LBPolicy)
	}
	defer c.Watch(EndpointsType, cl.EDSServiceName, ew)()
	eps := ew.next(t, "update").res.(*Endpoints)
	var addrs []string
	for _, e := range eps.All {
		addrs = append(addrs, e.Addr)
	}
	if want := []string{"127.0.0.1:9001", "127.0.0.1:9002"}; !slices.Equal(addrs, want) {
		t.Errorf("endpoints: got %v, want %v", addrs, want)
	}
	// Every type is ACKed at version 1.
	for _, typ := range []ResourceType{ListenerType, RouteConfigType, ClusterType, EndpointsType} {
		if _, err := srv.WaitRequest(ctxT(t), func(r *discoveryv3.DiscoveryRequest) bool {
			return r.GetTypeUrl() == typ.TypeURL() && r.GetVersionInfo() == "1" && r.GetErrorDetail() == nil
		}); err != nil {
			t.Errorf("%v not ACKed at version 1: %v", typ, err)
		}
	}

	// Updates propagate; measure SetSnapshot -> watcher callback.
	const rounds = 20
	var total, worst time.Duration
	for i := 0; i < rounds; i++ {
		addr := fmt.Sprintf("127.0.0.1:%d", 9100+i)
		start := time.Now()
		srv.SetSnapshot(t, node, fmt.Sprint(i+2),
			xdstest.Listener("orders:8080", "orders-rc"),
			xdstest.RouteConfig("orders-rc", "orders:8080", "orders"),
			xdstest.Cluster("orders", "orders-eds"),
			xdstest.Endpoints("orders-eds", addr))
		e := ew.next(t, "update")
		if got := e.res.(*Endpoints).All[0].Addr; got != addr {
			t.Fatalf("round %d: got endpoint %s, want %s", i, got, addr)
		}
		d := e.at.Sub(start)
		total += d
		worst = max(worst, d)
	}
	t.Logf("SetSnapshot -> EDS watcher callback over loopback: mean %v, worst %v (%d updates)", total/rounds, worst, rounds)

	// Unchanged LDS/RDS/CDS resources in those snapshots caused no callbacks.
	for name, r := range map[string]*recorder{"LDS": lw, "RDS": rw, "CDS": cw} {
		if n := len(r.ch); n != 0 {
			t.Errorf("%s watcher got %d callbacks for unchanged resources, want 0", name, n)
		}
	}

	dump := c.Dump()
	if len(dump) != 4 {
		t.Fatalf("Dump: got %d entries, want 4", len(dump))
	}
	for _, d := range dump {
		if d.State != StateACKed || d.Resource == nil {
			t.Errorf("Dump %v %q: got state %s resource %v, want ACKED with resource", d.Type, d.Name, d.State, d.Resource)
		}
	}
}

func badCluster(name string) *clusterv3.Cluster {
	c := xdstest.Cluster(name, "")
	c.LbPolicy = clusterv3.Cluster_RING_HASH
	c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
		MinimumRingSize: wrapperspb.UInt64(100), MaximumRingSize: wrapperspb.UInt64(10)}}
	return c
}

func TestClientNACKKeepsLastGood(t *testing.T) {
	srv := xdstest.NewServer(t)
	srv.SetSnapshot(t, node, "1", xdstest.Cluster("a", "a-v1"), xdstest.Cluster("b", "b-v1"))
	c := newTestClient(t, srv.Bootstrap(node), fastBackoff())
	aw, bw := newRecorder(), newRecorder()
	defer c.Watch(ClusterType, "a", aw)()
	defer c.Watch(ClusterType, "b", bw)()
	aw.next(t, "update")
	bw.next(t, "update")

	// Version 2: a is invalid, b changed and valid.
	srv.SetSnapshot(t, node, "2", badCluster("a"), xdstest.Cluster("b", "b-v2"))
	nack, err := srv.WaitRequest(ctxT(t), func(r *discoveryv3.DiscoveryRequest) bool {
		return r.GetTypeUrl() == ClusterTypeURL && r.GetErrorDetail() != nil
	})
	if err != nil {
		t.Fatalf("no NACK: %v", err)
	}
	msg := nack.GetErrorDetail().GetMessage()
	for _, want := range []string{`"a"`, "ring_hash_lb_config.minimum_ring_size"} {
		if !strings.Contains(msg, want) {
			t.Errorf("NACK error_detail %q does not contain %s", msg, want)
		}
	}
	if nack.GetVersionInfo() != "1" {
		t.Errorf("NACK version_info: got %q, want the last good 1", nack.GetVersionInfo())
	}
	if e := aw.next(t, "error"); !strings.Contains(e.err.Error(), "minimum_ring_size") {
		t.Errorf("a's OnError: got %v, want the validation error", e.err)
	}
	if got := bw.next(t, "update").res.(*Cluster).EDSServiceName; got != "b-v2" {
		t.Errorf("b in the NACKed response: got %q, want b-v2 applied", got)
	}
	for _, d := range c.Dump() {
		if d.Name == "a" {
			if d.State != StateNACKed || d.Resource.(*Cluster).EDSServiceName != "a-v1" || d.Version != "1" {
				t.Errorf("Dump a: got %s %v at %q, want NACKED still serving a-v1 at 1", d.State, d.Resource, d.Version)
			}
		}
	}

	// go-control-plane answers every NACK with the same version at once;
	// the client must pace its re-NACKs instead of spinning.
	before := countNACKs(srv)
	time.Sleep(time.Second)
	n := countNACKs(srv) - before
	if n > 6 {
		t.Errorf("%d NACKs in one second for a resent version, want at most 6", n)
	}
	t.Logf("NACKs of a version the server keeps resending, in 1 s: %d", n)

	srv.SetSnapshot(t, node, "3", xdstest.Cluster("a", "a-v3"), xdstest.Cluster("b", "b-v2"))
	if got := aw.next(t, "update").res.(*Cluster).EDSServiceName; got != "a-v3" {
		t.Errorf("a after the fix: got %q, want a-v3", got)
	}
}

func countNACKs(srv *xdstest.Server) int {
	n := 0
	for _, r := range srv.Requests() {
		if r.GetErrorDetail() != nil {
			n++
		}
	}
	return n
}

func TestClientDeletion(t *testing.T) {
	for _, ignore := range []bool{false, true} {
		t.Run(fmt.Sprint("ignore_resource_deletion=", ignore), func(t *testing.T) {
			srv := xdstest.NewServer(t)
			srv.SetSnapshot(t, node, "1", xdstest.Listener("l1", "rc"), xdstest.Listener("l2", "rc"))
			bs := srv.Bootstrap(node)
			if ignore {
				bs = []byte(strings.Replace(string(bs), `["xds_v3"]`, `["xds_v3","ignore_resource_deletion"]`, 1))
			}
			c := newTestClient(t, bs, fastBackoff())
			w := newRecorder()
			defer c.Watch(ListenerType, "l1", w)()
			defer c.Watch(ListenerType, "l2", newRecorder())()
			w.next(t, "update")
			srv.SetSnapshot(t, node, "2", xdstest.Listener("l2", "rc"))
			if _, err := srv.WaitRequest(ctxT(t), func(r *discoveryv3.DiscoveryRequest) bool { return r.GetVersionInfo() == "2" }); err != nil {
				t.Fatal(err)
			}
			if ignore {
				w.none(t, "dne", 200*time.Millisecond)
			} else {
				w.next(t, "dne")
			}
		})
	}
}

func TestClientServerRestart(t *testing.T) {
	srv := xdstest.NewServer(t)
	srv.SetSnapshot(t, node, "1", xdstest.Cluster("c", "v1"))
	c := newTestClient(t, srv.Bootstrap(node), fastBackoff())
	w := newRecorder()
	defer c.Watch(ClusterType, "c", w)()
	w.next(t, "update")

	srv.Stop()
	// A57: the cached resource keeps serving; no error or deletion reaches
	// a watcher that has a resource.
	w.none(t, "dne", 300*time.Millisecond)
	if len(w.ch) != 0 {
		t.Errorf("watcher got %d callbacks while the server was away, want 0", len(w.ch))
	}
	if d := c.Dump()[0]; d.State != StateACKed || d.Resource.(*Cluster).EDSServiceName != "v1" {
		t.Errorf("while the server is away: got %s %v, want ACKED v1", d.State, d.Resource)
	}

	srv.SetSnapshot(t, node, "2", xdstest.Cluster("c", "v2"))
	srv.Restart(t)
	if got := w.next(t, "update").res.(*Cluster).EDSServiceName; got != "v2" {
		t.Errorf("after restart: got %q, want v2", got)
	}
	// The new stream re-sent the subscription with the last version.
	if _, err := srv.WaitRequest(ctxT(t), func(r *discoveryv3.DiscoveryRequest) bool {
		return r.GetVersionInfo() == "1" && r.GetResponseNonce() == "" && slices.Equal(r.GetResourceNames(), []string{"c"})
	}); err != nil {
		t.Errorf("no resubscription carrying version 1: %v", err)
	}
}

func TestClientFallback(t *testing.T) {
	srv := xdstest.NewServer(t)
	srv.SetSnapshot(t, node, "1", xdstest.Cluster("c", "v1"))
	// The primary is a port nothing listens on.
	dead := xdstest.NewServer(t)
	deadAddr := dead.Addr
	dead.Stop()
	c := newTestClient(t, xdstest.BootstrapJSON(node, deadAddr, srv.Addr), fastBackoff(),
		WithDialOptions(grpc.WithConnectParams(grpc.ConnectParams{Backoff: grpcbackoff.Config{
			BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 100 * time.Millisecond,
		}, MinConnectTimeout: time.Second})))
	w := newRecorder()
	defer c.Watch(ClusterType, "c", w)()
	if got := w.next(t, "update").res.(*Cluster).EDSServiceName; got != "v1" {
		t.Errorf("from the fallback server: got %q, want v1", got)
	}
	// The primary comes back with its own configuration: the client
	// returns to it.
	dead.SetSnapshot(t, node, "p1", xdstest.Cluster("c", "from-primary"))
	dead.Restart(t)
	if got := w.next(t, "update").res.(*Cluster).EDSServiceName; got != "from-primary" {
		t.Errorf("after the primary returned: got %q, want from-primary", got)
	}
}

func TestClientDoesNotExistTimer(t *testing.T) {
	srv := xdstest.NewServer(t)
	srv.SetSnapshot(t, node, "1", xdstest.Listener("l", "rc"))
	srv.Stop()
	clk := newFakeClock()
	c := newTestClient(t, srv.Bootstrap(node), withClock(clk), fastBackoff())
	rw, ew := newRecorder(), newRecorder()
	defer c.Watch(RouteConfigType, "missing-rc", rw)()
	defer c.Watch(EndpointsType, "missing-eds", ew)()

	// No request has reached a server: time passing means nothing.
	rw.next(t, "error") // the failed connection attempt
	clk.Advance(time.Minute)
	rw.none(t, "dne", 100*time.Millisecond)
	ew.none(t, "dne", 0)

	srv.Restart(t)
	// Run the reconnect backoff out, in steps too short to matter to a
	// 15 s resource timer.
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				clk.Advance(50 * time.Millisecond)
			}
		}
	}()
	for _, name := range []string{"missing-rc", "missing-eds"} {
		if _, err := srv.WaitRequest(ctxT(t), func(r *discoveryv3.DiscoveryRequest) bool {
			return slices.Contains(r.GetResourceNames(), name)
		}); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	<-stopped
	clk.waitTimer(t, DefaultResourceTimeout)
	rw.none(t, "dne", 50*time.Millisecond)
	clk.Advance(DefaultResourceTimeout)
	rw.next(t, "dne")
	ew.next(t, "dne")
	for _, d := range c.Dump() {
		if d.State != StateDoesNotExist {
			t.Errorf("Dump %v %q: got %s, want DOES_NOT_EXIST", d.Type, d.Name, d.State)
		}
	}
}

// TestClientAcceptsLargeResponses: a response over gRPC's default limit
// of 4 MiB, as a large mesh's state-of-the-world EDS or CDS can be, is
// accepted by default.
func TestClientAcceptsLargeResponses(t *testing.T) {
	srv := xdstest.NewServer(t)
	addrs := make([]string, 0, 5000)
	for i := range cap(addrs) {
		addrs = append(addrs, fmt.Sprintf("10.0.%d.%d:8080", i>>8, i&255))
	}
	cla := xdstest.Endpoints("big", addrs...)
	// Long hostnames make the message large with few endpoints to
	// translate.
	long := strings.Repeat("h", 1000)
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			e.GetEndpoint().Hostname = long
		}
	}
	if n := proto.Size(cla); n <= 4<<20 {
		t.Fatalf("the assignment is %d bytes; the test needs more than 4 MiB", n)
	}
	srv.SetSnapshot(t, node, "1", cla)
	c := newTestClient(t, srv.Bootstrap(node), fastBackoff())
	w := newRecorder()
	defer c.Watch(EndpointsType, "big", w)()
	e := w.next(t, "update")
	if got := len(e.res.(*Endpoints).All); got != len(addrs) {
		t.Errorf("got %d endpoints, want %d", got, len(addrs))
	}
}

func TestClientMaxRecvMsgSize(t *testing.T) {
	srv := xdstest.NewServer(t)
	var addrs []string
	for i := 0; i < 50; i++ {
		addrs = append(addrs, fmt.Sprintf("10.0.0.%d:80", i))
	}
	srv.SetSnapshot(t, node, "1", xdstest.Endpoints("big", addrs...))
	c := newTestClient(t, srv.Bootstrap(node), fastBackoff(), WithMaxRecvMsgSize(512))
	w := newRecorder()
	defer c.Watch(EndpointsType, "big", w)()
	e := w.next(t, "error")
	if !strings.Contains(e.err.Error(), "ResourceExhausted") && !strings.Contains(e.err.Error(), "larger than max") {
		t.Errorf("got error %v, want a message-size error", e.err)
	}
	// The stream is retried with backoff, not abandoned.
	w.next(t, "error")
}

func TestClientDuplicateResourceNACKsResponse(t *testing.T) {
	// Nothing listens on the server: the response is injected directly.
	c := newOfflineClient(t)
	w := newRecorder()
	defer c.Watch(ClusterType, "c", w)()
	resp := &discoveryv3.DiscoveryResponse{VersionInfo: "1", TypeUrl: ClusterTypeURL, Nonce: "n1"}
	for _, v := range []string{"v1", "v2"} {
		resp.Resources = append(resp.Resources, mustAny(t, xdstest.Cluster("c", v)))
	}
	c.mu.Lock()
	gen := c.streamGen
	c.mu.Unlock()
	c.handleResponse(resp, gen)
	c.mu.Lock()
	detail, version := c.nackErr[ClusterType], c.versions[ClusterType]
	c.mu.Unlock()
	if !strings.Contains(detail, `"c" appears more than once`) || version != "" {
		t.Errorf("got NACK %q version %q, want a duplicate-name NACK and no accepted version", detail, version)
	}
	w.none(t, "update", 100*time.Millisecond)
}

func TestClientCloseIdempotentAndCancelStops(t *testing.T) {
	srv := xdstest.NewServer(t)
	srv.SetSnapshot(t, node, "1", xdstest.Cluster("c", "v1"))
	c := newTestClient(t, srv.Bootstrap(node), fastBackoff())
	w := newRecorder()
	cancel := c.Watch(ClusterType, "c", w)
	w.next(t, "update")
	cancel()
	cancel()
	srv.SetSnapshot(t, node, "2", xdstest.Cluster("c", "v2"))
	w.none(t, "update", 200*time.Millisecond)
	// The unsubscription reaches the server with the next subscription.
	defer c.Watch(ClusterType, "other", newRecorder())()
	if _, err := srv.WaitRequest(ctxT(t), func(r *discoveryv3.DiscoveryRequest) bool {
		return r.GetTypeUrl() == ClusterTypeURL && slices.Equal(r.GetResourceNames(), []string{"other"})
	}); err != nil {
		t.Errorf("no request without c: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close() = %v", err)
	}
	c.Watch(ClusterType, "c", w)() // after Close: a no-op
}

// chainWatcher watches the route configuration its listener names from
// inside its own callback.
type chainWatcher struct {
	c    *Client
	next Watcher
	stop chan func()
}

func (w *chainWatcher) OnUpdate(r Resource) {
	w.stop <- w.c.Watch(RouteConfigType, r.(*Listener).RouteConfigName, w.next)
}
func (*chainWatcher) OnError(error)   {}
func (*chainWatcher) OnDoesNotExist() {}

func TestClientWatchFromCallback(t *testing.T) {
	srv := xdstest.NewServer(t)
	srv.SetSnapshot(t, node, "1", xdstest.Listener("l", "rc"), xdstest.RouteConfig("rc", "*", "c"))
	c := newTestClient(t, srv.Bootstrap(node), fastBackoff())
	rw := newRecorder()
	stops := make(chan func(), 10)
	defer c.Watch(ListenerType, "l", &chainWatcher{c: c, next: rw, stop: stops})()
	if got := rw.next(t, "update").res.ResourceName(); got != "rc" {
		t.Errorf("got %q, want rc", got)
	}
	(<-stops)()
}

// countingBackoff counts Reset calls of a short constant backoff.
type countingBackoff struct {
	backoff.BackOff
	resets *atomicInt
}

type atomicInt struct {
	mu sync.Mutex
	n  int
}

func (a *atomicInt) add() { a.mu.Lock(); a.n++; a.mu.Unlock() }
func (a *atomicInt) get() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n
}

func (b countingBackoff) Reset() { b.resets.add(); b.BackOff.Reset() }

func TestClientBackoffResetsAfterResponse(t *testing.T) {
	srv := xdstest.NewServer(t)
	srv.SetSnapshot(t, node, "1", xdstest.Cluster("c", "v1"))
	resets := &atomicInt{}
	c := newTestClient(t, srv.Bootstrap(node), WithBackoff(func() backoff.BackOff {
		return countingBackoff{BackOff: backoff.NewConstantBackOff(20 * time.Millisecond), resets: resets}
	}))
	w := newRecorder()
	defer c.Watch(ClusterType, "c", w)()
	w.next(t, "update")
	srv.Stop()
	deadline := time.Now().Add(5 * time.Second)
	for resets.get() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if resets.get() != 1 {
		t.Fatalf("backoff reset %d times after a stream that received a response, want 1", resets.get())
	}
	// Failed attempts without a response do not reset it.
	time.Sleep(200 * time.Millisecond)
	if got := resets.get(); got != 1 {
		t.Errorf("backoff reset %d times, want still 1 while the server is down", got)
	}
}

func TestClientResentResponseServesNewWatcher(t *testing.T) {
	// A server may send resources nobody asked for. When the same response
	// comes again after a new watch, the new watcher must get its resource.
	c := newOfflineClient(t)
	aw, bw := newRecorder(), newRecorder()
	defer c.Watch(ClusterType, "a", aw)()
	resp := &discoveryv3.DiscoveryResponse{VersionInfo: "1", TypeUrl: ClusterTypeURL, Nonce: "n1", Resources: []*anypb.Any{
		mustAny(t, xdstest.Cluster("a", "")), mustAny(t, xdstest.Cluster("b", "")),
	}}
	c.handleResponse(resp, 0)
	aw.next(t, "update")
	defer c.Watch(ClusterType, "b", bw)()
	c.handleResponse(resp, 0)
	if got := bw.next(t, "update").res.ResourceName(); got != "b" {
		t.Errorf("new watcher got %q, want b", got)
	}
	aw.none(t, "update", 50*time.Millisecond)
}

// overlapWatcher fails the test if two callbacks of a client ever run at
// the same time.
type overlapWatcher struct {
	t      *testing.T
	active *atomic.Int32
	calls  *atomic.Int32
}

func (w overlapWatcher) enter() {
	if w.active.Add(1) != 1 {
		w.t.Error("two watcher callbacks ran concurrently")
	}
	time.Sleep(100 * time.Microsecond) // widen the window a race would need
	w.active.Add(-1)
	w.calls.Add(1)
}
func (w overlapWatcher) OnUpdate(Resource) { w.enter() }
func (w overlapWatcher) OnError(error)     { w.enter() }
func (w overlapWatcher) OnDoesNotExist()   { w.enter() }

func TestClientCallbacksAreSerialized(t *testing.T) {
	c := newOfflineClient(t)
	var active, calls atomic.Int32
	const n = 20
	for i := 0; i < n; i++ {
		defer c.Watch(ClusterType, fmt.Sprint("c", i), overlapWatcher{t, &active, &calls})()
	}
	for v := 0; v < 5; v++ {
		resp := &discoveryv3.DiscoveryResponse{VersionInfo: fmt.Sprint(v), TypeUrl: ClusterTypeURL}
		for i := 0; i < n; i++ {
			resp.Resources = append(resp.Resources, mustAny(t, xdstest.Cluster(fmt.Sprint("c", i), fmt.Sprint("v", v))))
		}
		c.handleResponse(resp, 0)
	}
	deadline := time.Now().Add(10 * time.Second)
	for calls.Load() < 5*n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := calls.Load(); got < 5*n {
		t.Errorf("got %d updates, want %d", got, 5*n)
	}
}
