// Package tap streams the requests a mesh handles as they happen, for an
// operator following them with curl or the admin page: what was asked
// (method, authority, path), what happened (status, latency, attempts)
// and why (the route, the cluster, the endpoint, the authorization rule).
// Headers and bodies never appear.
//
// The data path asks Active before building anything: with no subscriber
// open that is one atomic load, and a request pays nothing else. With
// subscribers, Publish hands each one the event without blocking: a
// subscriber whose buffer is full loses the event, and the loss is counted
// and reported on its next line, so a slow reader never slows a request.
package tap

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Event is one request or call, as a tap line shows it. The JSON names
// are a contract with the admin page and with scripts reading /tap; every
// field is always present, so a reader sees one shape.
type Event struct {
	// Time is when the request started (RFC 3339 with nanoseconds).
	Time time.Time `json:"time"`
	// Direction is "outbound" (this process called) or "inbound" (this
	// process served).
	Direction string `json:"direction"`
	// Protocol is "http" or "grpc".
	Protocol string `json:"protocol"`
	// Method is the HTTP method, or the gRPC full method
	// ("/pkg.Service/Method").
	Method    string `json:"method"`
	Authority string `json:"authority"`
	// Path is the request path without the query (the full method for
	// gRPC): a query may carry secrets, as headers do.
	Path string `json:"path"`
	// Status is the HTTP status; 200 for a gRPC call that got an answer,
	// whose code is GRPCStatus; 0 when no response came.
	Status     int     `json:"status"`
	GRPCStatus string  `json:"grpc_status"`
	LatencyMS  float64 `json:"latency_ms"`
	// Peer is the SPIFFE ID of the other side: the server for outbound
	// requests, the caller for inbound ones; "" without mTLS.
	Peer string `json:"peer"`
	// Route is the route that matched (its name, or its match in words
	// when unnamed); Cluster the cluster chosen; Endpoint the address
	// that answered (for inbound requests, the caller's address).
	Route    string    `json:"route"`
	Cluster  string    `json:"cluster"`
	Endpoint string    `json:"endpoint"`
	Attempts []Attempt `json:"attempts"`
	// Authz is the inbound authorization decision; nil when no policy
	// judged the request.
	Authz   *Authz `json:"authz"`
	TraceID string `json:"trace_id"`
	// Error is why the request failed without a response ("" otherwise).
	Error string `json:"error"`
	// Dropped counts the events this subscriber lost, because it read
	// too slowly, since its previous line.
	Dropped uint64 `json:"dropped"`
}

// Attempt is one try of an outbound request.
type Attempt struct {
	Endpoint string `json:"endpoint"`
	// Status is the attempt's HTTP status (200 for a gRPC answer), 0 when
	// it got none; Error says why.
	Status     int    `json:"status"`
	GRPCStatus string `json:"grpc_status,omitempty"`
	// Reason is "first", "retry" (after a failure) or "hedge" (started
	// while an earlier attempt was still in flight).
	Reason string `json:"reason"`
	Error  string `json:"error"`
}

// Attempt reasons.
const (
	ReasonFirst = "first"
	ReasonRetry = "retry"
	ReasonHedge = "hedge"
)

// Authz is an authorization decision.
type Authz struct {
	// Decision is "allow" or "deny".
	Decision string `json:"decision"`
	// Rule names the policy that decided; "" when none matched (an ALLOW
	// policy set that none of its policies admitted, or no policy).
	Rule string `json:"rule"`
}

// Directions and protocols.
const (
	Outbound = "outbound"
	Inbound  = "inbound"
	HTTP     = "http"
	GRPC     = "grpc"
)

// DefaultMaxSubscribers bounds the subscribers of a Bus, so that open taps
// cannot add up to a cost on the data path.
const DefaultMaxSubscribers = 8

// DefaultBuffer is the events a subscriber may fall behind by before
// events are dropped for it.
const DefaultBuffer = 256

// ErrTooManySubscribers is returned by Subscribe when the bound is
// reached.
var ErrTooManySubscribers = errors.New("tap: too many subscribers")

// ErrClosed is returned by Subscribe after Close.
var ErrClosed = errors.New("tap: closed")

