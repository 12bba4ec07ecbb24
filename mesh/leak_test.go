package mesh_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
)

func openFDs(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count file descriptors here: %v", err)
	}
	return len(fds)
}

// settle waits until fds and goroutines are back within slack of the
// baseline (connections closing and their goroutines exiting take a
// moment), and returns the last counts.
func settle(t *testing.T, fd0, g0, slack int) (fds, gs int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		fds, gs = openFDs(t), runtime.NumGoroutine()
		if (fds <= fd0+slack && gs <= g0+slack) || time.Now().After(deadline) {
			return fds, gs
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLeakFDsAndGoroutines sends churnRequests requests while connections
// churn on both sides: the backends close every 10th connection after its
// response, and every 7th request asks for no keep-alive. File descriptors
// and goroutines must come back to where they were after the warm-up.
func TestLeakFDsAndGoroutines(t *testing.T) {
	if testing.Short() {
		t.Skip("sends many requests")
	}
	led := newLedger()
	var addrs []string
	for _, name := range []string{"a", "b", "c"} {
		b := startChaosBackend(t, name, led, closeEvery(10))
		addrs = append(addrs, b.addr)
	}
	m := newMesh(t, mesh.WithEndpoints("orders", addrs...))
	c := m.HTTPClient()

	const workers = 8
	var sent, failed atomic.Int64
	var maxFD, maxG atomic.Int64
	send := func(n int64) {
		var wg sync.WaitGroup
		var next atomic.Int64
		for range workers {
			wg.Go(func() {
				for {
					i := next.Add(1)
					if i > n {
						return
					}
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					req, _ := http.NewRequestWithContext(ctx, "GET", "http://orders/items/"+strconv.FormatInt(i, 10), nil)
					req.Close = i%7 == 0
					resp, err := c.Do(req)
					if err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK {
							failed.Add(1)
						}
					} else {
						failed.Add(1)
					}
					cancel()
					sent.Add(1)
					if i%1000 == 0 {
						if fd := int64(openFDs(t)); fd > maxFD.Load() {
							maxFD.Store(fd)
						}
						if g := int64(runtime.NumGoroutine()); g > maxG.Load() {
							maxG.Store(g)
						}
					}
				}
			})
		}
		wg.Wait()
	}
	// The ledger would grow with every request id; this test sends none.
	send(2000)
	c.CloseIdleConnections()
	fd0, g0 := settle(t, 0, 0, 0)
	start := time.Now()
	send(churnRequests)
	took := time.Since(start)
	c.CloseIdleConnections()
	const slack = 8
	fd1, g1 := settle(t, fd0, g0, slack)

	t.Logf("%d requests with connection churn in %v: fds %d -> %d (peak %d), goroutines %d -> %d (peak %d), %d failed",
		churnRequests, took.Round(time.Millisecond), fd0, fd1, maxFD.Load(), g0, g1, maxG.Load(), failed.Load())
	if fd1 > fd0+slack {
		t.Errorf("file descriptors: %d after the warm-up, %d after %d more requests; something keeps connections", fd0, fd1, churnRequests)
	}
	if g1 > g0+slack {
		t.Errorf("goroutines: %d after the warm-up, %d after %d more requests", g0, g1, churnRequests)
	}
	if failed.Load() > 0 {
		t.Errorf("%d of %d requests failed under connection churn", failed.Load(), sent.Load())
	}
}

// TestLeakMemoryWhileEndpointsChurn pushes 300 EDS versions of 500
// endpoints each, every version dropping some addresses and adding new
// ones, while requests flow; the heap after GC must not grow with the
// number of versions.
func TestLeakMemoryWhileEndpointsChurn(t *testing.T) {
	led := newLedger()
	a, b := startChaosBackend(t, "a", led), startChaosBackend(t, "b", led)
	cp := xdstest.NewServer(t)
	version := func(v int) []types.Resource {
		res := chaosRoutes()
		// 2 live endpoints and 498 idle ones at priority 1, from a window
		// of ports that slides by 50 each version.
		la := hugeEndpoints(500, a.addr, b.addr)
		idle := la.Endpoints[1].LbEndpoints
		for i, e := range idle {
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			sa.PortSpecifier = &corev3.SocketAddress_PortValue{PortValue: uint32(10000 + (v*50+i)%40000)}
		}
		res[3] = la
		return res
	}
	cp.SetSnapshot(t, xdsNode, "1", version(1)...)
	m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)))
	waitServedBy(t, m.HTTPClient(), "http://orders:8080/", 10*time.Second, "a", "b")

	l := &load{c: m.HTTPClient(), url: "http://orders:8080", workers: 2, max: 200000, pace: 2 * time.Millisecond}
	run := l.start(t)
	var heaps []uint64
	const versions = 300
	for v := 2; v <= versions; v++ {
		cp.SetSnapshot(t, xdsNode, strconv.Itoa(v), version(v)...)
		time.Sleep(2 * time.Millisecond)
		if v%100 == 0 {
			waitACK(t, cp, strconv.Itoa(v), 30*time.Second)
			heaps = append(heaps, heapAfterGC())
		}
	}
	run.halt()
	// Requests record their ids for the other invariants; drop them
	// before the last measure so only the mesh's memory remains.
	run.mu.Lock()
	run.started = nil
	run.mu.Unlock()
	led.mu.Lock()
	led.runs = nil
	led.mu.Unlock()
	heaps = append(heaps, heapAfterGC())

	mib := func(b uint64) float64 { return float64(b) / (1 << 20) }
	t.Logf("heap after GC at versions 100, 200, 300 and after the load: %.1f, %.1f, %.1f, %.1f MiB (%d requests)",
		mib(heaps[0]), mib(heaps[1]), mib(heaps[2]), mib(heaps[3]), run.sent.Load())
	if grown := int64(heaps[3]) - int64(heaps[0]); grown > 8<<20 {
		t.Errorf("heap grew %.1f MiB between version 100 and the end; endpoint churn leaks", float64(grown)/(1<<20))
	}
	run.checkNoFailure(t)
}
