package mesh_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/tap"
	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
)

// tapBackend serves the routes of tapConfig on one loopback port, HTTP
// and gRPC (h2c), through srv's inbound chain:
//   - /retry fails every other request with 503, so a request's first
//     attempt fails and its retry succeeds;
//   - /hedge holds the first of each pair of requests until it is
//     cancelled (or 10s), so the other attempt of a hedged pair wins;
//   - anything else answers 200.
func tapBackend(t *testing.T, srv *mesh.Mesh) string {
	t.Helper()
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, healthFunc(func() {}))
	var retries, hedges atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- srv.Serve(ctx, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch {
			case r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc"):
				gs.ServeHTTP(w, r)
			case strings.HasPrefix(r.URL.Path, "/retry"):
				if retries.Add(1)%2 == 1 {
					http.Error(w, "try again", http.StatusServiceUnavailable)
					return
				}
				io.WriteString(w, "ok")
			case strings.HasPrefix(r.URL.Path, "/hedge"):
				if hedges.Add(1)%2 == 1 {
					select {
					case <-r.Context().Done():
					case <-time.After(10 * time.Second):
					}
					return
				}
				io.WriteString(w, "fast")
			default:
				io.WriteString(w, "ok")
			}
		}))
	}()
	t.Cleanup(func() { cancel(); gs.Stop(); <-done })
	return ln.Addr().String()
}

// tapConfig routes orders:8080: /retry retries 5xx twice, /hedge sends
// two attempts at once, the rest goes plainly to the one cluster.
func tapConfig(backend string) []types.Resource {
	fwd := func(name, prefix string, edit func(*routev3.RouteAction)) *routev3.Route {
		a := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "orders"}}
		if edit != nil {
			edit(a)
		}
		return &routev3.Route{Name: name, Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
			Action: &routev3.Route_Route{Route: a}}
	}
	rc := &routev3.RouteConfiguration{Name: "orders-routes", VirtualHosts: []*routev3.VirtualHost{{
		Name: "orders", Domains: []string{"orders:8080"},
		Routes: []*routev3.Route{
			fwd("retry", "/retry", func(a *routev3.RouteAction) {
				a.RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(2)}
			}),
			fwd("hedge", "/hedge", func(a *routev3.RouteAction) {
				a.HedgePolicy = &routev3.HedgePolicy{InitialRequests: wrapperspb.UInt32(2)}
			}),
			fwd("default", "/", nil),
		},
	}}}
	return []types.Resource{xdstest.Listener("orders:8080", "orders-routes"), rc,
		xdstest.Cluster("orders", ""), xdstest.Endpoints("orders", backend)}
}

// tapLines are the events a /tap follower has read so far.
type tapLines struct {
	mu     sync.Mutex
	events []map[string]any
	ended  bool
	more   chan struct{} // signalled on each new line
}

// follow opens /tap like `curl -N` and collects its lines.
func follow(t *testing.T, admin, query string) *tapLines {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tr := &http.Transport{}
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+admin+"/tap"+query, nil)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		b, _ := io.ReadAll(resp.Body)
		cancel()
		t.Fatalf("/tap%s: %d %s %q", query, resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	l := &tapLines{more: make(chan struct{}, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer l.signal(true)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var ev map[string]any
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				if ctx.Err() == nil { // not the line cut off by the test's end
					t.Errorf("/tap line %q: %v", sc.Text(), err)
				}
				return
			}
			l.mu.Lock()
			l.events = append(l.events, ev)
			l.mu.Unlock()
			l.signal(false)
		}
	}()
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
		<-done
		tr.CloseIdleConnections()
	})
	return l
}

func (l *tapLines) signal(ended bool) {
	l.mu.Lock()
	l.ended = l.ended || ended
	l.mu.Unlock()
	select {
	case l.more <- struct{}{}:
	default:
	}
}

// await returns the first line so far, or within 20s, that satisfies
// match.
func await(t *testing.T, l *tapLines, what string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		l.mu.Lock()
		for _, ev := range l.events {
			if match(ev) {
				l.mu.Unlock()
				return ev
			}
		}
		ended := l.ended
		l.mu.Unlock()
		if ended {
			t.Fatalf("/tap ended before %s", what)
		}
		select {
		case <-l.more:
		case <-timeout:
			t.Fatalf("no /tap line for %s within 20s", what)
		}
	}
}

func attemptsOf(ev map[string]any) (reasons []string, statuses []int) {
	as, _ := ev["attempts"].([]any)
	for _, a := range as {
		m := a.(map[string]any)
		reasons = append(reasons, m["reason"].(string))
		statuses = append(statuses, int(m["status"].(float64)))
	}
	return reasons, statuses
}

