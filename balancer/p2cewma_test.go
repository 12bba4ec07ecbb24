package balancer_test

import (
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/resolver"
)

// fakeClock is a clock that moves only when told.
type fakeClock struct{ t atomic.Int64 }

func (c *fakeClock) now() time.Duration      { return time.Duration(c.t.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.t.Add(int64(d)) }

// TestP2CEWMAAvoidsSlowEndpoint serves requests one after another from
// three endpoints, one of them 20 times slower, feeding each latency back
// through Finish. Once each has answered, the slow one's cost is above the
// others' for the rest of the run (its estimate decays toward zero only
// over tens of seconds of disuse), so it gets next to nothing.
func TestP2CEWMAAvoidsSlowEndpoint(t *testing.T) {
	var clk fakeClock
	eps := endpoints(1, 1, 1)
	slow := eps[1].Addr
	c := newCluster(t, balancer.NewP2CEWMABuilder(seeded(9), clk.now), "", eps)
	latency := func(addr string) time.Duration {
		if addr == slow {
			return 100 * time.Millisecond
		}
		return 5 * time.Millisecond
	}
	counts := map[string]int{}
	for i := range 2000 {
		r, err := c.Pick(balancer.PickInfo{})
		if err != nil {
			t.Fatal(err)
		}
		clk.advance(time.Millisecond)
		r.Finish(balancer.DoneInfo{Latency: latency(r.Endpoint.Addr)})
		if i >= 100 {
			counts[r.Endpoint.Addr]++
		}
	}
	if counts[slow] > 0 {
		t.Errorf("slow endpoint got %d of 1900 picks after warm-up, want 0 (counts %v)", counts[slow], counts)
	}
	for _, e := range eps {
		if e.Addr != slow && counts[e.Addr] < 800 {
			t.Errorf("fast endpoint %s got %d of 1900 picks, want about half", e.Addr, counts[e.Addr])
		}
	}

	// Unused for a minute (more than τ·ln 20 ≈ 30s), the slow endpoint's
	// estimate has decayed below the others' and it is tried again.
	clk.advance(time.Minute)
	tried := false
	for range 100 {
		r, err := c.Pick(balancer.PickInfo{})
		if err != nil {
			t.Fatal(err)
		}
		tried = tried || r.Endpoint.Addr == slow
		r.Finish(balancer.DoneInfo{Latency: latency(r.Endpoint.Addr)})
	}
	if !tried {
		t.Error("slow endpoint not tried again after a minute unused")
	}
}

// TestP2CEWMAInFlight checks the in-flight factor: equal latencies, but
// requests held on one endpoint make it the costlier of any pair.
func TestP2CEWMAInFlight(t *testing.T) {
	var clk fakeClock
	c := newCluster(t, balancer.NewP2CEWMABuilder(seeded(10), clk.now), "", endpoints(1, 1))
	for range 10 {
		r, err := c.Pick(balancer.PickInfo{})
		if err != nil {
			t.Fatal(err)
		}
		r.Finish(balancer.DoneInfo{Latency: 10 * time.Millisecond})
	}
	busy := c.Endpoints()[0]
	for _, e := range c.Endpoints() {
		if _, ok := balancer.LatencyEstimate(e); !ok {
			t.Fatalf("%s has no estimate after warm-up", e.Addr)
		}
	}
	balancer.AddInFlight(busy, 3)
	defer balancer.AddInFlight(busy, -3)
	counts := pickCounts(t, c, 100, nil)
	if counts[busy.Addr] != 0 {
		t.Errorf("endpoint with 3 in flight got %d of 100 picks, want 0", counts[busy.Addr])
	}
}

// TestP2CEWMANewEndpointNotFlooded adds an endpoint with no latency yet to
// two measured ones: it gets one request at once, and no more while that
// one is in flight.
func TestP2CEWMANewEndpointNotFlooded(t *testing.T) {
	var clk fakeClock
	eps := endpoints(1, 1)
	c := newCluster(t, balancer.NewP2CEWMABuilder(seeded(11), clk.now), "", eps)
	for range 20 {
		r, err := c.Pick(balancer.PickInfo{})
		if err != nil {
			t.Fatal(err)
		}
		r.Finish(balancer.DoneInfo{Latency: 50 * time.Millisecond})
	}
	fresh := resolver.Endpoint{Addr: "10.0.0.9:80"}
	c.Update(append(eps, fresh))
	var held []balancer.PickResult
	for range 100 {
		r, err := c.Pick(balancer.PickInfo{})
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, r) // all stay in flight
	}
	n := 0
	for _, r := range held {
		if r.Endpoint.Addr == fresh.Addr {
			n++
		}
		r.Finish(balancer.DoneInfo{Latency: 50 * time.Millisecond})
	}
	if n != 1 {
		t.Errorf("new endpoint got %d of 100 concurrent requests, want exactly 1", n)
	}
}

