package security_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/security"
)

// policyDocs returns n policy documents of rules rules each.
func policyDocs(n, rules int) []byte {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "%smetadata: {name: p%d}\nspec:\n  rules:\n", policyHeader, i)
		for range rules {
			b.WriteString("  - to: [{operation: {paths: [\"/x\"]}}]\n")
		}
		b.WriteString("---\n")
	}
	return []byte(b.String())
}

// The policy file is bounded in documents and in rules: every request is
// judged against every rule.
func TestParseAuthorizationPoliciesLimits(t *testing.T) {
	tests := []struct {
		name    string
		docs    int
		rules   int
		wantErr string
	}{
		{"1,000 documents of 10 rules", 1000, 10, ""},
		{"1,001 documents", 1001, 1, "more than 1000 documents"},
		{"10,001 rules", 1, 10001, "more than 10000 rules"},
		{"rules over the limit across documents", 500, 21, "document 477 (p476): more than 10000 rules"},
	}
	t.Run("2,001 empty documents", func(t *testing.T) {
		_, err := security.ParseAuthorizationPolicies([]byte(strings.Repeat("---\n", 2001)))
		if err == nil || !strings.Contains(err.Error(), "more than 2000 YAML documents") {
			t.Fatalf("2,001 empty documents: error %v, want one saying more than 2000 YAML documents", err)
		}
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := security.ParseAuthorizationPolicies(policyDocs(tt.docs, tt.rules))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("%d documents of %d rules: %v, want them accepted", tt.docs, tt.rules, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("%d documents of %d rules: error %v, want one saying %q", tt.docs, tt.rules, err, tt.wantErr)
			}
		})
	}
}

// specialFiles returns paths that must be refused promptly: a FIFO with no
// writer, a device that never ends, and a sparse file just over size.
func specialFiles(t *testing.T, size int64) map[string]struct{ path, want string } {
	t.Helper()
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	big := filepath.Join(dir, "big")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return map[string]struct{ path, want string }{
		"fifo":      {fifo, fifo + ": a named pipe (FIFO) is not a regular file"},
		"dev zero":  {"/dev/zero", "/dev/zero: a device is not a regular file"},
		"too large": {big, fmt.Sprintf("%s: larger than the limit of %d MiB", big, size>>20)},
	}
}

// within runs f and fails the test if it has not returned in 10s.
func within(t *testing.T, what string, f func() error) error {
	t.Helper()
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("%s still blocked after 10s", what)
		return nil
	}
}

func TestWatchPolicyFileRefusesUnboundedFiles(t *testing.T) {
	for name, f := range specialFiles(t, 16<<20) {
		t.Run(name, func(t *testing.T) {
			err := within(t, "WatchPolicyFile", func() error {
				w, err := security.WatchPolicyFile(f.path)
				if err == nil {
					w.Close()
				}
				return err
			})
			if err == nil || !strings.Contains(err.Error(), f.want) {
				t.Errorf("WatchPolicyFile(%s) = %v, want an error saying %q", f.path, err, f.want)
			}
		})
	}
}

func TestFileSourceRefusesUnboundedFiles(t *testing.T) {
	ca := newCA(t, tdA)
	certFile, keyFile, bundleFile := writeSVIDFiles(t, t.TempDir(), issue(t, ca, clientA), ca)
	for name, f := range specialFiles(t, 1<<20) {
		for _, which := range []string{"cert", "key", "bundle"} {
			t.Run(which+"/"+name, func(t *testing.T) {
				c, k, b := certFile, keyFile, bundleFile
				switch which {
				case "cert":
					c = f.path
				case "key":
					k = f.path
				case "bundle":
					b = f.path
				}
				err := within(t, "NewFileSource", func() error {
					s, err := security.NewFileSource(c, k, b)
					if err == nil {
						s.Close()
					}
					return err
				})
				if err == nil || !strings.Contains(err.Error(), f.want) {
					t.Errorf("NewFileSource with the %s at %s = %v, want an error saying %q", which, f.path, err, f.want)
				}
				var pe *os.PathError
				if !errors.As(err, &pe) || pe.Path != f.path {
					t.Errorf("NewFileSource error %v does not carry the path %s", err, f.path)
				}
			})
		}
	}
}
