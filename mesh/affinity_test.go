package mesh_test

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/resolver"
)

// namedBackends starts n loopback HTTP servers answering with their
// address, and returns the addresses and the servers.
func namedBackends(t *testing.T, n int) ([]string, []*httptest.Server) {
	t.Helper()
	var addrs []string
	var srvs []*httptest.Server
	for range n {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, r.Context().Value(http.LocalAddrContextKey).(fmt.Stringer).String())
		}))
		t.Cleanup(s.Close)
		addrs = append(addrs, s.Listener.Addr().String())
		srvs = append(srvs, s)
	}
	return addrs, srvs
}

// sessionRun sends n GETs to u through c and returns the endpoints that
// answered, with counts, and the session cookie the jar holds afterwards.
func sessionRun(t *testing.T, c *http.Client, u string, n int) (map[string]int, string) {
	t.Helper()
	seen := map[string]int{}
	for i := range n {
		resp, err := c.Get(u)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, b)
		}
		seen[string(b)]++
	}
	pu, _ := url.Parse(u)
	var cookie string
	for _, ck := range c.Jar.Cookies(pu) {
		if ck.Name == "sticky" {
			cookie = ck.Value
		}
	}
	return seen, cookie
}

// only returns the single key of m, or fails.
func only(t *testing.T, m map[string]int) string {
	t.Helper()
	if len(m) != 1 {
		t.Fatalf("requests reached %d endpoints, want 1: %v", len(m), m)
	}
	for k := range m {
		return k
	}
	return ""
}

func decodeCookie(t *testing.T, v string) string {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		t.Fatalf("cookie %q is not base64: %v", v, err)
	}
	return string(b)
}

// TestSessionAffinityXDS runs gRFC A55's cookie affinity from the
// listener's stateful session filter: 100 requests from a client with a
// cookie jar all reach one endpoint; after EDS removes it, the next 100
// all reach one other endpoint, under a new cookie naming it.
func TestSessionAffinityXDS(t *testing.T) {
	addrs, _ := namedBackends(t, 4)
	cp := xdstest.NewServer(t)
	config := func(eps ...string) []types.Resource {
		return []types.Resource{
			xdstest.APIListener("orders:8080", xdstest.WithStatefulSession(xdstest.HCM("orders-routes", nil), xdstest.StatefulSession("sticky", "", time.Hour))),
			xdstest.RouteConfig("orders-routes", "orders:8080", "orders"),
			xdstest.Cluster("orders", ""),
			xdstest.Endpoints("orders", eps...),
		}
	}
	cp.SetSnapshot(t, xdsNode, "1", config(addrs...)...)
	m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)))
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Transport: m.Transport(nil), Jar: jar}

	seen, cookie := sessionRun(t, c, "http://orders:8080/items", 100)
	first := only(t, seen)
	if got := decodeCookie(t, cookie); got != first {
		t.Fatalf("cookie names %s, requests went to %s", got, first)
	}
	t.Logf("100 requests: all to %s, cookie %s", first, cookie)

	// Without a jar, round_robin spreads requests: the cookie is what pins.
	plain, _ := sessionRun(t, &http.Client{Transport: m.Transport(nil), Jar: noJar{}}, "http://orders:8080/items", 8)
	if len(plain) < 2 {
		t.Errorf("requests without the cookie all reached one endpoint: %v", plain)
	}

	var rest []string
	for _, a := range addrs {
		if a != first {
			rest = append(rest, a)
		}
	}
	cp.SetSnapshot(t, xdsNode, "2", config(rest...)...)
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, _ := sessionRun(t, c, "http://orders:8080/items", 1)
		if s[first] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("requests still reach %s 10 s after EDS removed it", first)
		}
		time.Sleep(10 * time.Millisecond)
	}
	seen, cookie2 := sessionRun(t, c, "http://orders:8080/items", 100)
	second := only(t, seen)
	if second == first || cookie2 == cookie || decodeCookie(t, cookie2) != second {
		t.Fatalf("after removal: requests to %s, cookie %q (%s); before: %s, %q", second, cookie2, decodeCookie(t, cookie2), first, cookie)
	}
	t.Logf("after removal: 100 requests all to %s, cookie %s", second, cookie2)
}

// noJar is a cookie jar that keeps nothing.
type noJar struct{}

func (noJar) SetCookies(*url.URL, []*http.Cookie) {}
func (noJar) Cookies(*url.URL) []*http.Cookie     { return nil }

// TestSessionAffinityStatic runs cookie affinity from WithSessionAffinity
// for a service of static endpoints: requests stay on one endpoint, and
// when it stops answering, a retry moves the session to another one,
// with a new cookie.
func TestSessionAffinityStatic(t *testing.T) {
	addrs, srvs := namedBackends(t, 3)
	m := newMesh(t, mesh.WithEndpoints("orders", addrs...), mesh.WithSessionAffinity("sticky", 0))
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Transport: m.Transport(nil), Jar: jar}
	seen, cookie := sessionRun(t, c, "http://orders/a", 100)
	first := only(t, seen)
	if decodeCookie(t, cookie) != first {
		t.Fatalf("cookie names %s, requests went to %s", decodeCookie(t, cookie), first)
	}
	for i, a := range addrs {
		if a == first {
			srvs[i].Close()
		}
	}
	seen, cookie2 := sessionRun(t, c, "http://orders/a", 100)
	second := only(t, seen)
	if second == first || decodeCookie(t, cookie2) != second {
		t.Fatalf("after %s stopped: requests to %v, cookie names %s", first, seen, decodeCookie(t, cookie2))
	}
	t.Logf("before: all to %s; after it stopped: all to %s", first, second)
}

