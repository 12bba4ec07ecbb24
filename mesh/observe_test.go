package mesh_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/resilience"
)

// jsonLogs is a mesh logger writing JSON lines to a buffer the test reads.
type jsonLogs struct{ buf syncBuffer }

func (l *jsonLogs) option() mesh.Option {
	return mesh.WithLogger(slog.New(slog.NewJSONHandler(&l.buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
}

// lines returns the logged records whose message is msg.
func (l *jsonLogs) lines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(l.buf.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("log line is not JSON: %v\n%s", err, sc.Text())
		}
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// wait waits until at least n lines with msg were logged and returns them.
func (l *jsonLogs) wait(t *testing.T, msg string, n int, within time.Duration) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := l.lines(t, msg)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d %q lines within %v, want %d; the log:\n%s", len(got), msg, within, n, l.buf.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitBody polls url until its body contains want and returns the status.
func waitBody(t *testing.T, c *http.Client, url, want string, within time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		code, _, body := fetch(t, c, url)
		if strings.Contains(body, want) {
			return code
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: body %q (status %d) lacks %q after %v", url, body, code, want, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMeshLogsControlPlaneLossAndReturn(t *testing.T) {
	for _, tt := range []struct{ proto string }{{"sotw"}, {"delta"}} {
		t.Run(tt.proto, func(t *testing.T) { testControlPlaneLossAndReturn(t, tt.proto == "delta") })
	}
}

func testControlPlaneLossAndReturn(t *testing.T, delta bool) {
	a := startChaosBackend(t, "a", newLedger())
	cp := xdstest.NewServer(t)
	cp.SetSnapshot(t, xdsNode, "1", chaosRoutes(a.addr)...)
	admin := freeAddr(t)
	var logs jsonLogs
	m := newMesh(t, mesh.WithServiceName("frontend"), mesh.WithBootstrap(cp.Bootstrap(xdsNode)), mesh.WithAdminAddr(admin),
		mesh.WithXDSDelta(delta), logs.option())
	proto := "sotw"
	if delta {
		proto = "delta"
	}
	c := adminClient(t)

	start := logs.wait(t, "weft: mesh started", 1, time.Second)[0]
	for k, want := range map[string]any{"service": "frontend", "mtls": "disable", "identity": "none",
		"xds_server": cp.Addr, "xds_protocol": proto, "admin": admin, "static_services": 0.0, "dns_services": 0.0} {
		if got := start[k]; got != want {
			t.Errorf("start line %s = %v, want %v", k, got, want)
		}
	}
	// Nothing watched yet: the mesh has not asked, so it is not waiting.
	if code := waitBody(t, c, "http://"+admin+"/readyz", "idle", 10*time.Second); code != http.StatusOK {
		t.Errorf("/readyz before any subscription: status %d, want 200", code)
	}

	waitServedBy(t, m.HTTPClient(), "http://orders:8080/", 10*time.Second, "a")
	logs.wait(t, "weft: control plane connected", 1, 10*time.Second)
	if code := waitBody(t, c, "http://"+admin+"/readyz", "control plane: connected", 10*time.Second); code != http.StatusOK {
		t.Errorf("/readyz while connected: status %d, want 200", code)
	}
	applied := logs.wait(t, "weft: xDS config applied", 4, 10*time.Second)
	for _, rec := range applied {
		if (!delta && rec["version"] != "1") || rec["resources"] != 1.0 {
			t.Errorf("applied line %v: want version 1, 1 resource", rec)
		}
	}

	cp.Stop()
	lost := logs.wait(t, "weft: control plane lost", 1, 10*time.Second)[0]
	if lost["error"] == "" || lost["error"] == nil {
		t.Errorf("lost line has no reason: %v", lost)
	}
	if lost["since_last_good_config"] == "never" {
		t.Errorf("lost line: since_last_good_config = never, want a duration: %v", lost)
	}
	// The last good config serves: ready, but the body and the page do
	// not pretend the control plane is there.
	if code := waitBody(t, c, "http://"+admin+"/readyz", "control plane: reconnecting", 10*time.Second); code != http.StatusOK {
		t.Errorf("/readyz while reconnecting with a cached config: status %d, want 200", code)
	}
	var st struct {
		ControlPlane struct {
			State, Text string
			LastError   string `json:"last_error"`
		} `json:"control_plane"`
	}
	_, _, body := fetch(t, c, "http://"+admin+"/stats")
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	if st.ControlPlane.State != "reconnecting" || !strings.Contains(st.ControlPlane.Text, "reconnecting") || st.ControlPlane.LastError == "" {
		t.Errorf("/stats control_plane = %+v, want reconnecting with the last error", st.ControlPlane)
	}
	_, _, page := fetch(t, c, "http://"+admin+"/")
	if !strings.Contains(page, "control_plane") || !strings.Contains(page, "controlPlanePill") {
		t.Error("the page does not show the control plane's connection")
	}

	// Let the client retry a few times (its backoff starts at 1 s) before
	// the control plane comes back; none of the retries may log a line.
	time.Sleep(3 * time.Second)
	cp.Restart(t)
	back := logs.wait(t, "weft: control plane connected", 2, 30*time.Second)[1]
	if s, _ := back["since_last_good_config"].(string); s == "" || s == "never" {
		t.Errorf("reconnected line: since_last_good_config = %v, want a duration", back["since_last_good_config"])
	}
	if back["down_for"] == nil {
		t.Errorf("reconnected line lacks down_for: %v", back)
	}
	if n, _ := back["failed_attempts"].(float64); n < 1 {
		t.Errorf("reconnected line: failed_attempts = %v, want >= 1 (the retries happened)", back["failed_attempts"])
	}
	waitBody(t, c, "http://"+admin+"/readyz", "control plane: connected", 10*time.Second)

	for msg, want := range map[string]int{
		"weft: control plane lost":              1,
		"weft: control plane still unreachable": 0, // within 30 s of the loss
		"weft: control plane unreachable":       0,
		"weft: control plane connected":         2,
		"weft: xDS config applied":              4, // the resend after reconnecting is no change
	} {
		if got := len(logs.lines(t, msg)); got != want {
			t.Errorf("%d %q lines, want %d", got, msg, want)
		}
	}
}

func TestReadyzBeforeAnyConfigIsNotReady(t *testing.T) {
	cp := xdstest.NewServer(t)
	cp.Stop() // a control plane that never answers
	admin := freeAddr(t)
	var logs jsonLogs
	m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)), mesh.WithAdminAddr(admin), logs.option())
	c := adminClient(t)

	// A request subscribes: the mesh now waits for a config.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://orders:8080/", nil)
	if resp, err := m.HTTPClient().Do(req); err == nil {
		resp.Body.Close()
	}
	if code := waitBody(t, c, "http://"+admin+"/readyz", "never connected", 10*time.Second); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before any config: status %d, want 503", code)
	}
	first := logs.wait(t, "weft: control plane unreachable", 1, 10*time.Second)[0]
	if first["error"] == "" || first["server"] != cp.Addr {
		t.Errorf("unreachable line %v: want the server and the error", first)
	}
}

