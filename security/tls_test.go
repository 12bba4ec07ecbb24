package security_test

import (
	"crypto/tls"
	"crypto/x509"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"weak"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/security"
)

// TestServerVerifiesClient presents client certificates, valid and broken,
// to a server built by ServerTLSConfig over real loopback handshakes.
func TestServerVerifiesClient(t *testing.T) {
	caS, caA, caB := newCA(t, tdS), newCA(t, tdA), newCA(t, tdB)
	serverSrc := security.NewStaticSource(issue(t, caS, serverS), caS.Bundle(), caA.Bundle(), caB.Bundle())
	onlyA := security.NewStaticSource(issue(t, caS, serverS), caS.Bundle(), caA.Bundle())

	idURL := clientA.URL()
	tests := []struct {
		name      string
		src       security.Source
		authorize security.Authorizer
		cert      func() []tls.Certificate
		wantErr   string // substring of the server's handshake error; "" = success
	}{
		{
			name: "valid SVID",
			src:  serverSrc,
			cert: func() []tls.Certificate { return []tls.Certificate{svidCert(issue(t, caA, clientA))} },
		},
		{
			name:    "client of an untrusted trust domain",
			src:     onlyA,
			cert:    func() []tls.Certificate { return []tls.Certificate{svidCert(issue(t, caB, clientB))} },
			wantErr: `no X.509 bundle for trust domain "b.test"`,
		},
		{
			name: "ID of trust domain A signed by B's CA",
			src:  serverSrc,
			cert: func() []tls.Certificate {
				return []tls.Certificate{rawCert(t, caB, &x509.Certificate{URIs: []*url.URL{idURL}, KeyUsage: x509.KeyUsageDigitalSignature})}
			},
			wantErr: "could not verify leaf certificate",
		},
		{
			name: "expired SVID",
			src:  serverSrc,
			cert: func() []tls.Certificate {
				return []tls.Certificate{rawCert(t, caA, &x509.Certificate{
					URIs: []*url.URL{idURL}, KeyUsage: x509.KeyUsageDigitalSignature,
					NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour),
				})}
			},
			wantErr: "not valid at",
		},
		{
			name: "two URI SANs",
			src:  serverSrc,
			cert: func() []tls.Certificate {
				return []tls.Certificate{rawCert(t, caA, &x509.Certificate{
					URIs: []*url.URL{idURL, mustURL("spiffe://a.test/ns/admin/sa/root")}, KeyUsage: x509.KeyUsageDigitalSignature,
				})}
			},
			wantErr: "more than one URI SAN",
		},
		{
			name: "no SPIFFE URI",
			src:  serverSrc,
			cert: func() []tls.Certificate {
				return []tls.Certificate{rawCert(t, caA, &x509.Certificate{DNSNames: []string{"client.a.test"}, KeyUsage: x509.KeyUsageDigitalSignature})}
			},
			wantErr: "no URI SAN",
		},
		{
			name: "https URI instead of spiffe",
			src:  serverSrc,
			cert: func() []tls.Certificate {
				return []tls.Certificate{rawCert(t, caA, &x509.Certificate{URIs: []*url.URL{mustURL("https://a.test/ns/default/sa/client")}, KeyUsage: x509.KeyUsageDigitalSignature})}
			},
			wantErr: "not an X509-SVID",
		},
		{
			name: "SVID marked CA",
			src:  serverSrc,
			cert: func() []tls.Certificate {
				return []tls.Certificate{rawCert(t, caA, &x509.Certificate{
					URIs: []*url.URL{idURL}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
					IsCA: true, BasicConstraintsValid: true,
				})}
			},
			wantErr: "CA certificate",
		},
		{
			name: "no digitalSignature key usage",
			src:  serverSrc,
			cert: func() []tls.Certificate {
				return []tls.Certificate{rawCert(t, caA, &x509.Certificate{URIs: []*url.URL{idURL}, KeyUsage: x509.KeyUsageKeyEncipherment})}
			},
			wantErr: "digitalSignature",
		},
		{
			name: "ID without a path",
			src:  serverSrc,
			cert: func() []tls.Certificate {
				return []tls.Certificate{rawCert(t, caA, &x509.Certificate{URIs: []*url.URL{tdA.ID().URL()}, KeyUsage: x509.KeyUsageDigitalSignature})}
			},
			wantErr: "has no path",
		},
		{
			name:    "no client certificate",
			src:     serverSrc,
			cert:    func() []tls.Certificate { return nil },
			wantErr: "client didn't provide a certificate",
		},
		{
			name:      "refused by the authorizer",
			src:       serverSrc,
			authorize: security.AuthorizeMemberOf(tdB),
			cert:      func() []tls.Certificate { return []tls.Certificate{svidCert(issue(t, caA, clientA))} },
			wantErr:   "not a member of trust domain",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startTLSServer(t, security.ServerTLSConfig(tt.src, tt.authorize))
			clientCfg := &tls.Config{
				Certificates:       tt.cert(),
				InsecureSkipVerify: true, // this test is about the server's checks
				MinVersion:         tls.VersionTLS13,
			}
			_, dialErr := dial(srv.addr(), clientCfg)
			r := srv.result(t)
			if tt.wantErr == "" {
				if dialErr != nil || r.err != nil {
					t.Fatalf("handshake: client err %v, server err %v; want success", dialErr, r.err)
				}
				if !r.idOK || r.id != clientA {
					t.Errorf("PeerIDFromTLS = %q, %v; want %q, true", r.id, r.idOK, clientA)
				}
				return
			}
			if dialErr == nil {
				t.Errorf("client saw success, want the server to refuse it")
			}
			if r.err == nil || !strings.Contains(r.err.Error(), tt.wantErr) {
				t.Errorf("server handshake error = %v, want one containing %q", r.err, tt.wantErr)
			}
		})
	}
}

