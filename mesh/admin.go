package mesh

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"
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
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /clusters", m.serveClusters)
	mux.HandleFunc("GET /routes", m.serveRoutes)
	mux.HandleFunc("GET /stats", m.serveStats)
	if h := m.tel.MetricsHandler(); h != nil {
		mux.Handle("GET /metrics", h)
	}
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
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	m.admin = srv
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		srv.Serve(ln)
	}()
	return nil
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
	Service   string           `json:"service"`
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
				Priority: e.Priority, Health: e.Health.String(), InFlight: e.InFlight(), Ejected: e.Ejected(),
			})
		}
		out = append(out, cs)
	}
	slices.SortFunc(out, func(a, b ClusterStatus) int { return strings.Compare(a.Service, b.Service) })
	return out
}

func (m *Mesh) serveClusters(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, m.Clusters())
}

// allServices returns every mesh service and xDS cluster the HTTP path has
// used, with the balancer policy each is configured with.
func (m *Mesh) allServices() (services map[string]*service, policy map[string]string) {
	services, policy = map[string]*service{}, map[string]string{} // copies: the published maps are shared
	for name, s := range *m.services.Load() {
		services[name], policy[name] = s, m.cfg.lbPolicy
	}
	if m.xds != nil {
		m.xds.mu.Lock()
		for name, s := range m.xds.clusters {
			services[name], policy[name] = s, "xds"
		}
		m.xds.mu.Unlock()
	}
	return services, policy
}
