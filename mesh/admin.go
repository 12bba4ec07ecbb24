package mesh

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
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
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /clusters", m.serveClusters)
	if h := m.tel.MetricsHandler(); h != nil {
		mux.Handle("GET /metrics", h)
	}
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, _ *http.Request) {
		var dump any = []any{}
		if m.xds != nil {
			dump = m.xds.configDump()
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(dump)
	})
	srv := &http.Server{Handler: mux}
	m.admin = srv
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		srv.Serve(ln)
	}()
	return nil
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
	services := map[string]*service{} // a copy: the published map is shared
	policy := map[string]string{}
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
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(m.Clusters())
}
