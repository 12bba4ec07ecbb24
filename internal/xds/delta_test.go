package xds

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/weftmesh/weft/internal/xds/xdstest"
)

func newDeltaClient(t *testing.T, srv *xdstest.Server, opts ...Option) *Client {
	t.Helper()
	return newTestClient(t, srv.Bootstrap(node), append([]Option{fastBackoff(), WithDelta()}, opts...)...)
}

// deltaNames returns the names of the resources of type typ in the delta
// responses srv sent after the first skip.
func deltaNames(srv *xdstest.Server, skip int, typ ResourceType) []string {
	var names []string
	for _, r := range srv.DeltaResponses()[skip:] {
		if r.GetTypeUrl() != typ.TypeURL() {
			continue
		}
		for _, res := range r.GetResources() {
			names = append(names, res.GetName())
		}
	}
	slices.Sort(names)
	return names
}

func TestDeltaLDSToEDS(t *testing.T) {
	srv := xdstest.NewServer(t)
	srv.SetSnapshot(t, node, "1",
		xdstest.Listener("orders:8080", "orders-rc"),
		xdstest.RouteConfig("orders-rc", "orders:8080", "orders"),
		xdstest.Cluster("orders", "orders-eds"),
		xdstest.Endpoints("orders-eds", "127.0.0.1:9001", "127.0.0.1:9002"))
	c := newDeltaClient(t, srv)

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
	defer c.Watch(EndpointsType, cl.EDSServiceName, ew)()
	eps := ew.next(t, "update").res.(*Endpoints)
	if len(eps.All) != 2 || eps.All[0].Addr != "127.0.0.1:9001" {
		t.Errorf("endpoints: got %+v, want 127.0.0.1:9001 and :9002", eps.All)
	}
	// Every type is ACKed: a request with the response's nonce and no
	// error.
	for _, typ := range []ResourceType{ListenerType, RouteConfigType, ClusterType, EndpointsType} {
		if _, err := srv.WaitDeltaRequest(ctxT(t), func(r *discoveryv3.DeltaDiscoveryRequest) bool {
			return r.GetTypeUrl() == typ.TypeURL() && r.GetResponseNonce() != "" && r.GetErrorDetail() == nil
		}); err != nil {
			t.Errorf("%v not ACKed: %v", typ, err)
		}
	}
	reqs := srv.DeltaRequests()
	if len(srv.Requests()) != 0 {
		t.Errorf("%d state-of-the-world requests, want none", len(srv.Requests()))
	}
	for i, r := range reqs {
		if (r.GetNode() != nil) != (i == 0) {
			t.Errorf("request %d carries node %v; only the first should", i, r.GetNode())
		}
		if i > 0 || len(r.GetResourceNamesSubscribe()) > 0 {
			continue
		}
		t.Errorf("first request subscribes to nothing: a wildcard request")
	}
	if d := c.Dump(); len(d) != 4 || d[0].State != StateACKed || d[0].Version == "" {
		t.Errorf("Dump: got %+v, want 4 ACKED resources with versions", d)
	}
}

func TestDeltaUpdateSendsOnlyTheChange(t *testing.T) {
	srv := xdstest.NewServer(t)
	srv.SetSnapshot(t, node, "1", xdstest.Cluster("a", "a1"), xdstest.Cluster("b", "b1"), xdstest.Cluster("c", "c1"))
	c := newDeltaClient(t, srv)
	ws := map[string]*recorder{"a": newRecorder(), "b": newRecorder(), "c": newRecorder()}
	for name, w := range ws {
		defer c.Watch(ClusterType, name, w)()
		w.next(t, "update")
	}
	// Each subscription was answered with its own resource only.
	if got := deltaNames(srv, 0, ClusterType); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("resources sent while subscribing one by one: %v, want each once", got)
	}

	mark := len(srv.DeltaResponses())
	srv.SetSnapshot(t, node, "2", xdstest.Cluster("a", "a1"), xdstest.Cluster("b", "b2"), xdstest.Cluster("c", "c1"))
	if got := ws["b"].next(t, "update").res.(*Cluster).EDSServiceName; got != "b2" {
		t.Errorf("b: got %q, want b2", got)
	}
	if got := deltaNames(srv, mark, ClusterType); !slices.Equal(got, []string{"b"}) {
		t.Errorf("resources sent for the change of b: %v, want [b]", got)
	}
	ws["a"].none(t, "update", 100*time.Millisecond)
	ws["c"].none(t, "update", 0)
}

