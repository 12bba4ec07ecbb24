package balancer_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/resolver"
)

// odCluster returns a Cluster of round_robin behind outlier detection with
// cfg over n endpoints of weight 1, and the detector's clock.
func odCluster(t *testing.T, cfg balancer.OutlierConfig, n int) (*balancer.Cluster, *balancer.FakeClock) {
	t.Helper()
	clk := new(balancer.FakeClock)
	b := balancer.NewOutlierDetectionForTest(balancer.Get(balancer.RoundRobin), cfg, clk, seeded(7))
	return newCluster(t, b, "", equal(n)), clk
}

// endpoint returns the cluster's endpoint at addr.
func endpoint(t *testing.T, c *balancer.Cluster, addr string) *balancer.Endpoint {
	t.Helper()
	for _, e := range c.Endpoints() {
		if e.Addr == addr {
			return e
		}
	}
	t.Fatalf("no endpoint %s", addr)
	return nil
}

// feed picks from c until every address in outcomes has finished
// len(outcomes[addr]) requests, ending them with those outcomes in order;
// other picks end in Success. It stops early when an address is ejected
// and so no longer picked, and fails t after 10,000 picks.
// requestKey names the request in the context feed gives each outcome.
type requestKey struct{}

func feed(t *testing.T, c *balancer.Cluster, outcomes map[string][]balancer.Outcome) {
	t.Helper()
	done := map[string]int{}
	for range 10_000 {
		finished := true
		for addr, os := range outcomes {
			if done[addr] < len(os) && !endpoint(t, c, addr).Ejected() {
				finished = false
			}
		}
		if finished {
			return
		}
		r, err := c.Pick(balancer.PickInfo{})
		if err != nil {
			t.Fatalf("Pick: %v", err)
		}
		o := balancer.Success
		var ctx context.Context
		if os := outcomes[r.Endpoint.Addr]; done[r.Endpoint.Addr] < len(os) {
			o = os[done[r.Endpoint.Addr]]
			done[r.Endpoint.Addr]++
			// The request's context names it: "addr#n", the nth outcome fed.
			ctx = context.WithValue(context.Background(), requestKey{}, fmt.Sprintf("%s#%d", r.Endpoint.Addr, done[r.Endpoint.Addr]))
		}
		r.Finish(balancer.DoneInfo{Outcome: o, Ctx: ctx})
	}
	t.Fatalf("outcomes not fed after 10,000 picks: %v of %v", done, outcomes)
}

func repeat(o balancer.Outcome, n int) []balancer.Outcome {
	out := make([]balancer.Outcome, n)
	for i := range out {
		out[i] = o
	}
	return out
}

// picked returns how many of n picks went to addr.
func picked(t *testing.T, c *balancer.Cluster, addr string, n int) int {
	t.Helper()
	return pickCounts(t, c, n, nil)[addr]
}

// TestConsecutiveErrors follows one endpoint through two ejections: the
// fifth consecutive failure ejects it at once; it gets no traffic while
// ejected; it returns at the first interval 30s on; a second ejection soon
// after lasts 60s.
func TestConsecutiveErrors(t *testing.T) {
	c, clk := odCluster(t, balancer.OutlierConfig{}, 3)
	bad := equal(3)[1].Addr

	feed(t, c, map[string][]balancer.Outcome{bad: repeat(balancer.ServerError, 4)})
	if endpoint(t, c, bad).Ejected() {
		t.Fatal("ejected after 4 consecutive failures, want 5")
	}
	feed(t, c, map[string][]balancer.Outcome{bad: {balancer.Timeout}})
	if !endpoint(t, c, bad).Ejected() {
		t.Fatal("not ejected after 5 consecutive failures")
	}
	if n := picked(t, c, bad, 300); n != 0 {
		t.Errorf("ejected endpoint picked %d of 300 times", n)
	}

	clk.Advance(29 * time.Second) // intervals at 10s and 20s
	if !endpoint(t, c, bad).Ejected() || picked(t, c, bad, 30) != 0 {
		t.Fatal("back before the base ejection time")
	}
	clk.Advance(time.Second) // the interval at 30s
	if endpoint(t, c, bad).Ejected() {
		t.Fatal("still ejected 30s on")
	}
	if n := picked(t, c, bad, 300); n != 100 {
		t.Errorf("returned endpoint picked %d of 300 times, want 100", n)
	}

	// Ejected again at 30s, before any interval has found it well: the
	// multiplier is 2, so it returns at the first interval 60s on.
	feed(t, c, map[string][]balancer.Outcome{bad: repeat(balancer.GatewayError, 5)})
	if !endpoint(t, c, bad).Ejected() {
		t.Fatal("not ejected a second time")
	}
	clk.Advance(50 * time.Second) // to 80s
	if !endpoint(t, c, bad).Ejected() {
		t.Fatal("second ejection ended after 50s, want 60s")
	}
	clk.Advance(10 * time.Second) // to 90s
	if endpoint(t, c, bad).Ejected() {
		t.Fatal("second ejection still on after 60s")
	}
}

