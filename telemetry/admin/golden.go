package admin

import (
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Directions of a golden series.
const (
	DirectionOutbound = "outbound"
	DirectionInbound  = "inbound"
)

// GoldenKey names one golden series: a direction, a route and a caller,
// as Linkerd's `viz stat` breaks traffic down.
type GoldenKey struct {
	// Direction is DirectionOutbound or DirectionInbound.
	Direction string
	// Service is, outbound, the service or cluster called; inbound, the
	// listener or server that answered ("" for the mesh's own servers).
	Service string
	// Route is the route that matched (xDS route name), or the gRPC
	// method; "" when neither is known.
	Route string
	// Caller is, inbound, the caller's SPIFFE ID ("" for a caller without
	// one); outbound, "".
	Caller string
}

// GoldenWindow is how long each of the two windows golden metrics rotate
// through lasts: a reading covers the last one to two windows.
const GoldenWindow = 30 * time.Second

// DefaultMaxGoldenKeys bounds the series a Golden keeps: callers and
// routes come from outside, and a flood of new ones must not grow memory.
// Traffic past the bound lands in one series per direction whose Route
// is OtherRoute.
const DefaultMaxGoldenKeys = 256

// OtherRoute is the route of the overflow series.
const OtherRoute = "(other)"

// bucketBounds are the histogram's upper bounds in microseconds: 250 µs
// growing by half each bucket to about 2 minutes, so a percentile read off
// them is within 25% of the truth over the range a request lives in.
var bucketBounds = func() []int64 {
	var b []int64
	for v := 250.0; v < 150e6; v *= 1.5 {
		b = append(b, int64(v))
	}
	return b
}()

// numBuckets is len(bucketBounds)+1, the last bucket unbounded (a test
// holds the two in step).
const numBuckets = 34

// window is one GoldenWindow of one series.
type window struct {
	epoch   atomic.Int64 // which window of time this holds (unix time / GoldenWindow)
	total   atomic.Uint64
	failed  atomic.Uint64
	buckets [numBuckets]atomic.Uint64
}

// series is one key's two windows and its totals since it was created.
type series struct {
	win            [2]window
	total, success atomic.Uint64
	// created is when the series began (unix ns): a series younger than
	// the window is read over its own age, so a rate does not start
	// diluted by time before its first request.
	created int64
}

// Golden records request rate, success rate and latency percentiles per
// GoldenKey, with fixed-bucket histograms in two rotating windows. It is
// safe for concurrent use; Observe takes a read lock and does atomic adds
// (no allocation) for a key it knows.
type Golden struct {
	max int
	mu  sync.RWMutex
	m   map[GoldenKey]*series
}

// NewGolden returns a Golden keeping at most maxKeys series
// (DefaultMaxGoldenKeys when maxKeys <= 0).
func NewGolden(maxKeys int) *Golden {
	if maxKeys <= 0 {
		maxKeys = DefaultMaxGoldenKeys
	}
	return &Golden{max: maxKeys, m: map[GoldenKey]*series{}}
}

func (g *Golden) series(k GoldenKey) *series {
	g.mu.RLock()
	s := g.m[k]
	g.mu.RUnlock()
	if s != nil {
		return s
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if s = g.m[k]; s != nil {
		return s
	}
	if len(g.m) >= g.max-2 { // two are kept for the overflow series
		k = GoldenKey{Direction: k.Direction, Route: OtherRoute}
		if s = g.m[k]; s != nil {
			return s
		}
	}
	s = &series{created: time.Now().UnixNano()}
	g.m[k] = s
	return s
}

// Observe records one request of k that took d and succeeded or not,
// finished at now. A nil Golden records nothing.
func (g *Golden) Observe(k GoldenKey, ok bool, d time.Duration, now time.Time) {
	if g == nil {
		return
	}
	s := g.series(k)
	s.total.Add(1)
	if ok {
		s.success.Add(1)
	}
	epoch := now.UnixNano() / int64(GoldenWindow)
	w := &s.win[epoch&1]
	if old := w.epoch.Load(); old != epoch {
		// The slot holds a window two or more ago: the first to see
		// that clears it. A request racing the clear may be lost, which
		// an estimate over thousands of requests does not notice.
		if w.epoch.CompareAndSwap(old, epoch) {
			w.total.Store(0)
			w.failed.Store(0)
			for i := range w.buckets {
				w.buckets[i].Store(0)
			}
		}
	}
	w.total.Add(1)
	if !ok {
		w.failed.Add(1)
	}
	us := d.Microseconds()
	i, _ := slices.BinarySearch(bucketBounds, us)
	w.buckets[i].Add(1)
}

// GoldenStat is one series as /stats/golden reports it: Linkerd's
// `viz stat` columns over the last Window seconds, and totals since the
// series began.
type GoldenStat struct {
	Direction string `json:"direction"`
	Service   string `json:"service,omitempty"`
	Route     string `json:"route,omitempty"`
	Caller    string `json:"caller,omitempty"`
	// WindowSeconds is the time the rates and percentiles cover.
	WindowSeconds float64 `json:"window_seconds"`
	// Requests is the requests finished in the window.
	Requests uint64 `json:"requests"`
	// RPS is Requests per second over the window.
	RPS float64 `json:"rps"`
	// SuccessRate is the share of the window's requests that succeeded
	// (0 to 1), nil when there were none.
	SuccessRate *float64 `json:"success_rate,omitempty"`
	// P50Ms, P95Ms and P99Ms are latency percentiles over the window in
	// milliseconds, from the histogram's buckets (within 25%).
	P50Ms *float64 `json:"p50_ms,omitempty"`
	P95Ms *float64 `json:"p95_ms,omitempty"`
	P99Ms *float64 `json:"p99_ms,omitempty"`
	// Total and TotalSuccess count every request since the series began.
	Total        uint64 `json:"total"`
	TotalSuccess uint64 `json:"total_success"`
}

// Snapshot reads every series at now, sorted by direction, service,
// route and caller. A nil Golden has none.
func (g *Golden) Snapshot(now time.Time) []GoldenStat {
	out := []GoldenStat{}
	if g == nil {
		return out
	}
	g.mu.RLock()
	keys := make([]GoldenKey, 0, len(g.m))
	all := make([]*series, 0, len(g.m))
	for k, s := range g.m {
		keys = append(keys, k)
		all = append(all, s)
	}
	g.mu.RUnlock()
	epoch := now.UnixNano() / int64(GoldenWindow)
	// The window is the current one so far and the whole one before.
	span := time.Duration(now.UnixNano()-epoch*int64(GoldenWindow)) + GoldenWindow
	for i, s := range all {
		k := keys[i]
		span := span
		if age := time.Duration(now.UnixNano() - s.created); age > 0 && age < span {
			span = max(age, time.Second)
		}
		st := GoldenStat{Direction: k.Direction, Service: k.Service, Route: k.Route, Caller: k.Caller,
			WindowSeconds: span.Seconds(), Total: s.total.Load(), TotalSuccess: s.success.Load()}
		var buckets [numBuckets]uint64
		var failed uint64
		for j := range s.win {
			w := &s.win[j]
			if e := w.epoch.Load(); e != epoch && e != epoch-1 {
				continue
			}
			st.Requests += w.total.Load()
			failed += w.failed.Load()
			for b := range w.buckets {
				buckets[b] += w.buckets[b].Load()
			}
		}
		st.RPS = float64(st.Requests) / span.Seconds()
		if st.Requests > 0 {
			sr := float64(st.Requests-min(failed, st.Requests)) / float64(st.Requests)
			st.SuccessRate = &sr
			st.P50Ms, st.P95Ms, st.P99Ms = quantile(&buckets, 0.50), quantile(&buckets, 0.95), quantile(&buckets, 0.99)
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b GoldenStat) int {
		for _, c := range [...]int{strings.Compare(a.Direction, b.Direction), strings.Compare(a.Service, b.Service),
			strings.Compare(a.Route, b.Route), strings.Compare(a.Caller, b.Caller)} {
			if c != 0 {
				return c
			}
		}
		return 0
	})
	return out
}

// quantile reads the q-th quantile off the buckets in milliseconds,
// interpolating linearly within the bucket it falls in, as Prometheus's
// histogram_quantile does; nil when the buckets are empty.
func quantile(b *[numBuckets]uint64, q float64) *float64 {
	var n uint64
	for _, c := range b {
		n += c
	}
	if n == 0 {
		return nil
	}
	rank := q * float64(n)
	var seen float64
	for i, c := range b {
		if c == 0 {
			continue
		}
		if seen+float64(c) < rank {
			seen += float64(c)
			continue
		}
		lo := 0.0
		if i > 0 {
			lo = float64(bucketBounds[i-1])
		}
		hi := lo * 1.5 // the unbounded bucket: its lower bound and half again
		if i < len(bucketBounds) {
			hi = float64(bucketBounds[i])
		}
		v := (lo + (hi-lo)*(rank-seen)/float64(c)) / 1000
		v = math.Round(v*1000) / 1000
		return &v
	}
	return nil
}
