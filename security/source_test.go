package security_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/weftmesh/weft/security"
	"github.com/weftmesh/weft/security/spiffetest"
)

// recordHandler is a slog.Handler that hands every record to a channel.
type recordHandler struct{ ch chan slog.Record }

func newRecordLogger() (*slog.Logger, chan slog.Record) {
	ch := make(chan slog.Record, 64)
	return slog.New(recordHandler{ch}), ch
}

func (h recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recordHandler) Handle(_ context.Context, r slog.Record) error {
	select {
	case h.ch <- r.Clone():
	default:
	}
	return nil
}
func (h recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordHandler) WithGroup(string) slog.Handler      { return h }

func recordText(r slog.Record) string {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.Key + "=" + a.Value.String())
		return true
	})
	return b.String()
}

func waitRecord(t *testing.T, ch chan slog.Record, substr string) string {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for i := 0; i < 1000; i++ {
		select {
		case r := <-ch:
			if s := recordText(r); strings.Contains(s, substr) {
				return s
			}
		case <-timeout:
			t.Fatalf("no log record containing %q within 5s", substr)
		}
	}
	t.Fatalf("no log record containing %q in 1000 records", substr)
	return ""
}

func writeSVIDFiles(t *testing.T, dir string, svid *x509svid.SVID, ca *spiffetest.CA) (certFile, keyFile, bundleFile string) {
	t.Helper()
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	bundlePEM, err := ca.Bundle().Marshal()
	if err != nil {
		t.Fatalf("bundle Marshal: %v", err)
	}
	certFile, keyFile, bundleFile = filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid_key.pem"), filepath.Join(dir, "bundle.pem")
	for name, data := range map[string][]byte{certFile: certPEM, keyFile: keyPEM, bundleFile: bundlePEM} {
		writeAtomic(t, name, data)
	}
	return certFile, keyFile, bundleFile
}

// writeAtomic replaces name's content in one step, as a rotating agent does.
func writeAtomic(t *testing.T, name string, data []byte) {
	t.Helper()
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatalf("write %s: %v", tmp, err)
	}
	if err := os.Rename(tmp, name); err != nil {
		t.Fatalf("rename %s: %v", tmp, err)
	}
}

// waitSerial waits, for at most 5s and 100 updates, until src serves want.
func waitSerial(t *testing.T, src *security.FileSource, want *x509svid.SVID) {
	t.Helper()
	w := want.Certificates[0].SerialNumber.String()
	timeout := time.After(5 * time.Second)
	for i := 0; i < 100 && serial(t, src) != w; i++ {
		select {
		case <-src.Updated():
		case <-timeout:
			t.Fatalf("serial = %s after 5s, want %s", serial(t, src), w)
		}
	}
	if got := serial(t, src); got != w {
		t.Fatalf("serial = %s after 100 updates, want %s", got, w)
	}
}

func drain(ch chan slog.Record) {
	for i := 0; i < cap(ch); i++ {
		select {
		case <-ch:
		default:
			return
		}
	}
}

func serial(t *testing.T, src security.Source) string {
	t.Helper()
	svid, err := src.GetX509SVID()
	if err != nil {
		t.Fatalf("GetX509SVID: %v", err)
	}
	return svid.Certificates[0].SerialNumber.String()
}

func TestFileSource(t *testing.T) {
	ca := newCA(t, tdA)
	dir := t.TempDir()
	first := issue(t, ca, clientA)
	certFile, keyFile, bundleFile := writeSVIDFiles(t, dir, first, ca)
	logger, records := newRecordLogger()

	src, err := security.NewFileSource(certFile, keyFile, bundleFile, security.WithPollInterval(10*time.Millisecond), security.WithLogger(logger))
	if err != nil {
		t.Fatalf("NewFileSource: %v", err)
	}
	defer src.Close()
	if got, want := serial(t, src), first.Certificates[0].SerialNumber.String(); got != want {
		t.Errorf("serial = %s, want %s", got, want)
	}
	b, err := src.GetX509BundleForTrustDomain(tdA)
	if err != nil || !b.Equal(ca.Bundle()) {
		t.Errorf("GetX509BundleForTrustDomain(%s) = %v, %v; want the CA's bundle", tdA, b, err)
	}
	if _, err := src.GetX509BundleForTrustDomain(tdB); err == nil {
		t.Errorf("GetX509BundleForTrustDomain(%s) = nil error, want error", tdB)
	}

	// Rotation on disk is picked up.
	second := issue(t, ca, clientA)
	writeSVIDFiles(t, dir, second, ca)
	waitSerial(t, src, second)
	time.Sleep(50 * time.Millisecond) // let the watcher settle on the final files
	drain(records)

	// A bad file is logged and the last good SVID kept.
	writeAtomic(t, certFile, []byte("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n"))
	msg := waitRecord(t, records, "keeping the last good SVID")
	if !strings.Contains(msg, certFile) {
		t.Errorf("log record %q does not name %s", msg, certFile)
	}
	if got, want := serial(t, src), second.Certificates[0].SerialNumber.String(); got != want {
		t.Errorf("serial after a bad file = %s, want the last good %s", got, want)
	}

	// Fixing the file recovers.
	third := issue(t, ca, clientA)
	writeSVIDFiles(t, dir, third, ca)
	waitSerial(t, src, third)

	for i := 0; i < 2; i++ {
		if err := src.Close(); err != nil {
			t.Errorf("Close #%d: %v", i+1, err)
		}
	}
	if _, err := src.GetX509SVID(); err == nil {
		t.Error("GetX509SVID after Close = nil error, want error")
	}
}

