package security_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/security"
)

// Connections that connect and send nothing, more of them than the
// listener inspects at once, must not stall a caller that speaks: it is
// served well before the 10s peek timeout that frees the silent ones.
func TestPermissiveListenerSilentConnectionsDoNotStall(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 1,100 connections")
	}
	ln := listen(t)
	pl := security.PermissiveListener(ln, &tls.Config{}, security.WithPeekTimeout(10*time.Second))
	serveHTTP(t, pl, idHandler)
	addr := ln.Addr().String()

	const silent = 1100
	conns := make([]net.Conn, 0, silent)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	d := net.Dialer{Timeout: 5 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for len(conns) < silent && time.Now().Before(deadline) {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dialing silent connection %d: %v", len(conns)+1, err)
		}
		conns = append(conns, c)
	}
	if len(conns) < silent {
		t.Fatalf("opened %d silent connections in 30s, want %d", len(conns), silent)
	}

	c := httpClient(t, nil, false)
	c.Timeout = 3 * time.Second
	start := time.Now()
	code, body, err := get(c, "http://"+addr+"/")
	took := time.Since(start)
	if err != nil {
		t.Fatalf("GET behind %d silent connections: %v after %v; want an answer within 3s", silent, err, took)
	}
	if code != http.StatusOK || body != "plaintext" {
		t.Errorf("GET = %d %q, want 200 plaintext", code, body)
	}
	t.Logf("served in %v behind %d silent connections", took, silent)
}

// flakyListener fails its first Accept with EMFILE, as a process out of
// file descriptors sees it, then accepts from the real listener.
type flakyListener struct {
	net.Listener
	once sync.Once
}

func (l *flakyListener) Accept() (net.Conn, error) {
	var failed bool
	l.once.Do(func() { failed = true })
	if failed {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// A temporary Accept error (EMFILE) must not end the permissive listener:
// it retries, and the next connection is served.
func TestPermissiveListenerRecoversFromEMFILE(t *testing.T) {
	ln := listen(t)
	pl := security.PermissiveListener(&flakyListener{Listener: ln}, &tls.Config{})
	defer pl.Close()
	addr := ln.Addr().String()

	client, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := client.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	type accepted struct {
		c   net.Conn
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		c, err := pl.Accept()
		ch <- accepted{c, err}
	}()
	select {
	case a := <-ch:
		if a.err != nil {
			t.Fatalf("Accept after one EMFILE = %v, want the next connection", a.err)
		}
		a.c.Close()
	case <-time.After(10 * time.Second):
		pl.Close()
		<-ch
		t.Fatal("Accept after one EMFILE returned nothing in 10s, want the next connection")
	}
}

// A plaintext connection through the permissive listener keeps
// *net.TCPConn's CloseWrite, so a server that answers and hangs up (here a
// 431 for oversized headers) ends the connection with a FIN the client
// reads as EOF, not a reset that can eat the answer.
func TestPermissiveListenerPlaintextClosesCleanly(t *testing.T) {
	ln := listen(t)
	pl := security.PermissiveListener(ln, &tls.Config{})
	srv := &http.Server{Handler: idHandler, MaxHeaderBytes: 1 << 10, ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: log.New(io.Discard, "", 0)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(pl)
	}()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}()
	addr := ln.Addr().String()

	t.Run("wrapper keeps CloseWrite", func(t *testing.T) {
		// The server above holds its connections; inspect one from a
		// listener of the test's own.
		ln2 := listen(t)
		pl2 := security.PermissiveListener(ln2, &tls.Config{})
		defer pl2.Close()
		c2, err := net.DialTimeout("tcp", ln2.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c2.Close()
		c2.Write([]byte("G"))
		sc, err := pl2.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer sc.Close()
		if _, ok := sc.(interface{ CloseWrite() error }); !ok {
			t.Errorf("plaintext connection %T has no CloseWrite, want *net.TCPConn's passed on", sc)
		}
		if _, ok := sc.(interface{ ConnectionState() tls.ConnectionState }); ok {
			t.Errorf("plaintext connection %T has ConnectionState, which makes net/http take it for TLS", sc)
		}
	})

	t.Run("431 ends with EOF", func(t *testing.T) {
		for i := range 5 {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			// Far more header than the server reads, so some stays
			// unread in its socket when it hangs up.
			req := "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 256<<10) + "\r\n\r\n"
			if _, err := io.WriteString(c, req); err != nil {
				c.Close()
				t.Fatalf("attempt %d: write: %v", i+1, err)
			}
			got, err := io.ReadAll(bufio.NewReader(c))
			c.Close()
			if !strings.HasPrefix(string(got), "HTTP/1.1 431") {
				t.Fatalf("attempt %d: answer %q, %v; want a 431", i+1, firstLine(got), err)
			}
			if err != nil {
				t.Fatalf("attempt %d: after the 431, read error %v; want a clean EOF", i+1, err)
			}
		}
	})
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\r\n")
	return s
}
