// Package openloop drives open-loop, constant-rate load for Weft's
// experiments: requests leave on a fixed schedule whatever the answers do,
// and each is timed from its scheduled send time, so slow answers cannot
// hide the latency being measured (coordinated omission).
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
		slot := &lat[c][sent[c]]
		sent[c]++
		wg.Go(func() {
			rctx, cancel := context.WithTimeout(ctx, requestCap)
			defer cancel()
			if err := send(rctx, c); err != nil {
				errs[c].Add(1)
			}
			*slot = time.Since(intended)
		})
	}
	wg.Wait()
	out := make([]Result, clients)
	for c := range out {
		slices.Sort(lat[c])
		out[c] = Result{Latencies: lat[c], Errors: errs[c].Load()}
	}
	return out
}
