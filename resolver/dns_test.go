package resolver_test

import (
	"context"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/weftmesh/weft/resolver"
)

// dnsServer is a real DNS server on a loopback UDP socket, answering A,
// AAAA and SRV queries from a table the test changes.
type dnsServer struct {
	conn    net.PacketConn
	mu      sync.Mutex
	a       map[string][]netip.Addr
	srv     map[string][]net.SRV
	queries atomic.Int64
	done    chan struct{}
}

func startDNS(t *testing.T) *dnsServer {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &dnsServer{conn: conn, a: map[string][]netip.Addr{}, srv: map[string][]net.SRV{}, done: make(chan struct{})}
	go s.serve()
	t.Cleanup(func() { conn.Close(); <-s.done })
	return s
}

func (s *dnsServer) setA(name string, addrs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.a[name] = nil
	for _, a := range addrs {
		s.a[name] = append(s.a[name], netip.MustParseAddr(a))
	}
}

func (s *dnsServer) setSRV(name string, recs ...net.SRV) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.srv[name] = recs
}

// resolver returns a net.Resolver that asks only this server.
func (s *dnsServer) resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", s.conn.LocalAddr().String())
	}}
}

func (s *dnsServer) serve() {
	defer close(s.done)
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		s.queries.Add(1)
		resp, _ := s.answer(h, q)
		s.conn.WriteTo(resp, from)
	}
}

func (s *dnsServer) answer(h dnsmessage.Header, q dnsmessage.Question) ([]byte, error) {
	// Match the name with or without a search suffix the stub resolver
	// may have appended.
	name := strings.TrimSuffix(q.Name.String(), ".")
	s.mu.Lock()
	defer s.mu.Unlock()
	key, known := "", false
	for k := range s.a {
		if name == k || strings.HasPrefix(name, k+".") {
			key, known = k, true
		}
	}
	for k := range s.srv {
		if name == k || strings.HasPrefix(name, k+".") {
			key, known = k, true
		}
	}
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true}
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	b.StartQuestions()
	b.Question(q)
	b.StartAnswers()
	rrh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 1}
	switch q.Type {
	case dnsmessage.TypeA:
		for _, a := range s.a[key] {
			if a.Is4() {
				b.AResource(rrh, dnsmessage.AResource{A: a.As4()})
			}
		}
	case dnsmessage.TypeAAAA:
		for _, a := range s.a[key] {
			if a.Is6() {
				b.AAAAResource(rrh, dnsmessage.AAAAResource{AAAA: a.As16()})
			}
		}
	case dnsmessage.TypeSRV:
		for _, r := range s.srv[key] {
			b.SRVResource(rrh, dnsmessage.SRVResource{Priority: r.Priority, Weight: r.Weight, Port: r.Port,
				Target: dnsmessage.MustNewName(r.Target)})
		}
	}
	return b.Finish()
}

// next waits for the next state, failing the test after a few seconds.
func next(t *testing.T, r *recorder) resolver.State {
	t.Helper()
	select {
	case st := <-r.states:
		return st
	case <-time.After(5 * time.Second):
		t.Fatal("no discovery update within 5s")
		return resolver.State{}
	}
}

func TestDNSResolvesAAndAAAA(t *testing.T) {
	srv := startDNS(t)
	srv.setA("orders.test", "10.0.0.2", "10.0.0.1", "2001:db8::1")
	d := resolver.NewDNS(resolver.WithNetResolver(srv.resolver()))
	defer d.Close()
	r := newRecorder()
	defer d.Watch("orders.test:8080", r)()
	st := next(t, r)
	want := []string{"10.0.0.1:8080", "10.0.0.2:8080", "[2001:db8::1]:8080"}
	if got := addrs(st); st.Err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("state = %v (err %v), want %v", got, st.Err, want)
	}
}

func TestDNSReResolvesOnInterval(t *testing.T) {
	srv := startDNS(t)
	srv.setA("orders.test", "10.0.0.1")
	d := resolver.NewDNS(resolver.WithNetResolver(srv.resolver()), resolver.WithRefreshInterval(20*time.Millisecond))
	defer d.Close()
	r := newRecorder()
	defer d.Watch("orders.test:80", r)()
	if got := addrs(next(t, r)); !reflect.DeepEqual(got, []string{"10.0.0.1:80"}) {
		t.Fatalf("first state %v", got)
	}
	srv.setA("orders.test", "10.0.0.1", "10.0.0.9")
	if got := addrs(next(t, r)); !reflect.DeepEqual(got, []string{"10.0.0.1:80", "10.0.0.9:80"}) {
		t.Errorf("after the record changed: %v", got)
	}
}

