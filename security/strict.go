package security

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// MTLSRequired is what a strict mTLS server tells a plaintext HTTP/2 or
// gRPC caller, in the debug data of the GOAWAY (INADEQUATE_SECURITY) it
// answers with; clients that find it can say why the call failed instead
// of "error reading server preface: EOF".
const MTLSRequired = "the server requires mTLS"

// http2Preface is the start of the HTTP/2 client connection preface, sent
// first by gRPC and h2c clients.
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// errPlaintextRefused ends the TLS handshake of a plaintext caller.
var errPlaintextRefused = errors.New("security: a plaintext caller was refused: the server requires mTLS")

// StrictListener is tls.NewListener(ln, cfg) for a server that accepts
// only mutual TLS, which tells plaintext callers why they are refused: an
// HTTP/2 or gRPC caller gets a SETTINGS frame then a GOAWAY with error
// code INADEQUATE_SECURITY and [MTLSRequired] as its debug data; an
// HTTP/1 caller is answered by net/http ("400 Client sent an HTTP request
// to an HTTPS server"). Without this a gRPC caller saw only "error
// reading server preface: EOF". TLS connections pay one comparison on
// their first read; a refused HTTP/2 connection is held for at most 2.5 s
// (waiting for the caller's first request, then for it to close), as a
// slow TLS handshake would be.
func StrictListener(ln net.Listener, cfg *tls.Config) net.Listener {
	return tls.NewListener(refusingListener{ln}, cfg)
}

// StrictCredentials are gRPC server credentials for mutual TLS with cfg
// (credentials.NewTLS) that refuse a plaintext caller as
// [StrictListener] does, so its error says the server requires mTLS.
func StrictCredentials(cfg *tls.Config) credentials.TransportCredentials {
	return strictCreds{credentials.NewTLS(cfg)}
}

type strictCreds struct {
	credentials.TransportCredentials
}

func (c strictCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c.TransportCredentials.ServerHandshake(&refusingConn{Conn: conn, bare: true})
}

func (c strictCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c.TransportCredentials.ClientHandshake(ctx, authority, conn)
}

func (c strictCreds) Clone() credentials.TransportCredentials {
	return strictCreds{c.TransportCredentials.Clone()}
}

type refusingListener struct{ net.Listener }

func (l refusingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &refusingConn{Conn: c}, nil
}

// refusingConn looks at the first bytes a caller sends: the HTTP/2
// preface in place of a TLS record is answered with a GOAWAY before the
// connection ends. Reads come from one goroutine at a time (the TLS
// handshake, then the server's reader), so checked needs no lock.
type refusingConn struct {
	net.Conn
	checked bool
	// bare leaves the SETTINGS frame out, for gRPC callers: grpc-go takes
	// a GOAWAY after a valid server preface for a server draining and
	// connects again and again while fail-fast calls wait for their
	// deadline, but fails the connection at once, and the calls with it,
	// when the first frame is not SETTINGS.
	bare bool
}

func (c *refusingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.checked || n == 0 {
		return n, err
	}
	c.checked = true
	// A TLS handshake record starts 0x16; the HTTP/2 preface "PRI ".
	// A short first read is judged by what it holds.
	if got := p[:min(n, len(http2Preface))]; !bytes.HasPrefix([]byte(http2Preface), got) {
		return n, err
	}
	c.awaitRequest(bytes.Clone(p[:n]))
	c.refuseHTTP2()
	return 0, errPlaintextRefused
}

// awaitRequest reads on, for at most half a second and 64 KiB, until the
// caller's first HEADERS frame has arrived. An HTTP client that has not
// yet opened its stream when the GOAWAY arrives reports only that its
// connection "could not be established"; a gRPC client sends no request
// before the server's SETTINGS, and gets the GOAWAY when the wait ends.
func (c *refusingConn) awaitRequest(b []byte) {
	_ = c.Conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	var buf [4096]byte
	for !sawHeaders(b) && len(b) < 64<<10 {
		n, err := c.Conn.Read(buf[:])
		b = append(b, buf[:n]...)
		if err != nil {
			return
		}
	}
}

