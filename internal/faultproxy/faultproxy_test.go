package faultproxy_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/faultproxy"
)

// echoServer is a real TCP server on loopback that echoes every line it
// reads and counts the connections it accepted.
type echoServer struct {
	ln      net.Listener
	accepts atomic.Int64
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   []net.Conn
}

func startEcho(t *testing.T) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &echoServer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepts.Add(1)
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func newProxy(t *testing.T, target string) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes a line and reads it back within wait.
func roundTrip(c net.Conn, line string, wait time.Duration) (string, error) {
	c.SetDeadline(time.Now().Add(wait))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	return got[:len(got)-1], nil
}

func mustEcho(t *testing.T, c net.Conn, line string) {
	t.Helper()
	got, err := roundTrip(c, line, 5*time.Second)
	if err != nil || got != line {
		t.Fatalf("echo of %q = %q, %v", line, got, err)
	}
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func TestForwards(t *testing.T) {
	echo := startEcho(t)
	p := newProxy(t, echo.ln.Addr().String())
	c := dial(t, p.Addr())
	for _, line := range []string{"a", "bb", "hello world"} {
		mustEcho(t, c, line)
	}
	if p.Accepted() != 1 || echo.accepts.Load() != 1 {
		t.Errorf("proxy accepted %d, target %d; want 1 and 1", p.Accepted(), echo.accepts.Load())
	}
}

func TestLatencyIsAddedEachWay(t *testing.T) {
	echo := startEcho(t)
	p := newProxy(t, echo.ln.Addr().String())
	c := dial(t, p.Addr())
	mustEcho(t, c, "warm")
	const d = 40 * time.Millisecond
	p.SetLatency(d)
	start := time.Now()
	mustEcho(t, c, "slow")
	// A lower bound only: the proxy cannot deliver before the delay.
	if took := time.Since(start); took < 2*d {
		t.Errorf("round trip with %v added each way took %v, want at least %v", d, took, 2*d)
	}
	p.SetLatency(0)
	mustEcho(t, c, "fast again")
}

func TestResetKillsOpenAndNewConnections(t *testing.T) {
	echo := startEcho(t)
	p := newProxy(t, echo.ln.Addr().String())
	c := dial(t, p.Addr())
	mustEcho(t, c, "before")
	p.SetMode(faultproxy.Reset)
	if p.Mode() != faultproxy.Reset {
		t.Fatalf("mode = %v", p.Mode())
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !isReset(err) {
		t.Errorf("read on an open connection after Reset: %v, want a connection reset", err)
	}
	// A new connection is accepted, then reset: on loopback the reset
	// may already reach the dial.
	if c2, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second); err == nil {
		defer c2.Close()
		if _, err := roundTrip(c2, "x", 5*time.Second); !isReset(err) && !errors.Is(err, io.EOF) {
			t.Errorf("new connection under Reset: %v, want a reset", err)
		}
	} else if !isReset(err) {
		t.Errorf("dial under Reset: %v, want a reset", err)
	}
	p.SetMode(faultproxy.Forward)
	mustEcho(t, dial(t, p.Addr()), "after")
}

func TestBlackholeHoldsTrafficUntilHealed(t *testing.T) {
	echo := startEcho(t)
	p := newProxy(t, echo.ln.Addr().String())
	open := dial(t, p.Addr())
	mustEcho(t, open, "before")
	p.SetMode(faultproxy.Blackhole)

	// An open connection neither answers nor breaks.
	_, err := roundTrip(open, "held", 150*time.Millisecond)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("open connection during the partition: %v, want a timeout (no answer, no reset)", err)
	}
	// A new connection is accepted but never reaches the target.
	before := echo.accepts.Load()
	fresh := dial(t, p.Addr())
	if _, err := roundTrip(fresh, "new", 150*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("new connection during the partition: %v, want a timeout", err)
	}
	if got := echo.accepts.Load(); got != before {
		t.Errorf("the target accepted %d connections during the partition", got-before)
	}

	// Healing delivers what was held, as TCP retransmission would.
	p.SetMode(faultproxy.Forward)
	r := bufio.NewReader(open)
	open.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := r.ReadString('\n'); err != nil || got != "held\n" {
		t.Errorf("after healing, the open connection read %q, %v; want the held line", got, err)
	}
	fresh.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := bufio.NewReader(fresh).ReadString('\n'); err != nil || got != "new\n" {
		t.Errorf("after healing, the new connection read %q, %v", got, err)
	}
}

func TestStopAndRestart(t *testing.T) {
	echo := startEcho(t)
	p := newProxy(t, echo.ln.Addr().String())
	addr := p.Addr()
	c := dial(t, addr)
	mustEcho(t, c, "up")
	p.Stop()
	p.Stop() // idempotent
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !isReset(err) {
		t.Errorf("open connection after Stop: %v, want a reset", err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("a stopped proxy accepted a connection")
	}
	if err := p.Restart(); err != nil {
		t.Fatal(err)
	}
	if p.Addr() != addr {
		t.Errorf("address changed across restart: %s -> %s", addr, p.Addr())
	}
	mustEcho(t, dial(t, addr), "back")
}

func TestTargetRefusingIsPassedOn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	p := newProxy(t, dead)
	// The reset may already reach the dial on loopback.
	c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
	if err != nil {
		return
	}
	defer c.Close()
	if _, err := roundTrip(c, "x", 5*time.Second); err == nil {
		t.Error("a proxy to a dead target answered")
	}
}

// TestCloseStopsEverything runs traffic while modes flip from several
// goroutines, then closes with connections held in a partition; goleak
// (TestMain) checks nothing is left behind.
func TestCloseStopsEverything(t *testing.T) {
	echo := startEcho(t)
	p, err := faultproxy.New(echo.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.DialTimeout("tcp", p.Addr(), time.Second)
				if err != nil {
					continue
				}
				roundTrip(c, "x", 20*time.Millisecond)
				c.Close()
			}
		}()
	}
	modes := []faultproxy.Mode{faultproxy.Blackhole, faultproxy.Reset, faultproxy.Forward, faultproxy.Blackhole}
	for i := 0; i < 40; i++ {
		p.SetMode(modes[i%len(modes)])
		p.SetLatency(time.Duration(i%3) * time.Millisecond)
		time.Sleep(2 * time.Millisecond)
	}
	p.SetMode(faultproxy.Blackhole)
	held := dial(t, p.Addr())
	io.WriteString(held, "held forever\n")
	close(stop)
	wg.Wait()
	done := make(chan struct{})
	go func() { p.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return with a connection held in a partition")
	}
	p.Close() // idempotent
	if p.Open() != 0 {
		t.Errorf("%d connections open after Close", p.Open())
	}
	if err := p.Restart(); err == nil {
		t.Error("Restart after Close succeeded")
	}
}
