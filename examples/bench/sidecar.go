package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The sidecar section puts a real proxy pair where a sidecar mesh puts
// one: the client's request goes in the clear to a client-side proxy on
// loopback, which opens mutual TLS to a server-side proxy, which forwards
// in the clear to the same net/http server the plain rows call. HAProxy,
// from Debian's package, plays both proxies; each runs as its own process
// with two threads, as Istio runs its sidecars with two worker threads.
// The proxies' CPU time is read from /proc and added to the process's own,
// so CPU per request covers everything on the request's path.

// haproxyThreads is each proxy's nbthread.
const haproxyThreads = 2

// sidecarPair is a running client-side and server-side proxy.
type sidecarPair struct {
	version string
	front   string // the client-side proxy's address, where the app sends
	procs   []*os.Process
}

// cpu is the user+system CPU time the two proxies have used so far.
func (p *sidecarPair) cpu() time.Duration {
	var sum time.Duration
	for _, pr := range p.procs {
		sum += procCPU(pr.Pid)
	}
	return sum
}

// clockTick is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on every
// Linux architecture Go supports.
const clockTick = 100

// procCPU reads the user and system time of a process from
// /proc/<pid>/stat (fields 14 and 15); 0 when it cannot.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// count fields after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(ut+st) * time.Second / clockTick
}

// findHAProxy returns the haproxy binary: on the PATH or in /usr/sbin,
// else, when install is set and the process may, installed from Debian's
// package with apt-get. It says on out what it does.
func findHAProxy(install bool, out io.Writer) (string, error) {
	look := func() (string, error) {
		if p, err := exec.LookPath("haproxy"); err == nil {
			return p, nil
		}
		if _, err := os.Stat("/usr/sbin/haproxy"); err == nil {
			return "/usr/sbin/haproxy", nil
		}
		return "", errors.New("haproxy is not on the PATH nor in /usr/sbin")
	}
	p, err := look()
	if err == nil || !install {
		return p, err
	}
	apt, aerr := exec.LookPath("apt-get")
	switch {
	case aerr != nil:
		return "", fmt.Errorf("%w, and there is no apt-get to install it with (install HAProxy 2.x and run again)", err)
	case os.Geteuid() != 0:
		return "", fmt.Errorf("%w, and installing it needs root: sudo apt-get install haproxy", err)
	}
	fmt.Fprintln(out, "Installing HAProxy for the sidecar rows: apt-get install -y haproxy")
	var last error
	// The first install may fail on a stale package index; an update and a
	// second try fix that.
	for _, args := range [][]string{{"install", "-y", "--no-install-recommends", "haproxy"}, {"update"}, {"install", "-y", "--no-install-recommends", "haproxy"}} {
		cmd := exec.Command(apt, args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if msg, err := cmd.CombinedOutput(); err != nil {
			last = fmt.Errorf("apt-get %s: %w: %s", strings.Join(args, " "), err, lastLine(msg))
		}
		if p, err := look(); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w; installing it failed: %v", err, last)
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// haproxyVersion is the first line of `haproxy -v`.
func haproxyVersion(bin string) string {
	b, err := exec.Command(bin, "-v").Output()
	if err != nil {
		return "HAProxy (version unknown)"
	}
	line, _, _ := strings.Cut(string(b), "\n")
	if v, _, ok := strings.Cut(line, " - "); ok {
		line = v
	}
	return strings.TrimSpace(line)
}

// startSidecars writes a CA and a certificate for each proxy into dir, and
// starts the pair in front of backend (host:port of a plain HTTP server).
func (e *env) startSidecars(ctx context.Context, bin, backend string) (*sidecarPair, error) {
	dir := filepath.Join(e.dir, "sidecars")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := writeSidecarPKI(dir); err != nil {
		return nil, fmt.Errorf("sidecar certificates: %w", err)
	}
	frontPort, err := freePort()
	if err != nil {
		return nil, err
	}
	serverPort, err := freePort()
	if err != nil {
		return nil, err
	}
	common := fmt.Sprintf(`global
  nbthread %d
  maxconn 4096
  log stderr format raw local0 err
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  timeout http-keep-alive 30s
`, haproxyThreads)
	client := common + fmt.Sprintf(`frontend app
  bind 127.0.0.1:%d
  default_backend mesh
backend mesh
  server peer 127.0.0.1:%d ssl crt %s ca-file %s verify required sni str(server.bench.example) alpn http/1.1
`, frontPort, serverPort, filepath.Join(dir, "client.pem"), filepath.Join(dir, "ca.pem"))
	server := common + fmt.Sprintf(`frontend mesh
  bind 127.0.0.1:%d ssl crt %s ca-file %s verify required alpn http/1.1
  default_backend app
backend app
  server app %s
`, serverPort, filepath.Join(dir, "server.pem"), filepath.Join(dir, "ca.pem"), backend)

	p := &sidecarPair{version: haproxyVersion(bin), front: "127.0.0.1:" + strconv.Itoa(frontPort)}
	for _, c := range []struct{ name, cfg string }{{"server-side", server}, {"client-side", client}} {
		path := filepath.Join(dir, c.name+".cfg")
		if err := os.WriteFile(path, []byte(c.cfg), 0o600); err != nil {
			return nil, err
		}
		if msg, err := exec.Command(bin, "-c", "-q", "-f", path).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("haproxy -c -f %s: %v: %s", path, err, strings.TrimSpace(string(msg)))
		}
		// -db: stay in the foreground, so the process is ours to stop and
		// its CPU time is this pid's.
		cmd := exec.Command(bin, "-db", "-f", path)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("starting the %s proxy: %w", c.name, err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		e.defer_(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
				<-done
			}
		})
		p.procs = append(p.procs, cmd.Process)
		port := serverPort
		if c.name == "client-side" {
			port = frontPort
		}
		if err := waitListening(ctx, "127.0.0.1:"+strconv.Itoa(port), done); err != nil {
			return nil, fmt.Errorf("the %s proxy: %w: %s", c.name, err, strings.TrimSpace(stderr.String()))
		}
	}
	return p, nil
}

// waitListening waits until addr accepts connections, the process ends
// (exited is closed) or 10 s pass.
func waitListening(ctx context.Context, addr string, exited <-chan struct{}) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return errors.New("exited before listening")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening on %s after 10 s", addr)
		}
	}
}