func TestNewFileSourceErrors(t *testing.T) {
	ca := newCA(t, tdA)
	dir := t.TempDir()
	certFile, keyFile, bundleFile := writeSVIDFiles(t, dir, issue(t, ca, clientA), ca)
	empty := filepath.Join(dir, "empty.pem")
	writeAtomic(t, empty, nil)
	tests := []struct {
		name              string
		cert, key, bundle string
		wantSubstr        string
	}{
		{"missing cert", filepath.Join(dir, "nope.pem"), keyFile, bundleFile, "loading SVID"},
		{"key mismatch", certFile, writeOtherKey(t, dir, ca), bundleFile, "loading SVID"},
		{"missing bundle", certFile, keyFile, filepath.Join(dir, "nope.pem"), "loading bundle"},
		{"empty bundle", certFile, keyFile, empty, "holds no certificates"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, err := security.NewFileSource(tt.cert, tt.key, tt.bundle)
			if err == nil {
				src.Close()
				t.Fatal("NewFileSource = nil error, want error")
			}
			if !strings.HasPrefix(err.Error(), "security: ") || !strings.Contains(err.Error(), tt.wantSubstr) {
				t.Errorf("error = %q, want prefix %q and %q", err, "security: ", tt.wantSubstr)
			}
		})
	}
}

func writeOtherKey(t *testing.T, dir string, ca *spiffetest.CA) string {
	t.Helper()
	_, keyPEM, err := issue(t, ca, clientA).Marshal()
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	name := filepath.Join(dir, "other_key.pem")
	writeAtomic(t, name, keyPEM)
	return name
}

func TestStaticSource(t *testing.T) {
	caA, caB := newCA(t, tdA), newCA(t, tdB)
	svid := issue(t, caA, clientA)
	src := security.NewStaticSource(svid, caA.Bundle())
	if got, err := src.GetX509SVID(); err != nil || got != svid {
		t.Errorf("GetX509SVID = %v, %v; want the SVID", got, err)
	}
	if _, err := src.GetX509BundleForTrustDomain(tdB); err == nil {
		t.Errorf("bundle for %s before SetBundles = nil error, want error", tdB)
	}
	src.SetBundles(caB.Bundle())
	if _, err := src.GetX509BundleForTrustDomain(tdB); err != nil {
		t.Errorf("bundle for %s after SetBundles: %v", tdB, err)
	}
	if _, err := src.GetX509BundleForTrustDomain(tdA); err == nil {
		t.Errorf("bundle for %s after SetBundles without it = nil error, want error", tdA)
	}
	next := issue(t, caA, clientA)
	src.SetX509SVID(next)
	if got, _ := src.GetX509SVID(); got != next {
		t.Error("GetX509SVID did not return the SVID set last")
	}
	for i := 0; i < 2; i++ {
		if err := src.Close(); err != nil {
			t.Errorf("Close #%d: %v", i+1, err)
		}
	}
	if _, err := src.GetX509SVID(); err == nil {
		t.Error("GetX509SVID after Close = nil error, want error")
	}
	if _, err := security.NewStaticSource(nil).GetX509SVID(); err == nil {
		t.Error("GetX509SVID on a source without SVID = nil error, want error")
	}
}

func TestWorkloadAPISource(t *testing.T) {
	ca := newCA(t, tdA)
	api, err := spiffetest.StartWorkloadAPI(ca, clientA)
	if err != nil {
		t.Fatalf("StartWorkloadAPI: %v", err)
	}
	defer api.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src, err := security.NewWorkloadAPISource(ctx, api.Addr())
	if err != nil {
		t.Fatalf("NewWorkloadAPISource: %v", err)
	}
	if got, want := serial(t, src), api.X509SVID().Certificates[0].SerialNumber.String(); got != want {
		t.Errorf("serial = %s, want %s", got, want)
	}
	rotated, err := api.Rotate()
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	want := rotated.Certificates[0].SerialNumber.String()
	for i := 0; i < 10 && serial(t, src) != want; i++ {
		if err := src.WaitUntilUpdated(ctx); err != nil {
			t.Fatalf("WaitUntilUpdated: %v", err)
		}
	}
	if got := serial(t, src); got != want {
		t.Errorf("serial after Rotate = %s, want %s", got, want)
	}
	if _, err := src.GetX509BundleForTrustDomain(tdA); err != nil {
		t.Errorf("GetX509BundleForTrustDomain: %v", err)
	}
	for i := 0; i < 2; i++ {
		if err := src.Close(); err != nil {
			t.Errorf("Close #%d: %v", i+1, err)
		}
	}
	if _, err := src.GetX509SVID(); err == nil || !strings.HasPrefix(err.Error(), "security: ") {
		t.Errorf("GetX509SVID after Close = %v, want a security: error", err)
	}

	short, scancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer scancel()
	if _, err := security.NewWorkloadAPISource(short, "unix://"+filepath.Join(t.TempDir(), "missing.sock")); err == nil || !strings.HasPrefix(err.Error(), "security: ") {
		t.Errorf("NewWorkloadAPISource(missing socket) = %v, want a security: error", err)
	}
}

// istio-agent writes key.pem as SEC 1 ("EC PRIVATE KEY") by default.
func TestFileSourceReadsSEC1Keys(t *testing.T) {
	ca := newCA(t, tdA)
	dir := t.TempDir()
	svid := issue(t, ca, clientA)
	certFile, keyFile, bundleFile := writeSVIDFiles(t, dir, svid, ca)
	der, err := x509.MarshalECPrivateKey(svid.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	writeAtomic(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	src, err := security.NewFileSource(certFile, keyFile, bundleFile)
	if err != nil {
		t.Fatalf("NewFileSource with a SEC 1 key: %v", err)
	}
	defer src.Close()
	got, err := src.GetX509SVID()
	if err != nil || got.ID != svid.ID {
		t.Errorf("GetX509SVID = %v, %v; want %s", got, err, svid.ID)
	}
}
