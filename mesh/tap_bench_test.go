package mesh_test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
)

// tapBenchMeshes returns a plain client with its URL, and two meshes
// routing http://orders:8080/items by xDS to the same loopback server:
// one nobody taps, one followed by a /tap reader that decodes nothing and
// keeps up (a person's curl). The reader stops at cleanup.
func tapBenchMeshes(b *testing.B) (plain *http.Client, plainURL string, off, on *mesh.Mesh) {
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
	newBench := func(opts ...mesh.Option) *mesh.Mesh {
		m, err := mesh.New(context.Background(), append([]mesh.Option{mesh.WithBootstrap(cp.Bootstrap("bench"))}, opts...)...)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { m.Close() })
		return m
	}
	ln := "127.0.0.1:0"
	off = newBench()
	on = newBench(mesh.WithAdminAddr(ln))
	admin := mesh.AdminAddr(on)

	ctx, cancel := context.WithCancel(context.Background())
	tr := &http.Transport{}
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+admin+"/tap", nil)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		cancel()
		b.Fatalf("/tap: %v %v", resp, err)
	}
	lines := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			select {
			case lines <- struct{}{}:
			default:
			}
		}
	}()
	b.Cleanup(func() { cancel(); resp.Body.Close(); <-done; tr.CloseIdleConnections() })

	plainTransport := http.DefaultTransport.(*http.Transport).Clone()
	b.Cleanup(plainTransport.CloseIdleConnections)
	doGET(b, off.HTTPClient(), "http://orders:8080/items")
	doGET(b, on.HTTPClient(), "http://orders:8080/items")
	select {
	case <-lines:
	case <-time.After(10 * time.Second):
		b.Fatal("no /tap line for the first request")
	}
	return &http.Client{Transport: plainTransport}, srv.URL + "/items", off, on
}

// BenchmarkTapGET is BenchmarkSequentialGETXDS with the tap off (nobody
// follows /tap) and on (one follower), each measured alone.
func BenchmarkTapGET(b *testing.B) {
	_, _, off, on := tapBenchMeshes(b)
	for _, c := range []struct {
		name string
		m    *mesh.Mesh
	}{{"off", off}, {"on", on}} {
		b.Run(c.name, func(b *testing.B) {
			cl := c.m.HTTPClient()
			b.ReportAllocs()
			for b.Loop() {
				doGET(b, cl, "http://orders:8080/items")
			}
		})
	}
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

// interleave runs the gets in turn, in blocks of 100 requests each so
// all see the same machine state, until b.Loop ends, and reports each
// one's mean wall-clock and CPU time per request and the ratios of the
// later ones to the first.
func interleave(b *testing.B, names []string, gets []func()) {
	const block = 100
	wall := make([]time.Duration, len(gets))
	cpu := make([]time.Duration, len(gets))
	n := 0
	for b.Loop() {
		for i, get := range gets {
			w0, c0 := time.Now(), cpuNow()
			for range block {
				get()
			}
			cpu[i] += cpuNow() - c0
			wall[i] += time.Since(w0)
		}
		n += block
	}
	for i, name := range names {
		b.ReportMetric(float64(wall[i].Nanoseconds())/float64(n), name+"-ns/req")
		b.ReportMetric(float64(cpu[i].Nanoseconds())/float64(n), name+"-cpu-ns/req")
		if i > 0 {
			b.ReportMetric(float64(wall[i])/float64(wall[0]), name+"/"+names[0])
			b.ReportMetric(float64(cpu[i])/float64(cpu[0]), name+"/"+names[0]+"-cpu")
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
	plain, plainURL, off, on := tapBenchMeshes(b)
	doGET(b, plain, plainURL)
	offC, onC := off.HTTPClient(), on.HTTPClient()
	interleave(b, []string{"plain", "off", "on"}, []func(){
		func() { doGET(b, plain, plainURL) },
		func() { doGET(b, offC, "http://orders:8080/items") },
		func() { doGET(b, onC, "http://orders:8080/items") },
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
	_, _, off, on := tapBenchMeshes(b)
	offC := &http.Client{Transport: off.Transport(memRoundTripper{})}
	onC := &http.Client{Transport: on.Transport(memRoundTripper{})}
	doGET(b, offC, "http://orders:8080/items")
	doGET(b, onC, "http://orders:8080/items")
	interleave(b, []string{"off", "on"}, []func(){
		func() { doGET(b, offC, "http://orders:8080/items") },
		func() { doGET(b, onC, "http://orders:8080/items") },
	})
}
