package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// benchStacks builds every client and server the harness compares, as
// run does, for the benchmarks below.
func benchStacks(b *testing.B) *stacks {
	b.Helper()
	ctx := context.Background()
	e, f, err := newEnv(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.close)
	s, err := e.buildStacks(ctx, f)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// benchName is a variant's name as a sub-benchmark's: "Weft HTTP/1.1 TLS"
// is "Weft_HTTP1.1_TLS", so that -bench patterns can name it.
var benchName = strings.NewReplacer(" ", "_", "/", "").Replace

// BenchmarkVariant sends 1 KiB GETs and calls through each of the
// harness's variants, one variant at a time, from one goroutine and under
// a deadline, as the harness's closed loop does: its per-request figures
// (allocations, and CPU for a profiler or counter attached to the process)
// without the harness's interleaving.
//
//	go test -run '^$' -bench 'Variant/Weft_HTTP1.1$' -benchtime 10000x -benchmem ./examples/bench
func BenchmarkVariant(b *testing.B) {
	s := benchStacks(b)
	ctx := context.Background()
	for _, v := range s.all() {
		b.Run(benchName(v.name), func(b *testing.B) {
			b.ReportAllocs()
			if err := v.call(ctx, 1024); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				rctx, cancel := context.WithTimeout(ctx, requestCap)
				err := v.call(rctx, 1024)
				cancel()
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkFreshGoroutine is BenchmarkVariant with every request sent from
// a goroutine of its own, a millisecond after the last one ended, as the
// open loop sends them at 1,000 a second: each starts with a small stack
// that grows by copying, on a machine idle in between. Counting
// runtime.copystack and runtime.adjustframe with perf uprobes on the test
// binary over this benchmark gives the stack copies and frames walked per
// request that the README's performance notes quote.
func BenchmarkFreshGoroutine(b *testing.B) {
	s := benchStacks(b)
	ctx := context.Background()
	for _, v := range s.all() {
		b.Run(benchName(v.name), func(b *testing.B) {
			b.ReportAllocs()
			done := make(chan error)
			for b.Loop() {
				b.StopTimer()
				time.Sleep(time.Millisecond)
				b.StartTimer()
				go func() {
					rctx, cancel := context.WithTimeout(ctx, requestCap)
					defer cancel()
					done <- v.call(rctx, 1024)
				}()
				if err := <-done; err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
