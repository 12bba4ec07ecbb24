package spiffetest_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/security/spiffetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var (
	tdA = spiffeid.RequireTrustDomainFromString("a.test")
	tdB = spiffeid.RequireTrustDomainFromString("b.test")
	idA = spiffeid.RequireFromString("spiffe://a.test/ns/default/sa/web")
)

func newCA(t testing.TB, td spiffeid.TrustDomain) *spiffetest.CA {
	t.Helper()
	ca, err := spiffetest.NewCA(td)
	if err != nil {
		t.Fatalf("NewCA(%s): %v", td, err)
	}
	return ca
}

func TestIssueX509SVID(t *testing.T) {
	ca := newCA(t, tdA)
	svid, err := ca.IssueX509SVID(idA, 10*time.Minute)
	if err != nil {
		t.Fatalf("IssueX509SVID: %v", err)
	}
	// The SVID must survive go-spiffe's own parser, which enforces the
	// X509-SVID leaf rules, and verify against the CA's bundle.
	certs, key, err := svid.Marshal()
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	parsed, err := x509svid.Parse(certs, key)
	if err != nil {
		t.Fatalf("x509svid.Parse: %v", err)
	}
	if got, want := parsed.ID, idA; got != want {
		t.Errorf("parsed ID = %s, want %s", got, want)
	}
	gotID, _, err := x509svid.Verify(svid.Certificates, ca.Bundle())
	if err != nil {
		t.Fatalf("x509svid.Verify: %v", err)
	}
	if gotID != idA {
		t.Errorf("verified ID = %s, want %s", gotID, idA)
	}
	leaf := svid.Certificates[0]
	if got, want := len(leaf.URIs), 1; got != want {
		t.Errorf("URI SANs = %d, want %d", got, want)
	}
	if leaf.IsCA {
		t.Error("leaf IsCA = true, want false")
	}
	if got, want := leaf.KeyUsage, x509.KeyUsageDigitalSignature; got != want {
		t.Errorf("KeyUsage = %v, want %v", got, want)
	}
	if ttl := time.Until(leaf.NotAfter); ttl > 10*time.Minute || ttl < 9*time.Minute {
		t.Errorf("remaining TTL = %s, want about 10m", ttl)
	}
	// Another CA must not vouch for it.
	if _, _, err := x509svid.Verify(svid.Certificates, x509bundle.FromX509Authorities(tdA, []*x509.Certificate{newCA(t, tdA).Root()})); err == nil {
		t.Error("Verify with a foreign root succeeded, want error")
	}
}

func TestIssueX509SVIDErrors(t *testing.T) {
	ca := newCA(t, tdA)
	tests := []struct {
		name string
		id   spiffeid.ID
		ttl  time.Duration
	}{
		{"zero ID", spiffeid.ID{}, 0},
		{"other trust domain", spiffeid.RequireFromString("spiffe://b.test/x"), 0},
		{"root path", tdA.ID(), 0},
		{"negative TTL", idA, -time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ca.IssueX509SVID(tt.id, tt.ttl); err == nil {
				t.Errorf("IssueX509SVID(%q, %s) = nil error, want error", tt.id, tt.ttl)
			}
		})
	}
	if _, err := spiffetest.NewCA(spiffeid.TrustDomain{}); err == nil {
		t.Error("NewCA(zero) = nil error, want error")
	}
}

func TestSignCertificate(t *testing.T) {
	ca := newCA(t, tdA)
	u1, _ := url.Parse("spiffe://a.test/one")
	u2, _ := url.Parse("spiffe://a.test/two")
	certs, key, err := ca.SignCertificate(&x509.Certificate{URIs: []*url.URL{u1, u2}, KeyUsage: x509.KeyUsageDigitalSignature})
	if err != nil {
		t.Fatalf("SignCertificate: %v", err)
	}
	if key == nil || len(certs) != 1 {
		t.Fatalf("SignCertificate returned %d certs, key %v; want 1 cert and a key", len(certs), key)
	}
	if got, want := len(certs[0].URIs), 2; got != want {
		t.Errorf("URI SANs = %d, want %d", got, want)
	}
	if _, _, err := x509svid.Verify(certs, ca.Bundle()); err == nil {
		t.Error("Verify of a two-URI certificate succeeded, want error")
	}
}

