package mesh_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/browsertest"
	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
)

// The admin page is JavaScript rendering JSON; only a browser shows that
// it works. These tests run Debian's chromium headless against a live mesh
// (internal/browsertest) and read the DOM the script built. They skip
// where chromium is missing.

// chromiumPath returns the browser to run, or skips the test naming what
// is missing.
func chromiumPath(t *testing.T) string {
	t.Helper()
	return browsertest.Chromium(t)
}

func tail(s string, n int) string { return browsertest.Tail(s, n) }

// render loads url in chromium, lets its script run for 5 s of virtual
// time and returns the DOM it built, keeping a screenshot as name in
// $ARTIFACTS_DIR (else the test's temporary directory).
func render(t *testing.T, url, name string) string {
	t.Helper()
	return browsertest.Render(t, url, name, "1280,900")
}

// renderWindow is render with a window of size "width,height", for a
// screenshot that must show more than the top of the page.
func renderWindow(t *testing.T, url, name, size string) string {
	t.Helper()
	return browsertest.Render(t, url, name, size)
}

// traffic sends requests through c until the test ends, so the page has
// rates to show while the browser reads it.
func traffic(t *testing.T, c *http.Client, urls ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			req, _ := http.NewRequestWithContext(ctx, "GET", urls[i%len(urls)], nil)
			if resp, err := c.Do(req); err == nil {
				resp.Body.Close()
			}
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// statusText is what the page's status line says.
func statusText(dom string) string {
	m := regexp.MustCompile(`<span id="status-text">([^<]*)</span>`).FindStringSubmatch(dom)
	if m == nil {
		return ""
	}
	return m[1]
}

func wantInDOM(t *testing.T, dom string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(dom, w) {
			t.Errorf("the rendered page does not show %q", w)
		}
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", tail(dom, 6000))
	}
}

func TestAdminPageInABrowser(t *testing.T) {
	chromiumPath(t)
	addrs, _ := backends(t, 3)
	inv, _ := backends(t, 1)
	admin := freeAddr(t)
	m := newMesh(t, mesh.WithServiceName("checkout-frontend"), mesh.WithEndpoints("orders", addrs...),
		mesh.WithEndpoints("inventory", inv...), mesh.WithLBPolicy("least_request"), mesh.WithAdminAddr(admin))
	c := m.HTTPClient()
	for range 20 {
		get(t, c, "http://orders/items")
		get(t, c, "http://inventory/stock")
	}
	traffic(t, c, "http://orders/items", "http://orders/items", "http://inventory/stock")
	url := "http://" + admin + "/"

	dom := render(t, url, "admin-static.png")
	// The service name and endpoint addresses reach the page only through
	// the script's fetches: their presence proves it ran and rendered.
	wantInDOM(t, dom, append([]string{`<h1 id="service">checkout-frontend</h1>`, "orders", "inventory",
		"default lb (non-xDS services) least_request", "HEALTHY", "req/s", "No xDS control plane"}, append(addrs, inv...)...)...)
	if status := statusText(dom); !strings.HasPrefix(status, "live ·") {
		t.Errorf("the page's status is %q, want live", status)
	}
	// A rate needs two samples of the counters: the page kept polling.
	rate := regexp.MustCompile(`<div class="k">requests / s</div><div class="v">([0-9.,]+)<`).FindStringSubmatch(dom)
	if rate == nil {
		t.Errorf("the page shows no request rate")
	}
}

func TestAdminPageInABrowserShowsXDSRoutes(t *testing.T) {
	chromiumPath(t)
	v1, v2 := startDualBackend(t, "v1"), startDualBackend(t, "v2")
	cp := xdstest.NewServer(t)
	cp.SetSnapshot(t, xdsNode, "1", ordersConfig(v1.addr, v2.addr, 80, 20)...)
	admin := freeAddr(t)
	// Names reach the page from configuration and the control plane: one
	// written as markup must show as text, not become an element.
	name := `checkout-frontend<img src=x id=injected>`
	m := newMesh(t, mesh.WithServiceName(name), mesh.WithBootstrap(cp.Bootstrap(xdsNode)), mesh.WithAdminAddr(admin))
	sendHTTP(t, m.HTTPClient(), 20, false)
	sendHTTP(t, m.HTTPClient(), 2, true)
	traffic(t, m.HTTPClient(), "http://orders:8080/items")
	url := "http://" + admin + "/"

	dom := render(t, url, "admin-xds.png")
	if strings.Contains(dom, `id="injected"`) {
		t.Errorf("a service name became markup on the page")
	}
	wantInDOM(t, dom, `<h1 id="service">checkout-frontend&lt;img src=x id=injected&gt;</h1>`, "xDS control plane", "orders:8080", "orders-routes",
		"orders-v1", "orders-v2", "80%", "20%", `header x-canary = "true"`, "ACKED", v1.addr, v2.addr,
		`<span class="pill accent">round_robin</span>`)
	if strings.Contains(dom, `<span class="pill accent">xds</span>`) {
		t.Errorf("an xDS cluster's policy shows as xds, not the policy in force")
	}
	if status := statusText(dom); !strings.HasPrefix(status, "live ·") {
		t.Errorf("the page's status is %q, want live", status)
	}
}

