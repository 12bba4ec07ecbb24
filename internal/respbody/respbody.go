// Package respbody wraps a response body so that the per-request state it
// keeps alive is released exactly once: when the body returns its first
// error from Read (io.EOF included) or is closed, whichever comes first. A
// caller that reads a body to its end and never closes it, which net/http
// tolerates, leaks nothing.
//
// The work is held in fields rather than one closure, so that the layers
// of a request (the circuit breaker's request slot at the bottom, the
// per-try and route contexts above it) share one wrapper instead of
// wrapping the body once each, and so that a layer that allocates per
// request anyway can keep the wrapper inside that allocation.
package respbody

import (
	"context"
	"io"
	"sync/atomic"
)

// Slot is a held request slot (resilience.Thresholds' max requests).
type Slot interface{ ReleaseRequest() }

// Body is a response body with its release work. Set its fields before
// handing it out and do not copy it after.
type Body struct {
	io.ReadCloser
	Slot        Slot // released, when not nil
	CancelTry   context.CancelCauseFunc
	CancelRoute context.CancelFunc
	Done        func()
	ran         atomic.Bool
}

// Read implements io.Reader; its first error releases.
func (b *Body) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.finish()
	}
	return n, err
}

// Close implements io.Closer and releases.
func (b *Body) Close() error {
	err := b.ReadCloser.Close()
	b.finish()
	return err
}

// Released reports whether the release work has run.
func (b *Body) Released() bool { return b.ran.Load() }

func (b *Body) finish() {
	if b.ran.CompareAndSwap(false, true) {
		if b.Slot != nil {
			b.Slot.ReleaseRequest()
		}
		if b.CancelTry != nil {
			b.CancelTry(nil)
		}
		if b.CancelRoute != nil {
			b.CancelRoute()
		}
		if b.Done != nil {
			b.Done()
		}
	}
}