// TestTapFollowsRetriesHedgesAndDenials follows /tap as curl does while a
// request is retried, another hedged and a third denied, over HTTP and
// gRPC: each line carries the routing decision, the attempts and why each
// was made, and, inbound, the authorization rule that decided.
func TestTapFollowsRetriesHedgesAndDenials(t *testing.T) {
	cp := xdstest.NewServer(t)
	admin := freeAddr(t)
	m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)), mesh.WithAdminAddr(admin),
		mesh.WithAuthorizationPolicyFile(writePolicy(t, denyAdminPolicy)))
	backend := tapBackend(t, m)
	cp.SetSnapshot(t, xdsNode, "1", tapConfig(backend)...)
	all := follow(t, admin, "")
	denials := follow(t, admin, "?direction=inbound&status=4xx")
	outGRPC := follow(t, admin, "?protocol=grpc&direction=outbound")

	c := m.HTTPClient()
	do := func(path string, want int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://orders:8080"+path, nil)
		req.Header.Set("Authorization", "Bearer secret-token")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	do("/retry/1?token=secret-query", 200)
	do("/hedge/1", 200)
	do("/admin/users", 403)
	cc, err := m.DialGRPC("xds:///orders:8080")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("gRPC Check: %v", err)
	}

	outbound := func(path string) func(map[string]any) bool {
		return func(ev map[string]any) bool { return ev["direction"] == "outbound" && ev["path"] == path }
	}
	var lines []string
	keep := func(ev map[string]any) map[string]any {
		b, _ := json.Marshal(ev)
		lines = append(lines, string(b))
		return ev
	}

	retry := keep(await(t, all, "the retried request", outbound("/retry/1")))
	if r, s := attemptsOf(retry); fmt.Sprint(r, s) != "[first retry] [503 200]" {
		t.Errorf("retried request: attempts %v with statuses %v, want first (503) then retry (200)\n%v", r, s, retry)
	}
	if retry["route"] != "retry" || retry["cluster"] != "orders" || retry["endpoint"] != backend || retry["status"] != float64(200) ||
		retry["protocol"] != "http" || retry["method"] != "GET" || retry["authority"] != "orders:8080" {
		t.Errorf("retried request: %v, want route retry, cluster orders, endpoint %s, status 200", retry, backend)
	}
	if lat, _ := retry["latency_ms"].(float64); lat <= 0 {
		t.Errorf("retried request: latency_ms %v, want > 0", retry["latency_ms"])
	}
	if _, err := time.Parse(time.RFC3339Nano, retry["time"].(string)); err != nil {
		t.Errorf("time %q: %v", retry["time"], err)
	}

	hedge := keep(await(t, all, "the hedged request", outbound("/hedge/1")))
	// Both attempts start at once: the order they reach the balancer in
	// is the scheduler's.
	if r, s := attemptsOf(hedge); len(r) != 2 || !slices.Contains(r, "first") || !slices.Contains(r, "hedge") || !slices.Contains(s, 200) {
		t.Errorf("hedged request: attempts %v with statuses %v, want a first and a hedge, one answering 200\n%v", r, s, hedge)
	}
	if hedge["route"] != "hedge" || hedge["status"] != float64(200) {
		t.Errorf("hedged request: %v, want route hedge, status 200", hedge)
	}

	denied := keep(await(t, denials, "the denial", func(ev map[string]any) bool { return ev["path"] == "/admin/users" }))
	authz, _ := denied["authz"].(map[string]any)
	if denied["status"] != float64(403) || authz["decision"] != "deny" || !strings.Contains(fmt.Sprint(authz["rule"]), "deny-admin") {
		t.Errorf("denial: %v, want 403 with authz deny by deny-admin", denied)
	}
	// The inbound side of the retried request was allowed: no rule
	// matched, so the default allow decided.
	in := keep(await(t, all, "an inbound allowed request", func(ev map[string]any) bool {
		return ev["direction"] == "inbound" && ev["path"] == "/retry/1" && ev["status"] == float64(200)
	}))
	if a, _ := in["authz"].(map[string]any); a["decision"] != "allow" {
		t.Errorf("inbound request: authz %v, want allow", in["authz"])
	}

	call := keep(await(t, outGRPC, "the gRPC call", func(map[string]any) bool { return true }))
	if call["method"] != "/grpc.health.v1.Health/Check" || call["grpc_status"] != "OK" || call["status"] != float64(200) ||
		call["route"] != "default" || call["cluster"] != "orders" || call["endpoint"] != backend {
		t.Errorf("gRPC call: %v, want Health/Check OK by route default to %s", call, backend)
	}
	if r, _ := attemptsOf(call); fmt.Sprint(r) != "[first]" {
		t.Errorf("gRPC call: attempts %v, want one first attempt", r)
	}

	// Headers and query strings never appear: not the Authorization
	// header nor the query's token.
	for _, l := range lines {
		if strings.Contains(l, "secret") || strings.Contains(strings.ToLower(l), "authorization") {
			t.Errorf("a tap line shows a header or the query: %s", l)
		}
	}
}