func TestMeshLogsSVIDRotation(t *testing.T) {
	api := workloadAPI(t, newCA(t, shop), ordersID)
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", api.Addr())
	var logs jsonLogs
	newMesh(t, logs.option())

	start := logs.wait(t, "weft: mesh started", 1, time.Second)[0]
	if start["identity"] != ordersID.String() || start["mtls"] != "strict" {
		t.Errorf("start line identity %v mtls %v, want %v strict", start["identity"], start["mtls"], ordersID)
	}
	want := api.X509SVID().Certificates[0].NotAfter.UTC().Format(time.RFC3339)
	if start["identity_expires"] != want {
		t.Errorf("start line identity_expires = %v, want %v", start["identity_expires"], want)
	}

	svid, err := api.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	leaf := svid.Certificates[0]
	rotated := logs.wait(t, "weft: SVID rotated", 1, 20*time.Second)[0]
	if rotated["serial"] != leaf.SerialNumber.String() || rotated["expires"] != leaf.NotAfter.UTC().Format(time.RFC3339) ||
		rotated["identity"] != ordersID.String() {
		t.Errorf("rotated line %v: want serial %v, expiry %v, identity %v", rotated, leaf.SerialNumber, leaf.NotAfter.UTC(), ordersID)
	}
}

func TestMeshLogsARejectedVersionOnce(t *testing.T) {
	v1, v2 := startDualBackend(t, "v1"), startDualBackend(t, "v2")
	cp := xdstest.NewServer(t)
	cp.SetSnapshot(t, xdsNode, "1", ordersConfig(v1.addr, v2.addr, 100, 0)...)
	var logs jsonLogs
	m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)), logs.option())
	sendHTTP(t, m.HTTPClient(), 5, false)

	bad := ordersConfig(v1.addr, v2.addr, 100, 0)
	for _, r := range bad {
		if cl, ok := r.(*clusterv3.Cluster); ok && cl.Name == "orders-v1" {
			cl.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}
			cl.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
		}
	}
	cp.SetSnapshot(t, xdsNode, "2", bad...)
	// go-control-plane answers each NACK with the same version again: wait
	// for the mesh to have rejected it at least twice.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nacks := 0
	if _, err := cp.WaitRequest(ctx, func(r *discoveryv3.DiscoveryRequest) bool {
		if r.GetErrorDetail() != nil {
			nacks++
		}
		return nacks >= 2
	}); err != nil {
		t.Fatalf("the mesh did not NACK twice: %v", err)
	}
	rejected := logs.wait(t, "weft: xDS config rejected", 1, 10*time.Second)
	if len(rejected) != 1 {
		t.Errorf("%d rejected lines for one rejected version, want 1", len(rejected))
	}
	rec := rejected[0]
	if rec["level"] != "WARN" || rec["type"] != "CDS" || rec["version"] != "2" || !strings.Contains(rec["error"].(string), "orders-v1") {
		t.Errorf("rejected line %v: want WARN, CDS, version 2 and an error naming orders-v1", rec)
	}
}

