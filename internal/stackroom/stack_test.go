package stackroom

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// stackInUse is the memory in the stack spans in use.
func stackInUse() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.StackInuse
}

// parked starts n goroutines that each call reserve (when not nil) and
// wait, and returns how much stack memory they took, then lets them go.
func parked(n int, reserve func()) uint64 {
	release := make(chan struct{})
	var started, done sync.WaitGroup
	before := stackInUse()
	for range n {
		started.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			if reserve != nil {
				reserve()
			}
			started.Done()
			<-release
		}()
	}
	started.Wait()
	grown := stackInUse() - before
	close(release)
	done.Wait()
	return grown
}

// TestReserveGrowsTheStack checks, by the memory their stacks take, that
// fresh goroutines that reserve have the room afterwards: a reservation
// that does nothing leaves each at its starting size, a fraction of it.
func TestReserveGrowsTheStack(t *testing.T) {
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		t.Skip("the reservations do nothing on", runtime.GOARCH)
	}
	// A collection would shrink the parked goroutines' stacks, which use
	// little of them, under the measure.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	start := []metrics.Sample{{Name: "/gc/stack/starting-size:bytes"}}
	metrics.Read(start)
	first := start[0].Value.Uint64()
	// A stack with 4 KiB free below a small frame is an 8 KiB one; with
	// 8 KiB free, a 16 KiB one.
	const n = 400
	for _, c := range []struct {
		name    string
		reserve func()
		each    uint64
	}{
		{"Reserve4K", Reserve4K, 8 << 10},
		{"Reserve8K", Reserve8K, 16 << 10},
		{"Context.Done", func() { (&Context{context.Background()}).Done() }, 8 << 10},
	} {
		if first >= c.each {
			t.Logf("goroutines start with %d B of stack here; %s has nothing to grow", first, c.name)
			continue
		}
		// The measure counts stack spans in use, and some goroutines may
		// take stacks freed earlier from spans already counted: the bar is
		// halfway between what they hold with and without the reservation.
		bar := n * (first + c.each) / 2
		if got := parked(n, c.reserve); got < bar {
			t.Errorf("%d goroutines that called %s took %d B of stack, want at least %d (they hold %d each; %d without)", n, c.name, got, bar, c.each, first)
		}
		// The control: without a reservation the same goroutines take
		// less, or the check above proves nothing.
		if got := parked(n, nil); got >= bar {
			t.Errorf("without %s, %d goroutines took %d B of stack, want less than %d", c.name, n, got, bar)
		}
	}
}

// TestReserveOnAGrownStack checks that a goroutine whose stack has the
// room already keeps working, however often it reserves, with the garbage
// collector moving and shrinking stacks meanwhile.
func TestReserveOnAGrownStack(t *testing.T) {
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				Reserve8K()
				if depth(g+i%32) != g+i%32 {
					t.Error("wrong depth")
					return
				}
				Reserve4K()
				if i%500 == 0 {
					runtime.GC()
				}
			}
		})
	}
	wg.Wait()
}

//go:noinline
func depth(n int) int {
	var pad [16]int
	pad[n%16] = n
	if n == 0 {
		return pad[0]
	}
	return depth(n-1) + 1 + pad[n%16] - n
}

// deep calls itself n times with a frame of some 200 bytes, as a request's
// chain of handlers and transports does.
//
//go:noinline
func deep(n int) int {
	var pad [24]int
	pad[n%24] = n
	if n == 0 {
		return pad[0]
	}
	return deep(n-1) + pad[n%24] - n
}

// BenchmarkFreshGoroutine runs 25 frames (some 6 KiB) deep on a fresh
// goroutine: the stack doubles twice, each time deeper, unless reserved
// first.
func BenchmarkFreshGoroutine(b *testing.B) {
	for _, c := range []struct {
		name    string
		reserve func()
	}{{"grows", func() {}}, {"reserved", Reserve4K}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			done := make(chan int)
			for b.Loop() {
				go func() { c.reserve(); done <- deep(25) }()
				<-done
			}
		})
	}
}

// BenchmarkReserve is the cost on a stack that has the room.
func BenchmarkReserve(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Reserve4K()
	}
}
