package security

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// maxPendingPeeks bounds how many accepted connections a PermissiveListener
// holds at once, being inspected or waiting for Accept. When all are taken,
// the connection that has been silent longest (and at least minPeekAge) is
// dropped to make room, so connections that send nothing cannot shut out
// callers that speak: a client sends its first byte (a TLS ClientHello or
// a request line) as soon as it connects.
const maxPendingPeeks = 1024

// minPeekAge is how long a connection may stay silent before a new one may
// take its place when every peek slot is taken; it spares a burst of
// genuine clients whose first bytes are still on their way.
const minPeekAge = 250 * time.Millisecond

// Backoff after a temporary Accept error (EMFILE, ENFILE, ECONNABORTED),
// as net/http's Server does: 5ms doubling to 1s.
const (
	minAcceptDelay = 5 * time.Millisecond
	maxAcceptDelay = time.Second
)

// tlsRecordHandshake is the first byte of every TLS connection: a record of
// content type handshake (22).
const tlsRecordHandshake = 0x16

// PermissiveListener returns a listener that serves mutual TLS and plaintext
// on the same port, for migrating a fleet (WEFT_MTLS=permissive). For each
// connection accepted from ln it reads the first byte, in a goroutine of its
// own bounded by the peek timeout ([WithPeekTimeout]), so a slow client never
// holds up Accept: a TLS handshake record (0x16) yields a *tls.Conn using
// cfg, anything else the plain connection with that byte put back. A
// connection that sends nothing before the timeout is closed, and so is
// the longest silent one when 1,024 are held at once and another arrives.
// A temporary error from ln's Accept (such as EMFILE) is retried with a
// backoff, as net/http's Server does.
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
	return newPeekingListener(ln, permissiveChoice(cfg), opts)
}

// permissiveChoice serves TLS with cfg to connections that open with a TLS
// record, plaintext to the others.
func permissiveChoice(cfg *tls.Config) TLSChooser {
	return func(_ context.Context, _ net.Conn, isTLS bool) (*tls.Config, error) {
		if isTLS {
			return cfg, nil
		}
		return nil, nil
	}
}

