// Package faultproxy is a TCP proxy for tests that injects the network
// faults a mesh meets: added latency, connection resets, a partition
// (blackhole) and a process that stops and comes back on the same address.
//
// A Proxy listens on 127.0.0.1 and forwards every accepted connection to
// its target. Faults are switched at run time and apply at once to open
// connections as well as new ones. A Proxy is safe for concurrent use;
// Close stops everything it started and waits for it.
package faultproxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Mode is what the proxy does with traffic.
type Mode int32

const (
	// Forward passes bytes both ways (after the added latency, if any).
	Forward Mode = iota
	// Reset answers every connection with a TCP RST: open ones at once,
	// new ones as soon as they are accepted. This is a crashed peer or a
	// middlebox killing flows, not a partition.
	Reset
	// Blackhole is a partition: connections are accepted and kept open,
	// but no byte crosses in either direction and no new connection
	// reaches the target. Bytes read meanwhile are held, as TCP would
	// hold them in retransmission, and delivered when the partition heals.
	Blackhole
)

func (m Mode) String() string {
	switch m {
	case Forward:
		return "forward"
	case Reset:
		return "reset"
	case Blackhole:
		return "blackhole"
	}
	return fmt.Sprintf("Mode(%d)", int32(m))
}

// Proxy forwards TCP connections from Addr to a target, with faults.
type Proxy struct {
	addr   string
	target string

	latency atomic.Int64 // nanoseconds added before each forwarded chunk
	accepts atomic.Int64

	mu     sync.Mutex
	mode   Mode
	healed chan struct{} // closed while mode != Blackhole; replaced on entering it
	ln     net.Listener  // nil while stopped
	conns  map[*pair]struct{}
	closed bool
	done   chan struct{} // closed by Close: ends sleeps and waits
	wg     sync.WaitGroup
}

// pair is one proxied connection: the accepted side and, once dialed, the
// target side.
type pair struct {
	client   *net.TCPConn
	upstream net.Conn // guarded by Proxy.mu
}

// New starts a proxy on 127.0.0.1 (a free port) forwarding to target
// (host:port). The caller must Close it.
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	healed := make(chan struct{})
	close(healed)
	p := &Proxy{addr: ln.Addr().String(), target: target, healed: healed,
		conns: map[*pair]struct{}{}, done: make(chan struct{})}
	p.startLocked(ln)
	return p, nil
}

// Addr is the proxy's host:port; it stays the same across Stop and Restart.
func (p *Proxy) Addr() string { return p.addr }

// Accepted returns how many connections the proxy has accepted so far.
func (p *Proxy) Accepted() int64 { return p.accepts.Load() }

// Open returns how many proxied connections are open now.
func (p *Proxy) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// SetLatency adds d before every chunk forwarded, in each direction (so a
// request and its response take at least 2d more); 0 removes it.
func (p *Proxy) SetLatency(d time.Duration) { p.latency.Store(int64(d)) }

// SetMode switches the fault. Entering Reset resets every open connection;
// leaving Blackhole releases the bytes held during the partition.
func (p *Proxy) SetMode(m Mode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if m == p.mode {
		return
	}
	if p.mode == Blackhole {
		close(p.healed)
	} else if m == Blackhole {
		p.healed = make(chan struct{})
	}
	p.mode = m
	if m == Reset {
		for c := range p.conns {
			p.resetLocked(c)
		}
	}
}

// Mode returns the fault in force.
func (p *Proxy) Mode() Mode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode
}

// ResetConnections resets every open connection once, whatever the mode.
func (p *Proxy) ResetConnections() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		p.resetLocked(c)
	}
}

// Stop is the proxied process going away: the listener closes (new
// connections are refused) and every open connection is reset. It is
// idempotent; Restart undoes it.
func (p *Proxy) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		p.resetLocked(c)
	}
}

// Restart listens again on the same address after Stop. It is a no-op on
// a running proxy.
func (p *Proxy) Restart() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("faultproxy: restart after Close")
	}
	if p.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		return fmt.Errorf("faultproxy: restart on %s: %w", p.addr, err)
	}
	p.startLocked(ln)
	return nil
}

// Close stops the proxy for good and waits for all its goroutines. It is
// idempotent.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.done)
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		p.resetLocked(c)
	}
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}

func (p *Proxy) startLocked(ln net.Listener) {
	p.ln = ln
	p.wg.Add(1)
	go p.accept(ln)
}

// resetLocked closes both sides of c with a RST on the client side.
func (p *Proxy) resetLocked(c *pair) {
	c.client.SetLinger(0)
	c.client.Close()
	if c.upstream != nil {
		if tc, ok := c.upstream.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		c.upstream.Close()
	}
}

func (p *Proxy) accept(ln net.Listener) {
	defer p.wg.Done()
	for {
		conn, err := ln.Accept()
		if err != nil {
			return // closed by Stop or Close
		}
		p.accepts.Add(1)
		c := &pair{client: conn.(*net.TCPConn)}
		p.mu.Lock()
		if p.closed || p.mode == Reset {
			p.mu.Unlock()
			c.client.SetLinger(0)
			c.client.Close()
			continue
		}
		p.conns[c] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(c)
	}
}

// gate waits while the proxy is partitioned; false means the proxy closed.
func (p *Proxy) gate() bool {
	p.mu.Lock()
	healed := p.healed
	p.mu.Unlock()
	select {
	case <-healed:
		return true
	case <-p.done:
		return false
	}
}

// delay sleeps the added latency; false means the proxy closed.
func (p *Proxy) delay() bool {
	d := time.Duration(p.latency.Load())
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-p.done:
		return false
	}
}

func (p *Proxy) serve(c *pair) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
		c.client.Close()
	}()
	// A partitioned proxy accepts but does not reach the target, so a
	// connection made during the partition hangs rather than fails.
	if !p.gate() {
		return
	}
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		c.client.SetLinger(0) // the target refused: so does the proxy
		return
	}
	p.mu.Lock()
	if _, open := p.conns[c]; !open || p.closed {
		p.mu.Unlock()
		up.Close()
		return
	}
	c.upstream = up
	p.mu.Unlock()
	defer up.Close()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// The client finished sending: pass the half-close on, and keep
		// the response direction open.
		if p.copy(up, c.client) == io.EOF {
			if tc, ok := up.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
		}
	}()
	// The target finished (or failed): so does the connection, with a
	// reset when the target's side broke rather than closed.
	if err := p.copy(c.client, up); err != io.EOF {
		c.client.SetLinger(0)
	}
	c.client.Close()
	up.Close()
	wg.Wait()
}

// copy forwards src to dst chunk by chunk, each after the added latency
// and only while the proxy is not partitioned. It returns io.EOF when src
// ended cleanly, another error otherwise.
func (p *Proxy) copy(dst io.Writer, src io.Reader) error {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.gate() || !p.delay() {
				return net.ErrClosed
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err != nil {
			return err
		}
	}
}