func TestDeltaRemoval(t *testing.T) {
	for _, ignore := range []bool{false, true} {
		t.Run(fmt.Sprint("ignore_resource_deletion=", ignore), func(t *testing.T) {
			srv := xdstest.NewServer(t)
			srv.SetSnapshot(t, node, "1", xdstest.Listener("l1", "rc"), xdstest.Listener("l2", "rc"))
			bs := srv.Bootstrap(node)
			if ignore {
				bs = []byte(strings.Replace(string(bs), `["xds_v3"]`, `["xds_v3","ignore_resource_deletion"]`, 1))
			}
			c := newTestClient(t, bs, fastBackoff(), WithDelta())
			w, w2 := newRecorder(), newRecorder()
			defer c.Watch(ListenerType, "l1", w)()
			defer c.Watch(ListenerType, "l2", w2)()
			w.next(t, "update")
			w2.next(t, "update")
			mark := len(srv.DeltaResponses())
			srv.SetSnapshot(t, node, "2", xdstest.Listener("l2", "rc"))
			if ignore {
				if _, err := srv.WaitDeltaRequest(ctxT(t), func(r *discoveryv3.DeltaDiscoveryRequest) bool {
					return len(srv.DeltaResponses()) > mark && r.GetResponseNonce() == srv.DeltaResponses()[mark].GetNonce()
				}); err != nil {
					t.Fatal(err)
				}
				w.none(t, "dne", 200*time.Millisecond)
				if d := c.Dump()[0]; d.Name != "l1" || d.State != StateACKed {
					t.Errorf("Dump: got %s %s, want l1 still ACKED", d.Name, d.State)
				}
			} else {
				w.next(t, "dne")
			}
			w2.none(t, "dne", 0)
			w2.none(t, "update", 0)
		})
	}
}

func TestDeltaNACKKeepsLastGood(t *testing.T) {
	srv := xdstest.NewServer(t)
	srv.SetSnapshot(t, node, "1", xdstest.Cluster("a", "a-v1"), xdstest.Cluster("b", "b-v1"))
	c := newDeltaClient(t, srv)
	aw, bw := newRecorder(), newRecorder()
	defer c.Watch(ClusterType, "a", aw)()
	defer c.Watch(ClusterType, "b", bw)()
	aw.next(t, "update")
	bw.next(t, "update")

	srv.SetSnapshot(t, node, "2", badCluster("a"), xdstest.Cluster("b", "b-v2"))
	nack, err := srv.WaitDeltaRequest(ctxT(t), func(r *discoveryv3.DeltaDiscoveryRequest) bool {
		return r.GetTypeUrl() == ClusterTypeURL && r.GetErrorDetail() != nil
	})
	if err != nil {
		t.Fatalf("no NACK: %v", err)
	}
	msg := nack.GetErrorDetail().GetMessage()
	for _, want := range []string{`CDS resource "a"`, "ring_hash_lb_config.minimum_ring_size"} {
		if !strings.Contains(msg, want) {
			t.Errorf("NACK error_detail %q does not contain %s", msg, want)
		}
	}
	if nack.GetResponseNonce() == "" {
		t.Error("NACK carries no response_nonce")
	}
	if e := aw.next(t, "error"); !strings.Contains(e.err.Error(), "minimum_ring_size") {
		t.Errorf("a's OnError: got %v, want the validation error", e.err)
	}
	if got := bw.next(t, "update").res.(*Cluster).EDSServiceName; got != "b-v2" {
		t.Errorf("b in the NACKed response: got %q, want b-v2 applied", got)
	}
	for _, d := range c.Dump() {
		if d.Name == "a" && (d.State != StateNACKed || d.Resource.(*Cluster).EDSServiceName != "a-v1") {
			t.Errorf("Dump a: got %s %v, want NACKED still serving a-v1", d.State, d.Resource)
		}
	}

	srv.SetSnapshot(t, node, "3", xdstest.Cluster("a", "a-v3"), xdstest.Cluster("b", "b-v2"))
	if got := aw.next(t, "update").res.(*Cluster).EDSServiceName; got != "a-v3" {
		t.Errorf("a after the fix: got %q, want a-v3", got)
	}
	bw.none(t, "update", 100*time.Millisecond)
}

