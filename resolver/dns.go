package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DNS defaults. Refresh follows the common TTL of service records in
// Kubernetes (30 s); MinResolveInterval bounds how often connection
// failures can trigger a lookup, so a dead endpoint cannot flood DNS.
const (
	DefaultDNSRefresh            = 30 * time.Second
	DefaultDNSMinResolveInterval = time.Second
	DefaultDNSLookupTimeout      = 10 * time.Second
)

// DNSOption configures NewDNS.
type DNSOption interface{ applyDNS(*dnsConfig) }

type dnsOptionFunc func(*dnsConfig)

func (f dnsOptionFunc) applyDNS(c *dnsConfig) { f(c) }

type dnsConfig struct {
	resolver    *net.Resolver
	refresh     time.Duration
	minInterval time.Duration
	timeout     time.Duration
	defaultPort string
}

// WithNetResolver sets the resolver used for lookups; nil means
// net.DefaultResolver.
func WithNetResolver(r *net.Resolver) DNSOption {
	return dnsOptionFunc(func(c *dnsConfig) {
		if r != nil {
			c.resolver = r
		}
	})
}

// WithRefreshInterval sets how often each watched name is looked up again
// (default DefaultDNSRefresh). Values <= 0 keep the default.
func WithRefreshInterval(d time.Duration) DNSOption {
	return dnsOptionFunc(func(c *dnsConfig) {
		if d > 0 {
			c.refresh = d
		}
	})
}

// WithMinResolveInterval sets the least time between two lookups of one
// name triggered by ResolveNow (default DefaultDNSMinResolveInterval).
// Values < 0 keep the default; 0 means no limit.
func WithMinResolveInterval(d time.Duration) DNSOption {
	return dnsOptionFunc(func(c *dnsConfig) {
		if d >= 0 {
			c.minInterval = d
		}
	})
}

// WithDefaultPort sets the port used for a watched name without one
// (default "443", as grpc-go's dns resolver does).
func WithDefaultPort(port string) DNSOption {
	return dnsOptionFunc(func(c *dnsConfig) {
		if port != "" {
			c.defaultPort = port
		}
	})
}

// DNS is a Discovery that resolves names through DNS. A watched name is
// either host:port (A and AAAA records; a missing port means the default
// port) or an SRV name "_service._proto.domain" (targets and ports from the
// SRV records, weights from their weight field). Each watched name has one
// goroutine, started by its first Watch and stopped by its last cancel.
type DNS struct {
	cfg    dnsConfig
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	targets map[string]*dnsTarget
	closed  bool
	wg      sync.WaitGroup
}

type dnsTarget struct {
	name    string
	watches map[*watchEntry]struct{}
	state   State
	known   bool          // state holds a lookup result
	now     chan struct{} // ResolveNow, capacity 1
	stop    chan struct{}
}