// TestSessionCookiePath checks A55's path rule: outside the cookie's path
// no cookie is set.
func TestSessionCookiePath(t *testing.T) {
	addrs, _ := namedBackends(t, 2)
	cp := xdstest.NewServer(t)
	cp.SetSnapshot(t, xdsNode, "1",
		xdstest.APIListener("orders:8080", xdstest.WithStatefulSession(xdstest.HCM("orders-routes", nil), xdstest.StatefulSession("sticky", "/cart", 0))),
		xdstest.RouteConfig("orders-routes", "orders:8080", "orders"),
		xdstest.Cluster("orders", ""), xdstest.Endpoints("orders", addrs...))
	m := newMesh(t, mesh.WithBootstrap(cp.Bootstrap(xdsNode)))
	for _, tc := range []struct {
		path string
		set  bool
	}{{"/cart", true}, {"/cart/items", true}, {"/cartoon", false}, {"/", false}} {
		resp, err := m.HTTPClient().Get("http://orders:8080" + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := resp.Header.Get("Set-Cookie")
		if (got != "") != tc.set || tc.set && !strings.Contains(got, "Path=/cart") {
			t.Errorf("%s: Set-Cookie %q, want one: %v", tc.path, got, tc.set)
		}
	}
}

func TestSessionAffinityEnv(t *testing.T) {
	for _, tc := range []struct {
		env     map[string]string
		culprit string
	}{
		{map[string]string{"WEFT_SESSION_COOKIE": "a b"}, "WEFT_SESSION_COOKIE"},
		{map[string]string{"WEFT_SESSION_COOKIE": "s", "WEFT_SESSION_COOKIE_TTL": "-1s"}, "WEFT_SESSION_COOKIE_TTL"},
		{map[string]string{"WEFT_SESSION_COOKIE_TTL": "1h"}, "WEFT_SESSION_COOKIE_TTL"},
		{map[string]string{"WEFT_LOCALITY": "us//b"}, "WEFT_LOCALITY"},
		{map[string]string{"WEFT_SLOW_START_WINDOW": "soon"}, "WEFT_SLOW_START_WINDOW"},
		{map[string]string{"WEFT_SLOW_START_WINDOW": "-1s"}, "WEFT_SLOW_START_WINDOW"},
		{map[string]string{"WEFT_SLOW_START_WINDOW": "30s", "WEFT_LB_POLICY": "p2c_ewma"}, "WEFT_SLOW_START_WINDOW"},
		{map[string]string{"WEFT_ENDPOINTS": "orders=10.0.0.1:80@a/b/c/d"}, "WEFT_ENDPOINTS"},
	} {
		t.Run(tc.culprit, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			m, err := mesh.New(t.Context())
			if err == nil {
				m.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tc.culprit) {
				t.Errorf("New with %v: error %v, want one naming %s", tc.env, err, tc.culprit)
			}
		})
	}
	if _, err := mesh.New(t.Context(), mesh.WithLBPolicy("p2c_ewma"), mesh.WithSlowStart(balancer.SlowStartConfig{Window: time.Minute})); err == nil ||
		!strings.Contains(err.Error(), "WithSlowStart") {
		t.Errorf("slow start with p2c_ewma: error %v, want one naming WithSlowStart", err)
	}
	newMesh(t, mesh.WithLBPolicy("least_request"), mesh.WithSlowStart(balancer.SlowStartConfig{Window: time.Minute}),
		mesh.WithZoneAware(balancer.ZoneAwareConfig{Local: resolver.Locality{Region: "r", Zone: "a"}}))
}

// TestZoneAwareStatic sends requests from a caller in zone a to a service
// of six loopback endpoints, two in each of zones a, b and c (written in
// WEFT_ENDPOINTS's host:port@region/zone form): every request stays in a.
func TestZoneAwareStatic(t *testing.T) {
	addrs, _ := namedBackends(t, 6)
	var spec []string
	inA := map[string]bool{}
	for i, a := range addrs {
		z := string(rune('a' + i/2))
		spec = append(spec, a+"@r/"+z)
		inA[a] = z == "a"
	}
	t.Setenv("WEFT_ENDPOINTS", "orders="+strings.Join(spec, ","))
	t.Setenv("WEFT_LOCALITY", "r/a")
	m := newMesh(t)
	seen, _ := sessionRun(t, &http.Client{Transport: m.Transport(nil), Jar: noJar{}}, "http://orders/", 60)
	for a, n := range seen {
		if !inA[a] {
			t.Errorf("%d of 60 requests left the caller's zone for %s", n, a)
		}
	}
	if len(seen) != 2 {
		t.Errorf("requests reached %v, want both endpoints of zone a", seen)
	}
}