func startAPI(t *testing.T, ca *spiffetest.CA, id spiffeid.ID, opts ...spiffetest.Option) *spiffetest.WorkloadAPI {
	t.Helper()
	api, err := spiffetest.StartWorkloadAPI(ca, id, opts...)
	if err != nil {
		t.Fatalf("StartWorkloadAPI: %v", err)
	}
	t.Cleanup(func() {
		if err := api.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return api
}

func TestWorkloadAPIWithGoSpiffeClient(t *testing.T) {
	caA, caB := newCA(t, tdA), newCA(t, tdB)
	api := startAPI(t, caA, idA, spiffetest.WithTTL(time.Hour))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(api.Addr())))
	if err != nil {
		t.Fatalf("NewX509Source(%s): %v", api.Addr(), err)
	}
	defer src.Close()

	svid, err := src.GetX509SVID()
	if err != nil {
		t.Fatalf("GetX509SVID: %v", err)
	}
	if got, want := svid.ID, idA; got != want {
		t.Errorf("SVID ID = %s, want %s", got, want)
	}
	if got, want := svid.Certificates[0].SerialNumber, api.X509SVID().Certificates[0].SerialNumber; got.Cmp(want) != 0 {
		t.Errorf("serial = %s, want %s", got, want)
	}
	b, err := src.GetX509BundleForTrustDomain(tdA)
	if err != nil {
		t.Fatalf("GetX509BundleForTrustDomain(%s): %v", tdA, err)
	}
	if !b.Equal(caA.Bundle()) {
		t.Error("bundle for a.test differs from the CA's bundle")
	}

	// Rotation is pushed to the open stream.
	old := svid.Certificates[0].SerialNumber
	rotated, err := api.Rotate()
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	waitFor(t, ctx, src, func() bool {
		s, err := src.GetX509SVID()
		return err == nil && s.Certificates[0].SerialNumber.Cmp(rotated.Certificates[0].SerialNumber) == 0
	})
	s, _ := src.GetX509SVID()
	if s.Certificates[0].SerialNumber.Cmp(old) == 0 {
		t.Error("serial unchanged after Rotate")
	}

	// A federated bundle appears; removing it is observed too.
	api.SetBundles(caA.Bundle(), caB.Bundle())
	waitFor(t, ctx, src, func() bool {
		_, err := src.GetX509BundleForTrustDomain(tdB)
		return err == nil
	})
	api.SetBundles(caA.Bundle())
	waitFor(t, ctx, src, func() bool {
		_, err := src.GetX509BundleForTrustDomain(tdB)
		return err != nil
	})
}

// waitFor waits for cond to hold, re-checking after each source update,
// for at most the context's deadline.
func waitFor(t *testing.T, ctx context.Context, src *workloadapi.X509Source, cond func() bool) {
	t.Helper()
	for i := 0; i < 100 && !cond(); i++ {
		if err := src.WaitUntilUpdated(ctx); err != nil {
			t.Fatalf("waiting for update: %v", err)
		}
	}
	if !cond() {
		t.Fatal("condition not met after 100 updates")
	}
}

