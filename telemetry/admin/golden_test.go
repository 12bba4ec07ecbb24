package admin_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/telemetry/admin"
)

func TestGoldenWindowsAndPercentiles(t *testing.T) {
	g := admin.NewGolden(0)
	t0 := time.Unix(1_700_000_000, 0).Truncate(admin.GoldenWindow)
	k := admin.GoldenKey{Direction: admin.DirectionOutbound, Service: "orders", Route: "r1"}
	// 100 requests of 1..100 ms, one in 10 failing.
	for i := range 100 {
		g.Observe(k, i%10 != 0, time.Duration(i+1)*time.Millisecond, t0.Add(time.Second))
	}
	for _, tt := range []struct {
		name         string
		at           time.Time
		wantRequests uint64
	}{
		{"same window", t0.Add(2 * time.Second), 100},
		{"next window", t0.Add(admin.GoldenWindow + time.Second), 100},
		{"two windows on", t0.Add(2*admin.GoldenWindow + time.Second), 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := g.Snapshot(tt.at)
			if len(st) != 1 {
				t.Fatalf("%d series, want 1", len(st))
			}
			s := st[0]
			if s.Requests != tt.wantRequests || s.Total != 100 || s.TotalSuccess != 90 {
				t.Fatalf("requests %d (total %d, success %d), want %d (100, 90)", s.Requests, s.Total, s.TotalSuccess, tt.wantRequests)
			}
			if tt.wantRequests == 0 {
				if s.SuccessRate != nil || s.P50Ms != nil || s.RPS != 0 {
					t.Errorf("an empty window reports %+v", s)
				}
				return
			}
			if *s.SuccessRate != 0.9 {
				t.Errorf("success rate %v, want 0.9", *s.SuccessRate)
			}
			if want := 100 / s.WindowSeconds; s.RPS != want {
				t.Errorf("rps %v, want %v", s.RPS, want)
			}
			// The buckets grow by half: an estimate within 25% either way.
			for _, q := range []struct {
				got  *float64
				want float64
			}{{s.P50Ms, 50}, {s.P95Ms, 95}, {s.P99Ms, 99}} {
				if *q.got < q.want*0.75 || *q.got > q.want*1.25 {
					t.Errorf("percentile %v ms, want about %v", *q.got, q.want)
				}
			}
		})
	}
}

// Callers and routes come from outside: their number is bounded, the
// rest is counted together.
func TestGoldenBoundsItsKeys(t *testing.T) {
	g := admin.NewGolden(10)
	now := time.Now()
	for i := range 100 {
		g.Observe(admin.GoldenKey{Direction: admin.DirectionInbound, Route: fmt.Sprintf("/r/%d", i)}, true, time.Millisecond, now)
	}
	st := g.Snapshot(now)
	if len(st) > 10 {
		t.Fatalf("%d series, want at most 10", len(st))
	}
	var other uint64
	var all uint64
	for _, s := range st {
		all += s.Total
		if s.Route == admin.OtherRoute {
			other = s.Total
		}
	}
	if all != 100 || other != 100-8 {
		t.Errorf("%d requests counted, %d of them in %s; want 100 and 92", all, other, admin.OtherRoute)
	}
}

func TestGoldenObserveConcurrently(t *testing.T) {
	g := admin.NewGolden(0)
	now := time.Now()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				g.Observe(admin.GoldenKey{Direction: admin.DirectionInbound, Caller: fmt.Sprint(w % 2)}, i%2 == 0, time.Millisecond, now)
				if i%100 == 0 {
					g.Snapshot(now)
				}
			}
		}()
	}
	wg.Wait()
	var total uint64
	for _, s := range g.Snapshot(now) {
		total += s.Total
	}
	if total != 4000 {
		t.Errorf("%d requests counted, want 4000", total)
	}
}

func BenchmarkGoldenObserve(b *testing.B) {
	g := admin.NewGolden(0)
	k := admin.GoldenKey{Direction: admin.DirectionInbound, Route: "/orders.Orders/Get", Caller: "spiffe://shop.example/ns/shop/sa/frontend"}
	now := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			g.Observe(k, true, 3*time.Millisecond, now)
		}
	})
}

// Handle mounts beside the built-in endpoints, behind the Host check; a
// conflicting pattern is an error, not a panic.
func TestServerHandle(t *testing.T) {
	srv, err := admin.New("127.0.0.1:0", source{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := srv.Handle("GET /tap", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("tap")) })); err != nil {
		t.Fatal(err)
	}
	if err := srv.Handle("GET /tap", http.NotFoundHandler()); err == nil {
		t.Error("mounting GET /tap twice: no error")
	}
	for _, tt := range []struct {
		host string
		want int
	}{{"127.0.0.1", 200}, {"localhost:9901", 200}, {"rebound.example", http.StatusMisdirectedRequest}} {
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, httptest.NewRequest("GET", "http://"+tt.host+"/tap", nil))
		if w.Code != tt.want {
			t.Errorf("GET /tap with Host %s: %d, want %d", tt.host, w.Code, tt.want)
		}
	}
	for path, want := range map[string]int{"/config_dump?format=nonsense": 400, "/config_dump": 200, "/inbound": 200, "/stats/golden": 200} {
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, httptest.NewRequest("GET", "http://localhost"+path, nil))
		if w.Code != want {
			t.Errorf("GET %s: %d, want %d: %s", path, w.Code, want, w.Body)
		}
	}
}
