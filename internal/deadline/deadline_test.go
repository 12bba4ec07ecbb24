package deadline

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type key struct{}

// closedWithin reports whether ch closes within d.
func closedWithin(ch <-chan struct{}, d time.Duration) bool {
	select {
	case <-ch:
		return true
	case <-time.After(d):
		return false
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Each case drives a Context and context.WithDeadline (the oracle) through
// the same steps; the two must agree on Deadline, Err and Done.
func TestAgreesWithContextWithDeadline(t *testing.T) {
	far := time.Now().Add(time.Hour)
	past := time.Now().Add(-time.Second)
	cases := []struct {
		name     string
		deadline time.Time
		parentDL time.Time // zero: none
		steps    func(parentCancel context.CancelFunc, release func(), touch func())
	}{
		{"live, never touched", far, time.Time{}, func(_ context.CancelFunc, _ func(), _ func()) {}},
		{"live, Done called", far, time.Time{}, func(_ context.CancelFunc, _ func(), touch func()) { touch() }},
		{"already past", past, time.Time{}, func(_ context.CancelFunc, _ func(), _ func()) {}},
		{"already past, Done called", past, time.Time{}, func(_ context.CancelFunc, _ func(), touch func()) { touch() }},
		{"parent canceled, untouched", far, time.Time{}, func(pc context.CancelFunc, _ func(), _ func()) { pc() }},
		{"parent canceled after Done", far, time.Time{}, func(pc context.CancelFunc, _ func(), touch func()) { touch(); pc() }},
		{"released, untouched", far, time.Time{}, func(_ context.CancelFunc, rel func(), _ func()) { rel() }},
		{"released after Done", far, time.Time{}, func(_ context.CancelFunc, rel func(), touch func()) { touch(); rel() }},
		{"released twice", far, time.Time{}, func(_ context.CancelFunc, rel func(), _ func()) { rel(); rel() }},
		{"past, then released", past, time.Time{}, func(_ context.CancelFunc, rel func(), _ func()) { rel() }},
		{"parent's deadline earlier", far, far.Add(-time.Minute), func(_ context.CancelFunc, _ func(), _ func()) {}},
		{"parent's deadline later", far, far.Add(time.Minute), func(_ context.CancelFunc, _ func(), _ func()) {}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mk := func() (context.Context, context.CancelFunc) {
				p := context.WithValue(context.Background(), key{}, "v")
				if !tc.parentDL.IsZero() {
					return context.WithDeadline(p, tc.parentDL)
				}
				return context.WithCancel(p)
			}
			p1, pc1 := mk()
			defer pc1()
			p2, pc2 := mk()
			defer pc2()
			lazy := New(p1, tc.deadline)
			want, cancel := context.WithDeadline(p2, tc.deadline)
			defer cancel()
			tc.steps(pc1, lazy.Release, func() { lazy.Done() })
			tc.steps(pc2, cancel, func() { want.Done() })

			gd, gok := lazy.Deadline()
			wd, wok := want.Deadline()
			if !gd.Equal(wd) || gok != wok {
				t.Errorf("Deadline = %v %v, want %v %v", gd, gok, wd, wok)
			}
			if g, w := lazy.Err(), want.Err(); !errors.Is(g, w) || (g == nil) != (w == nil) {
				t.Errorf("Err = %v, want %v", g, w)
			}
			if g, w := isClosed(lazy.Done()), isClosed(want.Done()); g != w {
				t.Errorf("Done closed = %v, want %v", g, w)
			}
			if got := lazy.Value(key{}); got != "v" {
				t.Errorf("Value = %v, want the parent's", got)
			}
			lazy.Release()
		})
	}
}

// Done closes when the deadline passes, and contexts derived from the
// Context (WithCancel, AfterFunc) end with it: they find the armed
// context's cancellation through Value.
func TestDeadlineReachesDerivedContexts(t *testing.T) {
	c := New(context.Background(), time.Now().Add(30*time.Millisecond))
	defer c.Release()
	child, cancel := context.WithCancel(c)
	defer cancel()
	ran := make(chan struct{})
	stop := context.AfterFunc(c, func() { close(ran) })
	defer stop()
	if !closedWithin(c.Done(), 10*time.Second) {
		t.Fatal("Done not closed after the deadline")
	}
	if !errors.Is(c.Err(), context.DeadlineExceeded) {
		t.Errorf("Err = %v, want DeadlineExceeded", c.Err())
	}
	if !closedWithin(child.Done(), 10*time.Second) || !errors.Is(child.Err(), context.DeadlineExceeded) {
		t.Errorf("derived context: Err = %v, want DeadlineExceeded", child.Err())
	}
	if !errors.Is(context.Cause(child), context.DeadlineExceeded) {
		t.Errorf("derived context: Cause = %v, want DeadlineExceeded", context.Cause(child))
	}
	if !closedWithin(ran, 10*time.Second) {
		t.Error("AfterFunc did not run")
	}
}

// Err reports the passed deadline without Done ever being called, and
// Done is then already closed: Err is never non-nil before Done is.
func TestErrWithoutDone(t *testing.T) {
	c := New(context.Background(), time.Now().Add(10*time.Millisecond))
	defer c.Release()
	deadline := time.Now().Add(10 * time.Second)
	for c.Err() == nil {
		if time.Now().After(deadline) {
			t.Fatal("Err still nil long after the deadline")
		}
		time.Sleep(time.Millisecond)
	}
	if !isClosed(c.Done()) {
		t.Error("Err is non-nil but Done is open")
	}
}

// The point of the package: a request whose handler never waits on its
// context costs one allocation, not a timer and a registration.
func TestNoTimerUntilDone(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := time.Now().Add(time.Hour)
	allocs := testing.AllocsPerRun(1000, func() {
		c := New(parent, d)
		if c.Err() != nil {
			t.Fatal("ended early")
		}
		c.Deadline()
		c.Value(key{})
		c.Release()
	})
	if allocs > 1 {
		t.Errorf("%v allocations per untouched context, want at most 1", allocs)
	}
}

// Done, Err and Release from many goroutines at once (run with -race).
func TestConcurrentUse(t *testing.T) {
	for range 50 {
		c := New(context.Background(), time.Now().Add(time.Millisecond))
		var wg sync.WaitGroup
		chans := make([]<-chan struct{}, 8)
		for i := range chans {
			wg.Go(func() {
				c.Err()
				chans[i] = c.Done()
				c.Err()
			})
		}
		wg.Go(c.Release)
		wg.Wait()
		for _, ch := range chans[1:] {
			if ch != chans[0] {
				t.Fatal("Done returned different channels")
			}
		}
		if !closedWithin(c.Done(), 10*time.Second) || c.Err() == nil {
			t.Fatal("not ended after Release and the deadline")
		}
	}
}

func BenchmarkUntouched(b *testing.B) {
	parent, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.Run("context.WithTimeout", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, cancel := context.WithTimeout(parent, time.Minute)
			cancel()
		}
	})
	b.Run("deadline.New", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c := New(parent, time.Now().Add(time.Minute))
			c.Release()
		}
	})
}