// Bus hands events to its subscribers. Its methods are safe for concurrent
// use; Active and Publish never block.
type Bus struct {
	max, buffer int
	// n is the subscriber count, what Active reads: the one load the
	// data path pays when nobody listens.
	n    atomic.Int32
	subs atomic.Pointer[[]*Subscriber] // copy on write under mu

	mu     sync.Mutex
	closed bool
	done   chan struct{}
}

// Option configures a Bus.
type Option func(*Bus)

// WithMaxSubscribers sets the bound on subscribers; n <= 0 keeps the
// default.
func WithMaxSubscribers(n int) Option {
	return func(b *Bus) {
		if n > 0 {
			b.max = n
		}
	}
}

// WithBuffer sets each subscriber's buffer; n <= 0 keeps the default.
func WithBuffer(n int) Option {
	return func(b *Bus) {
		if n > 0 {
			b.buffer = n
		}
	}
}

// New returns a Bus with no subscribers.
func New(opts ...Option) *Bus {
	b := &Bus{max: DefaultMaxSubscribers, buffer: DefaultBuffer, done: make(chan struct{})}
	for _, o := range opts {
		o(b)
	}
	empty := []*Subscriber{}
	b.subs.Store(&empty)
	return b
}

// Active reports whether any subscriber is open: the data path builds an
// event only then. A nil Bus is never active.
func (b *Bus) Active() bool { return b != nil && b.n.Load() > 0 }

// Subscriber receives the events its filter admits.
type Subscriber struct {
	b       *Bus
	filter  Filter
	events  chan *Event
	dropped atomic.Uint64
	once    sync.Once
}

// Subscribe opens a subscriber for the events f admits. Close it when
// done; the bus's Close ends it too (see Done).
func (b *Bus) Subscribe(f Filter) (*Subscriber, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, ErrClosed
	}
	cur := *b.subs.Load()
	if len(cur) >= b.max {
		return nil, fmt.Errorf("%w: %d already follow this process's traffic, the most allowed; close one and try again", ErrTooManySubscribers, len(cur))
	}
	s := &Subscriber{b: b, filter: f, events: make(chan *Event, b.buffer)}
	next := append(append(make([]*Subscriber, 0, len(cur)+1), cur...), s)
	b.subs.Store(&next)
	b.n.Store(int32(len(next)))
	return s, nil
}

// Events delivers the subscriber's events.
func (s *Subscriber) Events() <-chan *Event { return s.events }

// Done is closed when the bus closes.
func (s *Subscriber) Done() <-chan struct{} { return s.b.done }

// TakeDropped returns the events lost since the last call, and resets the
// count.
func (s *Subscriber) TakeDropped() uint64 { return s.dropped.Swap(0) }

// Close removes the subscriber; it is idempotent.
func (s *Subscriber) Close() {
	s.once.Do(func() {
		b := s.b
		b.mu.Lock()
		defer b.mu.Unlock()
		cur := *b.subs.Load()
		next := make([]*Subscriber, 0, len(cur))
		for _, o := range cur {
			if o != s {
				next = append(next, o)
			}
		}
		b.subs.Store(&next)
		b.n.Store(int32(len(next)))
	})
}

// Publish offers e to every subscriber whose filter admits it. It never
// blocks: a subscriber whose buffer is full loses e, and the loss is
// counted. e must not be modified afterwards; subscribers share it.
func (b *Bus) Publish(e *Event) {
	if b == nil {
		return
	}
	for _, s := range *b.subs.Load() {
		if !s.filter.Match(e) {
			continue
		}
		if s.filter.Sample > 0 && s.filter.Sample < 1 && rand.Float64() >= s.filter.Sample {
			continue
		}
		select {
		case s.events <- e:
		default:
			s.dropped.Add(1)
		}
	}
}

// Close ends every subscriber (their Done channels close) and refuses new
// ones. It is idempotent.
func (b *Bus) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.closed = true
	close(b.done)
	empty := []*Subscriber{}
	b.subs.Store(&empty)
	b.n.Store(0)
}

// Since returns the latency from start to now in milliseconds, as an
// event carries it.
func Since(start time.Time) float64 {
	return float64(time.Since(start).Nanoseconds()) / 1e6
}