// TestP2CEWMAEstimate follows one endpoint's estimate through a sequence
// of outcomes, with τ = 10s.
func TestP2CEWMAEstimate(t *testing.T) {
	var clk fakeClock
	c := newCluster(t, balancer.NewP2CEWMABuilder(seeded(12), clk.now), `{"decayWindow":"10s"}`, endpoints(1))
	e := c.Endpoints()[0]
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	steps := []struct {
		name    string
		advance time.Duration
		done    balancer.DoneInfo
		want    time.Duration
	}{
		{"first response sets it", 0, balancer.DoneInfo{Latency: 100 * time.Millisecond}, 100 * time.Millisecond},
		{"a faster one pulls by 1-e^-1 after τ", 10 * time.Second, balancer.DoneInfo{Latency: 10 * time.Millisecond},
			ms(100*math.Exp(-1) + 10*(1-math.Exp(-1)))},
		{"a faster one at once barely moves it", 0, balancer.DoneInfo{Latency: time.Millisecond},
			ms(100*math.Exp(-1) + 10*(1-math.Exp(-1)))},
		{"a slower one replaces it (peak)", time.Millisecond, balancer.DoneInfo{Latency: 200 * time.Millisecond}, 200 * time.Millisecond},
		{"a fast failure does not lower it", 30 * time.Second, balancer.DoneInfo{Latency: time.Millisecond, Outcome: balancer.ConnectFailure}, 200 * time.Millisecond},
		{"a slow timeout raises it", time.Second, balancer.DoneInfo{Latency: 300 * time.Millisecond, Outcome: balancer.Timeout}, 300 * time.Millisecond},
		{"a fast cancel does not lower it", time.Minute, balancer.DoneInfo{Latency: 0, Outcome: balancer.Canceled}, 300 * time.Millisecond},
		{"after 5τ a success is nearly all", 50 * time.Second, balancer.DoneInfo{Latency: 20 * time.Millisecond},
			ms(300*math.Exp(-5) + 20*(1-math.Exp(-5)))},
	}
	if _, ok := balancer.LatencyEstimate(e); ok {
		t.Fatal("estimate before any response")
	}
	r, err := c.Pick(balancer.PickInfo{})
	if err != nil {
		t.Fatal(err)
	}
	r.Finish(balancer.DoneInfo{Latency: time.Millisecond, Outcome: balancer.Canceled})
	if _, ok := balancer.LatencyEstimate(e); ok {
		t.Fatal("a cancelled first request made an estimate")
	}
	for _, s := range steps {
		clk.advance(s.advance)
		r, err := c.Pick(balancer.PickInfo{})
		if err != nil {
			t.Fatal(err)
		}
		r.Finish(s.done)
		got, ok := balancer.LatencyEstimate(e)
		if !ok || math.Abs(float64(got-s.want)) > float64(time.Microsecond) {
			t.Errorf("%s: estimate %v, want %v", s.name, got, s.want)
		}
	}
}

// TestP2CEWMAFirstFailure checks that an endpoint whose first request
// fails fast starts with a one-second estimate, not the failure's latency.
func TestP2CEWMAFirstFailure(t *testing.T) {
	var clk fakeClock
	c := newCluster(t, balancer.NewP2CEWMABuilder(seeded(22), clk.now), "", endpoints(1))
	r, err := c.Pick(balancer.PickInfo{})
	if err != nil {
		t.Fatal(err)
	}
	r.Finish(balancer.DoneInfo{Latency: time.Millisecond, Outcome: balancer.ConnectFailure})
	if got, ok := balancer.LatencyEstimate(r.Endpoint); !ok || got != time.Second {
		t.Errorf("estimate after a fast first failure = %v, %v; want 1s", got, ok)
	}
}

// TestP2CEWMAEstimateSurvivesUpdate checks that an endpoint keeps its
// estimate when discovery changes its data and the picker is rebuilt.
func TestP2CEWMAEstimateSurvivesUpdate(t *testing.T) {
	var clk fakeClock
	eps := endpoints(1)
	c := newCluster(t, balancer.NewP2CEWMABuilder(seeded(13), clk.now), "", eps)
	r, err := c.Pick(balancer.PickInfo{})
	if err != nil {
		t.Fatal(err)
	}
	r.Finish(balancer.DoneInfo{Latency: 42 * time.Millisecond})
	eps[0].Weight = 9
	c.Update(eps)
	e := c.Endpoints()[0]
	if e == r.Endpoint {
		t.Fatal("Update kept the old Endpoint value for changed data")
	}
	if got, ok := balancer.LatencyEstimate(e); !ok || got != 42*time.Millisecond {
		t.Errorf("estimate after update = %v, %v; want 42ms", got, ok)
	}
}
