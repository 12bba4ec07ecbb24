package mesh

import (
	"crypto/tls"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weftmesh/weft/security"
)

// An edge service: with an identity, every mesh server demands a client
// certificate (WEFT_MTLS=strict), which a browser never has. A server
// given Public or PublicTLS serves its own transport instead, while the
// process's other servers stay mesh servers: the frontend's public port
// takes browsers, its mesh port only SPIFFE peers, and its clients keep
// mTLS to the services behind it.

// A ServerOption configures one server of the mesh, given to Serve or
// NewGRPCServer. It is a grpc.ServerOption too, so that NewGRPCServer
// takes it among grpc-go's options; grpc-go itself ignores it.
type ServerOption interface {
	grpc.ServerOption
	applyServer(*serverConfig) error
}

type serverOption struct {
	grpc.EmptyServerOption
	f func(*serverConfig) error
}

func (o serverOption) applyServer(c *serverConfig) error { return o.f(c) }

// serverConfig is what the ServerOptions of one server say.
type serverConfig struct {
	public  bool
	getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error) // public TLS; nil: plaintext
	files   [2]string                                            // PublicTLSFiles, loaded by newServerConfig
}

// Public makes a server public: plaintext, whatever the mesh's identity
// and WEFT_MTLS say, for a port behind a TLS-terminating load balancer or
// on a private network of browsers. See PublicTLS for what a public
// server keeps and what it leaves out.
func Public() ServerOption {
	return serverOption{f: func(c *serverConfig) error {
		*c = serverConfig{public: true}
		return nil
	}}
}

// PublicTLS makes a server public over one-way TLS with cert, a web
// certificate (not the mesh's SVID): the server requests no client
// certificate, so browsers and plain TLS clients connect. For a
// certificate renewed on disk, use PublicTLSFiles.
//
// A public server keeps the mesh's inbound chain (telemetry, the
// caller's deadline, load shedding, X-Forwarded-Client-Cert removal, the
// authorization policy of WEFT_AUTHZ_POLICY) but has no peer identity:
// security.PeerID reports none, and authorization judges every request
// with an empty principal, so rules naming principals or namespaces
// never match it (a DENY rule with notPrincipals matches every request).
// It does not follow the control plane's inbound listener: that
// listener's transport socket and RBAC are the mesh port's
// (PeerAuthentication, principals), which a public port must not take.
func PublicTLS(cert tls.Certificate) ServerOption {
	return serverOption{f: func(c *serverConfig) error {
		get, err := security.StaticCertificate(cert)
		if err != nil {
			return fmt.Errorf("mesh: PublicTLS: %w", err)
		}
		*c = serverConfig{public: true, getCert: get}
		return nil
	}}
}

// PublicTLSFiles is PublicTLS with the certificate chain (leaf first) and
// key read from PEM files when the server is made, and read again when
// either changes (checked during handshakes, at most once a second): a
// renewed certificate serves new connections without a restart, and a bad
// renewal is logged while the last good pair keeps serving. Serve or
// NewGRPCServer fails, naming the file, when the first read fails.
func PublicTLSFiles(certFile, keyFile string) ServerOption {
	return serverOption{f: func(c *serverConfig) error {
		if certFile == "" || keyFile == "" {
			return errors.New("mesh: PublicTLSFiles: empty file name")
		}
		*c = serverConfig{public: true, files: [2]string{certFile, keyFile}}
		return nil
	}}
}

// newServerConfig applies opts, loading certificate files.
func (m *Mesh) newServerConfig(opts []ServerOption) (*serverConfig, error) {
	c := &serverConfig{}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o.applyServer(c); err != nil {
			return nil, err
		}
	}
	if c.files[0] != "" && c.getCert == nil {
		k, err := security.LoadKeyPairFiles(c.files[0], c.files[1], security.WithLogger(m.log))
		if err != nil {
			return nil, fmt.Errorf("mesh: PublicTLSFiles: %w", err)
		}
		c.getCert = k.GetCertificate
	}
	return c, nil
}

// tlsConfig is the public server's TLS config; nil for plaintext.
func (c *serverConfig) tlsConfig() *tls.Config {
	if c.getCert == nil {
		return nil
	}
	return security.ServerOnlyTLSConfig(c.getCert)
}

// mode names the server's transport for the log.
func (c *serverConfig) mode() string {
	switch {
	case !c.public:
		return "mesh"
	case c.getCert == nil:
		return "public"
	default:
		return "public TLS"
	}
}

// splitServerOptions separates the mesh's ServerOptions from grpc-go's.
func splitServerOptions(opts []grpc.ServerOption) (mine []ServerOption, theirs []grpc.ServerOption) {
	theirs = make([]grpc.ServerOption, 0, len(opts))
	for _, o := range opts {
		if so, ok := o.(ServerOption); ok {
			mine = append(mine, so)
			continue
		}
		theirs = append(theirs, o)
	}
	return mine, theirs
}

// grpcCreds are a public gRPC server's transport credentials.
func (c *serverConfig) grpcCreds() credentials.TransportCredentials {
	if tc := c.tlsConfig(); tc != nil {
		return credentials.NewTLS(tc)
	}
	return insecure.NewCredentials()
}

// logPublic says, once per public server, that it asks for no client
// certificate, and what that leaves out under a control plane.
func (m *Mesh) logPublic(c *serverConfig, proto, addr string) {
	attrs := []any{"protocol", proto, "transport", c.mode()}
	if addr != "" {
		attrs = append(attrs, "addr", addr)
	}
	if m.inbound != nil {
		attrs = append(attrs, "inbound_listener", "not followed")
	}
	m.log.Info("weft: public server: no client certificate asked for, no peer identity", attrs...)
}
