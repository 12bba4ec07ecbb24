package mesh

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/resolver"
)

// The admin endpoint is for operators, on its own listener (WEFT_ADMIN_ADDR),
// never on the service's port.
func (m *Mesh) startAdmin(addr string) error {
	ln, err := listen(addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		m.mu.Lock()
		closed := m.closed
		m.mu.Unlock()
		if closed {
			http.Error(w, "closing", http.StatusServiceUnavailable)
			return
		}
		if err := m.identityErr(); err != nil {
			http.Error(w, "identity: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		m.serveReadyControlPlane(w)
	})
	mux.HandleFunc("GET /clusters", m.serveClusters)
	mux.HandleFunc("GET /routes", m.serveRoutes)
	mux.HandleFunc("GET /stats", m.serveStats)
	mux.Handle("GET /metrics", m.metricsHandler())
	mux.Handle("GET /tap", m.tapHandler())
	mux.HandleFunc("GET /explain", m.serveExplain)
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, r *http.Request) {
		var dump any = []any{}
		if m.xds != nil {
			d := m.xds.configDump()
			// The admin page polls without the resources: an EDS
			// resource can hold thousands of endpoints it does not show.
			if r.URL.Query().Get("resources") == "false" {
				for _, e := range d {
					delete(e, "resource")
				}
			}
			if d != nil {
				dump = d
			}
		}
		writeJSON(w, dump)
	})
	page, err := newAdminPage()
	if err != nil {
		ln.Close()
		return err
	}
	// "/{$}" is the root alone: other unknown paths stay 404s rather
	// than serving the page.
	mux.Handle("GET /{$}", page)
	if m.cfg.adminPprof {
		mountPprof(mux)
	}
	hosts := newAdminHosts(addr, ln.Addr(), m.cfg.adminHosts)
	srv := &http.Server{Handler: hosts.check(mux), ReadHeaderTimeout: 10 * time.Second}
	m.admin = srv
	m.adminBound = ln.Addr().String()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		srv.Serve(ln)
	}()
	return nil
}

// metricsHandler serves the Prometheus text of the mesh's metrics. With a
// meter provider of the caller's (WithMeterProvider) the mesh has no
// reader to serve, since OpenTelemetry's SDK takes readers only when a
// provider is built; /metrics then says how to get them there. The same
// holds with OTEL_SDK_DISABLED=true.
func (m *Mesh) metricsHandler() http.Handler {
	if h := m.tel.MetricsHandler(); h != nil {
		return h
	}
	why := "the mesh's metrics go to the meter provider given with WithMeterProvider, which the mesh did not build and cannot add a reader to"
	if m.cfg.meterProvider == nil {
		why = "telemetry is disabled (OTEL_SDK_DISABLED=true)"
	}
	msg := "mesh: admin: no metrics to serve here: " + why + ". " +
		"To scrape them, build that provider with a Prometheus reader " +
		"(go.opentelemetry.io/otel/exporters/prometheus) and serve its registry, " +
		"or leave WithMeterProvider unset: the mesh then serves /metrics itself.\n"
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, msg, http.StatusNotFound)
	})
}

// adminHosts is the set of Host values the admin listener answers. A page
// in a browser can reach a loopback listener through DNS rebinding (its
// own name made to resolve to 127.0.0.1), but its requests then carry its
// own name in Host: answering only loopback names and addresses, the
// listener's own address and the hosts an operator names
// (WEFT_ADMIN_HOSTS) keeps such a page from reading the admin endpoint.
type adminHosts struct {
	names map[string]bool // lower case, no port
	ips   []netip.Addr    // the listener's own addresses
}

func newAdminHosts(configured string, bound net.Addr, extra []string) *adminHosts {
	h := &adminHosts{names: map[string]bool{"localhost": true}}
	if host, _, err := net.SplitHostPort(configured); err == nil && host != "" {
		h.names[normalizeHost(host)] = true
	}
	for _, e := range extra {
		h.names[normalizeHost(e)] = true
	}
	if ta, ok := bound.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		ip = ip.Unmap()
		if ip.IsUnspecified() {
			// Bound to every interface: its own addresses are theirs.
			addrs, _ := net.InterfaceAddrs()
			for _, a := range addrs {
				if p, err := netip.ParsePrefix(a.String()); err == nil {
					h.ips = append(h.ips, p.Addr().Unmap())
				}
			}
		} else if ip.IsValid() {
			h.ips = append(h.ips, ip)
		}
	}
	return h
}

// normalizeHost lowercases host and drops a port, IPv6 brackets, a
// zone-less trailing dot.
func normalizeHost(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSuffix(host, "]"), "["), ".")
	return strings.ToLower(host)
}