func TestDNSResolveNowIsRateLimited(t *testing.T) {
	srv := startDNS(t)
	srv.setA("orders.test", "10.0.0.1")
	d := resolver.NewDNS(resolver.WithNetResolver(srv.resolver()),
		resolver.WithRefreshInterval(time.Hour), resolver.WithMinResolveInterval(time.Hour))
	defer d.Close()
	r := newRecorder()
	defer d.Watch("orders.test:80", r)()
	next(t, r)
	before := srv.queries.Load()
	for i := 0; i < 100; i++ {
		d.ResolveNow("orders.test:80")
	}
	time.Sleep(100 * time.Millisecond)
	if got := srv.queries.Load() - before; got != 0 {
		t.Errorf("100 ResolveNow calls within the minimum interval made %d queries, want 0", got)
	}
}

func TestDNSResolveNowLooksAgain(t *testing.T) {
	srv := startDNS(t)
	srv.setA("orders.test", "10.0.0.1")
	d := resolver.NewDNS(resolver.WithNetResolver(srv.resolver()),
		resolver.WithRefreshInterval(time.Hour), resolver.WithMinResolveInterval(0))
	defer d.Close()
	r := newRecorder()
	defer d.Watch("orders.test:80", r)()
	next(t, r)
	srv.setA("orders.test", "10.0.0.7")
	d.ResolveNow("orders.test:80")
	if got := addrs(next(t, r)); !reflect.DeepEqual(got, []string{"10.0.0.7:80"}) {
		t.Errorf("after ResolveNow: %v", got)
	}
}

func TestDNSFailureKeepsLastGoodEndpoints(t *testing.T) {
	srv := startDNS(t)
	srv.setA("orders.test", "10.0.0.1")
	d := resolver.NewDNS(resolver.WithNetResolver(srv.resolver()),
		resolver.WithRefreshInterval(time.Hour), resolver.WithMinResolveInterval(0))
	defer d.Close()
	r := newRecorder()
	defer d.Watch("orders.test:80", r)()
	next(t, r)
	srv.mu.Lock()
	delete(srv.a, "orders.test")
	srv.mu.Unlock()
	d.ResolveNow("orders.test:80")
	st := next(t, r)
	if st.Err == nil {
		t.Fatal("lookup of a vanished name reported no error")
	}
	if got := addrs(st); !reflect.DeepEqual(got, []string{"10.0.0.1:80"}) {
		t.Errorf("after a failed lookup the endpoints are %v, want the last good set", got)
	}
}

func TestDNSSRV(t *testing.T) {
	srv := startDNS(t)
	srv.setA("a.test", "10.0.0.1")
	srv.setA("b.test", "10.0.0.2")
	srv.setSRV("_http._tcp.orders.test",
		net.SRV{Target: "a.test.", Port: 9000, Priority: 10, Weight: 3},
		net.SRV{Target: "b.test.", Port: 9001, Priority: 20, Weight: 1})
	d := resolver.NewDNS(resolver.WithNetResolver(srv.resolver()))
	defer d.Close()
	r := newRecorder()
	defer d.Watch("_http._tcp.orders.test", r)()
	st := next(t, r)
	want := []resolver.Endpoint{
		{Addr: "10.0.0.1:9000", Weight: 3, Priority: 0},
		{Addr: "10.0.0.2:9001", Weight: 1, Priority: 1},
	}
	if st.Err != nil || !reflect.DeepEqual(st.Endpoints, want) {
		t.Errorf("SRV state = %+v (err %v), want %+v", st.Endpoints, st.Err, want)
	}
}

func TestDNSRejectsBadNames(t *testing.T) {
	d := resolver.NewDNS()
	defer d.Close()
	r := newRecorder()
	defer d.Watch("not a name:80", r)()
	if st := next(t, r); st.Err == nil {
		t.Error("watching an invalid name reported no error")
	}
}
