package mesh

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/resolver"
	"github.com/weftmesh/weft/telemetry/admin"
)

// The admin endpoint is for operators, on its own listener (WEFT_ADMIN_ADDR),
// never on the service's port. telemetry/admin serves it; the mesh is its
// Source (adminSource) and mounts /tap and /explain.
func (m *Mesh) startAdmin(addr string) error {
	srv, err := admin.New(addr, adminSource{m},
		admin.WithHosts(m.cfg.adminHosts...), admin.WithPprof(m.cfg.adminPprof), admin.WithMetrics(m.metricsHandler()))
	if err != nil {
		return err
	}
	// Operators follow live requests (/tap) and ask what a request would
	// do (/explain); both are the mesh's, mounted behind the Host check.
	for _, h := range []struct {
		pattern string
		h       http.Handler
	}{{"GET /tap", m.tapHandler()}, {"GET /explain", http.HandlerFunc(m.serveExplain)}} {
		if err := srv.Handle(h.pattern, h.h); err != nil {
			srv.Close()
			return err
		}
	}
	m.admin = srv
	m.adminBound = srv.Addr().String()
	srv.Serve()
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

// ClusterStatus is one service's live state, as /clusters reports it.
type ClusterStatus = admin.Cluster

// EndpointStatus is one endpoint's live state.
type EndpointStatus = admin.Endpoint

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

// adminSource is the mesh as telemetry/admin reads it.
type adminSource struct{ m *Mesh }

var _ admin.Source = adminSource{}

func (a adminSource) Status(now time.Time) admin.Status {
	m := a.m
	st := admin.Status{Service: m.cfg.serviceName, MTLS: m.mtlsMode().String(), LBPolicy: m.cfg.lbPolicy,
		XDS: m.xds != nil, ControlPlane: m.controlPlane(now)}
	if m.id != nil {
		if svid, err := m.id.src.GetX509SVID(); err == nil && svid != nil {
			st.Identity = svid.ID.String()
			if len(svid.Certificates) > 0 {
				st.IdentityExpires = svid.Certificates[0].NotAfter.UTC().Format(time.RFC3339)
			}
		}
	}
	return st
}

// Ready is /readyz: not while closing, nor with an unusable identity, nor
// when the mesh asked a control plane for configuration and none ever
// came. A configuration kept from a control plane now away still serves
// (that is what caching it is for); the detail says so.
func (a adminSource) Ready(now time.Time) (string, error) {
	m := a.m
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return "", errors.New("closing")
	}
	if err := m.identityErr(); err != nil {
		return "", errors.New("identity: " + err.Error())
	}
	cp := m.controlPlane(now)
	switch {
	case cp == nil:
		return "", nil
	case !cp.Ready:
		return "", errors.New("control plane: " + cp.Text)
	}
	return "control plane: " + cp.Text, nil
}

// Requests is how many requests the HTTP path has sent to each service's
// endpoints.
func (a adminSource) Requests() map[string]uint64 {
	services, _ := a.m.allServices()
	out := make(map[string]uint64, len(services))
	for name, s := range services {
		out[name] = s.requests.Load()
	}
	return out
}

func (a adminSource) Clusters() []admin.Cluster { return a.m.Clusters() }

func (a adminSource) Routes() []admin.HostRoutes { return a.m.routes() }

func (a adminSource) Resources(withBodies bool) []admin.Resource {
	if a.m.xds == nil {
		return nil
	}
	return a.m.xds.resources(withBodies)
}

func (a adminSource) ConfigDump() ([]byte, error) {
	if a.m.xds == nil {
		return nil, nil
	}
	return a.m.xds.client.ConfigDump()
}

func (a adminSource) Golden(now time.Time) []admin.GoldenStat { return a.m.golden.Snapshot(now) }