// TestEjectionMultiplierDecays checks that an endpoint that stays well for
// an interval after its return is ejected for the base time again.
func TestEjectionMultiplierDecays(t *testing.T) {
	c, clk := odCluster(t, balancer.OutlierConfig{}, 3)
	bad := equal(3)[0].Addr
	five := map[string][]balancer.Outcome{bad: repeat(balancer.ConnectFailure, 5)}
	feed(t, c, five)
	clk.Advance(30 * time.Second)
	if endpoint(t, c, bad).Ejected() {
		t.Fatal("still ejected after 30s")
	}
	clk.Advance(20 * time.Second) // intervals at 40s (decay) and 50s
	feed(t, c, five)
	clk.Advance(30 * time.Second) // to 80s
	if endpoint(t, c, bad).Ejected() {
		t.Fatal("after a healthy interval, ejection lasted over 30s")
	}
}

// TestMaxEjectionTime checks that the ejection time stops at its maximum.
func TestMaxEjectionTime(t *testing.T) {
	c, clk := odCluster(t, balancer.OutlierConfig{Interval: time.Second, BaseEjectionTime: 10 * time.Second, MaxEjectionTime: 25 * time.Second}, 3)
	bad := equal(3)[2].Addr
	for i, want := range []time.Duration{10, 20, 25, 25} {
		feed(t, c, map[string][]balancer.Outcome{bad: repeat(balancer.Reset, 5)})
		start := clk.Now()
		for k := 0; endpoint(t, c, bad).Ejected() && k < 100; k++ {
			clk.Advance(time.Second)
		}
		if got := clk.Now() - start; got != want*time.Second {
			t.Errorf("ejection %d lasted %v, want %v", i+1, got, want*time.Second)
		}
	}
}

// TestConsecutiveRuns checks what breaks a run of failures and what does
// not, and the gateway-error count.
func TestConsecutiveRuns(t *testing.T) {
	S, E, G, X, T := balancer.Success, balancer.ServerError, balancer.GatewayError, balancer.Canceled, balancer.Timeout
	for _, tc := range []struct {
		name     string
		cfg      balancer.OutlierConfig
		outcomes []balancer.Outcome
		want     bool
	}{
		{"success breaks a run", balancer.OutlierConfig{}, []balancer.Outcome{E, E, E, E, S, E, E, E, E}, false},
		{"canceled does not count", balancer.OutlierConfig{}, []balancer.Outcome{E, E, X, X, X, E, E}, false},
		{"canceled does not break a run", balancer.OutlierConfig{}, []balancer.Outcome{E, E, X, X, X, E, E, E}, true},
		{"configured threshold", balancer.OutlierConfig{ConsecutiveErrors: 2}, []balancer.Outcome{E, E}, true},
		{"consecutive errors disabled", balancer.OutlierConfig{ConsecutiveErrors: -1}, repeat(E, 20), false},
		{"gateway errors off by default", balancer.OutlierConfig{ConsecutiveErrors: -1}, repeat(G, 20), false},
		{"gateway errors", balancer.OutlierConfig{ConsecutiveErrors: -1, ConsecutiveGatewayErrors: 3}, []balancer.Outcome{G, T, G}, true},
		{"server error breaks a gateway run", balancer.OutlierConfig{ConsecutiveErrors: -1, ConsecutiveGatewayErrors: 3}, []balancer.Outcome{G, G, E, G, G}, false},
		{"server errors are not gateway errors", balancer.OutlierConfig{ConsecutiveErrors: -1, ConsecutiveGatewayErrors: 3}, repeat(E, 10), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := odCluster(t, tc.cfg, 3)
			bad := equal(3)[0].Addr
			feed(t, c, map[string][]balancer.Outcome{bad: tc.outcomes})
			if got := endpoint(t, c, bad).Ejected(); got != tc.want {
				t.Errorf("after %v: Ejected() = %v, want %v", tc.outcomes, got, tc.want)
			}
		})
	}
}

