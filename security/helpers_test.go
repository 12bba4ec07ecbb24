package security_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/goleak"
	"google.golang.org/grpc/metadata"

	"github.com/weftmesh/weft/security"
	"github.com/weftmesh/weft/security/spiffetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var (
	tdA     = spiffeid.RequireTrustDomainFromString("a.test")
	tdB     = spiffeid.RequireTrustDomainFromString("b.test")
	tdS     = spiffeid.RequireTrustDomainFromString("server.test")
	clientA = spiffeid.RequireFromString("spiffe://a.test/ns/default/sa/client")
	clientB = spiffeid.RequireFromString("spiffe://b.test/ns/default/sa/client")
	serverS = spiffeid.RequireFromString("spiffe://server.test/ns/prod/sa/api")
)

func newCA(t testing.TB, td spiffeid.TrustDomain) *spiffetest.CA {
	t.Helper()
	ca, err := spiffetest.NewCA(td)
	if err != nil {
		t.Fatalf("NewCA(%s): %v", td, err)
	}
	return ca
}

func issue(t testing.TB, ca *spiffetest.CA, id spiffeid.ID) *x509svid.SVID {
	t.Helper()
	svid, err := ca.IssueX509SVID(id, time.Hour)
	if err != nil {
		t.Fatalf("IssueX509SVID(%s): %v", id, err)
	}
	return svid
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// rawCert signs tmpl with ca and returns it as a tls.Certificate, for peers
// that present certificates breaking the X509-SVID rules.
func rawCert(t testing.TB, ca *spiffetest.CA, tmpl *x509.Certificate) tls.Certificate {
	t.Helper()
	certs, key, err := ca.SignCertificate(tmpl)
	if err != nil {
		t.Fatalf("SignCertificate: %v", err)
	}
	return tls.Certificate{Certificate: [][]byte{certs[0].Raw}, PrivateKey: key, Leaf: certs[0]}
}

func svidCert(svid *x509svid.SVID) tls.Certificate {
	c := tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	for _, x := range svid.Certificates {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	return ln
}

// handshakeResult is what a tlsServer saw for one connection.
type handshakeResult struct {
	err    error
	id     spiffeid.ID
	idOK   bool
	resume bool
}

// tlsServer accepts TLS connections with cfg on loopback, completes the
// handshake, writes "ok" and closes; every outcome goes to results.
type tlsServer struct {
	ln      net.Listener
	results chan handshakeResult
	wg      sync.WaitGroup
}

func startTLSServer(t testing.TB, cfg *tls.Config) *tlsServer {
	t.Helper()
	s := &tlsServer{ln: listen(t), results: make(chan handshakeResult, 64)}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				tc := tls.Server(c, cfg)
				err := tc.Handshake()
				cs := tc.ConnectionState()
				r := handshakeResult{err: err, resume: cs.DidResume}
				if err == nil {
					r.id, r.idOK = security.PeerIDFromTLS(&cs)
					_, _ = tc.Write([]byte("ok"))
				}
				select {
				case s.results <- r:
				default:
				}
			}()
		}
	}()
	t.Cleanup(func() {
		_ = s.ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *tlsServer) addr() string { return s.ln.Addr().String() }

func (s *tlsServer) result(t testing.TB) handshakeResult {
	t.Helper()
	select {
	case r := <-s.results:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no handshake result within 5s")
		return handshakeResult{}
	}
}

// dial connects with cfg and reads the server's "ok". It returns the
// connection state and an error if the handshake or the read failed (with
// TLS 1.3 a server's refusal of the client certificate surfaces on read).
func dial(addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c, buf); err != nil {
		return c.ConnectionState(), err
	}
	if string(buf) != "ok" {
		return c.ConnectionState(), errors.New("unexpected reply " + string(buf))
	}
	// Read to EOF so the client processes any session ticket sent after
	// the handshake.
	_, _ = io.Copy(io.Discard, c)
	return c.ConnectionState(), nil
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func metadataCtx(ctx context.Context, kv ...string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, kv...)
}