func TestDeltaServerRestartSendsInitialVersions(t *testing.T) {
	srv := xdstest.NewServer(t)
	srv.SetSnapshot(t, node, "1", xdstest.Cluster("c", "c1"), xdstest.Cluster("d", "d1"))
	c := newDeltaClient(t, srv)
	cw, dw := newRecorder(), newRecorder()
	defer c.Watch(ClusterType, "c", cw)()
	defer c.Watch(ClusterType, "d", dw)()
	cw.next(t, "update")
	dw.next(t, "update")
	var versions map[string]string
	for _, d := range c.Dump() {
		if versions == nil {
			versions = map[string]string{}
		}
		versions[d.Name] = d.Version
	}

	srv.Stop()
	srv.SetSnapshot(t, node, "2", xdstest.Cluster("c", "c2"), xdstest.Cluster("d", "d1"))
	mark, reqMark := len(srv.DeltaResponses()), len(srv.DeltaRequests())
	srv.Restart(t)
	if got := cw.next(t, "update").res.(*Cluster).EDSServiceName; got != "c2" {
		t.Errorf("after restart: got %q, want c2", got)
	}
	first := srv.DeltaRequests()[reqMark]
	if first.GetNode().GetId() != node {
		t.Errorf("first request of the new stream has node %v, want %s", first.GetNode(), node)
	}
	if got := first.GetInitialResourceVersions(); len(got) != 2 || got["c"] != versions["c"] || got["d"] != versions["d"] {
		t.Errorf("initial_resource_versions: got %v, want %v", got, versions)
	}
	if got := first.GetResourceNamesSubscribe(); !slices.Equal(got, []string{"c", "d"}) {
		t.Errorf("resubscription: got %v, want [c d]", got)
	}
	// Only the changed cluster was sent again, and d's watcher heard
	// nothing.
	if got := deltaNames(srv, mark, ClusterType); !slices.Equal(got, []string{"c"}) {
		t.Errorf("resources sent on the new stream: %v, want [c]", got)
	}
	dw.none(t, "update", 200*time.Millisecond)
	if len(dw.ch) != 0 || len(cw.ch) != 0 {
		t.Errorf("spurious callbacks after the reconnection: c %d, d %d", len(cw.ch), len(dw.ch))
	}
}

func TestDeltaUnsubscribe(t *testing.T) {
	srv := xdstest.NewServer(t)
	srv.SetSnapshot(t, node, "1", xdstest.Cluster("c", "v1"), xdstest.Cluster("keep", "k1"))
	c := newDeltaClient(t, srv)
	w := newRecorder()
	defer c.Watch(ClusterType, "keep", newRecorder())()
	cancel := c.Watch(ClusterType, "c", w)
	w.next(t, "update")
	cancel()
	if _, err := srv.WaitDeltaRequest(ctxT(t), func(r *discoveryv3.DeltaDiscoveryRequest) bool {
		return r.GetTypeUrl() == ClusterTypeURL && slices.Equal(r.GetResourceNamesUnsubscribe(), []string{"c"}) &&
			len(r.GetResourceNamesSubscribe()) == 0
	}); err != nil {
		t.Errorf("no unsubscribe request: %v", err)
	}
	mark := len(srv.DeltaResponses())
	srv.SetSnapshot(t, node, "2", xdstest.Cluster("c", "v2"), xdstest.Cluster("keep", "k1"))
	w.none(t, "update", 200*time.Millisecond)
	if got := deltaNames(srv, mark, ClusterType); len(got) != 0 {
		t.Errorf("after the unsubscription the server sent %v", got)
	}

	// Watching it again subscribes again and gets the current version.
	w2 := newRecorder()
	defer c.Watch(ClusterType, "c", w2)()
	if got := w2.next(t, "update").res.(*Cluster).EDSServiceName; got != "v2" {
		t.Errorf("watched again: got %q, want v2", got)
	}
}