// TestMaxEjectionPercent checks that no more endpoints are ejected than
// the percentage allows, and that one may always be, as gRFC A50 counts.
func TestMaxEjectionPercent(t *testing.T) {
	for _, tc := range []struct {
		endpoints, failing int
		percent            uint32
		want               int
	}{
		{10, 4, 20, 2},
		{10, 4, 0, 1}, // the default, 10%
		{3, 2, 0, 1},  // 10% of 3 is under one endpoint; A50 allows one
		{5, 5, 100, 5},
		{4, 4, 50, 2},
	} {
		t.Run(fmt.Sprintf("%d of %d at %d%%", tc.failing, tc.endpoints, tc.percent), func(t *testing.T) {
			c, _ := odCluster(t, balancer.OutlierConfig{MaxEjectionPercent: tc.percent}, tc.endpoints)
			outcomes := map[string][]balancer.Outcome{}
			for _, e := range equal(tc.endpoints)[:tc.failing] {
				outcomes[e.Addr] = repeat(balancer.ServerError, 5)
			}
			if tc.failing == tc.endpoints {
				// With every endpoint failing, the last ejection leaves
				// nothing to pick: feed by hand.
				for range 100 {
					r, err := c.Pick(balancer.PickInfo{})
					if err != nil {
						break
					}
					r.Finish(balancer.DoneInfo{Outcome: balancer.ServerError})
				}
			} else {
				feed(t, c, outcomes)
			}
			got := 0
			for _, e := range c.Endpoints() {
				if e.Ejected() {
					got++
				}
			}
			if got != tc.want {
				t.Errorf("%d endpoints ejected, want %d", got, tc.want)
			}
			if got == tc.endpoints {
				if _, err := c.Pick(balancer.PickInfo{}); !errors.Is(err, balancer.ErrNoHealthyEndpoint) {
					t.Errorf("every endpoint ejected: Pick error %v, want ErrNoHealthyEndpoint", err)
				}
			}
		})
	}
}

// rateRound runs one interval's traffic over 5 endpoints: perEndpoint
// requests each, of which endpoint 0 fails one in every failEvery; then
// the interval ends.
func rateRound(t *testing.T, c *balancer.Cluster, clk *balancer.FakeClock, perEndpoint, failEvery int) {
	t.Helper()
	bad := equal(5)[0].Addr
	n := 0
	for range 5 * perEndpoint {
		r, err := c.Pick(balancer.PickInfo{})
		if err != nil {
			t.Fatal(err)
		}
		o := balancer.Success
		if r.Endpoint.Addr == bad {
			if n++; n%failEvery == 0 {
				o = balancer.ServerError
			}
		}
		r.Finish(balancer.DoneInfo{Outcome: o})
	}
	clk.Advance(10 * time.Second)
}

