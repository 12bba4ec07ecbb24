package balancer_test

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/balancer"
)

// TestCSWRRWeight holds the weight of one endpoint to gRFC A58: "weight =
// qps / (utilization + eps/qps * error_utilization_penalty)", utilization
// being application_utilization when set and cpu_utilization otherwise; a
// report without both is ignored; the weight is 0 until reports have come
// for blackout_period, and 0 again (blackout restarting) once the last is
// older than weight_expiration_period.
func TestCSWRRWeight(t *testing.T) {
	const s = int64(time.Second)
	cfg := balancer.CSWRRConfig{BlackoutPeriod: 10 * time.Second, WeightExpirationPeriod: time.Minute}
	type report struct {
		at int64
		r  balancer.LoadReport
	}
	for _, tc := range []struct {
		name    string
		cfg     balancer.CSWRRConfig
		reports []report
		now     int64
		want    float64
	}{
		{name: "no report", now: 100 * s, want: 0},
		{name: "qps over cpu", reports: []report{{1 * s, balancer.LoadReport{QPS: 100, CPUUtilization: 0.5}}}, now: 20 * s, want: 200},
		{name: "application utilization wins", reports: []report{{1 * s, balancer.LoadReport{QPS: 100, CPUUtilization: 0.5, ApplicationUtilization: 0.25}}}, now: 20 * s, want: 400},
		{name: "errors penalized", reports: []report{{1 * s, balancer.LoadReport{QPS: 100, CPUUtilization: 0.5, EPS: 10}}}, now: 20 * s, want: 100 / 0.6},
		{name: "penalty 2", cfg: cfg.WithErrorUtilizationPenalty(2), reports: []report{{1 * s, balancer.LoadReport{QPS: 100, CPUUtilization: 0.5, EPS: 10}}}, now: 20 * s, want: 100 / 0.7},
		{name: "penalty 0", cfg: cfg.WithErrorUtilizationPenalty(0), reports: []report{{1 * s, balancer.LoadReport{QPS: 100, CPUUtilization: 0.5, EPS: 10}}}, now: 20 * s, want: 200},
		{name: "no utilization: ignored", reports: []report{{1 * s, balancer.LoadReport{QPS: 100}}}, now: 20 * s, want: 0},
		{name: "no qps: ignored", reports: []report{{1 * s, balancer.LoadReport{CPUUtilization: 0.5}}}, now: 20 * s, want: 0},
		{name: "within blackout", reports: []report{{1 * s, balancer.LoadReport{QPS: 100, CPUUtilization: 0.5}}}, now: 5 * s, want: 0},
		{name: "blackout counts from the first report", reports: []report{
			{1 * s, balancer.LoadReport{QPS: 100, CPUUtilization: 0.5}}, {10 * s, balancer.LoadReport{QPS: 100, CPUUtilization: 0.25}}}, now: 11 * s, want: 400},
		{name: "expired", reports: []report{{1 * s, balancer.LoadReport{QPS: 100, CPUUtilization: 0.5}}}, now: 61 * s, want: 0},
		{name: "no blackout", cfg: balancer.CSWRRConfig{BlackoutPeriod: -1}, reports: []report{{1 * s, balancer.LoadReport{QPS: 100, CPUUtilization: 0.5}}}, now: 1 * s, want: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cfg
			if c == (balancer.CSWRRConfig{}) {
				c = cfg
			}
			e := cswrrEndpoints(1)[0]
			for _, r := range tc.reports {
				balancer.RecordLoadAt(e, &r.r, r.at)
			}
			if got := balancer.CSWRRWeight(e, c, tc.now); math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("weight %v, want %v", got, tc.want)
			}
		})
	}
}

// TestCSWRRExpiryRestartsBlackout: after an expiration, a new report's
// weight waits out the blackout again (A58: "non_empty_since is reset").
func TestCSWRRExpiryRestartsBlackout(t *testing.T) {
	const s = int64(time.Second)
	cfg := balancer.CSWRRConfig{BlackoutPeriod: 10 * time.Second, WeightExpirationPeriod: time.Minute}
	e := cswrrEndpoints(1)[0]
	r := &balancer.LoadReport{QPS: 10, CPUUtilization: 1}
	balancer.RecordLoadAt(e, r, 1*s)
	for _, step := range []struct {
		now    int64
		report bool
		want   float64
	}{
		{20 * s, false, 10},
		{100 * s, false, 0}, // expired
		{101 * s, true, 0},  // new report, blackout again
		{105 * s, false, 0},
		{112 * s, false, 10},
	} {
		if step.report {
			balancer.RecordLoadAt(e, r, step.now)
		}
		if got := balancer.CSWRRWeight(e, cfg, step.now); got != step.want {
			t.Errorf("at %ds: weight %v, want %v", step.now/s, got, step.want)
		}
	}
}