// sawHeaders reports whether b, the start of an HTTP/2 connection from a
// client, holds a HEADERS frame.
func sawHeaders(b []byte) bool {
	if len(b) < len(http2Preface) {
		return false
	}
	b = b[len(http2Preface):]
	for len(b) >= 9 {
		if b[3] == 0x1 { // HEADERS
			return true
		}
		l := int(b[0])<<16 | int(b[1])<<8 | int(b[2])
		if len(b) < 9+l {
			return false
		}
		b = b[9+l:]
	}
	return false
}

// refuseHTTP2 answers a plaintext HTTP/2 caller with the server preface
// (an empty SETTINGS frame) and a GOAWAY INADEQUATE_SECURITY whose debug
// data says why, then waits, within bounds, for the caller to close:
// closing with its unread bytes pending would reset the connection and
// lose the GOAWAY.
func (c *refusingConn) refuseHTTP2() {
	const (
		frameSettings       = 0x4
		frameGoAway         = 0x7
		errInadequateSecure = 0xc
	)
	var b []byte
	if !c.bare {
		b = appendFrameHeader(b, 0, frameSettings)
	}
	b = appendFrameHeader(b, 8+len(MTLSRequired), frameGoAway)
	b = binary.BigEndian.AppendUint32(b, 0) // last stream ID: none processed
	b = binary.BigEndian.AppendUint32(b, errInadequateSecure)
	b = append(b, MTLSRequired...)
	_ = c.Conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Conn.Write(b); err != nil {
		return
	}
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_, _ = io.CopyN(io.Discard, c.Conn, 64<<10)
}

// PlaintextCredentials are gRPC client credentials without TLS
// (insecure.NewCredentials) that recognize a strict server's refusal (see
// [StrictListener]): the connection then fails with an error saying the
// server requires mTLS, which the call's status carries, instead of a
// bare "error reading server preface".
func PlaintextCredentials() credentials.TransportCredentials {
	return plaintextCreds{insecure.NewCredentials()}
}

type plaintextCreds struct {
	credentials.TransportCredentials
}

func (c plaintextCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ClientHandshake(ctx, authority, conn)
	if err != nil {
		return conn, info, err
	}
	return &refusalConn{Conn: conn}, info, nil
}

func (c plaintextCreds) Clone() credentials.TransportCredentials {
	return plaintextCreds{c.TransportCredentials.Clone()}
}

// ErrMTLSRequired is the error of a plaintext connection that a strict
// mTLS server refused with its GOAWAY ([PlaintextCredentials]).
var ErrMTLSRequired = errors.New("security: " + MTLSRequired + "; this client sends plaintext (it has no SPIFFE identity, or mTLS is disabled)")

// refusal is the start of a strict server's answer to a plaintext HTTP/2
// caller: an empty SETTINGS frame, then a GOAWAY's header; bareRefusal is
// the answer to a gRPC caller, the GOAWAY alone.
var (
	bareRefusal = append(appendFrameHeader(nil, 8+len(MTLSRequired), 0x7), 0, 0, 0, 0, 0, 0, 0, 0xc)
	refusal     = append(appendFrameHeader(nil, 0, 0x4), bareRefusal...)
)

// refusalConn checks the first bytes the server sends for a strict
// server's refusal. A real server's first frame is a SETTINGS frame with
// parameters, which differs from the refusal by its fourth byte.
type refusalConn struct {
	net.Conn
	checked bool
}

func (c *refusalConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.checked || n == 0 {
		return n, err
	}
	c.checked = true
	if bytes.HasPrefix(p[:n], refusal) || bytes.HasPrefix(p[:n], bareRefusal) {
		return 0, ErrMTLSRequired
	}
	return n, err
}

func appendFrameHeader(b []byte, length, typ int) []byte {
	b = append(b, byte(length>>16), byte(length>>8), byte(length), byte(typ), 0)
	return binary.BigEndian.AppendUint32(b, 0) // stream 0
}