// NewDNS returns a DNS discovery.
func NewDNS(opts ...DNSOption) *DNS {
	cfg := dnsConfig{
		resolver:    net.DefaultResolver,
		refresh:     DefaultDNSRefresh,
		minInterval: DefaultDNSMinResolveInterval,
		timeout:     DefaultDNSLookupTimeout,
		defaultPort: "443",
	}
	for _, o := range opts {
		o.applyDNS(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &DNS{cfg: cfg, ctx: ctx, cancel: cancel, targets: make(map[string]*dnsTarget)}
}

// ValidateDNSName checks that name is a form DNS.Watch accepts.
func ValidateDNSName(name string) error {
	if isSRV(name) {
		if !validHost(name) {
			return fmt.Errorf("SRV name %q has characters DNS does not allow", name)
		}
		return nil
	}
	host, port := SplitHostPort(name)
	if !validHost(host) {
		return fmt.Errorf("%q is not a DNS name or IP address", host)
	}
	if port != "" && !validPort(port) {
		return fmt.Errorf("bad port %q in %q", port, name)
	}
	return nil
}

func isSRV(name string) bool { return strings.HasPrefix(name, "_") && strings.Contains(name, "._") }

// Watch implements Discovery. Updates are delivered on the name's lookup
// goroutine, and the current state (when one is known) before Watch returns.
// A watcher must not call its own cancel from OnUpdate.
func (d *DNS) Watch(name string, w Watcher) (cancel func()) {
	we := &watchEntry{w: w}
	if err := ValidateDNSName(name); err != nil {
		we.deliver(State{Err: fmt.Errorf("resolver: dns: %w", err)})
		return func() {}
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		we.deliver(State{Err: errors.New("resolver: dns: discovery closed")})
		return func() {}
	}
	t := d.targets[name]
	if t == nil {
		t = &dnsTarget{name: name, watches: make(map[*watchEntry]struct{}), now: make(chan struct{}, 1), stop: make(chan struct{})}
		d.targets[name] = t
		d.wg.Add(1)
		go d.run(t)
	}
	t.watches[we] = struct{}{}
	if t.known {
		we.mu.Lock()
		st := t.state
		d.mu.Unlock()
		we.w.OnUpdate(st)
		we.mu.Unlock()
	} else {
		d.mu.Unlock()
	}
	return func() {
		d.mu.Lock()
		if _, ok := t.watches[we]; ok {
			delete(t.watches, we)
			if len(t.watches) == 0 && d.targets[name] == t {
				delete(d.targets, name)
				close(t.stop)
			}
		}
		d.mu.Unlock()
		we.mu.Lock()
		we.canceled = true
		we.mu.Unlock()
	}
}

// ResolveNow implements Discovery: it schedules a lookup of name, no sooner
// than the minimum resolve interval after the previous one.
func (d *DNS) ResolveNow(name string) {
	d.mu.Lock()
	t := d.targets[name]
	d.mu.Unlock()
	if t == nil {
		return
	}
	select {
	case t.now <- struct{}{}:
	default:
	}
}

// Close implements Discovery: it stops every lookup goroutine and waits for
// them to exit.
func (d *DNS) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	for name, t := range d.targets {
		close(t.stop)
		delete(d.targets, name)
	}
	d.mu.Unlock()
	d.cancel()
	d.wg.Wait()
	return nil
}

func (d *DNS) run(t *dnsTarget) {
	defer d.wg.Done()
	timer := time.NewTimer(0) // the first lookup happens at once
	defer timer.Stop()
	var last time.Time
	for {
		select {
		case <-t.stop:
			return
		case <-t.now:
			if wait := d.cfg.minInterval - time.Since(last); wait > 0 {
				timer.Reset(wait) // the limit defers the lookup; it does not drop it
				continue
			}
		case <-timer.C:
		}
		last = time.Now()
		eps, err := d.lookup(t.name)
		d.publish(t, eps, err)
		timer.Reset(d.cfg.refresh)
	}
}

// publish delivers a lookup result to t's watchers unless nothing changed.
// A failed lookup keeps the last good endpoints and reports the error.
func (d *DNS) publish(t *dnsTarget, eps []Endpoint, err error) {
	d.mu.Lock()
	var st State
	if err != nil {
		st = State{Endpoints: t.state.Endpoints, Err: err}
	} else {
		st = State{Endpoints: eps}
		if t.known && t.state.Err == nil && slices.Equal(t.state.Endpoints, eps) {
			d.mu.Unlock()
			return
		}
	}
	t.state, t.known = st, true
	ws := make([]*watchEntry, 0, len(t.watches))
	for we := range t.watches {
		ws = append(ws, we)
		we.mu.Lock()
	}
	d.mu.Unlock()
	for _, we := range ws {
		if !we.canceled {
			we.w.OnUpdate(st)
		}
		we.mu.Unlock()
	}
}

func (d *DNS) lookup(name string) ([]Endpoint, error) {
	ctx, cancel := context.WithTimeout(d.ctx, d.cfg.timeout)
	defer cancel()
	var eps []Endpoint
	if isSRV(name) {
		_, srvs, err := d.cfg.resolver.LookupSRV(ctx, "", "", name)
		if err != nil && len(srvs) == 0 {
			return nil, fmt.Errorf("resolver: dns: SRV %s: %w", name, err)
		}
		// SRV priorities map to Weft priorities in ascending order.
		prios := make([]uint16, 0, len(srvs))
		for _, s := range srvs {
			prios = append(prios, s.Priority)
		}
		slices.Sort(prios)
		prios = slices.Compact(prios)
		for _, s := range srvs {
			addrs, err := d.cfg.resolver.LookupNetIP(ctx, "ip", strings.TrimSuffix(s.Target, "."))
			if err != nil {
				continue // one unresolvable target must not hide the others
			}
			prio, _ := slices.BinarySearch(prios, s.Priority)
			for _, a := range addrs {
				eps = append(eps, Endpoint{
					Addr:     netip.AddrPortFrom(a.Unmap(), s.Port).String(),
					Weight:   uint32(s.Weight),
					Priority: uint32(prio),
				})
			}
		}
		if len(eps) == 0 {
			return nil, fmt.Errorf("resolver: dns: SRV %s: no target resolved", name)
		}
	} else {
		host, port := SplitHostPort(name)
		if port == "" {
			port = d.cfg.defaultPort
		}
		p, _ := strconv.ParseUint(port, 10, 16)
		addrs, err := d.cfg.resolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, fmt.Errorf("resolver: dns: %s: %w", host, err)
		}
		for _, a := range addrs {
			eps = append(eps, Endpoint{Addr: netip.AddrPortFrom(a.Unmap(), uint16(p)).String()})
		}
	}
	slices.SortFunc(eps, func(a, b Endpoint) int { return strings.Compare(a.Addr, b.Addr) })
	return slices.CompactFunc(eps, func(a, b Endpoint) bool { return a.Addr == b.Addr }), nil
}