func TestMeshLogsAnEjectionAndTheReturn(t *testing.T) {
	addrs, _ := backends(t, 1)
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "always failing", http.StatusServiceUnavailable)
	}))
	defer broken.Close()
	bad := broken.Listener.Addr().String()
	var logs jsonLogs
	m := newMesh(t, mesh.WithEndpoints("orders", addrs[0], bad), logs.option(),
		mesh.WithOutlierDetection(balancer.OutlierConfig{Interval: 50 * time.Millisecond, BaseEjectionTime: 100 * time.Millisecond}))
	c := m.HTTPClient()
	for i := 0; i < 300 && len(logs.lines(t, "weft: endpoint ejected")) == 0; i++ {
		get(t, c, "http://orders/items")
	}
	ejected := logs.wait(t, "weft: endpoint ejected", 1, 10*time.Second)[0]
	if ejected["cluster"] != "orders" || ejected["address"] != bad || ejected["level"] != "WARN" {
		t.Errorf("ejected line %v: want WARN, cluster orders, address %s", ejected, bad)
	}
	back := logs.wait(t, "weft: endpoint returned", 1, 10*time.Second)[0]
	if back["cluster"] != "orders" || back["address"] != bad {
		t.Errorf("returned line %v: want cluster orders, address %s", back, bad)
	}
}

func TestMeshLogsABreakerOpeningAtWarn(t *testing.T) {
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "always failing", http.StatusServiceUnavailable)
	}))
	defer broken.Close()
	var logs jsonLogs
	m := newMesh(t, mesh.WithEndpoints("orders", broken.Listener.Addr().String()), logs.option(),
		mesh.WithBreaker(resilience.BreakerSettings{ConsecutiveFailures: 2, OpenTimeout: time.Minute}))
	c := m.HTTPClient()
	for i := 0; i < 50 && len(logs.lines(t, "weft: circuit breaker")) == 0; i++ {
		if resp, err := c.Get("http://orders/"); err == nil {
			resp.Body.Close()
		}
	}
	rec := logs.wait(t, "weft: circuit breaker", 1, 10*time.Second)[0]
	if rec["to"] != "open" || rec["level"] != "WARN" || rec["service"] != "orders" {
		t.Errorf("breaker line %v: want WARN, service orders, to open", rec)
	}
}

