package resolver

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// ErrUnknownService is the error a Discovery reports for a service it has no
// entry for.
var ErrUnknownService = errors.New("resolver: unknown service")

// ParseEndpoints parses the WEFT_ENDPOINTS format:
//
//	orders=10.0.0.1:8080,10.0.0.2:8080;users=127.0.0.1:9000
//
// Services are separated by ';', endpoints by ','; spaces around either are
// ignored. Every endpoint is host:port (an IPv6 host in brackets),
// optionally followed by @region/zone[/subzone], its locality, for
// zone-aware routing: 10.0.0.1:8080@us-east1/us-east1-b. An empty
// string, a service with no endpoints, a service named twice or an endpoint
// without a valid port is an error naming the culprit.
func ParseEndpoints(s string) (map[string][]Endpoint, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("no services (want name=host:port[,host:port][;name=...])")
	}
	out := make(map[string][]Endpoint)
	for entry := range strings.SplitSeq(s, ";") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue // a trailing ';' is harmless
		}
		name, list, ok := strings.Cut(entry, "=")
		name = strings.TrimSpace(name)
		if !ok {
			return nil, fmt.Errorf("entry %q: want name=host:port[,host:port]", entry)
		}
		if err := validServiceName(name); err != nil {
			return nil, fmt.Errorf("entry %q: %w", entry, err)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("service %q is listed twice", name)
		}
		var eps []Endpoint
		for addr := range strings.SplitSeq(list, ",") {
			addr = strings.TrimSpace(addr)
			if addr == "" {
				continue
			}
			ep := Endpoint{Addr: addr}
			if a, loc, ok := strings.Cut(addr, "@"); ok {
				l, err := ParseLocality(loc)
				if err != nil {
					return nil, fmt.Errorf("service %q: endpoint %q: %w", name, addr, err)
				}
				ep.Addr, ep.Locality = strings.TrimSpace(a), l
			}
			if err := validEndpointAddr(ep.Addr); err != nil {
				return nil, fmt.Errorf("service %q: endpoint %q: %w", name, addr, err)
			}
			eps = append(eps, ep)
		}
		if len(eps) == 0 {
			return nil, fmt.Errorf("service %q has no endpoints", name)
		}
		out[name] = eps
	}
	if len(out) == 0 {
		return nil, errors.New("no services (want name=host:port[,host:port][;name=...])")
	}
	return out, nil
}

func validServiceName(name string) error {
	if name == "" {
		return errors.New("empty service name")
	}
	host, port := SplitHostPort(name)
	if !validHost(host) || (port != "" && !validPort(port)) {
		return fmt.Errorf("service name %q is not a host or host:port", name)
	}
	return nil
}

func validEndpointAddr(addr string) error {
	host, port := SplitHostPort(addr)
	if port == "" {
		return errors.New("missing port")
	}
	if !validPort(port) {
		return fmt.Errorf("bad port %q", port)
	}
	if !validHost(host) {
		return fmt.Errorf("bad host %q", host)
	}
	return nil
}

// Static is a Discovery over a fixed table of services that the program may
// replace at run time with Update. The zero value is not usable; call
// NewStatic.
type Static struct {
	mu       sync.Mutex
	services map[string][]Endpoint
	watches  map[string]map[*watchEntry]struct{}
	closed   bool
}

// watchEntry is one Watch. Its mutex serializes deliveries with each other
// and with cancel, so a watcher never sees an update after cancel returns.
// Lock order: the Discovery's own mutex first, then watchEntry.mu.
type watchEntry struct {
	mu       sync.Mutex
	w        Watcher
	canceled bool
}

func (sw *watchEntry) deliver(s State) {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if !sw.canceled {
		sw.w.OnUpdate(s)
	}
}

// NewStatic returns a Discovery serving the given services. It copies the
// map; endpoint addresses are not re-validated (ParseEndpoints does that for
// strings).
func NewStatic(services map[string][]Endpoint) *Static {
	s := &Static{services: make(map[string][]Endpoint, len(services)), watches: make(map[string]map[*watchEntry]struct{})}
	for name, eps := range services {
		s.services[name] = slices.Clone(eps)
	}
	return s
}

// Services returns the names of the services s knows, sorted.
func (s *Static) Services() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.services))
	for n := range s.services {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Has reports whether s has an entry for service.
func (s *Static) Has(service string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.services[service]
	return ok
}

// Watch implements Discovery. The first update is delivered before Watch
// returns, on the calling goroutine; later ones on the goroutine that calls
// Update. A watcher must not call Update or its own cancel from OnUpdate.
func (s *Static) Watch(service string, w Watcher) (cancel func()) {
	sw := &watchEntry{w: w}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		sw.deliver(State{Err: errors.New("resolver: discovery closed")})
		return func() {}
	}
	if s.watches[service] == nil {
		s.watches[service] = make(map[*watchEntry]struct{})
	}
	s.watches[service][sw] = struct{}{}
	eps, ok := s.services[service]
	// Deliver under sw.mu taken before s.mu is released, so that an Update
	// racing with this Watch cannot be overtaken by this older state.
	sw.mu.Lock()
	s.mu.Unlock()
	if ok {
		sw.w.OnUpdate(State{Endpoints: eps})
	} else {
		sw.w.OnUpdate(State{Err: fmt.Errorf("%w %q", ErrUnknownService, service)})
	}
	sw.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.watches[service], sw)
		if len(s.watches[service]) == 0 {
			delete(s.watches, service)
		}
		s.mu.Unlock()
		sw.mu.Lock()
		sw.canceled = true
		sw.mu.Unlock()
	}
}

// Update replaces service's endpoints (adding the service if it is new) and
// notifies its watchers before returning. An empty list keeps the service
// known with no endpoints.
func (s *Static) Update(service string, endpoints []Endpoint) {
	eps := slices.Clone(endpoints)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.services[service] = eps
	ws := make([]*watchEntry, 0, len(s.watches[service]))
	for sw := range s.watches[service] {
		ws = append(ws, sw)
		sw.mu.Lock() // keep delivery order equal to update order
	}
	s.mu.Unlock()
	for _, sw := range ws {
		if !sw.canceled {
			sw.w.OnUpdate(State{Endpoints: eps})
		}
		sw.mu.Unlock()
	}
}

// ResolveNow implements Discovery; a static table has nothing to refresh.
func (s *Static) ResolveNow(string) {}

// Close implements Discovery.
func (s *Static) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.watches = map[string]map[*watchEntry]struct{}{}
	return nil
}