// TestSuccessRateEjection: five endpoints, one failing half its requests.
// Success rates 50, 100, 100, 100, 100: mean 90, standard deviation 20, so
// the threshold is 90 − 1.9 × 20 = 52 and the failing endpoint (50) goes.
func TestSuccessRateEjection(t *testing.T) {
	bad := equal(5)[0].Addr
	for _, tc := range []struct {
		name        string
		cfg         balancer.OutlierConfig
		perEndpoint int
		want        bool
	}{
		{"defaults", balancer.OutlierConfig{}, 200, true},
		{"below request volume", balancer.OutlierConfig{}, 90, false},
		{"lower volume configured", balancer.OutlierConfig{SuccessRate: balancer.SuccessRateEjection{RequestVolume: 50}}, 90, true},
		// Threshold 90 − 2.1 × 20 = 48.
		{"wider stdev factor", balancer.OutlierConfig{SuccessRate: balancer.SuccessRateEjection{StdevFactor: 2100}}, 200, false},
		{"too few hosts", balancer.OutlierConfig{SuccessRate: balancer.SuccessRateEjection{MinimumHosts: 6}}, 200, false},
		{"disabled", balancer.OutlierConfig{SuccessRate: balancer.SuccessRateEjection{Disabled: true}}, 200, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, clk := odCluster(t, tc.cfg, 5)
			rateRound(t, c, clk, tc.perEndpoint, 2)
			for _, e := range c.Endpoints() {
				if want := tc.want && e.Addr == bad; e.Ejected() != want {
					t.Errorf("%s: Ejected() = %v, want %v", e.Addr, e.Ejected(), want)
				}
			}
			if tc.want {
				if n := picked(t, c, bad, 400); n != 0 {
					t.Errorf("ejected endpoint picked %d of 400 times", n)
				}
				clk.Advance(30 * time.Second)
				if endpoint(t, c, bad).Ejected() {
					t.Error("still ejected after the base ejection time")
				}
			}
		})
	}
}

// TestFailurePercentageEjection: the same traffic, judged by failure
// percentage (success rate off): the endpoint failing 50% goes when the
// threshold is at most 50.
func TestFailurePercentageEjection(t *testing.T) {
	bad := equal(5)[0].Addr
	noSR := balancer.SuccessRateEjection{Disabled: true}
	for _, tc := range []struct {
		name        string
		fp          balancer.FailurePercentageEjection
		perEndpoint int
		want        bool
	}{
		{"off by default", balancer.FailurePercentageEjection{Threshold: 50}, 200, false},
		{"default threshold 85", balancer.FailurePercentageEjection{Enabled: true}, 200, false},
		{"threshold 50", balancer.FailurePercentageEjection{Enabled: true, Threshold: 50}, 200, true},
		{"below request volume", balancer.FailurePercentageEjection{Enabled: true, Threshold: 50}, 40, false},
		{"too few hosts", balancer.FailurePercentageEjection{Enabled: true, Threshold: 50, MinimumHosts: 6}, 200, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, clk := odCluster(t, balancer.OutlierConfig{SuccessRate: noSR, FailurePercentage: tc.fp}, 5)
			rateRound(t, c, clk, tc.perEndpoint, 2)
			for _, e := range c.Endpoints() {
				if want := tc.want && e.Addr == bad; e.Ejected() != want {
					t.Errorf("%s: Ejected() = %v, want %v", e.Addr, e.Ejected(), want)
				}
			}
		})
	}
}

// TestRateEnforcement checks that EnforcementPercentage makes ejection a
// draw: at 50%, over many intervals, about half the chances eject.
func TestRateEnforcement(t *testing.T) {
	c, clk := odCluster(t, balancer.OutlierConfig{
		BaseEjectionTime: 10 * time.Second, MaxEjectionTime: 10 * time.Second,
		SuccessRate: balancer.SuccessRateEjection{EnforcementPercentage: 50},
	}, 5)
	bad := equal(5)[0].Addr
	chances, ejections := 0, 0
	for range 200 {
		if endpoint(t, c, bad).Ejected() {
			clk.Advance(10 * time.Second)
			continue
		}
		chances++
		rateRound(t, c, clk, 200, 2)
		if endpoint(t, c, bad).Ejected() {
			ejections++
		}
	}
	if got := float64(ejections) / float64(chances); math.Abs(got-0.5) > 0.15 {
		t.Errorf("%d ejections in %d chances (%.2f), want about half", ejections, chances, got)
	}
}

