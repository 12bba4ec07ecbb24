package security

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// TLSChooser decides how a server serves one connection, once its first
// byte has arrived: a non-nil config serves TLS with it, nil serves
// plaintext, an error refuses (closes) the connection. isTLS reports
// whether the first byte opens a TLS handshake record; c is the connection
// with that byte put back (its addresses are the ones to decide on; it
// must not be read). The chooser may block, for example until a control
// plane has said what the port serves; it must return once ctx ends.
//
// It exists so that a policy that varies per connection (the filter chain
// an xDS control plane sends for PeerAuthentication, per port and per
// transport protocol) reuses the peeking of [PermissiveListener] and
// [PermissiveCredentials] instead of repeating it.
type TLSChooser func(ctx context.Context, c net.Conn, isTLS bool) (*tls.Config, error)

// PerConnectionListener is [PermissiveListener] with the choice of TLS
// made by choose for each connection: a connection choose serves TLS is
// returned as a *tls.Conn (so net/http fills in Request.TLS), one it serves
// plaintext as is, and one it refuses is closed without a byte written.
// choose runs in the connection's own goroutine, never holding up Accept;
// the context it gets ends when the listener is closed.
//
// The listener is safe for concurrent use; Close is idempotent. Options:
// [WithPeekTimeout], [WithLogger].
func PerConnectionListener(ln net.Listener, choose TLSChooser, opts ...Option) net.Listener {
	return newPeekingListener(ln, choose, opts)
}

// PerConnectionCredentials are the gRPC server credentials counterpart of
// [PerConnectionListener]: ServerHandshake peeks the first byte (waiting at
// most the peek timeout), asks choose, then performs the TLS handshake with
// the chosen config, serves plaintext, or fails the handshake, which makes
// grpc-go close the connection. ctx bounds every choose: end it when the
// server stops, since grpc-go's Stop waits for handshakes in progress.
//
// Each distinct *tls.Config choose returns is remembered for the
// credentials' lifetime, so choose should return one of a few long-lived
// configs. The credentials serve only: ClientHandshake fails. They are
// safe for concurrent use.
func PerConnectionCredentials(ctx context.Context, choose TLSChooser, opts ...Option) credentials.TransportCredentials {
	o := newOptions(opts)
	return &perConnCreds{ctx: ctx, choose: choose, timeout: o.peekTimeout, plain: insecure.NewCredentials(), tls: &sync.Map{}}
}

type perConnCreds struct {
	ctx     context.Context
	choose  TLSChooser
	timeout time.Duration
	plain   credentials.TransportCredentials
	tls     *sync.Map // *tls.Config -> credentials.TransportCredentials
}

func (c *perConnCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	pc, isTLS, err := peekFirst(conn, c.timeout)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := c.choose(c.ctx, pc, isTLS)
	switch {
	case err != nil:
		return nil, nil, err
	case cfg == nil:
		return c.plain.ServerHandshake(pc)
	}
	tc, ok := c.tls.Load(cfg)
	if !ok {
		tc, _ = c.tls.LoadOrStore(cfg, credentials.NewTLS(cfg))
	}
	return tc.(credentials.TransportCredentials).ServerHandshake(pc)
}

var errServerOnly = errors.New("security: per-connection credentials serve only; a client needs its own credentials")

func (c *perConnCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errServerOnly
}

// Info reports TLS: the credentials secure what the control plane asks
// them to, and grpc-go reads this only to describe the server.
func (c *perConnCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}

func (c *perConnCreds) Clone() credentials.TransportCredentials {
	return &perConnCreds{ctx: c.ctx, choose: c.choose, timeout: c.timeout, plain: c.plain, tls: c.tls}
}

// OverrideServerName is part of the TransportCredentials interface; a
// server has no server name to override.
func (c *perConnCreds) OverrideServerName(string) error { return nil }
