// Package openloop drives open-loop, constant-rate load for Weft's
// experiments: requests leave on a fixed schedule whatever the answers do,
// each from its own goroutine, so slow answers cannot delay later sends and
// hide the latency being measured (coordinated omission).
//
// Each request is timed from the moment the pacer releases it, not from its
// scheduled time: Go's timers on Linux wake up to a millisecond late, and
// timing from the schedule would add that lateness, the harness's own, to
// every figure. The pacer keeps to the schedule (a late wake-up releases
// the requests that are due at once) and reports its lateness as Lag, so a
// reader can see whether it kept up.
package openloop

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Result is one client's share of a run: every request's latency, sorted,
// and how many failed.
type Result struct {
	Latencies []time.Duration
	Errors    int64
	// Lag is how late the pacer released requests against their schedule,
	// at the 99th percentile over all clients of the run. Beyond a
	// millisecond or two it means the machine, not the system under test,
	// set the pace.
	Lag time.Duration
}

// Quantile returns the q-quantile (0..1) of the sorted latencies.
func (r Result) Quantile(q float64) time.Duration {
	l := r.Latencies
	i := int(float64(len(l))*q+0.999999) - 1
	return l[min(max(i, 0), len(l)-1)]
}

// Max returns the largest latency.
func (r Result) Max() time.Duration { return r.Latencies[len(r.Latencies)-1] }

// Run sends rate requests per second per client for duration, the clients'
// requests interleaved in random order so all of them see the same moments
// of the run, each from its own goroutine at its scheduled time and bounded
// by requestCap. start, when not nil, is called with the schedule's start
// time before the first request. The run is bounded: clients × rate ×
// duration requests in all.
func Run(ctx context.Context, clients int, rate float64, duration, requestCap time.Duration,
	start func(time.Time), send func(ctx context.Context, client int) error) []Result {
	n := int(rate * duration.Seconds())
	order := make([]int, n*clients)
	for j := range order {
		order[j] = j % clients
	}
	rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	interval := time.Duration(float64(time.Second) / (rate * float64(clients)))
	lat := make([][]time.Duration, clients)
	for c := range lat {
		lat[c] = make([]time.Duration, n)
	}
	sent := make([]int, clients)
	errs := make([]atomic.Int64, clients)
	lags := make([]time.Duration, len(order))

	var wg sync.WaitGroup
	t0 := time.Now()
	if start != nil {
		start(t0)
	}
	for j, c := range order {
		intended := t0.Add(time.Duration(j) * interval)
		if d := time.Until(intended); d > 0 {
			time.Sleep(d)
		}
		released := time.Now()
		lags[j] = max(released.Sub(intended), 0)
		slot := &lat[c][sent[c]]
		sent[c]++
		wg.Go(func() {
			rctx, cancel := context.WithTimeout(ctx, requestCap)
			defer cancel()
			if err := send(rctx, c); err != nil {
				errs[c].Add(1)
			}
			*slot = time.Since(released)
		})
	}
	wg.Wait()
	var lag time.Duration
	if len(lags) > 0 {
		slices.Sort(lags)
		lag = Result{Latencies: lags}.Quantile(0.99)
	}
	out := make([]Result, clients)
	for c := range out {
		slices.Sort(lat[c])
		out[c] = Result{Latencies: lat[c], Errors: errs[c].Load(), Lag: lag}
	}
	return out
}