// TestEjectionSurvivesUpdate checks that an address stays ejected when
// discovery changes its data, and forgets its state when it goes away.
func TestEjectionSurvivesUpdate(t *testing.T) {
	c, clk := odCluster(t, balancer.OutlierConfig{}, 3)
	eps := equal(3)
	bad := eps[1].Addr
	feed(t, c, map[string][]balancer.Outcome{bad: repeat(balancer.ServerError, 5)})
	eps[1].Weight = 5
	c.Update(eps)
	if !endpoint(t, c, bad).Ejected() || picked(t, c, bad, 30) != 0 {
		t.Error("ejection lost when the endpoint's weight changed")
	}
	c.Update(append(eps[:1:1], eps[2]))
	clk.Advance(10 * time.Second)
	c.Update(equal(3))
	if endpoint(t, c, bad).Ejected() {
		t.Error("an address removed and listed again is still ejected")
	}
}

// TestOutlierComposesWithPriority checks that ejected endpoints count as
// unhealthy for priority failover: one of P0's two endpoints ejected
// leaves P0 with health 70, so 30% spills to P1.
func TestOutlierComposesWithPriority(t *testing.T) {
	clk := new(balancer.FakeClock)
	b := balancer.NewOutlierDetectionForTest(
		balancer.NewPriorityLocalityForTest(balancer.Get(balancer.RoundRobin), seeded(8)),
		balancer.OutlierConfig{MaxEjectionPercent: 50}, clk, seeded(9))
	eps := priorityEndpoints([]prioritySpec{{2, 0, 0}, {2, 0, 0}})
	c := newCluster(t, b, "", eps)
	feed(t, c, map[string][]balancer.Outcome{eps[0].Addr: repeat(balancer.GatewayError, 5)})
	if !endpoint(t, c, eps[0].Addr).Ejected() {
		t.Fatal("not ejected")
	}
	counts := pickCounts(t, c, loadPicks, nil)
	if counts[eps[0].Addr] != 0 {
		t.Errorf("ejected endpoint picked %d times", counts[eps[0].Addr])
	}
	p1 := 100 * float64(counts[eps[2].Addr]+counts[eps[3].Addr]) / loadPicks
	t.Logf("P1: %.2f%% of picks, formula 30%%", p1)
	if math.Abs(p1-30) > loadTolerance {
		t.Errorf("P1 took %.2f%%, want 30%% ± %.1f", p1, loadTolerance)
	}
}

func TestOutlierName(t *testing.T) {
	b := balancer.NewOutlierDetection(balancer.Get(balancer.Maglev), balancer.OutlierConfig{})
	if got, want := b.Name(), "outlier_detection:maglev"; got != want {
		t.Errorf("Name() = %q, want %q", got, want)
	}
	if _, err := b.(balancer.ConfigParser).ParseConfig([]byte(`{"tableSize":4}`)); err == nil {
		t.Error("ParseConfig accepted the child's invalid settings")
	}
	c := newCluster(t, b, `{"tableSize":251}`, endpoints(1, 1))
	pickCounts(t, c, 10, nil)
}

// TestOutlierConcurrent runs picks, failures, intervals and updates at
// once, for the race detector.
func TestOutlierConcurrent(t *testing.T) {
	c, clk := odCluster(t, balancer.OutlierConfig{MaxEjectionPercent: 50, ConsecutiveErrors: 3}, 8)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 3000 {
				r, err := c.Pick(balancer.PickInfo{})
				if err != nil {
					continue
				}
				o := balancer.Success
				if r.Endpoint.Addr[len(r.Endpoint.Addr)-4] < '4' && (i+g)%3 != 0 {
					o = balancer.ServerError
				}
				_ = r.Endpoint.Ejected()
				r.Finish(balancer.DoneInfo{Outcome: o})
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		eps := equal(8)
		for i := range 50 {
			clk.Advance(5 * time.Second)
			eps[i%8].Weight = uint32(i%3 + 1)
			c.Update(eps)
		}
	}()
	wg.Wait()
	for _, e := range c.Endpoints() {
		if e.InFlight() != 0 {
			t.Errorf("%s: %d in flight after every request finished", e.Addr, e.InFlight())
		}
	}
	c.Close()
	for _, e := range c.Endpoints() {
		if e.Ejected() {
			t.Errorf("%s still reports ejected after Close", e.Addr)
		}
	}
}

