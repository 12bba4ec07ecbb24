// Command svid issues development SPIFFE identities as PEM files, the files
// that WEFT_SVID_CERT_FILE, WEFT_SVID_KEY_FILE and WEFT_BUNDLE_FILE name, so
// that services can talk mTLS on a laptop or a plain VM without Kubernetes,
// istiod or SPIRE:
//
//	go run ./examples/svid -ca /tmp/weft-ca -out /tmp/orders   -id spiffe://example.org/ns/default/sa/orders
//	go run ./examples/svid -ca /tmp/weft-ca -out /tmp/frontend -id spiffe://example.org/ns/default/sa/frontend
//
// Each run writes svid.pem (the certificate chain, leaf first), svid.key
// (its PKCS#8 key) and bundle.pem (the trust domain's root) into -out and
// prints the three export lines for them. With -ca the certificate
// authority is kept in that directory (ca.pem, ca.key) and reused, so every
// service issued from it shares one trust domain; without -ca each run
// makes a new CA, trusted only by that one service.
//
// The CA is security/spiffetest's: an ECDSA P-256 root valid for 24 hours.
// It is for development only. In production, point SPIFFE_ENDPOINT_SOCKET
// at a SPIRE agent (or run spiffe-helper to write these same files).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/security/spiffetest"
)

// The file names written into -out and -ca.
const (
	certFile   = "svid.pem"
	keyFile    = "svid.key"
	bundleFile = "bundle.pem"
	caCertFile = "ca.pem"
	caKeyFile  = "ca.key"
)

type config struct {
	out   string
	id    string
	ttl   time.Duration
	caDir string
}

func main() {
	c, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err == nil {
		err = run(c, os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("svid", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.out, "out", "", "directory to write svid.pem, svid.key and bundle.pem into (created if missing)")
	fs.StringVar(&c.id, "id", "", "the SPIFFE ID to issue, e.g. spiffe://example.org/ns/default/sa/orders")
	fs.DurationVar(&c.ttl, "ttl", 12*time.Hour, "lifetime of the SVID (at most until the CA expires, 24h after it was made)")
	fs.StringVar(&c.caDir, "ca", "", "directory holding the CA (ca.pem, ca.key); created and kept when missing, so several services share one trust domain")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	switch {
	case fs.NArg() > 0:
		return config{}, fmt.Errorf("svid: unexpected argument %q", fs.Arg(0))
	case c.out == "":
		return config{}, errors.New("svid: -out is required")
	case c.id == "":
		return config{}, errors.New("svid: -id is required")
	case c.ttl <= 0:
		return config{}, fmt.Errorf("svid: -ttl %s: must be positive", c.ttl)
	}
	return c, nil
}

// run issues the SVID c describes and prints the export lines to out.
func run(c config, out io.Writer) error {
	id, err := spiffeid.FromString(c.id)
	if err != nil {
		return fmt.Errorf("svid: -id %q: %w", c.id, err)
	}
	if id.Path() == "" {
		return fmt.Errorf("svid: -id %q: a workload's ID needs a path, e.g. %s/ns/default/sa/orders", c.id, id)
	}
	ca, err := loadOrCreateCA(c.caDir, id.TrustDomain())
	if err != nil {
		return err
	}
	ttl := c.ttl
	note := ""
	if until := time.Until(ca.Root().NotAfter); ttl > until {
		// A certificate outliving its root fails verification at the
		// root's expiry anyway; say so rather than pretend.
		ttl = until
		note = fmt.Sprintf("# the SVID expires with the CA at %s\n", ca.Root().NotAfter.UTC().Format(time.RFC3339))
	}
	svid, err := ca.IssueX509SVID(id, ttl)
	if err != nil {
		return fmt.Errorf("svid: issuing %s: %w", id, err)
	}
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		return fmt.Errorf("svid: encoding %s: %w", id, err)
	}
	bundlePEM, err := ca.Bundle().Marshal()
	if err != nil {
		return fmt.Errorf("svid: encoding the bundle of %s: %w", id.TrustDomain(), err)
	}
	dir, err := filepath.Abs(c.out)
	if err != nil {
		return fmt.Errorf("svid: -out %q: %w", c.out, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("svid: -out: %w", err)
	}
	// The chain last: a running mesh polling these files may read them
	// between two writes; it refuses a key and chain that do not match,
	// keeping its last good SVID, and reloads again when the chain lands.
	for _, f := range []struct {
		name string
		data []byte
		perm os.FileMode
	}{{keyFile, keyPEM, 0o600}, {bundleFile, bundlePEM, 0o644}, {certFile, certPEM, 0o644}} {
		if err := writeFile(filepath.Join(dir, f.name), f.data, f.perm); err != nil {
			return err
		}
	}
	fmt.Fprint(out, note)
	fmt.Fprintf(out, "export WEFT_SVID_CERT_FILE=%s\n", shellQuote(filepath.Join(dir, certFile)))
	fmt.Fprintf(out, "export WEFT_SVID_KEY_FILE=%s\n", shellQuote(filepath.Join(dir, keyFile)))
	fmt.Fprintf(out, "export WEFT_BUNDLE_FILE=%s\n", shellQuote(filepath.Join(dir, bundleFile)))
	return nil
}

// loadOrCreateCA returns the CA kept in dir, creating and keeping one for
// td when dir holds none; with dir empty it returns a new CA kept nowhere.
func loadOrCreateCA(dir string, td spiffeid.TrustDomain) (*spiffetest.CA, error) {
	if dir == "" {
		ca, err := spiffetest.NewCA(td)
		if err != nil {
			return nil, fmt.Errorf("svid: %w", err)
		}
		return ca, nil
	}
	certPath, keyPath := filepath.Join(dir, caCertFile), filepath.Join(dir, caKeyFile)
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	switch {
	case errors.Is(certErr, os.ErrNotExist) && errors.Is(keyErr, os.ErrNotExist):
		ca, err := spiffetest.NewCA(td)
		if err != nil {
			return nil, fmt.Errorf("svid: %w", err)
		}
		certPEM, keyPEM, err := ca.MarshalPEM()
		if err != nil {
			return nil, fmt.Errorf("svid: %w", err)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("svid: -ca: %w", err)
		}
		if err := writeFile(keyPath, keyPEM, 0o600); err != nil {
			return nil, err
		}
		if err := writeFile(certPath, certPEM, 0o644); err != nil {
			return nil, err
		}
		return ca, nil
	case certErr != nil:
		return nil, fmt.Errorf("svid: -ca: %w", certErr)
	case keyErr != nil:
		return nil, fmt.Errorf("svid: -ca: %w", keyErr)
	}
	ca, err := spiffetest.CAFromPEM(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("svid: -ca %s: %w (remove %s and %s to start a new CA, then issue every service's SVID again)", dir, err, caCertFile, caKeyFile)
	}
	if ca.TrustDomain() != td {
		return nil, fmt.Errorf("svid: -ca %s is the CA of trust domain %q, not of %q", dir, ca.TrustDomain(), td)
	}
	return ca, nil
}

// writeFile replaces path's content at once (a temporary file renamed over
// it), so that a mesh watching the file never reads half of it.
func writeFile(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("svid: %w", err)
	}
	_, werr := tmp.Write(data)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr, os.Chmod(tmp.Name(), perm)); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("svid: writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("svid: %w", err)
	}
	return nil
}

// shellQuote returns s as one word for a POSIX shell.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+:@%=,", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