// freePort asks the kernel for a free loopback port. Another process could
// take it before the proxy binds it; the proxy then fails to start and the
// run says so.
func freePort() (int, error) {
	ln, err := listen()
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// writeSidecarPKI writes ca.pem and, for each proxy, a PEM file holding
// its certificate and key (HAProxy's crt format). The certificates carry
// SPIFFE IDs as a mesh's would; HAProxy verifies the chain.
func writeSidecarPKI(dir string) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench sidecar CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, IsCA: true, BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		return err
	}
	for i, leaf := range []struct{ file, id string }{{"client.pem", clientID.String()}, {"server.pem", serverID.String()}} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		u, err := url.Parse(leaf.id)
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: leaf.file},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
			URIs:        []*url.URL{u}, DNSNames: []string{"server.bench.example"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return err
		}
		var b bytes.Buffer
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: der})
		pem.Encode(&b, &pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
		if err := os.WriteFile(filepath.Join(dir, leaf.file), b.Bytes(), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// sidecarRows are the variants of the sidecar comparison, plain first.
type sidecarResult struct {
	name   string
	closed closedResult
	open   openResult
}

// sidecarReport is what the sidecar section measured.
type sidecarReport struct {
	proxy   string // HAProxy's version, or why there are no rows
	skipped bool
	rate    float64
	rows    []sidecarResult
}

// measureSidecar compares plain net/http, the HAProxy pair, Weft in the
// clear and Weft with SPIFFE mTLS: closed loop (1 caller, 1 KiB) and open
// loop at rate, every variant interleaved with the others.
func measureSidecar(ctx context.Context, o options, e *env, s *stacks, out io.Writer) (*sidecarReport, error) {
	bin, err := findHAProxy(!o.short, out)
	if err != nil {
		fmt.Fprintf(out, "Sidecar rows skipped: %v.\n\n", err)
		return &sidecarReport{proxy: err.Error(), skipped: true}, nil
	}
	backend, err := e.plainHTTPServer(nil)
	if err != nil {
		return nil, err
	}
	pair, err := e.startSidecars(ctx, bin, backend)
	if err != nil {
		return nil, err
	}
	viaPair := httpCaller(e.plainHTTPClient("h1", nil), "http://"+pair.front)
	vs := []variant{
		{name: "plain net/http", call: s.plainHTTP["h1"]},
		{name: "HAProxy pair (mTLS between)", call: viaPair, extCPU: pair.cpu},
		{name: "Weft, cleartext", call: s.weftHTTP["h1"]},
		{name: "Weft, SPIFFE mTLS", call: s.weftHTTP["tls1"]},
	}
	for _, v := range vs {
		if err := v.call(ctx, 1024); err != nil {
			return nil, fmt.Errorf("%s: first request: %w", v.name, err)
		}
	}
	rep := &sidecarReport{proxy: pair.version, rate: o.sidecarRate}
	closed, err := interleave(ctx, vs, 1024, 1, o.perVariant*2, o.slice)
	if err != nil {
		return nil, err
	}
	open, err := openRotating(ctx, vs, 1024, o.sidecarRate, o.sidecarTime)
	if err != nil {
		return nil, err
	}
	for i, v := range vs {
		rep.rows = append(rep.rows, sidecarResult{name: v.name, closed: closed[i], open: open[i]})
	}
	return rep, nil
}

// openRotating runs every variant open loop at rate for perVariant in all,
// in ten turns, the order reversed every other turn, so that a drift of
// the machine's load, and its stalls, are shared.
func openRotating(ctx context.Context, vs []variant, size int, rate float64, perVariant time.Duration) ([]openResult, error) {
	const turns = 10
	out := make([]openResult, len(vs))
	lat := make([][]time.Duration, len(vs))
	for t := range turns {
		for k := range vs {
			i := k
			if t%2 == 1 {
				i = len(vs) - 1 - k
			}
			c0, x0 := cpuTime(), vs[i].ext()
			runs := runOpen(ctx, vs[i].call, size, rate, perVariant/turns)
			out[i].cpu += cpuTime() - c0 + vs[i].ext() - x0
			out[i].requests += len(runs.Latencies)
			out[i].errors += runs.Errors
			out[i].lag = max(out[i].lag, runs.Lag)
			lat[i] = append(lat[i], runs.Latencies...)
			if err := ctx.Err(); err != nil {
				return out, err
			}
		}
	}
	for i := range out {
		sortDurations(lat[i])
		out[i].run.Latencies, out[i].run.Errors, out[i].run.Lag = lat[i], out[i].errors, out[i].lag
	}
	return out, nil
}

func printSidecar(out io.Writer, o options, rep *sidecarReport) {
	if rep == nil || rep.skipped {
		return
	}
	fmt.Fprintf(out, "### Against a sidecar pair (%s, %d threads each; interleaved)\n\n", rep.proxy, haproxyThreads)
	fmt.Fprintln(out, "The same net/http server behind each path. HAProxy pair: the client sends in the clear to a client-side proxy, which holds mutual TLS (ECDSA P-256, chain verified) to a server-side proxy in front of the server. CPU per request counts the process (client and server) and both proxies' processes. Closed loop: 1 caller, 1 KiB, HTTP/1.1 from the application. Open loop: latency from each request's release.")
	fmt.Fprintln(out)
	fmt.Fprintf(out, "| path | closed-loop µs | added µs | CPU µs/request | added CPU µs | open loop %.0f/s p50 µs | p90 µs | p99 µs | added p50 µs | added p90 µs | added p99 µs | errors |\n", rep.rate)
	fmt.Fprintln(out, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	base := rep.rows[0]
	q := func(r sidecarResult, x float64) time.Duration { return r.open.run.Quantile(x) }
	for _, r := range rep.rows {
		fmt.Fprintf(out, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n", r.name,
			us(r.closed.mean()), us(r.closed.mean()-base.closed.mean()),
			us(r.open.cpuPerRequest()), us(r.open.cpuPerRequest()-base.open.cpuPerRequest()),
			us(q(r, .5)), us(q(r, .9)), us(q(r, .99)),
			us(q(r, .5)-q(base, .5)), us(q(r, .9)-q(base, .9)), us(q(r, .99)-q(base, .99)), r.open.errors)
	}
	if len(rep.rows) == 4 {
		side := rep.rows[1]
		added := func(r sidecarResult, x float64) time.Duration { return q(r, x) - q(base, x) }
		fmt.Fprintln(out)
		for _, w := range rep.rows[2:] {
			fmt.Fprintf(out, "%s adds %s of the pair's added p50, %s of its p99 and %s of its added CPU per request.\n", w.name,
				fraction(added(w, .5), added(side, .5)), fraction(added(w, .99), added(side, .99)),
				fraction(w.open.cpuPerRequest()-base.open.cpuPerRequest(), side.open.cpuPerRequest()-base.open.cpuPerRequest()))
		}
	}
	fmt.Fprintln(out)
}

// fraction writes a/b as "1/N" (or "none" when a is not above zero).
func fraction(a, b time.Duration) string {
	switch {
	case a <= 0:
		return "none"
	case b <= 0:
		return "n/a"
	}
	return fmt.Sprintf("1/%.0f", float64(b)/float64(a))
}
