package mesh_test

import (
	"context"
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
	// /tap is not served here: its panel stays hidden.
	if !strings.Contains(dom, `<section id="tap-section" hidden="">`) {
		t.Errorf("the tap panel shows although /tap answers 404")
	}
}
