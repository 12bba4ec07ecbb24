package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/weftmesh/weft/examples/internal/openloop"
)

// requestCap bounds every request so that a run always ends.
const requestCap = 10 * time.Second

// closedResult is one variant's share of a closed-loop comparison.
type closedResult struct {
	ops    int64
	busy   time.Duration // summed request latencies
	allocs uint64        // heap objects allocated by the whole process
	cpu    time.Duration // user+system CPU time of the whole process
}

// mean is the mean latency of a request.
func (r closedResult) mean() time.Duration {
	if r.ops == 0 {
		return 0
	}
	return r.busy / time.Duration(r.ops)
}

func (r closedResult) allocsPerOp() float64 { return float64(r.allocs) / float64(max(r.ops, 1)) }

// cpuPerOp is the process's CPU time per request: unlike latency, it
// hardly depends on what else the machine runs.
func (r closedResult) cpuPerOp() time.Duration { return r.cpu / time.Duration(max(r.ops, 1)) }

// interleave compares variants in closed loop: conc goroutines each send
// size-byte requests back to back. The variants take turns in slices of
// about slice each, in a rotating order, until each has had perVariant:
// all of them see the same moments of the run, so a stall of a shared
// machine is spread over all instead of blamed on one. One unmeasured
// round first opens the connections concurrency needs.
func interleave(ctx context.Context, vs []variant, size, conc int, perVariant, slice time.Duration) ([]closedResult, error) {
	out := make([]closedResult, len(vs))
	for _, v := range vs {
		if _, err := runSlice(ctx, v.call, size, conc, slice); err != nil {
			return nil, fmt.Errorf("%s: %w", v.name, err)
		}
	}
	rounds := max(1, int(perVariant/slice))
	for r := range rounds {
		for k := range vs {
			i := (k + r) % len(vs)
			x0 := vs[i].ext()
			res, err := runSlice(ctx, vs[i].call, size, conc, slice)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", vs[i].name, err)
			}
			res.cpu += vs[i].ext() - x0
			out[i].ops += res.ops
			out[i].busy += res.busy
			out[i].allocs += res.allocs
			out[i].cpu += res.cpu
		}
	}
	return out, nil
}

// runSlice runs conc goroutines sending requests back to back for d (each
// sends at least one), and returns what they did.
func runSlice(ctx context.Context, call caller, size, conc int, d time.Duration) (closedResult, error) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total closedResult
		first error
	)
	a0, c0 := heapAllocs(), cpuTime()
	deadline := time.Now().Add(d)
	for range conc {
		wg.Go(func() {
			var ops int64
			var busy time.Duration
			for {
				t0 := time.Now()
				rctx, cancel := context.WithTimeout(ctx, requestCap)
				err := call(rctx, size)
				cancel()
				t1 := time.Now()
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
				ops++
				busy += t1.Sub(t0)
				if !t1.Before(deadline) {
					break
				}
			}
			mu.Lock()
			total.ops += ops
			total.busy += busy
			mu.Unlock()
		})
	}
	wg.Wait()
	total.allocs, total.cpu = heapAllocs()-a0, cpuTime()-c0
	return total, first
}

// openResult is one variant's figures at one rate, open loop.
type openResult struct {
	requests int
	errors   int64
	run      openloop.Result // latencies from each request's release
	cpu      time.Duration   // user+system CPU of the whole process
	lag      time.Duration   // the pacer's p99 lateness, worst of the halves
}

func (r openResult) cpuPerRequest() time.Duration { return r.cpu / time.Duration(max(r.requests, 1)) }

// openPair runs plain and Weft open loop at rate, each for perVariant in
// two halves, in the order plain, Weft, Weft, plain: the process's CPU time
// (getrusage) over each half is charged to the variant that ran it alone,
// and the symmetric order cancels a drift of the machine's load. Latencies
// are timed from each request's release by the pacer, which never waits for
// answers (see package openloop).
func openPair(ctx context.Context, plain, weft caller, size int, rate float64, perVariant time.Duration) ([2]openResult, error) {
	var out [2]openResult
	var lat [2][]time.Duration
	for _, i := range []int{0, 1, 1, 0} {
		call := []caller{plain, weft}[i]
		c0 := cpuTime()
		runs := openloop.Run(ctx, 1, rate, perVariant/2, requestCap, nil, func(ctx context.Context, _ int) error { return call(ctx, size) })
		out[i].cpu += cpuTime() - c0
		out[i].requests += len(runs[0].Latencies)
		out[i].errors += runs[0].Errors
		out[i].lag = max(out[i].lag, runs[0].Lag)
		lat[i] = append(lat[i], runs[0].Latencies...)
		if err := ctx.Err(); err != nil {
			return out, err
		}
	}
	for i := range out {
		slices.Sort(lat[i])
		out[i].run = openloop.Result{Latencies: lat[i], Errors: out[i].errors, Lag: out[i].lag}
	}
	return out, nil
}

// runOpen runs one caller open loop at rate for d.
func runOpen(ctx context.Context, call caller, size int, rate float64, d time.Duration) openloop.Result {
	return openloop.Run(ctx, 1, rate, d, requestCap, nil, func(ctx context.Context, _ int) error { return call(ctx, size) })[0]
}

func sortDurations(d []time.Duration) { slices.Sort(d) }

// cpuTime is the user and system CPU time the process has used, all
// threads.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

var heapSamples = []metrics.Sample{{Name: "/gc/heap/allocs:objects"}, {Name: "/gc/heap/live:bytes"}}

func heapAllocs() uint64 {
	s := []metrics.Sample{heapSamples[0]}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// memory is the process's live Go heap after a full collection, and its
// resident set.
type memory struct{ heap, rss int64 }

func measureMemory() memory {
	runtime.GC()
	runtime.GC() // the second cycle frees what finalizers of the first let go
	s := []metrics.Sample{heapSamples[1]}
	metrics.Read(s)
	return memory{heap: int64(s[0].Value.Uint64()), rss: vmRSS()}
}

// vmRSS reads VmRSS from /proc/self/status, in bytes; 0 where there is no
// such file.
func vmRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