// TestAdminPageInABrowserShowsTheControlPlaneLostAndBack: the page's
// header never shows a healthy control plane while it is away.
func TestAdminPageInABrowserShowsTheControlPlaneLostAndBack(t *testing.T) {
	chromiumPath(t)
	a := startChaosBackend(t, "a", newLedger())
	cp := xdstest.NewServer(t)
	cp.SetSnapshot(t, xdsNode, "1", chaosRoutes(a.addr)...)
	admin := freeAddr(t)
	m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)), mesh.WithAdminAddr(admin))
	waitServedBy(t, m.HTTPClient(), "http://orders:8080/", 10*time.Second, "a")
	// Traffic flows throughout, under the last good config while the
	// control plane is away: the golden metrics keep counting it.
	traffic(t, m.HTTPClient(), "http://orders:8080/")
	c := adminClient(t)
	url := "http://" + admin + "/"

	waitBody(t, c, url+"readyz", "control plane: connected", 10*time.Second)
	wantInDOM(t, render(t, url, "admin-control-plane-connected.png"), "xDS control plane connected · config age", "connected to "+cp.Addr,
		`data-direction="outbound"`)
	cp.Stop()
	waitBody(t, c, url+"readyz", "control plane: reconnecting", 10*time.Second)
	dom := render(t, url, "admin-control-plane-lost.png")
	wantInDOM(t, dom, "xDS control plane reconnecting since", "reconnecting to "+cp.Addr, "last error", "config age",
		`<span class="pill bad" id="control-plane"`, `data-direction="outbound"`, "100%")
	if strings.Contains(dom, "xDS control plane connected") {
		t.Error("the page shows the control plane connected while it is stopped")
	}
	cp.Restart(t)
	waitBody(t, c, url+"readyz", "control plane: connected", 30*time.Second)
	wantInDOM(t, render(t, url, "admin-control-plane-back.png"), "xDS control plane connected · config age", "connected to "+cp.Addr)
}

// TestMeshLogsControlPlaneLossAndSVIDRotationOnce: a mesh with an identity
// and a control plane loses the control plane, has its SVID rotated while
// it is away, and gets the control plane back. Each change is one line
// with its attributes, and nothing is logged twice.
func TestMeshLogsControlPlaneLossAndSVIDRotationOnce(t *testing.T) {
	api := workloadAPI(t, newCA(t, shop), ordersID)
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", api.Addr())
	cp := xdstest.NewServer(t)
	cp.SetSnapshot(t, xdsNode, "1", chaosRoutes("127.0.0.1:1")...)
	var logs jsonLogs
	m := newMesh(t, mesh.WithServiceName("frontend"), mesh.WithBootstrap(cp.Bootstrap(xdsNode)), logs.option())

	// A request subscribes; its outcome does not matter here.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://orders:8080/", nil)
	if resp, err := m.HTTPClient().Do(req); err == nil {
		resp.Body.Close()
	}
	logs.wait(t, "weft: control plane connected", 1, 10*time.Second)
	logs.wait(t, "weft: xDS config applied", 4, 10*time.Second)

	cp.Stop()
	lost := logs.wait(t, "weft: control plane lost", 1, 10*time.Second)[0]
	if lost["level"] != "WARN" || lost["server"] != cp.Addr || lost["error"] == "" || lost["since_last_good_config"] == "never" {
		t.Errorf("lost line %v: want WARN, server %s, the reason, the time since the last good config", lost, cp.Addr)
	}

	svid, err := api.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	leaf := svid.Certificates[0]
	rotated := logs.wait(t, "weft: SVID rotated", 1, 20*time.Second)[0]
	for k, want := range map[string]any{"level": "INFO", "identity": ordersID.String(),
		"expires": leaf.NotAfter.UTC().Format(time.RFC3339), "serial": leaf.SerialNumber.String()} {
		if rotated[k] != want {
			t.Errorf("rotated line %s = %v, want %v", k, rotated[k], want)
		}
	}

	time.Sleep(2 * time.Second) // a retry or two while away, none logged
	cp.Restart(t)
	back := logs.wait(t, "weft: control plane connected", 2, 30*time.Second)[1]
	if s, _ := back["since_last_good_config"].(string); s == "" || s == "never" || back["down_for"] == nil {
		t.Errorf("reconnected line %v: want since_last_good_config and down_for durations", back)
	}
	time.Sleep(time.Second) // room for a duplicate to show

	for msg, want := range map[string]int{
		"weft: mesh started":                    1,
		"weft: control plane lost":              1,
		"weft: control plane still unreachable": 0,
		"weft: control plane connected":         2,
		"weft: SVID rotated":                    1,
		"weft: xDS config applied":              4, // the resend after reconnecting is no change
		"weft: xDS config rejected":             0,
	} {
		if got := len(logs.lines(t, msg)); got != want {
			t.Errorf("%d %q lines, want %d; the log:\n%s", got, msg, want, logs.buf.String())
		}
	}
}

