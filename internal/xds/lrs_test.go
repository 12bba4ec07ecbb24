package xds

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	lrsv3 "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/resolver"
)

// waitStreams waits until the LRS server has opened and open streams.
func waitStreams(t *testing.T, l *xdstest.LRSServer, opened, open int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		o, n := l.Streams()
		if o == opened && n == open {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("LRS streams: got opened=%d open=%d, want %d, %d", o, n, opened, open)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitTotals waits until the reports of cluster from node add up to want
// for locality key k.
func waitTotals(t *testing.T, l *xdstest.LRSServer, cluster, k string, want xdstest.LocalityCounts) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := l.Totals(node, cluster)[k]
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster %q locality %q: got %+v, want %+v", cluster, k, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func count(cl *ClusterLoad, l resolver.Locality, ok, failed, inFlight int) {
	ll := cl.Locality(l)
	for range ok {
		ll.Start()
		ll.Done(false)
	}
	for range failed {
		ll.Start()
		ll.Done(true)
	}
	for range inFlight {
		ll.Start()
	}
}

// The stream opens with the first cluster that reports, carries the node
// with envoy.lrs.supports_send_all_clusters first, reports counts per
// locality, and closes when the last cluster stops; Close leaves nothing
// running.
func TestLRSStreamLifecycle(t *testing.T) {
	srv := xdstest.NewServer(t)
	c := newTestClient(t, srv.Bootstrap(node), fastBackoff())
	if o, _ := srv.LRS.Streams(); o != 0 {
		t.Fatalf("LRS stream opened before any cluster reports")
	}
	a, stopA := c.ReportLoad("a", "a-eds")
	b, stopB := c.ReportLoad("b", "b")
	waitStreams(t, srv.LRS, 1, 1)
	first := srv.LRS.FirstRequests()[0]
	if first.GetNode().GetId() != node || !slices.Contains(first.GetNode().GetClientFeatures(), "envoy.lrs.supports_send_all_clusters") {
		t.Errorf("first request node: got %v, want id %q with envoy.lrs.supports_send_all_clusters", first.GetNode(), node)
	}
	if len(first.GetClusterStats()) != 0 {
		t.Errorf("first request carries cluster stats: %v", first.GetClusterStats())
	}
	east := resolver.Locality{Region: "r", Zone: "east"}
	count(a, east, 5, 2, 1)
	count(a, resolver.Locality{Region: "r", Zone: "west", SubZone: "s"}, 3, 0, 0)
	count(b, resolver.Locality{}, 0, 4, 0)
	waitTotals(t, srv.LRS, "a", "r/east/", xdstest.LocalityCounts{Succeeded: 5, Errors: 2, Issued: 8, InProgress: 1})
	waitTotals(t, srv.LRS, "a", "r/west/s", xdstest.LocalityCounts{Succeeded: 3, Issued: 3})
	waitTotals(t, srv.LRS, "b", "//", xdstest.LocalityCounts{Errors: 4, Issued: 4})
	for _, r := range srv.LRS.Reports() {
		for _, cs := range r.Req.GetClusterStats() {
			if cs.GetClusterName() == "a" && cs.GetClusterServiceName() != "a-eds" {
				t.Errorf("cluster a reported with service %q, want a-eds", cs.GetClusterServiceName())
			}
			if cs.GetLoadReportInterval().AsDuration() <= 0 {
				t.Errorf("load_report_interval %v, want the elapsed time", cs.GetLoadReportInterval().AsDuration())
			}
			if cs.GetTotalDroppedRequests() != 0 || len(cs.GetDroppedRequests()) != 0 {
				t.Errorf("drops reported with no drop_overloads applied: %v", cs)
			}
		}
	}

	stopA()
	stopA() // harmless
	waitStreams(t, srv.LRS, 1, 1)
	stopB()
	waitStreams(t, srv.LRS, 1, 0)

	_, stop := c.ReportLoad("a", "a-eds")
	waitStreams(t, srv.LRS, 2, 1)
	c.Close()
	waitStreams(t, srv.LRS, 2, 0)
	stop() // after Close: harmless
	if _, stop := c.ReportLoad("a", "a"); stop != nil {
		stop()
	}
	if o, _ := srv.LRS.Streams(); o != 2 {
		t.Errorf("a closed client opened an LRS stream")
	}
}

// Which clusters a report covers is the server's: send_all_clusters, or
// the clusters it lists (gRFC A27 and Envoy's LoadStatsResponse).
func TestLRSClusterSelection(t *testing.T) {
	for _, tc := range []struct {
		name string
		resp *lrsv3.LoadStatsResponse
		want []string
	}{
		{"send_all_clusters", &lrsv3.LoadStatsResponse{SendAllClusters: true}, []string{"a", "b"}},
		{"listed", &lrsv3.LoadStatsResponse{Clusters: []string{"b", "unknown"}}, []string{"b"}},
		{"none listed", &lrsv3.LoadStatsResponse{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := xdstest.NewServer(t)
			tc.resp.LoadReportingInterval = durationpb.New(50 * time.Millisecond)
			srv.LRS.SetResponse(tc.resp)
			c := newTestClient(t, srv.Bootstrap(node), fastBackoff())
			a, stopA := c.ReportLoad("a", "a")
			defer stopA()
			b, stopB := c.ReportLoad("b", "b")
			defer stopB()
			count(a, resolver.Locality{Zone: "z"}, 1, 0, 0)
			count(b, resolver.Locality{Zone: "z"}, 1, 0, 0)
			// Counting goes on; reports span several intervals.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for range 3 {
				if _, err := srv.LRS.WaitReport(ctx, func(r xdstest.LoadReport) bool { return r.Node == node }); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(200 * time.Millisecond)
			var got []string
			for _, name := range []string{"a", "b"} {
				if len(srv.LRS.Totals(node, name)) > 0 {
					got = append(got, name)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("clusters reported: got %v, want %v", got, tc.want)
			}
		})
	}
}

// A later LoadStatsResponse changes the interval and the clusters from
// the next report, as Envoy applies it.
func TestLRSResponseChanges(t *testing.T) {
	srv := xdstest.NewServer(t)
	srv.LRS.SetResponse(&lrsv3.LoadStatsResponse{SendAllClusters: true, LoadReportingInterval: durationpb.New(time.Hour)})
	c := newTestClient(t, srv.Bootstrap(node), fastBackoff())
	a, stop := c.ReportLoad("a", "a")
	defer stop()
	count(a, resolver.Locality{Zone: "z"}, 2, 0, 0)
	waitStreams(t, srv.LRS, 1, 1)
	time.Sleep(300 * time.Millisecond)
	if n := len(srv.LRS.Reports()); n != 0 {
		t.Fatalf("got %d reports within an hour-long interval", n)
	}
	srv.LRS.SetResponse(&lrsv3.LoadStatsResponse{SendAllClusters: true, LoadReportingInterval: durationpb.New(50 * time.Millisecond)})
	waitTotals(t, srv.LRS, "a", "/z/", xdstest.LocalityCounts{Succeeded: 2, Issued: 2})
	if got := srv.LRS.Reports()[0].Req.GetClusterStats()[0].GetLoadReportInterval().AsDuration(); got < 300*time.Millisecond {
		t.Errorf("load_report_interval: got %v, want the time since counting began (over 300ms)", got)
	}
}

// A stream the server ends is opened again after a backoff, and counts
// made meanwhile are not lost; an invalid interval ends a stream too.
func TestLRSReconnect(t *testing.T) {
	srv := xdstest.NewServer(t)
	c := newTestClient(t, srv.Bootstrap(node), fastBackoff())
	a, stop := c.ReportLoad("a", "a")
	defer stop()
	count(a, resolver.Locality{Zone: "z"}, 1, 0, 0)
	waitTotals(t, srv.LRS, "a", "/z/", xdstest.LocalityCounts{Succeeded: 1, Issued: 1})
	srv.LRS.SetResponse(&lrsv3.LoadStatsResponse{SendAllClusters: true, LoadReportingInterval: &durationpb.Duration{Seconds: -1}})
	srv.LRS.CloseStreams()
	count(a, resolver.Locality{Zone: "z"}, 2, 1, 0)
	// Streams keep failing on the interval, and are retried.
	deadline := time.Now().Add(10 * time.Second)
	for o, _ := srv.LRS.Streams(); o < 3; o, _ = srv.LRS.Streams() {
		if time.Now().After(deadline) {
			t.Fatalf("LRS streams opened: %d, want at least 3", o)
		}
		time.Sleep(10 * time.Millisecond)
	}
	srv.LRS.SetResponse(&lrsv3.LoadStatsResponse{SendAllClusters: true, LoadReportingInterval: durationpb.New(50 * time.Millisecond)})
	waitTotals(t, srv.LRS, "a", "/z/", xdstest.LocalityCounts{Succeeded: 3, Errors: 1, Issued: 4})
	opened, open := srv.LRS.Streams()
	if open != 1 || opened < 4 {
		t.Errorf("LRS streams: got opened=%d open=%d, want at least 4 opened, 1 open", opened, open)
	}
}

// lrs_server is applied when it is self, the only source grpc-go
// supports; another source rejects the cluster, as grpc-go rejects it.
func TestTranslateLRSServer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		lrs     *corev3.ConfigSource
		want    bool
		wantErr string
	}{
		{"absent", nil, false, ""},
		{"self", &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Self{Self: &corev3.SelfConfigSource{}}}, true, ""},
		{"ads", &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}, false, "lrs_server"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := xdstest.Cluster("c", "")
			cl.LrsServer = tc.lrs
			got, err := TranslateCluster(cl)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("TranslateCluster() error = %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.ReportLoad != tc.want {
				t.Errorf("ReportLoad: got %v, want %v", got.ReportLoad, tc.want)
			}
			if slices.ContainsFunc(got.Unapplied, func(f string) bool { return strings.HasPrefix(f, "lrs_server") }) {
				t.Errorf("Unapplied lists lrs_server: %v", got.Unapplied)
			}
		})
	}
}

