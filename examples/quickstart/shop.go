package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/examples/controlplane/devplane"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/resilience"
	"github.com/weftmesh/weft/security"
	"github.com/weftmesh/weft/security/spiffetest"
)

// trustDomain is the development trust domain every workload belongs to.
var trustDomain = spiffeid.RequireTrustDomainFromString("shop.example")

// ordersPolicy lets the frontend, and only the frontend, call orders: any
// other workload of the trust domain gets 403 before the handler runs.
const ordersPolicy = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: orders
spec:
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["shop.example/ns/shop/sa/frontend"]
`

// Traffic policy of orders, shared by every config the story applies.
const (
	routeTimeout   = 300 * time.Millisecond
	consecutive5xx = 3
	// maxRetries bounds the frontend's retries to orders in flight, per
	// version: retries must not multiply the load on a struggling service.
	maxRetries = 3
	// maxInventoryCalls bounds orders' calls to inventory in flight, per
	// replica.
	maxInventoryCalls = 8
	ordersSPIFFEID    = "spiffe://shop.example/ns/shop/sa/orders"
)

const (
	// slowInventory is how long inventory takes to answer when slow:
	// longer than any caller waits.
	slowInventory = time.Second
	testerHeader  = "x-tester"
	// requestIDHeader lets the replicas count the attempts of each request,
	// so that retries are measured where they land.
	requestIDHeader = "x-request-id"
)

// meshConfig is the devplane YAML for a split between v1 and v2; with
// testers, requests carrying x-tester: true go to v2 whatever the split.
func meshConfig(v1, v2 []string, w1, w2 int, testers bool) string {
	routes := ""
	if testers {
		routes = `
    routes:
      - name: testers
        headers: [{name: ` + testerHeader + `, exact: "true"}]
        version: v2`
	}
	return fmt.Sprintf(`services:
  - name: orders
    port: 8080
    versions:
      v1: [%s]
      v2: [%s]
    split: {v1: %d, v2: %d}%s
    timeout: %v
    retry:
      retry_on: [5xx, gateway-error, reset]
      num_retries: 2
    outlier_detection:
      consecutive_5xx: %d
      interval: 1s
      base_ejection_time: 10s
      max_ejection_percent: 50
    circuit_breakers:
      max_retries: %d
    allowed_spiffe_ids: ["%s"]
