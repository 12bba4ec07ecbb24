package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/weftmesh/weft/mesh"
)

// scaleResult is one xDS scale row.
type scaleResult struct {
	name      string
	clusters  int
	endpoints int // in all
	sync      time.Duration
	change    time.Duration
	heap      int64 // the mesh's live heap after the first sync
}

// namedBackend answers every request with its name.
func (e *env) namedBackend(name string) (string, error) {
	ln, err := listen()
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, name) }),
		ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	e.defer_(func() { srv.Close(); <-done })
	return ln.Addr().String(), nil
}

// getName GETs url and returns the body: the name of the backend that
// answered.
func getName(ctx context.Context, c *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b), nil
}

// waitFor GETs url until backend want answers, and returns how long that
// took from start.
func waitFor(ctx context.Context, c *http.Client, url, want string, start time.Time) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		got, err := getName(ctx, c, url)
		if err != nil {
			return 0, err
		}
		if got == want {
			return time.Since(start), nil
		}
	}
}

// scaleName is a row's name, marked when the mesh speaks delta xDS.
func (e *env) scaleName(name string) string {
	if e.xdsDelta {
		return name + ", delta"
	}
	return name
}

// scaleRuns numbers the xDS nodes, so that no run sees another's snapshot.
var scaleRuns int

// scaleEndpointsRun measures one cluster of n endpoints: the time from
// mesh.New to the first answer (listener, routes, cluster and endpoints
// fetched and applied, a connection opened), then the time from the
// control plane's next snapshot, which moves one endpoint, to the first
// request that reaches the moved endpoint.
func (e *env) scaleEndpointsRun(ctx context.Context, cp *controlPlane, a, b string, n int) (scaleResult, error) {
	r := scaleResult{name: e.scaleName(fmt.Sprintf("1 cluster, %d endpoint%s", n, plural(n))), clusters: 1, endpoints: n}
	scaleRuns++
	node := fmt.Sprintf("scale-endpoints-%d-%d", n, scaleRuns)
	cfg := xdsConfig{version: "1",
		listeners: resourceList(listener("scale:8080", "scale")),
		routes:    resourceList(routeConfig("scale", "scale")),
		clusters:  resourceList(cluster("scale")),
		endpoints: resourceList(scaleEndpoints("scale", a, n)),
	}
	if err := cp.setSnapshot(node, cfg); err != nil {
		return r, err
	}
	const url = "http://scale:8080/"
	var err error
	r.sync, r.heap, err = e.timeSync(ctx, cp, node, func(c *http.Client, start time.Time) error {
		_, err := waitFor(ctx, c, url, "A", start)
		return err
	}, func(m *mesh.Mesh) error {
		if got := countEndpoints(m); got != n {
			return fmt.Errorf("%s: the mesh has %d endpoints after the first sync, want %d", r.name, got, n)
		}
		return nil
	}, func(c *http.Client) error {
		cfg.endpointsV = "2"
		cfg.endpoints = resourceList(scaleEndpoints("scale", b, n))
		start := time.Now()
		if err := cp.setSnapshot(node, cfg); err != nil {
			return err
		}
		r.change, err = waitFor(ctx, c, url, "B", start)
		return err
	})
	return r, err
}

// scaleClustersRun measures k services, each its own listener, route
// configuration, cluster and one endpoint: the time from mesh.New until
// each has answered once (16 requests at a time), then the time for one
// service's endpoint change to reach requests.
func (e *env) scaleClustersRun(ctx context.Context, cp *controlPlane, a, b string, k int) (scaleResult, error) {
	r := scaleResult{name: e.scaleName(fmt.Sprintf("%d clusters, 1 endpoint each", k)), clusters: k, endpoints: k}
	node := fmt.Sprintf("scale-clusters-%d", k)
	var cfg xdsConfig
	cfg.version = "1"
	eds := func(moved string) []types.Resource {
		out := make([]types.Resource, k)
		for i := range k {
			addr := a
			if i == 0 && moved != "" {
				addr = moved
			}
			out[i] = endpoints(fmt.Sprint("svc", i), addr)
		}
		return out
	}
	for i := range k {
		name := fmt.Sprint("svc", i)
		cfg.listeners = append(cfg.listeners, listener(name+":8080", name))
		cfg.routes = append(cfg.routes, routeConfig(name, name))
		cfg.clusters = append(cfg.clusters, cluster(name))
	}
	cfg.endpoints = eds("")
	if err := cp.setSnapshot(node, cfg); err != nil {
		return r, err
	}
	var err error
	r.sync, r.heap, err = e.timeSync(ctx, cp, node, func(c *http.Client, _ time.Time) error {
		return forEach(k, 16, func(i int) error {
			got, err := getName(ctx, c, fmt.Sprintf("http://svc%d:8080/", i))
			if err == nil && got != "A" {
				err = fmt.Errorf("svc%d answered by %q, want A", i, got)
			}
			return err
		})
	}, func(m *mesh.Mesh) error {
		if got := len(m.Clusters()); got != k {
			return fmt.Errorf("%s: the mesh has %d clusters after the first sync, want %d", r.name, got, k)
		}
		return nil
	}, func(c *http.Client) error {
		cfg.endpointsV = "2"
		cfg.endpoints = eds(b)
		start := time.Now()
		if err := cp.setSnapshot(node, cfg); err != nil {
			return err
		}
		r.change, err = waitFor(ctx, c, "http://svc0:8080/", "B", start)
		return err
	})
	return r, err
}

// timeSync makes a mesh on node's configuration and times sync (which
// gets the first answers), measures the heap the mesh holds, runs check
// and then change, and closes the mesh. The heap is the live heap after
// the sync less the live heap before mesh.New: the control plane's
// snapshot is already set, so the figure is the mesh's.
func (e *env) timeSync(ctx context.Context, cp *controlPlane, node string, sync func(*http.Client, time.Time) error,
	check func(*mesh.Mesh) error, change func(*http.Client) error) (time.Duration, int64, error) {
	before := measureMemory()
	start := time.Now()
	m, err := mesh.New(ctx, mesh.WithServiceName("bench-client"), mesh.WithBootstrap(cp.bootstrap(node)), mesh.WithXDSDelta(e.xdsDelta))
	if err != nil {
		return 0, 0, err
	}
	defer m.Close()
	c := m.HTTPClient()
	if err := sync(c, start); err != nil {
		return 0, 0, err
	}
	took := time.Since(start)
	heap := measureMemory().heap - before.heap
	if err := check(m); err != nil {
		return took, heap, err
	}
	return took, heap, change(c)
}

// countEndpoints is the number of endpoints in every cluster of m.
func countEndpoints(m *mesh.Mesh) int {
	n := 0
	for _, c := range m.Clusters() {
		n += len(c.Endpoints)
	}
	return n
}

// forEach calls f(0..n-1) from conc goroutines and returns the first error.
func forEach(n, conc int, f func(int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		next  int
		first error
	)
	for range conc {
		wg.Go(func() {
			for {
				mu.Lock()
				i := next
				next++
				stop := first != nil
				mu.Unlock()
				if i >= n || stop {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return first
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
