package mesh

import (
	"net/http"
	"time"
)

// adminStats is what /stats reports: who this service is and a
// monotonically increasing request count per service, from which the admin
// page computes rates between two samples. Counters rather than rates keep
// the mesh free of any timer or window: a reader picks its own interval.
type adminStats struct {
	Service string `json:"service"`
	// NowUnixMs is when the counts were read, so a reader's rates do not
	// depend on its own polling jitter.
	NowUnixMs int64  `json:"now_unix_ms"`
	XDS       bool   `json:"xds"`
	MTLS      string `json:"mtls"`
	// LBPolicy is the default balancer of services outside xDS; each xDS
	// cluster's own is in /clusters.
	LBPolicy string `json:"lb_policy"`
	// Requests is, per mesh service and xDS cluster, the requests sent to
	// its endpoints since the service was first used (each attempt of a
	// retried request counts). An xDS cluster closed by the idle sweep
	// starts again from zero when it is used again.
	Requests map[string]uint64 `json:"requests"`
	// ControlPlane is the xDS connection and the config's age, nil
	// without a control plane.
	ControlPlane *controlPlaneStatus `json:"control_plane,omitempty"`
}

// requestCount is how many requests the HTTP path has sent to svc's
// endpoints.
func (m *Mesh) requestCount(svc *service) uint64 { return svc.requests.Load() }

func (m *Mesh) stats() adminStats {
	services, _ := m.allServices()
	now := time.Now()
	st := adminStats{
		Service: m.cfg.serviceName, NowUnixMs: now.UnixMilli(), XDS: m.xds != nil, ControlPlane: m.controlPlane(now),
		MTLS: m.mtlsMode().String(), LBPolicy: m.cfg.lbPolicy, Requests: make(map[string]uint64, len(services)),
	}
	for name, s := range services {
		st.Requests[name] = m.requestCount(s)
	}
	return st
}

func (m *Mesh) serveStats(w http.ResponseWriter, _ *http.Request) { writeJSON(w, m.stats()) }