// TestClientVerifiesServer checks ClientTLSConfig's side of the handshake.
func TestClientVerifiesServer(t *testing.T) {
	caS, caA, caB := newCA(t, tdS), newCA(t, tdA), newCA(t, tdB)
	clientSrc := security.NewStaticSource(issue(t, caA, clientA), caA.Bundle(), caS.Bundle())

	tests := []struct {
		name      string
		cert      func() tls.Certificate
		authorize security.Authorizer
		wantErr   string
	}{
		{"valid server", func() tls.Certificate { return svidCert(issue(t, caS, serverS)) }, security.AuthorizeID(serverS), ""},
		{"server of an untrusted trust domain", func() tls.Certificate {
			return svidCert(issue(t, caB, spiffeid.RequireFromString("spiffe://b.test/api")))
		}, security.AuthorizeAny(), `no X.509 bundle for trust domain "b.test"`},
		{"server ID of S signed by A's CA", func() tls.Certificate {
			return rawCert(t, caA, &x509.Certificate{URIs: []*url.URL{serverS.URL()}, KeyUsage: x509.KeyUsageDigitalSignature})
		}, security.AuthorizeAny(), "could not verify leaf certificate"},
		{"unexpected server ID", func() tls.Certificate { return svidCert(issue(t, caS, serverS)) },
			security.AuthorizeOneOf(spiffeid.RequireFromString("spiffe://server.test/other")), "unexpected peer ID"},
		{"server certificate marked CA", func() tls.Certificate {
			return rawCert(t, caS, &x509.Certificate{URIs: []*url.URL{serverS.URL()}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true})
		}, security.AuthorizeAny(), "CA certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert := tt.cert()
			srv := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAnyClientCert})
			cs, err := dial(srv.addr(), security.ClientTLSConfig(clientSrc, tt.authorize))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("dial: %v, want success", err)
				}
				if id, ok := security.PeerIDFromTLS(&cs); !ok || id != serverS {
					t.Errorf("PeerIDFromTLS = %q, %v; want %q, true", id, ok, serverS)
				}
				if r := srv.result(t); !r.idOK || r.id != clientA {
					t.Errorf("server saw client %q (%v), want %q", r.id, r.idOK, clientA)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("dial error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestResumedSessionIsReverified resumes a TLS session after the peer's
// trust domain has been removed from the bundle set, on each side.
func TestResumedSessionIsReverified(t *testing.T) {
	for _, side := range []string{"server", "client"} {
		t.Run("removed on "+side, func(t *testing.T) {
			caS, caA := newCA(t, tdS), newCA(t, tdA)
			serverSrc := security.NewStaticSource(issue(t, caS, serverS), caS.Bundle(), caA.Bundle())
			clientSrc := security.NewStaticSource(issue(t, caA, clientA), caA.Bundle(), caS.Bundle())
			srv := startTLSServer(t, security.ServerTLSConfig(serverSrc, nil))
			clientCfg := security.ClientTLSConfig(clientSrc, security.AuthorizeID(serverS))
			clientCfg.ClientSessionCache = tls.NewLRUClientSessionCache(8)
			var clientResumed atomic.Bool
			verify := clientCfg.VerifyConnection
			clientCfg.VerifyConnection = func(cs tls.ConnectionState) error {
				clientResumed.Store(cs.DidResume)
				return verify(cs)
			}

			for i, wantResume := range []bool{false, true} {
				cs, err := dial(srv.addr(), clientCfg)
				if err != nil {
					t.Fatalf("dial #%d: %v", i+1, err)
				}
				if r := srv.result(t); r.err != nil || r.resume != wantResume {
					t.Fatalf("dial #%d: server err %v, resumed %v; want nil, %v", i+1, r.err, r.resume, wantResume)
				}
				if cs.DidResume != wantResume {
					t.Fatalf("dial #%d: client DidResume = %v, want %v", i+1, cs.DidResume, wantResume)
				}
			}

			var wantErr string
			if side == "server" {
				serverSrc.SetBundles(caS.Bundle())
				wantErr = `no X.509 bundle for trust domain "a.test"`
			} else {
				clientSrc.SetBundles(caA.Bundle())
				wantErr = `no X.509 bundle for trust domain "server.test"`
			}
			cs, err := dial(srv.addr(), clientCfg)
			if err == nil {
				t.Fatalf("dial after removing the trust domain succeeded (resumed %v), want refusal", cs.DidResume)
			}
			r := srv.result(t)
			if side == "server" {
				if r.err == nil || !strings.Contains(r.err.Error(), wantErr) {
					t.Errorf("server error = %v, want one containing %q", r.err, wantErr)
				}
				if !r.resume {
					t.Errorf("refused handshake was not a resumption; the test did not exercise resumption")
				}
			} else {
				if !strings.Contains(err.Error(), wantErr) {
					t.Errorf("client error = %v, want one containing %q", err, wantErr)
				}
				if !clientResumed.Load() {
					t.Errorf("refused handshake was not a resumption; the test did not exercise resumption")
				}
			}
		})
	}
}

func TestAuthorizers(t *testing.T) {
	other := spiffeid.RequireFromString("spiffe://a.test/other")
	tests := []struct {
		name string
		a    security.Authorizer
		id   spiffeid.ID
		want bool
	}{
		{"any", security.AuthorizeAny(), clientB, true},
		{"id match", security.AuthorizeID(clientA), clientA, true},
		{"id mismatch", security.AuthorizeID(clientA), other, false},
		{"one of match", security.AuthorizeOneOf(other, clientA), clientA, true},
		{"one of mismatch", security.AuthorizeOneOf(other), clientA, false},
		{"one of none", security.AuthorizeOneOf(), clientA, false},
		{"member of", security.AuthorizeMemberOf(tdA), clientA, true},
		{"member of other", security.AuthorizeMemberOf(tdA), clientB, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.a(tt.id) == nil; got != tt.want {
				t.Errorf("authorize(%s) accepted = %v, want %v", tt.id, got, tt.want)
			}
		})
	}
}

func TestSourceErrorFailsHandshake(t *testing.T) {
	caS := newCA(t, tdS)
	src := security.NewStaticSource(nil, caS.Bundle())
	srv := startTLSServer(t, security.ServerTLSConfig(src, nil))
	clientSrc := security.NewStaticSource(issue(t, caS, serverS), caS.Bundle())
	if _, err := dial(srv.addr(), security.ClientTLSConfig(clientSrc, nil)); err == nil {
		t.Error("dial to a server without an SVID succeeded, want error")
	}
	if r := srv.result(t); r.err == nil || !strings.Contains(r.err.Error(), "has no SVID") {
		t.Errorf("server error = %v, want one about the missing SVID", r.err)
	}
}

func TestPeerIDFromTLS(t *testing.T) {
	caA := newCA(t, tdA)
	svid := issue(t, caA, clientA)
	caCert := rawCert(t, caA, &x509.Certificate{URIs: []*url.URL{clientA.URL()}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign})
	tests := []struct {
		name   string
		cs     *tls.ConnectionState
		wantOK bool
	}{
		{"nil", nil, false},
		{"incomplete handshake", &tls.ConnectionState{PeerCertificates: svid.Certificates}, false},
		{"no certificates", &tls.ConnectionState{HandshakeComplete: true}, false},
		{"CA leaf", &tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{caCert.Leaf}}, false},
		{"SVID", &tls.ConnectionState{HandshakeComplete: true, PeerCertificates: svid.Certificates}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, ok := security.PeerIDFromTLS(tt.cs)
			if ok != tt.wantOK || (ok && id != clientA) {
				t.Errorf("PeerIDFromTLS = %q, %v; want ok=%v", id, ok, tt.wantOK)
			}
		})
	}
}