// TestTapSubscriberBound: the ninth follower is refused with 429 and the
// reason, and a closed follower frees its place.
func TestTapSubscriberBound(t *testing.T) {
	admin := freeAddr(t)
	newMesh(t, mesh.WithAdminAddr(admin))
	for i := 0; i < tap.DefaultMaxSubscribers; i++ {
		follow(t, admin, "")
	}
	c := adminClient(t)
	code, h, body := fetch(t, c, "http://"+admin+"/tap")
	if code != http.StatusTooManyRequests || !strings.Contains(body, "8 already follow") || h.Get("Retry-After") == "" {
		t.Errorf("ninth /tap: %d %q (Retry-After %q), want 429 saying 8 already follow", code, body, h.Get("Retry-After"))
	}
	code, _, body = fetch(t, c, "http://"+admin+"/tap?status=6xx")
	if code != http.StatusBadRequest || !strings.Contains(body, "status") {
		t.Errorf("/tap?status=6xx: %d %q, want 400 naming status", code, body)
	}
}

// TestTapSlowReaderDoesNotSlowRequests: a subscriber that never reads
// loses events, counted, and every request completes regardless.
func TestTapSlowReaderDoesNotSlowRequests(t *testing.T) {
	srv := newMesh(t)
	backend := tapBackend(t, srv)
	m := newMesh(t, mesh.WithEndpoints("orders", backend))
	sub, err := mesh.TapBus(m).Subscribe(tap.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	const n = tap.DefaultBuffer + 200
	c := m.HTTPClient()
	done := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			resp, err := c.Get("http://orders/items")
			if err != nil {
				done <- err
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("%d requests did not complete in 60s with a subscriber that does not read", n)
	}
	if got, d := len(sub.Events()), sub.TakeDropped(); got != tap.DefaultBuffer || d != n-tap.DefaultBuffer {
		t.Errorf("subscriber holds %d events and dropped %d, want its buffer full (%d) and %d dropped", got, d, tap.DefaultBuffer, n-tap.DefaultBuffer)
	}
}

// denyListPolicy denies the health service's List to everyone.
const denyListPolicy = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-list, namespace: ops}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/grpc.health.v1.Health/List"]}}]
`

// TestTapGRPCOutsideXDS: a mesh gRPC server's calls show on its /tap with
// their code and the authorization decision, a denial naming its
// policy; the client mesh, which knows the server from WEFT_ENDPOINTS,
// shows the same calls outbound, the service as their cluster.
func TestTapGRPCOutsideXDS(t *testing.T) {
	srvAdmin, clAdmin := freeAddr(t), freeAddr(t)
	srv := newMesh(t, mesh.WithAdminAddr(srvAdmin), mesh.WithAuthorizationPolicyFile(writePolicy(t, denyListPolicy)))
	gs, err := srv.NewGRPCServer()
	if err != nil {
		t.Fatal(err)
	}
	healthpb.RegisterHealthServer(gs, healthFunc(func() {}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(ln)
	defer gs.Stop()
	cl := newMesh(t, mesh.WithAdminAddr(clAdmin), mesh.WithEndpoints("health", ln.Addr().String()))
	inbound := follow(t, srvAdmin, "?direction=inbound&protocol=grpc")
	outbound := follow(t, clAdmin, "?direction=outbound&service=health")

	cc, err := cl.DialGRPC("health")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	hc := healthpb.NewHealthClient(cc)
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if _, err := hc.List(ctx, &healthpb.HealthListRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("List: %v, want PermissionDenied", err)
	}
	check := await(t, inbound, "Check", func(ev map[string]any) bool { return ev["method"] == "/grpc.health.v1.Health/Check" })
	if a, _ := check["authz"].(map[string]any); check["grpc_status"] != "OK" || check["status"] != float64(200) || a["decision"] != "allow" ||
		check["path"] != "/grpc.health.v1.Health/Check" || !strings.HasPrefix(fmt.Sprint(check["endpoint"]), "127.0.0.1:") {
		t.Errorf("Check: %v, want OK, allowed, from 127.0.0.1", check)
	}
	list := await(t, inbound, "List", func(ev map[string]any) bool { return ev["method"] == "/grpc.health.v1.Health/List" })
	if a, _ := list["authz"].(map[string]any); list["grpc_status"] != "PermissionDenied" || a["decision"] != "deny" || a["rule"] != "ops/deny-list" {
		t.Errorf("List: %v, want PermissionDenied, denied by ops/deny-list", list)
	}
	out := await(t, outbound, "List, outbound", func(ev map[string]any) bool { return ev["method"] == "/grpc.health.v1.Health/List" })
	if out["cluster"] != "health" || out["endpoint"] != ln.Addr().String() || out["grpc_status"] != "PermissionDenied" || out["authority"] != "health" {
		t.Errorf("List, outbound: %v, want cluster health, endpoint %s, PermissionDenied", out, ln.Addr())
	}
	if r, _ := attemptsOf(out); fmt.Sprint(r) != "[first]" {
		t.Errorf("List, outbound: attempts %v, want one first attempt", r)
	}
}
