package mesh_test

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/weftmesh/weft/internal/faultproxy"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/resilience"
)

func TestChaosEndpointKilledMidRequest(t *testing.T) {
	led := newLedger()
	a, b, c := startChaosBackend(t, "a", led), startChaosBackend(t, "b", led), startChaosBackend(t, "c", led)
	for _, be := range []*chaosBackend{a, b, c} {
		be.delay.Store(int64(5 * time.Millisecond)) // requests are in flight when the kill comes
	}
	m := newMesh(t, mesh.WithEndpoints("orders", a.addr, b.addr, c.addr))
	l := &load{c: m.HTTPClient(), url: "http://orders", workers: 6, max: 4000, postEvery: 5, keyedEvery: 7}
	run := l.start(t)
	run.waitSent(t, 300)
	deadline := time.Now().Add(10 * time.Second)
	for a.inflight.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Microsecond)
	}
	caught := a.inflight.Load()
	a.kill()
	run.waitSent(t, 1500)
	run.halt()

	if caught == 0 {
		t.Error("no request was in flight on the endpoint when it was killed; the test proves nothing")
	}
	// Until outlier detection ejects the dead endpoint, a third of the
	// requests need a retry at once; the rate budget lets them through.
	run.checkNoIdempotentFailure(t)
	posts := checkNoDuplicatePOST(t, led)
	t.Logf("killed with %d requests in its handler; %d POSTs without key executed, %d failed", caught, posts, run.failedPost.Load())
	report(t, "an endpoint (1 of 3) killed with requests in flight", l, run,
		"no idempotent request failed; no POST executed twice")
}

func TestChaosPartitionToOneEndpoint(t *testing.T) {
	led := newLedger()
	a, b, c := startChaosBackend(t, "a", led), startChaosBackend(t, "b", led), startChaosBackend(t, "c", led)
	p, err := faultproxy.New(a.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	// A partition answers nothing, so only a per-try timeout can move a
	// request to another endpoint (WEFT_PER_TRY_TIMEOUT).
	m := newMesh(t, mesh.WithEndpoints("orders", p.Addr(), b.addr, c.addr),
		mesh.WithRetryPolicy(resilience.RetryPolicy{NumRetries: 2, PerTryTimeout: 500 * time.Millisecond}))
	l := &load{c: m.HTTPClient(), url: "http://orders", workers: 6, max: 4000, postEvery: 5, keyedEvery: 7}
	run := l.start(t)
	run.waitSent(t, 300)
	p.SetMode(faultproxy.Blackhole)
	run.waitSent(t, 1000)
	p.SetMode(faultproxy.Forward)
	run.waitSent(t, 300)
	run.halt()

	// Every worker whose request went to the partitioned endpoint waits
	// out the per-try timeout, so up to 6 retries start together.
	run.checkNoIdempotentFailure(t)
	posts := checkNoDuplicatePOST(t, led)
	if p.Accepted() == 0 || a.hits.Load() == 0 {
		t.Error("the partitioned endpoint never served; the test proves nothing")
	}
	t.Logf("%d POSTs without key executed, %d failed (sent into the partition)", posts, run.failedPost.Load())
	report(t, "network partition (blackhole) to 1 of 3 endpoints, then healed; per-try timeout 500 ms", l, run,
		"no idempotent request failed; no POST executed twice")
}

// dnsChaos is a DNS server on a loopback UDP socket, answering SRV and A
// queries from a table, that can turn slow or fail.
type dnsChaos struct {
	conn net.PacketConn
	wg   sync.WaitGroup

	mu             sync.Mutex
	srv            map[string][]net.SRV
	a              map[string]net.IP
	delay          time.Duration
	servfail, drop bool
	queries        int
}

func startDNSChaos(t *testing.T) *dnsChaos {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &dnsChaos{conn: conn, srv: map[string][]net.SRV{}, a: map[string]net.IP{}}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(func() { conn.Close(); s.wg.Wait() })
	return s
}

func (s *dnsChaos) set(f func(s *dnsChaos)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

// resolver is a net.Resolver that asks only this server.
func (s *dnsChaos) resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "udp", s.conn.LocalAddr().String())
		if err == nil {
			// A stub resolver that gives up on a silent server after a
			// second (resolv.conf's timeout:1), as the default 5 s would
			// only make the test longer.
			c.SetDeadline(time.Now().Add(time.Second))
		}
		return c, err
	}}
}

func (s *dnsChaos) serve() {
	defer s.wg.Done()
	for {
		buf := make([]byte, 1500)
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		s.mu.Lock()
		s.queries++
		delay, drop := s.delay, s.drop
		s.mu.Unlock()
		if drop {
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if delay > 0 {
				time.Sleep(delay)
			}
			if resp, ok := s.answer(buf[:n]); ok {
				s.conn.WriteTo(resp, from)
			}
		}()
	}
}

