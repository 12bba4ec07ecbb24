package mesh_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
)

// benchPair returns a plain keep-alive client and a Weft client, both
// pointed at the same loopback server, and the URLs each uses.
func benchPair(b *testing.B) (plain *http.Client, plainURL string, weft *http.Client, weftURL string) {
	b.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "k")
	}))
	b.Cleanup(srv.Close)
	m, err := mesh.New(context.Background(), mesh.WithEndpoints("orders", srv.Listener.Addr().String()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	plainTransport := http.DefaultTransport.(*http.Transport).Clone()
	b.Cleanup(plainTransport.CloseIdleConnections)
	return &http.Client{Transport: plainTransport}, srv.URL + "/items", m.HTTPClient(), "http://orders/items"
}

func doGET(b *testing.B, c *http.Client, url string) {
	resp, err := c.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// BenchmarkSequentialGET measures one keep-alive GET at a time over
// loopback, through a plain net/http client and through the mesh.
func BenchmarkSequentialGET(b *testing.B) {
	plain, plainURL, weft, weftURL := benchPair(b)
	b.Run("plain", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			doGET(b, plain, plainURL)
		}
	})
	b.Run("weft", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			doGET(b, weft, weftURL)
		}
	})
}

// BenchmarkSequentialGETInterleaved alternates plain and mesh GETs in one
// loop, so both see the same machine state, and reports the ratio of their
// mean latencies as "weft/plain" (1.00 = no overhead).
func BenchmarkSequentialGETInterleaved(b *testing.B) {
	plain, plainURL, weft, weftURL := benchPair(b)
	doGET(b, plain, plainURL) // open both connections before timing
	doGET(b, weft, weftURL)
	var tPlain, tWeft time.Duration
	n := 0
	for b.Loop() {
		t0 := time.Now()
		doGET(b, plain, plainURL)
		t1 := time.Now()
		doGET(b, weft, weftURL)
		tWeft += time.Since(t1)
		tPlain += t1.Sub(t0)
		n++
	}
	b.ReportMetric(float64(tPlain.Nanoseconds())/float64(n), "plain-ns/req")
	b.ReportMetric(float64(tWeft.Nanoseconds())/float64(n), "weft-ns/req")
	b.ReportMetric(float64(tWeft)/float64(tPlain), "weft/plain")
}

// BenchmarkSequentialGETXDS measures one keep-alive GET at a time routed by
// xDS (listener, route match, cluster, endpoint) over loopback.
func BenchmarkSequentialGETXDS(b *testing.B) { benchGETXDS(b, xdstest.Cluster("orders", "")) }

// BenchmarkSequentialGETXDSLRS is BenchmarkSequentialGETXDS with the
// cluster's lrs_server set: what counting each request for load
// reporting adds.
func BenchmarkSequentialGETXDSLRS(b *testing.B) {
	cl := xdstest.Cluster("orders", "")
	cl.LrsServer = &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Self{Self: &corev3.SelfConfigSource{}}}
	benchGETXDS(b, cl)
}

// benchGETXDS routes orders:8080 to the cluster cl, whose one endpoint
// answers "k", and measures one GET at a time.
func benchGETXDS(b *testing.B, cl *clusterv3.Cluster) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "k")
	}))
	b.Cleanup(srv.Close)
	cp := xdstest.NewServer(b)
	cp.SetSnapshot(b, "bench", "1",
		xdstest.Listener("orders:8080", "orders-routes"),
		xdstest.RouteConfig("orders-routes", "*", "orders"),
		cl,
		xdstest.Endpoints("orders", srv.Listener.Addr().String()))
	m, err := mesh.New(context.Background(), mesh.WithBootstrap(cp.Bootstrap("bench")))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	c := m.HTTPClient()
	doGET(b, c, "http://orders:8080/items")
	b.ReportAllocs()
	for b.Loop() {
		doGET(b, c, "http://orders:8080/items")
	}
}

// BenchmarkServerHandler measures the server side alone: one keep-alive
// GET at a time from a plain client to a handler served bare and wrapped
// by the mesh's Handler (identity, deadline budget, authorization and
// rate-limit checks, telemetry pass-through).
func BenchmarkServerHandler(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "k") })
	m, err := mesh.New(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	// With the admin listener on, the chain also records golden metrics.
	withAdmin, err := mesh.New(context.Background(), mesh.WithAdminAddr("127.0.0.1:0"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { withAdmin.Close() })
	for _, c := range []struct {
		name string
		h    http.Handler
		// budget: the request carries a caller's deadline (Weft-Timeout),
		// as every request of an xDS route with a timeout does.
		budget bool
	}{{"plain", h, false}, {"weft", m.Handler(h), false}, {"weft_admin", withAdmin.Handler(h), false}, {"weft_budget", m.Handler(h), true}} {
		b.Run(c.name, func(b *testing.B) {
			srv := httptest.NewServer(c.h)
			defer srv.Close()
			tr := http.DefaultTransport.(*http.Transport).Clone()
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr}
			req, err := http.NewRequest(http.MethodGet, srv.URL+"/items", nil)
			if err != nil {
				b.Fatal(err)
			}
			if c.budget {
				req.Header.Set(mesh.TimeoutHeader, "15000")
			}
			b.ReportAllocs()
			for b.Loop() {
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
}

// BenchmarkFreshGoroutineGET is BenchmarkSequentialGET with each GET on
// a new goroutine, as an open-loop load generator or a fan-out sends
// them: the goroutine's stack starts small and grows, by copying, to what
// the request's call path needs.
func BenchmarkFreshGoroutineGET(b *testing.B) {
	plain, plainURL, weft, weftURL := benchPair(b)
	for _, c := range []struct {
		name string
		get  func()
	}{{"plain", func() { doGET(b, plain, plainURL) }}, {"weft", func() { doGET(b, weft, weftURL) }}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			done := make(chan struct{})
			for b.Loop() {
				go func() { c.get(); done <- struct{}{} }()
				<-done
			}
		})
	}
}