// A connection's SPIFFE ID, asked for on every call, is read from its
// certificate once: later asks allocate nothing. The answer is forgotten
// when the certificate is collected.
func TestPeerIDFromTLSCachedPerCertificate(t *testing.T) {
	caA := newCA(t, tdA)
	leaf := func() weak.Pointer[x509.Certificate] {
		cs := &tls.ConnectionState{HandshakeComplete: true, PeerCertificates: issue(t, caA, clientA).Certificates}
		if id, ok := security.PeerIDFromTLS(cs); !ok || id != clientA {
			t.Fatalf("PeerIDFromTLS = %q, %v; want %q, true", id, ok, clientA)
		}
		allocs := testing.AllocsPerRun(100, func() {
			if id, ok := security.PeerIDFromTLS(cs); !ok || id != clientA {
				t.Fatalf("PeerIDFromTLS again = %q, %v; want %q, true", id, ok, clientA)
			}
		})
		if allocs != 0 {
			t.Errorf("PeerIDFromTLS of a certificate already seen: %v allocations, want 0", allocs)
		}
		return weak.Make(cs.PeerCertificates[0])
	}()
	if !security.LeafIDCached(leaf) {
		t.Fatal("the certificate's ID is not cached")
	}
	deadline := time.Now().Add(10 * time.Second)
	for security.LeafIDCached(leaf) {
		if time.Now().After(deadline) {
			t.Fatalf("the ID of a collected certificate (collected: %v) is still cached", leaf.Value() == nil)
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}

func TestVerifyPeerNilBundle(t *testing.T) {
	caA := newCA(t, tdA)
	_, err := security.VerifyPeer(issue(t, caA, clientA).Certificates, nil, time.Now())
	if err == nil || !strings.HasPrefix(err.Error(), "security: ") {
		t.Errorf("VerifyPeer(nil bundles) = %v, want a security: error", err)
	}
	_, err = security.VerifyPeer(nil, caA.Bundle(), time.Now())
	if err == nil {
		t.Error("VerifyPeer(no certs) = nil, want error")
	}
}