func newPeekingListener(ln net.Listener, choose TLSChooser, opts []Option) *permissiveListener {
	o := newOptions(opts)
	ctx, cancel := context.WithCancel(context.Background())
	l := &permissiveListener{
		inner:   ln,
		choose:  choose,
		ctx:     ctx,
		cancel:  cancel,
		timeout: o.peekTimeout,
		logger:  o.logger,
		ready:   make(chan net.Conn),
		done:    make(chan struct{}),
		pending: make(map[net.Conn]time.Time),
		sem:     make(chan struct{}, maxPendingPeeks),
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

type permissiveListener struct {
	inner   net.Listener
	choose  TLSChooser
	ctx     context.Context // ends at Close, so a waiting choose returns
	cancel  context.CancelFunc
	timeout time.Duration
	logger  *slog.Logger

	ready chan net.Conn
	done  chan struct{}
	sem   chan struct{}
	wg    sync.WaitGroup

	mu sync.Mutex
	// pending holds the connections whose first byte is awaited, with
	// when they were accepted. Taking a connection out of it is the right
	// to decide its fate: its peek hands it over only if the peek takes
	// it out, not Close or an eviction.
	pending  map[net.Conn]time.Time
	acceptEr error

	doneOnce  sync.Once
	closeOnce sync.Once
	closeErr  error
}

func (l *permissiveListener) acceptLoop() {
	defer l.wg.Done()
	var tempDelay time.Duration
	for {
		c, err := l.inner.Accept()
		if err != nil {
			select {
			case <-l.done:
				return
			default:
			}
			if temporaryAcceptError(err) {
				tempDelay = min(max(2*tempDelay, minAcceptDelay), maxAcceptDelay)
				l.logger.Warn("security: accept failed; retrying", "err", err, "retry_in", tempDelay)
				t := time.NewTimer(tempDelay)
				select {
				case <-t.C:
					continue
				case <-l.done:
					t.Stop()
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
		if !l.acquire() {
			_ = c.Close()
			return
		}
		l.mu.Lock()
		select {
		case <-l.done:
			l.mu.Unlock()
			<-l.sem
			_ = c.Close()
			return
		default:
		}
		l.pending[c] = time.Now()
		l.mu.Unlock()
		l.wg.Add(1)
		go l.peek(c)
	}
}

// temporaryAcceptError reports whether an Accept error may go away by
// itself (EMFILE, ENFILE, ECONNABORTED, a timeout), so the listener should
// retry rather than fail for good.
func temporaryAcceptError(err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	// net.OpError and syscall.Errno report EMFILE and the like as
	// temporary; the method is deprecated on net.Error for callers
	// deciding about reads and writes, not for Accept, where net/http
	// still relies on it.
	var te interface{ Temporary() bool }
	return errors.As(err, &te) && te.Temporary()
}

// acquire takes a peek slot for a newly accepted connection. When every
// slot is taken it drops the connection silent the longest, once that one
// has been silent minPeekAge, and waits for its slot. It returns false
// when the listener is closed.
func (l *permissiveListener) acquire() bool {
	for {
		select {
		case l.sem <- struct{}{}:
			return true
		default:
		}
		var (
			wake  <-chan time.Time
			timer *time.Timer
		)
		if wait := l.evictOldest(); wait > 0 {
			timer = time.NewTimer(wait)
			wake = timer.C
		}
		select {
		case l.sem <- struct{}{}:
			stopTimer(timer)
			return true
		case <-wake:
		case <-l.done:
			stopTimer(timer)
			return false
		}
	}
}

func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

// evictOldest closes the connection that has been waiting longest for its
// first byte, if it has waited minPeekAge; its peek then frees its slot.
// Otherwise it returns how long until the oldest may be evicted, or 0 when
// no connection is being inspected (every slot waits for Accept).
func (l *permissiveListener) evictOldest() time.Duration {
	l.mu.Lock()
	var (
		oldest net.Conn
		since  time.Time
	)
	for c, t := range l.pending {
		if oldest == nil || t.Before(since) {
			oldest, since = c, t
		}
	}
	if oldest == nil {
		l.mu.Unlock()
		return 0
	}
	if age := time.Since(since); age < minPeekAge {
		l.mu.Unlock()
		return minPeekAge - age
	}
	delete(l.pending, oldest)
	l.mu.Unlock()
	l.logger.Debug("security: dropping the longest silent connection to make room", "remote", oldest.RemoteAddr())
	_ = oldest.Close()
	return 0
}

func (l *permissiveListener) peek(c net.Conn) {
	defer l.wg.Done()
	defer func() { <-l.sem }() // held until the connection is handed over
	var b [1]byte
	_ = c.SetReadDeadline(time.Now().Add(l.timeout))
	n, err := c.Read(b[:])
	_ = c.SetReadDeadline(time.Time{})
	l.mu.Lock()
	_, mine := l.pending[c]
	delete(l.pending, c)
	l.mu.Unlock()
	if !mine {
		// Closed by Close or evicted to make room.
		_ = c.Close()
		return
	}
	if n != 1 {
		if err != nil {
			l.logger.Debug("security: dropping connection before its first byte", "remote", c.RemoteAddr(), "err", err)
		}
		_ = c.Close()
		return
	}
	var out net.Conn = &prefixConn{Conn: c, first: b[0], hasFirst: true}
	cfg, err := l.choose(l.ctx, out, b[0] == tlsRecordHandshake)
	if err != nil {
		l.logger.Debug("security: connection refused", "remote", c.RemoteAddr(), "err", err)
		_ = c.Close()
		return
	}
	if cfg != nil {
		out = tls.Server(out, cfg)
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
		l.cancel()
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

// prefixConn replays one byte read ahead before reading from Conn. It
// passes on the optional methods of *net.TCPConn that net/http looks for:
// CloseWrite, without which a server that answers and hangs up (a 431, a
// 400) resets the connection instead of closing it cleanly, and ReadFrom
// for sendfile. It must not gain ConnectionState: net/http would take a
// plaintext connection for TLS.
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

// CloseWrite shuts down the writing side of the connection, when the
// connection supports it (a *net.TCPConn, a *net.UnixConn).
func (c *prefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// CloseRead shuts down the reading side of the connection, when the
// connection supports it.
func (c *prefixConn) CloseRead() error {
	if cr, ok := c.Conn.(interface{ CloseRead() error }); ok {
		return cr.CloseRead()
	}
	return errors.ErrUnsupported
}

// ReadFrom writes what r holds to the connection, through the
// connection's own ReadFrom (sendfile, splice) when it has one.
func (c *prefixConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}
