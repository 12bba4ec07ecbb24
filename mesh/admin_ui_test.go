package mesh_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/mesh"
)

// adminClient is a client of its own for the admin endpoint, whose idle
// connections are closed when the test ends (goleak checks).
func adminClient(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// fetch returns the status, headers and body of a GET.
func fetch(t *testing.T, c *http.Client, url string) (int, http.Header, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func TestAdminPageIsServedSelfContained(t *testing.T) {
	admin := freeAddr(t)
	newMesh(t, mesh.WithAdminAddr(admin))
	c := adminClient(t)

	code, h, body := fetch(t, c, "http://"+admin+"/")
	if code != http.StatusOK {
		t.Fatalf("GET /: status %d", code)
	}
	if ct := h.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type = %q, want text/html; charset=utf-8", ct)
	}
	for _, want := range []string{"<!doctype html>", "<script>", "fetch(", `"stats", "clusters", "routes"`, "<style>", `id="services"`} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, placeholder := range []string{"{{STYLE}}", "{{SCRIPT}}"} {
		if strings.Contains(body, placeholder) {
			t.Errorf("page still holds %s", placeholder)
		}
	}
	// Nothing outside the admin endpoint: no CDN, no external asset.
	for _, bad := range []string{"http://", "https://", "src=", "innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"} {
		if strings.Contains(strings.ReplaceAll(body, "http://www.w3.org/2000/svg", ""), bad) {
			t.Errorf("page contains %q", bad)
		}
	}
	csp := h.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'sha256-", "connect-src 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("Content-Security-Policy %q lacks %s", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") {
		t.Errorf("Content-Security-Policy allows any inline script: %q", csp)
	}

	// The page is the root alone; other paths stay 404s.
	if code, _, _ := fetch(t, c, "http://"+admin+"/no-such-page"); code != http.StatusNotFound {
		t.Errorf("GET /no-such-page: status %d, want 404", code)
	}
}

func TestAdminStatsCountsRequestsPerService(t *testing.T) {
	addrs, _ := backends(t, 2)
	admin := freeAddr(t)
	m := newMesh(t, mesh.WithServiceName("frontend"), mesh.WithEndpoints("orders", addrs...), mesh.WithAdminAddr(admin))
	c := adminClient(t)

	read := func() (st struct {
		Service   string            `json:"service"`
		NowUnixMs int64             `json:"now_unix_ms"`
		XDS       bool              `json:"xds"`
		LBPolicy  string            `json:"lb_policy"`
		Requests  map[string]uint64 `json:"requests"`
	}) {
		code, h, body := fetch(t, c, "http://"+admin+"/stats")
		if code != http.StatusOK || h.Get("Content-Type") != "application/json" {
			t.Fatalf("/stats: status %d, Content-Type %q", code, h.Get("Content-Type"))
		}
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			t.Fatalf("/stats: %v\n%s", err, body)
		}
		return st
	}
	before := read()
	if before.Service != "frontend" || before.XDS || before.LBPolicy != "round_robin" {
		t.Errorf("/stats = %+v, want service frontend, no xDS, round_robin", before)
	}
	if len(before.Requests) != 0 {
		t.Errorf("requests before any traffic: %v", before.Requests)
	}
	hc := m.HTTPClient()
	for range 7 {
		get(t, hc, "http://orders/")
	}
	after := read()
	if after.Requests["orders"] != 7 {
		t.Errorf("requests[orders] = %d after 7 requests (all: %v)", after.Requests["orders"], after.Requests)
	}
	if after.NowUnixMs < before.NowUnixMs || after.NowUnixMs == 0 {
		t.Errorf("now_unix_ms went from %d to %d", before.NowUnixMs, after.NowUnixMs)
	}
}