// The server's page shows who callers meet and what it decided: its
// identity, the policy with its rules, the denials with the policy that
// decided and the caller, and golden metrics by caller.
func TestAdminPageInABrowserShowsInboundDenials(t *testing.T) {
	chromiumPath(t)
	serverAdmin, _, _ := inboundWithDenials(t)
	dom := renderWindow(t, "http://"+serverAdmin+"/", "admin-inbound-denials.png", "1280,1300")
	wantInDOM(t, dom, `<span class="mono" id="inbound-identity">`+ordersID.String()+`</span>`,
		"shop/orders", "shop/no-secrets", `path starts with "/secret"`,
		`<tr class="decision-deny">`, ">DENY<", "/secret/key", "no policy allowed it", frontendID.String(),
		"2 denied", `data-direction="inbound"`, "/items/1")
	if status := statusText(dom); !strings.HasPrefix(status, "live ·") {
		t.Errorf("the page's status is %q, want live", status)
	}
	// The mesh serves /tap: its panel shows, paused until asked, so the
	// page holds no stream open.
	wantInDOM(t, dom, `<section id="tap-section">`, `<button id="tap-follow" type="button">Follow live requests</button>`,
		`<span id="tap-state" class="pill" title="">paused</span>`)
	if strings.Contains(dom, `class="tap-new"`) {
		t.Errorf("the tap panel shows requests although nobody asked to follow")
	}
}

// #tap=3s in the page's URL follows /tap for 3s: the page shows the
// requests made meanwhile, each with its path, status and endpoint, and
// holds no stream open after.
func TestAdminPageInABrowserFollowsTap(t *testing.T) {
	chromiumPath(t)
	addrs, hits := backends(t, 1)
	admin := freeAddr(t)
	m := newMesh(t, mesh.WithServiceName("checkout-frontend"), mesh.WithEndpoints("orders", addrs...), mesh.WithAdminAddr(admin))
	c := m.HTTPClient()
	get(t, c, "http://orders/items/0") // before anyone follows: not on the page

	// Requests every 50ms while the browser renders, at most 600 (30s);
	// stopped before the mesh closes.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for i := 1; i <= 600; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://orders/items/%d", i), nil)
			if resp, err := c.Do(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}()
	dom := renderWindow(t, "http://"+admin+"/#tap=3s", "admin-tap-live.png", "1280,1300")
	cancel()
	wg.Wait()

	// The panel, for the log should this fail: the whole DOM is long.
	panel := dom
	if i := strings.Index(dom, `<section id="tap-section"`); i >= 0 {
		panel = dom[i:min(len(dom), i+6000)]
	}
	// Chromium holds its virtual clock for a fetch only until the
	// response's headers are in; the 5s it runs the page for then pass
	// faster than the stream's 3s, so the render may come while the page
	// still follows. Either way it follows for 3s, not until stopped.
	state := regexp.MustCompile(`<span id="tap-state" class="[^"]*" title="[^"]*">[^<]*</span>`).FindString(panel)
	if state != `<span id="tap-state" class="pill ok" title="for 3s">streaming</span>` &&
		state != `<span id="tap-state" class="pill" title="">stopped after 3s</span>` {
		t.Errorf("the tap panel's state is %s, want streaming for 3s or stopped after 3s", state)
	}
	// Each row: time, direction, protocol, method, authority, path,
	// status, latency, peer, route → cluster → endpoint, attempts, authz.
	row := regexp.MustCompile(`<tr class="tap-new"><td class="mono">[^<]*</td><td><span class="pill">outbound</span></td><td>http</td>` +
		`<td class="mono">GET</td><td class="mono">orders</td><td class="mono wrap">(/items/\d+)</td><td class="num">200</td>` +
		`<td class="num">[0-9.,]+</td><td class="mono wrap"></td><td class="mono wrap">orders → ` + regexp.QuoteMeta(addrs[0]) + `</td>`)
	rows := row.FindAllStringSubmatch(dom, -1)
	t.Logf("the tap panel shows %d requests; %s", len(rows), state)
	if len(rows) == 0 {
		t.Errorf("the tap panel shows %d rows of requests to orders, want some (%d requests reached the backend)", len(rows), hits()[addrs[0]])
	}
	for _, r := range rows {
		if r[1] == "/items/0" {
			t.Errorf("the tap panel shows a request made before following")
		}
	}
	if n := strings.Count(dom, `<tr class="tap-new">`); n != len(rows) {
		t.Errorf("the tap panel shows %d rows, %d of them for the requests sent", n, len(rows))
	}
	if !strings.Contains(dom, fmt.Sprintf(`<span class="muted" id="tap-count">%d events seen</span>`, len(rows))) {
		t.Errorf("the count of events seen is not %d", len(rows))
	}
	if t.Failed() {
		t.Logf("the tap panel:\n%s", panel)
	}
}