func TestFetchX509Bundles(t *testing.T) {
	caA, caB := newCA(t, tdA), newCA(t, tdB)
	api := startAPI(t, caA, idA, spiffetest.WithBundles(caA.Bundle(), caB.Bundle()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(api.Addr()))
	if err != nil {
		t.Fatalf("workloadapi.New: %v", err)
	}
	defer client.Close()
	set, err := client.FetchX509Bundles(ctx)
	if err != nil {
		t.Fatalf("FetchX509Bundles: %v", err)
	}
	if got, want := set.Len(), 2; got != want {
		t.Errorf("bundles = %d, want %d", got, want)
	}
	for _, ca := range []*spiffetest.CA{caA, caB} {
		b, ok := set.Get(ca.TrustDomain())
		if !ok || !b.Equal(ca.Bundle()) {
			t.Errorf("bundle for %s = %v (found %v), want the CA's bundle", ca.TrustDomain(), b, ok)
		}
	}
}

func TestWorkloadAPIRequiresSecurityHeader(t *testing.T) {
	api := startAPI(t, newCA(t, tdA), idA)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := grpc.NewClient(api.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	defer conn.Close()
	client := workload.NewSpiffeWorkloadAPIClient(conn)

	tests := []struct {
		name string
		md   metadata.MD
		want codes.Code
	}{
		{"no header", nil, codes.InvalidArgument},
		{"wrong value", metadata.Pairs("workload.spiffe.io", "false"), codes.InvalidArgument},
		{"header", metadata.Pairs("workload.spiffe.io", "true"), codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cctx, ccancel := context.WithCancel(ctx)
			defer ccancel()
			if tt.md != nil {
				cctx = metadata.NewOutgoingContext(cctx, tt.md)
			}
			for _, call := range []struct {
				name string
				recv func() error
			}{
				{"FetchX509SVID", func() error {
					s, err := client.FetchX509SVID(cctx, &workload.X509SVIDRequest{})
					if err != nil {
						return err
					}
					_, err = s.Recv()
					return err
				}},
				{"FetchX509Bundles", func() error {
					s, err := client.FetchX509Bundles(cctx, &workload.X509BundlesRequest{})
					if err != nil {
						return err
					}
					_, err = s.Recv()
					return err
				}},
			} {
				if got := status.Code(call.recv()); got != tt.want {
					t.Errorf("%s: code = %v, want %v", call.name, got, tt.want)
				}
			}
		})
	}
}

func TestWorkloadAPICloseIdempotent(t *testing.T) {
	api, err := spiffetest.StartWorkloadAPI(newCA(t, tdA), idA)
	if err != nil {
		t.Fatalf("StartWorkloadAPI: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(api.Addr()))
	if err != nil {
		t.Fatalf("workloadapi.New: %v", err)
	}
	defer client.Close()
	if _, err := client.FetchX509SVID(ctx); err != nil {
		t.Fatalf("FetchX509SVID: %v", err)
	}
	for i := 0; i < 3; i++ {
		if err := api.Close(); err != nil {
			t.Errorf("Close #%d: %v", i+1, err)
		}
	}
	short, scancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer scancel()
	if _, err := client.FetchX509SVID(short); err == nil {
		t.Error("FetchX509SVID after Close succeeded, want error")
	}
}

func TestStartWorkloadAPIErrors(t *testing.T) {
	if _, err := spiffetest.StartWorkloadAPI(nil, idA); err == nil {
		t.Error("StartWorkloadAPI(nil CA) = nil error, want error")
	}
	if _, err := spiffetest.StartWorkloadAPI(newCA(t, tdB), idA); err == nil {
		t.Error("StartWorkloadAPI with an ID outside the CA's trust domain = nil error, want error")
	}
	dir := t.TempDir()
	if _, err := spiffetest.StartWorkloadAPI(newCA(t, tdA), idA, spiffetest.WithSocketPath(dir+"/missing/agent.sock")); err == nil {
		t.Error("StartWorkloadAPI on an unusable socket path = nil error, want error")
	}
}

func TestCAFromPEM(t *testing.T) {
	ca := newCA(t, tdA)
	certPEM, keyPEM, err := ca.MarshalPEM()
	if err != nil {
		t.Fatalf("MarshalPEM: %v", err)
	}
	loaded, err := spiffetest.CAFromPEM(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("CAFromPEM: %v", err)
	}
	if got, want := loaded.TrustDomain(), tdA; got != want {
		t.Errorf("TrustDomain() = %s, want %s", got, want)
	}
	svid, err := loaded.IssueX509SVID(idA, time.Minute)
	if err != nil {
		t.Fatalf("IssueX509SVID: %v", err)
	}
	// An SVID of the loaded CA verifies against the original CA's bundle:
	// the same trust domain across processes.
	if _, _, err := x509svid.Verify(svid.Certificates, x509bundle.NewSet(ca.Bundle())); err != nil {
		t.Errorf("SVID of the loaded CA does not verify against the original bundle: %v", err)
	}

	other := newCA(t, tdA)
	_, otherKey, err := other.MarshalPEM()
	if err != nil {
		t.Fatalf("MarshalPEM: %v", err)
	}
	leafChain, _, err := ca.SignCertificate(&x509.Certificate{URIs: []*url.URL{idA.URL()}})
	if err != nil {
		t.Fatalf("SignCertificate: %v", err)
	}
	leafPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafChain[0].Raw})
	expiredChain, _, err := ca.SignCertificate(&x509.Certificate{
		URIs:                  []*url.URL{tdA.ID().URL()},
		IsCA:                  true,
		BasicConstraintsValid: true,
		NotBefore:             time.Now().Add(-2 * time.Hour),
		NotAfter:              time.Now().Add(-time.Hour),
	})
	if err != nil {
		t.Fatalf("SignCertificate: %v", err)
	}
	expiredPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: expiredChain[0].Raw})
	for _, tc := range []struct {
		name          string
		cert, key     []byte
		wantErrSubstr string
	}{
		{"no certificate", nil, keyPEM, "no CERTIFICATE PEM block"},
		{"key in place of certificate", keyPEM, keyPEM, "no CERTIFICATE PEM block"},
		{"leaf, not a CA", leafPEM, keyPEM, "not a CA"},
		{"expired", expiredPEM, keyPEM, "expired at"},
		{"no key", certPEM, nil, "no PKCS#8 PRIVATE KEY PEM block"},
		{"another CA's key", certPEM, otherKey, "does not match"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := spiffetest.CAFromPEM(tc.cert, tc.key)
			if err == nil || !strings.Contains(err.Error(), tc.wantErrSubstr) {
				t.Errorf("CAFromPEM: got error %v, want one containing %q", err, tc.wantErrSubstr)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "spiffetest: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}
