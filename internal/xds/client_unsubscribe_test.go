package xds

import (
	"fmt"
	"slices"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// TestClientUnsubscribeKeepsFastDoesNotExist: after a watch ends, the
// response that answers the next subscription still decides at once that
// a name the server lacks does not exist. A state-of-the-world server
// need not answer a request that only removes names, and go-control-plane
// does not; had the client sent one, it would have waited for a reply
// that never came, and left every later decision to the 10 s timer. (The
// snapshot's version changes after each subscription because
// go-control-plane, at an unchanged version, does not answer a request
// for a name it does not have either.)
func TestClientUnsubscribeKeepsFastDoesNotExist(t *testing.T) {
	srv := xdstest.NewServer(t)
	listeners := []types.Resource{xdstest.Listener("a", "r"), xdstest.Listener("b", "r")}
	srv.SetSnapshot(t, node, "1", listeners...)
	c := newTestClient(t, srv.Bootstrap(node), fastBackoff(), WithResourceTimeout(10*time.Second))
	wa, wb := newRecorder(), newRecorder()
	defer c.Watch(ListenerType, "a", wa)()
	cancel := c.Watch(ListenerType, "b", wb)
	wa.next(t, "update")
	wb.next(t, "update")
	for i, name := range []string{"c", "d"} {
		cancel()
		w := newRecorder()
		start := time.Now()
		cancel = c.Watch(ListenerType, name, w)
		if _, err := srv.WaitRequest(ctxT(t), func(r *discoveryv3.DiscoveryRequest) bool {
			return r.GetTypeUrl() == ListenerTypeURL && slices.Equal(r.GetResourceNames(), []string{"a", name})
		}); err != nil {
			t.Fatalf("no request for a and %s: %v", name, err)
		}
		srv.SetSnapshot(t, node, fmt.Sprint(i+2), listeners...)
		w.next(t, "dne")
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("listener %q: does not exist decided after %v, by the timer", name, d)
		}
	}
	cancel()
}

// TestClientRewatchAfterCancelIsServedAtOnce: a name watched again before
// the server heard of its unsubscription gets its current state at once,
// with no new request.
func TestClientRewatchAfterCancelIsServedAtOnce(t *testing.T) {
	srv := xdstest.NewServer(t)
	srv.SetSnapshot(t, node, "1", xdstest.Cluster("c", "v1"))
	c := newTestClient(t, srv.Bootstrap(node), fastBackoff())
	w := newRecorder()
	cancel := c.Watch(ClusterType, "c", w)
	w.next(t, "update")
	cancel()
	// A change while nobody watches is still followed.
	srv.SetSnapshot(t, node, "2", xdstest.Cluster("c", "v2"))
	time.Sleep(200 * time.Millisecond)
	w.none(t, "update", 0)
	w2 := newRecorder()
	defer c.Watch(ClusterType, "c", w2)()
	e := w2.next(t, "update")
	if got := e.res.(*Cluster).EDSServiceName; got != "v2" {
		t.Errorf("re-watched cluster has EDS name %q, want the server's current v2", got)
	}
}