// TestOutlierRealClock runs the default clock's interval timer for a few
// rounds and checks that Close, called twice, closes the child once.
func TestOutlierRealClock(t *testing.T) {
	live := 0
	b := balancer.NewOutlierDetection(countingBuilder{balancer.Get(balancer.RoundRobin), &live}, balancer.OutlierConfig{Interval: time.Millisecond})
	c := balancer.NewCluster(b, nil)
	c.Update([]resolver.Endpoint{{Addr: "10.0.0.1:80"}, {Addr: "10.0.0.2:80"}})
	for range 100 {
		r, err := c.Pick(balancer.PickInfo{})
		if err != nil {
			t.Fatal(err)
		}
		r.Finish(balancer.DoneInfo{Outcome: balancer.Success})
	}
	time.Sleep(5 * time.Millisecond) // let a few intervals run
	c.Close()
	c.Close()
	if live != 0 {
		t.Errorf("%d child balancers open after Close", live)
	}
}

// TestConsecutiveRetryAfterRefusal checks that a run refused ejection by
// MaxEjectionPercent starts again, as in Envoy: once room is made, five
// more failures eject the endpoint without a success in between.
func TestConsecutiveRetryAfterRefusal(t *testing.T) {
	c, clk := odCluster(t, balancer.OutlierConfig{}, 3) // 10%: one at a time
	eps := equal(3)
	first, second := eps[0].Addr, eps[1].Addr
	feed(t, c, map[string][]balancer.Outcome{first: repeat(balancer.ServerError, 5)})
	feed(t, c, map[string][]balancer.Outcome{second: repeat(balancer.ServerError, 7)})
	if !endpoint(t, c, first).Ejected() || endpoint(t, c, second).Ejected() {
		t.Fatalf("ejected: %s %v, %s %v; want only the first", first, endpoint(t, c, first).Ejected(), second, endpoint(t, c, second).Ejected())
	}
	clk.Advance(30 * time.Second) // the first returns
	feed(t, c, map[string][]balancer.Outcome{second: repeat(balancer.ServerError, 3)})
	if !endpoint(t, c, second).Ejected() {
		t.Error("after 7 + 3 failures in a row, with room to eject: not ejected")
	}
}

// TestOnEjectionTellsEjectionsAndReturns: the hook hears each ejection
// and each return once, with the address, through a wrapping policy too;
// an ejection with the context of the request whose failure caused it, a
// return (a decision of the sweep) with none.
func TestOnEjectionTellsEjectionsAndReturns(t *testing.T) {
	for _, tt := range []struct {
		name  string
		build func(clk *balancer.FakeClock) balancer.Builder
	}{
		{"outlier over round_robin", func(clk *balancer.FakeClock) balancer.Builder {
			return balancer.NewOutlierDetectionForTest(balancer.Get(balancer.RoundRobin), balancer.OutlierConfig{}, clk, seeded(7))
		}},
		{"priority over outlier", func(clk *balancer.FakeClock) balancer.Builder {
			return balancer.NewPriorityLocalityForTest(
				balancer.NewOutlierDetectionForTest(balancer.Get(balancer.RoundRobin), balancer.OutlierConfig{}, clk, seeded(7)), seeded(8))
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clk := new(balancer.FakeClock)
			var got []string
			c := balancer.NewCluster(tt.build(clk), nil, balancer.OnEjection(func(ctx context.Context, addr string, ejected bool) {
				req, _ := ctx.Value(requestKey{}).(string)
				got = append(got, fmt.Sprintf("%s %v %s", addr, ejected, req))
			}))
			t.Cleanup(c.Close)
			eps := equal(3)
			c.Update(eps)
			bad := eps[1].Addr
			feed(t, c, map[string][]balancer.Outcome{bad: repeat(balancer.ServerError, 5)})
			clk.Advance(30 * time.Second) // the base ejection time
			clk.Advance(30 * time.Second) // nothing more to tell
			want := []string{bad + " true " + bad + "#5", bad + " false "}
			if !slices.Equal(got, want) {
				t.Errorf("OnEjection calls = %q, want %q", got, want)
			}
		})
	}
}