func (h *adminHosts) allowed(hostHeader string) bool {
	if hostHeader == "" {
		return true // HTTP/1.0 without Host: no browser sends that
	}
	host := normalizeHost(hostHeader)
	if h.names[host] {
		return true
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	return ip.IsLoopback() || slices.Contains(h.ips, ip)
}

func (h *adminHosts) check(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !h.allowed(r.Host) {
			http.Error(w, fmt.Sprintf("mesh: admin: Host %q is not allowed here: the admin listener answers localhost, loopback addresses, "+
				"its own address and the hosts listed in %s", r.Host, EnvAdminHosts), http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// checkAdminHost refuses a WEFT_ADMIN_HOSTS entry that is no host name or
// address (an optional port is allowed and ignored).
func checkAdminHost(e string) error {
	host := e
	if h, port, err := net.SplitHostPort(e); err == nil {
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return fmt.Errorf("%q is not a host name or address (with an optional port)", e)
		}
		host = h
	}
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return nil
	}
	if host == "" || strings.ContainsAny(host, "/ \t*@?#[]") {
		return fmt.Errorf("%q is not a host name or address", e)
	}
	return nil
}

// parseAdminHosts reads WEFT_ADMIN_HOSTS: "admin.internal,10.0.0.7".
func parseAdminHosts(v string) ([]string, error) {
	var out []string
	for e := range strings.SplitSeq(v, ",") {
		if e = strings.TrimSpace(e); e == "" {
			continue
		}
		if err := checkAdminHost(e); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	if len(out) == 0 {
		return nil, errors.New("no hosts (want a comma-separated list such as admin.internal,10.0.0.7)")
	}
	return out, nil
}

// writeJSON writes v indented, for people reading the endpoint with curl.
func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// ClusterStatus is one service's live state, as /clusters reports it.
type ClusterStatus struct {
	Service string `json:"service"`
	// Policy is the balancer in force: the mesh's default (WithLBPolicy)
	// for a service outside xDS, the cluster's own for an xDS cluster.
	Policy    string           `json:"lb_policy"`
	Error     string           `json:"discovery_error,omitempty"`
	Endpoints []EndpointStatus `json:"endpoints"`
}

// EndpointStatus is one endpoint's live state.
type EndpointStatus struct {
	Addr     string `json:"addr"`
	Weight   uint32 `json:"weight"`
	Locality string `json:"locality,omitempty"`
	Priority uint32 `json:"priority"`
	// Health is discovery's health for the endpoint; when discovery has
	// none (static and DNS endpoints), HEALTHY once the endpoint's last
	// request succeeded without an outlier ejection, UNKNOWN before.
	Health   string `json:"health"`
	InFlight int64  `json:"in_flight"`
	Ejected  bool   `json:"ejected"`
}

// Clusters returns the live state of every mesh service and xDS cluster
// the HTTP path has used, sorted by name.
func (m *Mesh) Clusters() []ClusterStatus {
	services, policy := m.allServices()
	out := make([]ClusterStatus, 0, len(services))
	for name, s := range services {
		cs := ClusterStatus{Service: name, Policy: policy[name], Endpoints: []EndpointStatus{}}
		if p := s.lastErr.Load(); p != nil {
			cs.Error = (*p).Error()
		}
		for _, e := range s.balancer().Endpoints() {
			cs.Endpoints = append(cs.Endpoints, EndpointStatus{
				Addr: e.Addr, Weight: e.EffectiveWeight(), Locality: e.Locality.String(),
				Priority: e.Priority, Health: endpointHealth(e), InFlight: e.InFlight(), Ejected: e.Ejected(),
			})
		}
		out = append(out, cs)
	}
	slices.SortFunc(out, func(a, b ClusterStatus) int { return strings.Compare(a.Service, b.Service) })
	return out
}

// endpointHealth is the health /clusters shows: discovery's when it has
// one, else HEALTHY for an endpoint whose last request succeeded and that
// outlier detection has not ejected. UNKNOWN is left for endpoints never
// tried, or whose last request failed.
func endpointHealth(e *balancer.Endpoint) string {
	if e.Health == resolver.HealthUnknown && e.LastSucceeded() && !e.Ejected() {
		return resolver.Healthy.String()
	}
	return e.Health.String()
}

func (m *Mesh) serveClusters(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, m.Clusters())
}

// allServices returns every mesh service and xDS cluster the HTTP path has
// used, with the balancer policy in force for each: the mesh's default
// for a service outside xDS, the cluster's own (after any fallback to
// round_robin) for an xDS cluster.
func (m *Mesh) allServices() (services map[string]*service, policy map[string]string) {
	services, policy = map[string]*service{}, map[string]string{} // copies: the published maps are shared
	for name, s := range *m.services.Load() {
		services[name], policy[name] = s, m.cfg.lbPolicy
	}
	if m.xds != nil {
		m.xds.mu.Lock()
		for name, s := range m.xds.clusters {
			services[name], policy[name] = s, s.policy.Load().name
		}
		m.xds.mu.Unlock()
	}
	return services, policy
}