// TestCSWRRScaledWeights: the scheduler's weights are scaled to the
// largest; endpoints without a usable weight get the mean of the others
// (A58); fewer than two usable weights, or all equal, is round robin.
func TestCSWRRScaledWeights(t *testing.T) {
	const s = int64(time.Second)
	cfg := balancer.CSWRRConfig{BlackoutPeriod: -1}
	for _, tc := range []struct {
		name  string
		utils []float64 // 0: no report
		want  []uint16
	}{
		{"none", []float64{0, 0, 0}, nil},
		{"one", []float64{0.5, 0, 0}, nil},
		{"equal", []float64{0.5, 0.5}, nil},
		{"two to one", []float64{0.25, 0.5}, []uint16{65535, 32768}},
		{"mean for the unknown", []float64{0.25, 0.5, 0}, []uint16{65535, 32768, 49151}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eps := cswrrEndpoints(len(tc.utils))
			for i, u := range tc.utils {
				if u > 0 {
					balancer.RecordLoadAt(eps[i], &balancer.LoadReport{QPS: 100, CPUUtilization: u}, s)
				}
			}
			got := balancer.CSWRRScaledWeights(eps, cfg, 2*s)
			if len(got) != len(tc.want) {
				t.Fatalf("weights %v, want %v", got, tc.want)
			}
			for i := range got {
				if d := int(got[i]) - int(tc.want[i]); d < -1 || d > 1 {
					t.Errorf("weights %v, want %v", got, tc.want)
					break
				}
			}
		})
	}
}

// TestCSWRRPickShares: over many picks, each endpoint's share is its
// weight's share of the total, as grpc-go's static-stride scheduler gives.
func TestCSWRRPickShares(t *testing.T) {
	for _, w := range [][]uint16{{65535, 32768, 16384}, {65535, 100}, {65535, 65535, 1000, 30000}} {
		eps := cswrrEndpoints(len(w))
		p := balancer.NewCSWRRPicker(eps, w)
		counts := map[string]int{}
		const n = 200000
		for range n {
			r, err := p.Pick(balancer.PickInfo{})
			if err != nil {
				t.Fatal(err)
			}
			counts[r.Endpoint.Addr]++
		}
		var total float64
		for _, x := range w {
			total += float64(x)
		}
		for i, e := range eps {
			want := float64(w[i]) / total
			if got := float64(counts[e.Addr]) / n; math.Abs(got-want) > 0.01 {
				t.Errorf("weights %v: %s got share %.4f, want %.4f", w, e.Addr, got, want)
			}
		}
	}
}

// TestCSWRRParseConfig: grpc-go's JSON shape, bad values refused naming
// the field.
func TestCSWRRParseConfig(t *testing.T) {
	p := balancer.Get(balancer.ClientSideWeightedRoundRobin).(balancer.ConfigParser)
	for _, tc := range []struct {
		js, err string
	}{
		{js: `{}`},
		{js: `{"enableOobLoadReport":true,"oobReportingPeriod":"5s","blackoutPeriod":"0s","weightExpirationPeriod":"1m","weightUpdatePeriod":"200ms","errorUtilizationPenalty":0.5}`},
		{js: `{"blackoutPeriod":"-1s"}`, err: "blackoutPeriod"},
		{js: `{"errorUtilizationPenalty":-1}`, err: "errorUtilizationPenalty"},
		{js: `{"weightUpdatePeriod":10}`, err: "duration"},
	} {
		_, err := p.ParseConfig(json.RawMessage(tc.js))
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.js, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: error %v, want one naming %q", tc.js, err, tc.err)
		}
	}
}

// BenchmarkCSWRRPick measures a pick with weights in force.
func BenchmarkCSWRRPick(b *testing.B) {
	eps := cswrrEndpoints(10)
	w := []uint16{65535, 60000, 50000, 40000, 30000, 20000, 10000, 5000, 2000, 1000}
	p := balancer.NewCSWRRPicker(eps, w)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := p.Pick(balancer.PickInfo{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// cswrrEndpoints returns n balancer endpoints with fresh loads.
func cswrrEndpoints(n int) []*balancer.Endpoint {
	out := make([]*balancer.Endpoint, n)
	for i, e := range equal(n) {
		out[i] = balancer.NewEndpoint(e)
	}
	return out
}

// TestCSWRRCluster runs the policy in a Cluster: round robin until
// reports come, then, at the next weight update, shares by the weights
// the reports (through PickResult.Finish's DoneInfo.Load) give. Its
// update goroutine ends with Close (goleak in TestMain).
func TestCSWRRCluster(t *testing.T) {
	b := balancer.Get(balancer.ClientSideWeightedRoundRobin)
	c := newCluster(t, b, `{"blackoutPeriod":"0s","weightUpdatePeriod":"100ms"}`, equal(2))
	counts := pickCounts(t, c, 100, nil)
	for addr, n := range counts {
		if n != 50 {
			t.Errorf("before any report: %s got %d of 100, want 50 (round robin)", addr, n)
		}
	}
	utils := map[string]float64{equal(2)[0].Addr: 0.25, equal(2)[1].Addr: 0.75}
	deadline := time.Now().Add(20 * time.Second)
	for {
		counts := map[string]int{}
		for range 400 {
			r, err := c.Pick(balancer.PickInfo{})
			if err != nil {
				t.Fatal(err)
			}
			counts[r.Endpoint.Addr]++
			r.Finish(balancer.DoneInfo{Load: &balancer.LoadReport{QPS: 100, CPUUtilization: utils[r.Endpoint.Addr]}})
		}
		if n := counts[equal(2)[0].Addr]; n >= 290 && n <= 310 {
			return // weights 400 and 133: 3 to 1
		}
		if time.Now().After(deadline) {
			t.Fatalf("after reports: counts %v, want about 300 and 100", counts)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