// TestMeshLogsPolicyReloadsAndRejections: a policy file saved again is one
// line; a bad one is one line naming the file and the error, the last
// good policies stay in force, and the same bad file saved again within
// 10 s is not a second line.
func TestMeshLogsPolicyReloadsAndRejections(t *testing.T) {
	policy := filepath.Join(t.TempDir(), "authz.yaml")
	if err := os.WriteFile(policy, []byte(edgePolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs jsonLogs
	newMesh(t, mesh.WithAuthorizationPolicyFile(policy), logs.option())

	two := edgePolicy + "---\n" + strings.Replace(edgePolicy, "name: edge", "name: edge-2", 1)
	writeRenamed(t, policy, []byte(two))
	reloaded := logs.wait(t, "weft: authorization policy reloaded", 1, 15*time.Second)[0]
	if reloaded["file"] != policy || reloaded["version"] != 2.0 || reloaded["policies"] != 2.0 {
		t.Errorf("reloaded line %v: want file %s, version 2, 2 policies", reloaded, policy)
	}

	const rejected = "weft: authorization policy rejected; keeping the last good authorization policies"
	writeRenamed(t, policy, []byte("kind: AuthorizationPolicy\nspec: [\n"))
	rec := logs.wait(t, rejected, 1, 15*time.Second)[0]
	if rec["level"] != "WARN" || rec["file"] != policy || rec["version_in_force"] != 2.0 || rec["error"] == "" {
		t.Errorf("rejected line %v: want WARN, file %s, version 2 in force, the error", rec, policy)
	}
	time.Sleep(10 * time.Millisecond)
	writeRenamed(t, policy, []byte("kind: AuthorizationPolicy\nspec: [\n"))
	time.Sleep(3 * time.Second) // past the watcher's next checks
	if n := len(logs.lines(t, rejected)); n != 1 {
		t.Errorf("%d rejected lines for the same bad file saved twice within 10 s, want 1", n)
	}
	if n := len(logs.lines(t, "weft: authorization policy reloaded")); n != 1 {
		t.Errorf("%d reloaded lines, want 1", n)
	}
}

// TestStateChangeLinesCarryTheRequestsTrace: the breaker opening, an
// endpoint's ejection and a denial are logged with the trace and span IDs
// of the request that caused them.
func TestStateChangeLinesCarryTheRequestsTrace(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())

	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "always failing", http.StatusServiceUnavailable)
	}))
	defer broken.Close()
	policy := filepath.Join(t.TempDir(), "authz.yaml")
	if err := os.WriteFile(policy, []byte(edgePolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	var serverLogs jsonLogs
	server := newMesh(t, mesh.WithAuthorizationPolicyFile(policy), mesh.WithTracerProvider(tp), serverLogs.option())
	addr := serveOn(t, server)

	var logs jsonLogs
	m := newMesh(t, mesh.WithEndpoints("orders", broken.Listener.Addr().String()), mesh.WithEndpoints("edge", addr),
		mesh.WithBreaker(resilience.BreakerSettings{ConsecutiveFailures: 2, OpenTimeout: time.Minute}),
		mesh.WithTracerProvider(tp), logs.option())
	ctx, span := tp.Tracer("test").Start(context.Background(), "caller")
	defer span.End()
	traceID := span.SpanContext().TraceID().String()
	send := func(url string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := m.HTTPClient().Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	for i := 0; i < 50 && len(logs.lines(t, "weft: circuit breaker")) == 0; i++ {
		send("http://orders/")
	}
	send("http://edge/private")

	// An ejection: a second mesh without the breaker, whose failing
	// endpoint is ejected by the request that fails a third time in a row.
	good, _ := backends(t, 1)
	var ejectLogs jsonLogs
	m2 := newMesh(t, mesh.WithEndpoints("orders", good[0], broken.Listener.Addr().String()), mesh.WithTracerProvider(tp),
		mesh.WithOutlierDetection(balancer.OutlierConfig{ConsecutiveErrors: 3, Interval: time.Minute}), ejectLogs.option())
	for i := 0; i < 100 && len(ejectLogs.lines(t, "weft: endpoint ejected")) == 0; i++ {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://orders/", nil)
		if resp, err := m2.HTTPClient().Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}

	opened := logs.wait(t, "weft: circuit breaker", 1, 10*time.Second)[0]
	denied := serverLogs.wait(t, "security: request denied", 1, 10*time.Second)[0]
	ejected := ejectLogs.wait(t, "weft: endpoint ejected", 1, 10*time.Second)[0]
	for name, rec := range map[string]map[string]any{"breaker": opened, "denial": denied, "ejection": ejected} {
		if rec["trace_id"] != traceID || rec["span_id"] == nil || rec["span_id"] == "" {
			t.Errorf("%s line %v: want trace_id %s and a span_id", name, rec, traceID)
		}
	}
}
