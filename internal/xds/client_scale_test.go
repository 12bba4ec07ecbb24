package xds

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// chanWatcher forwards the first update, does-not-exist or error of one
// resource and ignores the rest.
type chanWatcher struct {
	once sync.Once
	ch   chan Resource // nil for does-not-exist or an error
}

func newChanWatcher() *chanWatcher { return &chanWatcher{ch: make(chan Resource, 1)} }

func (w *chanWatcher) OnUpdate(r Resource) { w.once.Do(func() { w.ch <- r }) }
func (w *chanWatcher) OnError(error)       { w.once.Do(func() { w.ch <- nil }) }
func (w *chanWatcher) OnDoesNotExist()     { w.once.Do(func() { w.ch <- nil }) }

// TestClientConcurrentSubscriptionsDoNotStall walks the LDS -> RDS -> CDS
// -> EDS chain of many services from several goroutines at once, as the
// HTTP path does when requests to many services start together, against
// go-control-plane. Every resource exists, so each watch must see it: a
// listener wrongly found missing (subscribed while a response crossed
// it) fails the walk, and a subscription the server never answered
// would wait for the does-not-exist timer, far beyond the bound.
func TestClientConcurrentSubscriptionsDoNotStall(t *testing.T) {
	const (
		services    = 150
		parallel    = 16
		resTimeout  = 2 * time.Minute  // no timer may decide the outcome
		allowedTime = 45 * time.Second // a bound on stalls, generous for -race
	)
	srv := xdstest.NewServer(t)
	var res []types.Resource
	for i := range services {
		name := fmt.Sprint("svc", i)
		res = append(res,
			xdstest.Listener(name+":8080", name+"-rc"),
			xdstest.RouteConfig(name+"-rc", name+":8080", name),
			xdstest.Cluster(name, name+"-eds"),
			xdstest.Endpoints(name+"-eds", "127.0.0.1:9001"))
	}
	srv.SetSnapshot(t, node, "1", res...)
	c := newTestClient(t, srv.Bootstrap(node), fastBackoff(), WithResourceTimeout(resTimeout))

	ctx, cancel := context.WithTimeout(context.Background(), allowedTime)
	defer cancel()
	// await watches typ/name and returns its first resource, or nil.
	var cancels sync.WaitGroup
	cancelFuncs := make(chan func(), 4*services)
	await := func(typ ResourceType, name string) (Resource, error) {
		w := newChanWatcher()
		cancelFuncs <- c.Watch(typ, name, w)
		select {
		case r := <-w.ch:
			if r == nil {
				return nil, fmt.Errorf("%v %q: error or does not exist", typ, name)
			}
			return r, nil
		case <-ctx.Done():
			return nil, fmt.Errorf("%v %q: not received: %w", typ, name, ctx.Err())
		}
	}
	walk := func(i int) error {
		name := fmt.Sprint("svc", i)
		l, err := await(ListenerType, name+":8080")
		if err != nil {
			return err
		}
		if _, err := await(RouteConfigType, l.(*Listener).RouteConfigName); err != nil {
			return err
		}
		cl, err := await(ClusterType, name)
		if err != nil {
			return err
		}
		_, err = await(EndpointsType, cl.(*Cluster).EDSServiceName)
		return err
	}

	start := time.Now()
	next := make(chan int, services)
	for i := range services {
		next <- i
	}
	close(next)
	errs := make(chan error, services)
	for range parallel {
		cancels.Add(1)
		go func() {
			defer cancels.Done()
			for i := range next {
				if err := walk(i); err != nil {
					errs <- err
				}
			}
		}()
	}
	cancels.Wait()
	close(errs)
	close(cancelFuncs)
	for f := range cancelFuncs {
		f()
	}
	n := 0
	for err := range errs {
		if n < 5 {
			t.Error(err)
		}
		n++
	}
	if n > 0 {
		t.Fatalf("%d of %d services did not resolve within %v", n, services, allowedTime)
	}
	t.Logf("%d services, %d at a time: resolved in %v", services, parallel, time.Since(start))
}

// TestDecodeReusesUnchangedResources checks that a resource resent with
// the same bytes, as a state-of-the-world server resends every resource
// when the names asked for change, is not translated again, and that one
// whose bytes changed is.
func TestDecodeReusesUnchangedResources(t *testing.T) {
	c := &Client{seed: maphash.MakeSeed()}
	eds := func(name string) *anypb.Any {
		return mustAny(t, &clusterv3.Cluster{Name: name, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}}})
	}
	hashes := func(as []*anypb.Any) []uint64 {
		out := make([]uint64, len(as))
		for i, a := range as {
			out[i] = maphash.Bytes(c.seed, a.GetValue()) ^ maphash.String(c.seed, a.GetTypeUrl())
		}
		return out
	}
	first := []*anypb.Any{eds("a")}
	got1 := c.decode(ClusterType, first, hashes(first))
	second := []*anypb.Any{eds("b"), eds("a")}
	got2 := c.decode(ClusterType, second, hashes(second))
	if got1[0].err != nil || got2[0].err != nil || got2[1].err != nil {
		t.Fatalf("decode errors: %v, %v, %v", got1[0].err, got2[0].err, got2[1].err)
	}
	if got2[1].name != "a" || got2[1].res != got1[0].res {
		t.Errorf("cluster a resent unchanged was translated again: %p, want the first translation %p", got2[1].res, got1[0].res)
	}
	if got2[0].name != "b" || got2[0].res == nil {
		t.Errorf("new cluster b: got %q %v", got2[0].name, got2[0].res)
	}
	// Only the last response is remembered: a resource it did not carry
	// is translated afresh.
	third := []*anypb.Any{eds("b")}
	c.decode(ClusterType, third, hashes(third))
	fourth := []*anypb.Any{eds("a")}
	if got4 := c.decode(ClusterType, fourth, hashes(fourth)); got4[0].res == got1[0].res {
		t.Error("cluster a absent from the previous response was served from an older one")
	}
}
