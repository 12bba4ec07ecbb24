package xds

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TLS channel credentials to the control plane (gRFC A65): the "tls"
// channel_creds config names PEM files in the file_watcher certificate
// provider's form. Without a config, the system roots verify the server
// and no client certificate is sent.

// defaultTLSRefresh is the file_watcher provider's default refresh_interval.
const defaultTLSRefresh = 10 * time.Minute

// maxPEMFile bounds a certificate or key file read for the channel.
const maxPEMFile = 1 << 20

// tlsFilesConfig is the "config" object of a "tls" channel_creds entry.
type tlsFilesConfig struct {
	CAFile   string          `json:"ca_certificate_file"`
	CertFile string          `json:"certificate_file"`
	KeyFile  string          `json:"private_key_file"`
	Refresh  json.RawMessage `json:"refresh_interval"`
}

// tlsFiles is a parsed tlsFilesConfig.
type tlsFiles struct {
	caFile, certFile, keyFile string
	refresh                   time.Duration
}

// parseTLSConfig reads a "tls" channel_creds config; field is where it
// sits in the bootstrap, for errors.
func parseTLSConfig(field string, raw json.RawMessage) (tlsFiles, error) {
	var jc tlsFilesConfig
	if err := json.Unmarshal(raw, &jc); err != nil {
		return tlsFiles{}, fmt.Errorf("%s: %w", field, err)
	}
	f := tlsFiles{caFile: jc.CAFile, certFile: jc.CertFile, keyFile: jc.KeyFile, refresh: defaultTLSRefresh}
	if (f.certFile == "") != (f.keyFile == "") {
		return tlsFiles{}, fmt.Errorf("%s: certificate_file and private_key_file must be set together", field)
	}
	if len(jc.Refresh) > 0 && string(jc.Refresh) != "null" {
		d := &durationpb.Duration{}
		if err := protojson.Unmarshal(jc.Refresh, d); err != nil {
			return tlsFiles{}, fmt.Errorf("%s.refresh_interval: %s is not a duration such as \"600s\": %w", field, jc.Refresh, err)
		}
		if err := d.CheckValid(); err != nil || d.AsDuration() <= 0 {
			return tlsFiles{}, fmt.Errorf("%s.refresh_interval: %s is not a positive duration", field, jc.Refresh)
		}
		f.refresh = d.AsDuration()
	}
	return f, nil
}

// tlsMaterial is one reading of the files: the roots (nil: the system's)
// and the client certificate (nil: none).
type tlsMaterial struct {
	roots *x509.CertPool
	cert  *tls.Certificate
}

// readPEM reads a PEM file named by the config field name.
func readPEM(field, name string) ([]byte, error) {
	fh, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", field, name, err)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", field, name, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s %q: not a regular file", field, name)
	}
	if st.Size() > maxPEMFile {
		return nil, fmt.Errorf("%s %q: larger than %d bytes", field, name, maxPEMFile)
	}
	b := make([]byte, st.Size())
	if _, err := fh.ReadAt(b, 0); err != nil && st.Size() > 0 {
		return nil, fmt.Errorf("%s %q: %w", field, name, err)
	}
	return b, nil
}

// load reads the files; an error names the field and file at fault.
func (f tlsFiles) load() (*tlsMaterial, error) {
	m := &tlsMaterial{}
	if f.caFile != "" {
		b, err := readPEM("ca_certificate_file", f.caFile)
		if err != nil {
			return nil, err
		}
		m.roots = x509.NewCertPool()
		if !m.roots.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("ca_certificate_file %q: no PEM certificate", f.caFile)
		}
	}
	if f.certFile != "" {
		cb, err := readPEM("certificate_file", f.certFile)
		if err != nil {
			return nil, err
		}
		kb, err := readPEM("private_key_file", f.keyFile)
		if err != nil {
			return nil, err
		}
		cert, err := tls.X509KeyPair(cb, kb)
		if err != nil {
			return nil, fmt.Errorf("certificate_file %q and private_key_file %q: %w", f.certFile, f.keyFile, err)
		}
		m.cert = &cert
	}
	return m, nil
}

// fileSource holds the latest good reading of the files, read again at
// the first handshake after each refresh interval: a rotated certificate
// is used by the next connection to the control plane, and a reading that
// fails (a rotation half written) keeps the previous one.
type fileSource struct {
	files tlsFiles
	clock clock

	mu   sync.Mutex
	cur  *tlsMaterial
	next time.Time
}

func newFileSource(files tlsFiles, cl clock) (*fileSource, error) {
	m, err := files.load()
	if err != nil {
		return nil, err
	}
	return &fileSource{files: files, clock: cl, cur: m, next: cl.Now().Add(files.refresh)}, nil
}

func (s *fileSource) material() *tlsMaterial {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now := s.clock.Now(); !now.Before(s.next) {
		if m, err := s.files.load(); err == nil {
			s.cur = m
		}
		s.next = now.Add(s.files.refresh)
	}
	return s.cur
}

// fileCreds are TLS transport credentials from a fileSource: each
// handshake uses the source's current roots and client certificate.
type fileCreds struct {
	src        *fileSource
	serverName string
}

var _ credentials.TransportCredentials = (*fileCreds)(nil)

func (c *fileCreds) config() *tls.Config {
	m := c.src.material()
	tc := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: m.roots, ServerName: c.serverName}
	if m.cert != nil {
		tc.Certificates = []tls.Certificate{*m.cert}
	}
	return tc
}

func (c *fileCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return credentials.NewTLS(c.config()).ClientHandshake(ctx, authority, raw)
}

func (c *fileCreds) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("xds: control-plane TLS credentials are for clients only")
}

func (c *fileCreds) Info() credentials.ProtocolInfo { return credentials.NewTLS(nil).Info() }

func (c *fileCreds) Clone() credentials.TransportCredentials {
	return &fileCreds{src: c.src, serverName: c.serverName}
}

func (c *fileCreds) OverrideServerName(name string) error { //nolint:staticcheck // part of the interface
	c.serverName = name
	return nil
}
