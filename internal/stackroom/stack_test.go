package stackroom

import (
	"runtime"
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
// fresh goroutines that reserve have the room afterwards: a Reserve that
// does nothing leaves each at its starting size, a fraction of it.
func TestReserveGrowsTheStack(t *testing.T) {
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		t.Skip("Reserve does nothing on", runtime.GOARCH)
	}
	const n = 400
	for _, c := range []struct {
		name    string
		reserve func()
		room    uint64
	}{
		{"Reserve4K", Reserve4K, 4 << 10},
		{"Reserve8K", Reserve8K, 8 << 10},
	} {
		// A stack with room r free below a small frame is at least
		// r plus what is in use, rounded up to a power of two: 8 KiB for
		// 4 KiB of room, 16 KiB for 8 KiB.
		want := uint64(n) * 2 * c.room
		if got := parked(n, c.reserve); got < want {
			t.Errorf("%s: %d goroutines took %d B of stack, want at least %d (%d each)", c.name, n, got, want, 2*c.room)
		}
	}
	// The control: without a reservation the same goroutines take less
	// than the smaller figure, or the checks above prove nothing.
	if got, limit := parked(n, nil), uint64(n)*8<<10; got >= limit {
		t.Errorf("without Reserve, %d goroutines took %d B of stack, want less than %d", n, got, limit)
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

// BenchmarkFreshGoroutine runs 40 frames (some 9 KiB) deep on a fresh
// goroutine: the stack doubles three times, each deeper than the last,
// unless reserved first.
func BenchmarkFreshGoroutine(b *testing.B) {
	for _, c := range []struct {
		name    string
		reserve func()
	}{{"grows", func() {}}, {"reserved", Reserve8K}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			done := make(chan int)
			for b.Loop() {
				go func() { c.reserve(); done <- deep(40) }()
				<-done
			}
		})
	}
}

// BenchmarkReserve is the cost on a stack that has the room.
func BenchmarkReserve(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Reserve8K()
	}
}