// Counting a call at a locality already seen allocates nothing.
func TestLocalityLoadAllocs(t *testing.T) {
	cl := &ClusterLoad{localities: map[resolver.Locality]*LocalityLoad{}}
	l := resolver.Locality{Region: "r", Zone: "z"}
	cl.Locality(l)
	if n := testing.AllocsPerRun(1000, func() {
		ll := cl.Locality(l)
		ll.Start()
		ll.Done(false)
	}); n != 0 {
		t.Errorf("allocations per counted call: got %v, want 0", n)
	}
}

func BenchmarkLocalityLoadParallel(b *testing.B) {
	cl := &ClusterLoad{localities: map[resolver.Locality]*LocalityLoad{}}
	locs := []resolver.Locality{{Zone: "a"}, {Zone: "b"}, {Zone: "c"}}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			ll := cl.Locality(locs[i%len(locs)])
			ll.Start()
			ll.Done(i%7 == 0)
			i++
		}
	})
}

// When the last cluster stops reporting, its counts since the last report
// go out in a final report before the stream closes, as grpc-go sends one;
// a cluster that stops while others report is in the next report.
func TestLRSFinalReport(t *testing.T) {
	srv := xdstest.NewServer(t)
	srv.LRS.SetResponse(&lrsv3.LoadStatsResponse{SendAllClusters: true, LoadReportingInterval: durationpb.New(time.Hour)})
	c := newTestClient(t, srv.Bootstrap(node), fastBackoff())
	a, stopA := c.ReportLoad("a", "a")
	b, stopB := c.ReportLoad("b", "b")
	waitStreams(t, srv.LRS, 1, 1)
	count(a, resolver.Locality{Zone: "z"}, 2, 1, 0)
	count(b, resolver.Locality{Zone: "z"}, 1, 0, 0)
	stopA()
	stopB()
	waitStreams(t, srv.LRS, 1, 0)
	if got, want := srv.LRS.Totals(node, "a")["/z/"], (xdstest.LocalityCounts{Succeeded: 2, Errors: 1, Issued: 3}); got != want {
		t.Errorf("cluster a: got %+v, want %+v", got, want)
	}
	if got, want := srv.LRS.Totals(node, "b")["/z/"], (xdstest.LocalityCounts{Succeeded: 1, Issued: 1}); got != want {
		t.Errorf("cluster b: got %+v, want %+v", got, want)
	}
}
