package stackroom

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"
)

type key struct{}

// TestContextIsTheEmbeddedOne checks that a transport handed a Context
// sees the attempt's own context in every way net/http and its callers
// look at one: the same Done channel, error, cause, deadline and values,
// and cancellation that reaches the contexts derived from it.
func TestContextIsTheEmbeddedOne(t *testing.T) {
	deadline := time.Now().Add(time.Hour)
	parent, cancel := context.WithDeadline(context.WithValue(context.Background(), key{}, "v"), deadline)
	defer cancel()
	inner, cancelCause := context.WithCancelCause(parent)
	c := &Context{inner}

	if c.Done() != inner.Done() {
		t.Fatal("Done is not the embedded context's channel")
	}
	if got, ok := c.Deadline(); !ok || !got.Equal(deadline) {
		t.Fatalf("Deadline() = %v, %v; want %v, true", got, ok, deadline)
	}
	if got := c.Value(key{}); got != "v" {
		t.Fatalf("Value = %v, want v", got)
	}
	// net/http derives a context of its own from the request's for every
	// round trip. With the embedded context's Done channel it is tied to
	// the cancelCtx underneath directly; a channel of Context's own would
	// cost a goroutine per request to watch it.
	before := runtime.NumGoroutine()
	child, cancelChild := context.WithCancelCause(c)
	defer cancelChild(nil)
	stopped := make(chan struct{})
	stop := context.AfterFunc(c, func() { close(stopped) })
	defer stop()
	if after := runtime.NumGoroutine(); after != before {
		t.Errorf("deriving from a Context started %d goroutines, want none", after-before)
	}

	why := errors.New("caller gave up")
	cancelCause(why)
	select {
	case <-child.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("a context derived from a Context was not canceled with it")
	}
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("AfterFunc on a Context did not run when it was canceled")
	}
	if !errors.Is(c.Err(), context.Canceled) {
		t.Errorf("Err() = %v, want context.Canceled", c.Err())
	}
	if got := context.Cause(c); got != why {
		t.Errorf("Cause = %v, want %v", got, why)
	}
	if got := context.Cause(child); got != why {
		t.Errorf("derived context's Cause = %v, want %v", got, why)
	}
}

// BenchmarkContextDone is what a Done call costs on a stack that has the
// room: net/http asks several times per request.
func BenchmarkContextDone(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := &Context{ctx}
	b.ReportAllocs()
	for b.Loop() {
		if c.Done() == nil {
			b.Fatal("no channel")
		}
	}
}
