package security

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"
)

// maxPendingPeeks bounds how many accepted connections a PermissiveListener
// holds at once, being inspected or waiting for Accept; further connections
// wait in the kernel's backlog.
const maxPendingPeeks = 1024

// tlsRecordHandshake is the first byte of every TLS connection: a record of
// content type handshake (22).
const tlsRecordHandshake = 0x16

// PermissiveListener returns a listener that serves mutual TLS and plaintext
// on the same port, for migrating a fleet (WEFT_MTLS=permissive). For each
// connection accepted from ln it reads the first byte, in a goroutine of its
// own bounded by the peek timeout ([WithPeekTimeout]), so a slow client never
// holds up Accept: a TLS handshake record (0x16) yields a *tls.Conn using
// cfg, anything else the plain connection with that byte put back. A
// connection that sends nothing before the timeout is closed.
//
// Because TLS connections are returned as *tls.Conn, an http.Server serving
// the listener performs the handshake itself and fills in Request.TLS, so
// [PeerIDFromTLS] works for mutual-TLS callers and reports false for
// plaintext ones. For gRPC, whose server does its own handshake, use the
// credentials from [PermissiveCredentials] instead.
//
// The listener is safe for concurrent use; Close closes ln, drops
// connections still being inspected or not yet accepted, and is idempotent.
// Options: [WithPeekTimeout], [WithLogger].
func PermissiveListener(ln net.Listener, cfg *tls.Config, opts ...Option) net.Listener {
	o := newOptions(opts)
	l := &permissiveListener{
		inner:   ln,
		cfg:     cfg,
		timeout: o.peekTimeout,
		logger:  o.logger,
		ready:   make(chan net.Conn),
		done:    make(chan struct{}),
		pending: make(map[net.Conn]struct{}),
		sem:     make(chan struct{}, maxPendingPeeks),
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

type permissiveListener struct {
	inner   net.Listener
	cfg     *tls.Config
	timeout time.Duration
	logger  *slog.Logger

	ready chan net.Conn
	done  chan struct{}
	sem   chan struct{}
	wg    sync.WaitGroup

	mu       sync.Mutex
	pending  map[net.Conn]struct{}
	acceptEr error

	doneOnce  sync.Once
	closeOnce sync.Once
	closeErr  error
}

func (l *permissiveListener) acceptLoop() {
	defer l.wg.Done()
	var tempDelay time.Duration
	for {
		select {
		case l.sem <- struct{}{}:
		case <-l.done:
			return
		}
		c, err := l.inner.Accept()
		if err != nil {
			<-l.sem
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Transient (for example EMFILE surfaced as a timeout by
				// some listeners): back off like net/http does, up to 1s.
				tempDelay = min(max(2*tempDelay, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(tempDelay):
					continue
				case <-l.done:
					return
				}
			}
			l.mu.Lock()
			l.acceptEr = err
			l.mu.Unlock()
			l.doneOnce.Do(func() { close(l.done) })
			return
		}
		tempDelay = 0
		l.mu.Lock()
		select {
		case <-l.done:
			l.mu.Unlock()
			<-l.sem
			_ = c.Close()
			return
		default:
		}
		l.pending[c] = struct{}{}
		l.mu.Unlock()
		l.wg.Add(1)
		go l.peek(c)
	}
}

func (l *permissiveListener) peek(c net.Conn) {
	defer l.wg.Done()
	defer func() { <-l.sem }() // held until the connection is handed over
	var b [1]byte
	_ = c.SetReadDeadline(time.Now().Add(l.timeout))
	n, err := c.Read(b[:])
	_ = c.SetReadDeadline(time.Time{})
	l.mu.Lock()
	delete(l.pending, c)
	l.mu.Unlock()
	if n != 1 {
		if err != nil {
			l.logger.Debug("security: dropping connection before its first byte", "remote", c.RemoteAddr(), "err", err)
		}
		_ = c.Close()
		return
	}
	var out net.Conn = &prefixConn{Conn: c, first: b[0], hasFirst: true}
	if b[0] == tlsRecordHandshake {
		out = tls.Server(out, l.cfg)
	}
	select {
	case l.ready <- out:
	case <-l.done:
		_ = c.Close()
	}
}

// Accept returns the next connection whose first byte has arrived.
func (l *permissiveListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		l.mu.Lock()
		err := l.acceptEr
		l.mu.Unlock()
		if err == nil {
			err = net.ErrClosed
		}
		return nil, err
	}
}

// Close closes the underlying listener and every connection not yet
// returned by Accept, and waits for the inspecting goroutines to end.
func (l *permissiveListener) Close() error {
	l.closeOnce.Do(func() {
		l.doneOnce.Do(func() { close(l.done) })
		if err := l.inner.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			l.closeErr = err
		}
		l.mu.Lock()
		for c := range l.pending {
			_ = c.Close()
		}
		l.mu.Unlock()
		l.wg.Wait()
	})
	return l.closeErr
}

func (l *permissiveListener) Addr() net.Addr { return l.inner.Addr() }

// prefixConn replays one byte read ahead before reading from Conn.
type prefixConn struct {
	net.Conn
	first    byte
	hasFirst bool
	mu       sync.Mutex
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.mu.Lock()
	if c.hasFirst {
		c.hasFirst = false
		c.mu.Unlock()
		p[0] = c.first
		return 1, nil
	}
	c.mu.Unlock()
	return c.Conn.Read(p)
}
