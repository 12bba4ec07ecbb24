package xds

import (
	"errors"
	"time"
)

// EventKind names a change of the client's connection or configuration.
type EventKind int

// Event kinds, in the order a stream's life meets them.
const (
	// EventConnected: a stream's first response arrived.
	EventConnected EventKind = iota
	// EventLost: a stream that had answered failed.
	EventLost
	// EventConnectFailed: an attempt to open a stream got no response.
	// It repeats at every backoff step while the control plane is away.
	EventConnectFailed
	// EventApplied: a response of a type was accepted, at a version or
	// resource count not reported before.
	EventApplied
	// EventNACKed: a response was rejected; Err names the resource and
	// the field.
	EventNACKed
)

func (k EventKind) String() string {
	switch k {
	case EventConnected:
		return "connected"
	case EventLost:
		return "lost"
	case EventConnectFailed:
		return "connect failed"
	case EventApplied:
		return "applied"
	case EventNACKed:
		return "nacked"
	}
	return "unknown"
}

// Event is one change of the client's state, told to the function given
// WithEvents. Events are delivered in order, on the goroutine that calls
// watchers, never under the client's locks.
type Event struct {
	Kind EventKind
	// At is when the change happened.
	At time.Time
	// Server is the management server's URI (connection events).
	Server string
	// Err is why a stream was lost, a connection failed or a response
	// was rejected.
	Err error
	// Type, Version and Count describe an applied or rejected response:
	// Count is its number of resources.
	Type    ResourceType
	Version string
	Count   int
	// LastGood is when a response was last accepted, zero if never.
	LastGood time.Time
	// DownSince is, for EventConnected, when the previous stream was
	// lost (zero on the first connection).
	DownSince time.Time
}

// WithEvents has the client tell f each change of its connection and
// every configuration version it applies or rejects. f must not block
// and must not call Close.
func WithEvents(f func(Event)) Option {
	return optionFunc(func(c *config) { c.events = f })
}

// ConnState is where the client's connection to the control plane stands.
type ConnState int

// Connection states.
const (
	// ConnNever: no stream has been answered yet.
	ConnNever ConnState = iota
	// ConnConnected: the current stream has answered.
	ConnConnected
	// ConnReconnecting: a stream was answered once and is now lost.
	ConnReconnecting
)

func (s ConnState) String() string {
	switch s {
	case ConnConnected:
		return "connected"
	case ConnReconnecting:
		return "reconnecting"
	}
	return "never connected"
}

// Connection is the client's connection to the control plane, for a
// readiness check or a status page.
type Connection struct {
	State ConnState
	// Server is the URI of the server last connected to, or last tried.
	Server string
	// Since is when State began (zero for ConnNever).
	Since time.Time
	// LastError is why the last stream or connection attempt failed.
	LastError string
	// LastGood is when a response was last accepted, zero if never: the
	// age of the configuration in use.
	LastGood time.Time
}

// Connection returns the connection state of the stream to the
// bootstrap's top-level servers; an authority's stream of its own reports
// through the events function only.
func (c *Client) Connection() Connection {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn
}

// emitLocked schedules e for the events function, if any.
func (c *Client) emitLocked(e Event) {
	f := c.cfg.events
	if f == nil {
		return
	}
	if e.At.IsZero() {
		e.At = c.cfg.clock.Now()
	}
	e.LastGood = c.conn.LastGood
	c.ser.schedule(func() { f(e) })
}

// streamUpAfter is how long a stream that has not answered must stay
// open to count as connected: an incremental server has nothing to send
// a client that reconnects with every version it already has.
const streamUpAfter = time.Second

// upAfter counts the stream gen to srv as connected once it has stayed
// open streamUpAfter, unless it answered before; the returned func stops
// the timer.
func (c *Client) upAfter(srv ServerConfig, gen uint64) (stop func()) {
	t := c.cfg.clock.AfterFunc(streamUpAfter, func() { c.streamAnswered(srv, gen) })
	return func() { t.Stop() }
}

// streamAnswered records that the stream gen to srv is up: it answered,
// or stayed open streamUpAfter. Only the first call of a stream counts.
func (c *Client) streamAnswered(srv ServerConfig, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.streamGen != gen || c.connGen == gen {
		return
	}
	c.connGen = gen
	now := c.cfg.clock.Now()
	var down time.Time
	if c.conn.State == ConnReconnecting {
		down = c.conn.Since
	}
	c.conn.State, c.conn.Server, c.conn.Since, c.conn.LastError = ConnConnected, srv.URI, now, ""
	c.emitLocked(Event{Kind: EventConnected, At: now, Server: srv.URI, DownSince: down})
}

// connFailed records a failed stream (answered reports whether it had
// answered) or connection attempt.
func (c *Client) connFailed(answered bool, err error) {
	if err == nil {
		err = errors.New("stream ended")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	now := c.cfg.clock.Now()
	c.conn.LastError = err.Error()
	kind := EventConnectFailed
	if answered || c.conn.State == ConnConnected {
		kind = EventLost
		c.conn.State, c.conn.Since = ConnReconnecting, now
	}
	c.emitLocked(Event{Kind: kind, At: now, Server: c.conn.Server, Err: err})
}

// respondedLocked records a response of type t at version with count
// resources, accepted when nack is nil.
func (c *Client) respondedLocked(t ResourceType, version string, count int, nack error) {
	if nack != nil {
		c.emitLocked(Event{Kind: EventNACKed, Type: t, Version: version, Count: count, Err: nack})
		return
	}
	now := c.cfg.clock.Now()
	c.conn.LastGood = now
	if r := c.reported[t]; r.valid && version != "" && r.version == version && r.count == count {
		return // a resend, after a reconnection or a new subscription
	}
	c.reported[t] = reportedVersion{valid: true, version: version, count: count}
	c.emitLocked(Event{Kind: EventApplied, At: now, Type: t, Version: version, Count: count})
}

type reportedVersion struct {
	valid   bool
	version string
	count   int
}

// trying records srv as the server tried, unless a stream is up.
func (c *Client) trying(srv ServerConfig) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn.State != ConnConnected {
		c.conn.Server = srv.URI
	}
}
