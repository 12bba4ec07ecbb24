// Package deadline gives a context a deadline without starting a timer
// until something waits on the context.
//
// A mesh server bounds every request by the deadline its caller sent
// (Weft-Timeout), and an xDS route's default timeout means nearly every
// request carries one. context.WithDeadline pays for that up front: a
// timer armed and disarmed, and the context registered with its parent,
// about seven allocations per request, even when the handler never looks
// at its context's Done channel, as most handlers that only compute and
// write do not. Context reports the deadline at once (Deadline and Err are
// exact) and builds the real context.WithDeadline only when Done is first
// called.
package deadline

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Context is a context bounded by a deadline, its timer started by the
// first call to Done. It behaves as context.WithDeadline(parent, d) would:
// Deadline is the earlier of d and the parent's; Err is nil until the
// deadline passes or the parent ends, then context.DeadlineExceeded or the
// parent's error; Done is closed when Err turns non-nil. Release ends it as
// the CancelFunc of context.WithDeadline does.
//
// One difference remains: context.Cause on a Context whose Done and Err
// were never called reports the parent's cause, not DeadlineExceeded, as
// it cannot ask Context without a key the context package keeps private.
type Context struct {
	parent   context.Context
	deadline time.Time

	armed    atomic.Pointer[armed] // set once Done (or a late Err) needs it
	mu       sync.Mutex            // serializes arming and Release
	released atomic.Bool
}

type armed struct {
	ctx    context.Context
	cancel context.CancelFunc
}

// New returns a Context bounded by d, derived from parent.
func New(parent context.Context, d time.Time) *Context {
	c := new(Context)
	c.Init(parent, d)
	return c
}

// Init makes the zero Context c one bounded by d, derived from parent, as
// New would: for a Context that lives inside an allocation of the
// caller's, such as beside the request it bounds.
func (c *Context) Init(parent context.Context, d time.Time) {
	c.parent, c.deadline = parent, d
}

// Deadline implements context.Context.
func (c *Context) Deadline() (time.Time, bool) {
	if pd, ok := c.parent.Deadline(); ok && pd.Before(c.deadline) {
		return pd, true
	}
	return c.deadline, true
}

// Done implements context.Context; the first call starts the timer.
func (c *Context) Done() <-chan struct{} { return c.arm().ctx.Done() }

// Err implements context.Context. Before the deadline, with the parent
// live and Done never called, it starts no timer.
func (c *Context) Err() error {
	if a := c.armed.Load(); a != nil {
		return a.ctx.Err()
	}
	if !c.released.Load() && c.parent.Err() == nil && time.Now().Before(c.deadline) {
		return nil
	}
	// Ended: arm, so that Done is closed before Err is reported non-nil,
	// and the error is the one context.WithDeadline chose.
	return c.arm().ctx.Err()
}

// Value implements context.Context. Once armed, the armed context answers,
// so that contexts derived from c find the cancellation they hang on.
func (c *Context) Value(key any) any {
	if a := c.armed.Load(); a != nil {
		return a.ctx.Value(key)
	}
	return c.parent.Value(key)
}

// String describes the context, as context.WithDeadline's do.
func (c *Context) String() string {
	return "deadline.New(" + contextName(c.parent) + ", " + c.deadline.String() + ")"
}

func contextName(c context.Context) string {
	if s, ok := c.(interface{ String() string }); ok {
		return s.String()
	}
	return "context"
}

// Release ends the context, as the CancelFunc of context.WithDeadline does:
// Done is closed and Err is context.Canceled (unless it had already
// ended), now or, if Done was never called, when it first is. It stops
// the timer if one started. It may be called more than once.
func (c *Context) Release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.released.Store(true)
	if a := c.armed.Load(); a != nil {
		a.cancel()
	}
}

func (c *Context) arm() *armed {
	if a := c.armed.Load(); a != nil {
		return a
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if a := c.armed.Load(); a != nil {
		return a
	}
	ctx, cancel := context.WithDeadline(c.parent, c.deadline)
	if c.released.Load() {
		cancel()
	}
	a := &armed{ctx: ctx, cancel: cancel}
	c.armed.Store(a)
	return a
}