func (s *dnsChaos) answer(query []byte) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, false
	}
	q, err := p.Question()
	if err != nil {
		return nil, false
	}
	// Match the name with or without a search suffix the stub resolver
	// may have appended.
	name := strings.TrimSuffix(q.Name.String(), ".")
	match := func(k string) bool { return name == k || strings.HasPrefix(name, k+".") }
	s.mu.Lock()
	defer s.mu.Unlock()
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true}
	var srvs []net.SRV
	var ip net.IP
	known := false
	for k, v := range s.srv {
		if match(k) {
			srvs, known = v, true
		}
	}
	for k, v := range s.a {
		if match(k) {
			ip, known = v, true
		}
	}
	switch {
	case s.servfail:
		rh.RCode = dnsmessage.RCodeServerFailure
	case !known:
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.StartQuestions()
	b.Question(q)
	b.StartAnswers()
	rrh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 1}
	if rh.RCode == dnsmessage.RCodeSuccess {
		switch q.Type {
		case dnsmessage.TypeSRV:
			for _, r := range srvs {
				b.SRVResource(rrh, dnsmessage.SRVResource{Priority: r.Priority, Weight: r.Weight, Port: r.Port,
					Target: dnsmessage.MustNewName(r.Target)})
			}
		case dnsmessage.TypeA:
			if ip4 := ip.To4(); ip4 != nil {
				b.AResource(rrh, dnsmessage.AResource{A: [4]byte(ip4)})
			}
		}
	}
	out, err := b.Finish()
	return out, err == nil
}

func srvFor(backends ...*chaosBackend) []net.SRV {
	var out []net.SRV
	for _, b := range backends {
		_, port, _ := net.SplitHostPort(b.addr)
		p, _ := strconv.Atoi(port)
		out = append(out, net.SRV{Target: "backends.test.", Port: uint16(p), Priority: 0, Weight: 1})
	}
	return out
}

func TestChaosSlowAndFailingDNS(t *testing.T) {
	led := newLedger()
	a, b, c := startChaosBackend(t, "a", led), startChaosBackend(t, "b", led), startChaosBackend(t, "c", led)
	dns := startDNSChaos(t)
	// Absolute, so the stub resolver tries no search domains.
	const name = "_http._tcp.orders.test."
	dns.set(func(s *dnsChaos) {
		s.a["backends.test"] = net.ParseIP("127.0.0.1")
		s.srv[strings.TrimSuffix(name, ".")] = srvFor(a, b)
	})
	var logs syncBuffer
	m := newMesh(t, mesh.WithDNS("orders", name), mesh.WithNetResolver(dns.resolver()), mesh.WithDNSRefresh(50*time.Millisecond),
		mesh.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	waitServedBy(t, m.HTTPClient(), "http://orders/", 10*time.Second, "a", "b")

	l := &load{c: m.HTTPClient(), url: "http://orders", workers: 4, max: 20000, postEvery: 10}
	run := l.start(t)
	run.waitSent(t, 200)
	phases := []struct {
		name string
		set  func(s *dnsChaos)
	}{
		{"slow (300 ms an answer)", func(s *dnsChaos) { s.delay = 300 * time.Millisecond }},
		{"SERVFAIL", func(s *dnsChaos) { s.delay, s.servfail = 0, true }},
		{"name gone (NXDOMAIN)", func(s *dnsChaos) { s.servfail = false; delete(s.srv, strings.TrimSuffix(name, ".")) }},
		{"no answer at all", func(s *dnsChaos) { s.drop = true }},
	}
	for _, ph := range phases {
		dns.set(ph.set)
		q := dns.queriesNow()
		// A phase lasts until the mesh has asked DNS under it and 400
		// more requests have gone out, whichever is later: counting
		// requests alone, a fast machine could finish the phase while a
		// slow lookup from the previous one was still pending.
		for deadline := time.Now().Add(5 * time.Second); dns.queriesNow() == q; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Errorf("phase %s: the mesh asked DNS nothing in 5s; the phase proves nothing", ph.name)
				break
			}
		}
		run.waitSent(t, 400)
	}
	// Back, with a changed set: the mesh follows it.
	dns.set(func(s *dnsChaos) { s.drop, s.srv[strings.TrimSuffix(name, ".")] = false, srvFor(b, c) })
	waitServedBy(t, m.HTTPClient(), "http://orders/", 10*time.Second, "c")
	run.waitSent(t, 200)
	run.halt()

	run.checkNoFailure(t)
	checkNoDuplicatePOST(t, led)
	if !strings.Contains(logs.String(), "discovery error") {
		t.Error("the failing lookups were not reported in the mesh's log")
	}
	report(t, "DNS slow (300 ms an answer), then SERVFAIL, NXDOMAIN, no answer, then back with a changed SRV set", l, run,
		"no request failed (last good endpoints kept); the new set applied once DNS answered")
}

func (s *dnsChaos) queriesNow() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries
}