`, strings.Join(v1, ", "), strings.Join(v2, ", "), w1, w2, routes, routeTimeout, consecutive5xx, maxRetries, ordersSPIFFEID)
}

// replica is one orders server. fail makes it answer 503, as a bad
// deployment would; hits counts the requests its handler saw.
type replica struct {
	name, version, addr string
	fail                atomic.Bool
	hits                atomic.Int64
}

// attempts counts, per request id, how many times the orders replicas saw
// a request (more than once means the mesh retried it), and how long a
// replica took to answer it with the inventory breaker's refusal.
type attempts struct {
	mu sync.Mutex
	n  map[string]attemptRecord
}

type attemptRecord struct {
	tries int
	// refusal is the longest a replica took, from the request's arrival,
	// to have the breaker's refusal in hand: what the breaker itself costs
	// a request, whatever the machine's queues add around it.
	refusal time.Duration
}

func (a *attempts) add(id string) { a.update(id, func(r *attemptRecord) { r.tries++ }) }

func (a *attempts) refused(id string, took time.Duration) {
	a.update(id, func(r *attemptRecord) { r.refusal = max(r.refusal, took) })
}

// update changes the record of request id; a request without one is not
// counted.
func (a *attempts) update(id string, f func(*attemptRecord)) {
	if id == "" {
		return
	}
	a.mu.Lock()
	r := a.n[id]
	f(&r)
	a.n[id] = r
	a.mu.Unlock()
}

func (a *attempts) get(id string) attemptRecord {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n[id]
}

// shop is every process of the story, run as goroutines of this one.
type shop struct {
	ca                *spiffetest.CA
	devplane          *devplane.Server
	devplaneAddr      string
	frontend, reports *mesh.Mesh
	replicas          []*replica
	v1Addrs, v2Addrs  []string
	inventorySlow     atomic.Bool
	attempts          attempts
	closers           []func()
}

// close stops everything start started, last first.
func (s *shop) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

func (s *shop) onClose(f func()) { s.closers = append(s.closers, f) }

// startShop starts the trust domain, inventory, the orders replicas, the
// control plane and the two callers. On error, what was started is
// stopped.
func startShop(ctx context.Context, log *slog.Logger, out io.Writer) (_ *shop, err error) {
	s := &shop{attempts: attempts{n: map[string]attemptRecord{}}}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	// ctx bounds the Workload API sources and the servers. It ends last,
	// after the callers and then the servers' meshes have closed.
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	s.onClose(func() { cancel(); wg.Wait() })

	s.ca, err = spiffetest.NewCA(trustDomain)
	if err != nil {
		return nil, err
	}
	// One Workload API per workload, as a SPIRE or Istio agent serves each
	// workload its own SVID.
	identity := func(name string) (security.Source, error) {
		api, err := spiffetest.StartWorkloadAPI(s.ca, spiffeid.RequireFromPath(trustDomain, "/ns/shop/sa/"+name))
		if err != nil {
			return nil, err
		}
		s.onClose(func() { api.Close() })
		src, err := security.NewWorkloadAPISource(ctx, api.Addr())
		if err != nil {
			return nil, err
		}
		s.onClose(func() { src.Close() })
		return src, nil
	}
	listen := func() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

	// inventory: a gRPC service whose answers can be made slow.
	invSrc, err := identity("inventory")
	if err != nil {
		return nil, err
	}
	invMesh, err := mesh.New(ctx, mesh.WithServiceName("inventory"), mesh.WithX509Source(invSrc), mesh.WithLogger(log))
	if err != nil {
		return nil, err
	}
	s.onClose(func() { invMesh.Close() })
	gs, err := invMesh.NewGRPCServer()
	if err != nil {
		return nil, err
	}
	healthpb.RegisterHealthServer(gs, &inventoryServer{slow: &s.inventorySlow})
	gln, err := listen()
	if err != nil {
		return nil, err
	}
	wg.Add(1)
	go func() { defer wg.Done(); gs.Serve(gln) }()
	s.onClose(gs.Stop)
	invAddr := gln.Addr().String()

	// orders: three replicas of two versions sharing one identity and one
	// authorization policy; each asks inventory before answering.
	ordersSrc, err := identity("orders")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "weft-quickstart")
	if err != nil {
		return nil, err
	}
	s.onClose(func() { os.RemoveAll(dir) })
	policyFile := filepath.Join(dir, "authz.yaml")
	if err := os.WriteFile(policyFile, []byte(ordersPolicy), 0o600); err != nil {
		return nil, err
	}
	for _, rv := range []struct{ name, version string }{{"v1-a", "v1"}, {"v1-b", "v1"}, {"v2-a", "v2"}} {
		// Each replica is its own mesh, as it would be its own process,
		// with its own connection to inventory and its own circuit
		// breaker on it: past maxInventoryCalls in flight, a call fails at
		// once instead of queueing behind a slow inventory.
		m, err := mesh.New(ctx, mesh.WithServiceName("orders"), mesh.WithX509Source(ordersSrc),
			mesh.WithAuthorizationPolicyFile(policyFile), mesh.WithEndpoints("inventory", invAddr),
			mesh.WithCircuitBreaker(resilience.Limits{MaxRequests: maxInventoryCalls}), mesh.WithLogger(log))
		if err != nil {
			return nil, err
		}
		s.onClose(func() { m.Close() })
		conn, err := m.DialGRPC("inventory")
		if err != nil {
			return nil, err
		}
		s.onClose(func() { conn.Close() })
		inventory := healthpb.NewHealthClient(conn)
		// One call before serving opens the connection, so that the first
		// requests do not all wait for the handshake and trip the breaker.
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = inventory.Check(wctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
		cancel()
		if err != nil {
			return nil, fmt.Errorf("orders %s cannot reach inventory: %w", rv.name, err)
		}
		ln, err := listen()
		if err != nil {
			return nil, err
		}
		r := &replica{name: rv.name, version: rv.version, addr: ln.Addr().String()}
		s.replicas = append(s.replicas, r)
		if r.version == "v1" {
			s.v1Addrs = append(s.v1Addrs, r.addr)
		} else {
			s.v2Addrs = append(s.v2Addrs, r.addr)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.Serve(ctx, ln, s.ordersHandler(r, inventory))
		}()
	}
	fmt.Fprintf(out, "  inventory (gRPC)  %s\n", invAddr)
	for _, r := range s.replicas {
		fmt.Fprintf(out, "  orders %-10s %s\n", r.name, r.addr)
	}

	// The control plane, fed from a string as a file would feed it.
	s.devplane = devplane.New(devplane.WithLogger(log))
	s.onClose(func() { s.devplane.Close() })
	if err := s.apply(90, 10, true); err != nil {
		return nil, err
	}
	xln, err := listen()
	if err != nil {
		return nil, err
	}
	s.devplaneAddr = xln.Addr().String()
	wg.Add(1)
	go func() { defer wg.Done(); s.devplane.Serve(ctx, xln) }()
	fmt.Fprintf(out, "  devplane (xDS)    %s\n", s.devplaneAddr)

	// The callers: meshes that know orders only by name, through xDS.
	caller := func(name string) (*mesh.Mesh, error) {
		src, err := identity(name)
		if err != nil {
			return nil, err
		}
		m, err := mesh.New(ctx, mesh.WithServiceName(name), mesh.WithX509Source(src),
			mesh.WithBootstrap(devplane.BootstrapJSON(s.devplaneAddr, name)), mesh.WithLogger(log))
		if err != nil {
			return nil, err
		}
		s.onClose(func() { m.Close() })
		return m, nil
	}
	if s.frontend, err = caller("frontend"); err != nil {
		return nil, err
	}
	if s.reports, err = caller("reports"); err != nil {
		return nil, err
	}
	return s, nil
}

// apply makes the control plane serve a new split.
func (s *shop) apply(w1, w2 int, testers bool) error {
	cfg, err := devplane.Parse([]byte(meshConfig(s.v1Addrs, s.v2Addrs, w1, w2, testers)), "quickstart.yaml")
	if err != nil {
		return err
	}
	_, err = s.devplane.Apply(cfg)
	return err
}

// ejected counts the orders endpoints the frontend's outlier detection
// has taken out of rotation right now.
func (s *shop) ejected() int {
	n := 0
	for _, c := range s.frontend.Clusters() {
		if !strings.HasPrefix(c.Service, "orders-") {
			continue
		}
		for _, e := range c.Endpoints {
			if e.Ejected {
				n++
			}
		}
	}
	return n
}

func (s *shop) ordersHandler(r *replica, inventory healthpb.HealthClient) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		arrived := time.Now()
		r.hits.Add(1)
		id := req.Header.Get(requestIDHeader)
		s.attempts.add(id)
		if r.fail.Load() {
			http.Error(w, r.name+" is failing", http.StatusServiceUnavailable)
			return
		}
		// The request's context carries the caller's remaining time
		// (Weft-Timeout), so a slow inventory is abandoned when the caller
		// gives up, not a second later.
		if _, err := inventory.Check(req.Context(), &healthpb.HealthCheckRequest{}); err != nil {
			// A call the circuit breaker refused is answered at once with
			// the reason, so the caller can tell shedding from slowness.
			if code, reason, ok := resilience.HTTPStatus(err); ok {
				if reason == resilience.ReasonOverflow {
					// Recorded before the answer leaves, so the caller
					// finds it when the answer arrives.
					s.attempts.refused(id, time.Since(arrived))
				}
				w.Header().Set(resilience.ReasonHeader, reason)
				http.Error(w, "inventory: "+err.Error(), code)
				return
			}
			http.Error(w, "inventory: "+status.Code(err).String(), http.StatusGatewayTimeout)
			return
		}
		fmt.Fprintf(w, "%s %s\n", r.version, r.name)
	})
}

// inventoryServer answers health checks: the smallest real gRPC service.
// When slow is set it takes slowInventory to answer, or until the caller
// gives up.
type inventoryServer struct {
	healthpb.UnimplementedHealthServer
	slow *atomic.Bool
}

func (s *inventoryServer) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if s.slow.Load() {
		t := time.NewTimer(slowInventory)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func (*inventoryServer) List(context.Context, *healthpb.HealthListRequest) (*healthpb.HealthListResponse, error) {
	return nil, status.Error(codes.Unimplemented, "inventory lists nothing")
}

// warmUp sends requests one at a time until every orders replica has
// answered the frontend, so that the measured load does not start with
// xDS lookups and TLS handshakes; testers' requests reach v2 sooner.
func (s *shop) warmUp(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	c := s.frontend.HTTPClient()
	for i := 0; ; i++ {
		answered := 0
		for _, r := range s.replicas {
			if r.hits.Load() > 0 {
				answered++
			}
		}
		if answered == len(s.replicas) && i >= 10 {
			return nil
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://orders:8080/orders/42", nil)
		if err != nil {
			return err
		}
		if i%2 == 1 {
			req.Header.Set(testerHeader, "true")
		}
		resp, err := c.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("warming up: %w (last error: %v)", ctx.Err(), err)
			}
			sleep(ctx, 50*time.Millisecond)
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
