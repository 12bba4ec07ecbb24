package xds

import (
	"sync"
	"time"
)

// clock is the time source of the client: timers for does-not-exist,
// reconnect backoff and re-NACK delays all go through it, so tests drive
// them without sleeping.
type clock interface {
	Now() time.Time
	AfterFunc(d time.Duration, f func()) timer
}

type timer interface{ Stop() bool }

type realClock struct{}

func (realClock) Now() time.Time                            { return time.Now() }
func (realClock) AfterFunc(d time.Duration, f func()) timer { return time.AfterFunc(d, f) }

// serializer runs callbacks one at a time in the order they were
// scheduled, on its own goroutine, so watchers never run concurrently and
// never run under the client's lock.
type serializer struct {
	mu      sync.Mutex
	queue   []func()
	closed  bool
	wake    chan struct{}
	done    chan struct{}
	stopped chan struct{}
}

func newSerializer() *serializer {
	s := &serializer{wake: make(chan struct{}, 1), done: make(chan struct{}), stopped: make(chan struct{})}
	go s.run()
	return s
}

func (s *serializer) schedule(f func()) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.queue = append(s.queue, f)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *serializer) run() {
	defer close(s.stopped)
	for {
		select {
		case <-s.done:
			return
		case <-s.wake:
		}
		// Drain what is queued now; anything scheduled meanwhile has
		// signalled wake again. Each pass is bounded by the queue length.
		for {
			s.mu.Lock()
			if s.closed || len(s.queue) == 0 {
				s.queue = s.queue[:0:0]
				s.mu.Unlock()
				break
			}
			f := s.queue[0]
			s.queue[0] = nil
			s.queue = s.queue[1:]
			s.mu.Unlock()
			f()
		}
	}
}

// close drops pending callbacks and waits for a running one to return.
func (s *serializer) close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.stopped
		return
	}
	s.closed = true
	s.queue = nil
	s.mu.Unlock()
	close(s.done)
	<-s.stopped
}