func TestDeltaDoesNotExistTimer(t *testing.T) {
	srv := xdstest.NewServer(t)
	srv.SetSnapshot(t, node, "1", xdstest.Cluster("c", "v1"))
	c := newDeltaClient(t, srv, WithResourceTimeout(300*time.Millisecond))
	cw, mw := newRecorder(), newRecorder()
	defer c.Watch(ClusterType, "c", cw)()
	defer c.Watch(ClusterType, "missing", mw)()
	cw.next(t, "update")
	start := time.Now()
	mw.next(t, "dne")
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("does-not-exist after %v, want about the 300ms timeout", d)
	}
	cw.none(t, "dne", 400*time.Millisecond)
}

// TestDeltaNACKPacingAndNames feeds responses by hand: a resent rejected
// response is NACKed after a growing delay, and a resource whose wrapper
// and proto disagree on its name is rejected.
func TestDeltaNACKPacingAndNames(t *testing.T) {
	clk := newFakeClock()
	c := newOfflineClient(t, WithDelta(), withClock(clk))
	w := newRecorder()
	defer c.Watch(ClusterType, "a", w)()
	state := func() (nonce, nack string) {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.nonces[ClusterType], c.nackErr[ClusterType]
	}

	bad := func(nonce string) *discoveryv3.DeltaDiscoveryResponse {
		return &discoveryv3.DeltaDiscoveryResponse{TypeUrl: ClusterTypeURL, Nonce: nonce, SystemVersionInfo: "1",
			Resources: []*discoveryv3.Resource{{Name: "a", Version: "x", Resource: mustAny(t, badCluster("a"))}}}
	}
	c.handleDeltaResponse(bad("n1"), 0)
	if nonce, nack := state(); nonce != "n1" || !strings.Contains(nack, "minimum_ring_size") {
		t.Fatalf("after a bad response: nonce %q NACK %q, want n1 and the validation error", nonce, nack)
	}
	w.next(t, "error")
	// The server resends it: the NACK waits for the pacing timer, and
	// nothing may ACK it meanwhile.
	c.mu.Lock()
	c.nonces[ClusterType], c.nackErr[ClusterType] = "", "" // as if sent
	c.mu.Unlock()
	c.handleDeltaResponse(bad("n2"), 0)
	if nonce, nack := state(); nonce != "" || nack != "" {
		t.Fatalf("a resent rejected response was answered at once: nonce %q NACK %q", nonce, nack)
	}
	clk.waitTimer(t, nackDelayBase)
	clk.Advance(nackDelayBase)
	if nonce, nack := state(); nonce != "n2" || nack == "" {
		t.Errorf("after the pacing delay: nonce %q NACK %q, want n2 NACKed", nonce, nack)
	}

	c.handleDeltaResponse(&discoveryv3.DeltaDiscoveryResponse{TypeUrl: ClusterTypeURL, Nonce: "n3",
		Resources: []*discoveryv3.Resource{{Name: "a", Version: "y", Resource: mustAny(t, xdstest.Cluster("other", ""))}}}, 0)
	if _, nack := state(); !strings.Contains(nack, `CDS resource "a": name:`) || !strings.Contains(nack, `"other"`) {
		t.Errorf("wrapper named a, proto named other: NACK %q", nack)
	}
	w.none(t, "update", 50*time.Millisecond)
}

// TestDeltaRemovedNeverReceivedName: a server may answer a subscription to
// a resource it does not have by listing the name in removed_resources;
// the watcher learns at once, without waiting for the timer.
func TestDeltaRemovedNeverReceivedName(t *testing.T) {
	c := newOfflineClient(t, WithDelta())
	w := newRecorder()
	defer c.Watch(ListenerType, "missing", w)()
	c.handleDeltaResponse(&discoveryv3.DeltaDiscoveryResponse{TypeUrl: ListenerTypeURL, Nonce: "n1",
		RemovedResources: []string{"missing"}}, 0)
	w.next(t, "dne")
	if d := c.Dump()[0]; d.State != StateDoesNotExist {
		t.Errorf("Dump: got %s, want DOES_NOT_EXIST", d.State)
	}
}
