package mesh_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
)

// tapBenchMesh returns a plain client with its URL, and a mesh with an
// admin listener routing http://orders:8080/items by xDS to the same
// loopback server.
func tapBenchMesh(b *testing.B) (plain *http.Client, plainURL string, m *mesh.Mesh) {
	b.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "k")
	}))
	b.Cleanup(srv.Close)
	cp := xdstest.NewServer(b)
	cp.SetSnapshot(b, "bench", "1",
		xdstest.Listener("orders:8080", "orders-routes"),
		xdstest.RouteConfig("orders-routes", "*", "orders"),
		xdstest.Cluster("orders", ""),
		xdstest.Endpoints("orders", srv.Listener.Addr().String()))
	m, err := mesh.New(context.Background(), mesh.WithBootstrap(cp.Bootstrap("bench")), mesh.WithAdminAddr("127.0.0.1:0"),
		mesh.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	plainTransport := http.DefaultTransport.(*http.Transport).Clone()
	b.Cleanup(plainTransport.CloseIdleConnections)
	doGET(b, m.HTTPClient(), "http://orders:8080/items")
	return &http.Client{Transport: plainTransport}, srv.URL + "/items", m
}

// follower opens /tap on m like `curl -N > /dev/null`: it reads every
// line and keeps up. stop closes it and waits until the mesh has no
// follower left, so what runs next runs with the tap off.
func follower(b *testing.B, m *mesh.Mesh) (stop func()) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tr := &http.Transport{}
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+mesh.AdminAddr(m)+"/tap", nil)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		cancel()
		b.Fatalf("/tap: %v %v", resp, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(io.Discard, resp.Body)
	}()
	return func() {
		cancel()
		resp.Body.Close()
		<-done
		tr.CloseIdleConnections()
		for deadline := time.Now().Add(10 * time.Second); mesh.TapBus(m).Active(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatal("the follower is still subscribed 10s after it left")
			}
		}
	}
}

// BenchmarkTapGET is BenchmarkSequentialGETXDS with the tap off (nobody
// follows /tap) and on (one follower), each measured alone.
func BenchmarkTapGET(b *testing.B) {
	_, _, m := tapBenchMesh(b)
	cl := m.HTTPClient()
	b.Run("off", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			doGET(b, cl, "http://orders:8080/items")
		}
	})
	b.Run("on", func(b *testing.B) {
		defer follower(b, m)()
		b.ReportAllocs()
		for b.Loop() {
			doGET(b, cl, "http://orders:8080/items")
		}
	})
}

// cpuNow is the CPU time this process has used, user and system, on
// every thread: on a machine shared with other work, CPU per request
// says what a request costs where wall-clock time says how busy the
// machine was.
func cpuNow() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchKind is one kind of request an interleaved benchmark sends, with
// what must hold around its blocks (not timed).
type benchKind struct {
	name  string
	get   func()
	setup func() (teardown func()) // nil: none
}

// interleave sends blocks of 100 requests of each kind in turn, so all
// see the same machine state, each round starting with the next kind, until b.Loop ends, and reports each kind's
// mean wall-clock and CPU time per request and their ratios to the
// first kind's.
func interleave(b *testing.B, kinds []benchKind) {
	const block = 100
	wall := make([]time.Duration, len(kinds))
	cpu := make([]time.Duration, len(kinds))
	n := 0
	for b.Loop() {
		// Each round starts with the next kind, so none always follows
		// the same one.
		for j := range kinds {
			i := (j + n/block) % len(kinds)
			k := kinds[i]
			var teardown func()
			if k.setup != nil {
				teardown = k.setup()
			}
			w0, c0 := time.Now(), cpuNow()
			for range block {
				k.get()
			}
			cpu[i] += cpuNow() - c0
			wall[i] += time.Since(w0)
			if teardown != nil {
				teardown()
			}
		}
		n += block
	}
	for i, k := range kinds {
		b.ReportMetric(float64(wall[i].Nanoseconds())/float64(n), k.name+"-ns/req")
		b.ReportMetric(float64(cpu[i].Nanoseconds())/float64(n), k.name+"-cpu-ns/req")
		if i > 0 {
			b.ReportMetric(float64(wall[i])/float64(wall[0]), k.name+"/"+kinds[0].name)
			b.ReportMetric(float64(cpu[i])/float64(cpu[0]), k.name+"/"+kinds[0].name+"-cpu")
		}
	}
}

// BenchmarkTapGETInterleaved alternates blocks of plain GETs, mesh GETs
// with the tap off and mesh GETs with a follower: "off/plain" is the
// mesh's overhead with the tap's hooks idle (compare with
// BenchmarkSequentialGETInterleaved's weft/plain); the ratio of on to off
// is what one follower adds, reader included. Each b.N iteration is 100
// requests of each kind.
func BenchmarkTapGETInterleaved(b *testing.B) {
	plain, plainURL, m := tapBenchMesh(b)
	doGET(b, plain, plainURL)
	cl := m.HTTPClient()
	get := func() { doGET(b, cl, "http://orders:8080/items") }
	interleave(b, []benchKind{
		{name: "plain", get: func() { doGET(b, plain, plainURL) }},
		{name: "off", get: get},
		{name: "on", get: get, setup: func() func() { return follower(b, m) }},
	})
}

// memRoundTripper answers every request at once, in memory, so a
// benchmark through it measures the mesh's own work alone.
type memRoundTripper struct{}

func (memRoundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		req.Body.Close()
	}
	return &http.Response{StatusCode: 200, ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{}, Body: http.NoBody, Request: req}, nil
}

// BenchmarkTapMeshOnly is BenchmarkTapGETInterleaved without the network:
// the endpoint answers in memory, so the ratios compare the tap's cost
// with the mesh's own work on a request (route match, pick, retry
// layer), not with a loopback round trip, which is far longer.
func BenchmarkTapMeshOnly(b *testing.B) {
	_, _, m := tapBenchMesh(b)
	cl := &http.Client{Transport: m.Transport(memRoundTripper{})}
	get := func() { doGET(b, cl, "http://orders:8080/items") }
	get()
	interleave(b, []benchKind{
		{name: "off", get: get},
		{name: "on", get: get, setup: func() func() { return follower(b, m) }},
	})
}
