package security

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// PermissiveCredentials returns gRPC transport credentials for
// WEFT_MTLS=permissive: as a server they accept mutual TLS using cfg and
// plaintext on the same port, telling them apart by the first byte (waiting
// at most the peek timeout, [WithPeekTimeout]); as a client they always use
// mutual TLS. A plaintext caller has no TLS AuthInfo, so [PeerID] reports
// false for it.
//
// The credentials are safe for concurrent use.
func PermissiveCredentials(cfg *tls.Config, opts ...Option) credentials.TransportCredentials {
	o := newOptions(opts)
	return &permissiveCreds{tls: credentials.NewTLS(cfg), plain: insecure.NewCredentials(), timeout: o.peekTimeout}
}

type permissiveCreds struct {
	tls     credentials.TransportCredentials
	plain   credentials.TransportCredentials
	timeout time.Duration
}

func (c *permissiveCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c.tls.ClientHandshake(ctx, authority, conn)
}

func (c *permissiveCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	pc, isTLS, err := peekFirst(conn, c.timeout)
	if err != nil {
		return nil, nil, err
	}
	if isTLS {
		return c.tls.ServerHandshake(pc)
	}
	return c.plain.ServerHandshake(pc)
}

// peekFirst reads conn's first byte, waiting at most timeout, and returns
// the connection with that byte put back, and whether it opens a TLS
// handshake record.
func peekFirst(conn net.Conn, timeout time.Duration) (net.Conn, bool, error) {
	var b [1]byte
	_ = conn.SetReadDeadline(time.Now().Add(timeout))
	n, err := conn.Read(b[:])
	_ = conn.SetReadDeadline(time.Time{})
	if n != 1 {
		return nil, false, fmt.Errorf("security: reading first byte: %w", err)
	}
	return &prefixConn{Conn: conn, first: b[0], hasFirst: true}, b[0] == tlsRecordHandshake, nil
}

func (c *permissiveCreds) Info() credentials.ProtocolInfo { return c.tls.Info() }

func (c *permissiveCreds) Clone() credentials.TransportCredentials {
	return &permissiveCreds{tls: c.tls.Clone(), plain: c.plain.Clone(), timeout: c.timeout}
}

// OverrideServerName is part of the TransportCredentials interface, so it
// stays, delegating to the TLS side.
func (c *permissiveCreds) OverrideServerName(name string) error {
	//lint:ignore SA1019 the interface still requires it; gRPC no longer calls it
	return c.tls.OverrideServerName(name)
}
